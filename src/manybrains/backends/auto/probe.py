"""Reading a probe that is still running, from outside its thread.

The watcher (the caller, waiting for a decision) reads the probe thread's CPU clock
(``time.pthread_getcpuclockid``), how long it waited for a CPU and the whole process's CPU
clock, against the values when the call began, and whether the probe's thread imported a
module meanwhile (:class:`ImportWatch`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import sys
import threading
import time

from .policy import (
    NATIVE_MIN_SHARE,
    WAITING_BELOW_CPU_FRACTION,
    cpu_fraction,
    native_share,
    run_delay,
)


@dataclasses.dataclass(frozen=True)
class Reading:
    """What a probe still running did so far."""

    wall: float
    fraction: float  # of its runnable time on the CPU
    native: float  # CPU of other threads per CPU second of its own
    native_id: int
    imported: bool  # it imported modules meanwhile: its numbers are mostly the import's

    def waits(self) -> bool:
        """Mostly waiting, with no native threads computing for it."""
        return self.fraction < WAITING_BELOW_CPU_FRACTION and self.native < NATIVE_MIN_SHARE

    def clearly_waits(self) -> bool:
        """Waiting so plainly that watching longer would tell nothing new (a BLAS call that
        is still starting its threads uses some CPU on its own thread meanwhile)."""
        return (self.fraction < WAITING_BELOW_CPU_FRACTION / 2
                and self.native < NATIVE_MIN_SHARE and not self.imported)


@dataclasses.dataclass(frozen=True)
class ProbeClock:
    """The probe's thread and its clocks when the call began."""

    ident: int
    native_id: int
    cpu: float
    delay: float
    process_cpu: float
    wall: float
    imports: ImportWatch  # a first call that imports is no typical call

    @classmethod
    def now(cls) -> ProbeClock:
        """The clocks of the calling thread, now; it is watched for imports until
        :meth:`ImportWatch.stop`."""
        return cls(threading.get_ident(), threading.get_native_id(), time.thread_time(),
                   run_delay(), time.process_time(), time.perf_counter(), ImportWatch.start())

    def thread_cpu(self) -> float | None:
        """The probe thread's CPU time now (its ``thread_time``); None where there is no
        per-thread CPU clock, or the thread has ended."""
        try:
            return time.clock_gettime(time.pthread_getcpuclockid(self.ident))
        except (AttributeError, OSError):
            return None

    def read(self, caller_cpu: float) -> Reading:
        """What the call did since it began; ``caller_cpu``: the CPU time the watcher itself
        used meanwhile, which is no native helper's."""
        wall = time.perf_counter() - self.wall
        delay = run_delay(self.native_id) - self.delay
        process_cpu = time.process_time() - self.process_cpu
        now = self.thread_cpu()
        if now is None:  # no per-thread CPU clock here: assume it computes
            cpu = process_cpu = wall
        else:
            cpu = now - self.cpu
        return Reading(wall, cpu_fraction(cpu, wall, delay),
                       native_share(process_cpu - cpu - caller_cpu, cpu, wall),
                       self.native_id, self.imports.imported)


class ImportWatch:
    """Notes whether one thread imports a module: first on ``sys.meta_path``, it is asked
    about every module not imported yet, and never finds one. Other threads' imports (a
    library warming up in the background) do not count."""

    def __init__(self, ident: int) -> None:
        self.ident = ident
        self.imported = False

    @classmethod
    def start(cls) -> ImportWatch:
        watch = cls(threading.get_ident())
        sys.meta_path.insert(0, watch)
        return watch

    def stop(self) -> None:
        with contextlib.suppress(ValueError):  # someone replaced sys.meta_path meanwhile
            sys.meta_path.remove(self)

    def find_spec(self, name: str, path: object = None, target: object = None) -> None:
        if threading.get_ident() == self.ident:
            self.imported = True
