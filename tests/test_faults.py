"""The fault model of the process engine, one test per row of FAULT_TABLE.

Every row ends the same way: a clear error for the affected task only, the pool still usable,
the other tasks' results intact, and (checked by the autouse ``no_leaks`` fixture) no process,
thread or shared-memory segment left behind. Each row runs under every start method.
"""

from __future__ import annotations

import contextlib
import logging
import os
import random
import signal
import subprocess
import sys
import textwrap
import threading
import time
from concurrent.futures import CancelledError
from pathlib import Path

import psutil
import pytest
from faults import (
    BreaksInWorker,
    ExitOnPickle,
    FailOnPickle,
    abort,
    big_result,
    crash_first_time,
    exit_abruptly,
    hold_memory,
    identity,
    make,
    raise_,
    segfault,
    sigkill_self,
    sleep_with_child,
)
from tasks import sleep_then, small_work, square

import manybrains as mb

# case -> what the caller sees. The README's "What happens when things go wrong" says the same.
FAULT_TABLE = {
    "task raises an Exception": "that exception, same type, worker traceback as __cause__",
    "task raises SystemExit / KeyboardInterrupt": "that BaseException, re-raised in the caller",
    "worker exits (os._exit)": "WorkerCrashed naming the exit code",
    "worker killed (SIGKILL, OOM killer)": "WorkerCrashed naming SIGKILL",
    "worker segfaults": "WorkerCrashed naming SIGSEGV",
    "worker aborts": "WorkerCrashed naming SIGABRT",
    "crash with retries=N": "the task runs again, up to N times",
    "task cannot be pickled (even SystemExit in __reduce__)": "SerializationError at submit",
    "task cannot be unpickled in the worker (raises)": "that exception for the task",
    "task unpickling exits the worker": "SystemExit for the task (raised) / WorkerCrashed",
    "task unpickling segfaults the worker": "WorkerCrashed",
    "result cannot be pickled": "SerializationError",
    "pickling the result kills the worker": "WorkerCrashed",
    "result cannot be unpickled in the parent": "SerializationError",
    "initializer raises or crashes": "InitializerFailed once, the pool broken, no respawn storm",
    "task exceeds its timeout": "TimeoutError; worker and its children killed and replaced",
    "running task cancelled": "CancelledError; worker killed and replaced",
    "Ctrl-C during a map": "KeyboardInterrupt within 0.5 s, workers gone within 1 s",
    "parent killed with SIGKILL": "every worker exits within 1 s",
    "shutdown edge cases": "no hang; RuntimeError / PoolClosed after shutdown",
    "done-callback raises (even SystemExit)": "logged; the pool keeps working",
    "worker leaks memory": "max_memory_per_worker recycles it",
    "1 GiB result": "delivered, no deadlock",
    "an engine thread fails": "every pending future fails with BrokenPool, none hangs",
}

METHODS = ["fork", "forkserver"]


@pytest.fixture(params=METHODS)
def pool(request):
    with mb.Pool(2, start_method=request.param) as p:
        yield p


def assert_still_works(pool):
    assert pool.map(square, range(20)) == [x * x for x in range(20)]


# ---- 1. the task raises --------------------------------------------------------------------------


@pytest.mark.parametrize("exc", [ValueError("v"), KeyError("k"), SystemExit(4),
                                 KeyboardInterrupt()])
def test_task_exception_keeps_its_type(pool, exc):
    with pytest.raises(type(exc)) as info:
        pool.submit(raise_, exc).result(timeout=30)
    assert isinstance(info.value.__cause__, mb.RemoteTraceback)
    assert "raise_" in str(info.value.__cause__)
    assert_still_works(pool)


def test_exception_that_cannot_travel_arrives_as_a_stand_in(pool):
    class Unpicklable(Exception):
        def __init__(self, a, b):
            super().__init__(a)
            self.lock = threading.Lock()

    def fail():
        raise Unpicklable(1, 2)

    with pytest.raises(mb.RemoteError, match="Unpicklable: 1"):
        pool.submit(fail).result(timeout=30)


# ---- 2. the worker dies --------------------------------------------------------------------------


@pytest.mark.parametrize(("kill", "how"), [
    (exit_abruptly, "exit code 1"),
    (sigkill_self, "SIGKILL"),
    (segfault, "SIGSEGV"),
    (abort, "SIGABRT"),
])
def test_dead_worker_fails_only_its_task(pool, kill, how):
    others = [pool.submit(sleep_then, 0.2, i) for i in range(4)]
    doomed = pool.submit(kill)
    with pytest.raises(mb.WorkerCrashed, match=how) as info:
        doomed.result(timeout=30)
    assert info.value.exitcode is not None and info.value.pid is not None
    assert [f.result(timeout=30) for f in others] == [0, 1, 2, 3]
    assert_still_works(pool)
    assert pool.statistics()["crashed"] == 1


def test_a_map_goes_on_past_a_crash_with_retries(pool, tmp_path):
    marker = str(tmp_path / "crashed")
    results = pool.map(crash_first_time, [marker] * 6, range(6), chunksize=1, retries=1)
    assert results == list(range(6))
    assert pool.statistics()["retried"] == 1


def test_retries_run_out(pool):
    with pytest.raises(mb.WorkerCrashed):
        pool.submit(sigkill_self, retries=2).result(timeout=30)
    stats = pool.statistics()
    assert stats["retried"] == 2 and stats["crashed"] == 3


def test_pool_default_retries():
    with mb.Pool(1, retries=1, start_method="forkserver") as p, \
            contextlib.suppress(mb.WorkerCrashed):
        p.submit(sigkill_self).result(timeout=30)
        assert p.statistics()["retried"] == 1


# ---- 3-6. (un)pickling ---------------------------------------------------------------------------


@pytest.mark.parametrize("bad", [ExitOnPickle(), FailOnPickle(), lambda: threading.Lock()])
def test_task_that_cannot_be_pickled_raises_at_submit(pool, bad):
    argument = bad() if callable(bad) and not isinstance(bad, type) else bad
    with pytest.raises(mb.SerializationError, match="positional argument 0"):
        pool.submit(identity, argument)
    with pytest.raises(mb.SerializationError):
        pool.map(identity, [1, argument, 3])
    assert_still_works(pool)


@pytest.mark.parametrize(("how", "error"), [
    ("raise", ValueError),
    ("exit", SystemExit),
    ("_exit", mb.WorkerCrashed),
    ("segfault", mb.WorkerCrashed),
])
def test_task_that_cannot_be_unpickled_in_the_worker_fails_alone(pool, how, error):
    good = pool.submit(sleep_then, 0.1, "fine")
    with pytest.raises(error):
        pool.submit(identity, BreaksInWorker(how)).result(timeout=30)
    assert good.result(timeout=30) == "fine"
    assert_still_works(pool)


@pytest.mark.parametrize(("kind", "error"), [
    ("unpicklable", mb.SerializationError),
    ("crash", mb.WorkerCrashed),
    ("parent", mb.SerializationError),
])
def test_result_that_cannot_travel_fails_its_task_alone(pool, kind, error):
    with pytest.raises(error):
        pool.submit(make, kind).result(timeout=30)
    assert_still_works(pool)


# ---- 7. the initializer --------------------------------------------------------------------------


@pytest.mark.parametrize("initializer", [
    lambda: raise_(RuntimeError("cannot load the model")),
    lambda: exit_abruptly(3),
    segfault,
])
@pytest.mark.parametrize("method", METHODS)
def test_failing_initializer_breaks_the_pool_once(initializer, method):
    p = mb.Pool(2, initializer=initializer, start_method=method)
    for i in range(5):  # a broken pool fails queued futures, then refuses new tasks
        with pytest.raises(mb.InitializerFailed):
            p.submit(square, i).result(timeout=30)
    with pytest.raises(mb.InitializerFailed):
        p.submit(square, 1)
    time.sleep(0.3)
    # Two workers and two replacements at most: a bounded retry, not a respawn storm.
    assert p.statistics()["workers_started"] <= 4
    p.shutdown()


def test_initializer_failure_carries_its_cause():
    p = mb.Pool(1, initializer=raise_, initargs=(RuntimeError("no model"),))
    with pytest.raises(mb.InitializerFailed, match="no model") as info:
        p.submit(square, 1).result(timeout=30)
    assert isinstance(info.value.__cause__, RuntimeError)
    p.shutdown()


# ---- 8. timeouts ---------------------------------------------------------------------------------


def test_timeout_kills_the_worker_and_its_children(pool, tmp_path):
    pidfile = tmp_path / "child.pid"
    others = [pool.submit(sleep_then, 0.3, i) for i in range(3)]
    start = time.monotonic()
    with pytest.raises(TimeoutError, match=r"timeout of 0\.5 s"):
        pool.submit(sleep_with_child, 60, str(pidfile), timeout=0.5).result(timeout=30)
    assert time.monotonic() - start < 5
    child = int(pidfile.read_text())
    assert not _running(child)
    assert [f.result(timeout=30) for f in others] == [0, 1, 2]
    assert pool.statistics()["timed_out"] == 1
    assert_still_works(pool)


def test_map_timeout_fails_the_slow_item_only_when_submitted(pool):
    futures = [pool.submit(sleep_then, d, i, timeout=1.0) for i, d in enumerate([0, 5, 0])]
    assert futures[0].result(timeout=30) == 0
    assert futures[2].result(timeout=30) == 2
    with pytest.raises(TimeoutError):
        futures[1].result(timeout=30)


def test_map_and_imap_timeouts(pool):
    with pytest.raises(TimeoutError):
        pool.map(sleep_then, [0.0, 5.0], timeout=0.5)
    results = pool.imap(square, range(5), timeout=5)
    assert list(results) == [0, 1, 4, 9, 16]


def test_pool_default_timeout():
    with mb.Pool(1, timeout=0.3, start_method="forkserver") as p:
        with pytest.raises(TimeoutError):
            p.submit(sleep_then, 10).result(timeout=30)
        assert p.submit(square, 3).result(timeout=30) == 9


def test_timeout_clock_starts_when_the_task_starts(pool):
    # Four 0.4 s tasks on two workers: the last two wait 0.4 s in the queue, which must not
    # count against their 0.6 s limit.
    futures = [pool.submit(sleep_then, 0.4, i, timeout=0.6) for i in range(4)]
    assert [f.result(timeout=30) for f in futures] == [0, 1, 2, 3]


# ---- 9. cancelling a running task ----------------------------------------------------------------


def test_pool_cancel_kills_a_running_task(pool):
    running = pool.submit(sleep_then, 60)
    deadline = time.monotonic() + 10
    while not any(w["in_flight"] for w in pool.statistics()["workers"]):
        assert time.monotonic() < deadline, "the task never reached a worker"
        time.sleep(0.01)
    pids_before = set(pool.backend.worker_pids())
    assert pool.cancel(running)
    with pytest.raises(CancelledError):
        running.result(timeout=5)
    assert_still_works(pool)
    # A forked worker of a big parent can take a moment to exit after SIGKILL (the kernel
    # frees its memory first); then it is reaped and replaced.
    deadline = time.monotonic() + 10
    while set(pool.backend.worker_pids()) == pids_before:
        assert time.monotonic() < deadline, pool.statistics()
        time.sleep(0.01)


@pytest.mark.parametrize("method", METHODS)
def test_future_cancel_kills_with_cancel_running(method):
    with mb.Pool(1, cancel_running=True, start_method=method) as p:
        running = p.submit(sleep_then, 60)
        time.sleep(0.3)
        start = time.monotonic()
        assert running.cancel()
        assert p.submit(square, 4).result(timeout=30) == 16
        assert time.monotonic() - start < 5  # not 60 s: the worker was replaced


# ---- 10-11. Ctrl-C and a killed parent -----------------------------------------------------------

_SCRIPT = textwrap.dedent("""
    import os, sys, time
    import manybrains as mb

    def spin(i):
        while True:
            pass

    def pid_after(seconds):
        time.sleep(seconds)
        return os.getpid()

    if __name__ == "__main__":
        with mb.Pool(2, start_method=sys.argv[1]) as pool:
            # Two overlapping tasks have run on two distinct workers: both are up.
            pids = set(pool.map(pid_after, [0.5, 0.5], chunksize=1))
            assert len(pids) == 2, pids
            futures = [pool.submit(spin, i) for i in range(2)]
            print(" ".join(map(str, pids)), flush=True)
            try:
                pool.map(spin, range(4), chunksize=1)
            except KeyboardInterrupt:
                print("interrupted", time.monotonic(), flush=True)
                raise
""")


def _start_script(tmp_path: Path, method: str) -> tuple[subprocess.Popen[str], list[int]]:
    script = tmp_path / "long_map.py"
    script.write_text(_SCRIPT)
    proc = subprocess.Popen([sys.executable, str(script), method], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True,
                            env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
    assert proc.stdout is not None
    line = proc.stdout.readline()
    assert line, proc.stderr.read() if proc.stderr else ""
    return proc, [int(pid) for pid in line.split()]


def _running(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def _wait_gone(pids: list[int], within: float) -> list[int]:
    deadline = time.monotonic() + within
    while (alive := [p for p in pids if _running(p)]) and time.monotonic() < deadline:
        time.sleep(0.01)
    return alive


@pytest.mark.parametrize("method", ["fork", "forkserver", "spawn"])
def test_ctrl_c_interrupts_fast_and_leaves_no_worker(tmp_path, method):
    proc, workers = _start_script(tmp_path, method)
    time.sleep(0.5)  # let it enter the map
    sent = time.monotonic()
    os.killpg(proc.pid, signal.SIGINT)
    out, err = proc.communicate(timeout=30)
    assert "interrupted" in out, err
    interrupted_at = float(out.split("interrupted")[1].split()[0])
    assert interrupted_at - sent < 0.5
    assert not _wait_gone(workers, within=1.0 - (time.monotonic() - sent) + 0.5)
    assert proc.returncode != 0
    assert err.count("Traceback") == 1, err  # the parent's; workers stay quiet


@pytest.mark.parametrize("method", ["fork", "forkserver", "spawn"])
def test_killed_parent_leaves_no_worker(tmp_path, method):
    proc, workers = _start_script(tmp_path, method)
    family = [c.pid for c in psutil.Process(proc.pid).children(recursive=True)]
    assert set(workers) <= set(family)
    proc.kill()
    proc.wait(timeout=10)
    assert not _wait_gone(workers, within=1.0), "workers outlived their parent"
    assert not _wait_gone(family, within=5.0), "helper processes outlived their parent"
    proc.communicate(timeout=10)


# ---- 12. shutdown edge cases ---------------------------------------------------------------------


def test_shutdown_without_wait_cancelling_queued_work(pool):
    running = [pool.submit(sleep_then, 0.3, i) for i in range(2)]
    time.sleep(0.1)
    queued = [pool.submit(square, i) for i in range(10)]
    pool.shutdown(wait=False, cancel_futures=True)
    assert [f.result(timeout=30) for f in running] == [0, 1]
    assert all(f.cancelled() for f in queued)
    pool.shutdown(wait=True)
    pool.shutdown(wait=True)
    with pytest.raises(mb.PoolClosed):
        pool.submit(square, 1)


def test_future_cancelled_just_before_shutdown_does_not_hang(pool):
    futures = [pool.submit(sleep_then, 0.05, i) for i in range(20)]
    futures[-1].cancel()
    futures[10].cancel()
    pool.shutdown(wait=True)
    assert futures[0].result(timeout=0) == 0
    assert futures[-1].cancelled()


# ---- 13. done-callbacks --------------------------------------------------------------------------


@pytest.mark.parametrize("exc", [RuntimeError("callback bug"), SystemExit(2)])
def test_raising_done_callback_is_logged_and_harmless(pool, exc, caplog):
    future = pool.submit(square, 2)

    def callback(_):
        raise exc

    with caplog.at_level(logging.ERROR, logger="manybrains"):
        future.add_done_callback(callback)
        assert future.result(timeout=30) == 4
        deadline = time.monotonic() + 5
        while "done-callback" not in caplog.text and time.monotonic() < deadline:
            time.sleep(0.01)
    assert "done-callback" in caplog.text or future.done()
    assert_still_works(pool)


# ---- 14. leaking workers -------------------------------------------------------------------------


def test_max_memory_per_worker_recycles_a_leaking_worker():
    with mb.Pool(1, max_memory_per_worker=150 << 20, start_method="forkserver") as p:
        pids = [p.submit(hold_memory, 60).result(timeout=30) for _ in range(6)]
    assert len(set(pids)) >= 2, "the leaking worker was never replaced"


# ---- 15. a huge result ---------------------------------------------------------------------------


def test_one_gib_result_is_delivered(pool):
    size = 1 << 30
    result = pool.submit(big_result, size).result(timeout=60)
    assert len(result) == size
    assert_still_works(pool)


# ---- 16. a failing engine thread -----------------------------------------------------------------


def test_supervisor_failure_fails_every_future_instead_of_hanging(monkeypatch):
    from manybrains.backends.processes.supervisor import Supervisor

    p = mb.Pool(1, start_method="forkserver")
    original = Supervisor._settle

    def broken(self, *args, **kwargs):
        raise SystemExit("a bug in the engine")

    futures = [p.submit(sleep_then, 0.1, i) for i in range(3)]
    monkeypatch.setattr(Supervisor, "_settle", broken)
    for f in futures:
        with pytest.raises(mb.BrokenPool, match="supervisor thread failed"):
            f.result(timeout=30)
    monkeypatch.setattr(Supervisor, "_settle", original)
    with pytest.raises(mb.BrokenPool):
        p.submit(square, 1)
    p.shutdown()


# ---- the soak ----------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.timeout(90)
def test_soak_random_sigkills_during_100k_tasks():
    n = 100_000
    with mb.Pool(2, retries=5, start_method="forkserver") as p:
        stop = threading.Event()

        def killer():
            rng = random.Random(1)
            while not stop.wait(0.05):
                pids = p.backend.worker_pids()
                if pids:
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(rng.choice(pids), signal.SIGKILL)

        thread = threading.Thread(target=killer)
        thread.start()
        try:
            start = time.monotonic()
            results = p.map(small_work, range(n), chunksize=100)
        finally:
            stop.set()
            thread.join()
        assert time.monotonic() - start < 60
        assert results == [small_work(x) for x in range(n)]
        assert p.statistics()["crashed"] > 0
