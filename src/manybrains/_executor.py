"""``ProcessPoolExecutor``: a drop-in for ``concurrent.futures.ProcessPoolExecutor``.

Same constructor, same ``submit``/``map``/``shutdown`` contract, stdlib futures that work with
``concurrent.futures.wait`` and ``as_completed``. What changes is the engine underneath: a
worker that dies fails only the task it held (``WorkerCrashed``, a ``BrokenProcessPool``) and
is replaced, instead of breaking the whole executor; lambdas and closures can be submitted.

Where the stdlib reports a fault through the future, so does this class: an argument that
cannot be pickled fails its future (``SerializationError``, a ``pickle.PicklingError`` and an
instance of what the argument's ``__reduce__`` raised) instead of raising from ``submit``
as :class:`~manybrains.Pool` does.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Executor, Future
from multiprocessing.context import BaseContext
from typing import Any, TypeVar

from ._async_result import failed
from ._chunking import ChunkSizer
from ._errors import SerializationError, also_instance_of
from ._pool import Pool
from ._serialize import PickledOnce
from ._stream import Plan, canceller, in_its_place, stream_submitted, unbounded
from ._task import ChunkOutcome, Task
from .options import Processes

R = TypeVar("R")


class ProcessPoolExecutor(Executor):
    """``concurrent.futures.ProcessPoolExecutor``, on the manybrains process engine."""

    def __init__(self, max_workers: int | None = None, mp_context: BaseContext | None = None,
                 initializer: Callable[..., object] | None = None, initargs: Iterable[Any] = (),
                 *, max_tasks_per_child: int | None = None) -> None:
        if max_workers is not None and (isinstance(max_workers, int) and max_workers <= 0):
            raise ValueError("max_workers must be greater than 0")
        self._pool = Pool(max_workers, initializer=initializer, initargs=initargs,
                          max_tasks_per_worker=max_tasks_per_child,
                          backend=Processes(start_method=mp_context,
                                            futures="concurrent.futures"))
        self._max_workers = self._pool.workers

    def submit(self, fn: Callable[..., R], /, *args: Any, **kwargs: Any) -> Future[R]:
        """Schedule ``fn(*args, **kwargs)``; every keyword argument goes to ``fn``."""
        if not callable(fn):
            raise TypeError(f"expected a callable, got {type(fn).__name__}")
        return self._submit(Task(fn, args, kwargs))

    def map(self, fn: Callable[..., R], *iterables: Iterable[Any], timeout: float | None = None,
            chunksize: int = 1) -> Iterator[R]:
        """Like the builtin ``map``; ``timeout`` bounds the whole iteration, as in the stdlib."""
        if chunksize < 1:
            raise ValueError("chunksize must be >= 1.")
        if not callable(fn):
            raise TypeError(f"expected a callable, got {type(fn).__name__}")
        deadline = None if timeout is None else time.monotonic() + timeout
        carried = PickledOnce(fn)

        def submit(chunk: Sequence[Any]) -> Future[ChunkOutcome]:
            return self._submit(Task(carried, items=chunk, star=True))

        # As in the stdlib: the whole input is read and every chunk submitted here (so an
        # error of the input is raised by map() itself), a failed chunk raises in its place,
        # leaving the iteration early cancels what has not started, and Ctrl-C lets running
        # calls finish.
        plan = Plan(ChunkSizer(1, None, fixed=chunksize), submit, unbounded, canceller(None),
                    on_failure=in_its_place, deadline=deadline)
        return stream_submitted(list(zip(*iterables, strict=False)), plan)

    def _submit(self, task: Task) -> Future[Any]:
        try:
            return self._pool.submit_task(task)
        except SerializationError as error:  # the stdlib reports it through the future
            cause = error.__cause__
            return failed(error if cause is None else also_instance_of(error, type(cause)))

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        """Stop accepting tasks; with ``wait``, return once pending tasks are done."""
        self._pool.shutdown(wait=wait, cancel_futures=cancel_futures)

