"""manybrains.ProcessPoolExecutor honours the concurrent.futures.ProcessPoolExecutor contract."""

from __future__ import annotations

import concurrent.futures as cf
import gc
import multiprocessing
import os
import pickle
import signal
import time
import weakref
from concurrent.futures.process import BrokenProcessPool

import pytest
from dropin_tasks import (
    BreaksWhenLoaded,
    Payload,
    RefusesPickle,
    make_breaks_when_loaded,
    make_payload,
)
from tasks import add, fail_on, pid_of, recall, remember, sleep_then, square

import manybrains as mb


def die(_: object = None) -> None:
    os.kill(os.getpid(), signal.SIGKILL)


def boom() -> None:
    raise RuntimeError("initializer exploded")


def test_is_an_executor_with_stdlib_futures():
    with mb.ProcessPoolExecutor(max_workers=2) as ex:
        assert isinstance(ex, cf.Executor)
        futures = [ex.submit(square, i) for i in range(10)]
        _, not_done = cf.wait(futures, timeout=30)
        assert not not_done
        assert sorted(f.result() for f in cf.as_completed(futures)) == sorted(
            i * i for i in range(10))


def test_submit_passes_every_keyword_to_the_function():
    def takes_timeout(timeout, retries):
        return timeout + retries

    with mb.ProcessPoolExecutor(1) as ex:
        assert ex.submit(takes_timeout, timeout=1, retries=2).result(timeout=30) == 3
        assert ex.submit(add, 1, y=2).result(timeout=30) == 3


def test_submit_is_positional_only_for_the_function():
    with mb.ProcessPoolExecutor(1) as ex, pytest.raises(TypeError):
        ex.submit(fn=square)


def test_map_returns_an_ordered_iterator_with_chunksize():
    with mb.ProcessPoolExecutor(2) as ex:
        results = ex.map(add, range(50), range(50), chunksize=7)
        assert not isinstance(results, list)
        assert list(results) == [2 * i for i in range(50)]


def test_map_timeout_bounds_the_whole_iteration_like_the_stdlib():
    with mb.ProcessPoolExecutor(1) as ex:
        results = ex.map(sleep_then, [2.0], timeout=0.3)
        with pytest.raises(cf.TimeoutError):
            list(results)


def test_map_submits_every_call_before_it_is_iterated(tmp_path):
    def touch(i: int) -> None:
        (tmp_path / str(i)).touch()

    with mb.ProcessPoolExecutor(2) as ex:
        results = ex.map(touch, range(6))  # as the stdlib: nothing waits for the iteration
        deadline = time.monotonic() + 10
        while len(list(tmp_path.iterdir())) < 6 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert sorted(int(p.name) for p in tmp_path.iterdir()) == list(range(6))
        assert list(results) == [None] * 6


def test_an_error_of_the_input_is_raised_by_map_itself():
    def items():
        yield 1
        raise LookupError("the input broke")

    with mb.ProcessPoolExecutor(1) as ex, pytest.raises(LookupError, match="input broke"):
        ex.map(square, items())


def test_leaving_a_map_early_cancels_the_calls_not_started(tmp_path):
    def slow_touch(i: int) -> int:
        time.sleep(0.2)
        (tmp_path / str(i)).touch()
        return i

    with mb.ProcessPoolExecutor(1) as ex:
        results = ex.map(slow_touch, range(20))
        assert next(results) == 0
        results.close()
    assert len(list(tmp_path.iterdir())) < 10  # the pool's exit waited for what had started


def test_map_raises_the_task_error_at_its_position():
    with mb.ProcessPoolExecutor(2) as ex:
        results = ex.map(fail_on, range(6))
        assert [next(results) for _ in range(3)] == [0, 1, 2]
        with pytest.raises(ValueError):
            next(results)


@pytest.mark.parametrize("bad", [0, -1])
def test_max_workers_must_be_positive(bad):
    with pytest.raises(ValueError, match="max_workers must be greater than 0"):
        mb.ProcessPoolExecutor(max_workers=bad)


def test_submit_after_shutdown_raises_runtime_error():
    ex = mb.ProcessPoolExecutor(1)
    ex.shutdown()
    with pytest.raises(RuntimeError):
        ex.submit(square, 1)
    ex.shutdown()  # idempotent


def test_mp_context_selects_the_start_method():
    with mb.ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as ex:
        assert ex.submit(square, 3).result(timeout=60) == 9


def test_initializer_and_initargs():
    with mb.ProcessPoolExecutor(2, initializer=remember, initargs=(41,)) as ex:
        assert set(ex.map(recall, range(8))) == {41}


def test_failing_initializer_breaks_the_executor_with_a_broken_process_pool():
    ex = mb.ProcessPoolExecutor(2, initializer=boom)
    future = ex.submit(square, 2)
    with pytest.raises(BrokenProcessPool) as info:
        future.result(timeout=30)
    assert isinstance(info.value, mb.InitializerFailed)
    assert "initializer exploded" in repr(info.value.__cause__)
    with pytest.raises(BrokenProcessPool):
        ex.submit(square, 2)
    ex.shutdown()


def test_dead_worker_fails_its_task_with_a_broken_process_pool_subclass_only():
    with mb.ProcessPoolExecutor(2) as ex:
        doomed = ex.submit(die)
        with pytest.raises(BrokenProcessPool) as info:
            doomed.result(timeout=30)
        assert isinstance(info.value, mb.WorkerCrashed)
        assert "SIGKILL" in str(info.value)
        assert ex.submit(square, 5).result(timeout=30) == 25  # unlike the stdlib, it goes on


def test_futures_move_to_running_and_a_queued_one_can_be_cancelled():
    with mb.ProcessPoolExecutor(1) as ex:
        first = ex.submit(sleep_then, 0.5)
        queued = ex.submit(square, 2)
        time.sleep(0.2)
        assert first.running()
        assert queued.cancel()
        assert not first.cancel()
        cf.wait([first, queued], timeout=30)
        assert queued.cancelled()


def test_shutdown_cancel_futures_without_wait():
    ex = mb.ProcessPoolExecutor(1)
    running = ex.submit(sleep_then, 0.3, "finished")
    time.sleep(0.1)
    queued = [ex.submit(square, i) for i in range(3)]
    ex.shutdown(wait=False, cancel_futures=True)
    assert running.result(timeout=30) == "finished"
    assert all(f.cancelled() for f in queued)
    ex.shutdown(wait=True)


def test_one_pid_per_worker():
    with mb.ProcessPoolExecutor(2) as ex:
        pids = set(ex.map(pid_of, [0.3] * 6))
    assert 1 <= len(pids) <= 2 and os.getpid() not in pids


# ---- faults reported the stdlib's way ----------------------------------------------------


def test_unpicklable_argument_fails_its_future_instead_of_submit():
    with mb.ProcessPoolExecutor(1) as ex:
        future = ex.submit(square, RefusesPickle())
        error = future.exception(timeout=30)
        assert isinstance(error, pickle.PicklingError)  # what the stdlib's future holds
        assert isinstance(error, RuntimeError)  # what the argument's __reduce__ raised
        assert isinstance(error, mb.SerializationError)
        assert "positional argument 0" in str(error)
        assert ex.submit(square, 3).result(timeout=30) == 9


def test_map_raises_an_unpicklable_item_in_its_place():
    with mb.ProcessPoolExecutor(1) as ex:
        results = ex.map(square, [1, 2, RefusesPickle(), 4])
        assert [next(results), next(results)] == [1, 4]
        with pytest.raises(pickle.PicklingError, match="item 0 of the input"):
            next(results)


def test_map_keeps_no_reference_to_a_result_it_yielded():
    with mb.ProcessPoolExecutor(2) as ex:
        for obj in ex.map(make_payload, range(6), chunksize=3):
            ref = weakref.ref(obj)
            del obj
            gc.collect()
            assert ref() is None


def test_a_finished_task_lets_its_arguments_go_and_insights_keep_a_short_repr():
    with mb.ProcessPoolExecutor(1) as ex:
        payload = Payload(1 << 20)
        ref = weakref.ref(payload)
        assert ex.submit(repr, payload).result(timeout=30) == "Payload(1048576)"
        del payload
        gc.collect()
        assert ref() is None
        slowest = ex._pool.insights().slowest
        assert [s.arguments for s in slowest] == ["(Payload(1048576))"]


def test_shutdown_cancel_futures_lets_tasks_already_handed_to_workers_finish():
    ex = mb.ProcessPoolExecutor(2)
    futures = [ex.submit(sleep_then, 0.1, i) for i in range(30)]
    ex.shutdown(cancel_futures=True)
    cancelled = [f for f in futures if f.cancelled()]
    finished = [f for f in futures if not f.cancelled()]
    assert len(cancelled) >= 20
    assert finished, "the tasks the workers already held must finish"
    assert all(f.done() and f.exception() is None for f in finished)


def test_a_task_its_worker_cannot_unpickle_is_a_broken_process_pool_for_it_alone():
    with mb.ProcessPoolExecutor(1) as ex:
        error = ex.submit(square, BreaksWhenLoaded()).exception(timeout=30)
        assert isinstance(error, BrokenProcessPool)  # what the stdlib reports here
        assert isinstance(error, ValueError)  # what unpickling raised
        assert isinstance(error, mb.UnpicklingFailed)
        assert "could not unpickle the task" in str(error)
        assert ex.submit(square, 4).result(timeout=30) == 16


def test_a_result_the_parent_cannot_unpickle_is_a_broken_process_pool_for_it_alone():
    with mb.ProcessPoolExecutor(1) as ex:
        error = ex.submit(make_breaks_when_loaded).exception(timeout=30)
        assert isinstance(error, BrokenProcessPool) and isinstance(error, mb.SerializationError)
        assert "cannot unpickle the result" in str(error)
        assert ex.submit(square, 4).result(timeout=30) == 16


def test_a_task_error_keeps_its_type_and_carries_the_worker_traceback():
    with mb.ProcessPoolExecutor(1) as ex:
        error = ex.submit(fail_on, 3).exception(timeout=30)
    assert type(error) is ValueError and error.args == ("bad input 3",)
    assert isinstance(error.__cause__, mb.RemoteTraceback)
    assert 'raise ValueError(f"bad input {x}")' in error.__cause__.tb
