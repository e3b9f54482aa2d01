"""What a cluster backend (Dask, Ray) sends to its cluster once and then refers to.

A map sends the same function with every chunk: :class:`StoredFunctions` pickles it once (as
the process engine's :class:`~manybrains._serialize.PickledOnce`, whose key each worker
caches it under) and hands a big one to the backend's own store (Dask's ``scatter``, Ray's
``ray.put``), so that each task carries only a reference. A big numpy argument travels
beside its task the same way: the pickled task holds a :class:`Slot` in its place, which the
worker fills with :func:`fill`.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .._serialize import PickledOnce

if TYPE_CHECKING:
    from .._task import Task


@dataclass(frozen=True)
class Slot:
    """Stands in a pickled task for the i-th stored array passed beside it."""

    index: int


def fill(values: Any, arrays: tuple[Any, ...]) -> tuple[Any, ...]:
    """``values`` with each :class:`Slot` replaced by the array it names."""
    return tuple(arrays[v.index] if isinstance(v, Slot) else v for v in values)


class StoredFunctions:
    """The functions one pool has pickled, the most recent ``keep`` remembered: each as
    ``(cache key, its bytes)``, or a big one (``threshold`` bytes or more) as whatever
    ``store`` made of its bytes."""

    def __init__(self, store: Callable[[bytes], Any], threshold: int, keep: int) -> None:
        self._store = store
        self._threshold = threshold
        self._keep = keep
        self._functions: OrderedDict[int, tuple[object, str, Any]] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, task: Task) -> tuple[str, Any]:
        """``(cache key, pickled function or what the store made of it)`` for ``task.fn``."""
        entry = self._functions.get(id(task.fn))
        if entry is None or entry[0] is not task.fn:
            once = task.fn if isinstance(task.fn, PickledOnce) else PickledOnce(task.fn)
            key, blob = once.pickled(task.parts)
            entry = (task.fn, key, self._store(blob) if len(blob) >= self._threshold else blob)
            with self._lock:
                self._functions[id(task.fn)] = entry
                if len(self._functions) > self._keep:
                    self._functions.popitem(last=False)
        return entry[1], entry[2]

    def clear(self) -> None:
        with self._lock:
            self._functions.clear()
