"""The ``"inline"`` backend: every task runs in the caller's thread, during ``submit``.

No thread, no process, no pickling: a breakpoint, a profiler or a print inside the task
works as in a plain loop, which makes it the backend for debugging and tests. It is also what
``"auto"`` picks for calls so cheap that handing them to anyone else costs more than running
them.

``submit`` returns a future that is already done. The call cannot be interrupted, so a
timeout is checked when the call returns: a call that ran past its timeout fails with
``TimeoutError`` and its result is dropped. Nothing is ever queued or running from the pool's
point of view, so ``cancel`` always answers False. Ctrl-C during a call interrupts the caller
at once, as in a plain loop.
"""

from __future__ import annotations

import threading
import time
from concurrent.futures import Future
from typing import TYPE_CHECKING, Any

from .._errors import InitializerFailed, check_open
from .._future import TaskFuture
from .._task import Task, run_task
from ._base import Backend, Counters, PoolOptions, Statistics, WorkerStats

if TYPE_CHECKING:
    from ..options import Inline

# ---- the backend ------------------------------------------------------------------------


class InlineBackend(Backend):
    """Runs each task right away, in the thread that submits it."""

    name = "inline"

    def __init__(self, options: PoolOptions[Inline]) -> None:
        self._options = options
        self.capacity = 1
        self._lock = threading.Lock()
        self._initialized = options.initializer is None
        self._broken: InitializerFailed | None = None
        self._closed = False
        self._started = time.monotonic()
        self._busy = 0.0
        self.counters = Counters()

    def submit(self, task: Task, *, timeout: float | None = None, retries: int = 0
               ) -> Future[Any]:
        self._check_open()
        self._initialize()
        self.counters.add("submitted")
        future: TaskFuture[None] = TaskFuture()
        start = time.perf_counter()
        try:
            value = run_task(task)
        except KeyboardInterrupt:
            raise  # the caller's own Ctrl-C, not the task's failure
        except BaseException as exc:  # noqa: BLE001 - the error belongs to the task
            self._finish(future, start, timeout, error=exc)
        else:
            self._finish(future, start, timeout, value=value)
        return future

    def cancel(self, future: Future[Any]) -> bool:
        return False  # every task finished before submit returned

    def shutdown(self, *, wait: bool = True, cancel_futures: bool = False, kill: bool = False
                 ) -> None:
        self._closed = True

    def statistics(self) -> Statistics:
        alive = time.monotonic() - self._started
        worker = WorkerStats(threading.current_thread().name, tasks=self.counters["submitted"],
                             busy_s=self._busy, idle_s=max(0.0, alive - self._busy))
        return self.counters.statistics(self.name, workers=(worker,))

    # ---- internals ------------------------------------------------------------------------

    def _check_open(self) -> None:
        check_open(self._closed, self._broken)

    def _initialize(self) -> None:
        """Run the initializer once, before the first task (in the caller, like the tasks)."""
        with self._lock:
            if self._initialized:
                return
            self._initialized = True
            assert self._options.initializer is not None
            try:
                self._options.initializer(*self._options.initargs)
            except BaseException as exc:  # noqa: BLE001 - the pool breaks, as elsewhere
                self._broken = InitializerFailed.because(exc, "in the caller")
        self._check_open()

    def _finish(self, future: Future[Any], start: float, timeout: float | None, *,
                value: Any = None, error: BaseException | None = None) -> None:
        elapsed = time.perf_counter() - start
        self._busy += elapsed
        if timeout is not None and elapsed > timeout:
            self.counters.add("timed_out")
            error = TimeoutError(f"the task ran {elapsed:.3g} s, longer than its timeout of "
                                 f"{timeout:g} s (inline: checked when the call returned)")
        self.counters.add("failed" if error is not None else "done")
        if error is not None:
            future.set_exception(error)
        else:
            future.set_result(value)


backend_class = InlineBackend
