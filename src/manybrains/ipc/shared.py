"""``Value`` and ``Array``: ctypes numbers in shared memory, with a lock that travels.

Like ``multiprocessing.Value``/``Array``, but they pickle by name, so they can be arguments
of pool tasks and spawned processes under every start method, not only inherited. Each read
or write of one element is a single machine access; read-modify-write needs the lock::

    with counter.lock:
        counter.value += 1
    counter.add(1)          # the same, atomic, returns the new value
"""

from __future__ import annotations

import ctypes
import os
import weakref
from collections.abc import Iterable, Iterator
from typing import Any

from .items import ItemAccess
from .segment import Segment, attach, new_name, unlink
from .semaphore import Lock

# The typecodes of the array module (and multiprocessing.Value).
_TYPES: dict[str, Any] = {
    "c": ctypes.c_char, "u": ctypes.c_wchar, "b": ctypes.c_byte, "B": ctypes.c_ubyte,
    "h": ctypes.c_short, "H": ctypes.c_ushort, "i": ctypes.c_int, "I": ctypes.c_uint,
    "l": ctypes.c_long, "L": ctypes.c_ulong, "q": ctypes.c_longlong, "Q": ctypes.c_ulonglong,
    "f": ctypes.c_float, "d": ctypes.c_double,
}


def _ctype(typecode: str) -> Any:
    try:
        return _TYPES[typecode]
    except KeyError:
        codes = ", ".join(repr(c) for c in _TYPES)
        raise ValueError(f"unknown typecode {typecode!r}; use one of {codes}") from None


class _Shared:
    """A ctypes object over a shared segment, plus its lock; owned by its creator."""

    def __init__(self, typecode: str, length: int | None) -> None:
        ctype = _ctype(typecode) if length is None else _ctype(typecode) * length
        name = new_name("v")
        self._bind(typecode, length, Segment.create(ctypes.sizeof(ctype), name=name),
                   Lock(name=name + "l"))
        self._finalizer: weakref.finalize[Any, Any] | None = weakref.finalize(
            self, _unlink_if_creator, name, os.getpid())

    def _bind(self, typecode: str, length: int | None, segment: Segment, lock: Lock) -> None:
        ctype = _ctype(typecode) if length is None else _ctype(typecode) * length
        self.typecode, self._length, self._segment = typecode, length, segment
        self._obj = ctype.from_buffer(segment.buf)
        self.lock = lock

    @classmethod
    def _open(cls, typecode: str, length: int | None, name: str) -> Any:
        self = cls.__new__(cls)
        self._finalizer = None
        self._bind(typecode, length, attach(name), Lock.attach(name + "l"))
        return self

    @property
    def name(self) -> str:
        """The shared-memory name this object travels by."""
        return self._segment.name

    def get_lock(self) -> Lock:
        """The lock (as ``multiprocessing.Value.get_lock``)."""
        return self.lock

    def __reduce__(self) -> tuple[Any, tuple[Any, ...]]:
        return (type(self)._open, (self.typecode, self._length, self.name))


class Value(_Shared):
    """One shared number: ``Value("i", 0)``; ``typecode`` as in the ``array`` module."""

    def __init__(self, typecode: str, initial: Any = 0) -> None:
        super().__init__(typecode, None)
        self._obj.value = initial

    @property
    def value(self) -> Any:
        """The current value. ``v.value += 1`` is not atomic: use :meth:`add` or ``lock``."""
        return self._obj.value

    @value.setter
    def value(self, new: Any) -> None:
        self._obj.value = new

    def add(self, n: Any = 1) -> Any:
        """Add ``n`` atomically and return the new value."""
        with self.lock:
            new = self._obj.value + n
            self._obj.value = new
            return self._obj.value

    def __repr__(self) -> str:
        return f"<manybrains.Value {self.typecode!r} {self._obj.value!r}>"


class Array(ItemAccess, _Shared):
    """A fixed-size shared array: ``Array("d", 10)`` or ``Array("i", [1, 2, 3])``."""

    def __init__(self, typecode: str, size_or_initializer: int | Iterable[Any]) -> None:
        if isinstance(size_or_initializer, int):
            if size_or_initializer < 0:
                raise ValueError(f"size must be >= 0, got {size_or_initializer}")
            initial: list[Any] | None = None
            size = size_or_initializer
        else:
            initial = list(size_or_initializer)
            size = len(initial)
        super().__init__(typecode, size)
        if initial is not None:
            self._obj[:] = initial

    def add(self, index: int, n: Any = 1) -> Any:
        """Add ``n`` to element ``index`` atomically and return its new value."""
        with self.lock:
            self._obj[index] += n
            return self._obj[index]

    @property
    def _items(self) -> Any:
        return self._obj

    def __iter__(self) -> Iterator[Any]:
        return iter(self._obj[:])

    def tolist(self) -> list[Any]:
        """A copy of the elements as a list."""
        return list(self._obj[:])

    def __repr__(self) -> str:
        return f"<manybrains.Array {self.typecode!r} {self._obj[:]!r}>"


def _unlink_if_creator(name: str, creator: int) -> None:
    if os.getpid() == creator:
        unlink(name)
