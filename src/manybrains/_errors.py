"""The exceptions manybrains raises.

::

    ManybrainsError
    ├── BackendNotFound (LookupError)   unknown backend, or its extra is not installed
    ├── BrokenPool (BrokenProcessPool)  the pool cannot run the task
    │   ├── WorkerCrashed               the worker died while holding the task
    │   ├── InitializerFailed           the initializer raised or crashed
    │   └── UnpicklingFailed            a task (in its worker) or result could not be unpickled
    ├── SerializationError (PicklingError)  a task, argument or result could not be (un)pickled
    │   └── UnpicklingFailed (UnpicklingError)
    └── PoolClosed (RuntimeError, ValueError)  the pool was used after shutdown

A task's own exception is never wrapped: it is re-raised with its own type and the worker's
traceback as its ``__cause__``. Timeouts raise the builtin ``TimeoutError`` and cancellations
``concurrent.futures.CancelledError``.
"""

from __future__ import annotations

import pickle
import signal
from concurrent.futures.process import BrokenProcessPool


class ManybrainsError(Exception):
    """Base class of every error that manybrains itself raises."""


class BackendNotFound(ManybrainsError, LookupError):
    """The named backend does not exist, or the extra that brings it is not installed."""


class BrokenPool(ManybrainsError, BrokenProcessPool):
    """The pool could not run a task (a subclass of the stdlib's ``BrokenProcessPool``)."""


class WorkerCrashed(BrokenPool):
    """The worker process died while it held the task.

    ``exitcode`` is the worker's exit status (negative: killed by that signal) and ``pid`` its
    process id.
    """

    def __init__(self, message: str, *, pid: int | None = None, exitcode: int | None = None):
        super().__init__(message)
        self.pid = pid
        self.exitcode = exitcode

    def __reduce__(self) -> tuple[object, ...]:
        return (_rebuild_crash, (str(self), self.pid, self.exitcode))


def _rebuild_crash(message: str, pid: int | None, exitcode: int | None) -> WorkerCrashed:
    return WorkerCrashed(message, pid=pid, exitcode=exitcode)


class InitializerFailed(BrokenPool):
    """The pool's initializer raised or crashed in a worker; the cause is chained."""

    @classmethod
    def because(cls, cause: BaseException | None, where: str) -> InitializerFailed:
        """The error for an initializer that failed ``where`` ("in a thread"), from ``cause``
        (None where nothing was raised: the worker died in it)."""
        error = cls(f"the pool's initializer failed {where}"
                    + ("" if cause is None else f": {cause!r}"))
        error.__cause__ = cause
        return error


class SerializationError(ManybrainsError, pickle.PicklingError):
    """A task, one of its arguments or its result could not be pickled or unpickled.

    A ``pickle.PicklingError``, so code written for the stdlib pools catches it;
    :func:`also_instance_of` makes one that is also an instance of the error that caused it.
    """


class UnpicklingFailed(SerializationError, pickle.UnpicklingError, BrokenPool):
    """A task could not be unpickled in its worker, or its result in the parent.

    Only that task fails. It is a ``BrokenProcessPool`` because that is what
    ``concurrent.futures`` reports there (where its whole pool breaks).
    """


def unpicklable_task(label: str, original: BaseException) -> BaseException:
    """The worker could not unpickle ``label``'s function or arguments: an
    :class:`UnpicklingFailed` that is also an instance of what unpickling raised."""
    error = UnpicklingFailed(f"{label}: the worker could not unpickle the task: {original!r}")
    error.__cause__ = original
    return also_instance_of_type_of(error, original)


def also_instance_of_type_of(error: BaseException, original: BaseException) -> BaseException:
    """``error``, also an instance of ``original``'s type (:func:`also_instance_of`), keeping
    a ``SystemExit``'s exit code."""
    combined = also_instance_of(error, type(original))
    if isinstance(combined, SystemExit) and isinstance(original, SystemExit):
        combined.code = original.code  # else an uncaught one would exit with status 0
    return combined


class PoolClosed(ManybrainsError, RuntimeError, ValueError):
    """The pool was used after ``shutdown()``.

    A ``RuntimeError`` as ``concurrent.futures`` raises, and a ``ValueError`` as
    ``multiprocessing.Pool`` raises.
    """


def also_instance_of(error: BaseException, kind: type[BaseException]) -> BaseException:
    """``error``, as an instance of both its own type and ``kind``, with the same message.

    Code written for the stdlib catches the type the stdlib raises there (the exception a
    ``__reduce__`` raised, ``multiprocessing``'s ``MaybeEncodingError``); manybrains' own
    type still says which argument or result failed. Where the two types cannot be combined
    (conflicting layouts), ``error`` is returned unchanged.
    """
    if isinstance(error, kind):
        return error
    try:
        combined = _combined(type(error), kind)
        copy = combined.__new__(combined, *error.args)
        BaseException.__init__(copy, *error.args)  # not kind's __init__: its arguments differ
        copy.__dict__.update(vars(error))
    except Exception:  # noqa: BLE001 - no common subclass: the error as it is still explains
        return error
    copy.__cause__, copy.__context__ = error.__cause__, error.__context__
    copy.__traceback__ = error.__traceback__
    return copy


_COMBINED: dict[tuple[type[BaseException], type[BaseException]], type[BaseException]] = {}


def _combined(own: type[BaseException], kind: type[BaseException]) -> type[BaseException]:
    combined = _COMBINED.get((own, kind))
    if combined is None:
        # The message is ours: kind's __str__ may read attributes its __init__ would set.
        # Pickled, it travels as its own type alone (the combination exists only here).
        namespace = {"__str__": BaseException.__str__, "__module__": own.__module__,
                     "__qualname__": own.__qualname__,
                     "__reduce__": lambda self: (own, self.args, self.__dict__ or None)}
        combined = _COMBINED[own, kind] = type(own.__name__, (own, kind), namespace)
    return combined



def describe_exit(exitcode: int | None) -> str:
    """Say how a process ended, naming the signal when one killed it ("SIGKILL")."""
    if exitcode is None:
        return "an unknown exit status"
    if exitcode < 0:
        try:
            return f"signal {signal.Signals(-exitcode).name}"
        except ValueError:
            return f"signal {-exitcode}"
    return f"exit code {exitcode}"


def rebuild_error(error: BaseException) -> BaseException:
    """A fresh copy of ``error`` for each raise, so tracebacks do not pile up on one object."""
    copy = type(error)(*error.args)
    copy.__cause__ = error.__cause__
    return copy


def check_open(closed: bool, broken: BaseException | None = None) -> None:
    """Raise what submitting to a pool that is broken (a copy of why) or closed raises."""
    if broken is not None:
        raise rebuild_error(broken)
    if closed:
        raise PoolClosed("cannot submit: the pool has been shut down; create a new one")


def as_encoding_error(error: BaseException) -> BaseException:
    """A result that could not be pickled, as ``multiprocessing``'s ``MaybeEncodingError``
    too (with its ``exc`` and ``value`` strings), for code written for its ``Pool``."""
    if not isinstance(error, SerializationError):
        return error
    from multiprocessing.pool import MaybeEncodingError  # type: ignore[attr-defined]

    combined = also_instance_of(error, MaybeEncodingError)
    if combined is not error:
        combined.exc = repr(error.__cause__ or error)  # type: ignore[attr-defined]
        combined.value = str(error)  # type: ignore[attr-defined]
    return combined


# Tracebacks show these as users import them (manybrains.WorkerCrashed, not
# manybrains._errors.WorkerCrashed), and pickle finds them by that name, through the package's
# lazy __getattr__. The package renames each public class on first use; exceptions are shown
# before the user ever names them, so they are renamed here.
for _public in (ManybrainsError, BackendNotFound, BrokenPool, WorkerCrashed, InitializerFailed,
                SerializationError, UnpicklingFailed, PoolClosed):
    _public.__module__ = "manybrains"
del _public
