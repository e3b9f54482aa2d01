"""The worker-side wire: run a task where it landed, and carry its outcome back as bytes.

Written once for every backend whose tasks run in another process (the process engine's
workers, Dask workers); each adds only its own header and transport::

    worker                                          caller
    ------                                          ------
    execute(unpickle, payload)
      -> (outcome, elapsed, body)
         BAD_TASK  the task did not unpickle
         ERROR     the call raised (SystemExit too)
         RESULT    a value, or a chunk's (values, error, traceback)
    encode(outcome, body, header) ── one Frame ──►  decode(outcome, body, ...)
      an unpicklable result -> BAD_RESULT              -> (value or ChunkOutcome, None)
                                                       -> (None, the error to raise)

The outcome is the wire's own small number; each backend's header carries it beside its own
fields (the process engine's reply header, Dask's and Ray's reply prefix), and the caller
reads that header once, then hands the outcome and the body here.

An exception travels with its formatted traceback (or as a picklable stand-in), so the
caller's error keeps its type and shows the line in the worker that failed.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from time import perf_counter
from typing import Any, TypeVar

from .._remote import RemoteTraceback, attach, format_exception, portable
from .._serialize import Frame, dumps, loads
from .._task import ChunkOutcome, PackedScalars, run_chunk

# A task's outcome, what its reply's body holds: one byte of every backend's reply header.
RESULT = 0  # the return value, or a chunk's (values, error, traceback)
ERROR = 1  # (exception, traceback)
BAD_RESULT = 2  # the result could not be pickled: (message, traceback, exception)
BAD_TASK = 3  # the task could not be unpickled: (exception, traceback)

TaskParts = tuple[Callable[..., Any], tuple[Any, ...], dict[str, Any], Sequence[Any] | None,
                  bool]
P = TypeVar("P")

# ---- in the worker ------------------------------------------------------------------------


def execute(unpickle: Callable[[P], TaskParts], payload: P) -> tuple[int, float, Any]:
    """Run the task in ``payload``: ``(outcome, seconds running, body to send back)``.

    ``unpickle`` turns the payload into ``(fn, args, kwargs, items, star)``; ``items`` given,
    ``fn`` runs on each of them as a chunk.
    """
    try:
        fn, args, kwargs, items, star = unpickle(payload)
    except BaseException as exc:  # noqa: BLE001 - a task that cannot be unpickled fails alone
        return BAD_TASK, 0.0, portable(exc)
    if items is None:
        start = perf_counter()
        try:
            value = fn(*args, **kwargs)
        except BaseException as exc:  # noqa: BLE001 - SystemExit too: it belongs to the task
            return ERROR, perf_counter() - start, portable(exc)
        return RESULT, perf_counter() - start, value
    ran = run_chunk(fn, items, star)
    return RESULT, ran.elapsed, (PackedScalars.pack(ran.values), *portable(ran.error))


def error_body(exc: BaseException) -> tuple[BaseException | None, str]:
    """What an ``ERROR`` reply carries for ``exc`` (also for failures outside a task)."""
    return portable(exc)


def encode(outcome: int, body: Any, header: Callable[[int], bytes]) -> Frame:
    """``header(outcome)`` then ``body`` pickled in one buffer; ``BAD_RESULT`` if it cannot be."""
    try:
        return dumps(body, header=header(outcome))
    except BaseException as exc:  # noqa: BLE001 - an unpicklable result fails its task alone
        message = f"cannot pickle the result ({type(body).__qualname__}): {exc}"
        # the exception too: the caller's error is also an instance of its type
        return dumps((message, format_exception(exc), portable(exc)[0]),
                     header=header(BAD_RESULT))


# ---- in the caller ------------------------------------------------------------------------


def decode(outcome: int, body: bytes | memoryview, label: str | Callable[[], str],
           chunk: bool = False, elapsed: float = 0.0) -> tuple[Any, BaseException | None]:
    """``(value, None)`` for a ``RESULT`` (a :class:`ChunkOutcome` if ``chunk``), else
    ``(None, the error to raise)``. ``label`` names the task in error messages (a callable
    makes it only for an error: most tasks never need one)."""
    try:
        payload = loads(body)
    except BaseException as load_error:  # noqa: BLE001 - a bad result fails its task alone
        from .._errors import UnpicklingFailed

        error = UnpicklingFailed(f"cannot unpickle the result of {_named(label)}: "
                                 f"{load_error!r}")
        error.__cause__ = load_error
        return None, error
    if outcome == RESULT:
        if chunk:
            values, item_error, tb = payload
            payload = ChunkOutcome(PackedScalars.unpack(values),
                                   attach(item_error, tb) if item_error else None, elapsed)
        return payload, None
    return None, _error(outcome, payload, _named(label))


def _named(label: str | Callable[[], str]) -> str:
    return label if isinstance(label, str) else label()


def _error(outcome: int, payload: Any, label: str) -> BaseException:
    # Imported here: workers load this module, and never need the caller's error types.
    from .._errors import SerializationError, also_instance_of_type_of, unpicklable_task

    if outcome == ERROR:
        return attach(*payload)
    if outcome == BAD_TASK:
        return unpicklable_task(label, attach(*payload))
    message, tb, *original = payload
    unpicklable = SerializationError(f"{label}: {message}")
    unpicklable.__cause__ = RemoteTraceback(tb)
    if original and original[0]:
        return also_instance_of_type_of(unpicklable, original[0])
    return unpicklable
