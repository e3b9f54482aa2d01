"""The options of every backend but ``processes``: ``mb.Threads()``, ``mb.Dask(...)``, ...

Part of :mod:`manybrains.options`, where users and the rest of manybrains find them (each class
says ``manybrains.options`` is its module). They live here so that a pool of worker processes,
the default, does not pay for making six dataclasses (about 2 ms) on its first start.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

from .options import BackendOptions, Processes

__all__ = ["BY_NAME", "Asyncio", "Auto", "Dask", "Inline", "Ray", "Threads"]


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


for _options in (Threads, Asyncio, Inline, Auto, Dask, Ray):
    _options.__module__ = "manybrains.options"  # found there: pickles, reprs, docs

BY_NAME: dict[str, type[BackendOptions]] = {
    options.name: options for options in (Processes, Threads, Asyncio, Inline, Auto, Dask, Ray)}
