"""The "auto" backend and the advisor: measured choices, explained."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import threading
import time

import pytest
from tasks import fail_on, square

import manybrains as mb
from manybrains.backends.auto.policy import classify, gil_enabled


def waits(x: int) -> int:
    time.sleep(0.02)
    return x


def computes(x: int) -> tuple[int, int]:
    deadline = time.thread_time() + 0.03
    while time.thread_time() < deadline:
        pass
    return x, os.getpid()


async def awaits(x: int) -> int:
    await asyncio.sleep(0.01)
    return x


def choice(pool: mb.Pool, name: str) -> dict[str, object]:
    (found,) = [c for c in pool.statistics().choices if c["function"] == name]
    return found


@pytest.fixture
def backend() -> str:
    """conftest's ``pool`` here is an auto pool."""
    return "auto"


def test_waiting_work_goes_to_threads_all_at_once(pool):
    started = time.monotonic()
    assert pool.map(waits, range(100)) == list(range(100))
    elapsed = time.monotonic() - started
    made = choice(pool, "waits")
    assert made["backend"] == "threads"
    assert "mostly waiting" in made["why"]
    assert elapsed < 1.0  # one at a time would take 2 s


def test_cpu_bound_work_goes_to_worker_processes(pool):
    results = pool.map(computes, range(6))
    assert [x for x, _ in results] == list(range(6))
    made = choice(pool, "computes")
    assert made["backend"] == "processes"
    assert "CPU-bound" in made["why"]
    assert {pid for _, pid in results[1:]} - {os.getpid()}  # the probe ran here, the rest not


def test_cheap_calls_run_inline(pool):
    assert pool.map(square, range(10_000)) == [x * x for x in range(10_000)]
    made = choice(pool, "square")
    assert made["backend"] == "inline"
    assert made["calls_measured"] == 10_000


def test_coroutine_functions_go_to_the_event_loop(pool):
    assert pool.map(awaits, range(50)) == list(range(50))
    assert choice(pool, "awaits")["backend"] == "asyncio"


def test_the_decision_is_remembered_across_maps(pool):
    pool.map(waits, range(4))
    pool.map(waits, range(4))
    made = choice(pool, "waits")
    assert made["calls_measured"] == 8
    assert made["history"] == []


def test_the_choice_changes_as_measurements_settle(pool):
    def slow_first(x: int) -> int:
        if x == 0:
            time.sleep(0.05)  # the probe sees a waiting call
        return x

    assert pool.map(slow_first, range(5000)) == list(range(5000))
    made = choice(pool, "test_the_choice_changes_as_measurements_settle.<locals>.slow_first")
    assert made["backend"] == "inline"
    assert made["history"] == ["was threads until 1 calls"] or made["history"][0].startswith(
        "was threads")


def test_a_timeout_keeps_cheap_calls_off_the_caller(pool):
    pool.map(square, range(10))  # decided: inline
    assert pool.map(square, range(10), timeout=5) == [x * x for x in range(10)]
    assert pool.statistics().engines["threads"].done >= 10


def test_statistics_aggregate_the_engines(pool):
    pool.map(waits, range(3), chunksize=1)  # 3 tasks: the probe and two more, on threads
    pool.map(square, range(3), chunksize=1)  # 3 tasks: the probe on a thread, then inline
    with pytest.raises(ValueError):
        pool.submit(fail_on, 3).result(timeout=10)  # 1 task, failed (the probe, a thread)
    stats = pool.statistics()
    assert stats.backend == "auto"
    engines = stats.engines
    # square's second call may run on a thread too: its probe probes again when another
    # thread imported a module meanwhile (the probe cannot tell whose import it was)
    assert engines["threads"].done + engines["inline"].done == 6
    assert engines["threads"].done >= 4 and engines["inline"].done >= 1
    assert (engines["threads"].failed, engines["inline"].failed) == (1, 0)
    assert (stats.submitted, stats.done, stats.failed) == (7, 6, 1)
    assert {w.backend for w in stats.workers} >= {"threads", "inline"}


def test_module_level_functions_default_to_auto_and_pool_to_processes():
    assert mb.map(square, range(5)) == [0, 1, 4, 9, 16]
    assert mb.default_pool().backend.name == "auto"
    assert mb.submit(square, 3).result(timeout=10) == 9
    assert list(mb.imap(square, range(3), backend="threads")) == [0, 1, 4]
    with mb.Pool(1) as pool:
        assert pool.backend.name == "processes"


# ---- the rule -----------------------------------------------------------------------------


@pytest.mark.parametrize(("args", "kwargs", "backend"), [
    ((0.05, 0.01), {}, "threads"),
    ((0.05, 0.99), {}, "processes"),
    ((1e-7, 1.0), {}, "inline"),
    ((0.05, 0.99), {"gil": False}, "threads"),
    ((0.0, 0.0), {"coroutine": True}, "asyncio"),
    ((1e-4, 1.0), {"seen_seconds": 0.01}, "inline"),  # short calls, little work seen so far
    ((1e-4, 1.0), {"seen_seconds": 0.5}, "processes"),
    ((1e-4, 1.0), {"seen_seconds": 0.0, "startup": 0.0}, "processes"),  # processes run already
])
def test_classify(args, kwargs, backend):
    assert classify(*args, workers=2, **kwargs).backend == backend


def test_waiting_width_follows_the_cpu_fraction():
    assert classify(0.05, 0.0, workers=2).width == 256
    assert classify(0.05, 0.25, workers=2).width == 8


# ---- advise -------------------------------------------------------------------------------


def test_advise_measures_and_explains():
    advice = mb.advise(waits, 1)
    assert advice.recommendation == "threads"
    assert advice.cpu_fraction < 0.5
    assert 0.015 < advice.seconds_per_call < 0.2
    text = str(advice)
    assert "recommendation: backend='threads'" in text
    assert "processes" in text and "inline" in text
    assert advice.for_items(10).estimates["inline"] < advice.estimates["inline"]


def test_advise_recommends_processes_for_computation_and_asyncio_for_coroutines():
    assert mb.advise(computes, 1).recommendation == "processes"
    advice = mb.advise(awaits, 1)
    assert advice.recommendation == "asyncio"
    assert "asyncio" in advice.estimates


def test_cpu_bound_function_that_cannot_be_pickled_runs_on_threads():
    import threading

    guard = threading.Lock()  # a closure over a lock cannot travel to a worker process

    def compute(x):
        with guard:
            pass
        return sum(range(200_000)) + x

    expected = [sum(range(200_000)) + x for x in range(100)]
    with mb.Pool(backend="auto") as pool:
        # Calls of a millisecond or more, 200 in all: together far more than starting worker
        # processes, so processes get chosen, pickling fails, and threads take over.
        assert pool.map(compute, range(100)) == expected
        assert pool.map(compute, range(100)) == expected
        choice = pool.statistics().choices[0]
    assert choice["backend"] == "threads"
    assert "cannot be pickled" in choice["why"]


# ---- native threads, imports, what a probe waits on ---------------------------------------


def helper_threads_compute(_: int) -> int:
    """Like a BLAS call: the work runs on other threads while the caller's thread waits."""
    def burn() -> None:
        deadline = time.thread_time() + 0.01
        while time.thread_time() < deadline:
            pass

    helper = threading.Thread(target=burn)
    helper.start()
    helper.join()
    return 1


needs_2_cpus = pytest.mark.skipif(mb.usable_cpus() < 2, reason="native threads need 2 CPUs")


@needs_2_cpus
def test_a_call_whose_work_runs_on_other_threads_stays_in_the_caller(pool):
    assert pool.map(helper_threads_compute, range(20)) == [1] * 20
    made = choice(pool, "helper_threads_compute")
    assert made["backend"] == "inline"
    assert "native code" in made["why"]
    assert made["native_share"] >= 0.25


@needs_2_cpus
@pytest.mark.skipif(mb.usable_cpus() > 4, reason="one helper thread is not most of the CPUs")
def test_advise_agrees_about_native_threads():
    advice = mb.advise(helper_threads_compute, 1)
    assert advice.recommendation == "inline"
    assert advice.native_share >= 0.25
    assert "native threads" in str(advice)
    assert advice.estimates["inline"] <= advice.estimates["processes"]


BLAS_SCRIPT = """
import json, numpy as np, manybrains as mb
A = np.random.default_rng(0).random((700, 700))

def product(i):
    return float((A @ A)[0, 0])

if __name__ == "__main__":
    results = mb.map(product, range(24))
    assert len(results) == 24
    (made,) = mb.default_pool().statistics().choices
    print(json.dumps(made))
"""


@needs_2_cpus
def test_numpy_products_run_in_the_caller_with_all_blas_threads(tmp_path):
    pytest.importorskip("numpy")
    script = tmp_path / "blas_user.py"
    script.write_text(BLAS_SCRIPT)
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                          timeout=55, check=False,
                          env={**os.environ, "OPENBLAS_NUM_THREADS": "2",
                               "OMP_NUM_THREADS": "2"})
    assert done.returncode == 0, done.stderr
    made = json.loads(done.stdout.splitlines()[-1])
    # Each call takes several milliseconds of CPU: without telling BLAS threads apart,
    # auto would ship them to worker processes (where they oversubscribe the CPUs).
    assert made["backend"] == "inline", made
    assert "native code" in made["why"], made


def imports_then_waits(x: int) -> int:
    import auto_probe_import  # noqa: F401 - a module whose import computes for 30 ms

    time.sleep(0.02)
    return x


def test_a_first_call_that_imports_is_confirmed_by_the_next(pool, tmp_path, monkeypatch):
    (tmp_path / "auto_probe_import.py").write_text(
        "import time\n"
        "deadline = time.thread_time() + 0.03\n"
        "while time.thread_time() < deadline:\n"
        "    pass\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    assert pool.map(imports_then_waits, range(10)) == list(range(10))
    made = choice(pool, "imports_then_waits")
    assert made["backend"] == "threads", made  # the import alone looked CPU-bound
    assert "processes" not in pool.statistics().engines


def test_what_a_probe_waits_on_is_read_from_the_kernel():
    import socket

    from manybrains.backends.auto.policy import waiting_on_a_clock

    if not os.path.exists(f"/proc/self/task/{threading.get_native_id()}/syscall"):
        pytest.skip("the kernel does not say which system call a thread is in")
    left, right = socket.socketpair()
    sleeper = threading.Thread(target=time.sleep, args=(0.3,))
    reader = threading.Thread(target=left.recv, args=(1,))
    with left, right:
        sleeper.start()
        reader.start()
        time.sleep(0.05)
        assert sleeper.native_id is not None and reader.native_id is not None
        assert waiting_on_a_clock(sleeper.native_id) is True
        assert waiting_on_a_clock(reader.native_id) is False
        right.send(b"x")
        reader.join()
        sleeper.join()
    assert waiting_on_a_clock(sleeper.native_id) is None  # gone


@pytest.mark.parametrize(("kwargs", "backend", "words"), [
    ({"native": 1.0}, "inline", "native code"),
    ({"native": 0.1}, "processes", "CPU-bound"),
])
def test_classify_native_threads(kwargs, backend, words):
    decision = classify(0.02, 1.0, workers=2, **kwargs)
    assert decision.backend == backend
    assert words in decision.reason


def test_waiting_decisions_say_so_and_respect_the_cap():
    decision = classify(0.05, 0.0, workers=2, max_waiting=10)
    assert decision.waiting
    assert decision.width == 10
    assert not classify(0.05, 0.99, workers=2).waiting


RANDOM_MB = os.urandom(1 << 20)


def squeeze(_: int) -> int:
    """Native code that computes with the GIL released (zlib on a megabyte: ~20 ms)."""
    import zlib

    return len(zlib.compress(RANDOM_MB, 6))


@needs_2_cpus
def test_native_code_that_releases_the_gil_computes_on_threads(make_pool):
    # A measurement: CPU that another thread of this (test) process happens to burn during
    # the first calls reads as native helper threads. Three fresh pools: one noisy reading
    # may mislead one, not all three, while a policy that gets it wrong misleads every one.
    for _ in range(3):
        pool = make_pool()
        assert len(set(pool.map(squeeze, range(8)))) == 1
        made = choice(pool, "squeeze")
        if made["backend"] == "threads":
            break
    assert made["backend"] == "threads", made
    assert "releases the GIL" in made["why"]
    assert made["releases_gil"]
    assert "processes" not in pool.statistics().engines


def test_python_code_holding_the_gil_is_not_taken_for_native_code(pool):
    pool.map(computes, range(3))
    made = choice(pool, "computes")
    assert made["backend"] == "processes"
    assert not made["releases_gil"]


@needs_2_cpus
def test_advise_agrees_about_native_code_that_releases_the_gil():
    advice = mb.advise(squeeze, 0)
    assert advice.releases_gil
    assert advice.recommendation == "threads"
    assert min(advice.estimates, key=advice.estimates.__getitem__) == "threads"
    assert not mb.advise(computes, 0).releases_gil


@pytest.mark.skipif(not gil_enabled(), reason="without a GIL, threads do not share one")
def test_calls_computing_on_threads_that_share_the_gil_are_not_taken_for_waiting():
    from manybrains._errors import SerializationError
    from manybrains.backends.auto.profile import Profile

    profile = Profile(computes, 2, lambda: 0.0, 256)
    profile.record(1, 0.02, 0.02)  # one CPU-bound call
    assert profile.decision is not None and profile.decision.backend == "processes"
    profile.cannot_pickle(SerializationError("a closure over a lock"))
    for _ in range(8):  # two threads take turns with the GIL: each computes 45% of the time
        profile.record(1, 0.02, 0.009)
    assert profile.decision.backend == "threads"
    assert "cannot be pickled" in profile.decision.reason
