"""The ``"processes"`` backend: worker processes on every core, supervised by one thread.

The engine itself lives in :mod:`.supervisor` (start there: it opens with a diagram), the
worker loop in :mod:`.worker`, their message headers in :mod:`.protocol` (the bodies are the
shared wire, :mod:`manybrains.backends._wire`), worker start-up in :mod:`.startup`, the
start-method policy in :mod:`.context` and :mod:`.template`, which worker takes a task and
when one is overdue in :mod:`.dispatch`, callers' commands to the supervisor in :mod:`.inbox`,
the workers' logs and prints in :mod:`.output`, and killing a worker with what it started in
:mod:`.kill`.
"""

from __future__ import annotations

import atexit
import itertools
import weakref
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ..._future import still_cancellable
from ..._mainspace import sending_to
from ..._mp_primitives import Kept
from ..._serialize import FunctionCache, dumps_call, dumps_checked, plain
from ..._task import Task
from ...ipc.arena import Arena, release_shared_memory
from ...ipc.autoshare import Loan
from .._base import Backend, PoolOptions, Statistics
from . import protocol

if TYPE_CHECKING:
    from concurrent.futures import Future

    from ..._timings import TaskTimings
    from ...options import Processes
    from .context import Launch
    from .state import Record
    from .supervisor import Supervisor

# Workers import this package too (their module lives in it), so the parent-only machinery
# (the supervisor, concurrent.futures) is imported when a pool starts, keeping each worker's
# start-up short.

_ids = itertools.count(1)
_live: weakref.WeakSet[ProcessBackend] = weakref.WeakSet()

# ---- the backend ------------------------------------------------------------------------


@dataclass(frozen=True)
class ProcessStatistics(Statistics):
    """A process pool's snapshot, with how its workers start."""

    start_method: str | None = None  # "template", "fork", "forkserver", "spawn"
    start_method_why: str | None = None  # why that way: asked for, a default, a fallback


class ProcessBackend(Backend):
    """Tasks run in worker processes: true parallelism, one GIL per worker."""

    name = "processes"
    starts_worker_processes = True
    pickles_tasks = True

    def __init__(self, options: PoolOptions[Processes]) -> None:
        from .context import choose

        self._options = own = options.own
        # A fresh template keeps the initializer and initargs: its workers inherit them.
        keep = Kept((options.initializer, options.initargs))
        self._launch = launch = choose(own.start_method, keep=keep, parts=lambda: [
            ("the initializer", options.initializer),
            *((f"initargs[{i}]", a) for i, a in enumerate(options.initargs))])
        self._arena = Arena()  # shared memory for big array arguments, reused across tasks
        self._functions = FunctionCache()  # submit's functions, pickled once each
        self._cancel_hook = self._on_cancel  # bound once: not one more object per task
        try:
            self._supervisor = self._supervise(options, launch)
        except BaseException:
            launch.release()
            raise
        _live.add(self)

    def _supervise(self, options: PoolOptions[Processes], launch: Launch) -> Supervisor:
        from .state import EngineOptions
        from .supervisor import Supervisor

        return Supervisor(EngineOptions(
            workers=options.workers, launch=launch,
            initializer=options.initializer, initargs=options.initargs,
            max_tasks_per_worker=options.max_tasks_per_worker,
            max_memory_per_worker=options.own.max_memory_per_worker,
            inner_threads=options.own.inner_threads,
            mark_running=options.own.stdlib_futures))

    def submit(self, task: Task, *, timeout: float | None = None, retries: int = 0
               ) -> Future[Any]:
        task_id = next(_ids)
        call = self._call_frame(task, task_id)
        if call is not None:  # nothing to lend shared memory to
            return self._queue(task, task_id, call, timeout, retries)
        header = protocol.request(protocol.TASK, task_id)
        with Loan(self._arena) as loan, sending_to(self._launch.inherited_globals):
            frame = dumps_checked((task.fn, task.args, task.kwargs, task.items, task.star),
                                  header=header, parts=task.parts)
            future = self._queue(task, task_id, frame, timeout, retries)
        loan.settle_with(future)
        return future

    def _call_frame(self, task: Task, task_id: int) -> bytes | None:
        """The task's message by the fast path, a ``CALL``: one call of a function pickled
        before, with plain arguments (numbers, strings, small containers of them); else
        None, and the task is pickled whole."""
        if task.items is not None or not (plain(task.args) and plain(task.kwargs)):
            return None
        function = self._functions.get(task.fn, task.parts, self._launch.inherited_globals)
        if function is None:
            return None
        return dumps_call(function, task.args, task.kwargs,
                          protocol.request(protocol.CALL, task_id))

    def _queue(self, task: Task, task_id: int, frame: bytes | bytearray,
               timeout: float | None, retries: int) -> Future[Any]:
        from ..._future import TaskFuture
        from .state import Record

        future: TaskFuture[Record] = TaskFuture()
        future.handle = record = Record(task_id, frame, future, task.fn, task.args,
                                        task.kwargs, task.items, size=task.size,
                                        chunk=task.items is not None, timeout=timeout,
                                        retries=retries)
        if not self._options.stdlib_futures:
            future.on_cancel = self._cancel_hook
        self._supervisor.submit(record)
        return future

    def cancel(self, future: Future[Any]) -> bool:
        record = _record(future)
        if record is None or not still_cancellable(future):
            return False
        future.cancel()
        self._supervisor.cancel(record, kill=True)
        return True

    def shutdown(self, *, wait: bool = True, cancel_futures: bool = False, kill: bool = False
                 ) -> None:
        self._supervisor.shutdown(wait=wait, cancel_futures=cancel_futures, kill=kill)
        release_shared_memory(self._arena, workers_gone=wait)

    def statistics(self) -> ProcessStatistics:
        workers = self._supervisor.worker_table()
        return self._supervisor.counters.statistics(
            self.name, ProcessStatistics, queued=self._supervisor.queued,
            in_flight=sum(w.in_flight for w in workers), workers=workers,
            start_method=self._launch.method, start_method_why=self._launch.reason)

    def task_timings(self) -> TaskTimings:
        """Run times of the finished tasks, for ``Pool.insights()``."""
        return self._supervisor.timings

    def worker_pids(self) -> list[int]:
        """Process ids of the current workers."""
        return self._supervisor.worker_pids()

    def _on_cancel(self, future: Future[Any]) -> None:
        # A queued task is dropped; a running one killed if asked.
        record = _record(future)
        assert record is not None  # only our own futures get this hook
        self._supervisor.cancel(record, kill=self._options.cancel_running)
        future.set_running_or_notify_cancel()  # wakes concurrent.futures.wait() waiters

    def _exit(self) -> None:
        wait_for_work = self._options.stdlib_futures  # as the stdlib executor does
        self._supervisor.shutdown(wait=True, cancel_futures=not wait_for_work,
                                  kill=not wait_for_work)
        release_shared_memory(self._arena, workers_gone=True)


def _record(future: Future[Any]) -> Record | None:
    """The engine's record of the task behind ``future``; None for another backend's."""
    from ..._future import handle_of
    from .state import Record

    return handle_of(future, Record)


@atexit.register
def _stop_all_pools() -> None:
    # Registered after multiprocessing's own exit hook, so it runs first: our workers are
    # stopped by us, not joined forever by multiprocessing.
    for backend in list(_live):
        backend._exit()


backend_class = ProcessBackend
