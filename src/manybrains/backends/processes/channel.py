"""Many messages per system call on a worker's pipe, both ways.

A small task costs microseconds to run; a system call costs as much, and in the parent each
one also hands the GIL to the caller's thread, which may keep it for its switch interval
(5 ms) before the supervisor runs again. So the supervisor writes every task it has for a
worker in one ``write`` and reads every reply a worker has sent in one ``read``, and a worker
reads its tasks the same way. Each message keeps ``multiprocessing.Connection``'s framing (a
4-byte big-endian length, or -1 and an 8-byte length past 2 GiB), so either side may still
use the plain ``send_bytes`` (a worker sends each reply as soon as its task ends: a reply
held back would be lost with its results if the worker then crashed).

The supervisor's end does not block: what a worker's pipe cannot take now waits in the
channel and is written when :func:`wait_ready` says the pipe has room, so the supervisor never
stops for one worker (a big task to a worker that reads slowly, or many tasks queued behind a
running one) while others answer, die or run out of time.

The descriptors are the connection's own; reading, writing and polling them directly is
POSIX. The seam for other systems is this module: there, :class:`Channel` can fall back to
the connection's ``recv_bytes`` and ``send_bytes``, one message each, and :func:`wait_ready`
to ``multiprocessing.connection.wait``.
"""

from __future__ import annotations

import math
import os
import select
import struct
from collections import deque
from collections.abc import Iterable
from multiprocessing.connection import Connection

__all__ = ("Channel", "wait_ready")

_SHORT = struct.Struct("!i")
_LONG = struct.Struct("!Q")
_READ_SIZE = 256 * 1024
_JOIN_LIMIT = 64 * 1024  # frames up to this size are copied into one buffer and written once


class Channel:
    """One end of a worker's duplex pipe, with a read buffer and, when it does not block,
    the bytes still to write."""

    __slots__ = ("_big", "_blocking", "_buffer", "_fd", "_unsent", "conn")

    def __init__(self, conn: Connection, *, blocking: bool = True) -> None:
        self.conn = conn
        self._fd = conn.fileno()
        self._blocking = blocking
        if not blocking:
            os.set_blocking(self._fd, False)
        self._buffer = bytearray()
        self._big: tuple[bytearray, int] | None = None  # a big message, and bytes of it read
        self._unsent: deque[bytes | memoryview] = deque()

    @property
    def closed(self) -> bool:
        return self.conn.closed

    def close(self) -> None:
        self.conn.close()

    # ---- reading --------------------------------------------------------------------------

    def read(self) -> list[bytes | bytearray]:
        """The messages that one ``read`` completes (none if it ended inside one, or, when
        the channel does not block, if nothing had arrived). A blocking channel blocks while
        nothing at all has arrived, and for the rest of a big message already being sent.
        Raises ``EOFError`` when the other end has closed."""
        if self._big is not None:
            return self._fill_big()
        try:
            data = os.read(self._fd, _READ_SIZE)
        except BlockingIOError:
            return []
        if not data:
            raise EOFError
        self._buffer += data
        frames = self._frames()
        if self._big is not None and self._blocking:
            frames += self._fill_big()
        return frames

    def read_some(self) -> list[bytes | bytearray]:
        """At least one message: reads until one is complete (a blocking channel's)."""
        frames = self.read()
        while not frames:
            frames = self.read()
        return frames

    def _frames(self) -> list[bytes | bytearray]:
        frames: list[bytes | bytearray] = []
        buffer = self._buffer
        at = 0
        while len(buffer) - at >= _SHORT.size:
            size, start = self._length(buffer, at)
            if size < 0:  # the 8-byte length has not all arrived
                break
            end = start + size
            if end <= len(buffer):
                frames.append(bytes(buffer[start:end]))
                at = end
                continue
            if size >= _READ_SIZE:  # big: the rest is read straight into its own buffer
                big = bytearray(size)
                big[:len(buffer) - start] = buffer[start:]
                self._big = (big, len(buffer) - start)
                at = len(buffer)
            break
        del buffer[:at]
        return frames

    @staticmethod
    def _length(buffer: bytearray, at: int) -> tuple[int, int]:
        size: int = _SHORT.unpack_from(buffer, at)[0]
        if size != -1:
            return size, at + _SHORT.size
        if len(buffer) - at < _SHORT.size + _LONG.size:
            return -1, at
        long_size: int = _LONG.unpack_from(buffer, at + _SHORT.size)[0]
        return long_size, at + _SHORT.size + _LONG.size

    def _fill_big(self) -> list[bytes | bytearray]:
        assert self._big is not None
        big, got = self._big
        with memoryview(big) as view:
            while got < len(big):
                try:
                    n = os.readv(self._fd, [view[got:]])
                except BlockingIOError:
                    self._big = (big, got)
                    return []
                if n == 0:
                    raise EOFError
                got += n
        self._big = None
        return [big]

    # ---- writing --------------------------------------------------------------------------

    def write(self, frames: Iterable[bytes | bytearray | memoryview]) -> None:
        """Send ``frames``, each as one message, in as few system calls as their sizes
        allow. A channel that does not block keeps what the pipe cannot take now
        (:attr:`unsent`; :meth:`flush` it when the pipe is writable). Raises ``OSError`` if
        the other end is gone."""
        joined: list[bytes | bytearray | memoryview] = []
        for frame in frames:
            size = len(frame)
            joined.append(_SHORT.pack(size) if size < 0x7FFFFFFF
                          else _SHORT.pack(-1) + _LONG.pack(size))
            if size > _JOIN_LIMIT:  # not copied: written on its own
                self._unsent.append(b"".join(joined))
                self._unsent.append(memoryview(frame))
                joined = []
            else:
                joined.append(frame)
        if joined:
            self._unsent.append(b"".join(joined))
        self.flush()

    @property
    def unsent(self) -> bool:
        """Bytes wait to be written (only where the channel does not block)."""
        return bool(self._unsent)

    def flush(self) -> None:
        """Write what waits, as far as the pipe takes it without blocking (a blocking
        channel: all of it)."""
        unsent = self._unsent
        while unsent:
            head = unsent[0]
            try:
                written = os.write(self._fd, head)
            except BlockingIOError:
                return
            if written < len(head):
                unsent[0] = memoryview(head)[written:]
            else:
                unsent.popleft()

    def fileno(self) -> int:
        return self._fd


def wait_ready(readers: Iterable[int], writers: Iterable[int], timeout: float | None
               ) -> tuple[list[int], list[int]]:
    """The descriptors among ``readers`` that can be read (or have hung up) and among
    ``writers`` that can be written, once any is, or after ``timeout`` seconds (None:
    wait as long as it takes). A ``multiprocessing.connection.wait`` that also waits to
    write."""
    masks: dict[int, int] = {}
    for fd in readers:
        masks[fd] = masks.get(fd, 0) | select.POLLIN
    for fd in writers:
        masks[fd] = masks.get(fd, 0) | select.POLLOUT
    poller = select.poll()
    for fd, mask in masks.items():
        poller.register(fd, mask)
    milliseconds = None if timeout is None else math.ceil(timeout * 1000)
    events = poller.poll(milliseconds)
    # As selectors reads poll: anything but "writable" (a hang-up, an error) wakes a
    # reader, who then sees it; anything but "readable" wakes a writer.
    readable = [fd for fd, event in events if event & ~select.POLLOUT
                and masks[fd] & select.POLLIN]
    writable = [fd for fd, event in events if event & ~select.POLLIN
                and masks[fd] & select.POLLOUT]
    return readable, writable
