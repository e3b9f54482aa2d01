"""``SharedArray``: a numpy array whose memory is a named shared-memory segment.

It pickles as its name, shape and dtype, so handing one to a pool task or a spawned process
costs a few hundred bytes whatever its size, under every start method, and the receiver
works on the same memory: writes in a worker are seen by the parent. ``np.asarray(sa)`` is
a view, never a copy.

The process that creates it owns the segment and removes it (``unlink()``, the end of a
``with`` block, garbage collection or exit); processes that receive it only map it, so a
worker that is killed leaves nothing behind.
"""

from __future__ import annotations

import math
import os
import weakref
from types import TracebackType
from typing import TYPE_CHECKING, Any

from .items import ItemAccess
from .segment import Segment, attach, new_name, unlink
from .semaphore import Lock, unlink_lock

if TYPE_CHECKING:
    import numpy as np


class SharedArray(ItemAccess):
    """A numpy array in shared memory: :meth:`zeros`, :meth:`empty` or :meth:`from_array`."""

    def __init__(self, segment: Segment, shape: tuple[int, ...], dtype: Any, *,
                 owner: bool) -> None:
        import numpy as np

        self._segment: Segment | None = segment
        self._array: np.ndarray[Any, Any] | None = np.ndarray(shape, dtype, buffer=segment.buf)
        self.name = segment.name
        # The creator makes the lock (so it owns it); receivers open it when they first use it.
        self._lock: Lock | None = Lock(name=self.name + "l") if owner else None
        self._finalizer = (weakref.finalize(self, _unlink_if_creator, self.name, os.getpid())
                           if owner else None)

    # ---- creating -------------------------------------------------------------------------

    @classmethod
    def empty(cls, shape: int | tuple[int, ...], dtype: Any = "float64") -> SharedArray:
        """A new shared array with undefined contents."""
        import numpy as np

        shape = (shape,) if isinstance(shape, int) else tuple(shape)
        dtype = np.dtype(dtype)
        if dtype.hasobject:
            raise TypeError(f"dtype {dtype} holds Python objects, which cannot be shared")
        nbytes = math.prod(shape) * dtype.itemsize
        return cls(Segment.create(nbytes, name=new_name("a")), shape, dtype, owner=True)

    @classmethod
    def zeros(cls, shape: int | tuple[int, ...], dtype: Any = "float64") -> SharedArray:
        """A new shared array of zeros (fresh shared memory is zero-filled by the kernel)."""
        return cls.empty(shape, dtype)

    @classmethod
    def from_array(cls, array: Any) -> SharedArray:
        """A new shared array holding a copy of ``array``."""
        import numpy as np

        source = np.asarray(array)
        shared = cls.empty(source.shape, source.dtype)
        np.copyto(shared.array, source)
        return shared

    @classmethod
    def _open(cls, name: str, shape: tuple[int, ...], dtype: Any) -> SharedArray:
        return cls(attach(name), shape, dtype, owner=False)

    def __reduce__(self) -> tuple[Any, tuple[Any, ...]]:
        array = self.array
        return (SharedArray._open, (self.name, array.shape, array.dtype))

    # ---- using ----------------------------------------------------------------------------

    @property
    def array(self) -> np.ndarray[Any, Any]:
        """The numpy view of the shared memory."""
        if self._array is None:
            raise ValueError(f"SharedArray {self.name} is closed")
        return self._array

    def __array__(self, dtype: Any = None, copy: bool | None = None) -> np.ndarray[Any, Any]:
        if copy:
            return self.array.astype(dtype, copy=True) if dtype else self.array.copy()
        return self.array if dtype is None else self.array.astype(dtype, copy=False)

    @property
    def shape(self) -> tuple[int, ...]:
        """The array's shape."""
        return tuple(self.array.shape)

    @property
    def dtype(self) -> Any:
        """The array's dtype."""
        return self.array.dtype

    @property
    def nbytes(self) -> int:
        """Size of the data in bytes."""
        return int(self.array.nbytes)

    @property
    def _items(self) -> Any:
        return self.array

    @property
    def lock(self) -> Lock:
        """A lock that travels with the array, for read-modify-write across processes
        (``with sa.lock: sa[0] += 1``). A holder that dies does not wedge it (see
        :class:`~manybrains.Lock`)."""
        if self._lock is None:
            self._lock = Lock.attach(self.name + "l")
        return self._lock

    def get_lock(self) -> Lock:
        """``lock``, as ``multiprocessing.Array.get_lock``."""
        return self.lock

    # ---- lifecycle ------------------------------------------------------------------------

    @property
    def owner(self) -> bool:
        """Whether this process created the segment (and so removes it)."""
        return self._finalizer is not None and self._finalizer.alive

    def close(self) -> None:
        """Stop using the memory here; views already taken stay valid. Idempotent."""
        self._array = None
        self._segment = None

    def unlink(self) -> None:
        """Remove the segment's name: nobody can receive it any more. Idempotent.

        Processes that already mapped it keep their memory until they close it.
        """
        if self._finalizer is not None:
            self._finalizer()
        else:
            unlink(self.name)

    def __enter__(self) -> SharedArray:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        """Close; the creator also unlinks."""
        if self._finalizer is not None:
            self._finalizer()
        self.close()

    def __repr__(self) -> str:
        if self._array is None:
            return f"<manybrains.SharedArray {self.name} closed>"
        return (f"<manybrains.SharedArray {self.name} shape={self._array.shape} "
                f"dtype={self._array.dtype}>")


def _unlink_if_creator(name: str, creator: int) -> None:
    if os.getpid() == creator:
        unlink(name)
        unlink_lock(name + "l")
