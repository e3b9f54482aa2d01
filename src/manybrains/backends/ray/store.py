"""What a pool puts into Ray's object store once and then refers to: big functions and arrays.

A map sends the same function with every chunk: it is pickled once (as the process engine's
:class:`~manybrains._serialize.PickledOnce`, whose key each worker caches it under), and a
big one is put into the object store, so that each task carries only a reference. A big
numpy argument is put there too, keyed by its content: an array changed in place is stored
again. Ray hands a stored array to each task that names it without a copy, read-only.
"""

from __future__ import annotations

import hashlib
import sys
import threading
from collections import OrderedDict
from typing import TYPE_CHECKING, Any

import ray

from ..._serialize import PickledOnce
from .worker import Slot

if TYPE_CHECKING:
    from ..._task import Task

# Arrays (and pickled functions) at least this big are stored once, then referenced.
STORE_BYTES = 1 << 20
_KEEP_STORED = 16  # most recent stored arrays and functions kept alive in the store
_KEEP_FUNCTIONS = 8


class Stored:
    """The functions and arrays one pool has put into the object store, most recent kept."""

    def __init__(self) -> None:
        self._functions: OrderedDict[int, tuple[object, str, Any]] = OrderedDict()
        self._arrays: OrderedDict[bytes, Any] = OrderedDict()
        self._lock = threading.Lock()
        self.count = 0  # arrays put into the object store, for statistics

    def function(self, task: Task) -> tuple[str, Any]:
        """``(cache key, pickled function or its object ref)`` for ``task.fn``."""
        entry = self._functions.get(id(task.fn))
        if entry is None or entry[0] is not task.fn:
            once = task.fn if isinstance(task.fn, PickledOnce) else PickledOnce(task.fn)
            key, blob = once.pickled(task.parts)
            payload = ray.put(blob) if len(blob) >= STORE_BYTES else blob
            entry = (task.fn, key, payload)
            with self._lock:
                self._functions[id(task.fn)] = entry
                if len(self._functions) > _KEEP_FUNCTIONS:
                    self._functions.popitem(last=False)
        return entry[1], entry[2]

    def arguments(self, task: Task) -> tuple[tuple[Any, ...], dict[str, Any], list[Any]]:
        """``task``'s arguments with big numpy arrays replaced by slots, and their refs."""
        refs: list[Any] = []
        if "numpy" not in sys.modules or task.items is not None:
            return task.args, task.kwargs, refs
        numpy = sys.modules["numpy"]

        def slot(value: Any) -> Any:
            if not isinstance(value, numpy.ndarray) or value.nbytes < STORE_BYTES \
                    or value.dtype.hasobject:  # objects pickle by value: nothing to share
                return value
            refs.append(self._array(value))
            return Slot(len(refs) - 1)

        return (tuple(map(slot, task.args)), {k: slot(v) for k, v in task.kwargs.items()},
                refs)

    def _array(self, array: Any) -> Any:
        key = _content_key(array)
        found = self._arrays.get(key)
        if found is None:
            found = ray.put(array)
            with self._lock:
                self.count += 1
                self._arrays[key] = found
                if len(self._arrays) > _KEEP_STORED:
                    self._arrays.popitem(last=False)
        return found

    def clear(self) -> None:
        """Let the object store free them (the pool is closing)."""
        with self._lock:
            self._functions.clear()
            self._arrays.clear()


def _content_key(array: Any) -> bytes:
    """What identifies ``array``'s content: its layout, then a hash of its bytes."""
    digest = hashlib.sha256(f"{array.dtype.str}{array.shape}".encode())
    contiguous = array if array.flags.c_contiguous else array.copy(order="C")
    digest.update(contiguous.reshape(-1).view("u1"))  # as bytes, whatever the dtype
    return digest.digest()
