"""Waiting work on ``auto`` adapts how many calls run at once to what the other side takes.

The servers (tests/http_servers.py) run in subprocesses: one with a fixed number of handler
threads behind a listen backlog of 5, one answering 429 above N requests at once. Explicit
pools with many threads against the same servers show that they really push back.
"""

from __future__ import annotations

import threading
import time
import urllib.error
from urllib.request import urlopen

import http_servers
import pytest

import manybrains as mb
from manybrains.backends.auto.limit import ConcurrencyLimit, overload_error

DELAY = 0.02  # each request's work on the server


def getter(url: str, timeout: float):
    def get(i: int) -> bytes:
        with urlopen(f"{url}/{i}", timeout=timeout) as answer:
            return bytes(answer.read())

    return get


def concurrency(pool: mb.Pool) -> dict[str, object]:
    (choice,) = pool.statistics().choices
    assert choice["backend"] == "threads", choice
    return choice["concurrency"]


# ---- against real servers -----------------------------------------------------------------


def test_a_server_with_few_workers_and_a_small_backlog_gets_every_call_done():
    workers = 4
    with http_servers.running("workers", workers, DELAY) as url:
        get = getter(url, timeout=0.5)
        with pytest.raises((TimeoutError, urllib.error.URLError)),  \
                mb.Pool(64, backend="threads") as flood:  # everything at once fails
            flood.map(get, range(64))
        with mb.Pool(backend="auto") as pool:
            assert pool.map(get, range(150)) == [b"ok"] * 150
            settled = concurrency(pool)
    # Past 4 at once requests queue in the backlog (latency doubles), past 4 + 5 the kernel
    # drops them: the limit comes back down to about the server's workers.
    assert 2 <= settled["settled"] <= workers + http_servers.BACKLOG, settled
    assert settled["peak_in_flight"] < 20, settled
    assert "latency climbed" in settled["why"] or settled["overloads"], settled


def test_a_server_that_answers_429_above_n_gets_every_call_done_near_n():
    limit = 6
    with http_servers.running("limit", limit, DELAY) as url:
        get = getter(url, timeout=5)
        with pytest.raises(urllib.error.HTTPError, match="429"),  \
                mb.Pool(32, backend="threads") as flood:
            flood.map(get, range(64))
        before = http_servers.stats(url)
        with mb.Pool(backend="auto") as pool:
            assert pool.map(get, range(200)) == [b"ok"] * 200
            settled = concurrency(pool)
        after = http_servers.stats(url)
    rejected = after["rejected"] - before["rejected"]
    assert settled["overloads"] == rejected > 0  # every 429 was seen, and run again
    assert settled["reruns"] == rejected
    assert rejected < 40, after  # it backed off rather than hammering
    assert limit // 2 <= settled["settled"] <= 2 * limit, settled
    # the 429s lowered the limit (a later cut, for latency, may be the one "why" names)
    assert settled["cuts"].get("HTTPError 429", 0) >= 1, settled


def test_the_pool_concurrency_option_caps_waiting_calls():
    with http_servers.running("limit", 6, DELAY) as url:
        get = getter(url, timeout=5)
        with mb.Pool(backend="auto", concurrency=3) as pool:
            assert pool.map(get, range(60)) == [b"ok"] * 60
            settled = concurrency(pool)
        stats = http_servers.stats(url)
    assert stats["rejected"] == 0
    assert stats["peak"] <= 3
    assert settled["cap"] == 3
    assert settled["peak_in_flight"] <= 3


def sleeps(x: int) -> int:
    time.sleep(0.05)
    return x


def test_calls_that_sleep_on_a_clock_start_at_the_cap():
    with mb.Pool(backend="auto") as pool:
        started = time.monotonic()
        assert pool.map(sleeps, range(200)) == list(range(200))
        elapsed = time.monotonic() - started
        settled = concurrency(pool)
    assert "sleep on a clock" in settled["why"]
    assert settled["peak_in_flight"] >= 100  # a slow start would have 6 in flight by now
    assert elapsed < 0.6  # 200 x 50 ms: a slow start from 4 would take well over a second


# ---- reruns, cancellation, shutdown -------------------------------------------------------


class FlakyOnce:
    """Waits 20 ms a call; the first call with ``bad`` fails as a refused connection."""

    def __init__(self, bad: int) -> None:
        self.bad = bad
        self.calls: dict[int, int] = {}
        self.lock = threading.Lock()

    def __call__(self, x: int) -> int:
        time.sleep(0.02)
        with self.lock:
            self.calls[x] = self.calls.get(x, 0) + 1
            first = self.calls[x] == 1
        if x == self.bad and first:
            raise ConnectionRefusedError("the server is full")
        return x


def test_a_chunk_turned_away_runs_again_from_the_item_that_failed():
    flaky = FlakyOnce(bad=13)
    with mb.Pool(backend="auto") as pool:
        assert pool.map(flaky, range(20), chunksize=5) == list(range(20))
        settled = concurrency(pool)
    assert flaky.calls[13] == 2
    assert all(flaky.calls[x] == 1 for x in range(20) if x != 13), flaky.calls
    assert settled["reruns"] == 1
    assert "ConnectionRefusedError" in settled["why"]


def test_an_error_that_is_not_an_overload_is_not_run_again():
    calls = []

    def fails(x: int) -> int:
        time.sleep(0.02)
        calls.append(x)
        if x == 7:
            raise ValueError("bad input")
        return x

    with mb.Pool(backend="auto") as pool, pytest.raises(ValueError, match="bad input"):
        pool.map(fails, range(10), chunksize=1)
    assert calls.count(7) == 1


@pytest.mark.parametrize("error", [TimeoutError("read timed out"),
                                   ConnectionResetError("reset by peer")])
def test_an_overload_the_server_may_have_acted_on_is_not_run_again(error):
    # A timeout or a reset can come after a POST was applied: running it again would repeat
    # it. It still tells the limit to back off.
    calls = []

    def posts(x: int) -> int:
        time.sleep(0.02)
        calls.append(x)
        if x == 3:
            raise error
        return x

    with mb.Pool(backend="auto") as pool, pytest.raises(type(error)):
        pool.map(posts, range(6), chunksize=1)
    assert calls.count(3) == 1


def test_an_overload_that_persists_fails_after_a_few_reruns():
    calls = []

    def refused(x: int) -> int:
        time.sleep(0.01)
        calls.append(x)
        if x == 5:
            raise ConnectionRefusedError("nobody listens")
        return x

    with mb.Pool(backend="auto") as pool, pytest.raises(ConnectionRefusedError):
        pool.map(refused, range(8), chunksize=1)
    assert calls.count(5) == 6  # the first run and five more


def test_queued_calls_can_be_cancelled_and_shutdown_waits_for_the_rest():
    with mb.Pool(backend="auto", concurrency=2) as pool:
        pool.submit(sleeps, 0).result(timeout=10)  # decided: waiting, on threads
        futures = [pool.submit(sleeps, i) for i in range(10)]
        assert concurrency(pool)["queued"] >= 6
        assert pool.cancel(futures[-1])
        pool.shutdown(wait=True)
        assert all(f.done() for f in futures)
    assert futures[-1].cancelled()
    assert [f.result() for f in futures[:-1]] == list(range(9))


def test_shutdown_with_cancel_futures_drops_queued_calls():
    pool = mb.Pool(backend="auto", concurrency=2)
    pool.submit(sleeps, 0).result(timeout=10)
    futures = [pool.submit(sleeps, i) for i in range(10)]
    pool.shutdown(wait=True, cancel_futures=True)
    cancelled = [f for f in futures if f.cancelled()]
    assert len(cancelled) >= 6
    assert all(f.result() == i for i, f in enumerate(futures) if not f.cancelled())


def test_shutdown_without_waiting_still_runs_queued_calls():
    pool = mb.Pool(backend="auto", concurrency=2)
    pool.submit(sleeps, 0).result(timeout=10)
    futures = [pool.submit(sleeps, i) for i in range(6)]
    pool.shutdown(wait=False)
    assert [f.result(timeout=10) for f in futures] == list(range(6))
    pool.shutdown(wait=True)  # joins the threads that ran them


# ---- the limit ----------------------------------------------------------------------------


def run_round(limit: ConcurrencyLimit, latency: float, overload: str | None = None) -> None:
    """As many calls as the limit allows start now and finish ``latency`` later."""
    started = time.monotonic()
    n = limit.limit
    for _ in range(n):
        limit.finished(started, latency, n, overload)


def test_slow_start_grows_by_half_a_round_trip_then_latency_ends_it():
    limit = ConcurrencyLimit(256)
    assert limit.limit == 4
    run_round(limit, 0.02)
    assert limit.limit == 6
    run_round(limit, 0.02)
    assert limit.limit == 9
    run_round(limit, 0.06)  # a queue: three times the best latency, at 9 in flight
    assert limit.limit == 4  # halved at most: 9 x 0.5, rounded down
    assert "latency climbed" in limit.why


def test_an_overload_cuts_once_a_round_trip():
    limit = ConcurrencyLimit(256, initial=20)
    run_round(limit, 0.02, overload="HTTPError 429")  # 20 failures from one round trip
    assert limit.limit == 14
    assert limit.describe()["overloads"] == 20
    limit.finished(time.monotonic(), 0.02, 14, "HTTPError 429")  # started after the cut
    assert limit.limit == 9


def test_the_limit_grows_only_while_it_is_in_use_and_never_past_the_cap():
    limit = ConcurrencyLimit(256, initial=8)
    for _ in range(50):
        limit.finished(time.monotonic(), 0.02, 1, None)  # one call at a time
    assert limit.limit == 8
    small = ConcurrencyLimit(10, initial=4)
    for _ in range(100):
        run_round(small, 0.02)
    assert small.limit == 10


def test_clock_waits_ignore_latency_but_not_overloads():
    limit = ConcurrencyLimit(256, unbounded_wait=True)
    assert limit.limit == 256
    run_round(limit, 0.02)
    run_round(limit, 0.2)  # this process is short of CPU: not the other side's fault
    assert limit.limit == 256
    run_round(limit, 0.02, overload="ConnectionResetError")
    assert limit.limit == 179


class _Response:
    status_code = 503


class _RequestsError(Exception):
    response = _Response()


def _wrapped(error: BaseException) -> BaseException:
    try:
        try:
            raise error
        except BaseException as inner:
            raise RuntimeError("client library failure") from inner
    except RuntimeError as outer:
        return outer


@pytest.mark.parametrize(("error", "name"), [
    (ConnectionRefusedError(), "ConnectionRefusedError"),
    (TimeoutError(), "TimeoutError"),
    (urllib.error.URLError(ConnectionResetError()), "ConnectionResetError"),
    (urllib.error.HTTPError("http://x", 429, "Too Many Requests", None, None),  # type: ignore[arg-type]
     "HTTPError 429"),
    (_RequestsError(), "_RequestsError 503"),
    (_wrapped(ConnectionAbortedError()), "ConnectionAbortedError"),
    (urllib.error.HTTPError("http://x", 404, "Not Found", None, None), None),  # type: ignore[arg-type]
    (ValueError("bad"), None),
    (None, None),
])
def test_overload_errors(error, name):
    assert overload_error(error) == name


def long_wait(x: int) -> int:
    time.sleep(1.5)
    return x


def test_terminate_abandons_running_calls_and_cancels_queued_ones():
    pool = mb.Pool(backend="auto", concurrency=2)
    pool.submit(sleeps, 0).result(timeout=10)  # decided: waiting, on threads
    futures = [pool.submit(long_wait, i) for i in range(6)]
    time.sleep(0.1)
    started = time.monotonic()
    pool.terminate()
    assert time.monotonic() - started < 1.0  # it does not wait for the running calls
    assert all(f.cancelled() for f in futures[2:])
    time.sleep(1.6)  # the abandoned threads finish their calls, then exit


class ConnectTimeout(OSError):
    """Named as requests' and httpx's: the connection was never made."""


@pytest.mark.parametrize(("error", "again"), [
    (ConnectionRefusedError("full"), True),
    (urllib.error.URLError(TimeoutError("timed out")), True),  # connecting: never sent
    (urllib.error.URLError(ConnectionRefusedError("full")), True),
    (ConnectTimeout("connect timed out"), True),
    (TimeoutError("read timed out"), False),  # the answer did not come: maybe it was done
    (ConnectionResetError("reset by peer"), False),
    (urllib.error.URLError(ConnectionResetError("reset")), False),
    (ValueError("bad input"), False),
])
def test_only_calls_the_other_side_never_received_are_run_again(error, again):
    from manybrains.backends.auto.limit import safe_to_run_again

    assert safe_to_run_again(error) is again
