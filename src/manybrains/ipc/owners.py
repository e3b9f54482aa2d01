"""Who holds a shared primitive, whether that process still lives, and one recovery at a time.

A process killed while it holds a lock never releases it. So manybrains' locks record their
holder in shared memory, and a waiter that has waited a while checks whether the holder
still exists (:mod:`.mutex`, :mod:`.semaphore`). A holder is recorded as one 64-bit
*identity*: its pid in the low 22 bits and the time it started above them, so a pid that
the system has since given to a new process never passes for the dead holder::

    identity = start_ticks << 22 | pid        (0: nobody)

Recoveries are serialized by an exclusive ``flock`` on the primitive's shared-memory file:
the kernel drops it when its holder dies, so a waiter killed while recovering blocks
nobody.

This module is the platform seam for both: Linux reads ``/proc/<pid>/stat`` and locks
``/dev/shm/<name>``; other systems will read the start time through psutil and lock a file
of their own here.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import sys
from collections.abc import Iterator

_PID_BITS = 22  # Linux's largest pid_max is 2**22
_PID_MASK = (1 << _PID_BITS) - 1
_GONE = ("Z", "X", "x")  # zombie or dead: the process has ended, only its entry is left


def identity_of(pid: int) -> int:
    """The identity of the live process ``pid``; 0 if there is none (or it has ended)."""
    if sys.platform.startswith("linux"):
        try:
            with open(f"/proc/{pid}/stat", "rb") as f:
                stat = f.read()
        except OSError:  # no such process
            return 0
        fields = stat[stat.rindex(b")") + 2:].split()  # the name may hold spaces and ')'
        if fields[0].decode() in _GONE:
            return 0
        return int(fields[19]) << _PID_BITS | pid
    return _identity_from_psutil(pid)


def _identity_from_psutil(pid: int) -> int:
    import psutil

    try:
        process = psutil.Process(pid)
        if process.status() in (psutil.STATUS_ZOMBIE, psutil.STATUS_DEAD):
            return 0
        ticks = round((process.create_time() - psutil.boot_time()) * 100)
    except psutil.Error:
        return 0
    return ticks << _PID_BITS | pid


def pid_of(identity: int) -> int:
    return identity & _PID_MASK


def alive(identity: int) -> bool:
    """Whether the process recorded as ``identity`` still runs (a reused pid does not count)."""
    if identity >> _PID_BITS == 0:  # recorded without a start time (see Current.refresh)
        return identity != 0 and identity_of(identity) != 0
    return identity_of(pid_of(identity)) == identity


class Current:
    """This process's identity (``Current.identity``), read once and again in a forked child.

    A class attribute, not a call: the queue's hot paths read it for every item.
    """

    identity = 0

    @classmethod
    def refresh(cls) -> None:
        # Without a readable start time (no /proc, say) the pid alone stands for this
        # process: never 0, which would read as "nobody holds it".
        cls.identity = identity_of(os.getpid()) or os.getpid()


Current.refresh()
os.register_at_fork(after_in_child=Current.refresh)


def me() -> int:
    """This process's identity."""
    return Current.identity


@contextlib.contextmanager
def recovering(name: str) -> Iterator[None]:
    """Hold the recovery right of the shared-memory segment ``name`` (one process at a time)."""
    fd = os.open(f"/dev/shm/{name}", os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing drops the flock
