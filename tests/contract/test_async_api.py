"""The awaitable API: usable inside a running event loop without blocking it."""

from __future__ import annotations

import asyncio
import os
import time

import pytest
from tasks import sleep_then, square

import manybrains as mb

_loop_state = {"now": 0, "peak": 0}


async def ticker(stop: asyncio.Event) -> int:
    ticks = 0
    while not stop.is_set():
        await asyncio.sleep(0.01)
        ticks += 1
    return ticks


@pytest.mark.needs("run_beside_the_caller")
def test_amap_leaves_the_loop_free_to_run_other_coroutines(make_pool):
    async def main() -> tuple[list[object], int]:
        stop = asyncio.Event()
        ticks = asyncio.ensure_future(ticker(stop))
        async with make_pool(2) as pool:
            results = await pool.amap(sleep_then, [0.1] * 4, range(4))
        stop.set()
        return results, await ticks

    results, ticks = asyncio.run(main())
    assert results == [0, 1, 2, 3]
    assert ticks >= 5  # 0.2 s or more of work, a tick every 10 ms


def test_aimap_unordered_yields_in_completion_order():
    async def main() -> list[object]:
        async with mb.Pool(3, backend="threads") as pool:
            return [r async for r in pool.aimap(lambda d: sleep_then(d, d), [0.3, 0.0, 0.15],
                                                ordered=False, chunksize=1)]

    assert asyncio.run(main()) == [0.0, 0.15, 0.3]


def test_asubmit_accepts_options_and_keyword_arguments():
    async def main() -> object:
        async with mb.Pool(1, backend="threads") as pool:
            with pytest.raises(TimeoutError):
                await pool.asubmit(sleep_then, 0.5, timeout=0.05)
            return await pool.asubmit(sleep_then, 0, value="kw")

    assert asyncio.run(main()) == "kw"


def test_cancelling_the_awaiting_task_cancels_queued_work():
    pool = mb.Pool(1, backend="threads")

    async def main() -> None:
        task = asyncio.ensure_future(pool.amap(sleep_then, [0.2] * 20, chunksize=1))
        await asyncio.sleep(0.05)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    try:
        asyncio.run(main())
        started = time.monotonic()
        pool.shutdown(wait=True)
        assert time.monotonic() - started < 1.0  # not the 20 x 0.2 s still queued
    finally:
        pool.terminate()


def test_async_with_shuts_the_pool_down():
    async def main() -> mb.Pool:
        async with mb.Pool(1, backend="processes") as pool:
            assert await pool.asubmit(square, 7) == 49
        return pool

    pool = asyncio.run(main())
    with pytest.raises(mb.PoolClosed):
        pool.submit(square, 1)


# ---- coroutine functions in worker processes ------------------------------------------------


async def pid_and_peak(seconds: float) -> tuple[int, int]:
    _loop_state["now"] += 1
    _loop_state["peak"] = max(_loop_state["peak"], _loop_state["now"])
    await asyncio.sleep(seconds)
    _loop_state["now"] -= 1
    return os.getpid(), _loop_state["peak"]


def test_each_worker_process_keeps_many_coroutines_in_flight():
    with mb.Pool(2, backend="processes", concurrency=500) as pool:
        results = pool.map(pid_and_peak, [0.05] * 2000)
    pids = {pid for pid, _ in results}
    assert len(pids) == 2 and os.getpid() not in pids
    assert max(peak for _, peak in results) == 500  # chunks of 500, all awaited at once


def test_coroutines_on_processes_respect_the_concurrency_limit():
    with mb.Pool(1, backend="processes", concurrency=3) as pool:
        results = pool.map(pid_and_peak, [0.01] * 30)
    assert max(peak for _, peak in results) == 3
