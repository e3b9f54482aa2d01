"""Pickling, done once and in the caller's thread.

Everything that crosses a process boundary goes through here. cloudpickle lets lambdas,
closures and functions from ``__main__`` travel under every start method; it is as fast as
the stdlib pickler on plain data, so it is used for both directions. A failure names what
could not be pickled and is raised where the user called, never inside an engine thread
where it could leave a future pending forever.
"""

from __future__ import annotations

import pickle
from collections.abc import Callable, Iterable
from typing import Any

import cloudpickle

from .ipc.autoshare import SharingPickler

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


def dumps(obj: object, *, header: bytes = b"") -> Frame:
    """Pickle ``obj`` after ``header`` in one buffer, so a message is sent without a copy."""
    frame = Frame(header)
    SharingPickler(frame, protocol=PROTOCOL).dump(obj)  # big arrays: see ipc.autoshare
    return frame


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
            cloudpickle.dumps(part, protocol=PROTOCOL)
        except _PICKLING_FAILURES as part_exc:
            return (f"cannot pickle {name} ({type(part).__qualname__}): "
                    f"{type(part_exc).__name__}: {part_exc}. Pass something picklable, or "
                    f"create it inside the task (an initializer can build per-worker state)")
    return f"cannot pickle the task: {type(exc).__name__}: {exc}"


class PickledOnce:
    """A function pickled at most once however many tasks carry it.

    A map sends the same function with every chunk; this wrapper pickles it on first use and
    then copies the bytes, and the worker unpickles each distinct function once.
    """

    __slots__ = ("_blob", "_key", "fn")
    _keys = iter(range(1, 1 << 62))

    def __init__(self, fn: Callable[..., Any]) -> None:
        self.fn = fn
        self._key = next(self._keys)
        self._blob: bytes | None = None

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.fn(*args, **kwargs)

    def __reduce__(self) -> tuple[Callable[[int, bytes], Any], tuple[int, bytes]]:
        if self._blob is None:
            self._blob = cloudpickle.dumps(self.fn, protocol=PROTOCOL)
        return (load_function, (self._key, self._blob))


_FUNCTIONS: dict[int, Any] = {}


def load_function(key: int, blob: bytes) -> Any:
    """Unpickle a :class:`PickledOnce` function, from the cache when this process has it."""
    fn = _FUNCTIONS.get(key)
    if fn is None:
        if len(_FUNCTIONS) >= 32:  # a long-lived worker sees many maps; keep only recent ones
            _FUNCTIONS.clear()
        fn = _FUNCTIONS[key] = pickle.loads(blob)
    return fn
