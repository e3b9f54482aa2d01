"""Many messages per system call on a worker's pipe, both ways.

A small task costs microseconds to run; a system call costs as much, and in the parent each
one also hands the GIL to the caller's thread, which may keep it for its switch interval
(5 ms) before the supervisor runs again. So the supervisor writes every task it has for a
worker in one ``write`` and reads every reply a worker has sent in one ``read``, and a worker
reads its tasks the same way. Each message keeps ``multiprocessing.Connection``'s framing (a
4-byte big-endian length, or -1 and an 8-byte length past 2 GiB), so either side may still
use the plain ``send_bytes`` (a worker sends each reply as soon as its task ends: a reply
held back would be lost with its results if the worker then crashed).

The descriptors are the connection's own; reading and writing them directly is POSIX. The
seam for other systems is this module: there, :class:`Channel` can fall back to the
connection's ``recv_bytes`` and ``send_bytes``, one message each.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Iterable
from multiprocessing.connection import Connection

__all__ = ("Channel",)

_SHORT = struct.Struct("!i")
_LONG = struct.Struct("!Q")
_READ_SIZE = 256 * 1024
_JOIN_LIMIT = 64 * 1024  # frames up to this size are copied into one buffer and written once


class Channel:
    """One end of a worker's duplex pipe, with a read buffer."""

    __slots__ = ("_buffer", "_fd", "conn")

    def __init__(self, conn: Connection) -> None:
        self.conn = conn
        self._fd = conn.fileno()
        self._buffer = bytearray()

    @property
    def closed(self) -> bool:
        return self.conn.closed

    def close(self) -> None:
        self.conn.close()

    # ---- reading --------------------------------------------------------------------------

    def read(self) -> list[bytes | bytearray]:
        """The messages that one ``read`` completes (none if it ended inside one). Blocks
        only while nothing at all has arrived, or for the rest of a big message already
        being sent. Raises ``EOFError`` when the other end has closed."""
        data = os.read(self._fd, _READ_SIZE)
        if not data:
            raise EOFError
        self._buffer += data
        return self._frames()

    def read_some(self) -> list[bytes | bytearray]:
        """At least one message: reads until one is complete."""
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
            if size >= _READ_SIZE:  # big: read the rest straight into its own buffer
                frames.append(self._rest_of(buffer, start, size))
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

    def _rest_of(self, buffer: bytearray, start: int, size: int) -> bytearray:
        frame = bytearray(size)
        got = len(buffer) - start
        frame[:got] = buffer[start:]
        view = memoryview(frame)
        while got < size:
            n = os.readv(self._fd, [view[got:]])
            if n == 0:
                raise EOFError
            got += n
        return frame

    # ---- writing --------------------------------------------------------------------------

    def write(self, frames: Iterable[bytes | bytearray | memoryview]) -> None:
        """Send ``frames``, each as one message, in as few system calls as their sizes allow.
        Raises ``OSError`` if the other end is gone."""
        joined: list[bytes | bytearray | memoryview] = []
        for frame in frames:
            size = len(frame)
            joined.append(_SHORT.pack(size) if size < 0x7FFFFFFF
                          else _SHORT.pack(-1) + _LONG.pack(size))
            if size > _JOIN_LIMIT:  # not copied: written on its own
                self._write_all(b"".join(joined))
                self._write_all(frame)
                joined = []
            else:
                joined.append(frame)
        if joined:
            self._write_all(b"".join(joined))

    def _write_all(self, data: bytes | bytearray | memoryview) -> None:
        view = memoryview(data)
        while view:
            view = view[os.write(self._fd, view):]
