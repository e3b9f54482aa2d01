"""manybrains.Pool on the process engine: what only a process pool does (chunking, workers in
other processes, pickling, worker lifetimes), laziness, and Pool's own argument checks. What
every backend does is in test_contract.py."""

from __future__ import annotations

import itertools
import os
import threading
import time
from concurrent.futures import CancelledError

import pytest
from tasks import add, count_calls, fail_on, pid_of, sleep_then, square

import manybrains as mb


@pytest.fixture
def backend() -> str:
    """conftest's ``pool`` here is a process pool."""
    return "processes"


# ---- results -------------------------------------------------------------------------------


def test_auto_chunking_batches_tiny_tasks(pool):
    pool.map(square, range(50_000))
    # One message per call would be 50,000 tasks; adaptive chunks need a few dozen.
    assert pool.statistics().done < 500


def test_a_second_map_of_a_function_skips_the_climb_from_one_call(pool):
    def chunks_of_a_map() -> int:
        before = pool.statistics().done
        assert pool.map(square, range(20_000)) == [x * x for x in range(20_000)]
        return pool.statistics().done - before

    first = chunks_of_a_map()  # 1, 8, 64, ... calls while it learns what a call costs
    assert chunks_of_a_map() < first - 2  # starts at the size the first map ended with


def test_explicit_chunksize_is_obeyed(pool):
    pool.map(square, range(100), chunksize=10)
    assert pool.statistics().done == 10


def test_work_runs_in_other_processes_on_every_worker(pool):
    pids = set(pool.map(pid_of_after_sleep, range(4), chunksize=1))
    assert os.getpid() not in pids
    assert len(pids) == 2


def pid_of_after_sleep(_: int) -> int:
    time.sleep(0.2)
    return os.getpid()


# ---- imap ------------------------------------------------------------------------------------


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


def test_terminate_kills_the_work_itself_not_only_its_future():
    # a 30-second task: unless its worker is killed, the leak check would wait on it
    p = mb.Pool(1)
    running = p.submit(sleep_then, 30)
    time.sleep(0.3)
    start = time.monotonic()
    p.terminate()
    assert time.monotonic() - start < 5
    with pytest.raises(CancelledError):
        running.result(timeout=5)


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
])
def test_bad_pool_arguments_raise_clear_errors(kwargs, error, match):
    with pytest.raises(error, match=match):
        mb.Pool(**kwargs)


