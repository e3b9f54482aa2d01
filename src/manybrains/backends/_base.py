"""The interface every backend implements: five methods, nothing else.

``map``, ``imap``, chunking, retries and timeouts are written once, in :mod:`manybrains._pool`,
over :meth:`Backend.submit`. A backend only runs :class:`~manybrains._task.Task` objects and
reports on them. Each backend module has the same sections and ends with ``backend_class``.
"""

from __future__ import annotations

import abc
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

if TYPE_CHECKING:
    from concurrent.futures import Future
    from multiprocessing.context import BaseContext

    from .._task import Task


@dataclass
class PoolOptions:
    """What a pool asks of its backend; backends ignore what does not apply to them."""

    workers: int
    initializer: Callable[..., object] | None = None
    initargs: tuple[Any, ...] = ()
    max_tasks_per_worker: int | None = None
    max_memory_per_worker: int | None = None
    inner_threads: int | None = None  # BLAS/OpenMP threads per worker; None: CPUs // workers
    start_method: str | BaseContext | None = None
    cancel_running: bool = False  # future.cancel() stops a running task where possible
    executor_semantics: bool = False  # concurrent.futures contract: RUNNING state, wait at exit
    concurrency: int | None = None  # coroutines awaited at once (per worker); None: default
    # A cluster to run on (the "dask" backend): its scheduler's address, or a client already
    # connected to it. With neither, the backend starts a local cluster of ``workers``.
    address: str | None = None
    client: Any = None
    dashboard: bool | str = False  # the local cluster's dashboard: True, or "host:port"


class Backend(abc.ABC):
    """Runs tasks somewhere: worker processes, threads, an event loop, the caller."""

    name: ClassVar[str]
    #: Tasks cross a process boundary, so the pool pickles each function once per map.
    pickles_tasks: ClassVar[bool] = False
    #: How many tasks it runs at once (None: one per worker); the pool keeps about twice as
    #: many in flight. ``"auto"`` changes it when it moves a function to another backend.
    capacity: int | None = None

    @abc.abstractmethod
    def start(self, options: PoolOptions) -> None:
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
    def statistics(self) -> dict[str, Any]:
        """Counters: tasks done, failed, retried, in flight; per-worker busy and idle time."""
