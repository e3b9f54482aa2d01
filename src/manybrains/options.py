"""The options of one backend each: ``Pool(4, backend=mb.Processes(start_method="spawn"))``.

What means the same on every backend (``workers``, ``initializer``, ``timeout``, ``retries``,
``concurrency``, ...) is a keyword of :class:`~manybrains.Pool`. What only one backend has
lives on that backend's object here, so that a combination that cannot work (Dask's
``address`` on threads, a memory limit on the caller's own thread) cannot be written. A
backend's name stands for its object with the defaults: ``backend="dask"`` is
``backend=mb.Dask()``.

The pool's ``start_method=`` (and ``context=``, its ``multiprocessing.Pool`` spelling) is a
shorthand for ``Processes(start_method=...)``, on the two backends that start processes.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, ClassVar

from ._arguments import optional_positive

if TYPE_CHECKING:
    from multiprocessing.context import BaseContext

__all__ = ["Asyncio", "Auto", "BackendOptions", "Dask", "Inline", "Processes", "Ray", "Threads"]


@dataclass(frozen=True)
class BackendOptions:
    """What one backend is told beyond the pool's general options."""

    name: ClassVar[str]  # the backend these options are for, as ``backend=`` spells it


@dataclass(frozen=True, kw_only=True)
class Processes(BackendOptions):
    """Worker processes (the default backend).

    Args:
        start_method: ``"template"`` (the Linux default: see docs/worker-model.md),
            ``"forkserver"``, ``"spawn"`` or ``"fork"``, or a ``multiprocessing`` context.
        max_memory_per_worker: replace a worker whose resident memory passes this many bytes
            after a task.
        inner_threads: BLAS/OpenMP threads (numpy, scipy) in each worker; default: usable
            CPUs // workers, or what the user's ``OMP_NUM_THREADS``-style variables say.
        cancel_running: make ``future.cancel()`` kill the worker of a running task (it is
            replaced), as ``pool.cancel(future)`` always does.
        futures: ``"manybrains"`` (default) or ``"concurrent.futures"``: the contract of
            ``concurrent.futures.ProcessPoolExecutor`` (which uses it): a future is RUNNING,
            and can no longer be cancelled, once its task is sent to a worker; and at the
            interpreter's exit the workers finish what was submitted instead of being
            stopped.
    """

    name: ClassVar[str] = "processes"
    start_method: str | BaseContext | None = None
    max_memory_per_worker: int | None = None
    inner_threads: int | None = None
    cancel_running: bool = False
    futures: str = "manybrains"

    def __post_init__(self) -> None:
        optional_positive("max_memory_per_worker", self.max_memory_per_worker)
        optional_positive("inner_threads", self.inner_threads)
        if not isinstance(self.cancel_running, bool):
            raise TypeError(f"cancel_running must be True or False, got {self.cancel_running!r}")
        if self.futures not in ("manybrains", "concurrent.futures"):
            raise ValueError(f"futures must be 'manybrains' or 'concurrent.futures', got "
                             f"{self.futures!r}")

    @property
    def stdlib_futures(self) -> bool:
        """Whether futures follow ``concurrent.futures``' contract (``futures=``)."""
        return self.futures == "concurrent.futures"


@dataclass(frozen=True)
class Threads(BackendOptions):
    """Threads of this process: for work that waits (or a GIL-free interpreter)."""

    name: ClassVar[str] = "threads"


@dataclass(frozen=True)
class Asyncio(BackendOptions):
    """One event loop in a thread of its own; the pool's ``concurrency`` caps its coroutines."""

    name: ClassVar[str] = "asyncio"


@dataclass(frozen=True)
class Inline(BackendOptions):
    """Every call in the caller, one after another: for debugging, or calls too cheap to ship."""

    name: ClassVar[str] = "inline"


@dataclass(frozen=True, kw_only=True)
class Auto(BackendOptions):
    """Each function measured, then sent to threads, processes, a loop or the caller.

    Args:
        processes: how it starts worker processes, for the functions it sends there.
    """

    name: ClassVar[str] = "auto"
    processes: Processes = field(default_factory=Processes)

    def __post_init__(self) -> None:
        if not isinstance(self.processes, Processes):
            raise TypeError(f"processes must be a manybrains.Processes, got "
                            f"{type(self.processes).__name__}")


@dataclass(frozen=True, kw_only=True)
class Dask(BackendOptions):
    """A Dask cluster: a local one started for the pool, or one already running.

    Args:
        address: a scheduler's ``"tcp://host:port"``: run on that cluster (left running).
        client: a ``distributed.Client`` already connected: run through it (left open).
        dashboard: serve the local cluster's dashboard: ``True`` (its usual port) or
            ``"host:port"``. A cluster given by address or client serves its own.

    With neither ``address`` nor ``client`` the pool starts a ``LocalCluster`` of
    ``workers`` processes and closes it with the pool.
    """

    name: ClassVar[str] = "dask"
    address: str | None = None
    client: Any = None  # a distributed.Client; Any keeps manybrains importable without Dask
    dashboard: bool | str = False

    def __post_init__(self) -> None:
        if self.address is not None and self.client is not None:
            raise ValueError("give the cluster's address or a client connected to it, not both")
        if self.address is not None and not isinstance(self.address, str):
            raise TypeError(f"address must be a str like 'tcp://host:8786', got "
                            f"{type(self.address).__name__}")
        if self.dashboard and (self.address is not None or self.client is not None):
            raise ValueError("dashboard= is for the local cluster the pool starts; a cluster "
                             "given by address or client serves its own (client.dashboard_link)")


@dataclass(frozen=True, kw_only=True)
class Ray(BackendOptions):
    """A Ray cluster: a local instance started for the pool, or one already running.

    Args:
        address: a cluster's address (``"127.0.0.1:6379"``, ``"ray://host:10001"``): run on
            that cluster, which is left running.

    Ray allows one connection per process: where ``ray.init()`` was already called, the pool
    runs through that connection and leaves it open. With neither, the pool starts a local
    instance of ``workers`` CPUs (on 127.0.0.1, no dashboard) and stops it with the pool. A
    bare ``ray.init()``, which joins whatever cluster the environment names, is never called.
    """

    name: ClassVar[str] = "ray"
    address: str | None = None

    def __post_init__(self) -> None:
        if self.address is not None and (not isinstance(self.address, str)
                                         or not self.address.strip()):
            raise TypeError(f"address must be a Ray cluster's address like '127.0.0.1:6379', "
                            f"got {self.address!r}")


BY_NAME: dict[str, type[BackendOptions]] = {
    options.name: options for options in (Processes, Threads, Asyncio, Inline, Auto, Dask, Ray)}


def with_start_method(options: BackendOptions, method: str | BaseContext | None
                      ) -> BackendOptions:
    """``options`` with the pool's ``start_method=`` shorthand applied to its processes."""
    if method is None:
        return options
    if isinstance(options, Auto):
        return replace(options, processes=_started_by(options.processes, method))
    if isinstance(options, Processes):
        return _started_by(options, method)
    raise TypeError(f"start_method is an option of worker processes, and backend "
                    f"{options.name!r} starts none; use backend='processes' or 'auto'")


def _started_by(processes: Processes, method: str | BaseContext) -> Processes:
    if processes.start_method is not None:
        raise TypeError("the start method is given twice: as start_method= (or context=) "
                        "and in manybrains.Processes(start_method=...); give it once")
    return replace(processes, start_method=method)


# Pool keywords that are options of one backend now: what to write instead.
_MOVED = {"max_memory_per_worker": "Processes", "inner_threads": "Processes",
          "cancel_running": "Processes", "address": "Dask", "client": "Dask",
          "dashboard": "Dask"}


def reject_moved(moved: dict[str, Any]) -> None:
    """Raise the TypeError a keyword of ``Pool()`` it does not take deserves."""
    for keyword in moved:
        where = _MOVED.get(keyword)
        if where is None:
            raise TypeError(f"Pool() got an unexpected keyword argument {keyword!r}")
        name = where.lower()
        raise TypeError(f"{keyword}= is an option of the {name} backend: write "
                        f"Pool(..., backend=manybrains.{where}({keyword}=...))")
