"""``Pool``: the one executor users hold, whatever runs the work behind it.

Everything here is written once over :class:`~manybrains.backends.Backend`: argument checks,
each map's :class:`~manybrains._stream.Plan` (its chunk sizes from :mod:`._chunking`, what the
pool remembers of each function's calls, how a chunk is submitted), and the default per-task
timeout and retries that every backend then enforces its own way. The streaming itself,
ordered or not, is :mod:`._stream`'s. The
``multiprocessing.Pool`` methods (``apply_async``, ``map_async``, ``close``, ...) live in
:mod:`._multiprocessing_api` and the awaitable twins (``asubmit``, ``amap``, ``aimap``,
``async with``) in :mod:`._async_pool`, over the same internals.
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Callable, Coroutine, Iterable, Sequence
from concurrent.futures import Future
from types import TracebackType
from typing import TYPE_CHECKING, Any, NoReturn, TypeVar, overload

from ._arguments import (
    ChunkSize,
    check_callable,
    check_chunksize,
    check_iterable,
    check_retries,
    check_timeout,
    optional_positive,
    positive_int,
    zip_args,
)
from ._async_pool import AsyncFn, AsyncPoolAPI
from ._chunking import CallCosts, ChunkSizer, known_length, window
from ._errors import PoolClosed, SerializationError, as_encoding_error
from ._multiprocessing_api import (
    LeftAtExit,
    MultiprocessingPoolAPI,
    as_its_cause,
    auto_chunksize,
    check_lifetime,
    map_iterables,
    one_of,
)
from ._serialize import PickledOnce
from ._stream import Plan, ResultIterator, canceller, collect, stream_chunks
from ._task import AsyncCall, ChunkOutcome, Task, is_coroutine_function
from .backends import get_backend, options_for
from .backends._base import Backend, PoolOptions, Statistics
from .options import BackendOptions, reject_moved, with_start_method
from .progress import ProgressOption, tracker

if TYPE_CHECKING:
    from multiprocessing.context import BaseContext

    from .insights import Insights

T = TypeVar("T")
R = TypeVar("R")

class Pool(AsyncPoolAPI, MultiprocessingPoolAPI):
    """A pool of workers: processes by default, or threads, an event loop, the caller.

    Also a drop-in for ``multiprocessing.Pool``: ``Pool(processes, initializer, initargs,
    maxtasksperchild, context)`` positionally or by those names, and its methods with their
    parameters (``apply``, ``apply_async``, ``map_async``, ``starmap_async``,
    ``imap_unordered``, ``close``, ``join``; see docs/drop-in.md).

    Args:
        processes: how many workers (``workers=`` is the same); default: the CPUs this
            process may use (for ``"threads"``: ``min(32, CPUs + 4)``, as
            ``concurrent.futures`` does).
        backend: ``"processes"`` (default), ``"threads"``, ``"asyncio"``, ``"inline"`` (in
            the caller, for debugging), ``"auto"`` (measures each function and picks one of
            those; see :mod:`manybrains.backends.auto`) or ``"dask"``; or the options of one,
            for what only that backend has: ``mb.Processes(max_memory_per_worker=...,
            inner_threads=..., cancel_running=True)``, ``mb.Dask(address="tcp://...")``,
            ``mb.Auto(processes=mb.Processes(...))`` (see :mod:`manybrains.options`).
        concurrency: how many coroutines (``async def`` tasks) are awaited at once, per
            worker process on ``"processes"``, on the loop for ``"asyncio"``; default 100
            (256 on ``"auto"``, where it also caps how many waiting calls of a function run
            at once: below it, ``auto`` adapts to what the other side takes).
        initializer: called as ``initializer(*initargs)`` once in each worker, before tasks.
        max_tasks_per_worker: replace a worker after it ran this many calls
            (``maxtasksperchild`` is the same).
        start_method: a shorthand for ``mb.Processes(start_method=...)`` (``context`` is the
            same), on ``"processes"`` and ``"auto"``: ``"template"`` (Linux default),
            ``"forkserver"``, ``"spawn"`` or ``"fork"``, or a ``multiprocessing`` context.
        timeout: default per-task time limit in seconds; the task raises ``TimeoutError``.
            A worker process past it is killed and replaced; a thread cannot be killed, so it
            is abandoned and replaced (see each backend's notes).
        retries: default number of times a task whose worker crashed is run again.

    Every method has an awaitable twin for use inside an event loop (``asubmit``, ``amap``,
    ``aimap``), and ``async with Pool(...)`` shuts the pool down without blocking the loop.
    """

    def __init__(self, processes: int | None = None,
                 initializer: Callable[..., object] | None = None, initargs: Iterable[Any] = (),
                 maxtasksperchild: int | None = None, context: BaseContext | None = None, *,
                 workers: int | None = None, backend: str | BackendOptions = "processes",
                 concurrency: int | None = None, max_tasks_per_worker: int | None = None,
                 start_method: str | BaseContext | None = None, timeout: float | None = None,
                 retries: int = 0, **moved: NoReturn) -> None:
        reject_moved(moved)  # a keyword that became an option of one backend says where to
        workers = one_of("processes", processes, "workers", workers)
        max_tasks_per_worker = one_of("max_tasks_per_worker", max_tasks_per_worker,
                                       "maxtasksperchild", check_lifetime(maxtasksperchild))
        self._own = own = with_start_method(
            options_for(backend), one_of("start_method", start_method, "context", context))
        backend_class = get_backend(own.name)
        self._workers = (positive_int("workers", workers) if workers is not None
                         else backend_class.default_workers())
        if initializer is not None and not callable(initializer):
            raise TypeError(f"initializer must be callable, got {type(initializer).__name__}")
        self._timeout = check_timeout(timeout)
        self._retries = check_retries(retries)
        self._max_tasks = optional_positive("max_tasks_per_worker", max_tasks_per_worker)
        self._concurrency = (positive_int("concurrency", concurrency) if concurrency is not None
                             else backend_class.default_concurrency)
        self._backend: Backend = backend_class(PoolOptions(
            own, self._workers, initializer=initializer, initargs=tuple(initargs),
            max_tasks_per_worker=self._max_tasks, concurrency=self._concurrency))
        self._shutdown_lock = threading.Lock()
        self._is_shut_down = False
        self._stdlib_state = "RUN"  # multiprocessing's name: RUN, CLOSE, TERMINATE
        self._left_at_exit = LeftAtExit()  # what leaving ``with`` stops, as the stdlib's does
        self._handed_futures = False  # submit() was used: leaving ``with`` waits for those
        self._call_costs = CallCosts()  # what each function's calls cost, for chunk sizes
        # A pool nobody references any more lets its queued work finish, then stops.
        self._finalizer = weakref.finalize(self, self._backend.shutdown, wait=False)
        self._finalizer.atexit = False  # at exit the backend's own hook stops the workers

    @property
    def workers(self) -> int:
        """The number of workers."""
        return self._workers

    @property
    def backend(self) -> Backend:
        """The backend running this pool's tasks (an internal object: its methods may change)."""
        return self._backend

    @property
    def options(self) -> BackendOptions:
        """The backend's own options (``mb.Processes(...)``, ``mb.Dask(...)``, ...)."""
        return self._own

    @property
    def client(self) -> Any:
        """The handle of the cluster the tasks run on, for what only that cluster does: a
        ``"dask"`` pool's ``distributed.Client`` (its ``dashboard_link``,
        ``scheduler_info()``, ...), a ``"ray"`` pool's ``ray`` context (its
        ``address_info``, ``dashboard_url``); None where tasks run on this machine."""
        return self._backend.client

    @property
    def closed(self) -> bool:
        """Whether the pool was shut down (``shutdown``, ``close``, ``terminate``)."""
        return self._is_shut_down

    # ---- one task -------------------------------------------------------------------------

    @overload
    def submit(self, fn: AsyncFn[R], /, *args: Any, timeout: float | None = None,
               retries: int | None = None, **kwargs: Any) -> Future[R]: ...
    @overload
    def submit(self, fn: Callable[..., R], /, *args: Any, timeout: float | None = None,
               retries: int | None = None, **kwargs: Any) -> Future[R]: ...
    def submit(self, fn: Callable[..., Any], /, *args: Any, timeout: float | None = None,
               retries: int | None = None, **kwargs: Any) -> Future[Any]:
        """Run ``fn(*args, **kwargs)`` in a worker; a ``concurrent.futures.Future``.

        ``timeout`` and ``retries`` are options of the pool, not passed to ``fn``; wrap ``fn``
        in ``functools.partial`` to give it arguments of those names.
        """
        check_callable(fn)
        self._handed_futures = True
        return self._submit_call(fn, args, kwargs, timeout, retries)

    def _submit_call(self, fn: Callable[..., Any], args: tuple[Any, ...],
                     kwargs: dict[str, Any], timeout: float | None, retries: int | None
                     ) -> Future[Any]:
        try:
            return self.submit_task(Task(self._runnable(fn), args, kwargs), timeout=timeout,
                                    retries=retries)
        except SerializationError as error:
            raise as_its_cause(error) from error.__cause__

    def submit_task(self, task: Task, *, timeout: float | None = None,
                    retries: int | None = None) -> Future[Any]:
        """Schedule a prepared task (one call, or a chunk of calls), with the pool's default
        ``timeout`` and ``retries`` where not given: the seam front ends such as
        :class:`~manybrains.ProcessPoolExecutor` build on. Arguments that cannot be pickled
        raise :class:`~manybrains.SerializationError` here, and the front end decides how to
        report it."""
        return self._backend.submit(task, timeout=self._timeout_for(timeout),
                                    retries=self._retries_for(retries))

    def cancel(self, future: Future[Any]) -> bool:
        """Cancel ``future``'s task; a running one has its worker killed and replaced."""
        return self._backend.cancel(future)

    # ---- many tasks -----------------------------------------------------------------------

    @overload
    def map(self, func: AsyncFn[R], iterable: Iterable[Any],
            chunksize: ChunkSize | Iterable[Any] | None = None, *iterables: Iterable[Any],
            timeout: float | None = None, retries: int | None = None,
            progress: ProgressOption = False) -> list[R]: ...
    @overload
    def map(self, func: Callable[..., R], iterable: Iterable[Any],
            chunksize: ChunkSize | Iterable[Any] | None = None, *iterables: Iterable[Any],
            timeout: float | None = None, retries: int | None = None,
            progress: ProgressOption = False) -> list[R]: ...
    def map(self, func: Callable[..., Any], iterable: Iterable[Any],
            chunksize: ChunkSize | Iterable[Any] | None = None, *iterables: Iterable[Any],
            timeout: float | None = None, retries: int | None = None,
            progress: ProgressOption = False) -> list[Any]:
        """``[func(x) for x in iterable]``, computed by the workers, in order.

        ``multiprocessing.Pool.map``'s signature: ``chunksize`` None (or ``"auto"``) lets the
        pool size chunks from measured call times. Like the builtin ``map``, more iterables
        are zipped: ``map(func, xs, ys)`` calls ``func(x, y)``; a third argument that is not
        an int or None is such an iterable. ``progress=True`` shows a progress bar (a dict:
        its tqdm options; a callable: gets progress snapshots); see
        :mod:`manybrains.progress`.
        """
        zipped, size = map_iterables(iterable, chunksize, iterables)
        items, star = zip_args(zipped)
        return self._collect(func, items, star=star, chunksize=size, timeout=timeout,
                             retries=retries, progress=progress)

    @overload
    def starmap(self, func: AsyncFn[R], iterable: Iterable[Iterable[Any]],
                chunksize: ChunkSize | None = None, *, timeout: float | None = None,
                retries: int | None = None, progress: ProgressOption = False) -> list[R]: ...
    @overload
    def starmap(self, func: Callable[..., R], iterable: Iterable[Iterable[Any]],
                chunksize: ChunkSize | None = None, *, timeout: float | None = None,
                retries: int | None = None, progress: ProgressOption = False) -> list[R]: ...
    def starmap(self, func: Callable[..., Any], iterable: Iterable[Iterable[Any]],
                chunksize: ChunkSize | None = None, *, timeout: float | None = None,
                retries: int | None = None, progress: ProgressOption = False) -> list[Any]:
        """``[func(*args) for args in iterable]``, computed by the workers, in order."""
        return self._collect(func, check_iterable(iterable), star=True,
                             chunksize=auto_chunksize(chunksize), timeout=timeout, retries=retries,
                             progress=progress)

    @overload
    def imap(self, func: Callable[[T], Coroutine[Any, Any, R]], iterable: Iterable[T],
             chunksize: ChunkSize | None = "auto", *, ordered: bool = True,
             timeout: float | None = None, retries: int | None = None,
             progress: ProgressOption = False) -> ResultIterator[R]: ...
    @overload
    def imap(self, func: Callable[[T], R], iterable: Iterable[T],
             chunksize: ChunkSize | None = "auto", *, ordered: bool = True,
             timeout: float | None = None, retries: int | None = None,
             progress: ProgressOption = False) -> ResultIterator[R]: ...
    def imap(self, func: Callable[[Any], Any], iterable: Iterable[Any],
             chunksize: ChunkSize | None = "auto", *, ordered: bool = True,
             timeout: float | None = None, retries: int | None = None,
             progress: ProgressOption = False) -> ResultIterator[Any]:
        """Lazily yield ``func(x)`` for each ``x``; ``ordered=False`` yields as results come.

        The input is read only as fast as results are consumed (a bounded window ahead), so
        an endless generator is fine. As with ``multiprocessing``'s ``imap``, a call that
        raises raises its error in its place and the next ``next()`` goes on with the
        remaining results; ``it.next(timeout)`` raises ``multiprocessing.TimeoutError`` when
        no result comes in time. If the input itself raises, the results before that item
        come first, then its error, and the iteration ends.
        """
        return self._imap(func, check_iterable(iterable), star=False, ordered=ordered,
                          chunksize=auto_chunksize(chunksize), timeout=timeout, retries=retries,
                          progress=progress)

    @overload
    def istarmap(self, func: AsyncFn[R], iterable: Iterable[Iterable[Any]], *,
                 ordered: bool = True, chunksize: ChunkSize = "auto",
                 timeout: float | None = None, retries: int | None = None,
                 progress: ProgressOption = False) -> ResultIterator[R]: ...
    @overload
    def istarmap(self, func: Callable[..., R], iterable: Iterable[Iterable[Any]], *,
                 ordered: bool = True, chunksize: ChunkSize = "auto",
                 timeout: float | None = None, retries: int | None = None,
                 progress: ProgressOption = False) -> ResultIterator[R]: ...
    def istarmap(self, func: Callable[..., Any], iterable: Iterable[Iterable[Any]], *,
                 ordered: bool = True, chunksize: ChunkSize = "auto",
                 timeout: float | None = None, retries: int | None = None,
                 progress: ProgressOption = False) -> ResultIterator[Any]:
        """Lazy :meth:`starmap`."""
        return self._imap(func, check_iterable(iterable), star=True, ordered=ordered,
                          chunksize=chunksize, timeout=timeout, retries=retries,
                          progress=progress)

    def _imap(self, func: Callable[..., Any], items: Iterable[Any], *, star: bool, ordered: bool,
              chunksize: ChunkSize, timeout: float | None, retries: int | None,
              progress: ProgressOption = False) -> ResultIterator[Any]:
        plan = self._stream_plan(func, items, star, chunksize, timeout, retries)
        plan.on_failure = _in_place_for_imap  # a failed chunk is one error, in its place
        plan.continue_after_error = True  # and the calls after a raising one still run
        progress_of = tracker(progress, known_length(items))
        return self._left_at_exit.iterator(
            ResultIterator(items, plan, ordered=ordered, progress=progress_of))

    def _collect(self, fn: Callable[..., Any], items: Iterable[Any], *, star: bool,
                 chunksize: ChunkSize, timeout: float | None, retries: int | None,
                 progress: ProgressOption = False) -> list[Any]:
        plan = self._stream_plan(fn, items, star, chunksize, timeout, retries)
        return collect(stream_chunks(items, plan, ordered=True,
                                     progress=tracker(progress, known_length(items))))

    def _stream_plan(self, fn: Callable[..., Any], items: Iterable[Any], star: bool,
                     chunksize: ChunkSize, timeout: float | None, retries: int | None) -> Plan:
        sizer, submit_chunk = self._plan(fn, items, star, chunksize, timeout, retries)
        return Plan(sizer, submit_chunk, self._window, canceller(self._backend.cancel),
                    on_failure=_raise_for_map)

    def _plan(self, fn: Callable[..., Any], items: Iterable[Any], star: bool,
              chunksize: ChunkSize, timeout: float | None, retries: int | None
              ) -> tuple[ChunkSizer, Callable[[Sequence[Any]], Future[ChunkOutcome]]]:
        """Check the arguments of a map; how to size its chunks and how to submit one."""
        check_callable(fn)
        fixed = check_chunksize(chunksize)
        timeout = self._timeout_for(timeout)
        if timeout is not None and fixed is None:
            fixed = 1  # a per-task deadline needs one task per message to be exact
        retries = self._retries_for(retries)
        total = known_length(items)
        if fixed is None and is_coroutine_function(fn):
            fixed = self._coroutine_chunk(total)
        sizer = ChunkSizer(self._width, total, fixed=fixed, limit=self._max_tasks,
                           costs=self._call_costs, key=getattr(fn, "__code__", fn))
        carried = self._runnable(fn)
        if self._backend.pickles_tasks:
            carried = PickledOnce(carried)

        def submit_chunk(chunk: Sequence[Any]) -> Future[ChunkOutcome]:
            deadline = None if timeout is None else timeout * len(chunk)
            try:
                return self._backend.submit(Task(carried, items=chunk, star=star),
                                            timeout=deadline, retries=retries)
            except SerializationError as error:
                raise as_its_cause(error) from error.__cause__

        return sizer, submit_chunk

    def _window(self) -> int:
        return window(self._width())

    def _width(self) -> int:
        """How many tasks the backend runs at once ("auto" changes it as it learns)."""
        return self._backend.capacity or self._workers

    def _runnable(self, fn: Callable[..., Any]) -> Callable[..., Any]:
        """A coroutine function travels as an AsyncCall, which any backend can run."""
        return AsyncCall(fn, self._concurrency) if is_coroutine_function(fn) else fn

    def _coroutine_chunk(self, total: int | None) -> int:
        # One chunk fills one worker's event loop; a known input is split evenly so that no
        # worker waits while another holds the tail.
        if total is None:
            return self._concurrency
        return max(1, min(self._concurrency, -(-total // self._width())))

    # ---- lifecycle ------------------------------------------------------------------------

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        """Accept no more tasks; with ``wait``, return once queued tasks are done.

        ``cancel_futures`` cancels tasks not yet started. Calling it again does nothing.
        """
        self._close(wait=wait, cancel_futures=cancel_futures, kill=False)

    def terminate(self) -> None:
        """Stop now: cancel queued tasks, kill running ones, stop every worker."""
        self._close(wait=True, cancel_futures=True, kill=True)

    def _close(self, *, wait: bool, cancel_futures: bool, kill: bool) -> None:
        with self._shutdown_lock:
            first = not self._is_shut_down
            self._is_shut_down = True
            if first or kill:
                self._stdlib_state = "TERMINATE" if kill else "CLOSE"
        if first or kill:
            self._backend.shutdown(wait=wait, cancel_futures=cancel_futures, kill=kill)
        elif wait:
            self._backend.shutdown(wait=True, cancel_futures=False)

    def statistics(self) -> Statistics:
        """Tasks submitted, done, failed, retried, in flight; per-worker busy and idle time.

        A frozen snapshot (``stats.done``, ``stats.workers[0].busy_s``). On ``"auto"`` it
        also says which backend each function went to, and why (``stats.choices``).
        """
        return self._backend.statistics()

    def insights(self) -> Insights:
        """Per-worker tasks, busy, idle and pickling time; task-time statistics and the
        slowest tasks with their arguments. ``print(pool.insights())`` shows a table."""
        from .insights import collect as collect_insights

        return collect_insights(self._backend)

    def __enter__(self) -> Pool:
        self._check_running()
        return self

    def _check_running(self) -> None:
        if self.closed:  # as multiprocessing's pool: a closed pool cannot be reused
            raise PoolClosed("this pool has been shut down and cannot be entered again; "
                             "create a new one")

    def __exit__(self, exc_type: type[BaseException] | None, exc_val: BaseException | None,
                 exc_tb: TracebackType | None) -> None:
        """Stop the ``multiprocessing`` API's pending work, as its pool's ``__exit__`` does;
        wait for the futures of ``submit``, as ``concurrent.futures`` does. Ctrl-C or
        ``SystemExit``: stop everything now."""
        if exc_type is not None and not issubclass(exc_type, Exception):
            self.terminate()
            return
        # One kill of every worker when nothing else runs; else each of those tasks alone.
        kill = self._backend.cancel if self._handed_futures else None
        if self._left_at_exit.stop(kill) and not self._handed_futures:
            self.terminate()
        else:
            self.shutdown(wait=True)

    def __repr__(self) -> str:
        state = "shut down" if self.closed else "running"
        return f"<manybrains.Pool {self._backend.name} workers={self._workers} {state}>"

    # ---- option resolution ------------------------------------------------------------------

    def _timeout_for(self, timeout: float | None) -> float | None:
        return self._timeout if timeout is None else check_timeout(timeout)

    def _retries_for(self, retries: int | None) -> int:
        return self._retries if retries is None else check_retries(retries)


def _raise_for_map(chunk: Sequence[Any], error: Exception) -> NoReturn:
    """A chunk failed as a whole: its error ends the map. A result that could not be pickled
    back is also ``multiprocessing``'s ``MaybeEncodingError``, as its ``Pool.map`` raises."""
    if isinstance(error, SerializationError):
        raise as_encoding_error(error) from error.__cause__
    raise error


def _in_place_for_imap(chunk: Sequence[Any], error: Exception) -> ChunkOutcome:
    """A chunk that failed as a whole raises where its first result would have come, and
    the iteration goes on (as ``multiprocessing``'s ``imap`` after an error)."""
    return ChunkOutcome([], as_encoding_error(error))
