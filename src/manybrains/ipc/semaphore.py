"""Named semaphores and locks that travel to any process by name, and survive a killed holder.

``multiprocessing.Lock`` can only be handed to a child while it is being started, so it
cannot be an argument of a pool task. These wrap a C semaphore (``sem_open``) under a name
this module controls, plus a small shared-memory segment of the same name that records who
holds them: pickling sends the name and the receiver opens both, under every start method.
The creating object unlinks them (when garbage-collected or at exit); processes that opened
them by name never do.

A holder that dies (SIGKILL, the OOM killer, a pool's ``timeout=``) does not wedge the
others:

- :class:`Lock` is a :class:`~.mutex.Mutex` (see there): the next waiter repairs it within
  about 0.1 s (1 s if the holder died in the instant before it recorded itself).
- :class:`Semaphore` records, per process, how many permits it holds (``acquire`` minus
  ``release`` in that process)::

      segment:  [ recoveries ][ 256 slots of (process identity, permits held) ]

  A waiter that has waited a slice gives back the permits of every recorded process that
  no longer exists. A process claims its slot once, under the recovery ``flock``. One
  killed in the instant between taking a permit and recording it loses that permit; and
  since a permit counts for the process that took it, use a :class:`~.queue.Queue`, not a
  semaphore, to signal from process to process where consumers may be killed.

Either way the taker's ``recovered`` is true, ``recoveries`` counts take-overs across
processes, and a warning goes to the ``manybrains`` logger.
"""

from __future__ import annotations

import os
import threading
import time
import weakref
from types import TracebackType
from typing import Any, TypeVar

from . import owners
from .mutex import LOGGER, OWNER, SLICE, WORDS, Mutex, open_semaphore, unlink_semaphore
from .owners import Current
from .segment import Segment, attach, new_name, unlink

_SLOTS = 256
_MAX = 2**31 - 1  # SEM_VALUE_MAX on Linux

S = TypeVar("S", bound="_Named")


class _Named:
    """A semaphore and a segment under one name, created here or attached by name."""

    _size = 8 * WORDS

    def __init__(self, name: str | None) -> None:
        self.name = name or new_name("s")
        self._segment = Segment.create(self._size, name=self.name)
        self._segment.close_fd()
        try:
            self._open(create=True)
        except BaseException:
            unlink(self.name)
            raise
        weakref.finalize(self, _unlink, self.name, os.getpid())

    @classmethod
    def attach(cls: type[S], name: str) -> S:
        """The object another process created as ``name``; that one keeps owning it."""
        self = cls.__new__(cls)
        self.name = name
        try:
            self._segment = attach(name)
        except FileNotFoundError:
            raise FileNotFoundError(
                f"{cls.__name__.lower()} {name!r} no longer exists: the object that created "
                "it was closed or garbage-collected") from None
        self._open(create=False)
        return self

    def _open(self, *, create: bool) -> None:
        raise NotImplementedError

    def __reduce__(self) -> tuple[Any, tuple[str]]:
        return (type(self).attach, (self.name,))


class Lock(_Named):
    """A recursive lock shared between processes: ``with lock: ...``.

    If its holder dies, the next waiter repairs it (see :mod:`.mutex`); ``recovered`` is then
    true for the one that got it.
    """

    def __init__(self, *, name: str | None = None) -> None:
        super().__init__(name)

    def _open(self, *, create: bool) -> None:
        self._words = self._segment.buf.cast("Q")
        self._mutex = mutex = Mutex(self.name, self._words, self.name,
                                    f"manybrains lock {self.name}", create=create,
                                    recursive=True)
        self._try, self._post, self._count = (
            mutex.try_semaphore, mutex.release_semaphore, mutex.count)
        self.acquire, self.release = mutex.acquire, mutex.release  # type: ignore[method-assign]

    def acquire(self, block: bool = True, timeout: float | None = None) -> bool:
        """Take the lock (again, from the thread holding it); False if not free in time."""
        return self._mutex.acquire(block, timeout)  # replaced by the bound method in _open

    def release(self) -> None:
        """Release once; the lock is free when the holding thread released as often as it
        took it. Raises ``AssertionError`` from a thread that does not hold it."""
        self._mutex.release()  # replaced by the bound method in _open

    @property
    def recovered(self) -> bool:
        """Whether this holder got the lock after repairing it from a holder that died."""
        return self._mutex.recovered

    @property
    def recoveries(self) -> int:
        """How many times the lock was repaired after a dead holder, in all processes."""
        return self._mutex.recoveries

    @property
    def owner_pid(self) -> int | None:
        """The pid of the process holding the lock now (a snapshot), None if free."""
        return self._mutex.owner_pid

    # The common case of acquire and release, inlined: `with lock` is the usual spelling.
    def __enter__(self) -> bool:
        if self._try(False):
            self._words[OWNER] = Current.identity
            return True
        return self._mutex.acquire()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if self._count() <= 1:  # as Mutex.release
            self._words[OWNER] = 0
            self._mutex.recovered = False
        self._post()

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name} owner={self.owner_pid}>"


class Semaphore(_Named):
    """A counting semaphore shared between processes (``acquire``/``release``).

    Permits held by a process that no longer exists are given back to the waiters.
    """

    _size = 8 * (1 + 2 * _SLOTS)

    def __init__(self, value: int = 1, *, name: str | None = None) -> None:
        if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= _MAX:
            raise ValueError(f"value must be an int from 0 to {_MAX}, got {value!r}")
        self._initial = value
        super().__init__(name)

    _initial = 0  # an attached semaphore opens the existing count

    def _open(self, *, create: bool) -> None:
        self._lock = open_semaphore(self.name, create=create, value=self._initial,
                                    maximum=_MAX)
        self._words = self._segment.buf.cast("Q")
        self._try = self._lock.acquire
        self._local = threading.Lock()  # this process's threads update one slot
        self._slot: tuple[int, int] | None = None  # (the identity it was claimed for, index)
        self.recovered = False

    def acquire(self, block: bool = True, timeout: float | None = None) -> bool:
        """Take a permit; False if none came in time (never with the defaults)."""
        if not self._try(False):
            if not block:
                return False
            if timeout is not None and timeout < 0:
                raise ValueError(f"timeout must be >= 0, got {timeout!r}")
            if not self._wait(None if timeout is None else time.monotonic() + timeout):
                return False
        else:
            self.recovered = False
        self._count(+1)
        return True

    def release(self) -> None:
        """Give a permit back (a process may release what another took, as a signal)."""
        self._count(-1)
        self._lock.release()

    def _count(self, delta: int) -> None:
        index = self._my_slot()
        if index is None:
            return
        with self._local:
            held = self._words[index + 1]
            self._words[index + 1] = max(0, held + delta)

    def _my_slot(self) -> int | None:
        me = owners.me()
        if self._slot is not None and self._slot[0] == me:
            return self._slot[1]
        with owners.recovering(self.name):
            index = self._claim(me)
        self._slot = (me, index) if index is not None else None
        if index is None:
            LOGGER.warning("semaphore %s: more than %d processes use it; the permits of this "
                           "one are not recorded, so its death would not return them",
                           self.name, _SLOTS)
        return index

    def _claim(self, me: int) -> int | None:
        words, free = self._words, None
        for index in range(1, 1 + 2 * _SLOTS, 2):
            if words[index] == me:
                return index
            if free is None and (words[index] == 0 or not owners.alive(words[index])):
                self._give_back(index)
                free = index
        if free is not None:
            words[free], words[free + 1] = me, 0
        return free

    def _wait(self, deadline: float | None) -> bool:
        while True:
            left = SLICE if deadline is None else min(SLICE, deadline - time.monotonic())
            if self._lock.acquire(True, max(0.0, left)):
                self.recovered = False
                return True
            if self._recover() and self._try(False):
                self.recovered = True
                return True
            if deadline is not None and time.monotonic() >= deadline:
                return False

    def _recover(self) -> int:
        """Give back the permits of recorded processes that died; how many."""
        words = self._words
        dead = [index for index in range(1, 1 + 2 * _SLOTS, 2)
                if words[index] and words[index + 1] and not owners.alive(words[index])]
        if not dead:
            return 0
        with owners.recovering(self.name):
            return sum(self._give_back(index) for index in dead)

    def _give_back(self, index: int) -> int:
        """Return slot ``index``'s permits if its process died (recovery right held)."""
        words = self._words
        identity, held = words[index], words[index + 1]
        if not identity or not held or owners.alive(identity):
            return 0
        words[index], words[index + 1] = 0, 0
        words[0] += held
        for _ in range(held):
            self._lock.release()
        LOGGER.warning("semaphore %s: process %d died holding %d permit(s); given back",
                       self.name, owners.pid_of(identity), held)
        return int(held)

    @property
    def recoveries(self) -> int:
        """How many permits were given back from dead holders, in all processes."""
        return int(self._words[0])

    def value(self) -> int:
        """The current count (a snapshot)."""
        return int(self._lock._get_value())

    def __enter__(self) -> bool:
        return self.acquire()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.release()

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name} value={self.value()}>"


def _unlink(name: str, creator: int) -> None:
    if os.getpid() == creator:  # a forked copy of the creator does not own the name
        unlink_lock(name)


def unlink_lock(name: str) -> None:
    """Remove the names of the lock or semaphore ``name`` (its creator's job)."""
    unlink_semaphore(name)
    unlink(name)
