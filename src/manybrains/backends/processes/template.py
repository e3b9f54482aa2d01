"""The ``"template"`` start method: workers forked from a copy of the parent.

``fork`` is fast (a worker starts with every module and the ``__main__`` of the parent
already loaded) but copies a parent whose other threads may hold locks: the copy inherits
them locked and can hang. ``forkserver`` is safe but each worker is a fresh interpreter that
imports its modules again. A template is both::

    parent (one thread)          template (a fork of the parent)        workers
    -------------------          -------------------------------        -------
    Pool() -> os.fork() ───────► serve(): loop on one socket
    supervisor thread starts
    start a worker: send
      (target, args) + fds  ───► os.fork() ──────────────────────────► _bootstrap(): run target
    read its pid            ◄─── pid
    sentinel readable       ◄─── SIGCHLD: waitpid, write exit code ◄── exits

The template is forked while the parent runs a single thread, so no lock can be held by
another thread at that instant; it then runs one thread for life, so forking it is always
safe. It holds what the parent had imported and its ``__main__`` (see
:mod:`manybrains._mainspace` for how ``__main__`` functions travel), and workers never import
or re-run the user's script. A parent that already runs other threads (a Jupyter kernel, a
web server) cannot be forked safely: a later pool reuses the newest template if there is
one, else it falls back to ``forkserver`` and says why in ``statistics()``.

A template exits when the last pool using it is done with it (and its workers are gone), or
when the parent dies: it dies with the parent (``PR_SET_PDEATHSIG``), and so do its workers.
"""

from __future__ import annotations

import collections
import contextlib
import logging
import os
import pickle
import select
import signal
import socket
import struct
import sys
import threading
import weakref
from collections.abc import Callable
from multiprocessing import process as mp_process
from multiprocessing.connection import Pipe, wait
from multiprocessing.context import set_spawning_popen
from multiprocessing.reduction import ForkingPickler
from typing import Any

from ... import _mainspace, _mp_primitives

_PID = struct.Struct("q")
_STATUS = struct.Struct("i")
_LENGTH = struct.Struct("Q")

# Guards the choice and creation of templates in this process.
_lock = threading.Lock()
_newest: Template | None = None


def acquire(*, fresh: bool = True, keep: object = None) -> tuple[Template | None, str]:
    """A template for a new pool (held until :meth:`Template.release`), or None and why not.

    With ``fresh``, a new one is forked when this process runs a single thread, so that it
    holds everything imported and defined so far, and ``keep`` (the pool's initializer and
    initargs): its workers then inherit that object instead of unpickling a copy (see
    :attr:`Template.kept`). Otherwise the newest live one is reused.
    """
    global _newest
    with _lock:
        alone = threading.active_count() == 1 and not _in_template
        if alone and (fresh or _newest is None or _newest.closed):
            _newest = Template(keep)
        elif _newest is None or _newest.closed:
            return None, (f"{threading.active_count()} threads run in this process and no "
                          "template was made before they started, so workers come from "
                          "a forkserver")
        _newest.users += 1
        return _newest, "a template forked from this process"


def hold() -> Template | None:
    """Keep a template for pools started later, made now if this process runs one thread.

    A backend that is about to start threads of its own calls this first (``auto`` does),
    so that a process pool started after them still gets a template. Release it with
    :meth:`Template.release`.
    """
    found, _ = acquire(fresh=False)
    return found


_in_template = False  # true in a template process: it never forks templates itself


class Template:
    """One template process and the socket that asks it for workers."""

    def __init__(self, keep: object = None) -> None:
        self.users = 0
        self.closed = False
        self.kept = keep  # in the template's memory too: its workers inherit it as it is
        self.snapshot = _mainspace.snapshot()
        self.semaphores = _mp_primitives.semaphore_memory()  # locks its workers can inherit
        self._lock = threading.Lock()  # one request or answer at a time on the socket
        # Workers asked for whose pid has not been read yet, in the order they were asked:
        # the template answers in that order (see request and wait_for_pid).
        self._unanswered: collections.deque[TemplateProcess] = collections.deque()
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        parent_pid = os.getpid()
        for stream in (sys.stdout, sys.stderr):  # or the copy would write it out again
            with contextlib.suppress(Exception):
                stream.flush()
        pid = os.fork()
        if pid == 0:  # pragma: no cover - runs in the template, measured by its workers
            ours.close()
            _run_template(theirs, parent_pid, self.snapshot, keep)
        theirs.close()
        self.pid = pid
        self._socket = ours
        _live.add(self)

    def request(self, process: TemplateProcess, payload: bytes, fds: list[int]) -> None:
        """Ask for a worker that runs ``payload`` with ``fds``, for ``process``; the template
        forks it at once, and :meth:`wait_for_pid` reads its pid."""
        with self._lock:
            if self.closed:
                raise RuntimeError("this pool's template process has exited")
            try:
                socket.send_fds(self._socket, [_LENGTH.pack(len(payload)), payload], fds)
            except OSError as exc:
                raise self._gone(exc) from exc
            self._unanswered.append(process)

    def wait_for_pid(self, process: TemplateProcess) -> int:
        """The pid of the worker requested for ``process``; raises if it could not fork."""
        with self._lock:
            while process in self._unanswered:  # answers come in the order asked
                try:
                    answer = _read_exactly(self._socket, _PID.size)
                except OSError as exc:  # EOFError too
                    raise self._gone(exc) from exc
                (self._unanswered.popleft().answer,) = _PID.unpack(answer)
        pid = process.answer
        if pid is None or pid < 0:
            error = -pid if pid else 0
            raise OSError(error, "the template could not fork a worker: "
                                 f"{os.strerror(error) if error else 'unknown error'}")
        return pid

    def _gone(self, exc: BaseException) -> RuntimeError:
        return RuntimeError(f"the template process (pid {self.pid}) is gone: {exc}")

    def release(self) -> None:
        """One pool is done with it; the last one closes it and waits for it to exit."""
        with _lock:
            self.users -= 1
            if self.users > 0 or self.closed:
                return
            self.closed = True
        _live.discard(self)
        with self._lock:
            self._socket.close()  # the template exits once its workers are gone
            self._unanswered.clear()  # asked for by a pool that never started them
        _reap_template(self.pid)


_live: weakref.WeakSet[Template] = weakref.WeakSet()
_EXIT_GRACE = 5.0  # seconds a closed template gets to exit before it is killed


def _forget_templates_in_child() -> None:
    # A forked child (a new template, a `fork` worker) must not keep the sockets of this
    # process's templates open, or a closed template would never see the end of its socket.
    for template in list(_live):
        with contextlib.suppress(OSError):
            template._socket.close()
        template.closed = True
    _live.clear()


os.register_at_fork(after_in_child=_forget_templates_in_child)


def _reap_template(pid: int) -> None:
    """Wait for a closed template to exit; kill it if it has not after a grace period."""
    try:
        pidfd = os.pidfd_open(pid)
    except (AttributeError, OSError):
        pidfd = -1
    if pidfd >= 0:
        try:
            if not select.select([pidfd], [], [], _EXIT_GRACE)[0]:
                # A copy of its socket is open somewhere, or a worker of it still runs.
                logging.getLogger("manybrains").warning(
                    "the template process %d did not exit %g s after its last pool; killed",
                    pid, _EXIT_GRACE)
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)  # its workers die with it (PDEATHSIG)
        finally:
            os.close(pidfd)
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, 0)


def _read_exactly(sock: socket.socket, size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = sock.recv(size - len(data))
        if not chunk:
            raise EOFError("the template closed its socket")
        data += chunk
    return data


# ---- the worker process, as the supervisor sees it -------------------------------------------


class TemplateProcess:
    """A worker forked by a template: what the supervisor needs of ``multiprocessing.Process``.

    It is numbered as ``fork`` numbers a ``multiprocessing.Process``: the next number of this
    process's counter, shared with every process the program starts, taken when the object
    is made; the worker's ``current_process()`` then has the name (``ForkProcess-N``, unless
    one is given), ``_identity``, parent and authkey a ``fork`` child of this process has.
    """

    _start_method = "template"

    def __init__(self, template: Template, target: Callable[..., Any],
                 args: tuple[Any, ...], name: str | None = None) -> None:
        self._template = template
        self._target = target
        self._args = args
        parent = mp_process.current_process()
        number = next(mp_process._process_counter)  # type: ignore[attr-defined]
        self._identity: tuple[int, ...] = (*parent._identity, number)
        self.name = name or "ForkProcess-" + ":".join(map(str, self._identity))
        self.pid: int | None = None
        self.answer: int | None = None  # the template's answer: the pid, or -errno
        self.sentinel = -1
        self._exitcode: int | None = None
        self._parent_alive = -1  # the write end of the worker's parent_process() sentinel
        self._requested = False

    def start(self) -> None:
        """Start the worker (asking for it first, unless :meth:`request` did); its pid known."""
        if not self._requested:
            self.request()
        self.pid = self._template.wait_for_pid(self)

    def request(self) -> None:
        """Ask the template for this worker, without waiting for its pid.

        A pool asks for its first workers as it is made, in the caller, so that the template
        forks them while the pool's supervisor thread starts; :meth:`start` then only reads
        the pid. Ask once: a failed request leaves it unasked, and ``start`` asks again.
        """
        read_end, write_end = os.pipe()  # the worker's exit status, written by the template
        alive_r, alive_w = os.pipe()  # parent_process().sentinel: EOF once this end closes
        passing = _FdPassing([write_end, alive_r])
        set_spawning_popen(passing)  # type: ignore[arg-type]  # multiprocessing objects may travel (see _FdPassing)
        try:
            with _mainspace.sending_to(self._template.snapshot), \
                    _mp_primitives.starting(self._template.semaphores, self._template.kept):
                payload = ForkingPickler.dumps((self._target, self._args, self._who()))
            self._template.request(self, bytes(payload), passing.fds)
        except BaseException:
            os.close(read_end)
            os.close(alive_w)
            raise
        finally:
            set_spawning_popen(None)
            os.close(write_end)
            os.close(alive_r)
        self._requested = True
        self.sentinel = read_end
        self._parent_alive = alive_w

    def _who(self) -> tuple[Any, ...]:
        """What the worker's ``current_process()`` says of it and of its parent (this one)."""
        parent = mp_process.current_process()
        return (self.name, self._identity, os.getpid(), parent.name, bytes(parent.authkey))

    @property
    def exitcode(self) -> int | None:
        if self._exitcode is None and self.sentinel >= 0 and wait([self.sentinel], 0):
            self._collect()
        return self._exitcode

    def join(self, timeout: float | None = None) -> None:
        if self._exitcode is None and self.sentinel >= 0 and wait([self.sentinel], timeout):
            self._collect()

    def is_alive(self) -> bool:
        return self.pid is not None and self.exitcode is None

    def kill(self) -> None:
        if self.pid is not None and self._exitcode is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, signal.SIGKILL)

    def _collect(self) -> None:
        data = b""
        with contextlib.suppress(OSError):
            data = os.read(self.sentinel, _STATUS.size)
        # No status: the template itself was killed, and with it this worker.
        self._exitcode = _STATUS.unpack(data)[0] if len(data) == _STATUS.size else -9
        os.close(self.sentinel)
        self.sentinel = -1
        self._close_parent_alive()

    def _close_parent_alive(self) -> None:
        if self._parent_alive >= 0:
            with contextlib.suppress(OSError):
                os.close(self._parent_alive)
            self._parent_alive = -1

    def __del__(self) -> None:
        if self.sentinel >= 0:
            with contextlib.suppress(OSError):
                os.close(self.sentinel)
        self._close_parent_alive()


class _FdPassing:
    """Stands in for multiprocessing's "spawning popen" while a worker's start is pickled.

    Pickling a ``multiprocessing`` Queue, Value or Connection asks the process being started
    to duplicate a file descriptor for the child; these descriptors travel to the template
    with the request (SCM_RIGHTS) and the child finds them by index.
    """

    def __init__(self, fds: list[int]) -> None:
        self.fds = fds  # the status pipe and the parent sentinel first (see _become_worker)

    def duplicate_for_child(self, fd: int) -> int:
        self.fds.append(fd)
        return len(self.fds) - 1

    class DupFd:
        def __init__(self, index: int) -> None:
            self.index = index

        def detach(self) -> int:
            return _inherited_fds[self.index]


_inherited_fds: list[int] = []


class TemplateContext:
    """The piece of a multiprocessing context the engine uses, backed by one template."""

    def __init__(self, template: Template) -> None:
        self.template = template

    def get_start_method(self) -> str:
        return "template"

    def Pipe(self, duplex: bool = True) -> Any:
        return Pipe(duplex)

    def Process(self, target: Callable[..., Any], args: tuple[Any, ...] = (),
                name: str | None = None) -> TemplateProcess:
        return TemplateProcess(self.template, target, args, name)

    def release(self) -> None:
        self.template.release()


# ---- the template process --------------------------------------------------------------------


def _run_template(sock: socket.socket, parent_pid: int, snapshot: dict[str, str],
                  kept: object) -> None:  # pragma: no cover - runs in the template
    global _in_template, _lock
    _in_template = True
    _lock = threading.Lock()  # forked while acquire() held it
    code = 0
    try:
        _detach(parent_pid)
        _mainspace.inherit(snapshot)
        _mp_primitives.inherit(kept)
        _Server(sock).serve()
    except BaseException:  # noqa: BLE001 - the template has nobody to raise to
        code = 1
        with contextlib.suppress(BaseException):
            import traceback

            traceback.print_exc()
    finally:
        os._exit(code)


def _detach(parent_pid: int) -> None:  # pragma: no cover - runs in the template
    # Both imported before this process was forked (see context._template_launch).
    from . import inner_threads
    from .worker import detach_from_parent

    detach_from_parent()  # Ctrl-C is for the pool to handle; the parent's death ends it
    if os.getppid() != parent_pid:  # the parent died before prctl took effect
        os._exit(1)
    inner_threads.measure_for_workers()  # once here, not in each worker


class _Server:  # pragma: no cover - runs in the template
    """Fork a worker per request; report each worker's exit code on its status pipe."""

    def __init__(self, sock: socket.socket) -> None:
        self._socket = sock
        self._status: dict[int, int] = {}  # worker pid -> write end of its status pipe
        self._wake_r, wake_w = os.pipe()
        os.set_blocking(wake_w, False)
        signal.set_wakeup_fd(wake_w)
        signal.signal(signal.SIGCHLD, lambda *_: None)  # wakes select through the fd

    def serve(self) -> None:
        listening = True
        while listening or self._status:
            sources: list[Any] = [self._wake_r, self._socket] if listening else [self._wake_r]
            with contextlib.suppress(InterruptedError):
                ready, _, _ = select.select(sources, [], [])
                if self._socket in ready:
                    listening = self._on_request()
                if self._wake_r in ready:
                    os.read(self._wake_r, 4096)
            self._reap()

    def _on_request(self) -> bool:
        header, fds, _, _ = socket.recv_fds(self._socket, _LENGTH.size, 256)
        if not header:  # the parent closed the template (or died)
            return False
        header += _read_exactly(self._socket, _LENGTH.size - len(header))
        (length,) = _LENGTH.unpack(header)
        payload = _read_exactly(self._socket, length)
        try:
            pid = os.fork()
        except OSError as exc:
            for fd in fds:
                os.close(fd)
            self._socket.sendall(_PID.pack(-exc.errno if exc.errno else -1))
            return True
        if pid == 0:
            self._become_worker(payload, fds)
        self._status[pid] = fds[0]
        for fd in fds[1:]:
            os.close(fd)
        self._socket.sendall(_PID.pack(pid))
        return True

    def _become_worker(self, payload: bytes, fds: list[int]) -> None:
        global _inherited_fds, _in_template, _newest
        code = 1
        _in_template, _newest = False, None  # a pool in a task may fork templates of its own
        try:
            signal.set_wakeup_fd(-1)
            signal.signal(signal.SIGCHLD, signal.SIG_DFL)
            self._socket.close()
            os.close(self._wake_r)
            for fd in self._status.values():
                os.close(fd)
            os.close(fds[0])  # the status pipe: only the template writes it
            _inherited_fds = fds
            code = _bootstrap(payload, parent_sentinel=fds[1])
        except BaseException:  # noqa: BLE001 - the worker's own start failed: say why
            with contextlib.suppress(BaseException):
                import traceback

                traceback.print_exc()
        finally:
            os._exit(code)

    def _reap(self) -> None:
        while self._status:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            fd = self._status.pop(pid, None)
            if fd is not None:
                with contextlib.suppress(OSError):
                    os.write(fd, _STATUS.pack(os.waitstatus_to_exitcode(status)))
                os.close(fd)


def _bootstrap(payload: bytes, parent_sentinel: int) -> int:  # pragma: no cover - a worker
    """Run the worker as multiprocessing runs a forked child, exit handlers included."""
    import atexit
    import multiprocessing
    from multiprocessing import util

    # The parent's exit handlers are not this process's; multiprocessing's own (which flushes
    # queues this process put to) must run, and from 3.12 on _bootstrap leaves that to atexit.
    atexit._clear()
    atexit.register(util._exit_function)  # type: ignore[attr-defined]
    target, args, (name, identity, parent_pid, parent_name, authkey) = pickle.loads(payload)
    process = multiprocessing.Process(target=target, args=args, name=name)
    # As a fork child of the pool's process is: its number, its parent (not the template).
    process._identity = identity
    process._parent_pid = parent_pid  # type: ignore[attr-defined]
    process._parent_name = parent_name  # type: ignore[attr-defined]
    process.authkey = authkey
    try:
        code: int = process._bootstrap(parent_sentinel=parent_sentinel)  # type: ignore[attr-defined]
    finally:
        atexit._run_exitfuncs()
    return code
