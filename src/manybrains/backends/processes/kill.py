"""Killing a worker: the process and everything it started, at once.

A task may start processes of its own (a subprocess, a nested pool); killing only the worker
would leave them running with nobody to wait for them.
"""

from __future__ import annotations

import contextlib
import os
import signal


def kill_tree(pid: int | None) -> None:
    """SIGKILL a process and every process below it (children found first, then killed)."""
    if pid is None:
        return
    import psutil  # only needed when something goes wrong; keeps worker start-up light

    try:
        children = psutil.Process(pid).children(recursive=True)
    except psutil.Error:  # it is already gone, or /proc could not be read: kill it anyway
        children = []
    for child in children:
        with contextlib.suppress(psutil.Error):
            child.kill()
    # os.kill, not psutil: the process must die even when psutil doubts its identity.
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)
