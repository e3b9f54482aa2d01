"""What the supervisor keeps track of: tasks on their way, worker slots, engine options.

Only the supervisor thread changes these objects (see :mod:`.supervisor`).
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from typing import TYPE_CHECKING, Any

from ..._task import task_label
from .channel import Channel

if TYPE_CHECKING:
    from .context import Launch
    from .worker import TaskMark


@dataclass(eq=False, slots=True)
class Record:
    """One task on its way through the engine.

    It carries the task's fields rather than the caller's :class:`~manybrains._task.Task`:
    one object less per pending task for the garbage collector, which a program holding
    20,000 pending futures makes walk them again and again.
    """

    id: int
    frame: bytes | bytearray | memoryview  # request header + pickled task, ready to send
    future: Future[Any]
    fn: Any  # the task's function, for its label
    # ... its arguments, to describe it if it is among the slowest (dropped once it ran)
    args: tuple[Any, ...] = ()
    kwargs: dict[str, Any] | None = None
    items: Sequence[Any] | None = None
    size: int = 1  # calls in the task
    chunk: bool = False
    timeout: float | None = None
    retries: int = 0
    started: float | None = None  # when it began to run, as far as the supervisor knows
    kill_requested: bool = False

    @property
    def label(self) -> str:
        """``"task 17 (square)"``, for error messages: made when one needs it."""
        return self.make_label()

    def make_label(self) -> str:
        return task_label(self.id, self.fn, self.size if self.chunk else None)

    def forget_arguments(self) -> None:
        """The task ran: its future keeps this record, but its arguments need not stay."""
        self.args, self.kwargs, self.items = (), None, None


@dataclass(eq=False)
class WorkerSlot:
    """A worker process and what the supervisor knows of it."""

    process: BaseProcess
    conn: Connection
    mark: TaskMark  # the id of the last task it took: after its death, the one it was running
    inflight: deque[Record] = field(default_factory=deque)  # sent to it, oldest first
    ready: bool = False
    retiring: bool = False
    fate: BaseException | None = None  # what its running task gets when we kill it
    doomed: Record | None = None  # the task we killed it for; None: whichever it runs
    calls: int = 0
    tasks_done: int = 0
    busy: float = 0.0
    pickling: float = 0.0  # seconds the worker spent unpickling tasks and pickling results
    last_elapsed: float = float("inf")
    started_at: float = field(default_factory=time.monotonic)
    outbox: list[bytes | bytearray | memoryview] = field(default_factory=list)  # to write
    inflight_bytes: int = 0  # the frames of the tasks in ``inflight``
    channel: Channel = field(init=False)

    def __post_init__(self) -> None:
        self.channel = Channel(self.conn, blocking=False)  # the supervisor never waits on it


@dataclass
class EngineOptions:
    """How the supervisor runs its workers."""

    workers: int
    launch: Launch
    initializer: Callable[..., object] | None = None
    initargs: tuple[Any, ...] = ()
    max_tasks_per_worker: int | None = None
    max_memory_per_worker: int | None = None
    # Each worker calls inner_threads.cap(inner_threads, workers) first thing.
    inner_threads: int | None = None
    mark_running: bool = False  # move futures to RUNNING when sent (the Executor contract)

    @property
    def pool_workers(self) -> bool:
        """Workers are named as ``multiprocessing.Pool`` names them (``ForkPoolWorker-3``);
        the ``ProcessPoolExecutor`` drop-in (the Executor contract) keeps the names its
        processes have in the stdlib (``ForkProcess-3``)."""
        return not self.mark_running
