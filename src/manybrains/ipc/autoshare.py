"""The automatic path for big numpy arrays: shared memory instead of the pipe.

A numpy array of at least the threshold's bytes (1 MiB by default) that is an
argument of a pool task, or a task's result, is not pickled byte by byte into the pipe.
Pickling copies it once into a shared-memory segment and writes only the segment's name;
unpickling maps that segment and returns a view of it::

    caller                                worker
    pool.map(np.sum, arrays)
      pickle task: array -> arena segment   unpickle: attach (mapping cached), view
      (one memcpy, pages reused)            np.sum(view)
      future done -> segment back to arena
                                            return big array: fresh segment ("hand-off")
      unpickle: map, unlink the name  <---  only its name goes through the pipe

Arguments use the pool's :class:`~.arena.Arena` (a :class:`Loan` per task gives them back
when the task's future is done). Results are handed off: the worker writes a new segment and
the receiver unlinks its name as soon as it has mapped it, so the memory lives exactly as
long as the array that views it.

An array received as an argument is a writable view that is valid while the task runs, as a
pickled copy would be; keep a copy (``a.copy()``) of anything the task wants to retain.
Set the threshold with :func:`set_array_threshold` (``None`` turns the path off) or the
``MANYBRAINS_ARRAY_THRESHOLD`` environment variable (bytes, or ``off``).
"""

from __future__ import annotations

import os
import sys
import threading
from concurrent.futures import Future
from types import TracebackType
from typing import Any, Literal, Protocol

import cloudpickle

from .arena import Arena
from .segment import Segment, attach, new_name, unlink

_DEFAULT_THRESHOLD = 1 << 20
Order = Literal["C", "F"]


def _threshold_from_env() -> int | None:
    raw = os.environ.get("MANYBRAINS_ARRAY_THRESHOLD", "").strip().lower()
    if not raw:
        return _DEFAULT_THRESHOLD
    if raw in ("off", "none", "0"):
        return None
    try:
        value = int(raw)
    except ValueError:
        value = -1
    if value < 1:
        raise ValueError(f"MANYBRAINS_ARRAY_THRESHOLD={raw!r}: give a number of bytes (for "
                         "example 1048576) or 'off'")
    return value


_threshold = _threshold_from_env()
_local = threading.local()


def set_array_threshold(nbytes: int | None) -> int | None:
    """Send numpy arrays of at least ``nbytes`` through shared memory; ``None``: never.

    Applies to task arguments pickled in this process and to results pickled by workers
    started after the call under ``fork``; for other start methods set the
    ``MANYBRAINS_ARRAY_THRESHOLD`` environment variable before the pool starts, or call this
    in the pool's initializer. Returns the previous setting.
    """
    global _threshold
    if nbytes is not None and (isinstance(nbytes, bool) or not isinstance(nbytes, int)
                               or nbytes < 1):
        raise ValueError(f"nbytes must be a positive int or None, got {nbytes!r}")
    previous, _threshold = _threshold, nbytes
    return previous


class _Mode(Protocol):
    def reduce(self, array: Any, pickler: SharingPickler) -> tuple[Any, ...]: ...


class SharingPickler(cloudpickle.CloudPickler):  # type: ignore[misc]
    """cloudpickle, sending big arrays through shared memory when a mode is active."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.handed_off: list[str] = []

    def reducer_override(self, obj: Any) -> Any:
        mode: _Mode | None = getattr(_local, "mode", None) or _process_mode
        if mode is not None and _is_big_array(obj):
            return mode.reduce(obj, self)
        return super().reducer_override(obj)

    def dump(self, obj: Any) -> None:
        try:
            super().dump(obj)
        except BaseException:
            for name in self.handed_off:  # nobody will ever receive these
                unlink(name)
            raise


def _is_big_array(obj: Any) -> bool:
    # No numpy imported: no arrays to share. numpy half-imported by another thread may lack
    # ndarray yet (and then no array exists): never read it as if complete.
    ndarray = getattr(sys.modules.get("numpy"), "ndarray", None)
    return (ndarray is not None and type(obj) is ndarray and _threshold is not None
            and obj.nbytes >= _threshold and not obj.dtype.hasobject)


def _layout(array: Any) -> Order:
    return "F" if array.flags.f_contiguous and not array.flags.c_contiguous else "C"


def _copy_into(segment: Segment, array: Any, order: Order) -> None:
    import numpy as np

    np.copyto(np.ndarray(array.shape, array.dtype, buffer=segment.buf, order=order), array)


# ---- arguments: lent from an arena ---------------------------------------------------------


class Loan:
    """The arena segments one task's arguments occupy, given back when it is done.

    ``with Loan(arena) as loan: pickle...`` lends segments to big arrays pickled inside the
    block; :meth:`settle_with` gives them back when the task's future completes.
    """

    __slots__ = ("_arena", "_previous", "segments")

    def __init__(self, arena: Arena) -> None:
        self._arena = arena
        self.segments: list[Segment] = []

    def reduce(self, array: Any, pickler: SharingPickler) -> tuple[Any, ...]:
        segment = self._arena.lend(array.nbytes)
        self.segments.append(segment)
        order = _layout(array)
        _copy_into(segment, array, order)
        return (_receive_lent, (segment.name, array.shape, array.dtype, order))

    def __enter__(self) -> Loan:
        self._previous = getattr(_local, "mode", None)
        _local.mode = self
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        _local.mode = self._previous
        if exc_type is not None:  # the task was never sent
            self._give_back(cancelled=False)

    def settle_with(self, future: Future[Any]) -> None:
        """Give the segments back once ``future`` is done."""
        if self.segments:
            future.add_done_callback(self._on_done)

    def _on_done(self, future: Future[Any]) -> None:
        # A task cancelled after it was queued in a worker may still run: its segments
        # must not be reused for another task's data, so they are removed instead.
        self._give_back(cancelled=future.cancelled())

    def _give_back(self, *, cancelled: bool) -> None:
        segments, self.segments = self.segments, []
        for segment in segments:
            if cancelled:
                self._arena.discard(segment)
            else:
                self._arena.give_back(segment)


def _receive_lent(name: str, shape: tuple[int, ...], dtype: Any, order: Order) -> Any:
    import numpy as np

    return np.ndarray(shape, dtype, buffer=attach(name).buf, order=order)


# ---- results: handed off -----------------------------------------------------------------


class _HandOff:
    def reduce(self, array: Any, pickler: SharingPickler) -> tuple[Any, ...]:
        segment = Segment.create(array.nbytes, name=new_name("h"))
        pickler.handed_off.append(segment.name)
        segment.close_fd()
        order = _layout(array)
        _copy_into(segment, array, order)
        return (_receive_handed_off, (segment.name, array.shape, array.dtype, order))


_process_mode: _Mode | None = None


def hand_off_results() -> None:
    """In this process, pickle big arrays as hand-off segments (done once in each worker)."""
    global _process_mode
    _process_mode = _HandOff()


class _Inline:
    def reduce(self, array: Any, pickler: SharingPickler) -> Any:
        return NotImplemented  # pickled as numpy pickles it


class _InMode:
    """Within the block, big arrays pickled by this thread follow ``mode``."""

    def __init__(self, mode: _Mode) -> None:
        self._mode = mode

    def __enter__(self) -> None:
        self._previous = getattr(_local, "mode", None)
        _local.mode = self._mode

    def __exit__(self, *exc: object) -> None:
        _local.mode = self._previous


def handing_off() -> _InMode:
    """Within the block, big arrays pickled by this thread are handed off."""
    return _InMode(_HandOff())


def no_sharing() -> _InMode:
    """Within the block, big arrays pickled by this thread go inline (a reusable blob)."""
    return _InMode(_Inline())


def _receive_handed_off(name: str, shape: tuple[int, ...], dtype: Any, order: Order) -> Any:
    import numpy as np

    segment = Segment.open(name)
    unlink(name)  # the mapping keeps the memory for as long as the array lives
    segment.close_fd()
    return np.ndarray(shape, dtype, buffer=segment.buf, order=order)
