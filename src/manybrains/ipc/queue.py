"""``Queue``: a multi-producer, multi-consumer queue in shared memory.

Items are pickled straight into a ring buffer in a shared-memory segment; there is no feeder
thread and no pipe, so a ``put`` costs a pickle, a copy and two semaphore operations, and a
``get`` is woken directly by the ``put`` that fed it::

    shared segment:  [ tail | head | closed | space-waiting ][ ring of records ... ]
    record:          [ u32 length (top bit: spilled) ][ pickle, or a spill segment's name ]

    producers  --put_lock-->  write at tail, publish tail, items.release()
    consumers  --get_lock-->  items.acquire(), read at head, publish head

One lock per side makes the ring single-producer/single-consumer between the two lock
holders, so producers and consumers never wait for each other's lock. The ``items``
semaphore counts records and orders each record's bytes before its reader. An item larger
than a quarter of the ring travels in a segment of its own ("spilled").

``close()`` closes the queue for every process: ``put`` raises, readers drain what is left
and then get :class:`QueueClosed` (iteration simply ends).
"""

from __future__ import annotations

import contextlib
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
from .segment import PREFIX, Segment, attach, new_name, unlink
from .semaphore import Semaphore

Empty = _stdlib_queue.Empty
Full = _stdlib_queue.Full

_HEADER = 256  # tail, head and flags on separate cache lines
_TAIL, _HEAD, _CLOSED, _WAITING = 0, 8, 16, 17  # indexes into the header as u64 words
_LEN = struct.Struct("<I")
_SPILLED = 1 << 31
_WAKE_CHECK = 0.05  # a producer waiting for room re-checks this often (see _wait_for_room)


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
        self._index = segment.buf[:_HEADER].cast("Q")
        self._ring = segment.buf[_HEADER:]

        def sem(tag: str, value: int) -> Semaphore:
            full = f"{name}{tag}"
            return Semaphore(value, name=full) if create else Semaphore.attach(full)

        self._put_lock, self._get_lock = sem("p", 1), sem("g", 1)
        self._items, self._space = sem("i", 0), sem("w", 0)
        self._slots = sem("m", maxsize) if maxsize else None
        self._spill_above = self.capacity // 4 - _LEN.size
        # Bound C methods, looked up once: these run for every item.
        self._items_acquire, self._items_release = self._items.acquire, self._items.release
        self._get_lock_acquire = self._get_lock.acquire
        self._get_lock_release = self._get_lock.release
        self._put_lock_acquire = self._put_lock.acquire
        self._put_lock_release = self._put_lock.release

    def __reduce__(self) -> tuple[Any, tuple[str, int]]:
        return (Queue._open, (self.name, self.maxsize))

    # ---- putting ------------------------------------------------------------------------

    def put(self, item: Any, block: bool = True, timeout: float | None = None) -> None:
        """Put ``item``; waits for room unless ``block`` is false (then raises ``queue.Full``).

        Raises :class:`QueueClosed` once the queue is closed.
        """
        record = self._encode(item)
        if not block or timeout is not None or self._slots is not None:
            return self._put_records([record], block, timeout)
        self._put_lock_acquire()
        try:  # the common case, inlined: this is the hot path of every producer
            index, capacity = self._index, self.capacity
            tail = index[_TAIL]
            end = tail % capacity + len(record)
            if index[_CLOSED] or capacity - (tail - index[_HEAD]) < len(record):
                self._write_batches([record], None)  # closed, or wait for room
            elif end <= capacity:
                self._ring[end - len(record):end] = record
                index[_TAIL] = tail + len(record)
                self._items_release()
            else:
                self._write(tail % capacity, record)
                index[_TAIL] = tail + len(record)
                self._items_release()
        finally:
            self._put_lock_release()
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
        # The producer lock is held for microseconds, unless its holder waits for room: then
        # the queue is full. So even put_nowait waits a moment for it rather than fail.
        lock_deadline = time.monotonic() + _WAKE_CHECK if deadline == 0.0 else deadline
        self._acquire(self._put_lock, lock_deadline, Full)
        try:
            if self._slots is None:
                self._write_batches(records, deadline)
            else:  # one slot per item: write them one by one
                for record in records:
                    self._acquire(self._slots, deadline, Full, check_closed=True)
                    self._write_batches([record], deadline, release_slot=True)
        finally:
            self._put_lock.release()

    def _write_batches(self, records: list[bytes], deadline: float | None,
                       release_slot: bool = False) -> None:
        """Write ``records`` in as few copies as the free room allows (producer lock held)."""
        index, done = self._index, 0
        while done < len(records):
            self._check_open(release_slot)
            free = self.capacity - (index[_TAIL] - index[_HEAD])
            batch, size = _fitting(records, done, free)
            if not batch:
                self._wait_for_room(len(records[done]), deadline, release_slot)
                continue
            tail = index[_TAIL]
            self._write(tail % self.capacity, batch[0] if len(batch) == 1 else b"".join(batch))
            index[_TAIL] = tail + size
            for _ in batch:
                self._items_release()
            done += len(batch)

    def _wait_for_room(self, need: int, deadline: float | None, release_slot: bool) -> None:
        index = self._index
        if deadline == 0.0 or (deadline is not None and time.monotonic() >= deadline):
            if release_slot and self._slots is not None:
                self._slots.release()
            raise Full
        index[_WAITING] = 1
        if self.capacity - (index[_TAIL] - index[_HEAD]) >= need:
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
        if block and timeout is None:
            self._items_acquire()
        else:
            self._acquire(self._items, _deadline(block, timeout), Empty)
        return self._take(1)[0]

    def get_nowait(self) -> Any:
        """``get(block=False)``."""
        return self.get(False)

    def get_many(self, max_items: int, block: bool = True, timeout: float | None = None
                 ) -> list[Any]:
        """Up to ``max_items`` items: waits (like ``get``) for the first, takes what is there."""
        if max_items < 1:
            raise ValueError(f"max_items must be >= 1, got {max_items!r}")
        self._acquire(self._items, _deadline(block, timeout), Empty)
        count = 1
        while count < max_items and self._items_acquire(False):
            count += 1
        return self._take(count)

    def _take(self, count: int) -> list[Any]:
        """Read ``count`` items whose tokens the caller holds."""
        items: list[Any] = []
        index = self._index
        self._get_lock_acquire()
        try:
            while len(items) < count:
                head = index[_HEAD]
                if head == index[_TAIL]:  # a token without a record: the close signal
                    self._items_release()  # pass it on to the next reader
                    if items:
                        break
                    raise QueueClosed("the queue is closed and drained")
                items.append(self._read_item(head))
            if index[_WAITING]:
                index[_WAITING] = 0
                self._space.release()
        finally:
            self._get_lock_release()
        if self._slots is not None:
            for _ in items:
                self._slots.release()
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
            self._index[_HEAD] = head + _LEN.size + size

    def _read(self, position: int, size: int) -> bytes:
        end = position + size
        if end <= self.capacity:
            return self._ring[position:end].tobytes()
        return self._ring[position:].tobytes() + self._ring[:end - self.capacity].tobytes()

    # ---- state --------------------------------------------------------------------------

    def qsize(self) -> int:
        """How many items are queued (a snapshot: other processes may change it at once)."""
        return max(0, self._items.value() - int(self._index[_CLOSED]))

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
        with self._put_lock:
            if self._index[_CLOSED]:
                return
            self._index[_CLOSED] = 1
        # Wake everyone who waits: each woken waiter passes the wake-up on.
        self._items.release()
        self._space.release()
        if self._slots is not None:
            self._slots.release()

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

    def _check_open(self, release_slot: bool = False) -> None:
        if self._index[_CLOSED]:
            if release_slot and self._slots is not None:
                self._slots.release()  # pass the close wake-up on
            raise QueueClosed("cannot put: the queue is closed")

    def _acquire(self, sem: Semaphore, deadline: float | None, error: type[Exception],
                 check_closed: bool = False) -> None:
        if deadline is None:
            sem.acquire()
        elif not sem.acquire(deadline > 0.0, max(0.0, deadline - time.monotonic())):
            raise error
        if check_closed and self._index[_CLOSED]:
            sem.release()  # pass the close wake-up on
            raise QueueClosed("cannot put: the queue is closed")


def _fitting(records: list[bytes], start: int, free: int) -> tuple[list[bytes], int]:
    """The records from ``start`` on that fit in ``free`` bytes, and their total size."""
    size, end = 0, start
    while end < len(records) and size + len(records[end]) <= free:
        size += len(records[end])
        end += 1
    return records[start:end], size


def _unspill(name: str) -> Any:
    segment = Segment.open(name)
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
    with contextlib.suppress(OSError):  # spilled items nobody read
        for entry in os.listdir("/dev/shm"):
            if entry.startswith(f"{name}x") and entry.startswith(PREFIX):
                unlink(entry)
