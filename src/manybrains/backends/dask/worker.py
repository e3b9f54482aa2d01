"""What runs inside a Dask worker: one task, over the wire (:mod:`manybrains.backends._wire`).

The reply is one ``bytes`` object, never a Python structure: Dask serializes a returned list
element by element (dask/distributed#6368), so a chunk's results travel as one pickle. Its
header (the kind, the seconds the task ran, the worker's address) is read without unpickling
anything.
"""

from __future__ import annotations

import functools
import struct
from typing import Any

import distributed

from ..._serialize import load_function, loads
from .. import _wire
from .._stored import fill

_HEADER = struct.Struct("<BdH")  # the wire's outcome, seconds running, length of the address


def execute(frame: bytes, meta: tuple[int, str, str | None], function: bytes, *arrays: Any
            ) -> bytes:
    """Run one task; whatever happens, answer with one reply (see :func:`read_reply`).

    ``meta`` is ``(task id, the function's cache key, the topic to log the start on)``;
    ``function`` the pickled function (:func:`~manybrains._serialize.load_function` keeps
    each one once per worker) and ``arrays`` the scattered arrays the task's slots name.
    """
    task_id, fn_key, topic = meta
    worker = distributed.get_worker()
    if topic is not None:  # the task has a timeout: its clock starts now, not at submit
        worker.log_event(topic, task_id)
    unpickle = functools.partial(_unpickle, fn_key, function, arrays)
    kind, elapsed, body = _wire.execute(unpickle, frame)
    address = worker.address.encode()
    return bytes(_wire.encode(
        kind, body, lambda k: _HEADER.pack(k, elapsed, len(address)) + address))


def executing(dask_worker: distributed.Worker) -> list[str]:
    """The keys of the tasks ``dask_worker`` is running now (not those waiting there).

    The scheduler's "processing" also counts tasks sent ahead to a worker's own queue
    (``distributed.scheduler.worker-saturation``), which have not started.
    """
    return [str(ts.key) for ts in dask_worker.state.executing]


def read_reply(reply: bytes) -> tuple[int, float, str, memoryview]:
    """``(outcome, seconds running, worker address, body)`` of what :func:`execute` returned."""
    outcome, elapsed, size = _HEADER.unpack_from(reply)
    address = reply[_HEADER.size:_HEADER.size + size].decode()
    return outcome, elapsed, address, memoryview(reply)[_HEADER.size + size:]


def _unpickle(fn_key: str, function: bytes, arrays: tuple[Any, ...], frame: bytes
              ) -> _wire.TaskParts:
    fn = load_function(fn_key, function)
    args, kwargs, items, star = loads(frame)
    filled = dict(zip(kwargs, fill(kwargs.values(), arrays), strict=True))
    return fn, fill(args, arrays), filled, items, star


