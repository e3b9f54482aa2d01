"""The ``multiprocessing.Pool`` methods of :class:`~manybrains.Pool`.

``apply``, ``apply_async``, ``map_async``, ``starmap_async``, ``imap_unordered``, ``close``
and ``join``, with ``multiprocessing``'s signatures (``chunksize`` positional, ``callback``
and ``error_callback``), so code written for ``multiprocessing.Pool`` runs unchanged. They
are written over the same few pool internals as ``map`` and ``submit``: the per-task
``timeout``/``retries`` defaults of the pool apply to them too.

Where the two APIs differ, docs/drop-in.md has the table.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import Future
from typing import TYPE_CHECKING, Any, TypeVar

from ._arguments import ChunkSize, check_callable, check_iterable
from ._async_result import AsyncResult, failed, gather
from ._chunking import chunks, known_length
from ._errors import SerializationError, also_as

if TYPE_CHECKING:
    from ._chunking import ChunkSizer
    from ._task import ChunkOutcome
    from .progress import ProgressOption

R = TypeVar("R")
Callback = Callable[[Any], object]
ErrorCallback = Callable[[BaseException], object]
_CHUNKS_PER_WORKER = 4  # multiprocessing's map_async: about four chunks per worker


class MultiprocessingPoolAPI:
    """The ``multiprocessing.Pool`` surface, mixed into :class:`~manybrains.Pool`."""

    if TYPE_CHECKING:  # provided by Pool
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
                  retries: int | None, progress: ProgressOption = False) -> Iterator[Any]: ...

        def _width(self) -> int: ...

        def _close(self, *, wait: bool, cancel_futures: bool, kill: bool) -> None: ...

    # ---- one call -------------------------------------------------------------------------

    def apply(self, fn: Callable[..., R], args: Iterable[Any] = (),
              kwds: Mapping[str, Any] | None = None) -> R:
        """``fn(*args, **kwds)`` in a worker; blocks until it returns (or raises)."""
        result: AsyncResult[R] = self.apply_async(fn, args, kwds)
        return result.get()

    def apply_async(self, fn: Callable[..., R], args: Iterable[Any] = (),
                    kwds: Mapping[str, Any] | None = None,
                    callback: Callback | None = None,
                    error_callback: ErrorCallback | None = None, *,
                    timeout: float | None = None, retries: int | None = None
                    ) -> AsyncResult[R]:
        """Start ``fn(*args, **kwds)``; an :class:`~manybrains.AsyncResult`.

        Every key of ``kwds`` goes to ``fn`` (``timeout``/``retries`` here are the pool's
        per-task options). An argument that cannot be pickled fails the result (and calls
        ``error_callback``), as in ``multiprocessing``.
        """
        check_callable(fn)
        _check_callbacks(callback, error_callback)
        call_args, call_kwargs = _call_arguments(args, kwds)
        try:
            future = self._submit_call(fn, call_args, call_kwargs, timeout, retries)
        except SerializationError as error:
            future = failed(error)
        return AsyncResult(future, callback, error_callback)

    # ---- many calls -----------------------------------------------------------------------

    def map_async(self, fn: Callable[..., R], iterable: Iterable[Any],
                  chunksize: ChunkSize | None = None, callback: Callback | None = None,
                  error_callback: ErrorCallback | None = None, *,
                  timeout: float | None = None, retries: int | None = None
                  ) -> AsyncResult[list[R]]:
        """Start ``[fn(x) for x in iterable]``; an AsyncResult of the whole list."""
        return self._map_async(fn, iterable, False, chunksize, callback, error_callback,
                               timeout, retries)

    def starmap_async(self, fn: Callable[..., R], iterable: Iterable[Iterable[Any]],
                      chunksize: ChunkSize | None = None, callback: Callback | None = None,
                      error_callback: ErrorCallback | None = None, *,
                      timeout: float | None = None, retries: int | None = None
                      ) -> AsyncResult[list[R]]:
        """Start ``[fn(*args) for args in iterable]``; an AsyncResult of the whole list."""
        return self._map_async(fn, iterable, True, chunksize, callback, error_callback,
                               timeout, retries)

    def imap_unordered(self, fn: Callable[..., R], iterable: Iterable[Any],
                       chunksize: ChunkSize | None = "auto", *, timeout: float | None = None,
                       retries: int | None = None, progress: ProgressOption = False
                       ) -> Iterator[R]:
        """Lazily yield ``fn(x)`` for each ``x``, as results come (``imap(ordered=False)``)."""
        return self._imap(fn, check_iterable(iterable), star=False, ordered=False,
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
        futures: list[Future[ChunkOutcome]] = []
        try:
            futures.extend(submit_chunk(chunk) for chunk in chunks(items, sizer))
        except SerializationError as error:  # reported through the result, as in the stdlib
            futures.append(failed(error))
        return AsyncResult(gather(futures), callback, error_callback)

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


def split_chunksize(iterables: tuple[Any, ...], chunksize: ChunkSize | None
                     ) -> tuple[tuple[Any, ...], ChunkSize]:
    """``map(fn, items, 8)`` is multiprocessing's ``chunksize=8``; anything else that is
    not an iterable is a TypeError that says how to write it."""
    if not iterables:
        raise TypeError("map() needs at least one iterable")
    if len(iterables) == 2 and _is_chunksize(iterables[1]):
        if chunksize != "auto":
            raise TypeError("map() got chunksize both positionally (multiprocessing's third "
                            "argument) and by keyword; give it once")
        return iterables[:1], auto_chunksize(iterables[1])
    for position, value in enumerate(iterables[1:], 3):
        if _is_chunksize(value):
            raise TypeError(
                f"map() argument {position} is {value!r}, not an iterable: several "
                "iterables take chunksize by keyword only (map(fn, xs, ys, chunksize=8)); "
                "a positional chunksize (multiprocessing's form) follows a single iterable")
    return iterables, auto_chunksize(chunksize)


def _is_chunksize(value: object) -> bool:
    return value is None or (isinstance(value, int) and not isinstance(value, bool))


def as_its_cause(error: SerializationError) -> BaseException:
    """A pickling failure raised at submit, also as the type its ``__reduce__`` raised, as
    the stdlib pools report it (``except RuntimeError`` still catches it)."""
    cause = error.__cause__
    return error if cause is None else also_as(error, type(cause))


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
