"""Starting a worker process, and telling a worker that cannot start from one that was killed.

A worker starts from the pool's :class:`~.context.Launch` (forked from a template, or a
fresh interpreter), loads the pool's :class:`~.worker.Setup` (initializer and initargs), runs
the initializer and answers ``READY``. Two ways that fails for good, and the pool breaks
once instead of respawning forever:

- the initializer raised, or the setup did not load: the worker says so (``INIT_FAILED``,
  ``START_FAILED``), and that failure is certain;
- workers die before ``READY``, :data:`STARTUP_ATTEMPTS` in a row: one death may be an
  outside kill, and its replacement starts; several in a row are the initializer's doing.
"""

from __future__ import annotations

import contextlib
import importlib
import os
import signal
import sys
import threading
import weakref
from dataclasses import dataclass
from multiprocessing.connection import Connection
from multiprocessing.context import set_spawning_popen
from multiprocessing.process import BaseProcess
from typing import Any

from ..._errors import BrokenPool, InitializerFailed, UnpicklingFailed, describe_exit
from ..._mp_primitives import Kept
from ..._serialize import dumps_checked
from .. import _wire
from . import output, protocol, worker
from .context import starting
from .state import EngineOptions, WorkerSlot

# Workers dying before they are ready, in a row, before the pool gives up (a raising
# initializer breaks it at once: that failure is certain, a death may be an outside kill).
STARTUP_ATTEMPTS = 3
# The same, for deaths by SIGKILL once a worker of this pool has been ready: its start-up
# works, so these are most likely kills from outside (a supervisor, a test, a user), which
# must not break a pool; a bound still stops a start-up that the OOM killer ends each time.
KILLED_STARTUP_ATTEMPTS = 30

# What the supervisor thread would otherwise import, or read half-imported from
# sys.modules, while it starts, replaces or kills a worker. Another thread of the program may
# be importing the same module at that moment (tqdm's first bar makes a multiprocessing lock,
# a stdlib Pool starts), and a module read while another thread runs its body lacks the names
# it has not defined yet: the pickler looks up multiprocessing.synchronize.SemLock. So the
# pool's caller imports them, before the supervisor thread exists.
ENGINE_MODULES = (
    "multiprocessing.synchronize",  # manybrains' pickler checks for its SemLock
    "multiprocessing.reduction",  # pickling a start request
    "multiprocessing.connection",
    "multiprocessing.pool",  # MaybeEncodingError, built in future callbacks (_errors)
    # kill.kill_tree (timeouts, cancelling a running task, terminate()) reads /proc on Linux
    # and asks psutil elsewhere.
    *(() if sys.platform.startswith("linux") else ("psutil",)),
)
START_MODULES = {  # what starting a process of each stdlib method imports
    "fork": ("multiprocessing.popen_fork",),
    "spawn": ("multiprocessing.popen_spawn_posix", "multiprocessing.resource_tracker"),
    "forkserver": ("multiprocessing.popen_forkserver", "multiprocessing.forkserver"),
}


def load_engine_modules(method: str) -> None:
    """Import, in the calling thread, every module the supervisor thread of a pool whose
    workers start by ``method`` could import (see :data:`ENGINE_MODULES`)."""
    for name in (*ENGINE_MODULES, *START_MODULES.get(method, ())):
        importlib.import_module(name)


# A forked child inherits every descriptor of its parent, the child ends of workers made but
# not started yet among them (Pool() makes all of its first workers before starting them). A
# worker holding another's end keeps that pipe open after the other dies, and the supervisor,
# reading the dead worker's half-sent reply, would wait forever for the rest. So every forked
# child (a fork worker, a template) closes the ends that are not its own.
_unstarted: weakref.WeakSet[Connection] = weakref.WeakSet()
_starting: Connection | None = None  # the end of the worker being started now
_start_lock = threading.Lock()


def _close_unstarted_in_child() -> None:
    for end in list(_unstarted):
        if end is not _starting:
            with contextlib.suppress(OSError):
                end.close()
    _unstarted.clear()


os.register_at_fork(after_in_child=_close_unstarted_in_child)


@dataclass(eq=False)
class Prepared:
    """A worker process made (so numbered, as the stdlib numbers its processes) but not
    started, with the pipe it will talk over and its task mark."""

    process: BaseProcess
    conn: Connection
    child_end: Connection
    mark: worker.TaskMark

    def discard(self) -> None:
        """It will never start: close what it holds."""
        self.conn.close()
        self.child_end.close()
        self.mark.close()


class Startup:
    """Starts the workers of one pool and judges the ones that fail to start."""

    def __init__(self, options: EngineOptions) -> None:
        self._options = options
        launch = options.launch
        self._modules_loaded = False
        if launch.method != "template":
            self._load_engine_modules()
        inherited = launch.inherited_globals if launch.method == "fork" else None
        # The very object a template kept, so that it travels as a reference to its copy.
        initialization = (launch.kept if launch.kept is not None
                          else Kept((options.initializer, options.initargs)))
        self._setup = self._prepare_setup((initialization, os.getpid(),
                                           options.max_memory_per_worker is not None,
                                           output.parent_levels(), inherited))
        self._deaths = 0  # in a row, without a worker becoming ready in between
        self._ever_ready = False

    def _prepare_setup(self, payload: tuple[Any, ...]) -> worker.Setup:
        """The setup every worker loads, pickled here in the caller when it can be.

        Pickled once, its bytes travel as they are with each worker's start request, so the
        supervisor thread never runs the pickler over the initializer and initargs. Raises
        here, in the caller, if they cannot reach a worker.
        """
        launch = self._options.launch
        if launch.method == "fork":  # inherited as they are: nothing is pickled
            return worker.Setup(payload)
        collector = _DescriptorCount()
        set_spawning_popen(collector)  # type: ignore[arg-type]  # a stand-in, see _DescriptorCount
        try:
            with starting(launch):
                blob = dumps_checked(payload, header=b"", parts=lambda: [
                    ("the initializer", self._options.initializer),
                    *((f"initargs[{i}]", a) for i, a in enumerate(self._options.initargs))])
        finally:
            set_spawning_popen(None)
        if collector.count:  # a multiprocessing Queue or Pipe: its descriptors are handed
            return worker.Setup(payload)  # to each worker as it starts, pickled then
        return worker.Setup(blob=bytes(blob))

    def prepare(self) -> Prepared:
        """A new worker process, made but not started; the stdlib's Pool numbers its workers
        when it makes them (at ``Pool()`` for the first ones), and so does this."""
        launch = self._options.launch
        parent_end, child_end = launch.context.Pipe(duplex=True)
        mark = worker.TaskMark()
        threads = (self._options.inner_threads, self._options.workers)
        _unstarted.add(child_end)
        process = launch.context.Process(target=worker.main,
                                         args=(child_end, threads, self._setup, mark))
        if self._options.pool_workers:  # as multiprocessing.Pool renames its workers
            process.name = process.name.replace("Process", "PoolWorker")
        if launch.method == "template":
            self._ask_early(process)
            # Imported while the template forks that worker; prepare() makes the first
            # workers in the pool's caller, before its supervisor thread starts.
            self._load_engine_modules()
        return Prepared(process, parent_end, child_end, mark)

    def _load_engine_modules(self) -> None:
        if not self._modules_loaded:  # once, in the caller (see ENGINE_MODULES)
            load_engine_modules(self._options.launch.method)
            self._modules_loaded = True

    def _ask_early(self, process: Any) -> None:
        """Ask the template for ``process`` now (a :class:`~.template.TemplateProcess`).

        The first workers are made in the pool's caller before its supervisor thread starts:
        the template forks them meanwhile, one right after the other, and
        :meth:`start_worker` only reads each pid. A request that fails here is made again
        there, which reports the failure as it always has (the pool breaks, Pool() does not
        raise).
        """
        with contextlib.suppress(Exception), starting(self._options.launch):
            process.request()

    def start_worker(self, prepared: Prepared | None = None) -> WorkerSlot:
        """Start ``prepared`` (or a new worker); raises BrokenPool if it cannot start."""
        try:
            if prepared is None:
                prepared = self.prepare()
        except OSError as exc:  # e.g. out of file descriptors
            raise BrokenPool(f"cannot start a worker process: {exc!r}") from exc
        launch = self._options.launch
        try:
            with starting(launch):
                _start(prepared)
        except BaseException as exc:  # e.g. out of processes or memory
            prepared.discard()
            raise BrokenPool(f"cannot start a worker process: {exc!r}") from exc
        prepared.child_end.close()
        prepared.mark.handed_over()
        return WorkerSlot(prepared.process, prepared.conn, prepared.mark)

    def ready(self) -> None:
        """A worker answered READY: the deaths before it were not the initializer's."""
        self._deaths = 0
        self._ever_ready = True

    def died(self, w: WorkerSlot) -> BaseException | None:
        """``w`` died before READY: the error to break the pool with, or None to go on."""
        self._deaths += 1
        killed = w.process.exitcode == -signal.SIGKILL
        limit = KILLED_STARTUP_ATTEMPTS if killed and self._ever_ready else STARTUP_ATTEMPTS
        if self._deaths < limit:
            return None  # maybe killed from outside; a replacement starts, and so it is bounded
        how = describe_exit(w.process.exitcode)
        if self._options.initializer is not None:
            return InitializerFailed.because(None, f"in every worker: they die in it ({how})")
        return BrokenPool(f"workers die while starting ({how})")

    @staticmethod
    def failed(kind: int, body: memoryview) -> InitializerFailed:
        """The error a worker's ``INIT_FAILED`` or ``START_FAILED`` message reports."""
        _, cause = _wire.decode(_wire.ERROR, body, label="the pool's initializer")
        if isinstance(cause, UnpicklingFailed):  # its error could not travel: say why
            cause = cause.__cause__
        where = ("in a worker" if kind == protocol.INIT_FAILED
                 else "in a worker, which could not load the pool's initializer and initargs")
        return InitializerFailed.because(cause, where)


def _start(prepared: Prepared) -> None:
    global _starting
    with _start_lock:  # one start at a time names its own end to the forked child
        _starting = prepared.child_end
        try:
            prepared.process.start()
        finally:
            _starting = None


class _DescriptorCount:
    """A "spawning popen" for pickling a worker's setup ahead of its start: counts the file
    descriptors it would hand over (then the setup is pickled at each start instead)."""

    def __init__(self) -> None:
        self.count = 0

    def duplicate_for_child(self, fd: int) -> int:
        self.count += 1
        return fd

    class DupFd:
        def __init__(self, fd: int) -> None:
            self.fd = fd

        def detach(self) -> int:
            raise RuntimeError("a descriptor of a setup pickled ahead was unpickled")
