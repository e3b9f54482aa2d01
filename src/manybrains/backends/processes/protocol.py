"""The messages between the supervisor and a worker, over one duplex pipe per worker.

Every message is one ``send_bytes`` frame: a fixed header, then (for most kinds) a pickle.
The header is read without unpickling anything, so the task id is known even when the pickle
that follows is broken: that task alone fails.

parent -> worker: ``TASK`` (header + pickled task), ``CALL`` (header + a function's pickled
reference + plain arguments: the fast path of a small call) and ``STOP``.
worker -> parent: ``READY`` once initialized, ``INIT_FAILED`` or ``START_FAILED`` with the
error, and one ``DONE`` per task. Its header carries the task's outcome in the wire's own
terms (:mod:`manybrains.backends._wire`: a result, an exception, an unpicklable task or
result, which also says how to read the body), how long the task ran, the worker's resident
memory after it and the time it spent unpickling the task and pickling its result. ``LOG``
(a pickled logging record) and ``OUTPUT`` (stdout or stderr bytes, the stream in the task-id
field) may come at any time, before the result of the task that wrote them.
"""

from __future__ import annotations

import struct

__all__ = ("CALL", "DONE", "INIT_FAILED", "LOG", "OUTPUT", "READY", "REPLY_SIZE", "REQUEST_SIZE",
           "START_FAILED", "STOP", "TASK", "read_reply", "read_request", "reply", "request",
           "stamp_pickling")

# parent -> worker
TASK = 1
STOP = 2
CALL = 3  # one call of a function the worker may hold already (_serialize.dumps_call)
# worker -> parent
READY = 10
INIT_FAILED = 11  # pickled (exception, formatted traceback), as the wire's ERROR
DONE = 12  # a task's reply: the wire's outcome in the header, its body after
LOG = 15  # a logging record emitted in the worker: pickled dict of its attributes
OUTPUT = 16  # bytes the worker wrote to sys.stdout (task id 1) or sys.stderr (2)
START_FAILED = 17  # the pool's setup (initializer, initargs) could not be unpickled

_REQUEST = struct.Struct("<BQ")  # kind, task id
# kind, the wire's outcome, task id, seconds running, resident bytes, seconds (un)pickling
# (stamped last)
_REPLY = struct.Struct("<BBQdQd")
_PICKLING = struct.Struct("<d")
_PICKLING_AT = _REPLY.size - _PICKLING.size

REQUEST_SIZE = _REQUEST.size
REPLY_SIZE = _REPLY.size


def request(kind: int, task_id: int = 0) -> bytes:
    """The header of a parent -> worker message."""
    return _REQUEST.pack(kind, task_id)


def read_request(frame: bytes | bytearray | memoryview) -> tuple[int, int]:
    """``(kind, task_id)`` of a parent -> worker message."""
    return _REQUEST.unpack_from(frame)


def reply(kind: int, task_id: int = 0, elapsed: float = 0.0, rss: int = 0, outcome: int = 0
          ) -> bytes:
    """The header of a worker -> parent message."""
    return _REPLY.pack(kind, outcome, task_id, elapsed, rss, 0.0)


def read_reply(frame: bytes | bytearray | memoryview) -> tuple[int, int, int, float, int, float]:
    """``(kind, outcome, task_id, elapsed, rss, seconds pickling)`` of a worker -> parent
    message: its whole header, read once."""
    header: tuple[int, int, int, float, int, float] = _REPLY.unpack_from(frame)
    return header


def stamp_pickling(frame: bytearray | memoryview, seconds: float) -> None:
    """Write into a reply, once its result is pickled, how long the (un)pickling took."""
    _PICKLING.pack_into(frame, _PICKLING_AT, seconds)

