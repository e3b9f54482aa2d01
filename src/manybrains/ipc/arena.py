"""An arena of shared-memory segments reused for big task arguments.

Writing into fresh ``/dev/shm`` pages costs a page fault per 4 KiB (about 1 GB/s), against
10+ GB/s for a copy into pages already mapped. So segments lent to a task come back here
when the task is done and are lent again: a pool that maps over big arrays again and again
pays the faults once. Segments are kept by size class (powers of two, from 1 MiB); only the
pages written are ever allocated, so a class bigger than the array costs address space, not
memory. Idle segments beyond ``max_idle_bytes`` are removed, oldest first.

Lending happens in the caller's thread and giving back in the engine's, hence the lock.
"""

from __future__ import annotations

import threading
from collections import OrderedDict

from .segment import Segment, new_name, sweep_orphans, unlink

_MIN_CLASS = 1 << 20


def size_class(nbytes: int) -> int:
    """The segment size used for ``nbytes``: the next power of two, at least 1 MiB."""
    return max(_MIN_CLASS, 1 << (max(nbytes, 1) - 1).bit_length())


class Arena:
    """Segments lent out and given back; see the module docstring."""

    def __init__(self, max_idle_bytes: int = 4 << 30) -> None:
        self._max_idle = max_idle_bytes
        self._idle: OrderedDict[str, Segment] = OrderedDict()  # oldest first
        self._idle_bytes = 0
        self._lent: dict[str, Segment] = {}
        self._lock = threading.Lock()
        self._closed = False

    def lend(self, nbytes: int) -> Segment:
        """A segment of at least ``nbytes``, reused when one of its size class is idle."""
        wanted = size_class(nbytes)
        with self._lock:
            for name, segment in self._idle.items():
                if segment.size == wanted:
                    del self._idle[name]
                    self._idle_bytes -= segment.size
                    self._lent[name] = segment
                    return segment
        segment = Segment.create(wanted, name=new_name("a"))
        segment.close_fd()  # the mapping is all we need; an arena can hold many segments
        with self._lock:
            self._lent[segment.name] = segment
        return segment

    def give_back(self, segment: Segment) -> None:
        """The task using ``segment`` is over: keep it for the next one (or remove it)."""
        with self._lock:
            if self._lent.pop(segment.name, None) is None:
                return
            if self._closed:
                unlink(segment.name)
                return
            self._idle[segment.name] = segment
            self._idle_bytes += segment.size
            while self._idle_bytes > self._max_idle:
                _, oldest = self._idle.popitem(last=False)
                self._idle_bytes -= oldest.size
                unlink(oldest.name)

    def discard(self, segment: Segment) -> None:
        """Remove ``segment`` for good: a worker may still be reading it."""
        with self._lock:
            self._lent.pop(segment.name, None)
        unlink(segment.name)

    def close(self) -> None:
        """Remove idle segments now and lent ones when given back. Idempotent."""
        with self._lock:
            self._closed = True
            idle, self._idle, self._idle_bytes = self._idle, OrderedDict(), 0
        for name in idle:
            unlink(name)

    def __repr__(self) -> str:
        return (f"<Arena idle={len(self._idle)} ({self._idle_bytes >> 20} MiB) "
                f"lent={len(self._lent)}>")


def release_shared_memory(arena: Arena, *, workers_gone: bool) -> None:
    """A pool is shutting down: close its arena; once its workers are gone, also remove
    segments that a killed process created and could not remove itself."""
    arena.close()
    if workers_gone:
        sweep_orphans()
