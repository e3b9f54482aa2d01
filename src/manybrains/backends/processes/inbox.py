"""Commands from caller threads to the supervisor thread, and the byte that wakes it.

Callers append a command to a deque and write one byte to a pipe; the supervisor's
``multiprocessing.connection.wait`` watches the pipe's read end beside the workers'
connections and sentinels, so a command is seen at once and nothing ever polls. Only the
supervisor thread reads commands, so the deque needs no lock (its append and popleft are
atomic).

Only the first command since the supervisor last emptied the pipe writes the byte: a burst
of submits costs one system call, not one each (which also handed the supervisor the GIL
after every task). The supervisor empties the pipe *before* it marks it empty and *then*
reads the deque, so a command is always either in the deque it is about to read or behind a
byte still in the pipe.
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections import deque
from collections.abc import Iterator
from typing import Any


class Inbox:
    """A queue of ``(command, payload)`` whose :attr:`wake_fd` is readable while it has news."""

    def __init__(self) -> None:
        self._commands: deque[tuple[str, Any]] = deque()
        self.wake_fd, self._wake_w = os.pipe()
        os.set_blocking(self._wake_w, False)
        self._lock = threading.Lock()  # the pipe is closed once, under this lock
        self._signalled = False  # a byte is in the pipe that the supervisor has not read

    def post(self, command: str, payload: Any) -> None:
        """From any thread: queue a command and wake the supervisor."""
        self._commands.append((command, payload))
        if self._signalled:  # the supervisor will read the deque after this append
            return
        with self._lock:
            if self._wake_w < 0:  # the supervisor has exited; nobody reads the inbox
                return
            self._signalled = True
            with contextlib.suppress(BlockingIOError):  # full pipe: a wake-up is pending
                os.write(self._wake_w, b"\0")

    def drain(self) -> Iterator[tuple[str, Any]]:
        """The supervisor's side: every command posted so far, oldest first."""
        while self._commands:
            yield self._commands.popleft()

    def woken(self) -> None:
        """The supervisor's side: ``wake_fd`` was readable; empty it. The deque must be
        read after this (see the module docstring)."""
        with contextlib.suppress(BlockingIOError):
            os.read(self.wake_fd, 65536)
        self._signalled = False

    def count(self, command: str) -> int:
        """How many ``command`` commands wait to be read."""
        return sum(1 for c, _ in list(self._commands) if c == command)

    def close(self) -> None:
        """The supervisor has exited: later posts are kept but wake nobody."""
        with self._lock:
            os.close(self.wake_fd)
            os.close(self._wake_w)
            self._wake_w = -1
