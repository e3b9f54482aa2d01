"""``Mutex``: a process-shared lock that a waiter repairs when its holder died.

A POSIX semaphore does the locking (an uncontended ``sem_trywait`` never leaves user space);
two words of shared memory beside it say who holds it::

    words:   [ owner identity | recoveries ]

    acquire:  sem_trywait (or a wait in slices of SLICE s) -> owner = me
    release:  owner = 0 (the last release of a recursive hold) -> sem_post

A waiter that is still waiting after a slice looks at the words (:mod:`.owners`):

- **the owner is recorded and no longer exists** (SIGKILL, the OOM killer, a pool's
  ``timeout=``): the waiter repairs the lock at once: it clears the owner and posts the
  semaphore in the dead owner's place, then competes for it as usual. So the next holder
  gets it within about ``SLICE`` seconds.
- **nobody is recorded, yet the semaphore stayed taken at every look for UNOWNED_GRACE
  seconds**: a process died in the few instructions between taking the semaphore and
  recording itself (or between clearing its record and posting). It is repaired the same
  way. A live process stopped (``SIGSTOP``) for that long at exactly that point would lose
  the lock: that is the price of an uncontended path without a system call.

Repairs run one at a time under :func:`.owners.recovering` and re-check the words and the
semaphore first, so a lock is never posted twice. Each adds to ``recoveries`` and logs a
warning on the ``manybrains`` logger; a waiter that repaired the lock and then got it sees
``recovered`` true until it releases. What the lock guarded may be half-updated: the dead
owner stopped in the middle of it. A ``repair`` callback (the queue's) runs before the post,
while nobody can hold the lock.

Robust pthread mutexes would close the unrecorded window, but cost five times as much per
lock and unlock through ctypes and do not exist on macOS; this design is the portable one.
"""

from __future__ import annotations

import _multiprocessing  # type: ignore[import-not-found]
import contextlib
import logging
import time
from collections.abc import Callable
from typing import Any

from . import owners
from .owners import Current

LOGGER = logging.getLogger("manybrains")

SLICE = 0.1  # seconds a waiter sleeps between looks at the owner
UNOWNED_GRACE = 1.0  # seconds taken yet unrecorded at every look before a repair
OWNER, RECOVERIES = 0, 1
WORDS = 2
SEM_VALUE_MAX = 2**31 - 1  # Linux's: the highest count a counting semaphore may reach
_RECURSIVE_MUTEX, _SEMAPHORE = 0, 1


def open_semaphore(name: str, *, create: bool, kind: int = _SEMAPHORE, value: int = 1,
                   maximum: int = 1) -> Any:
    """The POSIX semaphore ``/name`` as a ``_multiprocessing.SemLock``, new or opened."""
    if create:
        return _multiprocessing.SemLock(kind, value, maximum, "/" + name, False)
    try:
        return _multiprocessing.SemLock._rebuild(0, kind, maximum, "/" + name)
    except FileNotFoundError:
        raise FileNotFoundError(
            f"{name!r} no longer exists: the object that created it was closed or "
            "garbage-collected") from None


def unlink_semaphore(name: str) -> None:
    with contextlib.suppress(FileNotFoundError):
        _multiprocessing.sem_unlink("/" + name)


class Mutex:
    """A lock over the semaphore ``/name`` and two shared words; see the module docstring.

    Args:
        name: the semaphore's name.
        words: a writable ``memoryview`` of at least two unsigned 64-bit words.
        segment: the shared-memory segment holding ``words`` (repairs lock its file).
        label: how warnings name the lock.
        create: make the semaphore (else open it).
        recursive: the thread holding it may take it again (and must release as often).
        repair: called before a dead holder's lock is posted, under the repair ``flock``.
    """

    __slots__ = ("_label", "_repair", "_segment", "_semaphore", "_words",
                 "count", "recovered", "release_semaphore", "try_semaphore")

    def __init__(self, name: str, words: memoryview, segment: str, label: str, *,
                 create: bool, recursive: bool = False,
                 repair: Callable[[], None] | None = None) -> None:
        kind = _RECURSIVE_MUTEX if recursive else _SEMAPHORE
        self._semaphore = open_semaphore(name, create=create, kind=kind)
        self._words, self._segment, self._label, self._repair = words, segment, label, repair
        # Bound C methods, for callers that inline acquire and release on a hot path.
        self.try_semaphore, self.release_semaphore = (
            self._semaphore.acquire, self._semaphore.release)
        self.count = self._semaphore._count  # this thread's holds (C)
        self.recovered = False

    def acquire(self, block: bool = True, timeout: float | None = None) -> bool:
        """Take the lock; ``False`` if it was not free in time (never with the defaults)."""
        if self.try_semaphore(False):
            self._words[OWNER] = Current.identity
            return True
        if not block:
            return False
        if timeout is not None and timeout < 0:
            raise ValueError(f"timeout must be >= 0, got {timeout!r}")
        return self.wait(None if timeout is None else time.monotonic() + timeout)

    def release(self) -> None:
        if self.count() <= 1:  # the last release of this thread's hold
            self._words[OWNER] = 0
            self.recovered = False
        self.release_semaphore()

    def wait(self, deadline: float | None) -> bool:
        """The slow path: wait in slices until the lock is ours or ``deadline`` passes."""
        repaired, unowned_since = False, None
        while True:
            left = SLICE if deadline is None else min(SLICE, deadline - time.monotonic())
            if self._semaphore.acquire(True, max(0.0, left)):
                self._words[OWNER] = Current.identity
                self.recovered = repaired
                return True
            now, owner = time.monotonic(), self._words[OWNER]
            if owner or self._semaphore._get_value():
                unowned_since = None
            elif unowned_since is None:
                unowned_since = now
            if (owner and not owners.alive(owner)) or (
                    unowned_since is not None and now - unowned_since >= UNOWNED_GRACE):
                repaired = self._repair_for(owner) or repaired
                unowned_since = None
            if deadline is not None and now >= deadline:
                return False

    def _repair_for(self, owner: int) -> bool:
        """Post the lock in the place of its dead holder ``owner`` (0: unrecorded)."""
        with owners.recovering(self._segment):
            words = self._words
            if words[OWNER] != owner or self._semaphore._get_value():
                return False  # repaired by another waiter, or released meanwhile
            if self._repair is not None:
                self._repair()
            words[OWNER] = 0
            words[RECOVERIES] += 1
            _post_for_another(self._semaphore)
        who = f"process {owners.pid_of(owner)}" if owner else "a process"
        LOGGER.warning("%s: %s died holding it; process %d repaired it (what it guarded may be "
                       "half-updated)", self._label, who, owners.pid_of(Current.identity))
        return True

    @property
    def owner_pid(self) -> int | None:
        """The pid recorded as holding the lock now (a snapshot); None if nobody."""
        owner = self._words[OWNER]
        return owners.pid_of(owner) if owner else None

    @property
    def recoveries(self) -> int:
        """How many times a waiter repaired this lock after a dead holder (all processes)."""
        return int(self._words[RECOVERIES])


def _post_for_another(semaphore: Any) -> None:
    # A recursive SemLock refuses to release what this thread did not take: post through a
    # plain semaphore handle on the same name instead.
    if semaphore.kind == _SEMAPHORE:
        semaphore.release()
    else:
        _multiprocessing.SemLock._rebuild(0, _SEMAPHORE, 1, semaphore.name).release()
