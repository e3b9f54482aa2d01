"""``spawn``: one function in one new process, with a result.

``multiprocessing.Process(target=task, args=(1,)).start()`` gives no way to get the return value
back, and an exception in the child is only printed there. ``spawn`` starts the process the
way the pool starts its workers (same start method policy, cloudpickle, so lambdas and
closures work) and returns a :class:`Handle` whose ``result()`` returns the value or re-raises
the child's exception with the child's traceback as its ``__cause__``. The child sends its
outcome through a pipe that the parent drains while it waits, so a big result never blocks
``join()``.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable
from multiprocessing.connection import Connection, wait
from multiprocessing.context import BaseContext
from typing import Any, Generic, TypeVar

from ._errors import SerializationError, WorkerCrashed, describe_exit
from ._mp_primitives import Kept
from ._remote import attach, format_exception, portable
from ._serialize import dumps, dumps_checked, loads
from ._task import function_name
from .backends.processes.context import Launch, choose, starting
from .backends.processes.worker import Setup
from .ipc.autoshare import handing_off
from .ipc.segment import sweep_orphans

R = TypeVar("R")

_NOTHING: Any = object()


def spawn(fn: Any, /, *args: Any, start_method: str | BaseContext | None = None,
          **kwargs: Any) -> Handle[Any]:
    """Run ``fn(*args, **kwargs)`` in a new process now; a :class:`Handle` to it.

    ``start_method`` is an option of ``spawn`` (default: ``"template"`` on Linux, spawn
    elsewhere), not passed to ``fn``. ``multiprocessing`` locks, queues and values may be
    arguments, as with ``multiprocessing.Process``. Raises
    :class:`~manybrains.SerializationError` here if ``fn`` or an argument cannot be pickled.
    """
    if not callable(fn):
        raise TypeError(f"expected a callable, got {type(fn).__name__}: {fn!r}")
    call = Kept((fn, args, kwargs))
    # A fresh template keeps the call: inherited. What cannot reach a forkserver forks.
    launch = choose(start_method, keep=call, parts=lambda: _parts(fn, args, kwargs))
    try:
        return _start(launch, call)
    except BaseException:
        launch.release()
        raise


def _start(launch: Launch, call: Kept) -> Handle[Any]:
    fn = call.value[0]
    setup = Setup((call,))  # pickled as the process starts: mp primitives travel
    if launch.method != "fork":
        with starting(launch):  # fails here, naming the argument, rather than in the child
            dumps_checked(setup, header=b"", parts=lambda: _parts(*call.value))
    reader, writer = launch.context.Pipe(duplex=False)
    process = launch.context.Process(
        target=_child_main, args=(writer, setup), name=f"manybrains-spawn-{function_name(fn)}")
    try:
        with starting(launch):
            process.start()
    except BaseException:
        reader.close()
        raise
    finally:
        writer.close()
    return Handle(process, reader, function_name(fn), launch.release)


class Handle(Generic[R]):
    """A process started by :func:`spawn`: wait for it, get its result, or kill it."""

    def __init__(self, process: Any, conn: Connection, label: str,
                 release: Callable[[], None]) -> None:
        self._process = process
        self._release = release  # the process-starting machinery, once this one has ended
        self._conn: Connection | None = conn
        self._label = label
        self._outcome: Any = _NOTHING
        self._finished = False
        self._lock = threading.Lock()
        self.pid: int = process.pid

    @property
    def exitcode(self) -> int | None:
        """The exit code once the process ended (negative: the signal that killed it)."""
        return self._process.exitcode  # type: ignore[no-any-return]

    def is_alive(self) -> bool:
        """Whether the process is still running."""
        return not self._finished and self._process.is_alive()

    def kill(self) -> None:
        """Kill the process (SIGKILL); ``result()`` then raises ``WorkerCrashed``."""
        if not self._finished:
            self._process.kill()

    def join(self, timeout: float | None = None) -> None:
        """Wait until the process ends, at most ``timeout`` seconds."""
        self._wait(timeout)

    def result(self, timeout: float | None = None) -> R:
        """The return value of ``fn``; re-raises its exception.

        Raises ``TimeoutError`` if the process has not finished within ``timeout`` seconds
        (it keeps running) and :class:`~manybrains.WorkerCrashed` if it died without an
        outcome (killed by a signal, ``os._exit``, out of memory).
        """
        if not self._wait(timeout):
            raise TimeoutError(f"{self._label} (pid {self.pid}) is still running after "
                               f"{timeout:g} s")
        if self._outcome is _NOTHING:
            how = describe_exit(self.exitcode)
            raise WorkerCrashed(f"the process (pid {self.pid}) running {self._label} died "
                                f"with {how} before returning", pid=self.pid,
                                exitcode=self.exitcode)
        ok, value = self._outcome
        if ok:
            return value  # type: ignore[no-any-return]
        exc, tb = value
        raise attach(exc, tb)

    def _wait(self, timeout: float | None) -> bool:
        deadline = None if timeout is None else time.monotonic() + timeout
        if not self._lock.acquire(timeout=-1 if timeout is None else max(0.0, timeout)):
            return False
        try:
            while not self._finished:
                remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
                sources: list[Any] = [self._process.sentinel]
                if self._conn is not None:
                    sources.append(self._conn)
                ready = wait(sources, remaining)
                if not ready:
                    return False
                self._on_ready(ready)
            return True
        finally:
            self._lock.release()

    def _on_ready(self, ready: list[Any]) -> None:
        if self._conn is not None and (self._conn in ready or self._conn.poll()):
            self._receive()  # drained before the exit is handled: it may hold the result
            return
        self._process.join()
        self._finished = True
        self._release()
        if self._outcome is _NOTHING:  # it died: remove what it shared and could not unlink
            sweep_orphans()

    def _receive(self) -> None:
        assert self._conn is not None
        try:
            frame = self._conn.recv_bytes()
        except (EOFError, OSError):
            self._conn.close()
            self._conn = None
            return
        try:
            self._outcome = loads(frame)
        except BaseException as exc:  # noqa: BLE001 - reported by result()
            error = SerializationError(f"cannot unpickle the result of {self._label}: {exc!r}")
            error.__cause__ = exc
            self._outcome = (False, (error, ""))

    def __repr__(self) -> str:
        state = "running" if self.is_alive() else f"exited with {describe_exit(self.exitcode)}"
        return f"<manybrains.Handle {self._label} pid={self.pid} {state}>"


def _child_main(conn: Connection, call: Setup) -> None:
    """What the new process runs: the call, then one message with its outcome."""
    try:
        (kept,) = call.load()
        fn, args, kwargs = kept.value
        outcome: tuple[bool, Any] = (True, fn(*args, **kwargs))
    except BaseException as exc:  # noqa: BLE001 - SystemExit too: it is the call's outcome
        outcome = (False, portable(exc))
    try:
        with handing_off():
            frame = dumps(outcome)
    except BaseException as exc:  # noqa: BLE001 - an unpicklable result fails alone
        error = SerializationError(
            f"cannot pickle the result ({type(outcome[1]).__qualname__}): {exc!r}")
        frame = dumps((False, (error, format_exception(exc))))
    with contextlib.suppress(OSError):  # nobody is listening any more
        conn.send_bytes(frame)
    conn.close()


def _parts(fn: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> list[tuple[str, object]]:
    named: list[tuple[str, object]] = [(f"the function {function_name(fn)}", fn)]
    named += [(f"positional argument {i}", a) for i, a in enumerate(args)]
    named += [(f"keyword argument {k!r}", v) for k, v in kwargs.items()]
    return named


