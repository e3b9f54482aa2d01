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

import os

from ..._errors import BrokenPool, InitializerFailed, UnpicklingFailed, describe_exit
from ..._inheritance import Kept
from ..._serialize import dumps_checked
from .. import _wire
from . import output, protocol, worker
from .context import starting
from .state import EngineOptions, WorkerSlot

# Workers dying before they are ready, in a row, before the pool gives up (a raising
# initializer breaks it at once: that failure is certain, a death may be an outside kill).
STARTUP_ATTEMPTS = 3


class Startup:
    """Starts the workers of one pool and judges the ones that fail to start."""

    def __init__(self, options: EngineOptions) -> None:
        self._options = options
        launch = options.launch
        inherited = launch.inherited_globals if launch.method == "fork" else None
        # The very object a template kept, so that it travels as a reference to its copy.
        initialization = (launch.kept if launch.kept is not None
                          else Kept((options.initializer, options.initargs)))
        self._setup = worker.Setup((initialization, os.getpid(),
                                    options.max_memory_per_worker is not None,
                                    output.parent_levels(), inherited))
        self._check_setup()
        self._deaths = 0  # in a row, without a worker becoming ready in between

    def _check_setup(self) -> None:
        """Raise here, in the caller, if the initializer or initargs cannot reach a worker."""
        launch = self._options.launch
        if launch.method == "fork":  # inherited as they are: nothing is pickled
            return
        with starting(launch):
            dumps_checked(self._setup, header=b"", parts=lambda: [
                ("the initializer", self._options.initializer),
                *((f"initargs[{i}]", a) for i, a in enumerate(self._options.initargs))])

    def start_worker(self) -> WorkerSlot:
        """A new worker process, starting; raises BrokenPool if none can be started."""
        launch = self._options.launch
        parent_end, child_end = launch.context.Pipe(duplex=True)
        mark = worker.TaskMark()
        threads = (self._options.inner_threads, self._options.workers)
        process = launch.context.Process(
            target=worker.main, args=(child_end, threads, self._setup, mark),
            name="manybrains-worker")
        try:
            with starting(launch):
                process.start()
        except BaseException as exc:  # e.g. out of processes or memory
            parent_end.close()
            mark.close()
            raise BrokenPool(f"cannot start a worker process: {exc!r}") from exc
        finally:
            child_end.close()
        mark.handed_over()
        return WorkerSlot(process, parent_end, mark)

    def ready(self) -> None:
        """A worker answered READY: the deaths before it were not the initializer's."""
        self._deaths = 0

    def died(self, w: WorkerSlot) -> BaseException | None:
        """``w`` died before READY: the error to break the pool with, or None to go on."""
        self._deaths += 1
        if self._deaths < STARTUP_ATTEMPTS:
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
