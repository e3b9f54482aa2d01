"""What runs inside a Ray worker: one task, over the wire (:mod:`manybrains.backends._wire`).

:data:`execute` is the one remote function of the backend, made here once at import from
:func:`run` (a remote function made per call would be exported to the cluster each time).
It is a generator: its first item says the task has started (the caller arms the task's
timeout then, and no longer counts it as queued); its second is the reply, one ``bytes``
object whose header (the kind, the seconds the task ran, the worker's pid and node) is read
without unpickling anything.

The pool's initializer runs here too, lazily: once per pool in each worker process, before
the first task of that pool the process runs (Ray starts and stops its worker processes
itself, and one process serves every pool of a driver).
"""

from __future__ import annotations

import functools
import os
import struct
import sys
from collections import OrderedDict
from collections.abc import Callable, Iterator
from typing import Any

import ray

from ..._serialize import load_function, loads
from .. import _wire
from .._stored import fill

# A reply kind of this backend alone: the pool's initializer failed in this worker.
INIT_FAILED = 40

_HEADER = struct.Struct("<BdIH")  # kind, seconds running, pid, length of the node's address
_KEEP_INITIALIZED = 64  # pools remembered per worker process (a worker outlives many pools)
_initialized: OrderedDict[str, tuple[BaseException | None, str] | None] = OrderedDict()
_node: list[bytes] = []  # this worker's node address, looked up once


def run(frame: bytes, meta: tuple[int, str, str | None], function: bytes | tuple[Any],
        initializer: bytes | tuple[Any] | None, *arrays: Any) -> Iterator[bytes | None]:
    """Run one task: yield None once it starts, then its reply (see :func:`read_reply`).

    ``meta`` is ``(task id, the function's cache key, the initializer's key or None)``;
    ``function`` the pickled function, or ``(its object ref,)`` for a big one
    (:func:`~manybrains._serialize.load_function` keeps each one once per worker),
    ``initializer`` the pool's pickled initializer and its arguments, ``arrays`` the stored
    arrays the task's slots name (Ray hands them over read-only, straight from the object
    store).

    A task's own exception never reaches Ray: the wire returns it inside the reply.
    """
    _, fn_key, init_key = meta
    if init_key is not None and initializer is not None:
        failure = _initialize(init_key, initializer)
        if failure is not None:
            yield _reply(INIT_FAILED, 0.0, failure)
            return
    yield None  # started: from here on the task's timeout runs
    unpickle = functools.partial(_unpickle, fn_key, function, arrays)
    kind, elapsed, body = _wire.execute(unpickle, frame)
    if kind == _wire.RESULT and arrays:  # only stored arrays arrive read-only
        body = writable(body)
    yield _reply(kind, elapsed, body)


# Made from a module-level function, so that Ray exports it by reference: each worker imports
# this module (and its caches) instead of unpickling a copy of the function. Ray never reruns
# it (max_retries=0: the pool's retries decide) and never sees a task's own exception. Its
# name is what Ray's task list and its workers' process titles show ("ray::manybrains").
execute = ray.remote(  # type: ignore[call-overload]  # stubs lack the "name" task option
    max_retries=0, retry_exceptions=False, num_returns="streaming", name="manybrains")(run)


def read_reply(reply: bytes) -> tuple[int, float, int, str, memoryview]:
    """``(kind, seconds running, pid, node, body)`` of what :func:`execute` answered."""
    kind, elapsed, pid, size = _HEADER.unpack_from(reply)
    node = reply[_HEADER.size:_HEADER.size + size].decode()
    return kind, elapsed, pid, node, memoryview(reply)[_HEADER.size + size:]


def _reply(kind: int, elapsed: float, body: Any) -> bytes:
    node = _node_address()
    pid = os.getpid()
    return bytes(_wire.encode(
        kind, body, lambda k: _HEADER.pack(k, elapsed, pid, len(node)) + node))


def _node_address() -> bytes:
    if not _node:
        _node.append(ray.util.get_node_ip_address().encode())  # type: ignore[no-untyped-call]
    return _node[0]


def _initialize(key: str, blob: bytes | tuple[Any]) -> tuple[BaseException | None, str] | None:
    """Run the pool ``key``'s initializer unless this process did; its failure, if any.

    A failure is kept: every later task of that pool here fails the same way, as in a
    worker process whose initializer raised.
    """
    if key not in _initialized:
        try:
            load_function(key, _fetched(blob))()
        except BaseException as exc:  # noqa: BLE001 - reported to the pool, which breaks
            _initialized[key] = _wire.error_body(exc)
        else:
            _initialized[key] = None
        if len(_initialized) > _KEEP_INITIALIZED:
            _initialized.popitem(last=False)
    return _initialized[key]


def _unpickle(fn_key: str, function: bytes | tuple[Any], arrays: tuple[Any, ...], frame: bytes
              ) -> _wire.TaskParts:
    fn = load_function(fn_key, _fetched(function))
    args, kwargs, items, star = loads(frame)
    if not arrays:
        return fn, args, kwargs, items, star
    filled = dict(zip(kwargs, fill(kwargs.values(), arrays), strict=True))
    if isinstance(items, list):  # a chunk, whose items may hold slots
        items = [fill(item, arrays) if star else fill((item,), arrays)[0] for item in items]
    return fn, fill(args, arrays), filled, items, star


def _fetched(blob: bytes | tuple[Any]) -> bytes | Callable[[], bytes]:
    """The bytes, or for ``(object ref,)`` a call that fetches them (made only on a miss)."""
    if isinstance(blob, bytes):
        return blob
    return lambda: ray.get(blob[0])


# ---- results the caller can write to -------------------------------------------------------


def writable(value: Any, depth: int = 3) -> Any:
    """``value`` with its read-only numpy arrays copied, looking ``depth`` containers deep.

    A stored argument reaches the task as a read-only view of Ray's object store; returned
    (or a slice of it), it would pickle as read-only bytes and reach the caller read-only,
    unlike on every other backend. A chunk's body ``(values, error, traceback)`` takes two
    levels to reach each result, and a third reaches into a result that is a tuple.
    """
    numpy = sys.modules.get("numpy")
    if numpy is None:  # the task used no numpy: nothing can be read-only
        return value
    return _writable(value, numpy.ndarray, depth)


def _writable(value: Any, ndarray: Any, depth: int) -> Any:
    if isinstance(value, ndarray):
        return value if value.flags.writeable else value.copy()
    if depth <= 0:
        return value
    if type(value) in (list, tuple):
        copied = [_writable(v, ndarray, depth - 1) for v in value]
        if any(a is not b for a, b in zip(copied, value, strict=True)):
            return type(value)(copied)
    elif type(value) is dict:
        copied_values = {k: _writable(v, ndarray, depth - 1) for k, v in value.items()}
        if any(copied_values[k] is not v for k, v in value.items()):
            return copied_values
    return value
