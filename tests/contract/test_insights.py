"""pool.insights(): per-worker counters, task-time statistics, the slowest tasks."""

from __future__ import annotations

import json

import pytest
from tasks import add, sleep_then, square

import manybrains as mb
from manybrains._timings import TaskTimings


@pytest.fixture
def backend() -> str:
    """conftest's ``pool`` here is a process pool: the backend that measures every task."""
    return "processes"


def test_process_pool_measures_every_task_and_names_the_slowest(pool):
    delays = [0.3] + [0.01] * 9
    pool.starmap(sleep_then, zip(delays, range(10), strict=True), 1)
    insights = pool.insights()
    assert insights.backend == "processes"
    assert insights.tasks == 10
    assert insights.max_s >= 0.3
    assert insights.p50_s < 0.1 <= insights.max_s
    assert len(insights.slowest) == 5
    slowest = insights.slowest[0]
    assert slowest.seconds >= 0.3
    assert "0.3" in slowest.arguments and "sleep_then" in slowest.label
    assert [s.seconds for s in insights.slowest] == sorted(
        (s.seconds for s in insights.slowest), reverse=True)


def test_workers_account_for_the_tasks_and_their_pickling(pool):
    pool.map(square, range(40), chunksize=4)
    workers = pool.insights().workers
    assert len(workers) == 2
    assert sum(w.tasks for w in workers) == 10
    assert all(w.serialize_s is not None and w.serialize_s >= 0 for w in workers)
    assert all(w.busy_s >= 0 and w.idle_s >= 0 for w in workers)


def echo(data: bytes) -> bytes:
    return data


def test_pickling_seconds_are_measured_not_zero(pool):
    # 64 MB in and out of each task: unpickling and pickling take milliseconds.
    blob = bytes(64 << 20)
    for _ in range(2):
        assert len(pool.submit(echo, blob).result(timeout=30)) == len(blob)
    pickling = sum(w.serialize_s or 0 for w in pool.insights().workers)
    assert pickling > 0.002, pool.insights()


def test_submit_arguments_are_described_keywords_included(pool):
    pool.submit(add, 2, y="x" * 500).exception(timeout=10)  # a TypeError: str + int
    pool.submit(sleep_then, 0.2, "slow").result(timeout=10)
    slowest = pool.insights().slowest
    assert slowest[0].arguments == "(0.2, 'slow')"
    described = slowest[1].arguments
    assert described.startswith("(2, y='xxx") and len(described) < 80  # shortened


def test_table_is_printable(pool):
    pool.map(square, range(10), chunksize=1)
    table = str(pool.insights())
    assert "manybrains insights: processes, 2 workers" in table
    assert "pickling s" in table and "pid" in table
    assert "task times (10 tasks)" in table and "slowest tasks:" in table


def test_insights_convert_to_plain_data(pool):
    pool.map(square, range(10), chunksize=1)
    data = json.loads(json.dumps(pool.insights().as_dict()))
    assert data["tasks"] == 10 and len(data["slowest"]) == 5


def test_threads_report_their_workers_without_task_times():
    with mb.Pool(2, backend="threads") as pool:
        pool.map(square, range(100), chunksize=10)
        insights = pool.insights()
    assert insights.tasks == 0
    assert sum(w.tasks for w in insights.workers) == 10
    assert all(w.serialize_s is None for w in insights.workers)
    assert "not measured on this backend" in str(insights)


def test_timings_keep_a_bounded_sample_and_exact_extremes():
    timings = TaskTimings(sample_size=100)
    for i in range(1, 1001):
        timings.record(i / 1000, f"task {i}", None)
    assert timings.count == 1000
    assert timings.max_s == 1.0
    assert len(timings.sample()) == 100
    assert [s.label for s in timings.slowest()] == [f"task {i}" for i in range(1000, 995, -1)]
