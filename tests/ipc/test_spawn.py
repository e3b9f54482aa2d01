"""manybrains.spawn: one process, its result or its exception, its crash."""

from __future__ import annotations

import os
import signal
import threading
import time

import pytest

import manybrains as mb


def explode(message: str) -> None:
    raise KeyError(message)


def test_result_returns_the_value_and_the_process_ends(start_method):
    offset = 40
    handle = mb.spawn(lambda x, y=0: (x + y + offset, os.getpid()), 1, y=1,
                      start_method=start_method)
    value, child_pid = handle.result(timeout=30)
    assert value == 42
    assert child_pid == handle.pid != os.getpid()
    assert handle.exitcode == 0
    assert not handle.is_alive()


def test_exception_keeps_its_type_and_carries_the_remote_traceback():
    handle = mb.spawn(explode, "no such key")
    with pytest.raises(KeyError, match="no such key") as info:
        handle.result(timeout=30)
    cause = info.value.__cause__
    assert isinstance(cause, mb.RemoteTraceback)
    assert "in explode" in cause.tb and 'raise KeyError(message)' in cause.tb


def test_a_killed_process_raises_worker_crashed_naming_the_signal():
    handle = mb.spawn(time.sleep, 30)
    assert handle.is_alive()
    handle.kill()
    with pytest.raises(mb.WorkerCrashed, match="SIGKILL") as info:
        handle.result(timeout=30)
    assert info.value.exitcode == -signal.SIGKILL
    assert info.value.pid == handle.pid


def test_a_process_that_exits_without_returning_raises_worker_crashed():
    handle = mb.spawn(os._exit, 3)
    with pytest.raises(mb.WorkerCrashed, match="exit code 3"):
        handle.result(timeout=30)
    assert handle.exitcode == 3


def test_result_times_out_while_the_process_runs():
    handle = mb.spawn(time.sleep, 30)
    started = time.monotonic()
    with pytest.raises(TimeoutError, match="still running"):
        handle.result(timeout=0.2)
    assert time.monotonic() - started < 5
    assert handle.is_alive()
    handle.kill()
    handle.join(timeout=30)
    assert handle.exitcode == -signal.SIGKILL


def test_join_does_not_deadlock_on_a_big_result(start_method):
    handle = mb.spawn(bytes, 20_000_000, start_method=start_method)
    handle.join(timeout=30)  # the child blocks writing 20 MB until someone reads
    assert handle.exitcode == 0
    assert handle.result() == bytes(20_000_000)


def test_unpicklable_argument_fails_at_spawn_naming_it():
    # Under forkserver: by default a program with threads forks instead, as the stdlib's
    # fork Process would (tests/engine/test_start_method_choice.py).
    with pytest.raises(mb.SerializationError, match="positional argument 1"):
        mb.spawn(print, 1, threading.Lock(), start_method="forkserver")


def test_unpicklable_result_fails_in_result():
    handle = mb.spawn(threading.Lock)
    with pytest.raises(mb.SerializationError, match="cannot pickle the result"):
        handle.result(timeout=30)


def test_result_can_be_read_twice_and_from_threads():
    handle = mb.spawn(sum, [1, 2, 3])
    results: list[int] = []
    threads = [threading.Thread(target=lambda: results.append(handle.result(timeout=30)))
               for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results == [6, 6, 6]
    assert handle.result() == 6


def test_not_callable_is_refused():
    with pytest.raises(TypeError, match="callable"):
        mb.spawn(42)
