"""Adaptive chunk sizing: batch tiny calls, keep big ones alone, balance the tail.

A process pool pays a fixed cost per message (pickling, two pipe hops, a wake-up). For a call
that takes a microsecond that cost is hundreds of times the work, so calls travel in chunks.
The size follows what was measured: the first chunks hold one call each (a call may take an
hour), then each new chunk is sized so that it runs for about ``target`` seconds, growing at
most ``growth`` times per step because a first measurement can be noise. When the input's
length is known, chunks shrink towards the end so that every worker finishes at about the same
time instead of one running a large last chunk while the others idle.

A pool remembers what each function's calls cost (:class:`CallCosts`), so the next map of the
same function starts at the size the last one ended with instead of climbing from one call
again: a program that maps a cheap function many times pays the climb once.
"""

from __future__ import annotations

import itertools
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any

TARGET_SECONDS = 0.025
TAIL_FLOOR_SECONDS = 0.002
GROWTH = 8
WINDOW_PER_WORKER = 2  # chunks in flight per worker: one running, one ready to go


def window(workers: int) -> int:
    """How many chunks a map keeps in flight or waiting to be yielded, for ``workers``
    workers: enough that none waits for its next chunk, few enough to bound memory."""
    return workers * WINDOW_PER_WORKER + 1


class CallCosts:
    """What the calls of the last functions a pool mapped cost: ``(calls, seconds)`` each."""

    REMEMBERED = 64  # functions; the oldest is forgotten first

    def __init__(self) -> None:
        self._costs: OrderedDict[object, tuple[int, float]] = OrderedDict()

    def get(self, key: object) -> tuple[int, float] | None:
        return self._costs.get(key)

    def put(self, key: object, calls: int, seconds: float) -> None:
        self._costs[key] = (calls, seconds)
        self._costs.move_to_end(key)
        if len(self._costs) > self.REMEMBERED:
            self._costs.popitem(last=False)


class ChunkSizer:
    """Chooses the size of the next chunk from the calls measured so far."""

    def __init__(self, workers: int | Callable[[], int], total: int | None, *,
                 fixed: int | None = None, limit: int | None = None,
                 costs: CallCosts | None = None, key: object = None) -> None:
        # a callable when the backend's width may change during the map ("auto")
        self._workers = workers if callable(workers) else (lambda: workers)
        self._remaining = total
        self._fixed = fixed
        self._limit = limit  # e.g. max_tasks_per_worker: a chunk cannot outlive its worker
        self._calls = 0
        self._seconds = 0.0
        self._largest = 1
        self._costs, self._key = costs, key
        known = None if costs is None else costs.get(key)
        if known is not None:  # measured by an earlier map: start where it ended
            # ... weighed as one call, so this map's first chunk outweighs it at once
            per_call = max(known[1] / known[0], 1e-8)
            self._calls, self._seconds = 1, per_call
            self._largest = max(1, int(TARGET_SECONDS / per_call) // GROWTH)

    def next_size(self) -> int:
        """The size of the next chunk to send."""
        size = self._fixed or self._adaptive_size()
        if self._limit is not None:
            size = min(size, self._limit)
        if self._remaining is not None:
            size = max(1, min(size, self._remaining))
            self._remaining -= size
        self._largest = max(self._largest, size)
        return size

    def record(self, calls: int, seconds: float) -> None:
        """Learn from a finished chunk of ``calls`` calls that ran for ``seconds``."""
        self._calls += calls
        self._seconds += seconds
        if self._costs is not None:
            self._costs.put(self._key, self._calls, self._seconds)

    def _adaptive_size(self) -> int:
        if not self._calls:
            return 1
        per_call = max(self._seconds / self._calls, 1e-8)
        size = min(int(TARGET_SECONDS / per_call), self._largest * GROWTH)
        workers = self._workers()
        if self._remaining is not None and workers > 1:  # leave each worker two chunks of the rest
            size = min(size, -(-self._remaining // (2 * workers)))
            # ... but the tail never splits below a few milliseconds of work a chunk: each
            # chunk costs a round trip (about 0.2 ms to a worker process, 15-30 ms on Dask).
            size = max(size, min(round(TAIL_FLOOR_SECONDS / per_call), self._largest * GROWTH))
        return max(1, size)


def chunks(items: Iterable[Any], sizer: ChunkSizer) -> Iterator[Sequence[Any]]:
    """Cut ``items`` into chunks as they are needed, each as large as ``sizer`` says.

    A ``range``, list, tuple or numpy array is sliced, so a chunk of a range pickles as three
    numbers; anything else is consumed lazily, never read ahead of the chunks requested.
    """
    if isinstance(items, (range, list, tuple)) or _is_array(items):
        sequence: Sequence[Any] = items  # type: ignore[assignment]
        start = 0
        while start < len(sequence):
            size = sizer.next_size()
            yield sequence[start:start + size]
            start += size
        return
    iterator = iter(items)
    while chunk := list(itertools.islice(iterator, sizer.next_size())):
        yield chunk


def known_length(items: Iterable[Any]) -> int | None:
    """The number of items when it is known without consuming them."""
    if isinstance(items, (range, list, tuple)) or _is_array(items):
        return len(items)  # type: ignore[arg-type]
    return None


def _is_array(items: object) -> bool:
    return type(items).__module__ == "numpy" and type(items).__name__ == "ndarray"
