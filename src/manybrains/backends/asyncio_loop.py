"""The ``"asyncio"`` backend: tasks run on one event loop, in a thread of its own.

Coroutine functions are awaited on the loop, up to ``concurrency`` at once (default 100):
thousands of waiting calls cost one thread. A chunk of a map awaits its items concurrently
under the same limit. A plain (blocking) function would stop the loop, so it runs in a thread
pool beside it, with ``workers`` threads.

The loop lives in its own thread, so the pool is used the same way from plain code and from
inside another running loop (``await pool.asubmit(...)``).

Timeouts and cancellation are real for coroutines: the coroutine is cancelled (it sees
``CancelledError`` at its current ``await``) and the future fails with ``TimeoutError`` or
is cancelled. A blocking call running in the side thread pool cannot be stopped: its future
fails at once and the call finishes in the background. ``retries`` never applies.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .._errors import InitializerFailed, check_open
from .._future import TaskFuture, handle_of, set_exception, set_result, still_cancellable
from .._task import DEFAULT_CONCURRENCY, AsyncCall, Task, run_chunk_async, run_task, unpickled
from ._base import Backend, Counters, PoolOptions, Statistics, WorkerStats, thread_prefix

if TYPE_CHECKING:
    from ..options import Asyncio

# ---- the backend ------------------------------------------------------------------------


@dataclass(frozen=True)
class AsyncioStatistics(Statistics):
    """An ``"asyncio"`` pool's snapshot."""

    concurrency: int = DEFAULT_CONCURRENCY  # coroutines awaited at once


class AsyncioBackend(Backend):
    """Coroutines on one event loop (its own thread); blocking calls beside it."""

    name = "asyncio"

    def __init__(self, options: PoolOptions[Asyncio]) -> None:
        self._options = options
        self._concurrency = options.concurrency or DEFAULT_CONCURRENCY
        self._lock = threading.Lock()
        self._closed = False
        self._broken: InitializerFailed | None = None
        self._jobs: set[_Job] = set()  # touched only in the loop thread
        self._clock = _BusyClock()
        self._abandoned = 0
        self.counters = Counters()
        prefix = thread_prefix("asyncio")
        self._executor = ThreadPoolExecutor(options.workers, thread_name_prefix=prefix)
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._run_loop, daemon=True,
                                        name=f"{prefix}-loop")
        self._thread.start()

    def submit(self, task: Task, *, timeout: float | None = None, retries: int = 0
               ) -> Future[Any]:
        future: TaskFuture[_Job] = TaskFuture()
        future.handle = job = _Job(task, future, timeout)
        with self._lock:
            check_open(self._closed)
            self.counters.add("submitted")
            self._loop.call_soon_threadsafe(self._begin, job)
        future.add_done_callback(self._on_done)
        return future

    def cancel(self, future: Future[Any]) -> bool:
        if handle_of(future, _Job) is None or not still_cancellable(future):
            return False
        future.cancel()  # _on_done cancels the coroutine in the loop
        return True

    def shutdown(self, *, wait: bool = True, cancel_futures: bool = False, kill: bool = False
                 ) -> None:
        with self._lock:
            first, self._closed = not self._closed, True
            # after the loop has stopped (terminate() after shutdown()) nothing is left to stop
            if (first or kill) and not self._loop.is_closed():
                self._loop.call_soon_threadsafe(self._drain, cancel_futures or kill, kill)
        if wait and threading.current_thread() is not self._thread:
            self._thread.join()

    def statistics(self) -> AsyncioStatistics:
        busy, alive = self._clock.read()
        settled = self.counters["done"] + self.counters["failed"]
        worker = WorkerStats(self._thread.name, tasks=settled, busy_s=busy,
                             idle_s=max(0.0, alive - busy), in_flight=self._clock.active)
        return self.counters.statistics(
            self.name, AsyncioStatistics, in_flight=max(0, self.counters["submitted"] - settled),
            concurrency=self._concurrency, workers=(worker,))

    # ---- the loop thread ------------------------------------------------------------------

    def _run_loop(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._limit = asyncio.Semaphore(self._concurrency)
        self._initialize()
        try:
            self._loop.run_forever()
        finally:
            self._loop.close()
            # A blocking call past its timeout may never return: do not wait for it.
            self._executor.shutdown(wait=not self._abandoned, cancel_futures=True)

    def _initialize(self) -> None:
        initializer = self._options.initializer
        if initializer is None:
            return
        try:
            result = initializer(*self._options.initargs)
            if asyncio.iscoroutine(result):
                self._loop.run_until_complete(result)
        except BaseException as exc:  # noqa: BLE001 - the pool breaks, every task is told
            self._broken = InitializerFailed.because(exc, "on the event loop")

    def _begin(self, job: _Job) -> None:
        if job.future.cancelled():
            return
        if self._broken is not None:
            set_exception(job.future, InitializerFailed.because(self._broken.__cause__,
                                                                "on the event loop"))
            return
        job.runner = self._loop.create_task(self._execute(job))
        self._jobs.add(job)
        self._clock.enter()

    async def _execute(self, job: _Job) -> None:
        try:
            value = await self._with_deadline(job)
        except asyncio.CancelledError:
            job.future.cancel()
        except asyncio.TimeoutError:  # the builtin TimeoutError from Python 3.11 on
            self._count("timed_out", "failed")
            set_exception(job.future, TimeoutError(
                f"the task ran longer than its timeout of {job.timeout:g} s and was cancelled"))
        except BaseException as exc:  # noqa: BLE001 - the error belongs to the task
            self._count("failed")
            set_exception(job.future, exc)
        else:
            self._count("done")
            set_result(job.future, value)
        finally:
            self._jobs.discard(job)
            self._clock.leave()

    async def _with_deadline(self, job: _Job) -> Any:
        if job.timeout is None:
            return await self._call(job)
        try:
            return await asyncio.wait_for(self._call(job), job.timeout)
        except asyncio.TimeoutError:
            if job.blocking:
                self._abandoned += 1
            raise

    async def _call(self, job: _Job) -> Any:
        task = job.task
        fn = unpickled(task.fn)
        if not isinstance(fn, AsyncCall):
            job.blocking = True
            return await self._loop.run_in_executor(self._executor, run_task, task)
        if task.items is not None:
            return await run_chunk_async(fn.fn, task.items, task.star, self._limit)
        async with self._limit:
            job.started = True
            return await fn.fn(*task.args, **task.kwargs)

    def _on_done(self, future: Future[Any]) -> None:
        if not future.cancelled():
            return
        job = handle_of(future, _Job)
        if job is not None:
            with contextlib.suppress(RuntimeError):  # a closed loop runs nothing any more
                self._loop.call_soon_threadsafe(job.stop)

    def _drain(self, cancel_queued: bool, kill: bool) -> None:
        """Cancel what was asked, let the rest finish, then stop the loop."""
        for job in list(self._jobs):
            if kill or (cancel_queued and not job.started and job.task.items is None):
                job.future.cancel()
                job.stop()
        runners = [job.runner for job in self._jobs if job.runner is not None]
        self._loop.create_task(self._stop_after(runners))

    async def _stop_after(self, runners: list[asyncio.Task[None]]) -> None:
        await asyncio.gather(*runners, return_exceptions=True)
        self._loop.stop()

    def _count(self, *names: str) -> None:
        for name in names:
            self.counters.add(name)


# ---- bookkeeping ------------------------------------------------------------------------


@dataclass(eq=False)
class _Job:
    task: Task
    future: Future[Any]
    timeout: float | None
    runner: asyncio.Task[None] | None = None
    started: bool = False  # a coroutine holds a slot of the concurrency limit
    blocking: bool = False  # a plain function running in the side thread pool

    def stop(self) -> None:
        if self.runner is not None and not self.runner.done():
            self.runner.cancel()


class _BusyClock:
    """Time the loop had at least one task in flight (its busy time)."""

    def __init__(self) -> None:
        self.created = time.monotonic()
        self.active = 0
        self.busy = 0.0
        self._since = 0.0

    def enter(self) -> None:
        if self.active == 0:
            self._since = time.monotonic()
        self.active += 1

    def leave(self) -> None:
        self.active -= 1
        if self.active == 0:
            self.busy += time.monotonic() - self._since

    def read(self) -> tuple[float, float]:
        now = time.monotonic()
        running = now - self._since if self.active else 0.0
        return self.busy + running, now - self.created


backend_class = AsyncioBackend
