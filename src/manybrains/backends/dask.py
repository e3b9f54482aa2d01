"""The ``"dask"`` backend: tasks run on a Dask cluster, local or remote.

With no ``address`` and no ``client`` the pool starts a ``distributed.LocalCluster`` (worker
processes, listening on 127.0.0.1 only, no dashboard unless asked) and closes it with the
pool; with either, it uses that cluster and leaves it running.

How a task travels::

    caller thread                       client's event loop              Dask worker
    -------------                       -------------------              -----------
    submit(task)
      pickle args/items once -> bytes
      (SerializationError raised here)
      the function: pickled once per map,
      big numpy arguments: scattered once
      client.submit(_execute, ..., pure=False)  ───────────────────────► _execute(frame, ...)
                                        (with a timeout) ◄─────────────  log "started"
                                        deadline armed                    run the call or chunk
                                        gather(bytes) ◄──────────────────  return ONE bytes blob
      future.result() ◄──────────────── unpickle, settle the future

Why bytes: Dask serializes a returned Python list element by element (dask/distributed#6368),
so a chunk's results travel as one pickle instead. Why ``pure=False``: otherwise Dask runs
identical calls once. A task's own exception is caught in ``_execute`` and travels inside the
bytes, so a failed Dask future always means the cluster lost the task (a worker died, the
connection dropped): that, and only that, is what ``retries`` resubmits.

Dask cannot stop a running task: a task past its ``timeout``, or cancelled while running,
has its future failed (or cancelled) at once, but it runs on in its worker and its result is
dropped.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import itertools
import sys
import threading
import time
import uuid
from collections import OrderedDict
from collections.abc import Callable
from concurrent.futures import Future
from concurrent.futures import wait as wait_all
from dataclasses import dataclass, field
from typing import Any

import dask
import distributed
from dask.base import tokenize

from .._errors import (
    BrokenPool,
    InitializerFailed,
    SerializationError,
    WorkerCrashed,
    check_open,
)
from .._future import TaskFuture, set_exception, set_result
from .._remote import RemoteTraceback, attach, format_exception, portable
from .._serialize import dumps, dumps_checked, loads
from .._task import ChunkOutcome, Task, function_name, run_chunk, unwrap
from ._base import Backend, PoolOptions

# Arrays at least this big are sent to the cluster once (scatter), then referenced.
SCATTER_BYTES = 1 << 20
_KEEP_SCATTERED = 16  # most recent scattered arrays and functions kept on the cluster
_KEEP_FUNCTIONS = 8
_DASHBOARD = "127.0.0.1:8787"

_RESULT, _CHUNK, _ERROR, _BAD_RESULT = range(4)
_ids = itertools.count(1)

# ---- the worker side: runs inside a Dask worker ------------------------------------------

_FUNCTIONS: OrderedDict[str, Callable[..., Any]] = OrderedDict()


@dataclass(frozen=True)
class _Slot:
    """Stands in a pickled task for the i-th scattered array passed beside it."""

    index: int


def _execute(frame: bytes, meta: tuple[int, str, str | None], function: bytes, *arrays: Any
             ) -> bytes:
    """Run one task in a Dask worker; whatever happens, answer with one pickled tuple."""
    task_id, fn_key, topic = meta
    worker = distributed.get_worker()
    if topic is not None:  # the task has a timeout: its clock starts now, not at submit
        worker.log_event(topic, task_id)
    start = time.perf_counter()
    try:
        fn = _load_function(fn_key, function)
        args, kwargs, items, star = loads(frame)
        args, kwargs = _fill(args, arrays), dict(zip(kwargs, _fill(kwargs.values(), arrays),
                                                    strict=True))
    except BaseException as exc:  # noqa: BLE001 - a task that cannot be unpickled fails alone
        return _reply(_ERROR, 0.0, worker.address, portable(exc))
    if items is None:
        try:
            value = fn(*args, **kwargs)
        except BaseException as exc:  # noqa: BLE001 - SystemExit too: it belongs to the task
            return _reply(_ERROR, time.perf_counter() - start, worker.address, portable(exc))
        return _reply(_RESULT, time.perf_counter() - start, worker.address, value)
    outcome = run_chunk(fn, items, star)
    body = (outcome.values, *portable(outcome.error))
    return _reply(_CHUNK, outcome.elapsed, worker.address, body)


def _load_function(key: str, blob: bytes) -> Callable[..., Any]:
    fn = _FUNCTIONS.get(key)
    if fn is None:
        if len(_FUNCTIONS) >= 32:  # a long-lived worker sees many maps; keep recent ones
            _FUNCTIONS.popitem(last=False)
        fn = _FUNCTIONS[key] = loads(blob)
    return fn


def _fill(values: Any, arrays: tuple[Any, ...]) -> tuple[Any, ...]:
    return tuple(arrays[v.index] if isinstance(v, _Slot) else v for v in values)


def _reply(kind: int, elapsed: float, address: str, body: Any) -> bytes:
    try:
        return bytes(dumps((kind, elapsed, address, body)))
    except BaseException as exc:  # noqa: BLE001 - an unpicklable result fails its task alone
        message = f"cannot pickle the result ({type(body).__qualname__}): {exc}"
        return bytes(dumps((_BAD_RESULT, elapsed, address, (message, format_exception(exc)))))


# ---- the caller side -----------------------------------------------------------------------


@dataclass(eq=False)
class _Record:
    """One task on its way through the cluster."""

    id: int
    label: str
    arguments: tuple[Any, ...]  # what _execute is called with
    future: Future[Any]
    chunk: bool
    timeout: float | None
    retries: int
    dask_future: Any = None
    timer: asyncio.TimerHandle | None = None


@dataclass
class _Counters:
    totals: dict[str, int] = field(default_factory=lambda: dict.fromkeys(
        ("submitted", "done", "failed", "retried", "crashed", "timed_out"), 0))
    per_worker: dict[str, dict[str, float]] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, name: str) -> None:
        with self.lock:
            self.totals[name] += 1

    def ran(self, address: str, elapsed: float) -> None:
        with self.lock:
            row = self.per_worker.setdefault(address, {"tasks": 0, "busy_s": 0.0})
            row["tasks"] += 1
            row["busy_s"] += elapsed


class DaskBackend(Backend):
    """Tasks run on a Dask cluster: a LocalCluster of its own, or one given by address."""

    name = "dask"

    def start(self, options: PoolOptions) -> None:
        self._cluster: distributed.LocalCluster | None = None
        self._dashboard = bool(options.dashboard)
        self._own_client = options.client is None
        self._client = options.client or self._connect(options)
        self._topic = f"manybrains-started-{uuid.uuid4().hex}"
        self._client.subscribe_topic(self._topic, self._on_started)
        self._records: dict[int, _Record] = {}
        self._functions: OrderedDict[int, tuple[object, str, bytes | Any]] = OrderedDict()
        self._scattered: OrderedDict[str, Any] = OrderedDict()
        self._scatters = 0  # arrays sent to the cluster, for statistics
        self._counters = _Counters()
        self._lock = threading.Lock()
        self._closed = False
        self._released = threading.Event()
        self._plugin: str | None = None
        if options.initializer is not None:
            self._install_initializer(options.initializer, options.initargs)
        # A cluster given by address may have any number of threads: the pool keeps about
        # twice as many tasks in flight.
        self.capacity = sum(self._client.nthreads().values()) or None

    def _connect(self, options: PoolOptions) -> distributed.Client:
        if options.address is not None:
            return distributed.Client(options.address, set_as_default=False)
        dashboard = _DASHBOARD if options.dashboard is True else options.dashboard or None
        # The scheduler always serves health checks over HTTP: on 127.0.0.1, on a free port
        # (not the dashboard's 8787) unless a dashboard was asked for.
        http = {} if dashboard else {"dashboard_address": "127.0.0.1:0"}
        # A lost task fails at once, as in a process pool; the pool's `retries` decide.
        with dask.config.set({"distributed.scheduler.allowed-failures": 0}):
            self._cluster = distributed.LocalCluster(
                n_workers=options.workers, threads_per_worker=1, processes=True,
                host="127.0.0.1", dashboard_address=dashboard, scheduler_kwargs=http)
        try:
            return distributed.Client(self._cluster, set_as_default=False)
        except BaseException:
            self._cluster.close()
            raise

    @property
    def client(self) -> distributed.Client:
        """The ``distributed.Client`` this pool submits through."""
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
        args, kwargs, arrays = self._scatter_arrays(task)
        frame = bytes(dumps_checked((args, kwargs, task.items, task.star), header=b"",
                                    parts=task.parts))
        fn_key, function = self._function(task)
        record = _Record(next(_ids), _label(task), (), TaskFuture(), task.items is not None,
                         timeout, retries)
        topic = None if timeout is None else self._topic
        record.arguments = (frame, (record.id, fn_key, topic), function, *arrays)
        record.future.add_done_callback(functools.partial(self._on_done, record))
        with self._lock:
            check_open(self._closed)
            self._records[record.id] = record
        self._counters.add("submitted")
        self._send(record)
        return record.future

    def _send(self, record: _Record) -> None:
        key = f"manybrains-{record.label}-{uuid.uuid4().hex}"
        record.dask_future = self._client.submit(_execute, *record.arguments, key=key,
                                                 pure=False)
        asyncio.run_coroutine_threadsafe(self._follow(record, record.dask_future),
                                         self._client.loop.asyncio_loop)

    def _function(self, task: Task) -> tuple[str, Any]:
        """``(key, pickled function)``: pickled once per map, scattered if it is big."""
        entry = self._functions.get(id(task.fn))
        if entry is None or entry[0] is not task.fn:
            blob = bytes(dumps_checked(task.fn, header=b"", parts=task.parts))
            payload = self._client.scatter(blob, hash=False) if len(blob) >= SCATTER_BYTES \
                else blob
            entry = (task.fn, uuid.uuid4().hex, payload)  # unique across every caller
            with self._lock:
                self._functions[id(task.fn)] = entry
                if len(self._functions) > _KEEP_FUNCTIONS:
                    self._functions.popitem(last=False)
        return entry[1], entry[2]

    def _scatter_arrays(self, task: Task) -> tuple[tuple[Any, ...], dict[str, Any], list[Any]]:
        """Replace big numpy arguments by slots; each distinct array is sent once."""
        arrays: list[Any] = []
        if "numpy" not in sys.modules or task.items is not None:
            return task.args, task.kwargs, arrays
        numpy = sys.modules["numpy"]

        def slot(value: Any) -> Any:
            if not isinstance(value, numpy.ndarray) or value.nbytes < SCATTER_BYTES:
                return value
            arrays.append(self._scattered_copy(value))
            return _Slot(len(arrays) - 1)

        return (tuple(map(slot, task.args)), {k: slot(v) for k, v in task.kwargs.items()},
                arrays)

    def _scattered_copy(self, array: Any) -> Any:
        # Keyed by content, not identity: an array changed in place is sent again.
        token = tokenize(array)
        found = self._scattered.get(token)
        if found is None:
            found = self._client.scatter(array, hash=False)
            with self._lock:
                self._scatters += 1
                self._scattered[token] = found
                if len(self._scattered) > _KEEP_SCATTERED:
                    self._scattered.popitem(last=False)
        return found

    # ---- on the client's event loop -----------------------------------------------------

    async def _follow(self, record: _Record, dask_future: Any) -> None:
        try:
            reply = await self._client.gather(dask_future, asynchronous=True)
        except Exception as exc:  # noqa: BLE001 - the cluster lost the task, not the task failed
            return self._lost(record, dask_future, exc)
        if dask_future is record.dask_future:
            self._settle(record, loads(reply))

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

    def _settle(self, record: _Record, reply: tuple[int, float, str, Any]) -> None:
        kind, elapsed, address, body = reply
        self._counters.ran(address, elapsed)
        if kind == _RESULT:
            return self._finish(record, value=body)
        if kind == _CHUNK:
            values, error, tb = body
            outcome = ChunkOutcome(values, attach(error, tb) if error else None, elapsed)
            return self._finish(record, value=outcome)
        if kind == _ERROR:
            return self._finish(record, error=attach(*body))
        error = SerializationError(f"{record.label}: {body[0]}")
        error.__cause__ = RemoteTraceback(body[1])
        self._finish(record, error=error)

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
        if future.done() and not future.cancelled():
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
            with contextlib.suppress(Exception):  # a lost scheduler runs nothing
                running = set(itertools.chain.from_iterable(self._client.processing().values()))
        for record in records:
            if running_too or record.dask_future.key not in running:
                record.future.cancel()

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
        self._functions.clear()
        self._scattered.clear()
        if self._own_client:
            self._client.close()
        if self._cluster is not None:
            self._cluster.close()

    def statistics(self) -> dict[str, Any]:
        with self._counters.lock:
            workers = [{"address": a, **row} for a, row in self._counters.per_worker.items()]
            totals = dict(self._counters.totals)
        return {**totals, "in_flight": len(self._records), "scattered": self._scatters,
                "workers": workers,
                "scheduler": self._client.scheduler.address}

    # ---- initializer ----------------------------------------------------------------------

    def _install_initializer(self, initializer: Callable[..., object],
                             initargs: tuple[Any, ...]) -> None:
        self._plugin = f"manybrains-initializer-{uuid.uuid4().hex}"
        try:
            self._client.register_plugin(_Initializer(initializer, initargs), name=self._plugin)
        except Exception as exc:
            self.shutdown(kill=True)
            raise InitializerFailed(f"the pool's initializer failed on a Dask worker: "
                                    f"{type(exc).__name__}: {exc}") from exc


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
