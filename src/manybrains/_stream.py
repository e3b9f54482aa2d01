"""Stream a function over an iterable through any backend, a bounded window at a time.

The consumer cuts the next chunk only when one finishes, so a 10-million-item generator is
read as the work goes and memory stays bounded: at most ``window()`` chunks are in flight or
waiting to be yielded in order. Chunk sizes adapt from each finished chunk's timing, and the
window is asked again at every step because ``"auto"`` widens it once it knows the work.

:func:`stream` drives the window from a thread (blocking); :func:`astream` from a coroutine,
so an event loop keeps running while chunks are in flight. Both share :class:`_Flow`.
"""

from __future__ import annotations

import contextlib
import functools
import queue
from collections.abc import AsyncIterator, Callable, Generator, Iterable, Iterator, Sequence
from concurrent.futures import Future
from typing import Any

from ._chunking import ChunkSizer, chunks
from ._errors import SerializationError, as_encoding_error
from ._task import ChunkOutcome
from .progress import NO_PROGRESS, Tracker

SubmitChunk = Callable[[Sequence[Any]], "Future[ChunkOutcome]"]
Abort = Callable[["list[Future[ChunkOutcome]]", bool], None]
Notify = Callable[[int], Callable[["Future[ChunkOutcome]"], None]]


class _Flow:
    """The chunks of one stream: submitted, in flight, and finished but not yet yielded."""

    def __init__(self, items: Iterable[Any], sizer: ChunkSizer, submit: SubmitChunk,
                 window: Callable[[], int], ordered: bool, notify: Notify,
                 progress: Tracker = NO_PROGRESS) -> None:
        self._source = chunks(items, sizer)
        self._progress = progress
        self._sizer = sizer
        self._submit = submit
        self._window = window
        self._ordered = ordered
        self._notify = notify  # notify(seq) -> a done-callback that reports chunk seq
        self.inflight: dict[int, Future[ChunkOutcome]] = {}
        self._buffered: dict[int, ChunkOutcome] = {}
        self._submitted = self._emitted = 0
        self._exhausted = False

    def fill(self) -> None:
        """Submit chunks until the window is full or the input ends."""
        while not self._exhausted and len(self.inflight) + len(self._buffered) < self._window():
            try:
                chunk = next(self._source, None)
            except Exception as exc:  # noqa: BLE001 - the input's own error, raised in its place
                self._exhausted = True
                self._add(_failed_input(exc))
                return
            if chunk is None:
                self._exhausted = True
                return
            self._add(self._submit(chunk))

    def _add(self, future: Future[ChunkOutcome]) -> None:
        self.inflight[self._submitted] = future
        future.add_done_callback(self._notify(self._submitted))
        self._submitted += 1

    def next_in_order(self) -> ChunkOutcome | None:
        """The next chunk to yield in input order, when it has already finished."""
        if not self._ordered or self._emitted not in self._buffered:
            return None
        self._emitted += 1
        return self._buffered.pop(self._emitted - 1)

    def settle(self, seq: int) -> ChunkOutcome | None:
        """Chunk ``seq`` finished: its outcome to yield now, or None if it must wait its turn."""
        try:
            outcome = self.inflight.pop(seq).result()  # raises what failed the whole chunk
        except SerializationError as error:  # a result that could not be pickled back
            raise as_encoding_error(error) from error.__cause__
        if not isinstance(outcome, _InputError):  # no call ran: nothing to learn or count
            self._sizer.record(len(outcome.values) + (outcome.error is not None),
                               outcome.elapsed)
            self._progress.chunk_done(outcome)  # as chunks finish, not as they are yielded
        if self._ordered:
            self._buffered[seq] = outcome
            return None
        return outcome

    def pending(self) -> list[Future[ChunkOutcome]]:
        return list(self.inflight.values())


def stream(items: Iterable[Any], sizer: ChunkSizer, submit: SubmitChunk, abort: Abort, *,
           window: Callable[[], int], ordered: bool, progress: Tracker = NO_PROGRESS
           ) -> Iterator[Any]:
    """Yield the results of every chunk, in input order or as chunks finish."""
    for outcome in stream_chunks(items, sizer, submit, abort, window=window, ordered=ordered,
                                 progress=progress):
        yield from _emit(outcome)


def collect(outcomes: Generator[ChunkOutcome, None, None]) -> list[Any]:
    """Every result in a list, a chunk at a time (no per-item generator step: a map of a
    cheap function would spend more time yielding than computing)."""
    results: list[Any] | None = None
    with contextlib.closing(outcomes):  # on an error, chunks in flight are aborted now
        for outcome in outcomes:
            if results is None:
                results = outcome.values  # a chunk's own list: one copy fewer
            else:
                results.extend(outcome.values)
            if outcome.error is not None:
                raise outcome.error
    return [] if results is None else results


def stream_chunks(items: Iterable[Any], sizer: ChunkSizer, submit: SubmitChunk, abort: Abort,
                  *, window: Callable[[], int], ordered: bool,
                  progress: Tracker = NO_PROGRESS) -> Generator[ChunkOutcome, None, None]:
    """Yield every chunk's outcome, in input order or as chunks finish.

    On an early exit the chunks still in flight are handed to ``abort``, with ``kill=True``
    when the exit is a KeyboardInterrupt (or another BaseException): then the work must stop
    now, not run on in the background.
    """
    finished: queue.SimpleQueue[int] = queue.SimpleQueue()
    flow = _Flow(items, sizer, submit, window, ordered,
                 lambda seq: functools.partial(_report, finished.put, seq), progress)
    with progress:  # closed on every exit, showing the error that ended the stream
        try:
            while True:
                flow.fill()
                outcome = flow.next_in_order()
                if outcome is None:
                    if not flow.inflight:
                        return
                    outcome = flow.settle(finished.get())
                if outcome is not None:
                    yield outcome
        except (GeneratorExit, Exception):
            abort(flow.pending(), False)
            raise
        except BaseException:
            abort(flow.pending(), True)
            raise


async def astream(items: Iterable[Any], sizer: ChunkSizer, submit: SubmitChunk, abort: Abort,
                  *, window: Callable[[], int], ordered: bool,
                  progress: Tracker = NO_PROGRESS) -> AsyncIterator[Any]:
    """:func:`stream` for a coroutine: waiting for chunks never blocks the event loop.

    A cancelled consumer cancels the chunks not yet started; running ones finish.
    """
    import asyncio

    loop = asyncio.get_running_loop()
    finished: asyncio.Queue[int] = asyncio.Queue()

    def notify(seq: int) -> Callable[[Future[ChunkOutcome]], None]:
        def report(_: Future[ChunkOutcome]) -> None:
            loop.call_soon_threadsafe(finished.put_nowait, seq)
        return report

    flow = _Flow(items, sizer, submit, window, ordered, notify, progress)
    with progress:
        try:
            while True:
                flow.fill()
                outcome = flow.next_in_order()
                if outcome is None:
                    if not flow.inflight:
                        return
                    outcome = flow.settle(await finished.get())
                if outcome is not None:
                    for value in _emit(outcome):
                        yield value
        except (GeneratorExit, asyncio.CancelledError, Exception):
            abort(flow.pending(), False)
            raise
        except BaseException:
            abort(flow.pending(), True)
            raise


class _InputError(ChunkOutcome):
    """The input iterable raised while the next chunk was cut from it."""


def _failed_input(exc: Exception) -> Future[ChunkOutcome]:
    # Like the builtin map, and multiprocessing's imap: the results of the items before the
    # failing one come first, then its error, in its place in the output.
    future: Future[ChunkOutcome] = Future()
    future.set_result(_InputError([], exc))
    return future


def _report(put: Callable[[int], None], seq: int, _: object) -> None:
    put(seq)


def _emit(outcome: ChunkOutcome) -> Iterator[Any]:
    yield from outcome.values
    if outcome.error is not None:
        raise outcome.error
