"""What a pool sends to the cluster once and then refers to: functions and big arrays.

A map sends the same function with every chunk: it is pickled once (as the process engine's
:class:`~manybrains._serialize.PickledOnce`, whose key each worker caches it under), and a
big one is scattered, so that each task carries only a reference. A big numpy argument is
scattered too, keyed by its content: an array changed in place is sent again.
"""

from __future__ import annotations

import sys
import threading
from collections import OrderedDict
from typing import TYPE_CHECKING, Any

from dask.base import tokenize

from .._stored import Slot, StoredFunctions

if TYPE_CHECKING:
    import distributed

    from ..._task import Task

# Arrays (and pickled functions) at least this big are scattered once, then referenced.
SCATTER_BYTES = 1 << 20
_KEEP_SCATTERED = 16  # most recent scattered arrays and functions kept on the cluster
_KEEP_FUNCTIONS = 8


class Scattered:
    """The functions and arrays one pool has sent to its cluster, most recent kept."""

    def __init__(self, client: distributed.Client) -> None:
        self._client = client
        self._functions = StoredFunctions(lambda blob: client.scatter(blob, hash=False),
                                          SCATTER_BYTES, _KEEP_FUNCTIONS)
        self._arrays: OrderedDict[str, Any] = OrderedDict()
        self._lock = threading.Lock()
        self.count = 0  # arrays sent to the cluster, for statistics

    def function(self, task: Task) -> tuple[str, Any]:
        """``(cache key, pickled function or its scattered future)`` for ``task.fn``."""
        return self._functions.get(task)

    def arguments(self, task: Task) -> tuple[tuple[Any, ...], dict[str, Any], list[Any]]:
        """``task``'s arguments with big numpy arrays replaced by slots, and the arrays."""
        arrays: list[Any] = []
        if "numpy" not in sys.modules or task.items is not None:
            return task.args, task.kwargs, arrays
        numpy = sys.modules["numpy"]

        def slot(value: Any) -> Any:
            if not isinstance(value, numpy.ndarray) or value.nbytes < SCATTER_BYTES:
                return value
            arrays.append(self._array(value))
            return Slot(len(arrays) - 1)

        return (tuple(map(slot, task.args)), {k: slot(v) for k, v in task.kwargs.items()},
                arrays)

    def _array(self, array: Any) -> Any:
        token = tokenize(array)
        found = self._arrays.get(token)
        if found is None:
            found = self._client.scatter(array, hash=False)
            with self._lock:
                self.count += 1
                self._arrays[token] = found
                if len(self._arrays) > _KEEP_SCATTERED:
                    self._arrays.popitem(last=False)
        return found

    def clear(self) -> None:
        """Let the cluster forget them (the pool is closing)."""
        self._functions.clear()
        with self._lock:
            self._arrays.clear()
