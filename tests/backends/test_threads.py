"""The "threads" backend: shared memory, threads on demand, abandoned-and-replaced timeouts."""

from __future__ import annotations

import threading
import time
from concurrent.futures import CancelledError

import pytest
from tasks import sleep_then

import manybrains as mb


def thread_name(_: object = None) -> str:
    time.sleep(0.02)
    return threading.current_thread().name


def test_tasks_share_the_callers_memory():
    seen: list[int] = []
    with mb.Pool(4, backend="threads") as pool:
        pool.map(seen.append, range(100))
    assert sorted(seen) == list(range(100))


def test_threads_start_on_demand_up_to_workers():
    with mb.Pool(8, backend="threads") as pool:
        pool.submit(sleep_then, 0).result(timeout=10)
        assert pool.statistics().workers_started == 1
        names = set(pool.map(thread_name, range(40), chunksize=1))
    assert 1 < len(names) <= 8
    assert threading.current_thread().name not in names


def test_default_width_suits_waiting_work():
    with mb.Pool(backend="threads") as pool:
        assert pool.workers == min(32, mb.usable_cpus() + 4)


def test_timeout_abandons_the_thread_and_a_new_one_takes_its_place():
    with mb.Pool(1, backend="threads") as pool:
        late = pool.submit(sleep_then, 1.0, timeout=0.1)
        queued = pool.submit(sleep_then, 0, "next")
        started = time.monotonic()
        with pytest.raises(TimeoutError, match="abandoned"):
            late.result(timeout=5)
        # the only worker is still sleeping, yet the queued task runs on its replacement
        assert queued.result(timeout=5) == "next"
        assert time.monotonic() - started < 0.8
        stats = pool.statistics()
    assert stats.timed_out == 1
    assert stats.workers_started == 2


def test_cancel_of_a_running_task_frees_its_slot():
    with mb.Pool(1, backend="threads") as pool:
        running = pool.submit(sleep_then, 1.0)
        time.sleep(0.05)
        assert pool.cancel(running)
        with pytest.raises(CancelledError):
            running.result(timeout=1)
        assert pool.submit(sleep_then, 0, "free").result(timeout=0.8) == "free"
        assert pool.statistics().workers_started == 2  # the cancelled call's thread was replaced


def test_initializer_runs_once_in_each_thread():
    local = threading.local()
    calls: list[str] = []

    def init(tag: str) -> None:
        local.tag = tag
        calls.append(threading.current_thread().name)

    with mb.Pool(3, backend="threads", initializer=init, initargs=("ready",)) as pool:
        tags = pool.map(lambda _: (time.sleep(0.02), local.tag)[1], range(12), chunksize=1)
    assert tags == ["ready"] * 12
    assert len(calls) == len(set(calls)) <= 3


def test_max_tasks_per_worker_replaces_threads():
    with mb.Pool(1, backend="threads", max_tasks_per_worker=2) as pool:
        names = [pool.submit(thread_name).result(timeout=5) for _ in range(6)]
    assert len(set(names)) == 3


def test_statistics_report_busy_time_per_thread():
    with mb.Pool(2, backend="threads") as pool:
        pool.map(sleep_then, [0.1, 0.1], chunksize=1)
        workers = pool.statistics().workers
    assert len(workers) == 2
    assert all(w.busy_s >= 0.09 and w.tasks == 1 for w in workers)
