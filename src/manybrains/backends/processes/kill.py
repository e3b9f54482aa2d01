"""Killing a worker: the process and everything it started, at once.

A task may start processes of its own (a subprocess, a nested pool); killing only the worker
would leave them running with nobody to wait for them.

On Linux the process tree is read from ``/proc`` directly, as psutil reads it there: importing
psutil costs several milliseconds, and the supervisor thread must never import (so every pool
would pay for it at start, for a kill that most pools never make). Elsewhere psutil finds the
children, imported by the pool's caller (:data:`.startup.ENGINE_MODULES`).
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys


def kill_tree(pid: int | None) -> None:
    """SIGKILL a process and every process below it (children found first, then killed)."""
    if pid is None:
        return
    if sys.platform.startswith("linux"):
        listed = [(child, _started(child)) for child in _descendants(pid)]
        for child, started in listed:
            # Still the process listed (its pid not reused since), as psutil checks.
            if started is not None and _started(child) == started:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(child, signal.SIGKILL)
    else:  # pragma: no cover - Linux above
        _kill_children_with_psutil(pid)
    # os.kill, not psutil: the process must die even when psutil doubts its identity.
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)


def _descendants(pid: int) -> list[int]:
    """Every live process below ``pid``, parents before their children: one pass over
    ``/proc`` for each process's parent, as psutil's ``children(recursive=True)`` makes."""
    children: dict[int, list[int]] = {}
    try:
        entries = os.listdir("/proc")
    except OSError:  # /proc could not be read: kill the process alone
        return []
    for entry in entries:
        fields = _stat(entry) if entry.isdigit() else None
        if fields is not None:
            children.setdefault(int(fields[1]), []).append(int(entry))
    found: list[int] = []
    below = [pid]
    seen = {pid}
    while below:
        for child in children.get(below.pop(), ()):
            if child not in seen:  # a pid reused mid-scan may show up twice: once will do
                seen.add(child)
                found.append(child)
                below.append(child)
    return found


def _kill_children_with_psutil(pid: int) -> None:  # pragma: no cover - off Linux
    import psutil  # imported by the pool's caller, before the supervisor thread runs

    try:
        children = psutil.Process(pid).children(recursive=True)
    except psutil.Error:  # it is already gone, or the table could not be read: kill it anyway
        children = []
    for child in children:
        with contextlib.suppress(psutil.Error):
            child.kill()


def _stat(pid: int | str) -> list[bytes] | None:
    """The fields of ``/proc/<pid>/stat`` after the name (state first); None if the process
    is gone or has ended (a zombie: only its entry is left)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
    except OSError:  # no such process
        return None
    fields = stat[stat.rindex(b")") + 2:].split()  # the name may hold spaces and ')'
    return None if fields[0] in (b"Z", b"X", b"x") else fields


def _started(pid: int) -> bytes | None:
    """When the live process ``pid`` started (clock ticks since boot); None if none runs."""
    fields = _stat(pid)
    return None if fields is None else fields[19]
