"""The awaitable twins of :class:`~manybrains.Pool`'s methods, for code inside an event loop.

``asubmit``, ``amap``, ``aimap`` and ``async with``: waiting for a result never blocks the
loop, whatever runs the work (worker processes, threads, a cluster). They share the pool's
internals with their blocking twins: :func:`manybrains._stream.astream` is the async driver of
the same stream that ``imap`` drives from a thread.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Coroutine, Iterable
from concurrent.futures import Future
from types import TracebackType
from typing import TYPE_CHECKING, Any, TypeVar, overload

from ._arguments import ChunkSize, check_iterable, zip_args
from ._chunking import known_length
from ._stream import astream
from .progress import ProgressOption, tracker

if TYPE_CHECKING:
    from typing_extensions import Self

    from ._stream import Plan

T = TypeVar("T")
R = TypeVar("R")
# An ``async def`` function: the pool awaits its coroutine, so what a caller gets is R.
AsyncFn = Callable[..., Coroutine[Any, Any, R]]


class AsyncPoolAPI:
    """``asubmit``, ``amap``, ``aimap`` and ``async with``, mixed into :class:`~manybrains.Pool`."""

    if TYPE_CHECKING:  # provided by Pool
        def submit(self, fn: Callable[..., Any], /, *args: Any, timeout: float | None = None,
                   retries: int | None = None, **kwargs: Any) -> Future[Any]: ...

        def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None: ...

        def terminate(self) -> None: ...

        def _check_running(self) -> None: ...

        def _stream_plan(self, fn: Callable[..., Any], items: Iterable[Any], star: bool,
                         chunksize: ChunkSize, timeout: float | None, retries: int | None
                         ) -> Plan: ...

    @overload
    async def asubmit(self, fn: AsyncFn[R], /, *args: Any, timeout: float | None = None,
                      retries: int | None = None, **kwargs: Any) -> R: ...
    @overload
    async def asubmit(self, fn: Callable[..., R], /, *args: Any, timeout: float | None = None,
                      retries: int | None = None, **kwargs: Any) -> R: ...
    async def asubmit(self, fn: Callable[..., Any], /, *args: Any,
                      timeout: float | None = None, retries: int | None = None,
                      **kwargs: Any) -> Any:
        """``await`` the result of ``fn(*args, **kwargs)``; the event loop keeps running.

        On ``"inline"`` the call runs in the caller, so it blocks the loop while it runs.
        """
        import asyncio

        future = self.submit(fn, *args, timeout=timeout, retries=retries, **kwargs)
        return await asyncio.wrap_future(future)

    @overload
    async def amap(self, fn: AsyncFn[R], *iterables: Iterable[Any],
                   chunksize: ChunkSize = "auto", timeout: float | None = None,
                   retries: int | None = None, progress: ProgressOption = False) -> list[R]: ...
    @overload
    async def amap(self, fn: Callable[..., R], *iterables: Iterable[Any],
                   chunksize: ChunkSize = "auto", timeout: float | None = None,
                   retries: int | None = None, progress: ProgressOption = False) -> list[R]: ...
    async def amap(self, fn: Callable[..., Any], *iterables: Iterable[Any],
                   chunksize: ChunkSize = "auto", timeout: float | None = None,
                   retries: int | None = None, progress: ProgressOption = False
                   ) -> list[Any]:
        """:meth:`map` for a coroutine: ``await pool.amap(fn, items)``, the loop keeps running."""
        if not iterables:
            raise TypeError("amap() needs at least one iterable")
        items, star = zip_args(iterables)
        results = self._aimap(fn, items, star=star, ordered=True, chunksize=chunksize,
                              timeout=timeout, retries=retries, progress=progress)
        return [value async for value in results]

    @overload
    def aimap(self, fn: Callable[[T], Coroutine[Any, Any, R]], iterable: Iterable[T], *,
              ordered: bool = True, chunksize: ChunkSize = "auto",
              timeout: float | None = None, retries: int | None = None,
              progress: ProgressOption = False) -> AsyncIterator[R]: ...
    @overload
    def aimap(self, fn: Callable[[T], R], iterable: Iterable[T], *, ordered: bool = True,
              chunksize: ChunkSize = "auto", timeout: float | None = None,
              retries: int | None = None, progress: ProgressOption = False
              ) -> AsyncIterator[R]: ...
    def aimap(self, fn: Callable[[Any], Any], iterable: Iterable[Any], *,
              ordered: bool = True, chunksize: ChunkSize = "auto",
              timeout: float | None = None, retries: int | None = None,
              progress: ProgressOption = False) -> AsyncIterator[Any]:
        """:meth:`imap` for a coroutine: ``async for r in pool.aimap(fn, items)``."""
        return self._aimap(fn, check_iterable(iterable), star=False, ordered=ordered,
                           chunksize=chunksize, timeout=timeout, retries=retries,
                           progress=progress)

    def _aimap(self, fn: Callable[..., Any], items: Iterable[Any], *, star: bool, ordered: bool,
               chunksize: ChunkSize, timeout: float | None, retries: int | None,
               progress: ProgressOption = False) -> AsyncIterator[Any]:
        plan = self._stream_plan(fn, items, star, chunksize, timeout, retries)
        return astream(items, plan, ordered=ordered,
                       progress=tracker(progress, known_length(items)))

    async def __aenter__(self) -> Self:
        self._check_running()
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        import asyncio

        if exc_type is None or issubclass(exc_type, Exception):
            await asyncio.to_thread(self.shutdown, True)  # joining workers would block the loop
        else:
            self.terminate()
