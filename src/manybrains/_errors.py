"""The exceptions manybrains raises.

::

    ManybrainsError
    ├── BackendNotFound (LookupError)   unknown backend, or its extra is not installed
    ├── BrokenPool (BrokenProcessPool)  the pool cannot run the task
    │   ├── WorkerCrashed               the worker died while holding the task
    │   └── InitializerFailed           the initializer raised or crashed
    ├── SerializationError              a task, argument or result could not be (un)pickled
    └── PoolClosed (RuntimeError)       the pool was used after shutdown

A task's own exception is never wrapped: it is re-raised with its own type and the worker's
traceback as its ``__cause__``. Timeouts raise the builtin ``TimeoutError`` and cancellations
``concurrent.futures.CancelledError``.
"""

from __future__ import annotations

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


class SerializationError(ManybrainsError):
    """A task, one of its arguments or its result could not be pickled or unpickled."""


class PoolClosed(ManybrainsError, RuntimeError):
    """The pool was used after ``shutdown()``."""


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
