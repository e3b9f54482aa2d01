"""Map over submit: the one stream that Pool, ProcessPoolExecutor.map and the map command
share, driven here over a thread pool so that chunks finish in an order the test chooses."""

from __future__ import annotations

import asyncio
import concurrent.futures as cf
import time
from collections.abc import Iterator, Sequence
from typing import Any

import pytest

from manybrains._chunking import ChunkSizer
from manybrains._stream import (
    Plan,
    ResultIterator,
    astream,
    canceller,
    in_its_place,
    stream_chunks,
    stream_submitted,
    unbounded,
)
from manybrains._task import ChunkOutcome


def slow_for_low(x: int) -> int:
    time.sleep(0.04 * max(0, 5 - x))  # the first items finish last
    return x * 10


def run(chunk: Sequence[int]) -> ChunkOutcome:
    start = time.perf_counter()
    values = [slow_for_low(x) for x in chunk]
    return ChunkOutcome(values, None, time.perf_counter() - start)


class Backend:
    """A thread pool that runs chunks, and remembers what it was sent."""

    def __init__(self, workers: int = 8) -> None:
        self.executor = cf.ThreadPoolExecutor(workers)
        self.sent: list[list[int]] = []

    def submit(self, chunk: Sequence[int]) -> cf.Future[ChunkOutcome]:
        self.sent.append(list(chunk))
        return self.executor.submit(run, chunk)

    def plan(self, window: int = 9, **seams: Any) -> Plan:
        return Plan(ChunkSizer(1, None, fixed=1), self.submit, lambda: window,
                    canceller(None), **seams)

    def close(self) -> None:
        self.executor.shutdown(wait=True, cancel_futures=True)


@pytest.fixture
def threads() -> Iterator[Backend]:
    backend = Backend()
    yield backend
    backend.close()


def sync_results(items: Any, plan: Plan, ordered: bool) -> list[Any]:
    return list(ResultIterator(items, plan, ordered=ordered))


def async_results(items: Any, plan: Plan, ordered: bool) -> list[Any]:
    async def main() -> list[Any]:
        return [value async for value in astream(items, plan, ordered=ordered)]
    return asyncio.run(main())


DRIVERS = [sync_results, async_results]


@pytest.mark.parametrize("results", DRIVERS, ids=["sync", "async"])
def test_ordered_results_come_in_input_order_though_chunks_finish_in_reverse(threads, results):
    assert results(range(8), threads.plan(), True) == [x * 10 for x in range(8)]


@pytest.mark.parametrize("results", DRIVERS, ids=["sync", "async"])
def test_unordered_results_come_as_chunks_finish(threads, results):
    got = results(range(6), threads.plan(), False)
    assert sorted(got) == [x * 10 for x in range(6)]
    assert got.index(50) < got.index(0)  # item 0's chunk runs longest: it comes after


@pytest.mark.parametrize("results", DRIVERS, ids=["sync", "async"])
def test_the_input_is_read_no_further_than_the_window(threads, results):
    read: list[int] = []

    def items() -> Iterator[int]:
        for x in range(40):
            read.append(x)
            yield x

    results_ = ResultIterator(items(), threads.plan(window=3), ordered=True)
    assert next(results_) == 0
    assert len(read) == 3  # three chunks in flight or waiting to be yielded, no more
    assert next(results_) == 10
    assert len(read) == 4  # the first was yielded: one more was cut
    results_.close()
    assert results(range(40), threads.plan(window=3), True) == [x * 10 for x in range(40)]


@pytest.mark.parametrize("results", DRIVERS, ids=["sync", "async"])
def test_a_failed_chunk_is_replaced_by_what_the_failure_hook_returns(threads, results):
    def submit(chunk: Sequence[int]) -> cf.Future[ChunkOutcome]:
        if 3 in chunk:
            future: cf.Future[ChunkOutcome] = cf.Future()
            future.set_exception(OSError("the worker died"))
            return future
        return threads.submit(chunk)

    def again_alone(chunk: Sequence[int], error: Exception) -> ChunkOutcome:
        return ChunkOutcome([f"{chunk[0]} failed: {error}"])

    plan = Plan(ChunkSizer(1, None, fixed=1), submit, lambda: 9, canceller(None),
                on_failure=again_alone)
    assert results(range(5), plan, True) == [0, 10, 20, "3 failed: the worker died", 40]


def test_without_a_hook_a_failed_chunk_ends_the_stream_and_cancels_the_rest(threads):
    def submit(chunk: Sequence[int]) -> cf.Future[ChunkOutcome]:
        if chunk[0] == 0:
            future: cf.Future[ChunkOutcome] = cf.Future()
            future.set_exception(OSError("the worker died"))
            return future
        return cf.Future()  # never starts: only a cancel ends it

    left: list[cf.Future[ChunkOutcome]] = []
    plan = Plan(ChunkSizer(1, None, fixed=1), submit, lambda: 4,
                lambda futures, kill: left.extend(f for f in futures if f.cancel()))
    with pytest.raises(OSError, match="the worker died"):
        list(ResultIterator(range(10), plan, ordered=True))
    assert len(left) == 3 and all(f.cancelled() for f in left)


def test_in_its_place_raises_a_failed_chunk_after_the_results_before_it(threads):
    def submit(chunk: Sequence[int]) -> cf.Future[ChunkOutcome]:
        if 2 in chunk:
            future: cf.Future[ChunkOutcome] = cf.Future()
            future.set_exception(OSError("cannot pickle item 2"))
            return future
        return threads.submit(chunk)

    plan = Plan(ChunkSizer(1, None, fixed=1), submit, unbounded, canceller(None),
                on_failure=in_its_place)
    results = stream_submitted(range(5), plan)
    assert [next(results), next(results)] == [0, 10]  # item 2 failed first, raised third
    with pytest.raises(OSError, match="cannot pickle"):
        next(results)


def test_the_deadline_bounds_the_whole_iteration_and_cancels_what_has_not_started():
    futures: list[cf.Future[ChunkOutcome]] = []

    def submit(chunk: Sequence[int]) -> cf.Future[ChunkOutcome]:
        future: cf.Future[ChunkOutcome] = cf.Future()
        if chunk[0] < 2:
            future.set_result(ChunkOutcome(list(chunk)))
        futures.append(future)
        return future

    plan = Plan(ChunkSizer(1, None, fixed=1), submit, unbounded, canceller(None),
                deadline=time.monotonic() + 0.2)
    results = stream_submitted(range(4), plan)
    assert len(futures) == 4  # every chunk was submitted before the first result
    start = time.monotonic()
    assert [next(results), next(results)] == [0, 1]
    with pytest.raises(cf.TimeoutError):
        next(results)
    assert 0.1 < time.monotonic() - start < 2
    assert [f.cancelled() for f in futures] == [False, False, True, True]


def test_async_deadline_raises_timeout_error():
    def submit(chunk: Sequence[int]) -> cf.Future[ChunkOutcome]:
        return cf.Future()  # never finishes

    plan = Plan(ChunkSizer(1, None, fixed=1), submit, lambda: 2, canceller(None),
                deadline=time.monotonic() + 0.1)

    async def main() -> None:
        async for _ in astream(range(3), plan, ordered=True):
            pass

    with pytest.raises(cf.TimeoutError):  # as the sync driver (distinct before Python 3.11)
        asyncio.run(main())


def test_chunk_outcomes_carry_each_chunks_values(threads):
    plan = Plan(ChunkSizer(1, None, fixed=3), threads.submit, lambda: 9, canceller(None))
    outcomes = list(stream_chunks(range(7), plan, ordered=True))
    assert [o.values for o in outcomes] == [[0, 10, 20], [30, 40, 50], [60]]
    assert threads.sent == [[0, 1, 2], [3, 4, 5], [6]]
