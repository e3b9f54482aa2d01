"""``manybrains.map``, ``imap`` and ``submit``: the shared default pool.

The pool is created on first use, reused by every later call (its workers are already warm),
and stopped at interpreter exit. Worker count and start method are the defaults.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future
from typing import Any, TypeVar

from ._pool import ChunkSize, Pool

T = TypeVar("T")
R = TypeVar("R")

_lock = threading.Lock()
_default: Pool | None = None


def default_pool() -> Pool:
    """The shared pool behind ``manybrains.map``/``imap``/``submit``."""
    global _default
    with _lock:
        if _default is None or not _usable(_default):
            _default = Pool()
        return _default


def shutdown_default_pool() -> None:
    """Stop the shared pool now; the next call creates a new one."""
    global _default
    with _lock:
        pool, _default = _default, None
    if pool is not None:
        pool.shutdown(wait=True, cancel_futures=True)


def map(fn: Callable[..., R], *iterables: Iterable[Any], chunksize: ChunkSize = "auto",
        timeout: float | None = None, retries: int | None = None) -> list[R]:
    """``[fn(*xs) for xs in zip(*iterables)]`` on every core, in order."""
    return default_pool().map(fn, *iterables, chunksize=chunksize, timeout=timeout,
                              retries=retries)


def imap(fn: Callable[[T], R], iterable: Iterable[T], *, ordered: bool = True,
         chunksize: ChunkSize = "auto", timeout: float | None = None,
         retries: int | None = None) -> Iterator[R]:
    """Lazily yield ``fn(x)`` for each ``x`` on every core; see :meth:`Pool.imap`."""
    return default_pool().imap(fn, iterable, ordered=ordered, chunksize=chunksize,
                               timeout=timeout, retries=retries)


def submit(fn: Callable[..., R], /, *args: Any, **kwargs: Any) -> Future[R]:
    """Run ``fn(*args, **kwargs)`` in the shared pool; a ``concurrent.futures.Future``."""
    return default_pool().submit(fn, *args, **kwargs)


def _usable(pool: Pool) -> bool:
    return not pool._is_shut_down and pool.backend.statistics() is not None
