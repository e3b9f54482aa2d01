"""The fault model of the process engine (the README's "What happens when things go wrong").

FAULT_TABLE lists what can go wrong in one task; each row is a test case under every start
method in conftest's POOL_START_METHODS. Every case ends the same way: a clear error for that
task only, the other tasks' results intact, the pool still usable, a worker killed by the
fault gone and replaced (with its children), and (checked by the autouse ``no_leaks``
fixture) no process, thread or shared-memory segment left behind. Faults of a whole pool
(the initializer, Ctrl-C, a killed parent, shutdown, ...) have a test each below, most of
them under every start method too.
"""

from __future__ import annotations

import asyncio
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
from collections.abc import Callable
from concurrent.futures import CancelledError
from dataclasses import dataclass
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
    raise_unpicklable,
    segfault,
    sigkill_self,
    sleep_with_child,
)
from tasks import sleep_then, small_work, square

import manybrains as mb


class _PidFile:
    """Stands in a row's arguments for a file the test creates (the worker writes pids)."""


PIDFILE = _PidFile()


@dataclass(frozen=True)
class Fault:
    """One thing that goes wrong in a task, and what the caller must see."""

    case: str
    fn: Callable[..., object]
    args: tuple[object, ...]
    error: type[BaseException]
    match: str | None = None
    kills_worker: bool = False  # the worker must be gone and replaced afterwards
    remote_cause: bool = False  # the worker's traceback is chained as __cause__
    timeout: float | None = None


# Faults of one task. Each row runs under every start method in test_fault_fails_its_task_alone;
# the faults of a whole pool (initializer, Ctrl-C, a killed parent, ...) have a test each below.
FAULT_TABLE = [
    Fault("task raises an Exception", raise_, (ValueError("bad value"),), ValueError,
          "bad value", remote_cause=True),
    Fault("task raises KeyError", raise_, (KeyError("k"),), KeyError, "k", remote_cause=True),
    Fault("task raises SystemExit", raise_, (SystemExit(4),), SystemExit, "4",
          remote_cause=True),
    Fault("task raises KeyboardInterrupt", raise_, (KeyboardInterrupt(),), KeyboardInterrupt,
          remote_cause=True),
    Fault("exception cannot be pickled", raise_unpicklable, (), mb.RemoteError,
          "Unpicklable: 1"),
    Fault("worker exits (os._exit)", exit_abruptly, (), mb.WorkerCrashed, "exit code 1",
          kills_worker=True),
    Fault("worker killed (SIGKILL, OOM killer)", sigkill_self, (), mb.WorkerCrashed, "SIGKILL",
          kills_worker=True),
    Fault("worker segfaults", segfault, (), mb.WorkerCrashed, "SIGSEGV", kills_worker=True),
    Fault("worker aborts", abort, (), mb.WorkerCrashed, "SIGABRT", kills_worker=True),
    Fault("argument unpickling raises", identity, (BreaksInWorker("raise"),), ValueError,
          "bad state"),
    Fault("argument unpickling raises SystemExit", identity, (BreaksInWorker("exit"),),
          SystemExit, "3"),
    Fault("argument unpickling exits the worker", identity, (BreaksInWorker("_exit"),),
          mb.WorkerCrashed, "exit code 7", kills_worker=True),
    Fault("argument unpickling segfaults", identity, (BreaksInWorker("segfault"),),
          mb.WorkerCrashed, "SIGSEGV", kills_worker=True),
    Fault("result cannot be pickled", make, ("unpicklable",), mb.SerializationError,
          "cannot pickle the result"),
    Fault("pickling the result kills the worker", make, ("crash",), mb.WorkerCrashed,
          "exit code 9", kills_worker=True),
    Fault("result cannot be unpickled in the parent", make, ("parent",),
          mb.SerializationError, "cannot be rebuilt in the parent"),
    Fault("task exceeds its timeout", sleep_with_child, (60, PIDFILE), TimeoutError,
          r"timeout of 0\.5 s", kills_worker=True, timeout=0.5),
]


@pytest.fixture
def pool(start_method):
    with mb.Pool(2, start_method=start_method) as p:
        yield p


def assert_still_works(pool):
    assert pool.map(square, range(20)) == [x * x for x in range(20)]


def _up(pool, workers=2):
    """The pids of ``workers`` workers once all of them are running (started on demand)."""
    # Its own timeout: a pool's short default (0.3 s in one test) must not fail this warm-up,
    # whose first task may also import this module in a fresh worker on a loaded machine.
    pool.map(sleep_then, [0.05] * workers, chunksize=1, timeout=60)
    deadline = time.monotonic() + 20
    while len(pids := pool.backend.worker_pids()) < workers or not all(map(_running, pids)):
        assert time.monotonic() < deadline, pool.statistics()
        time.sleep(0.01)
    return set(pids)


def _replaced(pool, before):
    """Waits for a pool to be back to full strength; returns the pids that left it."""
    deadline = time.monotonic() + 20
    while len(after := _up(pool, len(before))) != len(before) or after == before:
        assert time.monotonic() < deadline, (before, after)
        time.sleep(0.01)
    return before - after


@pytest.mark.parametrize("fault", FAULT_TABLE, ids=lambda fault: fault.case)
def test_fault_fails_its_task_alone(fault, pool, tmp_path):
    pidfile = tmp_path / "pids"
    args = tuple(str(pidfile) if a is PIDFILE else a for a in fault.args)
    workers = _up(pool)
    others = [pool.submit(sleep_then, 0.1, i) for i in range(4)]
    with pytest.raises(fault.error, match=fault.match) as info:
        pool.submit(fault.fn, *args, timeout=fault.timeout).result(timeout=30)
    if fault.remote_cause:
        assert isinstance(info.value.__cause__, mb.RemoteTraceback)
        assert "raise_" in str(info.value.__cause__)
    assert [f.result(timeout=30) for f in others] == [0, 1, 2, 3]
    assert_still_works(pool)
    stats = pool.statistics()
    assert stats.crashed == (fault.error is mb.WorkerCrashed)
    assert stats.timed_out == (fault.error is TimeoutError)
    if not fault.kills_worker:
        assert _up(pool) == workers, "a worker was replaced for a task-level fault"
        return
    gone = _replaced(pool, workers)
    assert len(gone) == 1 and not any(map(_running, gone))
    if isinstance(info.value, mb.WorkerCrashed):
        assert info.value.exitcode is not None and gone == {info.value.pid}
    if pidfile.exists():  # the worker started a child: it must be gone with the worker
        worker, child = map(int, pidfile.read_text().split())
        assert gone == {worker}
        assert not _wait_gone([child], within=5), "the worker's child outlived it"


# ---- retries -----------------------------------------------------------------------------


def test_a_map_goes_on_past_a_crash_with_retries(pool, tmp_path):
    marker = str(tmp_path / "crashed")
    results = pool.starmap(crash_first_time, [(marker, i) for i in range(6)], chunksize=1,
                           retries=1)
    assert results == list(range(6))
    assert pool.statistics().retried == 1


def test_retries_run_out(pool):
    with pytest.raises(mb.WorkerCrashed):
        pool.submit(sigkill_self, retries=2).result(timeout=30)
    stats = pool.statistics()
    assert stats.retried == 2 and stats.crashed == 3


def test_without_retries_a_crash_is_final(pool, tmp_path):
    marker = tmp_path / "crashed"
    with pytest.raises(mb.WorkerCrashed):
        pool.submit(crash_first_time, str(marker), 2).result(timeout=30)
    assert marker.exists() and pool.statistics().retried == 0


def test_pool_default_retries(tmp_path):
    marker = str(tmp_path / "crashed")
    with mb.Pool(1, retries=1) as p:
        assert p.submit(crash_first_time, marker, 2).result(timeout=30) == 2
        assert p.statistics().retried == 1
        with pytest.raises(mb.WorkerCrashed):  # one retry, then the crash is the answer
            p.submit(sigkill_self).result(timeout=30)
        assert p.statistics().crashed == 3
        # submit's own retries= overrides the pool's
        with pytest.raises(mb.WorkerCrashed):
            p.submit(sigkill_self, retries=0).result(timeout=30)
        assert p.statistics().crashed == 4


# ---- an argument that cannot be pickled --------------------------------------------------


@pytest.mark.parametrize("bad", [ExitOnPickle(), FailOnPickle(), threading.Lock()],
                         ids=["SystemExit in __reduce__", "raises", "a lock"])
def test_task_that_cannot_be_pickled_raises_at_submit(pool, bad):
    with pytest.raises(mb.SerializationError, match="positional argument 0"):
        pool.submit(identity, bad)
    assert pool.statistics().submitted == 0  # refused in the caller, nothing was sent
    with pytest.raises(mb.SerializationError):
        pool.map(identity, [1, bad, 3])
    assert_still_works(pool)


# ---- the initializer ---------------------------------------------------------------------


@pytest.mark.parametrize("initializer", [
    lambda: raise_(RuntimeError("cannot load the model")),
    lambda: exit_abruptly(3),
    segfault,
], ids=["raises", "exits", "segfaults"])
def test_failing_initializer_breaks_the_pool_once(initializer, start_method):
    p = mb.Pool(2, initializer=initializer, start_method=start_method)
    for i in range(5):  # a broken pool fails queued futures, then refuses new tasks
        with pytest.raises(mb.InitializerFailed):
            p.submit(square, i).result(timeout=30)
    with pytest.raises(mb.InitializerFailed):
        p.submit(square, 1)
    time.sleep(0.3)
    # Two workers and two replacements at most: a bounded retry, not a respawn storm.
    assert p.statistics().workers_started <= 4
    p.shutdown()


def test_initializer_failure_carries_its_cause():
    p = mb.Pool(1, initializer=raise_, initargs=(RuntimeError("no model"),))
    with pytest.raises(mb.InitializerFailed, match="no model") as info:
        p.submit(square, 1).result(timeout=30)
    assert isinstance(info.value.__cause__, RuntimeError)
    p.shutdown()


# ---- timeouts: every way to ask for one kills and replaces the worker --------------------


def _assert_timed_out_worker_replaced(pool, workers, pidfile=None):
    gone = _replaced(pool, workers)
    assert len(gone) == 1 and not any(map(_running, gone))
    assert pool.statistics().timed_out == 1
    if pidfile is not None:
        worker, child = map(int, pidfile.read_text().split())
        assert gone == {worker}
        assert not _wait_gone([child], within=5)


def test_submit_timeout_fails_only_the_slow_task(pool):
    futures = [pool.submit(sleep_then, d, i, timeout=1.0) for i, d in enumerate([0, 5, 0])]
    assert futures[0].result(timeout=30) == 0
    assert futures[2].result(timeout=30) == 2
    with pytest.raises(TimeoutError):
        futures[1].result(timeout=30)


def _timeout_calls():
    """Each API that takes ``timeout=``: runs [quick, 60 s with a child], returns what came."""
    def run_map(pool, pidfile):
        return pool.map(sleep_with_child, [60], [str(pidfile)], timeout=0.5)

    def run_imap(pool, pidfile):
        results = pool.imap(sleep_then, [0, 60], chunksize=1, timeout=0.5)
        assert next(results) is None  # the quick item arrives first
        return next(results)

    def run_istarmap(pool, pidfile):
        results = pool.istarmap(sleep_then, [(0, "quick"), (60, "slow")], chunksize=1,
                                timeout=0.5)
        assert next(results) == "quick"
        return next(results)

    def run_aimap(pool, pidfile):
        async def main():
            return [r async for r in pool.aimap(sleep_then, [0, 60], chunksize=1,
                                                timeout=0.5)]
        return asyncio.run(main())

    def run_amap(pool, pidfile):
        return asyncio.run(pool.amap(sleep_then, [0, 60], chunksize=1, timeout=0.5))

    return {"map": run_map, "imap": run_imap, "istarmap": run_istarmap, "aimap": run_aimap,
            "amap": run_amap}


@pytest.mark.parametrize("api", list(_timeout_calls()))
def test_every_map_timeout_kills_and_replaces_the_worker(pool, api, tmp_path):
    pidfile = tmp_path / "pids"
    workers = _up(pool)
    start = time.monotonic()
    with pytest.raises(TimeoutError):
        _timeout_calls()[api](pool, pidfile)
    assert time.monotonic() - start < 10
    _assert_timed_out_worker_replaced(pool, workers, pidfile if api == "map" else None)
    assert_still_works(pool)


def test_pool_default_timeout(start_method, tmp_path):
    pidfile = tmp_path / "pids"
    with mb.Pool(1, timeout=0.3, start_method=start_method) as p:
        workers = _up(p, 1)
        with pytest.raises(TimeoutError, match=r"timeout of 0\.3 s"):
            p.submit(sleep_with_child, 10, str(pidfile)).result(timeout=30)
        _assert_timed_out_worker_replaced(p, workers, pidfile)
        assert p.submit(square, 3).result(timeout=30) == 9
        # a task's own timeout= overrides the pool's
        assert p.submit(sleep_then, 0.6, "late but allowed", timeout=5).result(
            timeout=30) == "late but allowed"


def test_timeout_clock_starts_when_the_task_starts(pool):
    # Four 0.4 s tasks on two workers: the last two wait 0.4 s in the queue, which must not
    # count against their 0.6 s limit.
    futures = [pool.submit(sleep_then, 0.4, i, timeout=0.6) for i in range(4)]
    assert [f.result(timeout=30) for f in futures] == [0, 1, 2, 3]


# ---- cancelling a running task -----------------------------------------------------------


def test_pool_cancel_kills_a_running_task(pool):
    workers = _up(pool)
    running = pool.submit(sleep_then, 60)
    deadline = time.monotonic() + 10
    while not any(w.in_flight for w in pool.statistics().workers):
        assert time.monotonic() < deadline, "the task never reached a worker"
        time.sleep(0.01)
    assert pool.cancel(running)
    with pytest.raises(CancelledError):
        running.result(timeout=5)
    assert_still_works(pool)
    gone = _replaced(pool, workers)
    assert len(gone) == 1 and not any(map(_running, gone))


def test_future_cancel_kills_with_cancel_running(start_method):
    with mb.Pool(1, backend=mb.Processes(cancel_running=True), start_method=start_method) as p:
        running = p.submit(sleep_then, 60)
        time.sleep(0.3)
        start = time.monotonic()
        assert running.cancel()
        assert p.submit(square, 4).result(timeout=30) == 16
        assert time.monotonic() - start < 5  # not 60 s: the worker was replaced


# ---- Ctrl-C, SIGINT at the workers, a killed parent ---------------------------------------

_SCRIPT = textwrap.dedent("""
    import os, signal, sys, time
    import manybrains as mb

    def spin(i):
        while True:
            pass

    def pid_after(seconds):
        time.sleep(seconds)
        return os.getpid()

    if __name__ == "__main__":
        # As in a program started from a terminal, even when this one was started in the
        # background (where SIGINT arrives ignored and Python installs no handler).
        signal.signal(signal.SIGINT, signal.default_int_handler)
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


def _start_script(tmp_path: Path, method: str, script_text: str = _SCRIPT
                  ) -> tuple[subprocess.Popen[str], list[int]]:
    script = tmp_path / "long_map.py"
    script.write_text(script_text)
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


def test_ctrl_c_interrupts_fast_and_leaves_no_worker(tmp_path, start_method):
    proc, workers = _start_script(tmp_path, start_method)
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


_SIGINT_SCRIPT = textwrap.dedent("""
    import os, signal, sys, time
    import manybrains as mb

    def busy(seconds):
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            pass
        return os.getpid()

    def pid_after(seconds):
        time.sleep(seconds)
        return os.getpid()

    if __name__ == "__main__":
        signal.signal(signal.SIGINT, signal.default_int_handler)  # as from a terminal
        with mb.Pool(2, start_method=sys.argv[1]) as pool:
            pids = set(pool.map(pid_after, [0.5, 0.5], chunksize=1))
            assert len(pids) == 2, pids
            print(" ".join(map(str, pids)), flush=True)
            running = pool.submit(busy, 1.5)  # one worker busy, the other idle
            time.sleep(0.5)
            for pid in pids:
                os.kill(pid, signal.SIGINT)
            ran_on = running.result(timeout=30)
            time.sleep(0.3)  # a worker that died of it would be gone by now
            after = set(pool.backend.worker_pids())
            print("ran on", ran_on, "workers", *sorted(after),
                  "crashed", pool.statistics().crashed, flush=True)
            assert pool.map(pid_after, [0.3, 0.3], chunksize=1)
""")


def test_workers_ignore_sigint_sent_to_them(tmp_path, start_method):
    proc, workers = _start_script(tmp_path, start_method, _SIGINT_SCRIPT)
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    words = out.split()
    assert int(words[words.index("ran") + 2]) in workers  # the busy task finished
    after = {int(w) for w in words[words.index("workers") + 1:words.index("crashed")]}
    assert after == set(workers), "a worker died of SIGINT"
    assert words[-1] == "0"
    assert "Traceback" not in err and "KeyboardInterrupt" not in err, err


def test_killed_parent_leaves_no_worker(tmp_path, start_method):
    proc, workers = _start_script(tmp_path, start_method)
    family = [c.pid for c in psutil.Process(proc.pid).children(recursive=True)]
    assert set(workers) <= set(family)
    proc.kill()
    proc.wait(timeout=10)
    assert not _wait_gone(workers, within=1.0), "workers outlived their parent"
    assert not _wait_gone(family, within=5.0), "helper processes outlived their parent"
    proc.communicate(timeout=10)


# ---- shutdown edge cases -----------------------------------------------------------------


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


# ---- done-callbacks ----------------------------------------------------------------------


@pytest.mark.parametrize("exc", [RuntimeError("callback bug"), SystemExit(2)])
def test_raising_done_callback_is_logged_and_harmless(exc, caplog):
    with mb.Pool(2) as pool:
        future = pool.submit(sleep_then, 0.2, 4)

        def callback(_):
            raise exc

        with caplog.at_level(logging.ERROR, logger="manybrains"):
            future.add_done_callback(callback)  # runs in the engine's thread when done
            assert future.result(timeout=30) == 4
            deadline = time.monotonic() + 5
            while "done-callback" not in caplog.text and time.monotonic() < deadline:
                time.sleep(0.01)
        records = [r for r in caplog.records if "done-callback" in r.getMessage()]
        assert records, caplog.text
        assert records[0].exc_info is not None and records[0].exc_info[1] is exc
        assert_still_works(pool)
        assert pool.submit(square, 5).result(timeout=30) == 25


# ---- leaking workers ---------------------------------------------------------------------


def test_max_memory_per_worker_recycles_a_leaking_worker():
    with mb.Pool(1, backend=mb.Processes(max_memory_per_worker=150 << 20)) as p:
        pids = [p.submit(hold_memory, 60).result(timeout=30) for _ in range(6)]
    # 60 MB more per task: the worker passes 150 MB on its second or third task.
    assert 2 <= len(set(pids)) <= 4, pids


def test_without_a_memory_limit_the_worker_is_kept():
    with mb.Pool(1) as p:
        pids = [p.submit(hold_memory, 20).result(timeout=30) for _ in range(3)]
    assert len(set(pids)) == 1


# ---- a huge result -----------------------------------------------------------------------


def test_one_gib_result_is_delivered():
    with mb.Pool(2) as pool:
        size = 1 << 30
        result = pool.submit(big_result, size).result(timeout=60)
        assert len(result) == size
        del result
        assert_still_works(pool)


# ---- a failing engine thread -------------------------------------------------------------


def test_supervisor_failure_fails_every_future_instead_of_hanging(monkeypatch):
    from manybrains.backends.processes.supervisor import Supervisor

    p = mb.Pool(1)
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
    # A SIGKILL every 50 ms, but only after some chunk finished since the last one: on a
    # loaded machine a chunk can outlast several kill intervals, and a fixed rate would then
    # kill the same chunk more often than any retries allow, or stop all progress. Retries
    # are plenty, so that only a lost or doubled task fails the test.
    n = 100_000
    with mb.Pool(2, retries=50, start_method="forkserver") as p:
        stop = threading.Event()

        def killer():
            rng = random.Random(1)
            done_before = -1
            while not stop.wait(0.05):
                pids, done = p.backend.worker_pids(), p.statistics().done
                if pids and done > done_before:
                    done_before = done
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
        assert p.statistics().crashed > 0


@pytest.mark.timeout(60)
def test_workers_killed_from_outside_while_starting_do_not_break_a_working_pool():
    # The pool's start-up works (a worker was ready); then each replacement is SIGKILLed
    # during its initializer, more times in a row than a broken start-up is allowed.
    with mb.Pool(1, initializer=time.sleep, initargs=(0.4,), start_method="fork") as pool:
        first = pool.submit(os.getpid).result(timeout=30)
        killed = {first}
        os.kill(first, signal.SIGKILL)
        deadline = time.monotonic() + 15
        while len(killed) < 7 and time.monotonic() < deadline:
            for pid in set(pool.backend.worker_pids()) - killed:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)  # inside its 0.4 s initializer
                killed.add(pid)
            time.sleep(0.01)
        assert len(killed) == 7
        assert pool.submit(os.getpid).result(timeout=30) not in killed
