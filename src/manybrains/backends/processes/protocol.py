"""The messages between the supervisor and a worker, over one duplex pipe per worker.

Every message is one ``send_bytes`` frame: a fixed header, then (for most kinds) a pickle.
The header is read without unpickling anything, so the task id is known even when the pickle
that follows is broken: that task alone fails.

parent -> worker: ``TASK`` (header + pickled task) and ``STOP``.
worker -> parent: ``READY`` once initialized, ``INIT_FAILED`` with the error, and one
``RESULT``/``ERROR``/``BAD_RESULT`` per task, carrying how long the task ran and the
worker's resident memory after it.
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

_REQUEST = struct.Struct("<BQ")  # kind, task id
_REPLY = struct.Struct("<BQdQ")  # kind, task id, seconds running, resident bytes

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
    return _REPLY.pack(kind, task_id, elapsed, rss)


def read_reply(frame: bytes | memoryview) -> tuple[int, int, float, int]:
    """``(kind, task_id, elapsed, rss)`` of a worker -> parent message."""
    return _REPLY.unpack_from(frame)
