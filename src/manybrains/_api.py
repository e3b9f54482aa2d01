"""``manybrains.map``, ``imap``, ``submit`` and ``advise``: shared default pools.

One pool per backend name is created on first use, reused by every later call (its workers
are already warm), and stopped at interpreter exit. The default backend is ``"auto"``: it
measures each function's first calls and runs it on threads, worker processes, an event loop
or right here, whichever fits (see :mod:`manybrains.backends.auto`).
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Coroutine, Iterable
from concurrent.futures import Future
from typing import Any, TypeVar, overload

from ._arguments import ChunkSize
from ._pool import Pool
from ._stream import ResultIterator
from .advisor import Advice
from .advisor import advise as _advise
from .progress import ProgressOption

T = TypeVar("T")
R = TypeVar("R")

DEFAULT_BACKEND = "auto"

_lock = threading.Lock()
_defaults: dict[str, Pool] = {}


def _forget_after_fork() -> None:
    # A forked child has none of the parent's engine threads, so its copies of the shared
    # pools can run nothing; and another thread may have held the lock at the fork.
    global _lock
    _lock = threading.Lock()
    _defaults.clear()


os.register_at_fork(after_in_child=_forget_after_fork)


def default_pool(backend: str = DEFAULT_BACKEND) -> Pool:
    """The shared pool behind ``manybrains.map``/``imap``/``submit`` for ``backend``."""
    with _lock:
        pool = _defaults.get(backend)
        if pool is None or not _usable(pool):
            pool = _defaults[backend] = Pool(backend=backend)
        return pool


def shutdown_default_pool() -> None:
    """Stop the shared pools now; the next call creates new ones."""
    with _lock:
        pools = list(_defaults.values())
        _defaults.clear()
    for pool in pools:
        pool.shutdown(wait=True, cancel_futures=True)


# An ``async def`` function's calls give what it returns once awaited (as on Pool).
@overload
def map(fn: Callable[..., Coroutine[Any, Any, R]], *iterables: Iterable[Any],
        backend: str = ..., chunksize: ChunkSize = ..., timeout: float | None = ...,
        retries: int | None = ..., progress: ProgressOption = ...) -> list[R]: ...
@overload
def map(fn: Callable[..., R], *iterables: Iterable[Any], backend: str = ...,
        chunksize: ChunkSize = ..., timeout: float | None = ..., retries: int | None = ...,
        progress: ProgressOption = ...) -> list[R]: ...
def map(fn: Callable[..., Any], *iterables: Iterable[Any], backend: str = DEFAULT_BACKEND,
        chunksize: ChunkSize = "auto", timeout: float | None = None,
        retries: int | None = None, progress: ProgressOption = False) -> list[Any]:
    """``[fn(*xs) for xs in zip(*iterables)]``, in order, where ``fn`` runs best.

    ``fn`` may be a coroutine function: its calls are awaited concurrently.
    """
    if not iterables:
        raise TypeError("map() needs at least one iterable")
    pool = default_pool(backend)
    if len(iterables) == 1:
        return pool.map(fn, iterables[0], chunksize, timeout=timeout, retries=retries,
                        progress=progress)
    return pool.starmap(fn, zip(*iterables, strict=False), chunksize, timeout=timeout,
                        retries=retries, progress=progress)


@overload
def imap(fn: Callable[[T], Coroutine[Any, Any, R]], iterable: Iterable[T], *,
         ordered: bool = ..., backend: str = ..., chunksize: ChunkSize = ...,
         timeout: float | None = ..., retries: int | None = ...,
         progress: ProgressOption = ...) -> ResultIterator[R]: ...
@overload
def imap(fn: Callable[[T], R], iterable: Iterable[T], *, ordered: bool = ...,
         backend: str = ..., chunksize: ChunkSize = ..., timeout: float | None = ...,
         retries: int | None = ..., progress: ProgressOption = ...) -> ResultIterator[R]: ...
def imap(fn: Callable[[Any], Any], iterable: Iterable[Any], *, ordered: bool = True,
         backend: str = DEFAULT_BACKEND, chunksize: ChunkSize = "auto",
         timeout: float | None = None, retries: int | None = None,
         progress: ProgressOption = False) -> ResultIterator[Any]:
    """Lazily yield ``fn(x)`` for each ``x``; see :meth:`Pool.imap`."""
    return default_pool(backend).imap(fn, iterable, ordered=ordered, chunksize=chunksize,
                                      timeout=timeout, retries=retries, progress=progress)


@overload
def submit(fn: Callable[..., Coroutine[Any, Any, R]], /, *args: Any, backend: str = ...,
           **kwargs: Any) -> Future[R]: ...
@overload
def submit(fn: Callable[..., R], /, *args: Any, backend: str = ..., **kwargs: Any
           ) -> Future[R]: ...
def submit(fn: Callable[..., Any], /, *args: Any, backend: str = DEFAULT_BACKEND,
           **kwargs: Any) -> Future[Any]:
    """Run ``fn(*args, **kwargs)`` in a shared pool; a ``concurrent.futures.Future``.

    ``backend``, ``timeout`` and ``retries`` are options, not passed to ``fn``.
    """
    return default_pool(backend).submit(fn, *args, **kwargs)


def advise(fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Advice:
    """Measure ``fn(*args, **kwargs)`` here and say which backend fits, and why.

    ``print(manybrains.advise(fn, sample))`` shows the measured CPU fraction and time per
    call, the estimated time on each backend, and the recommendation.
    """
    return _advise(fn, *args, **kwargs)


def _usable(pool: Pool) -> bool:
    return not pool.closed
