"""``AsyncResult``: what ``Pool.apply_async``, ``map_async`` and ``starmap_async`` return.

The ``multiprocessing.pool.AsyncResult`` contract over a ``concurrent.futures.Future``:
``get(timeout)`` raises ``multiprocessing.TimeoutError`` while the result is not ready,
``callback``/``error_callback`` run once, in an engine thread, *before* ``ready()`` turns
true and ``wait()``/``get()`` return (so code that waits and then reads what a callback
stored sees it). As in ``multiprocessing``, a callback should return quickly: the thread
that runs it delivers the pool's other results too.
"""

from __future__ import annotations

import multiprocessing
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import CancelledError, Future
from typing import Any, Generic, TypeVar

from ._errors import as_encoding_error
from ._future import set_exception, set_result
from ._task import ChunkOutcome

R = TypeVar("R")


class AsyncResult(Generic[R]):
    """The eventual result of one ``apply_async`` (or of a whole ``map_async``)."""

    def __init__(self, future: Future[R], callback: Callable[[R], object] | None = None,
                 error_callback: Callable[[BaseException], object] | None = None,
                 parts: Sequence[Future[Any]] | None = None) -> None:
        self._future = future
        # the backend's futures this result waits for (a map's chunks), to stop them
        self.parts: Sequence[Future[Any]] = (future,) if parts is None else parts
        self._callback = callback
        self._error_callback = error_callback
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._lock = threading.Lock()
        self._decided = False  # settled, or abandoned: whichever came first holds
        future.add_done_callback(self._settle)

    @property
    def future(self) -> Future[R]:
        """The ``concurrent.futures.Future`` behind it, for ``wait``/``as_completed``."""
        return self._future

    def get(self, timeout: float | None = None) -> R:
        """The result, or the task's exception raised; ``multiprocessing.TimeoutError``
        if it is not ready within ``timeout`` seconds."""
        if not self._ready.wait(timeout):
            raise multiprocessing.TimeoutError(f"the result was not ready within {timeout} s")
        if self._error is not None:
            raise self._error
        return self._future.result()

    def wait(self, timeout: float | None = None) -> None:
        """Block until the result is ready or ``timeout`` seconds pass."""
        self._ready.wait(timeout)

    def ready(self) -> bool:
        """Whether the call has finished (and its callback has run)."""
        return self._ready.is_set()

    def successful(self) -> bool:
        """Whether the call returned without raising; ``ValueError`` if it is not ready."""
        if not self._ready.is_set():
            raise ValueError(f"{self!r} is not ready yet: wait() for it first")
        return not self._future.cancelled() and self._future.exception() is None

    def abandon(self, error: BaseException) -> bool:
        """Fail with ``error`` unless already settled; no callback runs (the pool that would
        have run the call was stopped). Whether it was still pending."""
        with self._lock:
            if self._decided:
                return False
            self._decided = True
        self._callback = self._error_callback = None
        self._error = error
        self._ready.set()
        return True

    def _settle(self, future: Future[R]) -> None:
        with self._lock:
            if self._decided:  # abandoned: the pool was stopped before the call finished
                return
            self._decided = True
        callback, error_callback = self._callback, self._error_callback
        self._callback = self._error_callback = None  # the pool keeps no reference to them
        try:
            error = CancelledError() if future.cancelled() else future.exception()
            # an unpicklable result is also multiprocessing's MaybeEncodingError
            error = self._error = None if error is None else as_encoding_error(error)
            if error is None:
                if callback is not None:
                    callback(future.result())
            elif error_callback is not None:
                error_callback(error)
        finally:  # a raising callback is logged by the future; the result is still ready
            self._ready.set()

    def __repr__(self) -> str:
        state = "ready" if self._ready.is_set() else "pending"
        return f"<manybrains.AsyncResult {state}>"


def failed(error: BaseException) -> Future[Any]:
    """A future that has already failed with ``error``."""
    future: Future[Any] = Future()
    future.set_exception(error)
    return future


def gather(chunks: Sequence[Future[ChunkOutcome]]) -> Future[list[Any]]:
    """One future for a whole map: every chunk's results in input order.

    The first failure (a call that raised, a chunk that failed) fails it at once, as
    ``multiprocessing``'s ``map_async`` does; the other chunks still run to their end.
    """
    whole: Future[list[Any]] = Future()
    if not chunks:
        whole.set_result([])
        return whole
    outcomes: list[ChunkOutcome | None] = [None] * len(chunks)
    left = [len(chunks)]
    lock = threading.Lock()

    def on_chunk(index: int, chunk: Future[ChunkOutcome]) -> None:
        if whole.done():
            return
        error = _error_of(chunk)
        if error is not None:
            set_exception(whole, error)
            return
        with lock:
            outcomes[index] = chunk.result()
            left[0] -= 1
            complete = left[0] == 0
        if complete:
            set_result(whole, [value for outcome in outcomes if outcome is not None
                               for value in outcome.values])

    for index, chunk in enumerate(chunks):
        chunk.add_done_callback(lambda f, i=index: on_chunk(i, f))  # type: ignore[misc]
    return whole


def _error_of(chunk: Future[ChunkOutcome]) -> BaseException | None:
    if chunk.cancelled():
        return CancelledError()
    error = chunk.exception()
    return error if error is not None else chunk.result().error
