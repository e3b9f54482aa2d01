"""The ``"ray"`` backend: tasks run on a Ray cluster, local or remote.

With no ``address`` the pool starts a local Ray instance of ``workers`` CPUs (on 127.0.0.1,
no dashboard) and stops it with the pool; with one, it joins that cluster and leaves it
running; where ``ray.init()`` was already called, it runs through that connection and leaves
it open (:mod:`.connection`).

The package has the Dask backend's shape: this module is the backend (the caller side),
:mod:`.worker` what runs in a Ray worker, over the same wire as the engine's workers
(:mod:`manybrains.backends._wire`), and :mod:`.store` what is put into the object store once.

How a task travels::

    caller thread                       the pool's event loop            Ray worker
    -------------                       ---------------------            ----------
    submit(task)
      pickle args/items once -> bytes
      (SerializationError raised here)
      the function: pickled once per map
      (PickledOnce), big functions and
      numpy arguments: ray.put once
      worker.execute.remote(frame, ...) ───────────────────────────────► run(frame, ...)
        -> a stream of two objects                                        the initializer,
                                                                          once per pool here
                                        started ◄───────────────────────  yield None
                                        deadline armed                    _wire.execute: the
                                                                          call or chunk
                                        reply (bytes) ◄─────────────────  yield ONE reply
      future.result() ◄──────────────── _wire.decode, settle the future

A task's own exception is caught by the wire and travels inside the reply, so an error in
place of an item means Ray lost the task (its worker died, its node went away): that, and
only that, is what ``retries`` resubmits; Ray itself never reruns a task (``max_retries=0``).

Unlike Dask, Ray can stop a running task: it kills the worker process running it (``ray.cancel
(force=True)``) and starts another when one is needed. A task past its ``timeout`` is stopped
so, and so is a running task given to ``pool.cancel()`` or ``terminate()``. ``future.cancel()``
and ``shutdown(cancel_futures=True)`` cancel what has not started and leave the rest running.
Ray may give the next task to a worker it is still killing; such a task dies before it starts,
and is sent again once, without counting against its ``retries``.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import itertools
import threading
import time
from concurrent.futures import Future
from concurrent.futures import wait as wait_all
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import ray
import ray.exceptions

from ..._errors import BrokenPool, InitializerFailed, WorkerCrashed, check_open, rebuild_error
from ..._future import TaskFuture, handle_of, set_exception, set_result, still_cancellable
from ..._remote import attach
from ..._serialize import PickledOnce, dumps_checked
from ..._task import Task, task_label
from ..._timings import TaskTimings
from .. import _wire
from .._base import Backend, Counters, PoolOptions, Statistics, WorkerStats, thread_prefix
from . import worker
from .connection import Connection, cluster_cpus, connect
from .store import STORE_BYTES, Stored

if TYPE_CHECKING:
    from ...options import Ray

__all__ = ("STORE_BYTES", "RayBackend", "RayStatistics", "backend_class")

_ids = itertools.count(1)
_KILL_SETTLES_S = 5.0  # after killing a worker, how long a task may still land on it

# What Ray raises where the worker holding a task died: the pool says WorkerCrashed.
_WORKER_DIED = (ray.exceptions.WorkerCrashedError, ray.exceptions.NodeDiedError,
                ray.exceptions.OutOfMemoryError)
_CLOSE_SECONDS = 30  # the most the loop is given to let go of its streams at shutdown

# ---- the caller side -----------------------------------------------------------------------


@dataclass(eq=False)
class _Record:
    """One task on its way through the cluster."""

    id: int
    label: str
    task: Task  # described in insights if it is among the slowest
    arguments: tuple[Any, ...]  # what worker.execute is called with
    future: TaskFuture[_Record]
    chunk: bool
    timeout: float | None
    retries: int
    stream: Any = None  # the ObjectRefGenerator of the current try
    started: bool = False  # its worker said so (a crash may come before it can)
    kill: bool = False  # pool.cancel() or terminate(): stop it even when running
    timer: asyncio.TimerHandle | None = None
    sent_again: bool = False  # once, after landing on a worker this pool was killing


class _WorkerTimes:
    """Tasks finished and seconds busy per Ray worker process, from the replies' headers."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._rows: dict[str, tuple[int, float]] = {}

    def ran(self, name: str, elapsed: float) -> None:
        with self._lock:
            tasks, busy = self._rows.get(name, (0, 0.0))
            self._rows[name] = (tasks + 1, busy + elapsed)

    def table(self) -> tuple[WorkerStats, ...]:
        with self._lock:
            rows = list(self._rows.items())
        return tuple(WorkerStats(name, tasks=tasks, busy_s=busy) for name, (tasks, busy) in rows)


@dataclass(frozen=True)
class RayStatistics(Statistics):
    """A ``"ray"`` pool's snapshot, with the cluster's side of it."""

    address: str | None = None  # the cluster's GCS address
    stored: int = 0  # arrays put into the object store once and shared


class RayBackend(Backend):
    """Tasks run on Ray: a local instance of its own, a cluster given by address, or the
    connection ``ray.init()`` opened."""

    name = "ray"

    def __init__(self, options: PoolOptions[Ray]) -> None:
        self._connection: Connection = connect(options.own.address, options.workers)
        try:
            self._initializer = _pickled_initializer(options)
        except BaseException:
            self._connection.close()
            raise
        self._records: dict[int, _Record] = {}
        self._stored = Stored()
        self._counters = Counters()
        self._worker_times = _WorkerTimes()
        self._timings = TaskTimings()
        self._lock = threading.Lock()
        self._closed = False
        self._killed_at = float("-inf")  # when this pool last killed one of its workers
        self._broken: BaseException | None = None
        self._released = threading.Event()
        self._loop = asyncio.new_event_loop()
        self._following: set[asyncio.Task[None]] = set()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True,
                                        name=f"{thread_prefix('ray')}-loop")
        self._thread.start()
        # A cluster joined may have any number of CPUs: the pool keeps about twice as many
        # tasks in flight.
        self.capacity = (options.workers if self._connection.kind == "local"
                         else cluster_cpus())

    @property
    def client(self) -> Any:
        """The Ray context this pool runs through (``Pool.client``): what ``ray.init``
        returned, or ``ray.get_runtime_context()`` where the connection was already open."""
        return self._connection.context

    # ---- submit ------------------------------------------------------------------------

    def submit(self, task: Task, *, timeout: float | None = None, retries: int = 0
               ) -> Future[Any]:
        check_open(self._closed, self._broken)
        args, kwargs, items, refs = self._stored.arguments(task)
        frame = bytes(dumps_checked((args, kwargs, items, task.star), header=b"",
                                    parts=task.parts))
        fn_key, function = self._stored.function(task)
        init_key, initializer = self._initializer or (None, None)
        task_id = next(_ids)
        future: TaskFuture[_Record] = TaskFuture()
        label = task_label(task_id, task.fn, None if task.items is None else task.size)
        future.handle = record = _Record(task_id, label, task, (), future,
                                         task.items is not None, timeout, retries)
        record.arguments = (frame, (record.id, fn_key, init_key), function, initializer,
                            *refs)
        future.add_done_callback(functools.partial(self._on_done, record))
        with self._lock:
            check_open(self._closed, self._broken)
            self._records[record.id] = record
        self._counters.add("submitted")
        self._send(record)
        return future

    def _send(self, record: _Record) -> None:
        record.started = False
        record.stream = stream = worker.execute.remote(*record.arguments)
        self._loop.call_soon_threadsafe(self._start_following, record, stream)

    # ---- on the pool's event loop -------------------------------------------------------

    def _start_following(self, record: _Record, stream: Any) -> None:
        following = self._loop.create_task(self._follow(record, stream))
        self._following.add(following)  # the loop keeps only weak references to tasks
        following.add_done_callback(functools.partial(self._followed, record))

    def _followed(self, record: _Record, following: asyncio.Task[None]) -> None:
        self._following.discard(following)
        if not following.cancelled() and (error := following.exception()) is not None:
            self._finish(record, error=error)  # a fault of ours: said, never a hang

    async def _follow(self, record: _Record, stream: Any) -> None:
        try:
            reply = await (await stream.__anext__())
            if reply is None:  # started; the reply comes next
                self._on_started(record, stream)
                reply = await (await stream.__anext__())
        except Exception as exc:  # noqa: BLE001 - Ray lost the task, not the task failed
            return self._lost(record, stream, exc)
        if stream is record.stream:
            self._settle(record, reply)

    def _on_started(self, record: _Record, stream: Any) -> None:
        if stream is not record.stream or record.future.done():
            return
        record.started = True
        if record.timeout is not None:
            record.timer = self._loop.call_later(record.timeout, self._expire, record, stream)

    def _expire(self, record: _Record, stream: Any) -> None:
        if record.future.done() or stream is not record.stream:
            return
        self._counters.add("timed_out")
        self._finish(record, error=TimeoutError(
            f"{record.label} ran longer than its timeout of {record.timeout:g} s; its Ray "
            f"worker was stopped"))
        self._killing(stream)

    def _settle(self, record: _Record, reply: bytes) -> None:
        kind, elapsed, pid, node, body = worker.read_reply(reply)
        if kind == worker.INIT_FAILED:
            return self._break(record, body)
        self._worker_times.ran(f"{node} pid {pid}", elapsed)
        self._timings.record(elapsed, record.label, record.task)
        value, error = _wire.decode(kind, body, label=record.label, chunk=record.chunk,
                                    elapsed=elapsed)
        self._finish(record, value=value, error=error)

    def _killing(self, stream: Any) -> None:
        """Kill the worker running ``stream`` (``ray.cancel(force=True)``), and remember when."""
        self._killed_at = time.monotonic()
        ray.cancel(stream, force=True)

    def _lost(self, record: _Record, stream: Any, exc: Exception) -> None:
        if stream is not record.stream:
            return  # a try given up on: retried, cancelled or timed out
        if record.future.done():
            return self._forget(record)
        if isinstance(exc, ray.exceptions.RayTaskError):  # raised outside the wire
            return self._finish(record, error=_unwrapped(exc))
        if self._landed_on_a_killed_worker(record, exc):
            record.sent_again = True  # it never started: not a crash of its own, no retry
            return self._send(record)
        self._counters.add("crashed")
        if record.retries > 0 and not self._closed:
            record.retries -= 1
            self._counters.add("retried")
            return self._send(record)
        kind = WorkerCrashed if isinstance(exc, _WORKER_DIED) else BrokenPool
        error = kind(f"Ray lost {record.label}: {type(exc).__name__}: {exc}")
        error.__cause__ = exc
        self._finish(record, error=error)

    def _landed_on_a_killed_worker(self, record: _Record, exc: Exception) -> bool:
        # Ray may hand a new task to the worker this pool has just killed (a timeout, a
        # cancel), before it is gone: the task dies with it without having started.
        return (not record.started and not record.sent_again and isinstance(exc, _WORKER_DIED)
                and time.monotonic() - self._killed_at < _KILL_SETTLES_S)

    def _finish(self, record: _Record, *, value: Any = None,
                error: BaseException | None = None) -> None:
        if record.future.done():  # cancelled by the caller meanwhile
            pass
        elif error is None:
            self._counters.add("done")
            set_result(record.future, value)
        else:
            self._counters.add("failed")
            set_exception(record.future, error)
        self._forget(record)

    def _forget(self, record: _Record) -> None:
        if record.timer is not None:
            record.timer.cancel()
        with self._lock:
            self._records.pop(record.id, None)

    def _break(self, record: _Record, body: memoryview) -> None:
        """The pool's initializer failed in a worker: this task and every other fail, and
        no task is taken any more, as in a process pool whose initializer raised."""
        _, cause = _wire.decode(_wire.ERROR, body, label="the pool's initializer")
        error = InitializerFailed.because(cause, "in a Ray worker")
        with self._lock:
            self._broken = self._broken or error
            others = [r for r in self._records.values() if r is not record]
        self._finish(record, error=error)
        for other in others:
            self._finish(other, error=rebuild_error(error))
            if not other.started:  # the rest finish where they run; nobody reads them
                ray.cancel(other.stream)

    # ---- cancel and shut down -----------------------------------------------------------

    def _on_done(self, record: _Record, future: Future[Any]) -> None:
        if not future.cancelled():
            return
        with contextlib.suppress(RuntimeError):  # the loop has closed: nothing to forget
            self._loop.call_soon_threadsafe(self._forget, record)
        self._stop(record)
        future.set_running_or_notify_cancel()  # wakes concurrent.futures.wait() waiters

    def _stop(self, record: _Record) -> None:
        """Cancel ``record``'s Ray task: a queued one is dropped, a running one killed only
        when asked (``pool.cancel``, ``terminate``)."""
        if record.kill:
            self._killing(record.stream)
        elif not record.started:
            ray.cancel(record.stream)

    def cancel(self, future: Future[Any]) -> bool:
        if not still_cancellable(future):
            return False
        record = handle_of(future, _Record)
        if record is not None:
            record.kill = True
            if future.cancelled():  # cancelled before and left running: stop it now
                self._stop(record)
        future.cancel()
        return True

    def shutdown(self, *, wait: bool = True, cancel_futures: bool = False, kill: bool = False
                 ) -> None:
        with self._lock:
            first = not self._closed
            self._closed = True
            pending = list(self._records.values())
        for record in pending:
            record.kill = record.kill or kill
            if kill or (cancel_futures and not record.started):
                record.future.cancel()
        if first and wait:
            self._close(kill=kill)
        elif first:
            threading.Thread(target=self._close, kwargs={"kill": kill}, daemon=True,
                             name=f"{self._thread.name}-closer").start()
        elif wait:
            self._released.wait()

    def _close(self, *, kill: bool) -> None:
        if not kill:
            wait_all([r.future for r in list(self._records.values())])
        try:
            self._stop_loop()
            self._stored.clear()
            self._connection.close()
        finally:
            self._released.set()

    def _stop_loop(self) -> None:
        if threading.current_thread() is self._thread:  # a done-callback shut the pool down
            self._loop.call_soon(self._loop.stop)
            return
        with contextlib.suppress(Exception):  # what the streams say now is read by no one
            asyncio.run_coroutine_threadsafe(self._let_go(), self._loop).result(_CLOSE_SECONDS)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join()
        self._loop.close()

    async def _let_go(self) -> None:
        for following in list(self._following):
            following.cancel()
        await asyncio.gather(*self._following, return_exceptions=True)

    def statistics(self) -> RayStatistics:
        records = list(self._records.values())
        running = sum(r.started for r in records)
        return self._counters.statistics(
            self.name, RayStatistics, in_flight=running, queued=len(records) - running,
            workers=self._worker_times.table(), address=self._connection.address,
            stored=self._stored.count)

    def task_timings(self) -> TaskTimings:
        """Run times of the finished tasks, from the replies' headers (``Pool.insights()``)."""
        return self._timings


def _pickled_initializer(options: PoolOptions[Ray]) -> tuple[str, Any] | None:
    """``(key, blob or (its object ref,))``: the initializer and its arguments, pickled
    once."""
    if options.initializer is None:
        return None
    call = functools.partial(options.initializer, *options.initargs)
    key, blob = PickledOnce(call).pickled(lambda: [
        ("the initializer", options.initializer),
        *((f"initargs[{i}]", a) for i, a in enumerate(options.initargs))])
    # stored, it travels as (ref,), as a big function does: fetched only where not yet run
    return key, (ray.put(blob),) if len(blob) >= STORE_BYTES else blob


def _unwrapped(exc: ray.exceptions.RayTaskError) -> BaseException:
    """The exception inside Ray's wrapper, with the worker's traceback as its cause."""
    cause = getattr(exc, "cause", None)
    if not isinstance(cause, BaseException):
        return exc
    return attach(cause, str(getattr(exc, "traceback_str", "")))


backend_class = RayBackend
