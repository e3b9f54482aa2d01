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
from collections.abc import Callable
from dataclasses import dataclass, fields
from typing import TYPE_CHECKING, Any, ClassVar, Generic, TypeVar

from .._cpus import usable_cpus
from .._task import DEFAULT_CONCURRENCY

if TYPE_CHECKING:
    from concurrent.futures import Future

    from .._task import Task
    from .._timings import TaskTimings
    from ..options import BackendOptions

OwnT = TypeVar("OwnT", bound="BackendOptions", covariant=True)
OtherT = TypeVar("OtherT", bound="BackendOptions")
StatsT = TypeVar("StatsT", bound="Statistics")


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

    The counters and ``workers`` mean the same on every backend. What only one backend
    reports is a field of that backend's subclass (``start_method`` on the processes
    backend's, ``scheduler`` on Dask's, ``choices`` on auto's); asking another backend's
    snapshot for it raises an AttributeError that says which backend has it.
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

    def __getattr__(self, name: str) -> Any:
        # Only reached for a field this snapshot lacks: typed code may still read another
        # backend's field after checking ``stats.backend``.
        backend = self.__dict__.get("backend")
        if backend is None or name.startswith("__"):  # copy and pickle probe dunders
            raise AttributeError(name)
        raise AttributeError(f"{type(self).__name__} of the {backend!r} backend has no "
                             f"{name!r}; the fields every backend reports are "
                             f"{', '.join(f.name for f in fields(Statistics))}")


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

    def statistics(self, backend: str, kind: type[StatsT] = Statistics,  # type: ignore[assignment]
                   **more: Any) -> StatsT:
        """The counters now as a ``kind`` snapshot, with the backend's ``more`` fields
        (workers, in_flight, and those of its own :class:`Statistics` subclass)."""
        with self._lock:
            counts: dict[str, Any] = dict(self._counts)
        return kind(backend, **counts, **more)


_pool_numbers = itertools.count(1)


def thread_prefix(kind: str) -> str:
    """A name prefix for the threads of one pool, unique in this process: ``manybrains-thread-3``
    (names are what a user sees in a debugger, ``threading.enumerate()`` and log records)."""
    return f"manybrains-{kind}-{next(_pool_numbers)}"


class Backend(abc.ABC):
    """Runs tasks somewhere: worker processes, threads, an event loop, the caller, a cluster.

    A backend is made ready to run tasks by its constructor, from :class:`PoolOptions`; what
    only it knows (its default size, its cluster handle, its own statistics) it says itself,
    so :class:`~manybrains.Pool` never asks which backend it holds.
    """

    name: ClassVar[str]
    #: Coroutines (``async def`` tasks) awaited at once when the pool is not told.
    default_concurrency: ClassVar[int] = DEFAULT_CONCURRENCY
    #: Tasks cross a process boundary, so the pool pickles each function once per map.
    pickles_tasks: ClassVar[bool] = False
    #: It starts ``workers`` processes of its own on this machine, one per worker, as
    #: ``multiprocessing.Pool`` does (what its ``_pool`` attribute waits for).
    starts_worker_processes: ClassVar[bool] = False
    #: How many tasks it runs at once (None: one per worker); the pool keeps about twice as
    #: many in flight. ``"auto"`` changes it when it moves a function to another backend.
    capacity: int | None = None

    @abc.abstractmethod
    def __init__(self, options: PoolOptions[Any]) -> None:
        """Get ready to run tasks (start workers, a loop, a cluster connection)."""

    @classmethod
    def default_workers(cls) -> int:
        """How many workers a pool has when not told: the CPUs this process may use."""
        return usable_cpus()

    @property
    def client(self) -> Any:
        """The handle of the cluster the tasks run on, for what only it can do (None here:
        tasks run on this machine). ``Pool.client`` returns it."""
        return None

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
