"""The ``multiprocessing.Pool`` methods of :class:`~manybrains.Pool`.

``apply``, ``apply_async``, ``map_async``, ``starmap_async``, ``imap_unordered``, ``close``
and ``join``, with ``multiprocessing``'s signatures (``chunksize`` positional, ``callback``
and ``error_callback``), so code written for ``multiprocessing.Pool`` runs unchanged. They
are written over the same few pool internals as ``map`` and ``submit``: the per-task
``timeout``/``retries`` defaults of the pool apply to them too.

Where the two APIs differ, docs/drop-in.md has the table.
"""

from __future__ import annotations

import contextlib
import signal
import threading
import time
import weakref
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import Future
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, TypeVar

from ._arguments import ChunkSize, check_callable, check_iterable
from ._async_result import AsyncResult, failed, gather
from ._chunking import known_length
from ._errors import PoolClosed, SerializationError, also_instance_of
from ._stream import Plan, SubmitChunk, canceller, submit_all, unbounded

if TYPE_CHECKING:
    from ._chunking import ChunkSizer
    from ._stream import ResultIterator
    from ._task import ChunkOutcome
    from .backends._base import Backend, Statistics
    from .progress import ProgressOption

R = TypeVar("R")
# multiprocessing's default ``kwds={}``, which nobody can change in place
NO_KEYWORDS: Mapping[str, Any] = MappingProxyType({})
Callback = Callable[[Any], object]
ErrorCallback = Callable[[BaseException], object]
_CHUNKS_PER_WORKER = 4  # multiprocessing's map_async: about four chunks per worker
_STARTING_WORKERS_S = 5.0  # how long reading Pool._pool waits for the first workers


class MultiprocessingPoolAPI:
    """The ``multiprocessing.Pool`` surface, mixed into :class:`~manybrains.Pool`."""

    if TYPE_CHECKING:  # provided by Pool
        _left_at_exit: LeftAtExit
        _stdlib_state: str

        @property
        def backend(self) -> Backend: ...

        def statistics(self) -> Statistics: ...

        @property
        def closed(self) -> bool: ...

        def _submit_call(self, fn: Callable[..., Any], args: tuple[Any, ...],
                         kwargs: dict[str, Any], timeout: float | None,
                         retries: int | None) -> Future[Any]: ...

        def _plan(self, fn: Callable[..., Any], items: Iterable[Any], star: bool,
                  chunksize: ChunkSize, timeout: float | None, retries: int | None
                  ) -> tuple[ChunkSizer, Callable[[Sequence[Any]], Future[ChunkOutcome]]]: ...

        def _imap(self, fn: Callable[..., Any], items: Iterable[Any], *, star: bool,
                  ordered: bool, chunksize: ChunkSize, timeout: float | None,
                  retries: int | None, progress: ProgressOption = False) -> ResultIterator[Any]: ...

        def _width(self) -> int: ...

        def _close(self, *, wait: bool, cancel_futures: bool, kill: bool) -> None: ...

    # ---- one call -------------------------------------------------------------------------

    def apply(self, func: Callable[..., R], args: Iterable[Any] = (),
              kwds: Mapping[str, Any] = NO_KEYWORDS) -> R:
        """``func(*args, **kwds)`` in a worker; blocks until it returns (or raises)."""
        result: AsyncResult[R] = self.apply_async(func, args, kwds)
        return result.get()

    def apply_async(self, func: Callable[..., R], args: Iterable[Any] = (),
                    kwds: Mapping[str, Any] = NO_KEYWORDS,
                    callback: Callback | None = None,
                    error_callback: ErrorCallback | None = None, *,
                    timeout: float | None = None, retries: int | None = None
                    ) -> AsyncResult[R]:
        """Start ``func(*args, **kwds)``; an :class:`~manybrains.AsyncResult`.

        Every key of ``kwds`` goes to ``func`` (``timeout``/``retries`` here are the pool's
        per-task options). An argument that cannot be pickled fails the result (and calls
        ``error_callback``), as in ``multiprocessing``.
        """
        check_callable(func)
        _check_callbacks(callback, error_callback)
        call_args, call_kwargs = _call_arguments(args, kwds)
        try:
            future = self._submit_call(func, call_args, call_kwargs, timeout, retries)
        except SerializationError as error:
            future = failed(error)
        return self._left_at_exit.result(AsyncResult(future, callback, error_callback))

    # ---- many calls -----------------------------------------------------------------------

    def map_async(self, func: Callable[..., R], iterable: Iterable[Any],
                  chunksize: ChunkSize | None = None, callback: Callback | None = None,
                  error_callback: ErrorCallback | None = None, *,
                  timeout: float | None = None, retries: int | None = None
                  ) -> AsyncResult[list[R]]:
        """Start ``[func(x) for x in iterable]``; an AsyncResult of the whole list."""
        return self._map_async(func, iterable, False, chunksize, callback, error_callback,
                               timeout, retries)

    def starmap_async(self, func: Callable[..., R], iterable: Iterable[Iterable[Any]],
                      chunksize: ChunkSize | None = None, callback: Callback | None = None,
                      error_callback: ErrorCallback | None = None, *,
                      timeout: float | None = None, retries: int | None = None
                      ) -> AsyncResult[list[R]]:
        """Start ``[func(*args) for args in iterable]``; an AsyncResult of the whole list."""
        return self._map_async(func, iterable, True, chunksize, callback, error_callback,
                               timeout, retries)

    def imap_unordered(self, func: Callable[..., R], iterable: Iterable[Any],
                       chunksize: ChunkSize | None = "auto", *, timeout: float | None = None,
                       retries: int | None = None, progress: ProgressOption = False
                       ) -> ResultIterator[R]:
        """Lazily yield ``func(x)`` for each ``x``, as results come (``imap(ordered=False)``)."""
        return self._imap(func, check_iterable(iterable), star=False, ordered=False,
                          chunksize=auto_chunksize(chunksize), timeout=timeout, retries=retries,
                          progress=progress)

    def _map_async(self, fn: Callable[..., Any], iterable: Iterable[Any], star: bool,
                   chunksize: ChunkSize | None, callback: Callback | None,
                   error_callback: ErrorCallback | None, timeout: float | None,
                   retries: int | None) -> AsyncResult[list[Any]]:
        check_callable(fn)
        _check_callbacks(callback, error_callback)
        # Every chunk is sent now, as multiprocessing does, so the input is read now too.
        items = check_iterable(iterable)
        if known_length(items) is None:
            items = list(items)
        if chunksize is None or chunksize == "auto":
            chunksize = max(1, -(-len(items) // (self._width() * _CHUNKS_PER_WORKER)))
        sizer, submit_chunk = self._plan(fn, items, star, chunksize, timeout, retries)
        futures = submit_all(items, Plan(sizer, _reported_in_result(submit_chunk), unbounded,
                                         canceller(None)))
        result = AsyncResult(gather(futures), callback, error_callback, parts=futures)
        return self._left_at_exit.result(result)

    # ---- what programs read of multiprocessing.Pool's internals ----------------------------
    # Private in the stdlib, yet common in published code (a worker's pid, "is anything still
    # pending?"): read-only views of the same facts, so such programs run too.

    @property
    def _processes(self) -> int:
        """The number of workers (``multiprocessing.Pool._processes``)."""
        return self._width()

    @property
    def _state(self) -> str:
        """``"RUN"``, ``"CLOSE"`` or ``"TERMINATE"``, as ``multiprocessing.pool`` spells them."""
        return self._stdlib_state

    @property
    def _cache(self) -> dict[int, object]:
        """The results and ``imap`` iterators not finished yet, by an id."""
        return self._left_at_exit.pending()

    @property
    def _pool(self) -> list[WorkerProcess]:
        """The worker processes (none on backends that run tasks in this process). As in
        ``multiprocessing``, whose ``Pool()`` returns once its workers are started, a
        process pool's first workers are waited for (a few seconds at most)."""
        deadline = time.monotonic() + _STARTING_WORKERS_S
        while True:
            started = [(w.pid, w.name) for w in self.statistics().workers if w.pid is not None]
            if (len(started) >= self._processes or not self._starts_processes()
                    or self.closed or time.monotonic() > deadline):
                return [WorkerProcess(pid, name) for pid, name in started]
            time.sleep(0.005)

    def _starts_processes(self) -> bool:
        return self.backend.starts_worker_processes

    # ---- lifecycle ------------------------------------------------------------------------

    def close(self) -> None:
        """Accept no more tasks; the workers exit once the queued ones are done."""
        self._close(wait=False, cancel_futures=False, kill=False)

    def join(self) -> None:
        """Wait for the workers to exit; call :meth:`close` or ``terminate()`` first."""
        if not self.closed:
            raise ValueError("the pool is still running: call close() or terminate() "
                             "before join()")
        self._close(wait=True, cancel_futures=False, kill=False)


# ---- leaving ``with Pool()`` -----------------------------------------------------------------


class LeftAtExit:
    """The work of the ``multiprocessing`` API still pending: what leaving ``with Pool()``
    stops, as ``multiprocessing.Pool.__exit__`` terminates its pool.

    Code written for the stdlib relies on that: its own documentation leaves a 10 s task
    behind, and a task that never ends would otherwise hang the program at the end of the
    block. Unlike the stdlib, whose pending results then wait forever, each result left
    behind fails with :class:`~manybrains.PoolClosed` saying what happened. Futures from
    ``submit`` are not stopped: the ``concurrent.futures`` contract waits for them.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._results: set[AsyncResult[Any]] = set()
        self._iterators: weakref.WeakSet[ResultIterator[Any]] = weakref.WeakSet()

    def result(self, result: AsyncResult[R]) -> AsyncResult[R]:
        """Track ``result`` until it is settled."""
        with self._lock:
            self._results.add(result)
        result.future.add_done_callback(lambda _: self._forget(result))
        return result

    def iterator(self, results: ResultIterator[R]) -> ResultIterator[R]:
        """Track an ``imap`` iterator while anything references it."""
        with self._lock:
            self._iterators.add(results)
        return results

    def pending(self) -> dict[int, object]:
        """What is not finished yet, by an id (``multiprocessing.Pool._cache``)."""
        with self._lock:
            found: list[object] = [r for r in self._results if not r.ready()]
            found += [it for it in self._iterators if it.running]
        return {id(item): item for item in found}

    def _forget(self, result: AsyncResult[Any]) -> None:
        with self._lock:
            self._results.discard(result)

    def stop(self, kill: Callable[[Future[Any]], object] | None) -> bool:
        """Fail every pending result and iterator and stop their work: ``kill`` each
        running task, or, with None, only cancel what has not started (the caller then
        terminates the whole pool). Whether there was any."""
        with self._lock:
            results, self._results = self._results, set()
            iterators = list(self._iterators)
        pending = [result for result in results if not result.ready()]
        for result in pending:
            if result.abandon(_left_behind("result")) and kill is not None:
                for part in result.parts:
                    kill(part)
        stopped = [it for it in iterators
                   if it.stop(_left_behind("iteration"), kill=kill is not None)]
        return bool(pending or stopped)


class WorkerProcess:
    """A worker process as ``multiprocessing.Pool._pool`` lists it: its ``pid`` and ``name``,
    ``is_alive()``, ``join()``, ``terminate()`` and ``kill()``. It stays valid after the
    worker exits (``is_alive()`` is then False, even if the pid is reused)."""

    daemon = True

    def __init__(self, pid: int, name: str) -> None:
        import psutil

        self.pid, self.name = pid, name
        try:
            self._process: psutil.Process | None = psutil.Process(pid)
        except psutil.Error:
            self._process = None  # already gone

    def is_alive(self) -> bool:
        import psutil

        try:
            return self._process is not None and self._process.is_running() \
                and self._process.status() != psutil.STATUS_ZOMBIE
        except psutil.Error:
            return False

    def join(self, timeout: float | None = None) -> None:
        deadline = None if timeout is None else time.monotonic() + timeout
        while self.is_alive() and (deadline is None or time.monotonic() < deadline):
            time.sleep(0.01)

    def terminate(self) -> None:
        self._signal(signal.SIGTERM)

    def kill(self) -> None:
        self._signal(signal.SIGKILL)

    def _signal(self, number: int) -> None:
        import psutil

        if self._process is not None:
            with contextlib.suppress(psutil.Error):
                self._process.send_signal(number)

    def __repr__(self) -> str:
        state = "started" if self.is_alive() else "stopped"
        return f"<WorkerProcess name={self.name!r} pid={self.pid} {state} daemon>"


def _left_behind(what: str) -> PoolClosed:
    return PoolClosed(
        f"the pool was terminated when its `with` block ended, before this {what} was "
        "complete (multiprocessing.Pool stops its work there too): get the results inside "
        "the block, or call pool.close() and pool.join() before it ends")


# ---- reading multiprocessing's arguments ---------------------------------------------------


def one_of(name: str, value: Any, alias: str, alias_value: Any) -> Any:
    """The option given under its manybrains name or its ``multiprocessing`` one."""
    if alias_value is None:
        return value
    if value is not None:
        raise TypeError(f"{name} and {alias} are the same option; give only one")
    return alias_value


def check_lifetime(maxtasksperchild: object) -> int | None:
    # multiprocessing raises ValueError for any bad value here, a float or a string too.
    if maxtasksperchild is None:
        return None
    if isinstance(maxtasksperchild, bool) or not isinstance(maxtasksperchild, int) \
            or maxtasksperchild < 1:
        raise ValueError(f"maxtasksperchild must be a positive int or None, got "
                         f"{maxtasksperchild!r}")
    return maxtasksperchild


def auto_chunksize(chunksize: ChunkSize | None) -> ChunkSize:
    return "auto" if chunksize is None else chunksize  # multiprocessing's None: pool's choice


def map_iterables(iterable: Iterable[Any], chunksize: Any, more: tuple[Any, ...]
                  ) -> tuple[tuple[Any, ...], ChunkSize]:
    """``Pool.map(func, iterable, chunksize=None, *more)``: multiprocessing's signature, where
    a third argument that is not a chunk size (an int or None) is a second iterable to zip
    with the first, as the builtin ``map`` does."""
    if not (_is_chunksize(chunksize) or isinstance(chunksize, str)):  # "auto", or a typo
        for position, value in enumerate(more, 4):
            if _is_chunksize(value):
                raise TypeError(
                    f"map() argument {position} is {value!r}, not an iterable: a chunk size "
                    "follows a single iterable (map(func, xs, 8)); for several iterables "
                    "and a chunk size write starmap(func, zip(xs, ys), 8)")
        return (iterable, chunksize, *more), "auto"
    if more:
        raise TypeError(
            f"map() argument 3 is the chunk size {chunksize!r}, and more iterables follow it: "
            "to zip several iterables give them all positionally (map(func, xs, ys)), and for "
            "a chunk size as well use starmap(func, zip(xs, ys), chunksize)")
    return (iterable,), auto_chunksize(chunksize)


def _reported_in_result(submit: SubmitChunk) -> SubmitChunk:
    """``submit``, where a chunk whose pieces cannot be pickled fails the whole result instead
    of raising, as in the stdlib; the chunks after it are not sent."""
    broken: list[SerializationError] = []

    def submit_or_fail(chunk: Sequence[Any]) -> Future[ChunkOutcome]:
        if not broken:
            try:
                return submit(chunk)
            except SerializationError as error:
                broken.append(error)
        return failed(broken[0])
    return submit_or_fail


def _is_chunksize(value: object) -> bool:
    return value is None or (isinstance(value, int) and not isinstance(value, bool))


def as_its_cause(error: SerializationError) -> BaseException:
    """A pickling failure raised at submit, also as the type its ``__reduce__`` raised, as
    the stdlib pools report it (``except RuntimeError`` still catches it)."""
    cause = error.__cause__
    return error if cause is None else also_instance_of(error, type(cause))


def _call_arguments(args: Iterable[Any], kwds: Mapping[str, Any] | None
                    ) -> tuple[tuple[Any, ...], dict[str, Any]]:
    if isinstance(args, (str, bytes)) or not isinstance(args, Iterable):
        raise TypeError(f"args must be a tuple of positional arguments, got "
                        f"{type(args).__name__}: {args!r} (for one argument write (x,))")
    if kwds is not None and not isinstance(kwds, Mapping):
        raise TypeError(f"kwds must be a mapping of keyword arguments, got "
                        f"{type(kwds).__name__}")
    return tuple(args), dict(kwds or {})


def _check_callbacks(callback: object, error_callback: object) -> None:
    for name, value in (("callback", callback), ("error_callback", error_callback)):
        if value is not None and not callable(value):
            raise TypeError(f"{name} must be callable or None, got {type(value).__name__}")
