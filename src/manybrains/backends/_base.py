"""The interface every backend implements: five methods, and two optional ones with defaults.

``map`` and ``imap`` are written once, over :meth:`Backend.submit`: the stream in
:mod:`manybrains._stream`, chunk sizes in :mod:`manybrains._chunking`. :mod:`manybrains._pool`
checks each task's timeout and retries and hands them to ``submit``; each backend enforces
them its own way. A backend only runs :class:`~manybrains._task.Task` objects and reports on
them: its counters live in one :class:`Counters`, which makes the frozen
:class:`Statistics` that ``Pool.statistics()`` returns. The future ``submit`` returns is a
:class:`~manybrains._future.TaskFuture` whose ``handle`` is the backend's own record of the
task (``cancel`` reads it back). Each backend module has the same sections and ends with
``backend_class``.
"""

from __future__ import annotations

import abc
import itertools
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, Generic, TypeVar

if TYPE_CHECKING:
    from concurrent.futures import Future

    from .._task import Task
    from .._timings import TaskTimings
    from ..options import BackendOptions

OwnT = TypeVar("OwnT", bound="BackendOptions", covariant=True)
OtherT = TypeVar("OtherT", bound="BackendOptions")


@dataclass(frozen=True)
class PoolOptions(Generic[OwnT]):
    """What a pool asks of its backend: the backend's own options, and the general ones."""

    own: OwnT  # this backend's options object (manybrains.Processes(...), manybrains.Dask(...))
    workers: int
    initializer: Callable[..., object] | None = None
    initargs: tuple[Any, ...] = ()
    max_tasks_per_worker: int | None = None
    concurrency: int | None = None  # coroutines awaited at once (per worker); None: default

    def for_backend(self, own: OtherT, workers: int) -> PoolOptions[OtherT]:
        """The same general options for another backend (``"auto"`` starts some)."""
        return PoolOptions(own, workers, initializer=self.initializer, initargs=self.initargs,
                           max_tasks_per_worker=self.max_tasks_per_worker,
                           concurrency=self.concurrency)


@dataclass(frozen=True)
class WorkerStats:
    """What one worker (a process, a thread, an event loop, a Dask worker) has done."""

    name: str  # "pid 4242", a thread's name, a Dask worker's address
    tasks: int = 0  # tasks finished (a chunk counts once)
    busy_s: float = 0.0
    idle_s: float = 0.0
    in_flight: int = 0
    pid: int | None = None  # worker processes only
    serialize_s: float = 0.0  # processes: seconds unpickling tasks and pickling results
    backend: str = ""  # "auto": the engine this worker belongs to


@dataclass(frozen=True)
class Statistics:
    """A snapshot of a pool's counters, from :meth:`Pool.statistics`.

    The counters and ``workers`` mean the same on every backend; the fields after them
    belong to one backend each and are ``None`` (or empty) on the others.
    """

    backend: str
    submitted: int = 0
    done: int = 0
    failed: int = 0
    retried: int = 0
    crashed: int = 0
    timed_out: int = 0
    workers_started: int = 0
    in_flight: int = 0
    queued: int = 0
    workers: tuple[WorkerStats, ...] = ()
    start_method: str | None = None  # processes: how workers start, and why that way
    start_method_why: str | None = None
    concurrency: int | None = None  # asyncio: coroutines awaited at once
    scheduler: str | None = None  # dask: the scheduler's address
    scattered: int | None = None  # dask: arrays sent to the workers once and shared
    # auto: per function, where it runs and why (plain data: "function", "backend", "why",
    # the measurements behind it, "history", and "concurrency" for waiting calls)
    choices: tuple[Mapping[str, Any], ...] = ()
    engines: Mapping[str, Statistics] = field(default_factory=dict)  # auto: per engine


COUNTER_NAMES = ("submitted", "done", "failed", "retried", "crashed", "timed_out",
                 "workers_started")


class Counters:
    """The event counters of one backend, safe to bump from any thread."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counts = dict.fromkeys(COUNTER_NAMES, 0)

    def add(self, name: str, n: int = 1) -> None:
        """Count ``n`` more ``name`` events (one of :data:`COUNTER_NAMES`, else KeyError)."""
        with self._lock:
            self._counts[name] += n

    def __getitem__(self, name: str) -> int:
        return self._counts[name]

    def statistics(self, backend: str, **fields: Any) -> Statistics:
        """The counters now, with the backend's other ``fields`` (workers, in_flight, ...)."""
        with self._lock:
            counts: dict[str, Any] = dict(self._counts)
        return Statistics(backend, **counts, **fields)


_pool_numbers = itertools.count(1)


def thread_prefix(kind: str) -> str:
    """A name prefix for the threads of one pool, unique in this process: ``manybrains-thread-3``
    (names are what a user sees in a debugger, ``threading.enumerate()`` and log records)."""
    return f"manybrains-{kind}-{next(_pool_numbers)}"


class Backend(abc.ABC):
    """Runs tasks somewhere: worker processes, threads, an event loop, the caller."""

    name: ClassVar[str]
    #: Tasks cross a process boundary, so the pool pickles each function once per map.
    pickles_tasks: ClassVar[bool] = False
    #: How many tasks it runs at once (None: one per worker); the pool keeps about twice as
    #: many in flight. ``"auto"`` changes it when it moves a function to another backend.
    capacity: int | None = None

    @abc.abstractmethod
    def start(self, options: PoolOptions[Any]) -> None:
        """Get ready to run tasks (start workers, a loop, a cluster connection)."""

    @abc.abstractmethod
    def submit(self, task: Task, *, timeout: float | None = None, retries: int = 0
               ) -> Future[Any]:
        """Schedule ``task``; the future resolves to its result (a chunk's ChunkOutcome)."""

    @abc.abstractmethod
    def cancel(self, future: Future[Any]) -> bool:
        """Stop the task behind ``future``, running or not; False if it already finished."""

    @abc.abstractmethod
    def shutdown(self, *, wait: bool = True, cancel_futures: bool = False, kill: bool = False
                 ) -> None:
        """Stop accepting tasks. ``kill`` also stops running tasks. Idempotent."""

    @abc.abstractmethod
    def statistics(self) -> Statistics:
        """Counters: tasks done, failed, retried, in flight; per-worker busy and idle time."""

    def task_timings(self) -> TaskTimings | None:
        """Run times of finished tasks, where the backend measures them (None: it does not)."""
        return None

    def worker_pids(self) -> list[int]:
        """The process ids of its worker processes (none where tasks run in this process)."""
        return []
