"""Carry a worker's traceback to the caller.

The task's exception object travels back pickled and keeps its type, so ``except ValueError``
works as if the call had been local. The worker's formatted traceback becomes the exception's
``__cause__``: Python then prints the line in the worker that failed above the caller's own
traceback.
"""

from __future__ import annotations

import pickle
import traceback

import cloudpickle


class RemoteTraceback(Exception):
    """The traceback of an exception raised in another process or thread, as text."""

    def __init__(self, tb: str) -> None:
        super().__init__(tb)
        self.tb = tb

    def __str__(self) -> str:
        return f'\n"""\n{self.tb}"""'


class RemoteError(Exception):
    """Stands in for a task exception that could not be pickled back to the caller.

    ``type_name`` is the qualified name of the original exception type.
    """

    def __init__(self, type_name: str, message: str) -> None:
        super().__init__(f"{type_name}: {message}")
        self.type_name = type_name
        self.message = message

    def __reduce__(self) -> tuple[object, ...]:
        return (RemoteError, (self.type_name, self.message))


# Shown in tracebacks as manybrains.RemoteTraceback (see the same renaming in _errors.py).
for _public in (RemoteTraceback, RemoteError):
    _public.__module__ = "manybrains"
del _public


def format_exception(exc: BaseException) -> str:
    """The full traceback of ``exc`` as the worker saw it."""
    return "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))


def attach(exc: BaseException, tb: str) -> BaseException:
    """Chain the remote traceback onto ``exc`` and return it, ready to raise."""
    _restore_exit_code(exc)
    cause = RemoteTraceback(tb)
    cause.__cause__ = exc.__cause__
    exc.__cause__ = cause
    return exc


def _restore_exit_code(exc: BaseException) -> None:
    # A pickler that rebuilds exceptions without calling __init__ (tblib's, which importing
    # distributed installs for every exception type) leaves SystemExit.code None: uncaught,
    # the task's SystemExit(4) would end the caller with status 0.
    if isinstance(exc, SystemExit) and exc.code is None and exc.args:
        # CPython's own rule; its stubs type code narrower than the tuple it sets for 2+ args
        exc.code = exc.args[0] if len(exc.args) == 1 else exc.args  # type: ignore[assignment]


def stand_in(exc: BaseException) -> RemoteError:
    """A picklable replacement for an exception that cannot travel as itself."""
    kind = type(exc)
    try:
        message = str(exc)
    except Exception:  # noqa: BLE001 - a broken __str__ must not hide the failure it describes
        message = "<unprintable>"
    return RemoteError(f"{kind.__module__}.{kind.__qualname__}", message)


def portable(exc: BaseException | None) -> tuple[BaseException | None, str]:
    """``exc`` and its traceback, ready to pickle: a stand-in if ``exc`` cannot travel."""
    if exc is None:
        return None, ""
    tb = format_exception(exc)
    try:
        pickle.loads(cloudpickle.dumps(exc))  # exceptions with extra __init__ args fail here
    except BaseException:  # noqa: BLE001
        return stand_in(exc), tb
    return exc, tb
