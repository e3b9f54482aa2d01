"""The worker process: receive a task, run it, send the outcome back; repeat.

Everything that can go wrong with one task (its unpickling, the call, pickling its result)
is caught by the wire (:mod:`manybrains.backends._wire`) and reported for that task alone.
Only a crash of the process itself escapes, and the supervisor sees that through the process
sentinel.
"""

from __future__ import annotations

import contextlib
import mmap
import os
import signal
import sys
import time
from multiprocessing.reduction import DupFd
from typing import TYPE_CHECKING, Any

import cloudpickle  # noqa: F401 - imported here so a forkserver preloads it for every worker

from ... import _mainspace
from ..._serialize import Frame, dumps, loads, loads_call
from ...ipc.autoshare import hand_off_results
from ...ipc.segment import process_alive
from .. import _wire
from . import output, protocol
from .channel import Channel

if TYPE_CHECKING:
    from multiprocessing.connection import Connection

if not hasattr(os, "memfd_create"):  # pragma: no cover - for TaskMark off Linux; imported
    import tempfile  # here so that the supervisor thread never imports it

_PR_SET_PDEATHSIG = 1


class Setup:
    """What every worker of a pool needs before its first task.

    Pickled each time a worker starts, while multiprocessing knows a process is being started
    (so ``multiprocessing`` locks and queues in ``initargs`` may travel), and unpickled only
    inside :func:`main`, after the native thread caps are set and where a failure can be
    reported to the pool instead of killing the worker silently.
    """

    def __init__(self, payload: tuple[Any, ...] | None = None, blob: bytes | None = None
                 ) -> None:
        self._payload = payload
        self._blob = blob

    def __reduce__(self) -> tuple[Any, ...]:
        blob = self._blob if self._payload is None else bytes(dumps(self._payload))
        return (Setup, (None, blob))

    def load(self) -> tuple[Any, ...]:
        if self._payload is None:
            assert self._blob is not None
            self._payload = loads(self._blob)
        return self._payload


class TaskMark:
    """Eight bytes of memory shared by one worker and its supervisor: the id of the last
    task the worker started.

    The worker writes it as it takes a task: a store to memory, no system call and no
    message, so the hot path costs what it did. When the worker dies, the supervisor reads
    it to tell the task that was running from those still on their way to the worker, which
    never started and run on another one. Task ids start at 1, so 0 means "none yet".
    """

    SIZE = 8

    def __init__(self, fd: int | None = None) -> None:
        self._fd = _shared_file(self.SIZE) if fd is None else fd
        self._map = mmap.mmap(self._fd, self.SIZE)
        if fd is not None:  # a worker's copy: the mapping is all it needs
            self.handed_over()
        self._slot: memoryview | None = None

    def __reduce__(self) -> tuple[Any, ...]:
        # Pickled only while multiprocessing starts a process, which hands the descriptor
        # over with the start request; a fork child inherits the mapping itself.
        return (_attach_mark, (DupFd(self._fd),))

    def handed_over(self) -> None:
        """Its worker has started (and holds the memory): the descriptor is not needed."""
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def started(self, task_id: int) -> None:
        """In the worker: it takes the task ``task_id`` now."""
        if self._slot is None:
            self._slot = memoryview(self._map).cast("Q")
        self._slot[0] = task_id

    def last_started(self) -> int:
        """In the supervisor, once the worker is gone: the id of the last task it took."""
        return int.from_bytes(self._map[:self.SIZE], sys.byteorder)

    def close(self) -> None:
        """In the supervisor: the worker is gone (or never started) and its mark was read."""
        self.handed_over()
        if self._slot is None:  # a worker's own view (a fork child's) keeps the map open
            self._map.close()


def _attach_mark(descriptor: Any) -> TaskMark:
    return TaskMark(descriptor.detach())


def _shared_file(size: int) -> int:
    """A descriptor of ``size`` bytes of memory that a child process can map too."""
    if hasattr(os, "memfd_create"):  # Linux
        fd = os.memfd_create("manybrains-task-mark", os.MFD_CLOEXEC)
    else:  # pragma: no cover - an unlinked file elsewhere
        fd, path = tempfile.mkstemp(prefix="manybrains-task-mark-")
        os.unlink(path)
    os.ftruncate(fd, size)
    return fd


def main(conn: Connection, threads: tuple[int | None, int], setup: Setup, mark: TaskMark
         ) -> None:
    """Entry point of a worker process (the ``target`` of its ``Process``).

    ``threads``: ``(inner_threads, workers)`` of the pool, for the native thread cap.
    ``mark``: where this worker notes each task it takes (see :class:`TaskMark`).
    """
    # Before anything is unpickled: a library that loads later reads the environment.
    from . import inner_threads

    inner_threads.cap(*threads)
    hand_off_results()  # big result arrays go back through shared memory, not the pipe
    try:
        kept, parent_pid, measure_memory, log_levels, inherited = setup.load()
        initializer, initargs = kept.value
    except BaseException as exc:  # noqa: BLE001 - reported to the parent, which decides
        _send(conn, _error_frame(protocol.START_FAILED, exc))
        return
    _detach_from_parent_signals(parent_pid)
    if inherited is not None:  # forked straight from the parent: its __main__ is here
        _mainspace.inherit(inherited)
    output.install(*_shippers(conn), log_levels)  # logs and prints go to the parent
    os.register_at_fork(after_in_child=lambda: _forget_pool(conn))
    if initializer is not None:
        try:
            initializer(*initargs)
        except BaseException as exc:  # noqa: BLE001 - reported to the parent, which decides
            _send(conn, _error_frame(protocol.INIT_FAILED, exc))
            return
    if _send(conn, protocol.reply(protocol.READY)):
        _serve(conn, _memory_probe(measure_memory), mark)
    output.flush()


def _forget_pool(conn: Connection) -> None:
    # In a process a task forked (a nested pool's template, a multiprocessing child): this
    # worker's pipe and output shipping are not its own; writing there would interleave
    # its bytes with this worker's messages.
    output.uninstall()
    with contextlib.suppress(OSError):
        conn.close()


def _serve(conn: Connection, rss: Any, mark: TaskMark) -> None:
    channel = Channel(conn)  # many tasks per read when they come in a burst
    while True:
        try:
            frames = channel.read_some()
        except (EOFError, OSError):  # the parent is gone
            return
        frames.reverse()
        while frames:
            if not _run_next(conn, frames, rss, mark):
                return


def _run_next(conn: Connection, frames: list[bytes | bytearray], rss: Any, mark: TaskMark
              ) -> bool:
    """Run the task message at the end of ``frames`` (taking it off) and send its reply;
    False to stop serving."""
    frame = frames.pop()
    kind, task_id = protocol.read_request(frame)
    if kind == protocol.STOP:
        return False
    mark.started(task_id)  # from here on, a death of this worker is this task's
    received = time.perf_counter()
    unpickle = _load_call if kind == protocol.CALL else loads
    outcome, elapsed, body = _wire.execute(unpickle, memoryview(frame)[protocol.REQUEST_SIZE:])
    del frame  # a big task's bytes can go before its result is pickled
    reply = _reply(outcome, task_id, elapsed, rss() if rss else 0, body)
    protocol.stamp_pickling(reply, time.perf_counter() - received - elapsed)
    return _send(conn, reply)


def _load_call(payload: memoryview) -> _wire.TaskParts:
    fn, args, kwargs = loads_call(payload)
    return fn, args, kwargs, None, False


def _reply(outcome: int, task_id: int, elapsed: float, rss: int, body: Any) -> Frame:
    return _wire.encode(outcome, body,
                        lambda o: protocol.reply(protocol.DONE, task_id, elapsed, rss, o))


def _error_frame(kind: int, exc: BaseException) -> Frame:
    return dumps(_wire.error_body(exc), header=protocol.reply(kind))


def _send(conn: Connection, frame: bytes | memoryview | bytearray) -> bool:
    try:
        with output.SEND_LOCK:  # other threads of the task may be logging
            conn.send_bytes(frame)
    except OSError:  # the parent is gone; nothing is waiting for this result
        return False
    return True


def _shippers(conn: Connection) -> tuple[output.ShipLog, output.ShipOutput]:
    def ship_log(payload: bytes) -> None:
        _send(conn, protocol.reply(protocol.LOG) + payload)

    def ship_output(channel: int, payload: bytes) -> None:
        _send(conn, protocol.reply(protocol.OUTPUT, channel) + payload)

    return ship_log, ship_output


def _memory_probe(enabled: bool) -> Any:
    if not enabled:
        return None
    import psutil

    info = psutil.Process().memory_info
    return lambda: info().rss


def detach_from_parent() -> None:
    """Ignore Ctrl-C and die with the process that started this one (Linux)."""
    # Ctrl-C reaches the whole process group; the parent decides what stops, so workers
    # ignore SIGINT and print no traceback of their own.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})  # blocked by the supervisor
    if sys.platform.startswith("linux"):
        import ctypes  # here: a template imports it once for all the workers it forks

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)


def _detach_from_parent_signals(parent_pid: int) -> None:
    # The process that started this one is the pool's, its forkserver or its template, each
    # of which exits with the pool's process. Then close the race where it died before prctl.
    detach_from_parent()
    _release_forkserver()
    if not process_alive(parent_pid):
        os._exit(1)


def _release_forkserver() -> None:
    # A forkserver runs until every holder of its "alive" pipe has exited, and it hands that
    # pipe to each process it forks (a fork child inherits it too). A worker keeping it would
    # keep the forkserver alive, while the forkserver's death is what kills the worker
    # (PDEATHSIG): after a SIGKILL of the pool's process neither would ever exit. Nested
    # pools in a task start a forkserver of their own instead.
    forkserver = sys.modules.get("multiprocessing.forkserver")
    server = getattr(forkserver, "_forkserver", None)
    fd = getattr(server, "_forkserver_alive_fd", None)
    if server is None or fd is None:
        return
    with contextlib.suppress(OSError):
        os.close(fd)
    server._forkserver_alive_fd = None
    server._forkserver_address = None
    server._forkserver_pid = None
