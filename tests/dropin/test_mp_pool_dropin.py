"""mb.Pool is a drop-in for multiprocessing.Pool: its signature, methods and error types."""

from __future__ import annotations

import concurrent.futures as cf
import multiprocessing
import multiprocessing.pool
import pickle
import threading
import time
from concurrent.futures.process import BrokenProcessPool
from multiprocessing.pool import MaybeEncodingError

import pytest
from dropin_tasks import (
    RefusesPickle,
    count_up_to,
    kill_self,
    lock_result,
    raise_key_error,
    sleep_square,
    takes_option_names,
)
from tasks import add, pid_of, recall, remember, sleep_then, square

import manybrains as mb


@pytest.fixture
def pool():
    with mb.Pool(2) as p:
        yield p


# ---- the constructor --------------------------------------------------------------------


def test_constructor_takes_multiprocessing_arguments_positionally():
    context = multiprocessing.get_context("spawn")
    with mb.Pool(2, remember, (41,), 3, context) as p:
        assert p.workers == 2
        assert p.map(recall, range(4)) == [41] * 4
        pids = {p.apply(pid_of) for _ in range(12)}
    assert len(pids) > 2  # maxtasksperchild=3 replaced the two workers


def test_constructor_takes_multiprocessing_names():
    with mb.Pool(processes=1, initializer=remember, initargs=("x",), maxtasksperchild=100,
                 context=multiprocessing.get_context("forkserver")) as p:
        assert p.workers == 1
        assert p.apply(recall) == "x"


@pytest.mark.parametrize("options", [
    {"workers": 2, "processes": 2},
    {"max_tasks_per_worker": 2, "maxtasksperchild": 2},
    {"start_method": "spawn", "context": multiprocessing.get_context("spawn")},
])
def test_an_option_under_both_names_is_a_type_error(options):
    with pytest.raises(TypeError, match="same option; give only one"):
        mb.Pool(**options)


@pytest.mark.parametrize("bad", [0, -1, 0.5, "12", True])
def test_bad_maxtasksperchild_is_a_value_error_like_multiprocessing(bad):
    with pytest.raises(ValueError, match="maxtasksperchild must be a positive int"):
        mb.Pool(1, maxtasksperchild=bad)


@pytest.mark.parametrize("bad", [0, -1])
def test_bad_process_count_is_a_value_error(bad):
    with pytest.raises(ValueError):
        mb.Pool(bad)


# ---- apply and AsyncResult --------------------------------------------------------------


def test_apply_takes_args_and_kwds(pool):
    assert pool.apply(add, (1, 2)) == 3
    assert pool.apply(add, (), {"x": 1, "y": 5}) == 6


def test_kwds_named_like_pool_options_reach_the_function(pool):
    assert pool.apply(takes_option_names, (), {"timeout": 1, "retries": 2}) == (1, 2)


@pytest.mark.parametrize(("args", "kwds", "match"), [
    (5, None, r"args must be a tuple.*\(x,\)"),
    ("ab", None, "args must be a tuple"),
    ((), [("x", 1)], "kwds must be a mapping"),
])
def test_apply_rejects_misshapen_arguments(pool, args, kwds, match):
    with pytest.raises(TypeError, match=match):
        pool.apply_async(square, args, kwds)


def test_async_result_get_wait_ready_successful(pool):
    result = pool.apply_async(sleep_square, (7, 0.5))
    assert isinstance(result, mb.AsyncResult)
    assert not result.ready()
    with pytest.raises(ValueError, match="not ready"):
        result.successful()
    with pytest.raises(multiprocessing.TimeoutError):
        result.get(timeout=0.05)
    result.wait(30)
    assert result.ready() and result.successful()
    assert result.get(timeout=0) == 49
    assert isinstance(result.future, cf.Future)


def test_a_failed_call_raises_from_get_and_is_not_successful(pool):
    result = pool.apply_async(raise_key_error)
    with pytest.raises(KeyError, match="missing key"):
        result.get(30)
    assert result.ready() and not result.successful()


def test_callback_has_run_when_wait_returns(pool):
    seen = []

    def slow_callback(value):
        time.sleep(0.2)  # wait() must not return before the callback is done
        seen.append(value)

    result = pool.apply_async(square, (4,), callback=slow_callback,
                              error_callback=seen.append)
    result.wait(30)
    assert result.ready()
    assert seen == [16]


def test_error_callback_gets_the_exception(pool):
    seen = []
    result = pool.apply_async(raise_key_error, callback=seen.append, error_callback=seen.append)
    result.wait(30)
    assert len(seen) == 1 and isinstance(seen[0], KeyError)


def test_callbacks_must_be_callable(pool):
    with pytest.raises(TypeError, match="error_callback must be callable"):
        pool.apply_async(square, (1,), error_callback="log")


def test_a_crashed_worker_fails_only_its_async_result(pool):
    doomed = pool.apply_async(kill_self)
    with pytest.raises(BrokenProcessPool) as info:
        doomed.get(30)
    assert isinstance(info.value, mb.WorkerCrashed) and "SIGKILL" in str(info.value)
    assert pool.apply(square, (5,)) == 25


# ---- many calls ------------------------------------------------------------------------


def test_map_async_and_starmap_async(pool):
    assert pool.map_async(square, range(50)).get(30) == [x * x for x in range(50)]
    assert pool.map_async(square, iter(range(10)), 3).get(30) == [x * x for x in range(10)]
    assert pool.starmap_async(add, [(1, 2), (3, 4)]).get(30) == [3, 7]
    assert pool.map_async(square, []).get(30) == []


def test_map_async_callbacks_get_the_list_or_the_error(pool):
    seen = []
    pool.map_async(int, ["1", "2"], callback=seen.append, error_callback=seen.append).wait(30)
    pool.map_async(int, ["1", "a"], callback=seen.append, error_callback=seen.append).wait(30)
    assert seen[0] == [1, 2]
    assert isinstance(seen[1], ValueError) and len(seen) == 2


def test_map_third_positional_int_is_chunksize_as_in_multiprocessing():
    with mb.Pool(1) as p:
        assert p.map(square, range(10), 3) == [x * x for x in range(10)]
        assert p.statistics().submitted == 4  # chunks of 3, 3, 3, 1
        assert p.map(square, range(4), None) == [0, 1, 4, 9]  # None: the pool chooses


def test_map_with_several_iterables_still_zips_them(pool):
    assert pool.map(add, [1, 2], [10, 20]) == [11, 22]
    assert pool.map(pow, [2, 3], [3, 2], [5, 5]) == [3, 4]


def test_map_chunksize_positional_after_two_iterables_is_a_clear_type_error(pool):
    with pytest.raises(TypeError, match=r"argument 4 is 3, not an iterable.*starmap"):
        pool.map(add, [1], [2], 3)
    with pytest.raises(TypeError, match=r"chunk size 3, and more iterables.*starmap"):
        pool.map(add, [1], 3, [2])


def test_map_chunksize_given_twice_is_a_type_error(pool):
    with pytest.raises(TypeError, match="multiple values for argument 'chunksize'"):
        pool.map(square, range(3), 2, chunksize=2)


def test_imap_starmap_and_imap_unordered_take_chunksize_positionally(pool):
    assert list(pool.imap(square, range(20), 4)) == [x * x for x in range(20)]
    assert pool.starmap(add, [(1, 1), (2, 2)], 1) == [2, 4]
    assert sorted(pool.imap_unordered(square, range(20), 5)) == [x * x for x in range(20)]
    assert sorted(pool.imap_unordered(square, range(20))) == [x * x for x in range(20)]


def test_an_input_that_raises_fails_in_its_place(pool):
    results = pool.imap(square, count_up_to(10, fail_at=3), 1)
    assert [next(results) for _ in range(3)] == [0, 1, 4]
    with pytest.raises(ValueError, match="failed at 3"):
        next(results)
    with pytest.raises(ValueError, match="failed at 3") as info:
        pool.map(square, count_up_to(10, fail_at=3))
    assert info.value.__cause__ is None  # the caller's own error, not a remote one
    with pytest.raises(ValueError, match="failed at 3"):
        pool.map_async(square, count_up_to(10, fail_at=3))


# ---- pickling faults --------------------------------------------------------------------


def test_unpicklable_argument_is_also_the_error_its_reduce_raised(pool):
    with pytest.raises(RuntimeError, match="item 0 of the input") as info:
        pool.map(square, [RefusesPickle()])
    assert isinstance(info.value, mb.SerializationError)
    assert isinstance(info.value, pickle.PicklingError)
    with pytest.raises(mb.SerializationError, match="positional argument 0"):
        pool.submit(square, RefusesPickle())


def test_unpicklable_argument_of_apply_async_fails_the_result(pool):
    seen = []
    result = pool.apply_async(square, (RefusesPickle(),), error_callback=seen.append)
    with pytest.raises(RuntimeError, match="positional argument 0"):
        result.get(30)
    assert isinstance(seen[0], mb.SerializationError)
    failed_map = pool.map_async(square, [1, RefusesPickle()], 1, error_callback=seen.append)
    with pytest.raises(mb.SerializationError):
        failed_map.get(30)


def test_unpicklable_result_is_maybe_encoding_error_too(pool):
    result = pool.apply_async(lock_result)
    with pytest.raises(MaybeEncodingError) as info:
        result.get(30)
    assert isinstance(info.value, mb.SerializationError)
    assert "cannot pickle the result" in str(info.value)
    assert info.value.exc and info.value.value
    with pytest.raises(MaybeEncodingError):
        pool.map(lock_result, [1])
    assert pool.apply(square, (3,)) == 9  # the worker is still there


def test_a_combined_error_pickles_as_manybrains_own_type(pool):
    with pytest.raises(mb.SerializationError) as info:
        pool.map(square, [RefusesPickle()])
    copy = pickle.loads(pickle.dumps(info.value))
    assert type(copy) is mb.SerializationError and str(copy) == str(info.value)


# ---- lifecycle ---------------------------------------------------------------------------


def test_close_then_join_waits_for_queued_work():
    p = mb.Pool(2)
    results = [p.apply_async(sleep_square, (i, 0.1)) for i in range(6)]
    p.close()
    with pytest.raises(ValueError) as info:
        p.apply_async(square, (1,))
    assert isinstance(info.value, RuntimeError)  # the concurrent.futures type, too
    p.join()
    assert all(r.ready() for r in results)
    assert [r.get(0) for r in results] == [i * i for i in range(6)]


def test_join_before_close_is_a_value_error():
    with mb.Pool(1) as p, pytest.raises(ValueError, match=r"call close\(\) or terminate\(\)"):
        p.join()


def test_terminate_then_join_stops_running_work():
    p = mb.Pool(2)
    result = p.map_async(sleep_then, [60] * 100, 1)
    time.sleep(0.3)
    started = time.monotonic()
    p.terminate()
    p.join()
    assert time.monotonic() - started < 10
    assert result.ready() and not result.successful()


def test_a_closed_pool_cannot_be_entered_again():
    p = mb.Pool(1)
    with p:
        pass
    with pytest.raises(ValueError), p:
        pass
    p.join()


def test_callbacks_run_in_one_engine_thread_not_the_caller(pool):
    threads = []
    pool.apply_async(square, (2,), callback=lambda _: threads.append(
        threading.current_thread())).wait(30)
    assert threads and threads[0] is not threading.current_thread()


def test_a_task_error_keeps_its_type_and_carries_the_worker_traceback(pool):
    with pytest.raises(KeyError) as info:
        pool.apply(raise_key_error)
    assert type(info.value) is KeyError and info.value.args == ("missing key",)
    assert isinstance(info.value.__cause__, mb.RemoteTraceback)
    assert 'raise KeyError("missing key")' in info.value.__cause__.tb


def test_the_internals_published_code_reads_are_there_as_read_only_views():
    # pool._processes, _state, _cache and _pool are private in multiprocessing, yet read by
    # published programs (CPython's own mp_pool.py example among them).
    pool = mb.Pool(2)
    try:
        assert pool._processes == 2
        assert pool._state == multiprocessing.pool.RUN
        pending = pool.apply_async(time.sleep, (0.3,))
        assert list(pool._cache.values()) == [pending]
        pending.get(timeout=30)
        assert pool._cache == {}
        workers = pool._pool
        assert sorted(w.pid for w in workers) == sorted(pool.backend.worker_pids())
        assert all(w.is_alive() for w in workers)
        pool.close()
        assert pool._state == multiprocessing.pool.CLOSE
        pool.join()
        assert not any(w.is_alive() for w in workers)
        assert pool._pool == []
    finally:
        pool.terminate()
    assert pool._state == multiprocessing.pool.TERMINATE
