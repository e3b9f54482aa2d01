"""The messages between the supervisor and a worker, over one duplex pipe per worker.

Every message is one ``send_bytes`` frame: a fixed header, then (for most kinds) a pickle.
The header is read without unpickling anything, so the task id is known even when the pickle
that follows is broken: that task alone fails.

parent -> worker: ``TASK`` (header + pickled task) and ``STOP``.
worker -> parent: ``READY`` once initialized, ``INIT_FAILED`` or ``START_FAILED`` with the
error, and one ``RESULT``/``ERROR``/``BAD_RESULT``/``BAD_TASK`` per task (their bodies are
:mod:`manybrains.backends._wire`'s), carrying how long the task ran, the worker's resident
memory after it and the time it spent unpickling the task and pickling its result. ``LOG``
(a pickled logging record) and ``OUTPUT`` (stdout or stderr bytes, the stream in the task-id
field) may come at any time, before the result of the task that wrote them.
"""

from __future__ import annotations

import struct

from .._wire import BAD_RESULT, BAD_TASK, ERROR, RESULT

__all__ = ("BAD_RESULT", "BAD_TASK", "ERROR", "INIT_FAILED", "LOG", "OUTPUT", "READY",
           "REPLY_SIZE", "REQUEST_SIZE", "RESULT", "START_FAILED", "STOP", "TASK",
           "read_pickling", "read_reply", "read_request", "reply", "request", "stamp_pickling")

# parent -> worker
TASK = 1
STOP = 2
# worker -> parent
READY = 10
INIT_FAILED = 11  # pickled (exception, formatted traceback), as ERROR
# RESULT (12), ERROR (13), BAD_RESULT (14) and BAD_TASK (18): one per task, see backends._wire
LOG = 15  # a logging record emitted in the worker: pickled dict of its attributes
OUTPUT = 16  # bytes the worker wrote to sys.stdout (task id 1) or sys.stderr (2)
START_FAILED = 17  # the pool's setup (initializer, initargs) could not be unpickled

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
