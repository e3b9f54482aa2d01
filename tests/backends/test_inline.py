"""The "inline" backend: every task runs in the caller, during submit."""

from __future__ import annotations

import threading

import pytest
from tasks import sleep_then, square

import manybrains as mb


def test_tasks_run_in_the_calling_thread_before_submit_returns():
    caller = threading.get_ident()
    with mb.Pool(backend="inline") as pool:
        future = pool.submit(threading.get_ident)
        assert future.done()
        assert future.result() == caller
        assert set(pool.map(lambda _: threading.get_ident(), range(10))) == {caller}


def test_no_process_or_thread_is_started():
    before = threading.active_count()
    with mb.Pool(backend="inline") as pool:
        assert pool.map(square, range(1000)) == [x * x for x in range(1000)]
        assert threading.active_count() == before


def test_timeout_is_checked_when_the_call_returns():
    with mb.Pool(backend="inline") as pool:
        future = pool.submit(sleep_then, 0.2, "late", timeout=0.05)
        with pytest.raises(TimeoutError, match="checked when the call returned"):
            future.result()
        assert pool.statistics().timed_out == 1


def test_cancel_is_always_false():
    with mb.Pool(backend="inline") as pool:
        assert pool.cancel(pool.submit(square, 2)) is False


def test_keyboard_interrupt_reaches_the_caller_at_once():
    def interrupted() -> None:
        raise KeyboardInterrupt

    with mb.Pool(backend="inline") as pool, pytest.raises(KeyboardInterrupt):
        pool.submit(interrupted)


def test_initializer_runs_once_in_the_caller():
    calls: list[int] = []
    with mb.Pool(backend="inline", initializer=calls.append, initargs=(1,)) as pool:
        pool.map(square, range(10))
    assert calls == [1]
