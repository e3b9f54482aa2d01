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
- :class:`Semaphore` records, per process, the permits it holds and the ones it is taking::

      segment:  [ recoveries | initial value ][ 256 slots of (identity, held, taking) ]

      acquire:  taking += 1 -> sem_wait -> held += 1, taking -= 1
      release:  sem_post -> held -= 1

  Every kill point leaves the dead process's slot with a count (held or taking) at least as
  large as the permits it really took. A waiter that has waited a slice gives back, out of
  the dead processes' counts, as many permits as are missing: ``initial - value - (held by
  live processes)``, the smaller of two looks a slice apart (a live process caught between
  taking a permit and counting it inflates one look). What is not given back stays counted
  for a later look. A process claims its slot once, under the recovery ``flock``. A
  semaphore used to signal (made with 0, released by one process, acquired by another) is
  never topped up: nothing is missing from 0.

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
from .mutex import (
    LOGGER,
    OWNER,
    SEM_VALUE_MAX,
    SLICE,
    WORDS,
    Mutex,
    open_semaphore,
    unlink_semaphore,
)
from .owners import Current
from .segment import Segment, attach, new_name, unlink

_SLOTS = 256
_RECOVERIES, _INITIAL, _SLOTS_AT = 0, 1, 2  # words of a semaphore's segment
_HELD, _TAKING = 1, 2  # words of a slot, after its identity

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

    _size = 8 * (_SLOTS_AT + 3 * _SLOTS)

    def __init__(self, value: int = 1, *, name: str | None = None) -> None:
        if (isinstance(value, bool) or not isinstance(value, int)
                or not 0 <= value <= SEM_VALUE_MAX):
            raise ValueError(f"value must be an int from 0 to {SEM_VALUE_MAX}, got {value!r}")
        self._initial = value
        super().__init__(name)

    _initial = 0  # an attached semaphore opens the existing count

    def _open(self, *, create: bool) -> None:
        self._lock = open_semaphore(self.name, create=create, value=self._initial,
                                    maximum=SEM_VALUE_MAX)
        self._words = self._segment.buf.cast("Q")
        if create:
            self._words[_INITIAL] = self._initial
        self._try = self._lock.acquire
        self._local = threading.Lock()  # this process's threads update one slot
        self._slot: tuple[int, int] | None = None  # (the identity it was claimed for, index)
        self._missing_before: int | None = None  # what the previous look found (_give_back)
        self.recovered = False

    def acquire(self, block: bool = True, timeout: float | None = None) -> bool:
        """Take a permit; False if none came in time (never with the defaults)."""
        if timeout is not None and timeout < 0:
            raise ValueError(f"timeout must be >= 0, got {timeout!r}")
        slot = self._my_slot()
        self._add(slot, _TAKING, +1)
        got = False
        try:
            if self._try(False):
                self.recovered = False
                got = True
            elif block:
                got = self._wait(None if timeout is None else time.monotonic() + timeout)
        finally:
            self._add(slot, _TAKING, -1, held=got)
        return got

    def release(self) -> None:
        """Give a permit back (a process may release what another took, as a signal)."""
        self._lock.release()
        self._add(self._my_slot(), _HELD, -1)

    def _add(self, slot: int | None, field: int, delta: int, *, held: bool = False) -> None:
        if slot is None:
            return
        words = self._words
        with self._local:
            if held:  # one step from taking to held, so no kill point counts it in neither
                words[slot + _HELD] += 1
            words[slot + field] = max(0, words[slot + field] + delta)

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
        """A slot for this process: an empty one, else one of a dead process that counts
        nothing (its counts may still be given back), else any of a dead process."""
        words, empty, spent, dead = self._words, None, None, None
        for index in _slot_indexes():
            identity = words[index]
            if identity == me:
                return index
            if not identity:
                empty = index if empty is None else empty
            elif not owners.alive(identity):
                counts = words[index + _HELD] or words[index + _TAKING]
                if not counts and spent is None:
                    spent = index
                dead = index if dead is None else dead
        free = next((i for i in (empty, spent, dead) if i is not None), None)
        if free is not None:
            words[free], words[free + _HELD], words[free + _TAKING] = me, 0, 0
        return free

    def _wait(self, deadline: float | None) -> bool:
        self._missing_before = None
        while True:
            left = SLICE if deadline is None else min(SLICE, deadline - time.monotonic())
            if self._lock.acquire(True, max(0.0, left)):
                self.recovered = False
                return True
            if self._any_dead() and self._recover() and self._try(False):
                self.recovered = True
                return True
            if deadline is not None and time.monotonic() >= deadline:
                return False

    def _any_dead(self) -> bool:
        words = self._words
        return any(words[i] and (words[i + _HELD] or words[i + _TAKING])
                   and not owners.alive(words[i]) for i in _slot_indexes())

    def _recover(self) -> int:
        with owners.recovering(self.name):
            return self._give_back()

    def _give_back(self) -> int:
        """Post permits that dead processes took and did not return (recovery right held).

        How many are missing is ``initial - value - held by live processes``, at most. A live
        process between taking a permit and counting it makes one look say one too many, so
        the smaller of this look and this waiter's previous one (a slice earlier) counts.
        """
        words = self._words
        live_held, dead = 0, []
        for index in _slot_indexes():
            identity = words[index]
            if not identity:
                continue
            if owners.alive(identity):
                live_held += words[index + _HELD]
            elif words[index + _HELD] or words[index + _TAKING]:
                dead.append(index)
        missing = int(words[_INITIAL]) - self.value() - live_held
        before, self._missing_before = self._missing_before, missing
        if before is None or not dead:
            return 0
        given = max(0, min(missing, before, sum(
            words[i + _HELD] + words[i + _TAKING] for i in dead)))
        left = given
        for index in dead:  # what is not given back stays counted, for a later look
            for field in (_HELD, _TAKING):
                take = min(left, words[index + field])
                words[index + field] -= take
                left -= take
        words[_RECOVERIES] += given
        for _ in range(given):
            self._lock.release()
        if given:
            pids = ", ".join(str(owners.pid_of(words[index])) for index in dead)
            LOGGER.warning("semaphore %s: %d permit(s) that process(es) %s took before they "
                           "died were given back", self.name, given, pids)
        return given

    @property
    def recoveries(self) -> int:
        """How many permits were given back from dead holders, in all processes."""
        return int(self._words[_RECOVERIES])

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


def _slot_indexes() -> range:
    return range(_SLOTS_AT, _SLOTS_AT + 3 * _SLOTS, 3)


def _unlink(name: str, creator: int) -> None:
    if os.getpid() == creator:  # a forked copy of the creator does not own the name
        unlink_lock(name)


def unlink_lock(name: str) -> None:
    """Remove the names of the lock or semaphore ``name`` (its creator's job)."""
    unlink_semaphore(name)
    unlink(name)
