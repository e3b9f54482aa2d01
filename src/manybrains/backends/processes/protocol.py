"""The messages between the supervisor and a worker, over one duplex pipe per worker.

Every message is one ``send_bytes`` frame: a fixed header, then (for most kinds) a pickle.
The header is read without unpickling anything, so the task id is known even when the pickle
that follows is broken: that task alone fails.

parent -> worker: ``TASK`` (header + pickled task) and ``STOP``.
worker -> parent: ``READY`` once initialized, ``INIT_FAILED`` or ``START_FAILED`` with the
error, and one ``RESULT``/``ERROR``/``BAD_RESULT`` per task, carrying how long the task ran,
the worker's resident memory after it and the time it spent unpickling the task and
pickling its result. ``LOG`` (a pickled logging record) and ``OUTPUT`` (stdout or stderr bytes,
the stream in the task-id field) may come at any time, before the result of the task that
wrote them.
"""

from __future__ import annotations

import struct

# parent -> worker
TASK = 1
STOP = 2
# worker -> parent
READY = 10
INIT_FAILED = 11
RESULT = 12  # pickled return value (or ChunkOutcome values and error)
ERROR = 13  # pickled (exception, formatted traceback)
BAD_RESULT = 14  # the result could not be pickled: pickled (message, traceback)
LOG = 15  # a logging record emitted in the worker: pickled dict of its attributes
OUTPUT = 16  # bytes the worker wrote to sys.stdout (task id 1) or sys.stderr (2)
START_FAILED = 17  # the pool's setup (initializer, initargs) could not be unpickled
BAD_TASK = 18  # the task could not be unpickled: pickled (exception, traceback)

_REQUEST = struct.Struct("<BQ")  # kind, task id
# kind, task id, seconds running, resident bytes, seconds (un)pickling (stamped last)
_REPLY = struct.Struct("<BQdQd")
_PICKLING = struct.Struct("<d")
_PICKLING_AT = _REPLY.size - _PICKLING.size

REQUEST_SIZE = _REQUEST.size
REPLY_SIZE = _REPLY.size


def request(kind: int, task_id: int = 0) -> bytes:
    """The header of a parent -> worker message."""
    return _REQUEST.pack(kind, task_id)


def read_request(frame: bytes | memoryview) -> tuple[int, int]:
    """``(kind, task_id)`` of a parent -> worker message."""
    return _REQUEST.unpack_from(frame)


def reply(kind: int, task_id: int = 0, elapsed: float = 0.0, rss: int = 0) -> bytes:
    """The header of a worker -> parent message."""
    return _REPLY.pack(kind, task_id, elapsed, rss, 0.0)


def read_reply(frame: bytes | memoryview) -> tuple[int, int, float, int]:
    """``(kind, task_id, elapsed, rss)`` of a worker -> parent message."""
    kind, task_id, elapsed, rss, _ = _REPLY.unpack_from(frame)
    return kind, task_id, elapsed, rss


def stamp_pickling(frame: bytearray | memoryview, seconds: float) -> None:
    """Write into a reply, once its result is pickled, how long the (un)pickling took."""
    _PICKLING.pack_into(frame, _PICKLING_AT, seconds)


def read_pickling(frame: bytes | memoryview) -> float:
    """The seconds a worker spent unpickling a task and pickling its result."""
    seconds: float = _PICKLING.unpack_from(frame, _PICKLING_AT)[0]
    return seconds
