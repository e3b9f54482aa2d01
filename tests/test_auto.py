"""The "auto" backend and the advisor: measured choices, explained."""

from __future__ import annotations

import asyncio
import os
import time

import pytest
from tasks import square

import manybrains as mb
from manybrains.advisor import classify


def waits(x: int) -> int:
    time.sleep(0.02)
    return x


def computes(x: int) -> tuple[int, int]:
    deadline = time.thread_time() + 0.03
    while time.thread_time() < deadline:
        pass
    return x, os.getpid()


async def awaits(x: int) -> int:
    await asyncio.sleep(0.01)
    return x


def choice(pool: mb.Pool, name: str) -> dict[str, object]:
    (found,) = [c for c in pool.statistics()["choices"] if c["function"] == name]
    return found


@pytest.fixture
def pool():
    with mb.Pool(2, backend="auto") as p:
        yield p


def test_waiting_work_goes_to_threads_all_at_once(pool):
    started = time.monotonic()
    assert pool.map(waits, range(100)) == list(range(100))
    elapsed = time.monotonic() - started
    made = choice(pool, "waits")
    assert made["backend"] == "threads"
    assert "mostly waiting" in made["why"]
    assert elapsed < 1.0  # one at a time would take 2 s


def test_cpu_bound_work_goes_to_worker_processes(pool):
    results = pool.map(computes, range(6))
    assert [x for x, _ in results] == list(range(6))
    made = choice(pool, "computes")
    assert made["backend"] == "processes"
    assert "CPU-bound" in made["why"]
    assert {pid for _, pid in results[1:]} - {os.getpid()}  # the probe ran here, the rest not


def test_cheap_calls_run_inline(pool):
    assert pool.map(square, range(10_000)) == [x * x for x in range(10_000)]
    made = choice(pool, "square")
    assert made["backend"] == "inline"
    assert made["calls_measured"] == 10_000


def test_coroutine_functions_go_to_the_event_loop(pool):
    assert pool.map(awaits, range(50)) == list(range(50))
    assert choice(pool, "awaits")["backend"] == "asyncio"


def test_the_decision_is_remembered_across_maps(pool):
    pool.map(waits, range(4))
    pool.map(waits, range(4))
    made = choice(pool, "waits")
    assert made["calls_measured"] == 8
    assert made["history"] == []


def test_the_choice_changes_as_measurements_settle(pool):
    def slow_first(x: int) -> int:
        if x == 0:
            time.sleep(0.05)  # the probe sees a waiting call
        return x

    assert pool.map(slow_first, range(5000)) == list(range(5000))
    made = choice(pool, "test_the_choice_changes_as_measurements_settle.<locals>.slow_first")
    assert made["backend"] == "inline"
    assert made["history"] == ["was threads until 1 calls"] or made["history"][0].startswith(
        "was threads")


def test_a_timeout_keeps_cheap_calls_off_the_caller(pool):
    pool.map(square, range(10))  # decided: inline
    assert pool.map(square, range(10), timeout=5) == [x * x for x in range(10)]
    assert pool.statistics()["engines"]["threads"]["done"] >= 10


def test_statistics_aggregate_the_engines(pool):
    pool.map(waits, range(3))
    pool.map(square, range(3))
    stats = pool.statistics()
    assert stats["backend"] == "auto"
    assert stats["done"] == sum(e["done"] for e in stats["engines"].values())
    assert {w["backend"] for w in stats["workers"]} >= {"threads", "inline"}


def test_module_level_functions_default_to_auto_and_pool_to_processes():
    assert mb.map(square, range(5)) == [0, 1, 4, 9, 16]
    assert mb.default_pool().backend.name == "auto"
    assert mb.submit(square, 3).result(timeout=10) == 9
    assert list(mb.imap(square, range(3), backend="threads")) == [0, 1, 4]
    with mb.Pool(1) as pool:
        assert pool.backend.name == "processes"


# ---- the rule -----------------------------------------------------------------------------


@pytest.mark.parametrize(("args", "kwargs", "backend"), [
    ((0.05, 0.01), {}, "threads"),
    ((0.05, 0.99), {}, "processes"),
    ((1e-7, 1.0), {}, "inline"),
    ((0.05, 0.99), {"gil": False}, "threads"),
    ((0.0, 0.0), {"coroutine": True}, "asyncio"),
    ((1e-4, 1.0), {"seen_seconds": 0.01}, "inline"),  # short calls, little work seen so far
    ((1e-4, 1.0), {"seen_seconds": 0.5}, "processes"),
    ((1e-4, 1.0), {"seen_seconds": 0.0, "startup": 0.0}, "processes"),  # processes run already
])
def test_classify(args, kwargs, backend):
    assert classify(*args, workers=2, **kwargs).backend == backend


def test_waiting_width_follows_the_cpu_fraction():
    assert classify(0.05, 0.0, workers=2).width == 256
    assert classify(0.05, 0.25, workers=2).width == 8


# ---- advise -------------------------------------------------------------------------------


def test_advise_measures_and_explains():
    advice = mb.advise(waits, 1)
    assert advice.recommendation == "threads"
    assert advice.cpu_fraction < 0.5
    assert 0.015 < advice.seconds_per_call < 0.2
    text = str(advice)
    assert "recommendation: backend='threads'" in text
    assert "processes" in text and "inline" in text
    assert advice.for_items(10).estimates["inline"] < advice.estimates["inline"]


def test_advise_recommends_processes_for_computation_and_asyncio_for_coroutines():
    assert mb.advise(computes, 1).recommendation == "processes"
    advice = mb.advise(awaits, 1)
    assert advice.recommendation == "asyncio"
    assert "asyncio" in advice.estimates


def test_cpu_bound_function_that_cannot_be_pickled_runs_on_threads():
    import threading

    guard = threading.Lock()  # a closure over a lock cannot travel to a worker process

    def compute(x):
        with guard:
            pass
        return sum(range(200_000)) + x

    expected = [sum(range(200_000)) + x for x in range(100)]
    with mb.Pool(backend="auto") as pool:
        # Calls of a millisecond or more, 200 in all: together far more than starting worker
        # processes, so processes get chosen, pickling fails, and threads take over.
        assert pool.map(compute, range(100)) == expected
        assert pool.map(compute, range(100)) == expected
        choice = pool.statistics()["choices"][0]
    assert choice["backend"] == "threads"
    assert "cannot be pickled" in choice["why"]
