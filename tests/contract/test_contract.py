"""The behaviour every backend promises, run on each backend the registry knows (conftest's
``backend`` fixture; Dask on the session's cluster).

What a backend cannot do at all is in conftest's ``CANNOT`` table, and a test needing it says
``@pytest.mark.needs(...)``. A test that checks more where a backend can asks
``can(backend, ability)`` of the same table: tests ask what a backend does, never its name.
"""

from __future__ import annotations

import asyncio
import os
import time
from concurrent.futures import CancelledError, Future

import pytest
from conftest import can
from tasks import (
    add,
    async_double,
    async_fail_on,
    async_heartbeat,
    async_sleep_then,
    crash,
    crash_once,
    fail_on,
    fresh_token,
    heartbeat,
    recall,
    refuse,
    remember,
    sleep_then,
    square,
)

import manybrains as mb
from manybrains.progress import ProgressSnapshot

# ---- results and ordering ---------------------------------------------------------------


def test_map_keeps_input_order(pool):
    delays = [0.15, 0.0, 0.1, 0.0]
    assert pool.starmap(sleep_then, zip(delays, range(4), strict=True), 1) == [0, 1, 2, 3]


def test_map_is_exact_over_many_items_with_any_chunking(pool):
    assert pool.map(square, range(5000)) == [x * x for x in range(5000)]
    assert pool.map(square, range(100), chunksize=7) == [x * x for x in range(100)]


def test_imap_yields_in_input_order(pool):
    assert list(pool.imap(square, iter(range(300)))) == [x * x for x in range(300)]


def test_imap_unordered_yields_every_result_once(pool):
    results = list(pool.imap(square, iter(range(200)), ordered=False))
    assert sorted(results) == [x * x for x in range(200)]


def test_imap_unordered_yields_a_fast_result_before_a_slow_earlier_one(pool, backend):
    task = sleep_then if can(backend, "block_beside_others") else async_sleep_then
    items = [(0.6, "slow"), (0.0, "a"), (0.0, "b"), (0.0, "c")]
    got = list(pool.istarmap(task, items, ordered=False, chunksize=1))
    assert sorted(got) == ["a", "b", "c", "slow"]
    if not can(backend, "run_beside_the_caller"):
        assert got[0] == "slow"  # each task ran to completion inside submit, in order
    else:  # on Dask a fast one may queue behind the slow one on its worker: not all need pass
        assert got[0] != "slow", got


def test_map_over_a_numpy_array_gives_what_a_loop_gives_with_the_same_types(pool):
    np = pytest.importorskip("numpy")
    items = np.arange(3000, dtype=np.int32)
    wanted = [square(x) for x in items]
    got = pool.map(square, items)
    assert got == wanted and {type(v) for v in got} == {type(v) for v in wanted}


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
    task = sleep_then if can(backend, "block_beside_others") else async_sleep_then
    start = time.monotonic()
    assert pool.starmap(task, [(0.2, i) for i in range(6)], 1, timeout=0.45) == list(range(6))
    if can(backend, "run_at_most_workers"):  # else all six may run at once
        assert time.monotonic() - start > 0.45  # the map as a whole outlived the timeout


def test_cancel_of_a_finished_task_says_false(pool):
    future = pool.submit(square, 3)
    assert future.result(timeout=10) == 9
    assert pool.cancel(future) is False
    assert future.result() == 9


@pytest.mark.needs("cancel_running")
def test_cancel_stops_waiting_for_a_running_task(pool):
    future = pool.submit(sleep_then, 0.8)
    time.sleep(0.1)  # let it start
    started = time.monotonic()
    assert pool.cancel(future) is True
    with pytest.raises(CancelledError):
        future.result(timeout=10)
    assert time.monotonic() - started < 0.5
    assert pool.submit(square, 6).result(timeout=10) == 36


# ---- lifecycle --------------------------------------------------------------------------


def test_shutdown_waits_for_submitted_work_and_is_idempotent(make_pool):
    pool = make_pool(2)
    futures = [pool.submit(sleep_then, 0.05, i) for i in range(4)]
    pool.shutdown(wait=True)
    assert [f.result(timeout=0) for f in futures] == [0, 1, 2, 3]
    pool.shutdown(wait=True)
    pool.shutdown(wait=False)


@pytest.mark.needs("cancel_running")
def test_terminate_returns_at_once_and_cancels_running_work(make_pool, backend):
    task = sleep_then if can(backend, "block_beside_others") else async_sleep_then
    pool = make_pool(1)
    running = pool.submit(task, 1.0)
    time.sleep(0.2)  # let it start
    started = time.monotonic()
    pool.terminate()
    assert time.monotonic() - started < 0.8
    with pytest.raises(CancelledError):
        running.result(timeout=5)


def test_terminate_after_shutdown_does_nothing(make_pool):
    pool = make_pool(1)
    assert pool.submit(square, 2).result(timeout=30) == 4
    pool.shutdown(wait=True)
    pool.terminate()
    pool.shutdown(wait=True)


def test_submit_after_shutdown_raises_pool_closed(make_pool):
    pool = make_pool(1)
    pool.shutdown()
    with pytest.raises(mb.PoolClosed, match="shut down"):
        pool.submit(square, 1)
    with pytest.raises(mb.PoolClosed):
        pool.map(square, [1])


@pytest.mark.needs("queue")
def test_shutdown_cancel_futures_cancels_what_has_not_started(make_pool, backend, tmp_path):
    # on asyncio a coroutine waits for a slot of the concurrency limit: that is its queue
    task, beat = ((sleep_then, heartbeat) if can(backend, "block_beside_others")
                  else (async_sleep_then, async_heartbeat))
    pool = make_pool(1, concurrency=1)
    marker = tmp_path / "running"
    running = pool.submit(beat, str(marker), 0.3)
    deadline = time.monotonic() + 30  # a Dask worker may still be busy with an earlier test's
    while not marker.exists():  # task that nobody could stop
        assert time.monotonic() < deadline, "the first task never started"
        time.sleep(0.01)
    queued = [pool.submit(task, 0.3) for _ in range(4)]
    pool.shutdown(wait=True, cancel_futures=True)
    assert not running.cancelled() and running.result(timeout=0) is None
    # a pool on a cluster's address uses all of it: its second worker starts one
    started = [f for f in queued if not f.cancelled()]
    assert len(started) <= (0 if can(backend, "use_only_its_workers") else 1), started
    assert all(f.result(timeout=0) is None for f in started)


def test_context_manager_shuts_down(make_pool):
    with make_pool(1) as pool:
        assert pool.submit(square, 2).result(timeout=10) == 4
    with pytest.raises(mb.PoolClosed):
        pool.submit(square, 2)


# ---- what every backend promises beyond results: initializer, statistics, progress --------


def test_initializer_runs_before_tasks_and_they_see_the_globals_it_set(make_pool):
    token = fresh_token()  # a value no earlier test can have left in tasks' globals
    with make_pool(2, initializer=remember, initargs=(token,)) as pool:
        assert pool.map(recall, range(8), chunksize=1) == [token] * 8
        assert pool.submit(recall).result(timeout=30) == token


def test_a_failing_initializer_raises_initializer_failed_with_its_cause(make_pool):
    failures: list[mb.InitializerFailed] = []
    try:
        pool = make_pool(1, initializer=refuse, initargs=("no model",))
    except mb.InitializerFailed as failed:  # Dask runs it on every worker as the pool starts
        failures.append(failed)
    else:  # the others, in each worker before its first task
        with pool:
            for _ in range(2):  # and the pool stays broken: no task runs after it
                with pytest.raises(mb.InitializerFailed) as info:
                    pool.submit(square, 2).result(timeout=30)
                failures.append(info.value)
    for failed in failures:
        assert "initializer failed" in str(failed) and "no model" in str(failed), failed
        assert isinstance(failed.__cause__, RuntimeError), failed.__cause__


def test_statistics_count_tasks_as_they_finish_and_fail(pool, backend):
    before = pool.statistics()
    assert isinstance(before, mb.Statistics) and before.backend == backend
    assert (before.submitted, before.done, before.failed) == (0, 0, 0)
    pool.map(square, range(20), chunksize=5)  # four tasks: a chunk counts once
    after_map = pool.statistics()
    assert after_map.done == after_map.submitted == 4, after_map
    with pytest.raises(ValueError):
        pool.submit(fail_on, 3).result(timeout=10)
    stats = pool.statistics()
    assert (stats.submitted, stats.done, stats.failed) == (5, 4, 1), stats
    assert (stats.in_flight, stats.retried, stats.crashed, stats.timed_out) == (0, 0, 0, 0)


def test_statistics_list_the_workers_and_what_each_did(pool, backend):
    pool.map(square, range(40), chunksize=5)
    stats = pool.statistics()
    assert stats.workers and all(isinstance(w, mb.WorkerStats) for w in stats.workers)
    assert sum(w.tasks for w in stats.workers) == 8, stats.workers
    for worker in stats.workers:
        assert worker.name and worker.busy_s >= 0 and worker.idle_s >= 0
        assert worker.in_flight == 0
    pids = [w.pid for w in stats.workers if w.pid is not None]
    assert os.getpid() not in pids  # a pid is a worker process's, never the caller's
    if can(backend, "report_worker_pids"):  # each row says which process it is
        assert len(pids) == len(stats.workers) and set(pids) <= set(pool.backend.worker_pids())


def test_statistics_count_a_timed_out_task(pool):
    with pytest.raises(TimeoutError):
        pool.submit(sleep_then, 0.5, timeout=0.05).result(timeout=10)
    assert pool.statistics().timed_out == 1


@pytest.mark.needs("crash")
def test_statistics_count_a_crash_and_the_retry_that_followed(pool, tmp_path):
    with pytest.raises(mb.WorkerCrashed):
        pool.submit(crash).result(timeout=60)
    assert pool.submit(crash_once, str(tmp_path / "once"), retries=1).result(timeout=60) == \
        "second try"
    stats = pool.statistics()
    assert (stats.crashed, stats.retried, stats.done) == (2, 1, 1), stats
    assert pool.map(square, range(4)) == [0, 1, 4, 9]  # the pool goes on


def test_progress_callback_sees_every_item_move_forward(pool):
    snapshots: list[ProgressSnapshot] = []
    assert pool.map(square, range(500), chunksize=50, progress=snapshots.append) == \
        [x * x for x in range(500)]
    done = [s.done for s in snapshots]
    assert done == sorted(done) and len(set(done)) > 2  # chunk by chunk, not once at the end
    assert snapshots[-1] == ProgressSnapshot(500, 0, 500, snapshots[-1].elapsed, True)


def test_progress_counts_a_failed_item_and_finishes(pool):
    snapshots: list[ProgressSnapshot] = []
    with pytest.raises(ValueError):
        pool.map(fail_on, range(6), chunksize=1, progress=snapshots.append)
    assert snapshots[-1].failed == 1 and snapshots[-1].finished


# ---- the awaitable API ------------------------------------------------------------------


def test_awaitable_twins_give_the_same_results(make_pool):
    async def main() -> tuple[list[int], int, list[int]]:
        async with make_pool(2) as pool:
            mapped = await pool.amap(square, range(50))
            one = await pool.asubmit(add, 1, 2)
            unordered = [r async for r in pool.aimap(square, range(30), ordered=False)]
            return mapped, one, sorted(unordered)

    mapped, one, unordered = asyncio.run(main())
    assert mapped == [x * x for x in range(50)]
    assert one == 3
    assert unordered == [x * x for x in range(30)]


def test_awaitable_errors_keep_their_type(make_pool):
    async def main() -> None:
        async with make_pool(2) as pool:
            with pytest.raises(ValueError):
                await pool.asubmit(fail_on, 3)
            with pytest.raises(ValueError):
                await pool.amap(fail_on, range(10))

    asyncio.run(main())


# ---- bad input --------------------------------------------------------------------------


@pytest.mark.parametrize(("call", "error", "match"), [
    (lambda p: p.map(5, [1]), TypeError, "expected a callable"),
    (lambda p: p.submit("not callable"), TypeError, "expected a callable"),
    (lambda p: p.map(square, 5), TypeError, "expected an iterable"),
    (lambda p: p.imap(square, 5), TypeError, "expected an iterable"),
    (lambda p: p.map(square), TypeError, "missing 1 required positional argument: 'iterable'"),
    (lambda p: p.map(square, [1], chunksize=0), ValueError, "chunksize must be >= 1"),
    (lambda p: p.map(square, [1], chunksize="big"), TypeError, "chunksize must be an int"),
    (lambda p: p.map(square, [1], timeout=-1), ValueError, "timeout"),
])
def test_bad_arguments_raise_clear_errors_and_the_pool_goes_on(pool, call, error, match):
    with pytest.raises(error, match=match):
        call(pool)
    assert pool.map(square, [4]) == [16]


def test_unknown_backend_names_the_available_ones():
    with pytest.raises(mb.BackendNotFound, match="'threads'"):
        mb.Pool(backend="no-such-backend")
