"""The "asyncio" backend: coroutines on one loop under a concurrency limit."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Coroutine
from concurrent.futures import CancelledError
from typing import Any

import pytest
from tasks import sleep_then

import manybrains as mb

_running = {"now": 0, "peak": 0}


async def counted_sleep(seconds: float) -> int:
    _running["now"] += 1
    _running["peak"] = max(_running["peak"], _running["now"])
    try:
        await asyncio.sleep(seconds)
    finally:
        _running["now"] -= 1
    return _running["peak"]


def test_concurrency_limit_bounds_the_coroutines_in_flight():
    _running.update(now=0, peak=0)
    with mb.Pool(backend="asyncio", concurrency=7) as pool:
        started = time.monotonic()
        pool.map(counted_sleep, [0.05] * 70)
        elapsed = time.monotonic() - started
    assert _running["peak"] == 7
    assert elapsed >= 0.45  # 70 calls, 7 at a time, 50 ms each: ten rounds


def test_default_concurrency_is_100():
    _running.update(now=0, peak=0)
    with mb.Pool(backend="asyncio") as pool:
        pool.map(counted_sleep, [0.02] * 300)
        assert pool.statistics().concurrency == 100
    assert _running["peak"] == 100


def _sleeper() -> tuple[Callable[[], Coroutine[Any, Any, None]], threading.Event]:
    """A coroutine function that sleeps 5 s, and the event it sets when it is cancelled."""
    cancelled = threading.Event()

    async def slow() -> None:
        try:
            await asyncio.sleep(5)
        except asyncio.CancelledError:
            cancelled.set()
            raise

    return slow, cancelled


def test_timeout_cancels_the_coroutine_itself():
    slow, cancelled = _sleeper()
    with mb.Pool(backend="asyncio") as pool:
        with pytest.raises(TimeoutError):
            pool.submit(slow, timeout=0.05).result(timeout=5)
        assert cancelled.wait(2)
        assert pool.statistics().timed_out == 1


def test_future_cancel_cancels_a_running_coroutine():
    slow, cancelled = _sleeper()
    with mb.Pool(backend="asyncio") as pool:
        future = pool.submit(slow)
        time.sleep(0.05)
        assert future.cancel()
        assert cancelled.wait(2)
        with pytest.raises(CancelledError):
            future.result()


def test_blocking_functions_run_beside_the_loop_so_coroutines_keep_going():
    with mb.Pool(2, backend="asyncio") as pool:
        blocking = pool.submit(sleep_then, 0.5, "slept")
        started = time.monotonic()
        assert pool.submit(counted_sleep, 0.01).result(timeout=5) >= 1
        assert time.monotonic() - started < 0.3
        assert blocking.result(timeout=5) == "slept"


def test_a_coroutine_initializer_runs_on_the_loop_before_tasks():
    state: dict[str, object] = {}

    async def init(value: str) -> None:
        await asyncio.sleep(0)
        state["loop"] = asyncio.get_running_loop()
        state["value"] = value

    async def read() -> tuple[object, bool]:
        return state["value"], asyncio.get_running_loop() is state["loop"]

    with mb.Pool(backend="asyncio", initializer=init, initargs=("ready",)) as pool:
        assert pool.submit(read).result(timeout=5) == ("ready", True)


def test_statistics_show_the_loop_busy_while_tasks_run():
    with mb.Pool(backend="asyncio") as pool:
        pool.map(counted_sleep, [0.1] * 10)
        stats = pool.statistics()
    (loop,) = stats.workers
    assert 0.09 <= loop.busy_s < 1.0
    assert stats.done >= 1 and stats.in_flight == 0
