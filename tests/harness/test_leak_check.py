"""The ``no_leaks`` fixture itself: it sees every process a test leaves, and only those.

Each case runs a small test file under this directory's conftest in a fresh pytest, then
checks the verdict. Whatever the inner test leaked is killed here afterwards.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import psutil
import pytest

HERE = Path(__file__).resolve().parents[1]  # tests/

_INNER = textwrap.dedent('''
    import multiprocessing, os, subprocess, sys, time
    from pathlib import Path

    LEAKED = Path(os.environ["LEAKED_PIDS"])


    def record(pid):
        with LEAKED.open("a") as f:
            f.write(f"{pid}\\n")


    def _nap():
        time.sleep(60)


    def _worker(method):
        process = multiprocessing.get_context(method).Process(target=_nap, daemon=True)
        process.start()
        record(process.pid)
        return process


    def test_forkserver_worker():
        _worker("forkserver")


    def test_spawn_worker():
        _worker("spawn")


    def test_fork_worker():
        _worker("fork")


    def test_orphan_in_a_new_session():
        # The child starts a grandchild in its own session, then exits: the grandchild is
        # re-parented and is no descendant, no group member; only its environment says whose.
        code = ("import subprocess, sys; p = subprocess.Popen([sys.executable, '-c', "
                "'import time; time.sleep(60)'], start_new_session=True, "
                "stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL); print(p.pid)")
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                             check=True).stdout
        record(int(out))


    def test_forked_orphan():
        # No exec: the orphan's /proc environment is the test process's own; its group says.
        read, write = os.pipe()
        child = os.fork()
        if child == 0:
            grandchild = os.fork()
            if grandchild == 0:
                devnull = os.open(os.devnull, os.O_WRONLY)
                os.dup2(devnull, 1)  # let the outer pytest see this run's end
                os.dup2(devnull, 2)
                os.closerange(3, 65536)  # pytest keeps the real stdout on a higher fd
                time.sleep(60)
                os._exit(0)
            os.write(write, str(grandchild).encode())
            os._exit(0)
        os.waitpid(child, 0)
        record(int(os.read(read, 32)))


    def test_someone_elses_process():
        # A daemon of another program: new session, no marker, not our descendant.
        env = {k: v for k, v in os.environ.items() if k != "MANYBRAINS_TEST_RUN"}
        code = ("import subprocess, sys; p = subprocess.Popen([sys.executable, '-c', "
                "'import time; time.sleep(60)'], start_new_session=True, "
                "stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL); print(p.pid)")
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                             check=True, env=env, start_new_session=True).stdout
        record(int(out))


    def test_clean_forkserver_use():
        # The forkserver and the resource tracker start here and stay: not a leak.
        process = multiprocessing.get_context("forkserver").Process(target=time.sleep,
                                                                     args=(0.1,))
        process.start()
        process.join()
        from multiprocessing import shared_memory
        shared_memory.SharedMemory(create=True, size=10).unlink()
''')

EXPECTED = {
    "test_forkserver_worker": "failed",
    "test_spawn_worker": "failed",
    "test_fork_worker": "failed",
    "test_orphan_in_a_new_session": "failed",
    "test_forked_orphan": "failed",
    "test_someone_elses_process": "passed",
    "test_clean_forkserver_use": "passed",
}


def _kill(pids: list[int]) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while any(_running(pid) for pid in pids) and time.monotonic() < deadline:
        time.sleep(0.02)


def _running(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def _run_inner(folder: Path, source: str) -> tuple[str, list[int]]:
    """Run ``source`` as a test file under a copy of conftest.py; its report, the pids leaked."""
    shutil.copy(HERE / "conftest.py", folder / "conftest.py")
    (folder / "test_inner.py").write_text(source)
    leaked = folder / "leaked.txt"
    env = {**os.environ, "LEAKED_PIDS": str(leaked), "MANYBRAINS_LEAK_SETTLE": "0.5"}
    env.pop("PYTEST_ADDOPTS", None)
    try:
        run = subprocess.run(
            [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-rA", "-q",
             "-o", "addopts=", "--rootdir", str(folder), str(folder / "test_inner.py")],
            capture_output=True, text=True, timeout=100, env=env, cwd=folder)
    finally:
        pids = [int(line) for line in leaked.read_text().split()] if leaked.exists() else []
        _kill(pids)
    return run.stdout + run.stderr, pids


@pytest.mark.timeout(120)
def test_the_leak_check_fails_every_kind_of_leak_and_nothing_else(tmp_path):
    report, pids = _run_inner(tmp_path, _INNER)
    for name, outcome in EXPECTED.items():
        # The fixture fails a leaking test in its teardown: pytest calls that an error.
        verdict = "ERROR" if outcome == "failed" else "PASSED"
        assert f"{verdict} test_inner.py::{name}" in report, report
    # Each failure names the leaked process, and only it: never the forkserver or tracker.
    blamed = {int(pid) for pid in re.findall(r"process (\d+):", report)}
    assert blamed == set(pids[:5]), report

_DASK_INNER = textwrap.dedent('''
    import os, subprocess, sys
    from pathlib import Path

    import pytest

    import manybrains as mb

    LEAKED = Path(os.environ["LEAKED_PIDS"])
    on_dask = pytest.mark.parametrize("backend", ["dask"], indirect=True)


    @on_dask
    def test_a_crashed_and_restarted_cluster_worker(pool):
        before = set(pool.client.run(os.getpid).values())
        with pytest.raises(mb.WorkerCrashed):
            pool.submit(os._exit, 3).result(timeout=60)
        pool.client.wait_for_workers(2, timeout=60)
        after = set(pool.client.run(os.getpid).values())
        assert after - before  # a new worker process, under a pid never seen before


    @on_dask
    def test_a_process_of_the_test_beside_the_cluster(pool):
        assert pool.submit(abs, -1).result(timeout=30) == 1
        nap = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
        with LEAKED.open("a") as f:
            f.write(f"{nap.pid}\\n")
''')

DASK_EXPECTED = {
    "test_a_crashed_and_restarted_cluster_worker": "PASSED",
    "test_a_process_of_the_test_beside_the_cluster": "ERROR",
}


@pytest.mark.timeout(120)
def test_the_session_cluster_is_exempt_and_nothing_beside_it(tmp_path):
    pytest.importorskip("distributed")
    report, pids = _run_inner(tmp_path, _DASK_INNER)
    for name, verdict in DASK_EXPECTED.items():
        assert f"{verdict} test_inner.py::{name}" in report, report
    blamed = {int(pid) for pid in re.findall(r"process (\d+):", report)}
    assert blamed == set(pids), report  # the leaked nap, not a cluster worker old or new
