"""The futures manybrains hands out: stdlib ``concurrent.futures.Future`` objects.

Each carries, in ``handle``, the backend's own record of its task (a job, a thread's record,
an engine's future), so a backend finds it again on cancel without attributes bolted on.

Done-callbacks run in an engine thread. The stdlib catches only ``Exception`` around them, so
a callback raising ``SystemExit`` would kill that thread and leave every other future pending
forever; here any callback failure is logged and the engine goes on.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from concurrent.futures import Future, InvalidStateError
from typing import Any, Generic, TypeVar

LOGGER = logging.getLogger("manybrains")

H = TypeVar("H")


class TaskFuture(Future[Any], Generic[H]):
    """A ``concurrent.futures.Future`` whose done-callbacks cannot break the engine.

    ``handle`` is the backend's record of the task, set at submit (None until then).
    ``on_cancel``, where a backend sets it, is called once if the future is cancelled, before
    the done-callbacks: the same as a done-callback that checks ``cancelled()``, without one
    more callback on every future of a pool that runs 100,000 tasks a second.
    """

    on_cancel: Callable[[Future[Any]], None] | None = None

    def __init__(self, handle: H | None = None) -> None:
        super().__init__()
        self.handle: H | None = handle

    def _invoke_callbacks(self) -> None:
        if self.on_cancel is not None and self.cancelled():
            try:
                self.on_cancel(self)
            except BaseException:
                LOGGER.exception("the cancel hook of %r raised", self)
        for callback in self._done_callbacks:  # type: ignore[attr-defined]
            try:
                callback(self)
            except BaseException:
                LOGGER.exception("a done-callback of %r raised", self)


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
