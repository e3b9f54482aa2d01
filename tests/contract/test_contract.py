"""The behaviour every backend promises, run on each backend the registry can load.

A backend-specific difference is spelled out where a test branches on ``INLINE`` (the
caller runs each task during ``submit``, so nothing is ever queued or running afterwards).
"""

from __future__ import annotations

import asyncio
import time
from concurrent.futures import CancelledError, Future

import pytest
from tasks import add, fail_on, sleep_then, square

import manybrains as mb
from manybrains.backends import available_backends

BACKENDS = [name for name in available_backends() if name != "dask"]  # dask has its own suite
INLINE = "inline"


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def pool(backend):
    with mb.Pool(2, backend=backend) as p:
        yield p


async def async_double(x: int) -> int:
    await asyncio.sleep(0.001)
    return 2 * x


async def async_sleep_then(seconds: float, value: object = None) -> object:
    await asyncio.sleep(seconds)
    return value


async def async_fail_on(x: int, bad: int = 3) -> int:
    await asyncio.sleep(0)
    if x == bad:
        raise KeyError(x)
    return x


# ---- results and ordering ---------------------------------------------------------------


def test_map_keeps_input_order(pool):
    delays = [0.15, 0.0, 0.1, 0.0]
    assert pool.map(sleep_then, delays, range(4), chunksize=1) == [0, 1, 2, 3]


def test_map_is_exact_over_many_items_with_any_chunking(pool):
    assert pool.map(square, range(5000)) == [x * x for x in range(5000)]
    assert pool.map(square, range(100), chunksize=7) == [x * x for x in range(100)]


def test_imap_unordered_yields_every_result_once(pool):
    results = list(pool.imap(square, iter(range(200)), ordered=False))
    assert sorted(results) == [x * x for x in range(200)]


def test_imap_unordered_yields_a_fast_result_before_a_slow_earlier_one(pool, backend):
    task = async_sleep_then if backend == "asyncio" else sleep_then
    items = [(0.6, "slow"), (0.0, "a"), (0.0, "b"), (0.0, "c")]
    got = list(pool.istarmap(task, items, ordered=False, chunksize=1))
    assert sorted(got) == ["a", "b", "c", "slow"]
    if backend == INLINE:
        assert got[0] == "slow"  # each task ran to completion inside submit, in order
    else:
        assert got[-1] == "slow", got


def test_starmap_and_several_iterables(pool):
    assert pool.starmap(add, [(1, 2), (3, 4)]) == [3, 7]
    assert pool.map(add, [1, 2, 3], [10, 20, 30]) == [11, 22, 33]


def test_submit_returns_a_stdlib_future_with_keyword_arguments(pool):
    future = pool.submit(add, 2, y=3)
    assert isinstance(future, Future)
    assert future.result(timeout=10) == 5


def test_empty_input_gives_empty_output(pool):
    assert pool.map(square, []) == []
    assert list(pool.imap(square, iter([]))) == []


def test_coroutine_functions_are_awaited(pool):
    assert pool.map(async_double, range(300)) == [2 * x for x in range(300)]
    assert pool.submit(async_double, 21).result(timeout=10) == 42


# ---- exceptions -------------------------------------------------------------------------


def test_exception_keeps_its_type_and_the_pool_goes_on(pool):
    with pytest.raises(ValueError, match="bad input 3"):
        pool.submit(fail_on, 3).result(timeout=10)
    with pytest.raises(ValueError, match="bad input 3"):
        pool.map(fail_on, range(10))
    assert pool.map(square, range(3)) == [0, 1, 4]


def test_imap_yields_results_before_the_failure_then_raises(pool):
    seen = []
    with pytest.raises(ValueError):
        for value in pool.imap(fail_on, range(10), chunksize=4):
            seen.append(value)
    assert seen == [0, 1, 2]


def test_coroutine_exception_keeps_its_type_and_stops_at_the_first_failing_item(pool):
    seen = []
    with pytest.raises(KeyError):
        for value in pool.imap(async_fail_on, range(10), chunksize=10):
            seen.append(value)
    assert seen == [0, 1, 2]


# ---- timeouts and cancellation ----------------------------------------------------------


def test_task_past_its_timeout_raises_timeout_error_and_the_pool_goes_on(pool, backend):
    future = pool.submit(sleep_then, 0.6, "late", timeout=0.1)
    with pytest.raises(TimeoutError):
        future.result(timeout=10)
    assert pool.submit(square, 4).result(timeout=10) == 16


def test_map_timeout_applies_to_each_task(pool):
    with pytest.raises(TimeoutError):
        pool.map(sleep_then, [0.0, 0.6], timeout=0.1)
    assert pool.map(square, [5], timeout=5) == [25]


def test_map_timeout_is_per_task_not_for_the_whole_map(pool, backend):
    # Six 0.2 s tasks two at a time take 0.6 s or more, each well within its 0.45 s.
    task = async_sleep_then if backend == "asyncio" else sleep_then
    start = time.monotonic()
    assert pool.map(task, [0.2] * 6, range(6), chunksize=1, timeout=0.45) == list(range(6))
    if backend in ("processes", "threads", INLINE):  # auto and asyncio run all six at once
        assert time.monotonic() - start > 0.45  # the map as a whole outlived the timeout


def test_cancel_of_a_finished_task_says_false(pool):
    future = pool.submit(square, 3)
    assert future.result(timeout=10) == 9
    assert pool.cancel(future) is False
    assert future.result() == 9


def test_cancel_stops_waiting_for_a_running_task(pool, backend):
    if backend == INLINE:
        pytest.skip("inline runs each task to completion inside submit")
    future = pool.submit(sleep_then, 0.8)
    time.sleep(0.1)  # let it start
    started = time.monotonic()
    assert pool.cancel(future) is True
    with pytest.raises(CancelledError):
        future.result(timeout=10)
    assert time.monotonic() - started < 0.5
    assert pool.submit(square, 6).result(timeout=10) == 36


# ---- lifecycle --------------------------------------------------------------------------


def test_shutdown_waits_for_submitted_work_and_is_idempotent(backend):
    pool = mb.Pool(2, backend=backend)
    futures = [pool.submit(sleep_then, 0.05, i) for i in range(4)]
    pool.shutdown(wait=True)
    assert [f.result(timeout=0) for f in futures] == [0, 1, 2, 3]
    pool.shutdown(wait=True)
    pool.shutdown(wait=False)


def test_submit_after_shutdown_raises_pool_closed(backend):
    pool = mb.Pool(1, backend=backend)
    pool.shutdown()
    with pytest.raises(mb.PoolClosed):
        pool.submit(square, 1)
    with pytest.raises(mb.PoolClosed):
        pool.map(square, [1])


def test_shutdown_cancel_futures_cancels_what_has_not_started(backend):
    if backend == INLINE:
        pytest.skip("inline has nothing queued: every task ran inside submit")
    if backend == "auto":
        pytest.skip("auto runs up to 256 waiting calls at once: these would not queue")
    # on asyncio a coroutine waits for a slot of the concurrency limit: that is its queue
    task = async_sleep_then if backend == "asyncio" else sleep_then
    pool = mb.Pool(1, backend=backend, concurrency=1)
    running = pool.submit(task, 0.3, "ran")
    time.sleep(0.1)
    queued = [pool.submit(task, 0.3) for _ in range(3)]
    pool.shutdown(wait=True, cancel_futures=True)
    assert running.result(timeout=0) == "ran"
    assert all(f.cancelled() for f in queued)


def test_context_manager_shuts_down(backend):
    with mb.Pool(1, backend=backend) as pool:
        assert pool.submit(square, 2).result(timeout=10) == 4
    with pytest.raises(mb.PoolClosed):
        pool.submit(square, 2)


def test_statistics_count_tasks_and_describe_workers(pool, backend):
    pool.map(square, range(20), chunksize=5)
    with pytest.raises(ValueError):
        pool.submit(fail_on, 3).result(timeout=10)
    stats = pool.statistics()
    assert stats["backend"] == backend
    assert stats["done"] >= 4
    assert stats["failed"] >= 1
    assert stats["in_flight"] == 0
    assert stats["retried"] == 0
    assert stats["workers"]
    for worker in stats["workers"]:
        assert worker["busy_s"] >= 0 and worker["idle_s"] >= 0


# ---- the awaitable API ------------------------------------------------------------------


def test_awaitable_twins_give_the_same_results(backend):
    async def main() -> tuple[list[int], int, list[int]]:
        async with mb.Pool(2, backend=backend) as pool:
            mapped = await pool.amap(square, range(50))
            one = await pool.asubmit(add, 1, 2)
            unordered = [r async for r in pool.aimap(square, range(30), ordered=False)]
            return mapped, one, sorted(unordered)

    mapped, one, unordered = asyncio.run(main())
    assert mapped == [x * x for x in range(50)]
    assert one == 3
    assert unordered == [x * x for x in range(30)]


def test_awaitable_errors_keep_their_type(backend):
    async def main() -> None:
        async with mb.Pool(2, backend=backend) as pool:
            with pytest.raises(ValueError):
                await pool.asubmit(fail_on, 3)
            with pytest.raises(ValueError):
                await pool.amap(fail_on, range(10))

    asyncio.run(main())


# ---- bad input --------------------------------------------------------------------------


@pytest.mark.parametrize(("call", "error"), [
    (lambda p: p.map(5, [1]), TypeError),
    (lambda p: p.map(square, 5), TypeError),
    (lambda p: p.map(square), TypeError),
    (lambda p: p.map(square, [1], chunksize=0), ValueError),
    (lambda p: p.map(square, [1], timeout=-1), ValueError),
    (lambda p: p.submit("not callable"), TypeError),
])
def test_bad_arguments_raise_clear_errors(pool, call, error):
    with pytest.raises(error):
        call(pool)


def test_unknown_backend_names_the_available_ones():
    with pytest.raises(mb.BackendNotFound, match="'threads'"):
        mb.Pool(backend="no-such-backend")
