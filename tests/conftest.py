"""Every test runs under a hard timeout (pytest-timeout, see pyproject.toml) and under
``no_leaks``: a test fails if it leaves child processes, threads or /dev/shm segments behind.

/dev/shm is machine-wide: only manybrains segments made by this process tree (or by a process
that has since died) are counted, so a concurrent session's segments are not blamed here.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator

import psutil
import pytest

import manybrains as mb
from manybrains.ipc import segment

# Started once and kept for the life of the test process, by design of multiprocessing.
_LONG_LIVED = ("forkserver", "resource_tracker")
_SETTLE_SECONDS = 5.0


def _children() -> dict[int, str]:
    found = {}
    for child in psutil.Process().children(recursive=True):
        try:
            cmdline = " ".join(child.cmdline())
            if child.status() == psutil.STATUS_ZOMBIE or not any(
                    name in cmdline for name in _LONG_LIVED):
                found[child.pid] = cmdline or child.name()
        except psutil.Error:
            continue
    return found


def _threads() -> set[threading.Thread]:
    return {t for t in threading.enumerate() if t.is_alive()}


def _segments() -> set[str]:
    """manybrains segments this test process (or one of its processes) may have made.

    A segment whose creator is alive outside this process tree belongs to another program
    (another pytest session, a benchmark) and is not this test's leak.
    """
    try:
        entries = os.listdir("/dev/shm")
    except FileNotFoundError:
        return set()
    ours = {os.getpid(), *(p.pid for p in psutil.Process().children(recursive=True))}
    found = set()
    for entry in entries:
        creator = segment.creator_pid(entry.removeprefix("sem."))
        if creator is None:
            continue
        if creator in ours or not segment.process_alive(creator):
            found.add(entry)
    return found


def _leftovers(before: tuple[dict[int, str], set[threading.Thread], set[str]]) -> list[str]:
    procs, threads, segments = before
    found = [f"process {pid}: {cmd}" for pid, cmd in _children().items() if pid not in procs]
    found += [f"thread {t.name}" for t in _threads() - threads]
    found += [f"/dev/shm/{name}" for name in _segments() - segments]
    return found


@pytest.fixture(autouse=True)
def no_leaks() -> Iterator[None]:
    """Fail the test if it leaves processes, threads or shared memory behind."""
    before = (_children(), _threads(), _segments())
    yield
    mb.shutdown_default_pool()
    deadline = time.monotonic() + _SETTLE_SECONDS
    while (left := _leftovers(before)) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert not left, "the test left these behind:\n  " + "\n  ".join(left)


START_METHODS = [m for m in ("fork", "forkserver", "spawn")
                 if m in __import__("multiprocessing").get_all_start_methods()]


@pytest.fixture(params=START_METHODS)
def start_method(request: pytest.FixtureRequest) -> str:
    """Each start method this platform has."""
    return str(request.param)
