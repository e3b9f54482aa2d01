"""The futures manybrains hands out: stdlib ``concurrent.futures.Future`` objects.

Each carries, in ``handle``, the backend's own record of its task (a job, a thread's record,
an engine's future), so a backend finds it again on cancel without attributes bolted on.

Done-callbacks run in an engine thread. The stdlib catches only ``Exception`` around them, so
a callback raising ``SystemExit`` would kill that thread and leave every other future pending
forever; here any callback failure is logged and the engine goes on.
"""

from __future__ import annotations

import _thread
import contextlib
import logging
from collections.abc import Callable, Iterator
from concurrent.futures import Future, InvalidStateError
from concurrent.futures import _base as _futures_base
from typing import Any, Generic, TypeVar

LOGGER = logging.getLogger("manybrains")

H = TypeVar("H")


class TaskFuture(Future[Any], Generic[H]):
    """A ``concurrent.futures.Future`` whose done-callbacks cannot break the engine.

    ``handle`` is the backend's record of the task, set at submit (None until then).
    ``on_cancel``, where a backend sets it, is called once if the future is cancelled, before
    the done-callbacks: the same as a done-callback that checks ``cancelled()``, without one
    more callback on every future of a pool that runs 100,000 tasks a second.

    It is the stdlib's class, lighter for the garbage collector: its condition is a
    :class:`FutureCondition`, which also holds the ``concurrent.futures.wait`` and
    ``as_completed`` waiters the stdlib keeps in a list per future, and the list of
    done-callbacks is made when the first one is added. A pending future is two objects for
    the collector where the stdlib's is up to eleven.
    """

    on_cancel: Callable[[Future[Any]], None] | None = None

    def __init__(self, handle: H | None = None) -> None:
        # Future.__init__'s fields (the same from Python 3.8 to 3.13; a test compares them),
        # with a FutureCondition in place of a threading.Condition and of the waiter list.
        self._condition = self._waiters = FutureCondition()  # type: ignore[assignment]
        self._state = _futures_base.PENDING
        self._result = None
        self._exception = None
        self._done_callbacks: list[Callable[[Future[Any]], object]] | None = None
        self.handle: H | None = handle

    def add_done_callback(self, fn: Callable[[Future[Any]], object]) -> None:
        with self._condition:
            if self._state not in _DONE:
                if self._done_callbacks is None:
                    self._done_callbacks = [fn]
                else:
                    self._done_callbacks.append(fn)
                return
        super().add_done_callback(fn)  # done already: the stdlib calls it now, as always

    def _invoke_callbacks(self) -> None:
        # The state as this thread just set it, read without the lock cancelled() takes:
        # this runs for every task.
        if self.on_cancel is not None and self._state in _CANCELLED:
            try:
                self.on_cancel(self)
            except BaseException:
                LOGGER.exception("the cancel hook of %r raised", self)
        for callback in self._done_callbacks or ():
            try:
                callback(self)
            except BaseException:
                LOGGER.exception("a done-callback of %r raised", self)


_CANCELLED = frozenset({_futures_base.CANCELLED, _futures_base.CANCELLED_AND_NOTIFIED})
_DONE = _CANCELLED | {_futures_base.FINISHED}


class FutureCondition(_thread.RLock):  # type: ignore[misc]  # typeshed marks RLock final
    """What a ``Future`` needs of its ``threading.Condition``, at a fraction of its weight.

    ``concurrent.futures`` uses its future's condition only through ``with``, ``acquire``,
    ``release``, ``wait`` and ``notify_all`` (the same from Python 3.8 to 3.13). It takes it
    twice in one thread in one place (``set_result`` on a finished future formats
    ``repr(self)``, which takes it again), so the lock is reentrant, as the stdlib's is. A
    ``threading.Condition`` is a Python object holding an ``RLock``, a deque and five bound
    methods, all tracked by the garbage collector: ten objects per future, which a program
    holding 20,000 pending futures makes the collector walk again and again (submitting one
    task at a time ran at half the speed with the collector on). This one is the ``RLock``
    itself (its ``with``, ``acquire`` and ``release`` are the C lock's own) and, only while
    someone waits, a list: one object for the collector.

    It is also the future's ``_waiters``: the stdlib's ``wait`` and ``as_completed`` only
    ``append`` a waiter to it, ``remove`` it, and iterate it when the future settles, and a
    list per future that is almost always empty is one more object per future.
    """

    __slots__ = ("_future_waiters", "_waiters")

    def __init__(self) -> None:
        self._waiters: list[_thread.LockType] | None = None  # threads in wait()
        self._future_waiters: list[Any] | None = None  # concurrent.futures' waiters

    # -- the future's waiter list ------------------------------------------------------------

    def append(self, waiter: Any) -> None:
        if self._future_waiters is None:
            self._future_waiters = [waiter]
        else:
            self._future_waiters.append(waiter)

    def remove(self, waiter: Any) -> None:
        if self._future_waiters is None:
            raise ValueError("FutureCondition.remove(x): x not a waiter")
        self._future_waiters.remove(waiter)

    def __iter__(self) -> Iterator[Any]:
        return iter(self._future_waiters or ())

    # -- the condition -----------------------------------------------------------------------

    def wait(self, timeout: float | None = None) -> bool:
        """Release the lock until notified or ``timeout`` seconds pass; then take it again.
        The caller holds the lock (as with ``threading.Condition``)."""
        waiter = _thread.allocate_lock()
        waiter.acquire()
        if self._waiters is None:
            self._waiters = []
        self._waiters.append(waiter)
        saved = self._release_save()  # type: ignore[attr-defined]  # as Condition does
        notified = False
        try:
            if timeout is None:
                notified = waiter.acquire()
            else:
                notified = waiter.acquire(True, timeout) if timeout > 0 else waiter.acquire(False)
            return notified
        finally:
            self._acquire_restore(saved)  # type: ignore[attr-defined]
            if not notified and self._waiters is not None:
                with contextlib.suppress(ValueError):  # notified just after the timeout
                    self._waiters.remove(waiter)

    def notify(self, n: int = 1) -> None:
        """Wake up to ``n`` waiters; the caller holds the lock."""
        waiters = self._waiters
        while waiters and n > 0:
            waiters.pop(0).release()
            n -= 1

    def notify_all(self) -> None:
        """Wake every waiter; the caller holds the lock."""
        waiters, self._waiters = self._waiters, None
        for waiter in waiters or ():
            waiter.release()


def handle_of(future: Future[Any], kind: type[H]) -> H | None:
    """``future``'s handle when it is a :class:`TaskFuture` carrying a ``kind``; else None
    (a plain future, or one of another backend: ``"auto"`` asks each of its engines)."""
    handle = future.handle if isinstance(future, TaskFuture) else None
    return handle if isinstance(handle, kind) else None



def still_cancellable(future: Future[Any]) -> bool:
    """Whether a backend's ``cancel`` may still act on ``future``: not finished with a result
    or an exception. One its caller cancelled already counts (cancelling it again is True)."""
    return not future.done() or future.cancelled()


def set_result(future: Future[Any], value: Any) -> None:
    """Resolve ``future`` unless the caller cancelled it meanwhile."""
    # try, not contextlib.suppress: this runs once per task, 100,000 times a second
    try:  # noqa: SIM105
        future.set_result(value)
    except InvalidStateError:  # cancelled by its owner meanwhile
        pass


def set_exception(future: Future[Any], exc: BaseException) -> None:
    """Fail ``future`` unless the caller cancelled it meanwhile."""
    try:  # noqa: SIM105
        future.set_exception(exc)
    except InvalidStateError:  # cancelled by its owner meanwhile
        pass
