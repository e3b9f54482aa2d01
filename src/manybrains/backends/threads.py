"""The ``"threads"`` backend: tasks run on threads of this process.

Threads share the caller's memory, so nothing is pickled and a call starts in microseconds.
With the GIL only one thread runs Python code at a time: threads suit work that waits (network,
disk, ``time.sleep``, C code that releases the GIL), not pure-Python computation.

Threads are started on demand, up to ``workers``, and stay until the pool shuts down.

Timeouts and cancellation: Python cannot stop a running thread. A task past its timeout has
its future fail with ``TimeoutError`` at once; a running task cancelled through
``Pool.cancel`` fails with ``CancelledError``. Its thread is *abandoned*: it finishes the
call in the background (the result is dropped) and then exits, and a new thread takes its
place so the pool keeps its width. ``shutdown(wait=True)`` does not wait for abandoned calls.
``retries`` never applies: a thread does not crash apart from its task.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from .._cpus import usable_cpus
from .._errors import InitializerFailed, check_open
from .._future import TaskFuture, handle_of, set_exception, set_result, still_cancellable
from .._task import Task, run_task
from ._base import Backend, Counters, PoolOptions, Statistics, WorkerStats, thread_prefix

if TYPE_CHECKING:
    from ..options import Threads

# ---- the backend ------------------------------------------------------------------------


class ThreadBackend(Backend):
    """Tasks run on up to ``workers`` threads of this process."""

    name = "threads"

    @classmethod
    def default_workers(cls) -> int:
        """``min(32, CPUs + 4)``, as ``concurrent.futures``: threads mostly wait."""
        return min(32, usable_cpus() + 4)

    def __init__(self, options: PoolOptions[Threads]) -> None:
        self._options = options
        self._lock = threading.Lock()
        self._work_ready = threading.Condition(self._lock)  # wakes idle workers
        self._deadline_moved = threading.Condition(self._lock)  # wakes the deadline watcher
        self._queue: deque[_Job] = deque()
        self._workers: list[_Worker] = []  # live ones; abandoned workers are dropped
        self._idle = 0
        self._starting = 0  # hired threads that have not yet looked for a job
        self._closed = False
        self._broken: BaseException | None = None
        self._timed: set[_Job] = set()
        self._watcher: threading.Thread | None = None
        self._hirer: threading.Thread | None = None  # starts threads, so that callers need not
        self._hiring = threading.Condition(self._lock)  # wakes the hirer
        self._prefix = thread_prefix("thread")
        self.counters = Counters()

    def submit(self, task: Task, *, timeout: float | None = None, retries: int = 0
               ) -> Future[Any]:
        future: TaskFuture[_Job] = TaskFuture()
        future.handle = job = _Job(task, future, timeout)
        with self._lock:
            self._check_open()
            self.counters.add("submitted")
            self._queue.append(job)
            starting = self._staff()
        if starting is not None:  # outside the lock: the new thread looks for work at once
            self._start(starting)
        return future

    def cancel(self, future: Future[Any]) -> bool:
        job = handle_of(future, _Job)
        if job is None or not still_cancellable(future):
            return False
        future.cancel()
        with self._lock:
            worker = job.worker
            if worker is not None and worker.job is job and not worker.abandoned:
                self._abandon(worker)
        return True

    def shutdown(self, *, wait: bool = True, cancel_futures: bool = False, kill: bool = False
                 ) -> None:
        with self._lock:
            self._closed = True
            if cancel_futures or kill:
                while self._queue:
                    self._queue.popleft().future.cancel()
            if kill:
                self._abandon_running()
            threads = [w.thread for w in self._workers]
            self._work_ready.notify_all()
            self._deadline_moved.notify_all()
            self._hiring.notify_all()
        if wait:
            _join([*threads, self._watcher, self._hirer])

    def statistics(self) -> Statistics:
        now = time.monotonic()
        with self._lock:
            running = sum(1 for w in self._workers if w.job is not None)
            table = tuple(w.row(now) for w in self._workers)
            queued = sum(1 for job in self._queue if not job.future.cancelled())
        return self.counters.statistics(self.name, in_flight=running + queued, queued=queued,
                                        workers=table)

    # ---- caller side, under the lock --------------------------------------------------------

    def _check_open(self) -> None:
        check_open(self._closed, self._broken)

    def _staff(self) -> threading.Thread | None:
        """Wake an idle thread, or see that more start while queued jobs outnumber idle and
        starting threads: the thread to :meth:`_start` once the lock is released, if any.

        ``Thread.start()`` waits until the new thread runs. Started one by one by the caller,
        200 threads for 200 waiting calls took 15 ms on a quiet machine and 60 to 100 ms on
        a busy one, with the calls queued behind them. So the caller starts only the pool's
        first thread; after that a hirer thread starts them, and each new thread starts up
        to two more while jobs still wait (:meth:`_grow`): a tree, and the caller goes on.
        """
        if not self._needs_threads():
            self._work_ready.notify()
            return None
        if not self._workers:  # the first: nothing else could start it sooner
            return self._hire().thread
        if self._hirer is None:
            self._hirer = threading.Thread(target=self._hire_while_needed, daemon=True,
                                           name=f"{self._prefix}-hirer")
            return self._hirer
        self._hiring.notify()
        return None

    def _hire_while_needed(self) -> None:
        """The hirer: start a thread whenever jobs wait for one, until the pool closes."""
        while True:
            with self._lock:
                while not (self._closed or self._broken is not None or self._needs_threads()):
                    self._hiring.wait()
                if self._closed or self._broken is not None:
                    return
                worker = self._hire()
            assert worker.thread is not None
            try:
                self._start(worker.thread, worker)
            except RuntimeError:  # the system has no more threads: those running take the
                with self._lock:  # jobs, and the next caller that needs one starts a hirer
                    self._hirer = None
                return

    def _needs_threads(self, taking: int = 0) -> bool:
        """More jobs wait than threads will take (``taking``: jobs the calling thread is
        about to take itself)."""
        return (len(self._queue) - taking > self._idle + self._starting
                and len(self._workers) < self._options.workers)

    def _grow(self) -> None:
        """In a thread that has just started: start up to two more while jobs wait."""
        hired: list[_Worker] = []
        with self._lock:
            self._starting -= 1
            while (len(hired) < 2 and not self._closed and self._broken is None
                   and self._needs_threads(taking=1)):
                hired.append(self._hire())
        for worker in hired:
            assert worker.thread is not None
            try:
                self._start(worker.thread, worker)
            except RuntimeError:  # the system has no more threads: those running
                return  # take the jobs

    def _hire(self) -> _Worker:
        """A new worker, counted; its thread is started by :meth:`_start`, without the
        lock held (``Thread.start()`` waits until the thread runs)."""
        worker = _Worker()
        worker.thread = threading.Thread(
            target=self._work, args=(worker,), daemon=True,
            name=f"{self._prefix}-{self.counters['workers_started'] + 1}")
        self._workers.append(worker)
        self.counters.add("workers_started")
        self._starting += 1
        return worker

    def _start(self, thread: threading.Thread, worker: _Worker | None = None) -> None:
        """Start ``thread`` (``worker``'s, or the hirer), without the lock held."""
        try:
            thread.start()
        except BaseException:  # no thread (out of them): the ones running take the jobs
            with self._lock:
                if worker is None:
                    worker = next((w for w in self._workers if w.thread is thread), None)
                if worker is not None and worker in self._workers:
                    self._starting -= 1
                    self._workers.remove(worker)
                elif thread is self._hirer:
                    self._hirer = None
            raise

    def _replace(self) -> None:
        """Under the lock, on the rare paths (a thread abandoned or retired): start one now
        (it waits for the lock to look for work)."""
        worker = self._hire()
        assert worker.thread is not None
        try:
            worker.thread.start()
        except BaseException:
            self._starting -= 1
            self._workers.remove(worker)
            raise

    def _abandon(self, worker: _Worker) -> None:
        """Give up on ``worker``'s running call; a new thread takes its place if needed."""
        worker.abandoned = True
        if worker in self._workers:
            self._workers.remove(worker)
        if worker.job is not None:
            self._timed.discard(worker.job)
        if self._queue and not self._broken:
            self._replace()

    def _abandon_running(self) -> None:
        for worker in list(self._workers):
            if worker.job is not None:
                worker.job.future.cancel()
                self._abandon(worker)

    # ---- worker threads -----------------------------------------------------------------

    def _work(self, worker: _Worker) -> None:
        self._grow()
        if not self._initialize():
            return
        while (job := self._next_job(worker)) is not None:
            self._run(worker, job)
        with self._lock:
            if worker in self._workers:
                self._workers.remove(worker)
                if self._queue and not self._broken:  # it retired (max_tasks_per_worker)
                    self._replace()
            self._deadline_moved.notify()  # the watcher exits once the last worker is gone

    def _initialize(self) -> bool:
        initializer = self._options.initializer
        if initializer is None:
            return True
        try:
            initializer(*self._options.initargs)
        except BaseException as exc:  # noqa: BLE001 - the pool breaks, every task is told
            self._break(exc)
            return False
        return True

    def _break(self, cause: BaseException) -> None:
        error = InitializerFailed.because(cause, "in a thread")
        with self._lock:
            self._broken = self._broken or error
            failed = list(self._queue)
            self._queue.clear()
            self._workers.clear()
            self._work_ready.notify_all()
        for job in failed:
            set_exception(job.future, InitializerFailed.because(cause, "in a thread"))

    def _next_job(self, worker: _Worker) -> _Job | None:
        limit = self._options.max_tasks_per_worker
        with self._lock:
            while True:
                if worker.abandoned or (limit is not None and worker.tasks >= limit):
                    return None
                while self._queue:
                    job = self._queue.popleft()
                    if not job.future.cancelled():
                        self._begin(worker, job)
                        return job
                if self._closed or self._broken is not None:
                    return None
                self._idle += 1
                self._work_ready.wait()
                self._idle -= 1

    def _begin(self, worker: _Worker, job: _Job) -> None:
        worker.job, job.worker = job, worker
        worker.since = time.monotonic()
        if job.timeout is not None:
            job.deadline = worker.since + job.timeout
            self._timed.add(job)
            self._ensure_watcher()
            self._deadline_moved.notify()

    def _run(self, worker: _Worker, job: _Job) -> None:
        start = time.perf_counter()
        error: BaseException | None = None
        try:
            value = run_task(job.task)
        except BaseException as exc:  # noqa: BLE001 - the error belongs to the task
            error, value = exc, None
        with self._lock:
            worker.busy += time.perf_counter() - start
            worker.tasks += 1
            worker.job = None
            self._timed.discard(job)
            settle = not worker.abandoned
            if settle:
                self.counters.add("failed" if error is not None else "done")
        if settle:  # an abandoned call's future was already failed (timeout, cancel)
            _settle(job.future, value, error)

    # ---- the deadline watcher -------------------------------------------------------------

    def _ensure_watcher(self) -> None:
        if self._watcher is None:
            self._watcher = threading.Thread(target=self._watch, daemon=True,
                                             name=f"{self._prefix}-deadlines")
            self._watcher.start()

    def _watch(self) -> None:
        """Fail each task at its deadline; sleeps until the nearest one, never polls."""
        with self._lock:
            while self._workers or self._timed or not self._closed:
                expired = self._expire(time.monotonic())
                if expired:
                    self._lock.release()
                    try:
                        _fail_late(expired)
                    finally:
                        self._lock.acquire()
                    continue
                self._deadline_moved.wait(self._until_next_deadline())

    def _expire(self, now: float) -> list[_Job]:
        expired = [job for job in self._timed if job.deadline is not None and now >= job.deadline]
        for job in expired:
            self.counters.add("timed_out")
            self.counters.add("failed")
            if job.worker is not None:
                self._abandon(job.worker)
        return expired

    def _until_next_deadline(self) -> float | None:
        deadlines = [job.deadline for job in self._timed if job.deadline is not None]
        return max(0.0, min(deadlines) - time.monotonic()) if deadlines else None


# ---- bookkeeping ------------------------------------------------------------------------


@dataclass(eq=False)
class _Job:
    task: Task
    future: Future[Any]
    timeout: float | None
    deadline: float | None = None
    worker: _Worker | None = None


@dataclass(eq=False)
class _Worker:
    thread: threading.Thread | None = None
    job: _Job | None = None
    tasks: int = 0
    busy: float = 0.0
    since: float = 0.0
    started: float = field(default_factory=time.monotonic)
    abandoned: bool = False

    def row(self, now: float) -> WorkerStats:
        running = now - self.since if self.job is not None else 0.0
        busy = self.busy + running
        return WorkerStats(self.thread.name if self.thread else "", tasks=self.tasks,
                           busy_s=busy, idle_s=max(0.0, now - self.started - busy),
                           in_flight=int(self.job is not None))


def _settle(future: Future[Any], value: Any, error: BaseException | None) -> None:
    if error is not None:
        set_exception(future, error)
    else:
        set_result(future, value)


def _fail_late(jobs: list[_Job]) -> None:
    for job in jobs:
        assert job.timeout is not None
        label = getattr(job.task.fn, "__qualname__", type(job.task.fn).__qualname__)
        set_exception(job.future, TimeoutError(
            f"task ({label}) ran longer than its timeout of {job.timeout:g} s; its thread was "
            "abandoned (it finishes the call in the background) and replaced"))


def _join(threads: list[threading.Thread | None]) -> None:
    current = threading.current_thread()
    for thread in threads:
        if thread is not None and thread is not current and thread.ident is not None:
            thread.join()


backend_class = ThreadBackend
