"""Stream a function over an iterable through any backend, a bounded window at a time.

The caller's thread cuts the next chunk only when one finishes, so a 10-million-item
generator is read as the work goes and memory stays bounded: at most ``window`` chunks are in
flight or waiting to be yielded in order. Chunk sizes adapt from each finished chunk's timing.
"""

from __future__ import annotations

import functools
import queue
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future
from typing import Any

from ._chunking import ChunkSizer, chunks
from ._task import ChunkOutcome

SubmitChunk = Callable[[Sequence[Any]], "Future[ChunkOutcome]"]
Abort = Callable[["list[Future[ChunkOutcome]]", bool], None]


def stream(items: Iterable[Any], sizer: ChunkSizer, submit: SubmitChunk, abort: Abort, *,
           window: int, ordered: bool) -> Iterator[Any]:
    """Yield the results of every chunk, in input order or as chunks finish.

    On an early exit the chunks still in flight are handed to ``abort``, with ``kill=True``
    when the exit is a KeyboardInterrupt (or another BaseException): then the work must stop
    now, not run on in the background.
    """
    finished: queue.SimpleQueue[int] = queue.SimpleQueue()
    inflight: dict[int, Future[ChunkOutcome]] = {}
    buffered: dict[int, ChunkOutcome] = {}
    source = chunks(items, sizer)
    submitted = emitted = 0
    exhausted = False
    try:
        while True:
            while not exhausted and len(inflight) + len(buffered) < window:
                chunk = next(source, None)
                if chunk is None:
                    exhausted = True
                    break
                future = inflight[submitted] = submit(chunk)
                future.add_done_callback(functools.partial(_report, finished, submitted))
                submitted += 1
            if ordered and emitted in buffered:
                yield from _emit(buffered.pop(emitted))
                emitted += 1
                continue
            if not inflight:
                return
            seq = finished.get()
            outcome = inflight.pop(seq).result()  # raises what failed the whole chunk
            sizer.record(len(outcome.values) + (outcome.error is not None), outcome.elapsed)
            if ordered:
                buffered[seq] = outcome
            else:
                yield from _emit(outcome)
    except GeneratorExit:
        abort(list(inflight.values()), False)
        raise
    except Exception:
        abort(list(inflight.values()), False)
        raise
    except BaseException:
        abort(list(inflight.values()), True)
        raise


def _report(finished: queue.SimpleQueue[int], seq: int, _: object) -> None:
    finished.put(seq)


def _emit(outcome: ChunkOutcome) -> Iterator[Any]:
    yield from outcome.values
    if outcome.error is not None:
        raise outcome.error
