"""Pickling, done once and in the caller's thread.

Everything that crosses a process boundary goes through here. cloudpickle lets lambdas,
closures and functions from ``__main__`` travel under every start method; it is as fast as
the stdlib pickler on plain data, so it is used for both directions. A failure names what
could not be pickled and is raised where the user called, never inside an engine thread
where it could leave a future pending forever.
"""

from __future__ import annotations

import io
import itertools
import os
import pickle
import struct
import sys
import types
from collections import ChainMap
from collections.abc import Callable, Iterable
from multiprocessing.reduction import ForkingPickler
from typing import Any, ClassVar

import cloudpickle

from . import _mainspace, _mp_primitives
from .ipc.autoshare import SharingPickler, no_sharing

PROTOCOL = pickle.HIGHEST_PROTOCOL

# SystemExit raised from a __reduce__ is a pickling failure, not a request to exit.
_PICKLING_FAILURES = (Exception, SystemExit)


class Frame(bytearray):
    """A growing message buffer that a pickler writes into.

    ``BytesIO.getbuffer()`` would avoid a copy too, but a BytesIO freed while its buffer is
    exported (by the cycle collector, say) reports a BufferError on Python 3.13.
    """

    def write(self, data: bytes | memoryview | pickle.PickleBuffer) -> int:
        view = memoryview(data)  # the pickler hands big in-band buffers over as PickleBuffer
        self.extend(view)
        return view.nbytes


class Pickler(SharingPickler):
    """cloudpickle with manybrains' rules: ``__main__`` objects (see :mod:`._mainspace`),
    ``multiprocessing`` locks handed to workers that inherit them, big arrays (autoshare)."""

    # multiprocessing's own reducers (connections, shared-ctypes arenas), which the stdlib
    # registers only with its ForkingPickler, after cloudpickle's.
    dispatch_table: ClassVar[ChainMap[Any, Any]] = ChainMap(SharingPickler.dispatch_table,
                              ForkingPickler._extra_reducers)  # type: ignore[attr-defined]

    def reducer_override(self, obj: Any) -> Any:
        reduction = _mp_primitives.reduce_kept(obj)
        if reduction is NotImplemented:
            reduction = _mainspace.reduce(obj)
        if reduction is NotImplemented and isinstance(obj, _semlock_type()):
            reduction = _mp_primitives.reduce_semlock(obj)
        if reduction is NotImplemented:
            return super().reducer_override(obj)
        return reduction


def _semlock_type() -> type:
    # Not imported: no locks made, nothing to do. Being imported by another thread, it may
    # lack the class yet, and then no lock exists either: never read it as if complete.
    module = sys.modules.get("multiprocessing.synchronize")
    semlock: type = getattr(module, "SemLock", _NoSemLock)
    return semlock


class _NoSemLock:
    pass


def dumps(obj: object, *, header: bytes = b"") -> Frame:
    """Pickle ``obj`` after ``header`` in one buffer, so a message is sent without a copy."""
    frame = Frame(header)
    Pickler(frame, protocol=PROTOCOL).dump(obj)
    return frame


def dumps_plain(obj: object) -> bytes:
    """Pickle ``obj`` by manybrains' rules but with big arrays inline (for cached blobs)."""
    buffer = io.BytesIO()
    with no_sharing():
        Pickler(buffer, protocol=PROTOCOL).dump(obj)
    return buffer.getvalue()


def loads(data: bytes | bytearray | memoryview) -> Any:
    """Unpickle what :func:`dumps` produced (after its header)."""
    return pickle.loads(data)


def dumps_checked(obj: object, *, header: bytes, parts: Callable[[], Iterable[tuple[str, object]]]
                  ) -> Frame:
    """Pickle ``obj``; on failure raise :class:`SerializationError` naming the culprit.

    ``parts`` lists the named pieces of ``obj`` (the function, each argument); it is only
    called after a failure, to find which piece could not be pickled.
    """
    try:
        return dumps(obj, header=header)
    except _PICKLING_FAILURES as exc:
        from ._errors import SerializationError  # parent-only; workers never raise it

        raise SerializationError(_explain(exc, parts())) from exc


def _explain(exc: BaseException, parts: Iterable[tuple[str, object]]) -> str:
    for name, part in parts:
        try:
            dumps_plain(part)
        except _PICKLING_FAILURES as part_exc:
            return f"cannot pickle {name} ({type(part).__qualname__}): " + _advice(part_exc)
    return f"cannot pickle the task: {_advice(exc)}"


def _advice(exc: BaseException) -> str:
    said = f"{type(exc).__name__}: {exc}."
    if isinstance(exc, _mp_primitives.NotInherited):  # its message says what to do
        return said
    if "through inheritance" in str(exc):  # a multiprocessing primitive as a task argument
        return (f"{said} A multiprocessing lock, queue or value reaches pool workers in two "
                "ways: pass it in the pool's initargs= (the initializer can keep it in a "
                "global), or use manybrains' own mb.Lock, mb.Queue, mb.Value or mb.Array, "
                "which can also be task arguments")
    return (f"{said} Pass something picklable, or create it inside the task (an initializer "
            "can build per-worker state)")


class PickledOnce:
    """A function pickled at most once however many tasks carry it.

    A map sends the same function with every chunk; this wrapper pickles it on first use and
    then copies the bytes, and the worker unpickles each distinct function once.
    """

    __slots__ = ("_blob", "_key", "_reference", "fn")
    _keys = itertools.count(1)

    def __init__(self, fn: Callable[..., Any]) -> None:
        self.fn = fn
        # Unique across processes: a worker forked from this one (a nested pool's, or a
        # Dask worker serving several clients) may hold other functions under a bare count.
        self._key = f"{_process_tag}-{next(self._keys)}"
        self._blob: bytes | None = None
        self._reference: bytes | None = None

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.fn(*args, **kwargs)

    def __reduce__(self) -> tuple[Callable[[str, bytes], Any], tuple[str, bytes]]:
        if self._blob is None:
            self._blob = dumps_plain(self.fn)
        return (load_function, (self._key, self._blob))

    def reference(self) -> bytes:
        """This function pickled as a whole (a :func:`load_function` call), made once."""
        if self._reference is None:
            self._reference = pickle.dumps(self, PROTOCOL)
        return self._reference

    def pickled(self, parts: Callable[[], Iterable[tuple[str, object]]]) -> tuple[str, bytes]:
        """``(key, bytes)`` for :func:`load_function`, for a backend that sends the function
        apart from its tasks; a failure raises :class:`SerializationError` naming the culprit."""
        if self._blob is None:
            try:
                self._blob = dumps_plain(self.fn)
            except _PICKLING_FAILURES as exc:
                from ._errors import SerializationError

                raise SerializationError(_explain(exc, parts())) from exc
        return self._key, self._blob


class FunctionCache:
    """One pool's pickled functions, reused by later submits while still right.

    Pickling the function is most of what a small task costs (cloudpickle looks it up by
    module and name, and every object passes the pool's pickling rules), so a function seen
    before is sent as the :class:`PickledOnce` made for it then. That pickle stays right for
    a function pickled by reference (found in its module under its name), and for a
    ``__main__`` function while what its pickle was made of is the same
    (:func:`manybrains._mainspace.pickle_depends_on`: a global rebound in a notebook makes a
    new pickle). Closures, partials, methods and other callables are pickled with each task.
    """

    _SIZE = 64  # functions remembered; a program that makes more starts again

    def __init__(self) -> None:
        # id(fn) -> (fn, what its pickle depends on, their ids, the pickle). The entry holds
        # those objects, so no other object can have their ids while it stands.
        self._entries: dict[int, tuple[Any, tuple[Any, ...], tuple[int, ...], PickledOnce]] = {}

    def get(self, fn: Any, parts: Callable[[], Iterable[tuple[str, object]]],
            target: dict[str, str] | None) -> PickledOnce | None:
        """``fn`` pickled for workers that inherited ``target`` (see
        :func:`manybrains._mainspace.sending_to`), or None where a cached pickle could go
        stale. An unpicklable function raises :class:`SerializationError` naming it."""
        found = _pickle_depends_on(fn)
        if found is None:
            return None
        depends = (target, *found)
        ids = tuple(map(id, depends))
        entry = self._entries.get(id(fn))
        if entry is not None and entry[0] is fn and entry[2] == ids:
            return entry[3]
        once = PickledOnce(fn)
        with _mainspace.sending_to(target):
            once.pickled(parts)
        if len(self._entries) >= self._SIZE:
            self._entries.clear()
        self._entries[id(fn)] = (fn, depends, ids, once)
        return once


def _pickle_depends_on(fn: Any) -> tuple[Any, ...] | None:
    if type(fn) is types.BuiltinFunctionType:
        module = sys.modules.get(getattr(fn, "__module__", None) or "")
        return () if module is not None and getattr(module, fn.__name__, None) is fn else None
    if type(fn) is not types.FunctionType:
        return None
    if fn.__module__ == "__main__":
        return _mainspace.pickle_depends_on(fn)
    # cloudpickle sends it by reference when its module, as loaded, holds it by that name.
    module = sys.modules.get(fn.__module__)
    if module is None or getattr(module, fn.__qualname__, None) is not fn:
        return None
    if _by_value(fn.__module__):
        return None
    return (module,)


def _by_value(module: str) -> bool:
    registered = cloudpickle.list_registry_pickle_by_value()
    return any(module == name or module.startswith(name + ".") for name in registered)


_PLAIN_ATOMS = frozenset({int, float, str, bytes, bool, type(None), complex})
_PLAIN_MAX = 64  # elements looked at in one container; bigger ones take the full path


def plain(value: Any, depth: int = 2) -> bool:
    """Whether ``value`` is built only of numbers, strings, bytes and small containers of
    them: the standard pickler sends it exactly as manybrains' rules would (no array to
    share, no ``__main__`` object, no lock), much faster."""
    kind = type(value)
    if kind in _PLAIN_ATOMS:
        return True
    if depth == 0 or kind not in _PLAIN_CONTAINERS or len(value) > _PLAIN_MAX:
        return False
    if kind is dict:
        return all(type(k) is str and (type(v) in _PLAIN_ATOMS or plain(v, depth - 1))
                   for k, v in value.items())
    return all(type(v) in _PLAIN_ATOMS or plain(v, depth - 1) for v in value)


_PLAIN_CONTAINERS = frozenset({tuple, list, dict})
_REFERENCE_SIZE = struct.Struct("<I")


def dumps_call(function: PickledOnce, args: tuple[Any, ...], kwargs: dict[str, Any],
               header: bytes) -> bytes:
    """``header``, then a call of a cached function with :func:`plain` arguments: the
    function's pickled reference (made once) and the arguments, by the standard pickler."""
    reference = function.reference()
    return b"".join((header, _REFERENCE_SIZE.pack(len(reference)), reference,
                     pickle.dumps((args, kwargs), PROTOCOL)))


_CALLS: dict[bytes, Any] = {}  # in a worker: a function reference's bytes -> the function


def loads_call(payload: bytes | bytearray | memoryview
               ) -> tuple[Callable[..., Any], tuple[Any, ...], dict[str, Any]]:
    """``(function, args, kwargs)`` of what :func:`dumps_call` wrote after its header."""
    size: int = _REFERENCE_SIZE.unpack_from(payload)[0]
    end = _REFERENCE_SIZE.size + size
    reference = bytes(payload[_REFERENCE_SIZE.size:end])
    fn = _CALLS.get(reference)
    if fn is None:
        if len(_CALLS) >= 32:  # as load_function's cache: only recent functions
            _CALLS.clear()
        fn = _CALLS[reference] = pickle.loads(reference)
    args, kwargs = pickle.loads(payload[end:])
    return fn, args, kwargs


_FUNCTIONS: dict[str, Any] = {}
_process_tag = os.urandom(6).hex()


def _new_process_tag() -> None:
    global _process_tag
    _process_tag = os.urandom(6).hex()


os.register_at_fork(after_in_child=_new_process_tag)


def load_function(key: str, blob: bytes | Callable[[], bytes]) -> Any:
    """Unpickle a :class:`PickledOnce` function, from the cache when this process has it.

    ``blob`` may be a callable that fetches the bytes, called only where the cache misses.
    """
    fn = _FUNCTIONS.get(key)
    if fn is None:
        if len(_FUNCTIONS) >= 32:  # a long-lived worker sees many maps; keep only recent ones
            _FUNCTIONS.clear()
        fn = _FUNCTIONS[key] = pickle.loads(blob if isinstance(blob, bytes) else blob())
    return fn
