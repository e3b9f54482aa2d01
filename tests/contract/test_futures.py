"""The futures manybrains hands out are the stdlib's, lighter for the garbage collector.

``TaskFuture`` builds ``concurrent.futures.Future``'s fields itself, with a
``FutureCondition`` in place of a ``threading.Condition`` and of the list of ``wait`` and
``as_completed`` waiters, and its list of done-callbacks made only when one is added: these
tests hold it to the stdlib's
behaviour (waiting with and without a timeout, ``wait``, ``as_completed``, cancelling,
callbacks, many threads at once) and to its field list, so that a Python that adds a field
to ``Future.__init__`` fails here instead of in a user's program.
"""

from __future__ import annotations

import gc
import sys
import threading
import time
from concurrent.futures import (
    FIRST_COMPLETED,
    CancelledError,
    Future,
    InvalidStateError,
    TimeoutError,
    as_completed,
    wait,
)

import pytest

from manybrains._future import FutureCondition, TaskFuture


def test_it_has_every_field_of_the_stdlib_future():
    assert set(vars(TaskFuture())) - {"handle"} == set(vars(Future()))
    assert TaskFuture()._state == Future()._state


def test_a_result_set_by_another_thread_wakes_the_waiter():
    future: TaskFuture[None] = TaskFuture()
    threading.Timer(0.05, future.set_result, args=(42,)).start()
    assert future.result(timeout=10) == 42


def test_waiting_with_a_timeout_times_out_and_leaves_no_waiter_behind():
    future: TaskFuture[None] = TaskFuture()
    started = time.monotonic()
    with pytest.raises(TimeoutError):
        future.result(timeout=0.05)
    assert time.monotonic() - started >= 0.04
    assert not future._condition._waiters  # type: ignore[attr-defined]
    with pytest.raises(TimeoutError):
        future.exception(timeout=0)
    future.set_result(1)
    assert future.result(timeout=0) == 1


def test_cancel_and_callbacks_behave_as_the_stdlib():
    future: TaskFuture[None] = TaskFuture()
    seen = []
    future.add_done_callback(lambda f: seen.append(f.cancelled()))
    assert future.cancel() and future.cancelled()
    assert seen == [True]
    with pytest.raises(CancelledError):
        future.result(timeout=1)
    running: TaskFuture[None] = TaskFuture()
    assert running.set_running_or_notify_cancel()
    assert not running.cancel()
    running.set_exception(ValueError("boom"))
    with pytest.raises(ValueError, match="boom"):
        running.result()


@pytest.mark.timeout(10)
def test_settling_a_settled_future_raises_instead_of_hanging():
    # The stdlib formats repr(future) inside its lock here: the lock must be reentrant.
    future: TaskFuture[None] = TaskFuture()
    future.set_result(1)
    with pytest.raises(InvalidStateError, match="FINISHED"):
        future.set_result(2)
    with pytest.raises(InvalidStateError):
        future.set_exception(ValueError())
    assert "returned int" in repr(future)


def test_wait_and_as_completed_over_many_futures_settled_by_many_threads():
    futures: list[TaskFuture[None]] = [TaskFuture() for _ in range(2000)]
    done, pending = wait(futures, timeout=0.01)
    assert not done and len(pending) == 2000

    def settle(part: list[TaskFuture[None]]) -> None:
        for i, f in enumerate(part):
            f.set_result(i)

    threads = [threading.Thread(target=settle, args=(futures[k::4],)) for k in range(4)]
    waiter = threading.Thread(target=lambda: wait(futures, return_when=FIRST_COMPLETED))
    waiter.start()
    for t in threads:
        t.start()
    assert sum(1 for _ in as_completed(futures, timeout=30)) == 2000
    for t in [*threads, waiter]:
        t.join(timeout=30)
    assert all(f.done() for f in futures)


def test_many_threads_waiting_on_one_future_all_wake():
    future: TaskFuture[None] = TaskFuture()
    got = []
    waiters = [threading.Thread(target=lambda: got.append(future.result(timeout=30)))
               for _ in range(20)]
    for t in waiters:
        t.start()
    time.sleep(0.05)
    future.set_result("x")
    for t in waiters:
        t.join(timeout=30)
    assert got == ["x"] * 20


def test_a_pending_future_is_light_for_the_garbage_collector():
    # A threading.Condition is ten objects the collector walks; a program holding 20,000
    # pending futures made it walk them again and again.
    def tracked_per_future(make: type[Future[None]]) -> float:
        gc.collect()
        before = len(gc.get_objects())
        futures = [make() for _ in range(1000)]
        return (len(gc.get_objects()) - before) / len(futures)

    ours, stdlib = tracked_per_future(TaskFuture), tracked_per_future(Future)
    assert ours <= stdlib / 3, (ours, stdlib)  # 2 against 11 on Python 3.11
    assert isinstance(TaskFuture()._condition, FutureCondition)  # type: ignore[attr-defined]
    # the future and its condition (the lock itself); and its __dict__ before 3.11
    assert ours <= (2.5 if sys.version_info >= (3, 11) else 3.5), ours


def test_wait_and_as_completed_leave_no_waiter_on_futures_that_stay_pending():
    # The stdlib adds its waiter to each future and removes it on the way out, timed out or
    # not; here that list is the future's condition.
    futures: list[TaskFuture[None]] = [TaskFuture() for _ in range(3)]
    futures[0].set_result(0)
    done, pending = wait(futures, timeout=0.01)
    assert done == {futures[0]} and pending == set(futures[1:])
    with pytest.raises(TimeoutError):
        for _ in as_completed(futures, timeout=0.01):
            pass
    assert all(list(f._waiters) == [] for f in futures)  # type: ignore[attr-defined]
    threading.Timer(0.05, futures[2].set_result, args=(2,)).start()
    done, _ = wait(futures[1:], return_when=FIRST_COMPLETED, timeout=10)
    assert done == {futures[2]}
    assert list(futures[1]._waiters) == []  # type: ignore[attr-defined]


def test_callbacks_added_before_and_after_settling_run_once_in_order():
    future: TaskFuture[None] = TaskFuture()
    seen: list[str] = []
    future.add_done_callback(lambda f: seen.append("first"))
    future.add_done_callback(lambda f: seen.append("second"))
    assert seen == []
    future.set_result(1)
    assert seen == ["first", "second"]
    future.add_done_callback(lambda f: seen.append(f"late {f.result()}"))
    assert seen == ["first", "second", "late 1"]
    plain: TaskFuture[None] = TaskFuture()
    plain.set_result(2)  # no callback was ever added
    assert plain.result() == 2
