"""The gate in front of one function's waiting calls: at most its limit run at once.

``"auto"`` hands every waiting call of a function to its gate, which starts it on a thread as
soon as :class:`~manybrains.backends.auto.limit.ConcurrencyLimit` allows and queues it
otherwise; each finished call tells the limit how it went and lets the next one in. A call
that failed because the other side was overwhelmed (see
:func:`~manybrains.backends.auto.limit.overload_error`) is run again at the front of the
queue, up to ``MAX_RERUNS`` times, so that backing off costs the caller no errors, when the
other side surely did not act on it (a refused connection, a 429 or 503 answer: see
:func:`~manybrains.backends.auto.limit.safe_to_run_again`); a timeout or a reset may come
after the work was done, so that call fails. A chunk runs again from the item that failed.
A task's timeout starts when it leaves the gate.
"""

from __future__ import annotations

import dataclasses
import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future
from functools import partial
from typing import Any

from ..._future import TaskFuture, set_exception, set_result, still_cancellable
from ..._task import ChunkOutcome, Task
from .._base import Backend
from .limit import ConcurrencyLimit, overload_error, safe_to_run_again

MAX_RERUNS = 5  # runs of one call turned away as "too much at once", after the first

Run = Callable[[Task, "float | None", int], "Future[Any]"]


@dataclasses.dataclass(eq=False)
class Call:
    """A waiting call held at its gate: the handle of the future its caller holds."""

    task: Task
    timeout: float | None
    retries: int
    future: TaskFuture[Call]  # what the caller holds
    done: list[Any] = dataclasses.field(default_factory=list)  # a chunk's items before a rerun
    elapsed: float = 0.0
    reruns: int = 0
    started: float = 0.0
    load: int = 0  # calls in flight when it started, itself included
    inner: Future[Any] | None = None  # the run in progress


class Gate:
    """Runs calls through ``run`` (a thread) while ``limit`` allows; queues the others."""

    def __init__(self, limit: ConcurrencyLimit, run: Run) -> None:
        self.limit = limit
        self._run = run
        self._lock = threading.Lock()
        self._idle = threading.Condition(self._lock)
        self._queue: deque[Call] = deque()
        self._running = 0
        self._when_idle: list[Callable[[], None]] = []
        self.reruns = 0

    def submit(self, task: Task, timeout: float | None, retries: int) -> Future[Any]:
        call = Call(task, timeout, retries, TaskFuture())
        call.future.handle = call
        with self._lock:
            self._queue.append(call)
        self._pump()
        return call.future

    # ---- lifecycle --------------------------------------------------------------------------

    def cancel_queued(self) -> None:
        with self._lock:
            queued = list(self._queue)
            self._queue.clear()
        for call in queued:
            call.future.cancel()
        self._check_idle()

    def drain(self) -> None:
        """Wait until every call given to the gate has finished."""
        with self._lock:
            while self._queue or self._running:
                self._idle.wait()

    def when_idle(self, callback: Callable[[], None]) -> None:
        """Call ``callback`` once the gate has nothing queued or running (now, if so)."""
        with self._lock:
            if self._queue or self._running:
                self._when_idle.append(callback)
                return
        callback()

    def describe(self) -> dict[str, Any]:
        with self._lock:
            queued, running = len(self._queue), self._running
        return {**self.limit.describe(), "in_flight": running, "queued": queued,
                "reruns": self.reruns}

    # ---- running ----------------------------------------------------------------------------

    def _pump(self) -> None:
        while True:
            with self._lock:
                if self._running >= self.limit.limit or not self._queue:
                    break
                call = self._queue.popleft()
                if call.future.cancelled():
                    continue
                self._running += 1
                call.load = self._running
                self.limit.started(self._running)
            self._start(call)
        self._check_idle()

    def _start(self, call: Call) -> None:
        call.started = time.monotonic()
        try:
            inner = self._run(call.task, call.timeout, call.retries)
        except BaseException as exc:  # noqa: BLE001 - the call's own future reports it
            with self._lock:
                self._running -= 1
            set_exception(call.future, exc)
            return
        call.inner = inner
        inner.add_done_callback(partial(self._finished, call))

    def _finished(self, call: Call, inner: Future[Any]) -> None:
        latency = time.monotonic() - call.started
        error, outcome = _error_of(inner)
        # The pool's own deadline is no sign of overload: it is the caller's limit.
        overload = None if call.timeout is not None and isinstance(error, TimeoutError) \
            else overload_error(error)
        with self._lock:
            self._running -= 1
        if not inner.cancelled():  # a cancelled call says nothing about the other side
            self.limit.finished(call.started, latency / max(1, call.task.size), call.load,
                                overload)
        if (overload is not None and safe_to_run_again(error) and call.reruns < MAX_RERUNS
                and not call.future.cancelled()):
            self._again(call, outcome)
        else:
            _deliver(call, inner, outcome)
        self._pump()

    def _again(self, call: Call, outcome: ChunkOutcome | None) -> None:
        if outcome is not None and call.task.items is not None:  # the items before it are done
            call.done.extend(outcome.values)
            call.elapsed += outcome.elapsed
            call.task = dataclasses.replace(call.task,
                                            items=call.task.items[len(outcome.values):])
        call.reruns += 1
        with self._lock:
            self.reruns += 1
            self._queue.appendleft(call)

    def _check_idle(self) -> None:
        with self._lock:
            if self._queue or self._running:
                return
            self._idle.notify_all()
            callbacks, self._when_idle = self._when_idle, []
        for callback in callbacks:
            callback()


def _error_of(inner: Future[Any]) -> tuple[BaseException | None, ChunkOutcome | None]:
    """The error that ended a run (a chunk's, too) and the chunk's outcome, if it is one."""
    if inner.cancelled():
        return None, None
    error = inner.exception()
    if error is not None:
        return error, None
    outcome = inner.result()
    if isinstance(outcome, ChunkOutcome):
        return outcome.error, outcome
    return None, None


def _deliver(call: Call, inner: Future[Any], outcome: ChunkOutcome | None) -> None:
    if inner.cancelled():
        call.future.cancel()
        return
    error = inner.exception()
    if error is not None:
        set_exception(call.future, error)
        return
    if outcome is not None and call.done:
        outcome = ChunkOutcome(call.done + outcome.values, outcome.error,
                               call.elapsed + outcome.elapsed)
    set_result(call.future, outcome if outcome is not None else inner.result())


def cancel_call(future: TaskFuture[Call], engine: Backend | None) -> bool:
    """Cancel a gate's call: skipped when its turn comes, or stopped on ``engine`` (its
    threads) if it runs there already; False if it had finished."""
    call = future.handle
    if call is None or not still_cancellable(future):
        return False
    future.cancel()
    if call.inner is not None and engine is not None:
        engine.cancel(call.inner)
    return True
