"""The ``"dask"`` backend: tasks run on a Dask cluster, local or remote.

With no ``address`` and no ``client`` the pool starts a ``distributed.LocalCluster`` (worker
processes, listening on 127.0.0.1 only, no dashboard unless asked) and closes it with the
pool; with either, it uses that cluster and leaves it running.

The package has the process engine's shape: this module is the backend (the caller side),
:mod:`.worker` what runs in a Dask worker, over the same wire as the engine's workers
(:mod:`manybrains.backends._wire`), and :mod:`.scatter` what is sent to the cluster once.

How a task travels::

    caller thread                       client's event loop              Dask worker
    -------------                       -------------------              -----------
    submit(task)
      pickle args/items once -> bytes
      (SerializationError raised here)
      the function: pickled once per map
      (PickledOnce), big functions and
      numpy arguments: scattered once
      client.submit(worker.execute, ...,  ─────────────────────────────► execute(frame, ...)
                    pure=False)
                                        (with a timeout) ◄─────────────  log "started"
                                        deadline armed                    _wire.execute: the
                                                                          call or chunk
                                        gather(bytes) ◄──────────────────  return ONE reply
      future.result() ◄──────────────── _wire.decode, settle the future

Why ``pure=False``: otherwise Dask runs identical calls once. A task's own exception is
caught by the wire and travels inside the reply, so a failed Dask future always means the
cluster lost the task (a worker died, the connection dropped): that, and only that, is what
``retries`` resubmits.

Dask cannot stop a running task: a task past its ``timeout``, or cancelled while running,
has its future failed (or cancelled) at once, but it runs on in its worker and its result is
dropped.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import itertools
import threading
import uuid
from collections.abc import Callable
from concurrent.futures import Future
from concurrent.futures import wait as wait_all
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import dask
import distributed

from ..._errors import BrokenPool, InitializerFailed, WorkerCrashed, check_open
from ..._future import TaskFuture, set_exception, set_result, still_cancellable
from ..._serialize import dumps_checked
from ..._task import Task, function_name, unwrap
from .. import _wire
from .._base import Backend, Counters, PoolOptions, Statistics, WorkerStats
from . import worker
from .scatter import SCATTER_BYTES, Scattered

if TYPE_CHECKING:
    from ...options import Dask

__all__ = ("SCATTER_BYTES", "DaskBackend", "backend_class")

_DASHBOARD = "127.0.0.1:8787"
_ids = itertools.count(1)

# ---- the caller side -----------------------------------------------------------------------


@dataclass(eq=False)
class _Record:
    """One task on its way through the cluster."""

    id: int
    label: str
    arguments: tuple[Any, ...]  # what worker.execute is called with
    future: TaskFuture[_Record]
    chunk: bool
    timeout: float | None
    retries: int
    dask_future: Any = None
    timer: asyncio.TimerHandle | None = None


class _WorkerTimes:
    """Tasks finished and seconds busy per Dask worker, from the replies' headers."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._rows: dict[str, tuple[int, float]] = {}

    def ran(self, address: str, elapsed: float) -> None:
        with self._lock:
            tasks, busy = self._rows.get(address, (0, 0.0))
            self._rows[address] = (tasks + 1, busy + elapsed)

    def table(self) -> tuple[WorkerStats, ...]:
        with self._lock:
            rows = list(self._rows.items())
        return tuple(WorkerStats(address, tasks=tasks, busy_s=busy)
                     for address, (tasks, busy) in rows)


@dataclass(frozen=True)
class DaskStatistics(Statistics):
    """A ``"dask"`` pool's snapshot, with the cluster's side of it."""

    scheduler: str | None = None  # the scheduler's address
    scattered: int = 0  # arrays sent to the workers once and shared


class DaskBackend(Backend):
    """Tasks run on a Dask cluster: a LocalCluster of its own, or one given by address."""

    name = "dask"

    def __init__(self, options: PoolOptions[Dask]) -> None:
        self._cluster: distributed.LocalCluster | None = None
        self._dashboard = bool(options.own.dashboard)
        self._own_client = options.own.client is None
        self._client = options.own.client or self._connect(options.own, options.workers)
        self._topic = f"manybrains-started-{uuid.uuid4().hex}"
        self._client.subscribe_topic(self._topic, self._on_started)
        self._records: dict[int, _Record] = {}
        self._scattered = Scattered(self._client)
        self._counters = Counters()
        self._worker_times = _WorkerTimes()
        self._lock = threading.Lock()
        self._closed = False
        self._released = threading.Event()
        self._plugin: str | None = None
        if options.initializer is not None:
            self._install_initializer(options.initializer, options.initargs)
        # A cluster given by address may have any number of threads: the pool keeps about
        # twice as many tasks in flight.
        self.capacity = sum(self._client.nthreads().values()) or None

    def _connect(self, options: Dask, workers: int) -> distributed.Client:
        if options.address is not None:
            return distributed.Client(options.address, set_as_default=False)
        dashboard = _DASHBOARD if options.dashboard is True else options.dashboard or None
        # The scheduler always serves health checks over HTTP: on 127.0.0.1, on a free port
        # (not the dashboard's 8787) unless a dashboard was asked for.
        http = {} if dashboard else {"dashboard_address": "127.0.0.1:0"}
        # A lost task fails at once, as in a process pool; the pool's `retries` decide.
        with dask.config.set({"distributed.scheduler.allowed-failures": 0}):
            self._cluster = distributed.LocalCluster(
                n_workers=workers, threads_per_worker=1, processes=True,
                host="127.0.0.1", dashboard_address=dashboard, scheduler_kwargs=http)
        try:
            return distributed.Client(self._cluster, set_as_default=False)
        except BaseException:
            self._cluster.close()
            raise

    @property
    def client(self) -> distributed.Client:
        """The ``distributed.Client`` this pool submits through (``Pool.client``)."""
        return self._client

    @property
    def dashboard_link(self) -> str | None:
        """Where the cluster's dashboard is, if it has one."""
        if self._cluster is not None and not self._dashboard:
            return None  # what listens there serves health checks, not a dashboard
        link: str | None = self._client.dashboard_link
        return link

    # ---- submit ------------------------------------------------------------------------

    def submit(self, task: Task, *, timeout: float | None = None, retries: int = 0
               ) -> Future[Any]:
        check_open(self._closed)
        args, kwargs, arrays = self._scattered.arguments(task)
        frame = bytes(dumps_checked((args, kwargs, task.items, task.star), header=b"",
                                    parts=task.parts))
        fn_key, function = self._scattered.function(task)
        future: TaskFuture[_Record] = TaskFuture()
        future.handle = record = _Record(next(_ids), _label(task), (), future,
                                         task.items is not None, timeout, retries)
        topic = None if timeout is None else self._topic
        record.arguments = (frame, (record.id, fn_key, topic), function, *arrays)
        future.add_done_callback(functools.partial(self._on_done, record))
        with self._lock:
            check_open(self._closed)
            self._records[record.id] = record
        self._counters.add("submitted")
        self._send(record)
        return future

    def _send(self, record: _Record) -> None:
        key = f"manybrains-{record.label}-{uuid.uuid4().hex}"
        record.dask_future = self._client.submit(worker.execute, *record.arguments, key=key,
                                                 pure=False)
        asyncio.run_coroutine_threadsafe(self._follow(record, record.dask_future),
                                         self._client.loop.asyncio_loop)

    # ---- on the client's event loop -----------------------------------------------------

    async def _follow(self, record: _Record, dask_future: Any) -> None:
        try:
            reply = await self._client.gather(dask_future, asynchronous=True)
        except Exception as exc:  # noqa: BLE001 - the cluster lost the task, not the task failed
            return self._lost(record, dask_future, exc)
        if dask_future is record.dask_future:
            self._settle(record, reply)

    def _on_started(self, event: tuple[float, int]) -> None:
        record = self._records.get(event[1])
        if record is None or record.future.done():
            return
        if record.timer is not None:  # Dask reran the task after its worker died
            record.timer.cancel()
        if record.timeout is not None:
            record.timer = asyncio.get_running_loop().call_later(record.timeout, self._expire,
                                                                 record)

    def _expire(self, record: _Record) -> None:
        if record.future.done():
            return
        self._counters.add("timed_out")
        self._finish(record, error=TimeoutError(
            f"{record.label} ran longer than its timeout of {record.timeout:g} s; Dask cannot "
            f"stop a running task, so it runs on in its worker and its result is dropped"))
        self._release(record)

    def _settle(self, record: _Record, reply: bytes) -> None:
        outcome, elapsed, address, body = worker.read_reply(reply)
        self._worker_times.ran(address, elapsed)
        value, error = _wire.decode(outcome, body, label=record.label, chunk=record.chunk,
                                    elapsed=elapsed)
        self._finish(record, value=value, error=error)

    def _lost(self, record: _Record, dask_future: Any, exc: Exception) -> None:
        if record.future.done() or dask_future is not record.dask_future:
            return self._forget(record)  # timed out or cancelled: nobody waits for it
        self._counters.add("crashed")
        if record.retries > 0 and not self._closed:
            record.retries -= 1
            self._counters.add("retried")
            return self._send(record)
        kind = WorkerCrashed if isinstance(exc, distributed.KilledWorker) else BrokenPool
        error = kind(f"the Dask cluster lost {record.label}: {type(exc).__name__}: {exc}")
        error.__cause__ = exc
        self._finish(record, error=error)

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

    def _release(self, record: _Record) -> None:
        """Tell the scheduler nobody wants ``record``'s result (it cannot stop it)."""
        if record.dask_future is not None:
            # Runs on the loop; the client keeps the task until it finishes.
            self._client.loop.add_callback(self._client.cancel, [record.dask_future],
                                           asynchronous=True)

    # ---- cancel and shut down -----------------------------------------------------------

    def _on_done(self, record: _Record, future: Future[Any]) -> None:
        if future.cancelled():  # by the caller: free the cluster from a task nobody wants
            self._forget(record)
            with contextlib.suppress(RuntimeError):  # the client's loop has closed
                self._client.loop.add_callback(self._release, record)

    def cancel(self, future: Future[Any]) -> bool:
        if not still_cancellable(future):
            return False
        future.cancel()  # never RUNNING here, so this always succeeds
        return True

    def shutdown(self, *, wait: bool = True, cancel_futures: bool = False, kill: bool = False
                 ) -> None:
        with self._lock:
            first = not self._closed
            self._closed = True
            pending = list(self._records.values())
        if kill or cancel_futures:
            self._cancel_queued(pending, running_too=kill)
        if first and wait:
            self._close(kill=kill)
        elif first:
            threading.Thread(target=self._close, kwargs={"kill": kill}, daemon=True,
                             name="manybrains-dask-closer").start()
        elif wait:
            self._released.wait()

    def _cancel_queued(self, records: list[_Record], *, running_too: bool) -> None:
        running: set[str] = set()
        if not running_too:
            with contextlib.suppress(Exception):  # a lost cluster runs nothing
                running = self._executing()
        for record in records:
            if running_too or record.dask_future.key not in running:
                record.future.cancel()

    def _executing(self) -> set[str]:
        """The keys the cluster's workers are running now, asked of the workers holding ours."""
        ours = {record.dask_future.key for record in list(self._records.values())}
        holders = [address for address, keys in self._client.processing().items()
                   if ours.intersection(keys)]
        if not holders:
            return set()
        answers = self._client.run(worker.executing, workers=holders, on_error="return")
        return {key for keys in answers.values() if isinstance(keys, list) for key in keys}

    def _close(self, *, kill: bool) -> None:
        if not kill:
            wait_all([r.future for r in list(self._records.values())])
        try:
            self._release_cluster()
        finally:
            self._released.set()

    def _release_cluster(self) -> None:
        with contextlib.suppress(Exception):  # the connection may already be gone
            self._client.unsubscribe_topic(self._topic)
            if self._plugin is not None:
                self._client.unregister_worker_plugin(self._plugin)
        self._scattered.clear()
        if self._own_client:
            self._client.close()
        if self._cluster is not None:
            self._cluster.close()

    def statistics(self) -> DaskStatistics:
        return self._counters.statistics(
            self.name, DaskStatistics, in_flight=len(self._records),
            workers=self._worker_times.table(), scattered=self._scattered.count,
            scheduler=self._client.scheduler.address)

    # ---- initializer ----------------------------------------------------------------------

    def _install_initializer(self, initializer: Callable[..., object],
                             initargs: tuple[Any, ...]) -> None:
        self._plugin = f"manybrains-initializer-{uuid.uuid4().hex}"
        try:
            self._client.register_plugin(_Initializer(initializer, initargs), name=self._plugin)
        except Exception as exc:
            self.shutdown(kill=True)
            raise InitializerFailed.because(exc, "on a Dask worker") from exc


class _Initializer(distributed.WorkerPlugin):  # type: ignore[misc]
    """Runs the pool's initializer once in every worker, including later ones."""

    def __init__(self, fn: Callable[..., object], args: tuple[Any, ...]) -> None:
        self.fn, self.args = fn, args

    def setup(self, worker: distributed.Worker) -> None:
        self.fn(*self.args)


def _label(task: Task) -> str:
    name = function_name(unwrap(task.fn))
    return f"{name}" if task.items is None else f"{name}-chunk"


backend_class = DaskBackend
