"""What a pool puts into Ray's object store once and then refers to: big functions and arrays.

A map sends the same function with every chunk: it is pickled once (as the process engine's
:class:`~manybrains._serialize.PickledOnce`, whose key each worker caches it under), and a
big one is put into the object store, so that each task carries only a reference, which a
worker fetches only where the function is not cached yet. A big numpy argument is put there
too, once per array object: passed again, it is compared with what was stored (a read of
both, about 2 ms for 32 MB, against 18 ms to hash it) and stored again only where it was
changed in place. Ray hands a stored array to each task that names it without a copy,
read-only.
"""

from __future__ import annotations

import sys
import threading
import weakref
from collections import OrderedDict
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import ray

from .._stored import Slot, StoredFunctions

if TYPE_CHECKING:
    from ..._task import Task

# Arrays (and pickled functions) at least this big are stored once, then referenced.
STORE_BYTES = 1 << 20
_KEEP_STORED = 16  # most recent stored arrays and functions kept alive in the store
_KEEP_FUNCTIONS = 8


class Stored:
    """The functions and arrays one pool has put into the object store, most recent kept."""

    def __init__(self) -> None:
        # A stored function travels as (ref,): nested, so that Ray does not fetch it for every
        # task; the worker does, only where the function is not cached yet.
        self._functions = StoredFunctions(lambda blob: (ray.put(blob),), STORE_BYTES,
                                          _KEEP_FUNCTIONS)
        # id(array) -> (a weak reference to it, its object ref): the id alone could name a
        # new array made where a dead one was
        self._arrays: OrderedDict[int, tuple[weakref.ref[Any], Any]] = OrderedDict()
        self._lock = threading.Lock()
        self.count = 0  # arrays put into the object store, for statistics

    def function(self, task: Task) -> tuple[str, Any]:
        """``(cache key, pickled function or (its object ref,))`` for ``task.fn``."""
        return self._functions.get(task)

    def arguments(self, task: Task
                  ) -> tuple[tuple[Any, ...], dict[str, Any], Sequence[Any] | None, list[Any]]:
        """``task``'s arguments and items with big numpy arrays replaced by slots, and the
        arrays' refs.

        A chunk's items are looked through only where its first item is (or, for starmap,
        holds) an array: a map over arrays gives arrays throughout, and a map over a million
        numbers is not slowed down by a look at each one.
        """
        refs: list[Any] = []
        numpy = sys.modules.get("numpy")
        if numpy is None:
            return task.args, task.kwargs, task.items, refs

        def slot(value: Any) -> Any:
            if not isinstance(value, numpy.ndarray) or value.nbytes < STORE_BYTES \
                    or value.dtype.hasobject:  # objects pickle by value: nothing to share
                return value
            refs.append(self._array(value))
            return Slot(len(refs) - 1)

        args = tuple(map(slot, task.args))
        kwargs = {k: slot(v) for k, v in task.kwargs.items()}
        items = task.items
        if isinstance(items, (list, tuple)) and items and _holds_array(items[0], numpy):
            items = [tuple(map(slot, item)) if task.star else slot(item) for item in items]
        return args, kwargs, items, refs

    def _array(self, array: Any) -> Any:
        with self._lock:
            entry = self._arrays.get(id(array))
        if entry is not None and entry[0]() is array and _same_content(array,
                                                                       ray.get(entry[1])):
            return entry[1]
        found = ray.put(array)
        try:
            alive = weakref.ref(array)
        except TypeError:  # an array type without weak references: stored for this task
            return found
        with self._lock:
            self.count += 1
            self._arrays[id(array)] = (alive, found)
            self._arrays.move_to_end(id(array))
            if len(self._arrays) > _KEEP_STORED:
                self._arrays.popitem(last=False)
        return found

    def clear(self) -> None:
        """Let the object store free them (the pool is closing)."""
        self._functions.clear()
        with self._lock:
            self._arrays.clear()


def _holds_array(item: Any, numpy: Any) -> bool:
    if isinstance(item, (tuple, list)):
        return any(isinstance(value, numpy.ndarray) for value in item)
    return isinstance(item, numpy.ndarray)


def _same_content(array: Any, stored: Any) -> bool:
    """Whether ``array`` holds what was stored from it: same type, shape and bytes."""
    numpy = sys.modules["numpy"]
    if type(stored) is not numpy.ndarray or stored.dtype != array.dtype \
            or stored.shape != array.shape:
        return False
    if array.flags.c_contiguous and stored.flags.c_contiguous:
        word = numpy.uint64 if array.nbytes % 8 == 0 else numpy.uint8
        return bool(numpy.array_equal(array.reshape(-1).view(word),
                                      stored.reshape(-1).view(word)))
    return bool(numpy.array_equal(array, stored))  # a NaN differs: stored again, still right
