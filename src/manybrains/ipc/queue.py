"""``Queue``: a multi-producer, multi-consumer queue in shared memory.

Items are pickled straight into a ring buffer in a shared-memory segment; there is no feeder
thread and no pipe, so a ``put`` costs a pickle, a copy and two semaphore operations, and a
``get`` is woken directly by the ``put`` that fed it::

    shared segment:  [ put side | get side | closed, space-waiting ][ ring of records ... ]
    put side:        tail, items put, the next publish (tail, items), the put lock's words
    get side:        head, items got, the next publish (head, items), the get lock's words
    record:          [ u32 length (top bit: spilled) ][ pickle, or a spill segment's name ]

    producers  --put lock-->  write at tail, publish tail, items.release()
    consumers  items.acquire() --get lock-->  read at head, publish head

One lock per side makes the ring single-producer/single-consumer between the two lock
holders, so producers and consumers never wait for each other's lock. The ``items``
semaphore counts records and wakes readers. An item larger than a quarter of the ring
travels in a segment of its own ("spilled").

**A process killed anywhere inside the queue loses at most the item it was moving.** The
ring's positions, not the semaphores, are the truth:

- Both locks are :class:`~.mutex.Mutex`: a waiter takes one over from a dead holder.
- A side publishes by writing its next (position, count) first, then position and count.
  Whoever takes over a side's lock finishes a publish that had begun.
- A reader waits for ``items`` in slices and looks at the ring between them, so a record
  whose wake-up was lost is read within a slice; a wake-up without a record is skipped.
- ``maxsize`` compares the two counts; no semaphore holds room that a dead process took.

``close()`` closes the queue for every process: ``put`` raises, readers drain what is left
and then get :class:`QueueClosed` (iteration simply ends).
"""

from __future__ import annotations

import contextlib
import functools
import os
import pickle
import queue as _stdlib_queue
import struct
import time
import weakref
from collections.abc import Iterable, Iterator
from typing import Any

import cloudpickle

from .._errors import ManybrainsError
from .mutex import (
    LOGGER,
    SEM_VALUE_MAX,
    SLICE,
    WORDS,
    Mutex,
    open_semaphore,
    unlink_semaphore,
)
from .owners import Current
from .segment import PREFIX, Segment, attach, new_name, unlink

Empty = _stdlib_queue.Empty
Full = _stdlib_queue.Full

_HEADER = 256  # the put side, the get side and the flags on separate cache lines
# Indexes into the header as u64 words: position, count, the next publish of both, the lock.
_TAIL, _PUT_N, _NEXT_TAIL, _NEXT_PUT_N, _PUT_LOCK = 0, 1, 2, 3, 4
_HEAD, _GET_N, _NEXT_HEAD, _NEXT_GET_N, _GET_LOCK = 8, 9, 10, 11, 12
_CLOSED, _WAITING = 16, 17
_LEN = struct.Struct("<I")
_SPILLED = 1 << 31
_WAKE_CHECK = 0.05  # a producer waiting for room re-checks this often (see _wait_for_room)
_LOST = object()  # a spilled item whose segment a killed reader had already removed
_TAGS = ("p", "g", "i", "w")  # the put lock, the get lock, items, space: semaphore names


class QueueClosed(ManybrainsError, ValueError):
    """The queue was closed: no more ``put``; ``get`` raises once it is drained."""


class Queue:
    """A fast process-safe FIFO queue, passable to spawned processes and pool tasks.

    Args:
        maxsize: ``put`` blocks while this many items are queued; 0 means no item limit.
        capacity: bytes of the shared ring buffer (pickled items plus 4 bytes each); ``put``
            also blocks while the ring is full.
    """

    def __init__(self, maxsize: int = 0, *, capacity: int = 4 << 20) -> None:
        if isinstance(maxsize, bool) or not isinstance(maxsize, int) or maxsize < 0:
            raise ValueError(f"maxsize must be an int >= 0, got {maxsize!r}")
        if capacity < 4096:
            raise ValueError(f"capacity must be at least 4096 bytes, got {capacity!r}")
        name = new_name("q")
        segment = Segment.create(_HEADER + capacity, name=name)
        self._finalizer: weakref.finalize[Any, Any] | None = weakref.finalize(
            self, _destroy, name, os.getpid())
        self._setup(name, segment, maxsize, create=True)

    @classmethod
    def _open(cls, name: str, maxsize: int) -> Queue:
        self = cls.__new__(cls)
        self._finalizer = None
        self._setup(name, attach(name), maxsize, create=False)
        return self

    def _setup(self, name: str, segment: Segment, maxsize: int, *, create: bool) -> None:
        self.name, self.maxsize, self._segment = name, maxsize, segment
        self.capacity = segment.size - _HEADER
        self._index = index = segment.buf[:_HEADER].cast("Q")
        self._ring = segment.buf[_HEADER:]

        def counting(tag: str) -> Any:
            return open_semaphore(name + tag, create=create, value=0, maximum=SEM_VALUE_MAX)

        def mutex(side: str, at: int, publish: tuple[int, int, int, int]) -> Mutex:
            return Mutex(name + side[0], index[at:at + WORDS], name,
                         f"the {side} lock of queue {name}", create=create,
                         repair=functools.partial(_finish_publish, index, *publish))

        self._put_lock = mutex("put", _PUT_LOCK, (_TAIL, _PUT_N, _NEXT_TAIL, _NEXT_PUT_N))
        self._get_lock = mutex("get", _GET_LOCK, (_HEAD, _GET_N, _NEXT_HEAD, _NEXT_GET_N))
        self._items, self._space = counting("i"), counting("w")
        self._spill_above = self.capacity // 4 - _LEN.size
        # Bound methods, looked up once: these run for every item.
        self._items_acquire, self._items_release = self._items.acquire, self._items.release
        self._get_lock_release = self._get_lock.release
        self._put_lock_release = self._put_lock.release
        self._put_try = self._put_lock.try_semaphore
        self._put_post = self._put_lock.release_semaphore
        self._get_try = self._get_lock.try_semaphore
        self._get_post = self._get_lock.release_semaphore

    def __reduce__(self) -> tuple[Any, tuple[str, int]]:
        return (Queue._open, (self.name, self.maxsize))

    # ---- the two locks -----------------------------------------------------------------

    def _lock(self, mutex: Mutex, deadline: float | None, error: type[Exception]) -> None:
        """Take a side's lock by ``deadline``, else raise ``error``."""
        if mutex.acquire(False):
            return
        if deadline == 0.0:  # held for microseconds unless the queue is full: wait a moment
            deadline = time.monotonic() + _WAKE_CHECK
        if not mutex.wait(deadline):
            raise error

    # ---- putting ------------------------------------------------------------------------

    def put(self, item: Any, block: bool = True, timeout: float | None = None) -> None:
        """Put ``item``; waits for room unless ``block`` is false (then raises ``queue.Full``).

        Raises :class:`QueueClosed` once the queue is closed.
        """
        record = self._encode(item)
        if not block or timeout is not None:
            return self._put_records([record], block, timeout)
        index, capacity = self._index, self.capacity
        # The common case, inlined (Mutex.acquire and release): the hot path of every producer
        if self._put_try(False):
            index[_PUT_LOCK] = Current.identity
        else:
            self._lock(self._put_lock, None, Full)
        try:
            tail = index[_TAIL]
            end = tail % capacity + len(record)
            if (index[_CLOSED] or capacity - (tail - index[_HEAD]) < len(record)
                    or (self.maxsize and index[_PUT_N] - index[_GET_N] >= self.maxsize)):
                self._write_batches([record], None)  # closed, or wait for room
            else:
                if end <= capacity:
                    self._ring[end - len(record):end] = record
                else:
                    self._write(tail % capacity, record)
                count = index[_PUT_N] + 1
                index[_NEXT_TAIL], index[_NEXT_PUT_N] = tail + len(record), count
                index[_TAIL], index[_PUT_N] = tail + len(record), count
                self._items_release()
        finally:
            index[_PUT_LOCK] = 0
            self._put_post()
        return None

    def put_nowait(self, item: Any) -> None:
        """``put(item, block=False)``."""
        self._put_records([self._encode(item)], False, None)

    def put_many(self, items: Iterable[Any], block: bool = True,
                 timeout: float | None = None) -> None:
        """Put every item of ``items`` in order, taking the producer lock once.

        Items that fit are written to the ring in one copy; each is still a separate item
        for the readers.
        """
        self._put_records([self._encode(item) for item in items], block, timeout)

    def _put_records(self, records: list[bytes], block: bool, timeout: float | None) -> None:
        deadline = _deadline(block, timeout)
        self._lock(self._put_lock, deadline, Full)
        try:
            self._write_batches(records, deadline)
        finally:
            self._put_lock_release()

    def _write_batches(self, records: list[bytes], deadline: float | None) -> None:
        """Write ``records`` in as few copies as the free room allows (producer lock held)."""
        index, done = self._index, 0
        while done < len(records):
            self._check_open()
            free = self.capacity - (index[_TAIL] - index[_HEAD])
            slots = self.maxsize - (index[_PUT_N] - index[_GET_N]) if self.maxsize else -1
            batch, size = _fitting(records, done, free, slots)
            if not batch:
                self._wait_for_room(len(records[done]), deadline)
                continue
            tail, count = index[_TAIL], index[_PUT_N] + len(batch)
            self._write(tail % self.capacity, batch[0] if len(batch) == 1 else b"".join(batch))
            index[_NEXT_TAIL], index[_NEXT_PUT_N] = tail + size, count
            index[_TAIL], index[_PUT_N] = tail + size, count
            for _ in batch:
                self._items_release()
            done += len(batch)

    def _room(self, need: int) -> bool:
        index = self._index
        return (self.capacity - (index[_TAIL] - index[_HEAD]) >= need and not (
            self.maxsize and index[_PUT_N] - index[_GET_N] >= self.maxsize))

    def _wait_for_room(self, need: int, deadline: float | None) -> None:
        index = self._index
        if deadline == 0.0 or (deadline is not None and time.monotonic() >= deadline):
            raise Full
        index[_WAITING] = 1
        if self._room(need):
            return
        # The flag and the head live in plain memory, so a reader may miss the flag just
        # set; bounded waits turn such a lost wake-up into a short delay, never a hang.
        self._space.acquire(True, _bounded(deadline, _WAKE_CHECK))

    def _write(self, position: int, data: bytes) -> None:
        end = position + len(data)
        if end <= self.capacity:
            self._ring[position:end] = data
        else:
            split = self.capacity - position
            self._ring[position:] = data[:split]
            self._ring[:end - self.capacity] = data[split:]

    def _encode(self, item: Any) -> bytes:
        try:
            data = pickle.dumps(item, pickle.HIGHEST_PROTOCOL)
        except (pickle.PicklingError, AttributeError, TypeError):
            data = cloudpickle.dumps(item, pickle.HIGHEST_PROTOCOL)  # lambdas, closures
        if len(data) > self._spill_above:
            return self._spill(data)
        return _LEN.pack(len(data)) + data

    def _spill(self, data: bytes) -> bytes:
        segment = Segment.create(len(data), name=f"{self.name}x{os.urandom(6).hex()}")
        segment.buf[:len(data)] = data
        segment.close_fd()
        name = segment.name.encode()
        return _LEN.pack(len(name) | _SPILLED) + name

    # ---- getting ------------------------------------------------------------------------

    def get(self, block: bool = True, timeout: float | None = None) -> Any:
        """Remove and return the oldest item, waiting for one unless ``block`` is false.

        Raises ``queue.Empty`` when none came in time, :class:`QueueClosed` when the queue
        is closed and drained.
        """
        if self._items_acquire(False):  # the common case, inlined (see _take)
            index = self._index
            if self._get_try(False):
                index[_GET_LOCK] = Current.identity
            else:
                self._lock(self._get_lock, None, Empty)
            item: Any = _LOST
            try:
                head = index[_HEAD]
                if head != index[_TAIL]:
                    item = self._read_item(head)
                    if index[_WAITING]:
                        index[_WAITING] = 0
                        self._space.release()
            finally:
                index[_GET_LOCK] = 0
                self._get_post()
            if item is not _LOST:
                return item
            if index[_CLOSED]:  # the close wake-up, or another reader took the record
                items = self._take(1, tokens=1)
                if items:
                    return items[0]
        deadline = _deadline(block, timeout)
        while True:  # no item, or a wake-up whose item another reader took
            items = self._take(1, tokens=self._wait_for_item(deadline))
            if items:
                return items[0]

    def get_nowait(self) -> Any:
        """``get(block=False)``."""
        return self.get(False)

    def get_many(self, max_items: int, block: bool = True, timeout: float | None = None
                 ) -> list[Any]:
        """Up to ``max_items`` items: waits (like ``get``) for the first, takes what is there."""
        if max_items < 1:
            raise ValueError(f"max_items must be >= 1, got {max_items!r}")
        deadline = _deadline(block, timeout)
        while True:
            tokens = self._wait_for_item(deadline)
            while tokens < max_items and self._items_acquire(False):
                tokens += 1
            items = self._take(max_items, tokens=tokens)
            if items:
                return items

    def _wait_for_item(self, deadline: float | None) -> int:
        """Wait for a wake-up (1) or for a record whose wake-up was lost (0); else Empty."""
        index = self._index
        while True:
            if self._items.acquire(True, _bounded(deadline, SLICE)):
                return 1
            if index[_HEAD] != index[_TAIL] or index[_CLOSED]:
                return 0
            if deadline is not None and time.monotonic() >= deadline:
                raise Empty

    def _take(self, most: int, *, tokens: int) -> list[Any]:
        """Read up to ``most`` items; the caller holds ``tokens`` wake-ups."""
        items: list[Any] = []
        index = self._index
        self._lock(self._get_lock, None, Empty)
        try:
            while len(items) < most:
                head = index[_HEAD]
                if head == index[_TAIL]:
                    if index[_CLOSED] and not items:
                        if tokens:
                            self._items_release()  # pass the close wake-up on
                        raise QueueClosed("the queue is closed and drained")
                    break  # a wake-up whose record another reader took without one
                item = self._read_item(head)
                if item is not _LOST:
                    items.append(item)
            if index[_WAITING]:
                index[_WAITING] = 0
                self._space.release()
        finally:
            self._get_lock_release()
        return items

    def _read_item(self, head: int) -> Any:
        """Unpickle the record at ``head`` straight from the ring, then free its bytes."""
        capacity, ring = self.capacity, self._ring
        position = head % capacity
        if position + _LEN.size <= capacity:
            (length,) = _LEN.unpack_from(ring, position)
        else:
            (length,) = _LEN.unpack(self._read(position, _LEN.size))
        size = length & ~_SPILLED
        start = (position + _LEN.size) % capacity
        try:
            if length & _SPILLED:
                return _unspill(self._read(start, size).decode())
            if start + size <= capacity:
                return pickle.loads(ring[start:start + size])
            return pickle.loads(self._read(start, size))
        finally:  # a record that fails to unpickle is still consumed
            index = self._index
            new_head, count = head + _LEN.size + size, index[_GET_N] + 1
            index[_NEXT_HEAD], index[_NEXT_GET_N] = new_head, count
            index[_HEAD], index[_GET_N] = new_head, count

    def _read(self, position: int, size: int) -> bytes:
        end = position + size
        if end <= self.capacity:
            return self._ring[position:end].tobytes()
        return self._ring[position:].tobytes() + self._ring[:end - self.capacity].tobytes()

    # ---- state --------------------------------------------------------------------------

    def qsize(self) -> int:
        """How many items are queued (a snapshot: other processes may change it at once)."""
        return max(0, int(self._index[_PUT_N]) - int(self._index[_GET_N]))

    def empty(self) -> bool:
        """Whether ``qsize() == 0`` (a snapshot)."""
        return self.qsize() == 0

    def full(self) -> bool:
        """Whether ``maxsize`` items are queued (a snapshot)."""
        return bool(self.maxsize) and self.qsize() >= self.maxsize

    @property
    def closed(self) -> bool:
        """Whether the queue has been closed (by any process)."""
        return bool(self._index[_CLOSED])

    def close(self) -> None:
        """Close the queue for every process; queued items can still be read. Idempotent."""
        self._lock(self._put_lock, None, Full)
        try:
            if self._index[_CLOSED]:
                return
            self._index[_CLOSED] = 1
        finally:
            self._put_lock_release()
        # Wake everyone who waits: each woken waiter passes the wake-up on.
        self._items.release()
        self._space.release()

    def __iter__(self) -> Iterator[Any]:
        """Yield items until the queue is closed and drained."""
        while True:
            try:
                yield self.get()
            except QueueClosed:
                return

    def __repr__(self) -> str:
        state = "closed" if self.closed else f"qsize={self.qsize()}"
        return f"<manybrains.Queue {self.name} {state} maxsize={self.maxsize}>"

    # ---- waiting --------------------------------------------------------------------------

    def _check_open(self) -> None:
        if self._index[_CLOSED]:
            raise QueueClosed("cannot put: the queue is closed")


def _finish_publish(index: memoryview, position: int, count: int, next_position: int,
                    next_count: int) -> None:
    """Finish a side's publish that its dead lock holder had begun (see the docstring)."""
    if index[next_position] == index[position]:
        index[count] = index[next_count]


def _fitting(records: list[bytes], start: int, free: int, slots: int
             ) -> tuple[list[bytes], int]:
    """The records from ``start`` on that fit in ``free`` bytes and ``slots`` items (-1: any
    number), and their total size."""
    size, end = 0, start
    limit = len(records) if slots < 0 else min(len(records), start + slots)
    while end < limit and size + len(records[end]) <= free:
        size += len(records[end])
        end += 1
    return records[start:end], size


def _unspill(name: str) -> Any:
    try:
        segment = Segment.open(name)
    except FileNotFoundError:  # a reader killed after removing it: the item in flight
        LOGGER.warning("queue: an item spilled to %s is gone: a reader was killed while "
                       "taking it", name)
        return _LOST
    unlink(name)
    return pickle.loads(segment.buf[:segment.size])


def _deadline(block: bool, timeout: float | None) -> float | None:
    """None: wait forever; 0.0: do not wait; else the monotonic time to give up at."""
    if not block:
        return 0.0
    if timeout is None:
        return None
    if timeout < 0:
        raise ValueError(f"timeout must be >= 0, got {timeout!r}")
    return time.monotonic() + timeout


def _bounded(deadline: float | None, most: float) -> float:
    if deadline is None:
        return most
    return max(0.0, min(most, deadline - time.monotonic()))


def _destroy(name: str, creator: int) -> None:
    if os.getpid() != creator:
        return
    unlink(name)
    for tag in _TAGS:
        unlink_semaphore(name + tag)
    with contextlib.suppress(OSError):  # spilled items nobody read
        for entry in os.listdir("/dev/shm"):
            if entry.startswith(f"{name}x") and entry.startswith(PREFIX):
                unlink(entry)
