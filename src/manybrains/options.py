"""The options of one backend each: ``Pool(4, backend=mb.Processes(start_method="spawn"))``.

What means the same on every backend (``workers``, ``initializer``, ``timeout``, ``retries``,
``concurrency``, ...) is a keyword of :class:`~manybrains.Pool`. What only one backend has
lives on that backend's object here, so that a combination that cannot work (Dask's
``address`` on threads, a memory limit on the caller's own thread) cannot be written. A
backend's name stands for its object with the defaults: ``backend="dask"`` is
``backend=mb.Dask()``.

The pool's ``start_method=`` (and ``context=``, its ``multiprocessing.Pool`` spelling) is a
shorthand for ``Processes(start_method=...)``, on the two backends that start processes.

The options of the other backends are written in :mod:`manybrains._other_options` and read
from here, made on first use: a pool of worker processes, the default, does not pay for
them when it starts cold.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, ClassVar

from ._arguments import optional_positive

if TYPE_CHECKING:
    from multiprocessing.context import BaseContext

    from ._other_options import BY_NAME as BY_NAME
    from ._other_options import Asyncio as Asyncio
    from ._other_options import Auto as Auto
    from ._other_options import Dask as Dask
    from ._other_options import Inline as Inline
    from ._other_options import Ray as Ray
    from ._other_options import Threads as Threads

__all__ = ["Asyncio", "Auto", "BackendOptions", "Dask", "Inline", "Processes", "Ray", "Threads"]

# Defined in ._other_options, made on first use: a process pool, the default, needs none of
# them (see __getattr__ below).
_OTHERS = ("Asyncio", "Auto", "Dask", "Inline", "Ray", "Threads", "BY_NAME")


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


def with_start_method(options: BackendOptions, method: str | BaseContext | None
                      ) -> BackendOptions:
    """``options`` with the pool's ``start_method=`` shorthand applied to its processes."""
    if method is None:
        return options
    if isinstance(options, Processes):
        return _started_by(options, method)
    from ._other_options import Auto

    if isinstance(options, Auto):
        return replace(options, processes=_started_by(options.processes, method))
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


def options_class(name: str) -> type[BackendOptions]:
    """The options class of the backend ``name`` (``"processes"`` -> :class:`Processes`)."""
    if name == Processes.name:
        return Processes
    from ._other_options import BY_NAME

    return BY_NAME[name]


def __getattr__(name: str) -> Any:
    if name not in _OTHERS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    from . import _other_options

    value = getattr(_other_options, name)
    globals()[name] = value  # later lookups skip this function
    return value
