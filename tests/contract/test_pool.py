"""manybrains.Pool on the process engine: results, laziness, errors, lifecycle, bad input."""

from __future__ import annotations

import itertools
import os
import threading
import time
from concurrent.futures import CancelledError, Future

import pytest
from tasks import add, count_calls, fail_on, pid_of, recall, remember, sleep_then, square

import manybrains as mb


@pytest.fixture
def pool():
    with mb.Pool(2) as p:
        yield p


# ---- results -------------------------------------------------------------------------------


def test_map_keeps_input_order_even_when_later_items_finish_first(pool):
    delays = [0.2, 0.0, 0.1, 0.0]
    assert pool.map(sleep_then, delays, range(4), chunksize=1) == [0, 1, 2, 3]


def test_map_over_many_tiny_tasks_is_exact(pool):
    n = 100_000
    assert pool.map(square, range(n)) == [x * x for x in range(n)]


def test_auto_chunking_batches_tiny_tasks(pool):
    pool.map(square, range(50_000))
    stats = pool.statistics()
    # One message per call would be 50,000 tasks; adaptive chunks need a few dozen.
    assert stats["done"] < 500


def test_explicit_chunksize_is_obeyed(pool):
    pool.map(square, range(100), chunksize=10)
    assert pool.statistics()["done"] == 10


def test_map_with_several_iterables_zips_them(pool):
    assert pool.map(add, [1, 2, 3], [10, 20, 30]) == [11, 22, 33]


def test_starmap_unpacks_argument_tuples(pool):
    assert pool.starmap(add, [(1, 2), (3, 4)]) == [3, 7]


def test_work_runs_in_other_processes_on_every_worker(pool):
    pids = set(pool.map(pid_of_after_sleep, range(4), chunksize=1))
    assert os.getpid() not in pids
    assert len(pids) == 2


def pid_of_after_sleep(_: int) -> int:
    time.sleep(0.2)
    return os.getpid()


def test_submit_returns_a_stdlib_future(pool):
    future = pool.submit(add, 2, y=3)
    assert isinstance(future, Future)
    assert future.result(timeout=10) == 5


def test_map_of_empty_input_is_empty(pool):
    assert pool.map(square, []) == []
    assert list(pool.imap(square, iter([]))) == []


# ---- imap ------------------------------------------------------------------------------------


def test_imap_ordered_yields_in_input_order(pool):
    assert list(pool.imap(square, range(1000))) == [x * x for x in range(1000)]


def test_imap_unordered_yields_as_results_arrive(pool):
    delays = [0.6, 0.0, 0.0, 0.0]
    results = list(pool.imap(sleep_then, delays, ordered=False, chunksize=1))
    assert sorted(results, key=str) == sorted([None] * 4, key=str)
    got = list(pool.istarmap(sleep_then, [(d, i) for i, d in enumerate(delays)],
                             ordered=False, chunksize=1))
    assert sorted(got) == [0, 1, 2, 3]
    assert got[-1] == 0  # the slow first item comes last


def test_imap_reads_its_input_lazily(pool):
    consumed = itertools.count()

    def source():
        for i in range(10_000_000):
            next(consumed)
            yield i

    results = pool.imap(square, source())
    assert [next(results) for _ in range(5)] == [0, 1, 4, 9, 16]
    read = next(consumed)
    assert read < 100_000, f"imap read {read} items ahead for 5 results"
    results.close()


def test_imap_of_an_endless_generator_stops_when_the_consumer_does(pool):
    for i, value in enumerate(pool.imap(square, itertools.count())):
        if i == 2000:
            assert value == 2000 * 2000
            break


# ---- callables that need cloudpickle --------------------------------------------------------


def test_lambdas_closures_and_local_functions_under_every_start_method(start_method):
    offset = 10

    def local(x):
        return x + offset

    with mb.Pool(2, start_method=start_method) as p:
        assert p.map(lambda x: x * 2, [1, 2]) == [2, 4]
        assert p.map(local, [1, 2]) == [11, 12]
        assert p.submit(lambda: offset).result(timeout=30) == 10


# ---- errors ------------------------------------------------------------------------------------


def test_task_exception_keeps_its_type_and_carries_the_worker_traceback(pool):
    future = pool.submit(fail_on, 3)
    with pytest.raises(ValueError, match="bad input 3") as info:
        future.result(timeout=10)
    cause = info.value.__cause__
    assert isinstance(cause, mb.RemoteTraceback)
    assert "fail_on" in str(cause) and 'raise ValueError(f"bad input {x}")' in str(cause)


def test_map_raises_the_first_failing_item_and_the_pool_goes_on(pool):
    with pytest.raises(ValueError, match="bad input 3"):
        pool.map(fail_on, range(10))
    assert pool.map(square, [3]) == [9]


def test_imap_yields_results_before_a_failure_then_raises(pool):
    results = pool.imap(fail_on, range(10), chunksize=2)
    assert [next(results) for _ in range(3)] == [0, 1, 2]
    with pytest.raises(ValueError):
        next(results)


def test_unpicklable_argument_raises_at_submit_naming_it(pool):
    lock = threading.Lock()
    with pytest.raises(mb.SerializationError, match="positional argument 1") as info:
        pool.submit(add, 1, lock)
    assert "lock" in str(info.value)
    assert pool.submit(add, 1, 2).result(timeout=10) == 3


def test_unpicklable_result_fails_only_that_task(pool):
    with pytest.raises(mb.SerializationError, match="cannot pickle the result"):
        pool.submit(threading.Lock).result(timeout=10)
    assert pool.submit(add, 1, 2).result(timeout=10) == 3


# ---- workers -----------------------------------------------------------------------------------


def test_initializer_runs_once_in_each_worker_before_tasks():
    with mb.Pool(2, initializer=remember, initargs=("ready",)) as p:
        assert p.map(recall, range(20), chunksize=1) == ["ready"] * 20


def test_max_tasks_per_worker_replaces_workers():
    with mb.Pool(1, max_tasks_per_worker=3) as p:
        counts = [p.submit(count_calls).result(timeout=30) for _ in range(7)]
        pids = {p.submit(pid_of).result(timeout=30) for _ in range(4)}
    assert counts == [1, 2, 3, 1, 2, 3, 1]
    assert len(pids) == 2


def test_default_worker_count_is_the_usable_cpus():
    with mb.Pool() as p:
        assert p.workers == mb.usable_cpus() == len(os.sched_getaffinity(0))


# ---- lifecycle ---------------------------------------------------------------------------------


def test_shutdown_waits_for_queued_work_and_is_idempotent():
    p = mb.Pool(2)
    futures = [p.submit(sleep_then, 0.05, i) for i in range(6)]
    p.shutdown(wait=True)
    assert [f.result(timeout=0) for f in futures] == list(range(6))
    p.shutdown()
    p.shutdown(wait=False)


def test_submit_after_shutdown_raises_pool_closed():
    p = mb.Pool(1)
    p.shutdown()
    with pytest.raises(mb.PoolClosed, match="shut down"):
        p.submit(square, 2)
    with pytest.raises(RuntimeError):
        p.map(square, [1])


def test_shutdown_cancel_futures_cancels_what_has_not_started():
    p = mb.Pool(1)
    running = p.submit(sleep_then, 0.5, "done")
    queued = [p.submit(square, i) for i in range(5)]
    time.sleep(0.2)
    p.shutdown(wait=True, cancel_futures=True)
    assert running.result(timeout=0) == "done"
    assert all(f.cancelled() for f in queued)


def test_terminate_stops_running_work_now():
    p = mb.Pool(1)
    running = p.submit(sleep_then, 30)
    time.sleep(0.3)
    start = time.monotonic()
    p.terminate()
    assert time.monotonic() - start < 5
    with pytest.raises(CancelledError):
        running.result(timeout=5)


def test_context_manager_shuts_down():
    with mb.Pool(1) as p:
        p.map(square, [1])
    with pytest.raises(mb.PoolClosed):
        p.submit(square, 1)


# ---- bad arguments -------------------------------------------------------------------------------


@pytest.mark.parametrize(("kwargs", "error", "match"), [
    ({"workers": 0}, ValueError, "workers must be >= 1"),
    ({"workers": -2}, ValueError, "workers must be >= 1"),
    ({"workers": 1.5}, TypeError, "workers must be an int"),
    ({"initializer": 3}, TypeError, "initializer must be callable"),
    ({"timeout": 0}, ValueError, "timeout must be a positive number"),
    ({"retries": -1}, ValueError, "retries must be an int >= 0"),
    ({"max_tasks_per_worker": 0}, ValueError, "max_tasks_per_worker must be >= 1"),
    ({"start_method": "teleport"}, ValueError, "start_method='teleport' is not available"),
    ({"backend": "quantum"}, mb.BackendNotFound, "unknown backend 'quantum'"),
])
def test_bad_pool_arguments_raise_clear_errors(kwargs, error, match):
    with pytest.raises(error, match=match):
        mb.Pool(**kwargs)


def test_bad_map_arguments_raise_clear_errors(pool):
    with pytest.raises(ValueError, match="chunksize must be >= 1"):
        pool.map(square, [1], chunksize=-1)
    with pytest.raises(TypeError, match="chunksize must be an int"):
        pool.map(square, [1], chunksize="big")
    with pytest.raises(TypeError, match="expected a callable"):
        pool.map(42, [1])
    with pytest.raises(TypeError, match="expected a callable"):
        pool.submit("not a function")
    with pytest.raises(TypeError, match="expected an iterable"):
        pool.imap(square, 5)
    with pytest.raises(TypeError, match="at least one iterable"):
        pool.map(square)
    assert pool.map(square, [4]) == [16]  # nothing above broke the pool
