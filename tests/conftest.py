"""Every test runs under a hard timeout (pytest-timeout, see pyproject.toml) and under
``no_leaks``: a test fails if it leaves processes, threads or /dev/shm segments behind.

A process belongs to this test run when any of these holds, so that none escapes however it
was started and whoever its parent is now:

- it descends from the test process (fork, spawn, forkserver workers, subprocesses);
- it is in the test process's process group (a forked orphan, re-parented to init, keeps it);
- its environment carries this run's ``MANYBRAINS_TEST_RUN`` marker, which every process
  started with ``exec`` inherits (a forkserver's workers, a grandchild in a new session).

Only the exact pids of multiprocessing's forkserver and resource tracker, which live as long
as the test process by design, are exempt. /dev/shm is machine-wide: only manybrains segments
made by a process of this run (or by a process that has since died) are counted, so a
concurrent session's processes and segments are never blamed here.
"""

from __future__ import annotations

import multiprocessing
import os
import secrets
import threading
import time
from collections.abc import Iterator

import psutil
import pytest

import manybrains as mb
from manybrains.backends.processes.context import available_start_methods
from manybrains.ipc import segment

RUN_MARKER = "MANYBRAINS_TEST_RUN"
# Set before any test starts a process: each one inherits it, and so do their children.
RUN_ID = f"{os.getpid()}-{secrets.token_hex(4)}"
os.environ[RUN_MARKER] = RUN_ID

# Tunable for the fixture's own tests, which would otherwise wait the full settle time.
_SETTLE_SECONDS = float(os.environ.get("MANYBRAINS_LEAK_SETTLE", "5"))

# The stdlib's start methods (what multiprocessing.get_context() accepts too), and every
# start method a Pool is tested under: the ``start_method`` fixture, so the fault table and
# the Ctrl-C and killed-parent tests, run over POOL_START_METHODS. A new one is one name here.
START_METHODS = [m for m in ("fork", "forkserver", "spawn")
                 if m in multiprocessing.get_all_start_methods()]
POOL_START_METHODS = [m for m in ("template", *START_METHODS) if m in available_start_methods()]


def _long_lived() -> set[int]:
    """Helpers multiprocessing starts once and keeps for the life of the test process."""
    from multiprocessing import forkserver, resource_tracker

    pids = {getattr(forkserver._forkserver, "_forkserver_pid", None),  # type: ignore[attr-defined]
            getattr(resource_tracker._resource_tracker, "_pid", None)}  # type: ignore[attr-defined]
    return {pid for pid in pids if pid}


def _processes() -> dict[int, str]:
    """Every live or zombie process of this test run but the test process itself."""
    me = os.getpid()
    group = os.getpgid(0)
    table = {}
    for proc in psutil.process_iter(["ppid", "status", "cmdline", "name", "environ"],
                                    ad_value=None):
        table[proc.pid] = proc.info
    children: dict[int, list[int]] = {}
    for pid, info in table.items():
        children.setdefault(info["ppid"], []).append(pid)
    ours = set()
    stack = list(children.get(me, []))
    while stack:  # descendants, however deep
        pid = stack.pop()
        if pid not in ours:
            ours.add(pid)
            stack.extend(children.get(pid, []))
    for pid, info in table.items():
        if pid == me or pid in ours:
            continue
        environ = info["environ"] or {}
        if environ.get(RUN_MARKER) == RUN_ID or _group_of(pid) == group:
            ours.add(pid)
    exempt = _long_lived()
    found = {}
    for pid in ours:
        info = table[pid]
        if pid in exempt and info["status"] != psutil.STATUS_ZOMBIE:
            continue
        found[pid] = " ".join(info["cmdline"] or []) or info["name"] or "?"
    return found


def _group_of(pid: int) -> int | None:
    try:
        return os.getpgid(pid)
    except OSError:
        return None


def _threads() -> set[threading.Thread]:
    return {t for t in threading.enumerate() if t.is_alive()}


def _segments(processes: dict[int, str]) -> set[str]:
    """manybrains segments this test process (or one of its processes) may have made.

    A segment whose creator is alive outside this test run belongs to another program
    (another pytest session, a benchmark) and is not this test's leak.
    """
    try:
        entries = os.listdir("/dev/shm")
    except FileNotFoundError:
        return set()
    ours = {os.getpid(), *processes}
    found = set()
    for entry in entries:
        creator = segment.creator_pid(entry.removeprefix("sem."))
        if creator is None:
            continue
        if creator in ours or not segment.process_alive(creator):
            found.add(entry)
    return found


Snapshot = tuple[dict[int, str], set[threading.Thread], set[str]]


def _snapshot() -> Snapshot:
    processes = _processes()
    return processes, _threads(), _segments(processes)


def leftovers(before: Snapshot) -> list[str]:
    """What exists now that did not before ``before`` was taken."""
    procs, threads, segments = before
    now = _processes()
    found = [f"process {pid}: {cmd}" for pid, cmd in now.items() if pid not in procs]
    found += [f"thread {t.name}" for t in _threads() - threads]
    found += [f"/dev/shm/{name}" for name in _segments(now) - segments]
    return found


@pytest.fixture(autouse=True)
def no_leaks() -> Iterator[None]:
    """Fail the test if it leaves processes, threads or shared memory behind."""
    before = _snapshot()
    yield
    mb.shutdown_default_pool()
    deadline = time.monotonic() + _SETTLE_SECONDS
    while (left := leftovers(before)) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not left, "the test left these behind:\n  " + "\n  ".join(left)


@pytest.fixture(params=POOL_START_METHODS)
def start_method(request: pytest.FixtureRequest) -> str:
    """Each start method a Pool has on this platform."""
    return str(request.param)
