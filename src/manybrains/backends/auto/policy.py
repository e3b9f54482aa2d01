"""Where "auto" sends a function's calls: the rule and the measurements it rests on.

The threads / asyncio / processes cheat sheet, as a rule: threads (or an event loop) for work
that waits, processes for work that computes, and nothing at all for work so cheap that
handing it to someone else costs more than doing it. :func:`classify` is the rule;
``backend="auto"`` applies it to the first calls of each function, and
:func:`manybrains.advisor.advise` applies it to sample calls and prints what each backend
would cost.

The rule, from three numbers measured per call (its thread's CPU time over wall time, the
whole process's CPU time over wall time, and seconds)::

    coroutine function                      -> asyncio
    under 10 us a call                      -> inline     (shipping costs more than the call)
    the process's CPU time well over the
      wall time (native code on its own
      threads, e.g. BLAS), most CPUs busy   -> inline     (splitting only oversubscribes)
    CPU under half of the wall time         -> threads    (mostly waiting)
    CPU-bound, interpreter without a GIL    -> threads    (threads run in parallel)
    CPU-bound in native code that releases
      the GIL (other threads run meanwhile)  -> threads    (in parallel, nothing shipped)
    CPU-bound, short calls adding up to
      less than starting worker processes   -> inline     (until they add up)
    CPU-bound                               -> processes  (one GIL per worker)
"""

from __future__ import annotations

import math
import platform
import sys
from dataclasses import dataclass

from ..._cpus import usable_cpus

INLINE_BELOW_SECONDS = 10e-6  # a chunked call costs about 1-2 us to ship to a process and back
WAITING_BELOW_CPU_FRACTION = 0.5
LONG_CALL_SECONDS = 0.005  # one CPU-bound call this long is worth a worker process
MAX_WAITING_CALLS = 256  # threads (or coroutines) "auto" keeps in flight for waiting work
PROCESS_START_SECONDS = 0.1  # starting a pool of worker processes, for estimates only
# A call during which the process's other threads use at least 0.25x as much CPU as its own
# thread runs native threads of its own (a BLAS product): when those keep most of the usable
# CPUs busy, splitting the calls across workers only oversubscribes the CPUs.
NATIVE_MIN_SHARE = 0.25
NATIVE_CPUS_SHARE = 0.6
# A thread waking every GLANCE_SECONDS beside a call that holds the GIL runs only once a
# switch interval (5 ms); waking at least this share of its glances means the GIL was free.
GLANCE_SECONDS = 0.0005
GIL_FREE_GLANCES = 0.3
GIL_SEEN_AFTER = 0.002  # seconds of glances before that says anything


@dataclass(frozen=True)
class Decision:
    """Where a function's calls go, how many at once, and why."""

    backend: str
    width: int  # calls the backend should have in flight at once
    reason: str
    waiting: bool = False  # mostly waiting: how many run at once should follow the other side


def run_delay(native_id: int | None = None) -> float:
    """Seconds a thread of this process spent runnable but waiting for a CPU (Linux).

    On a busy machine a computing thread gets only part of a core; without this, its CPU time
    against wall time would look like waiting. 0.0 where the kernel does not say.
    ``native_id`` is ``threading.get_native_id()`` of the thread; None: the calling thread.
    """
    path = ("/proc/thread-self/schedstat" if native_id is None
            else f"/proc/self/task/{native_id}/schedstat")
    try:
        with open(path, "rb") as stat:
            return int(stat.read().split()[1]) / 1e9
    except (OSError, ValueError, IndexError):
        return 0.0


def cpu_fraction(cpu: float, wall: float, delay: float = 0.0) -> float:
    """CPU time over the time the thread could run (wall time less its wait for a CPU)."""
    runnable = max(wall - delay, cpu)
    return min(1.0, cpu / runnable) if runnable > 0 else 1.0


def native_share(others_cpu: float, own_cpu: float, wall: float) -> float:
    """CPU seconds other threads of the process used per CPU second of the call's own thread
    (counted as at least half its wall time, so that a few microseconds of CPU in a call that
    mostly waits do not make the process's background look like helpers).

    Comparing against the call's CPU time rather than only its wall time keeps the ratio when
    the machine is busy: a starved BLAS call gets less of every CPU, its helpers too.
    """
    own = max(own_cpu, wall / 2)
    return max(0.0, others_cpu) / own if own > 0 else 0.0


def native_threads(share: float, cpus: int) -> bool:
    """Whether calls whose helper threads use ``share`` times their own CPU time run native
    threads on most of the ``cpus`` this process may use (splitting them oversubscribes)."""
    return cpus > 1 and share >= max(NATIVE_MIN_SHARE, NATIVE_CPUS_SHARE * cpus - 1)


# Linux system calls that wait for a clock and nothing else, by machine.
_SLEEP_CALLS = {"x86_64": {35, 230}, "aarch64": {101, 115}}  # nanosleep, clock_nanosleep
_SELECT_CALLS = {"x86_64": {23, 270}, "aarch64": {72}}  # select, pselect6: with no descriptors


def waiting_on_a_clock(native_id: int) -> bool | None:
    """Whether thread ``native_id`` of this process is asleep on a timer right now
    (``time.sleep``), None when the kernel does not say (or it is not in a system call).

    A call that waits on a clock has no other side that too many calls at once could
    overwhelm; one that waits on a socket or a file might.
    """
    machine = platform.machine()
    try:
        with open(f"/proc/self/task/{native_id}/syscall", "rb") as stat:
            fields = stat.read().split()
        number = int(fields[0])
    except (OSError, ValueError, IndexError):  # not Linux, "running", or the thread is gone
        return None
    if number in _SLEEP_CALLS.get(machine, ()):
        return True
    if number in _SELECT_CALLS.get(machine, ()):
        return len(fields) > 1 and int(fields[1], 16) == 0
    return False if machine in _SLEEP_CALLS else None


def gil_enabled() -> bool:
    """Whether this interpreter runs with a GIL (always, before Python 3.13)."""
    probe = getattr(sys, "_is_gil_enabled", None)
    return True if probe is None else bool(probe())


def classify(seconds_per_call: float, cpu_fraction: float, *, coroutine: bool = False,
             seen_seconds: float = math.inf, startup: float = PROCESS_START_SECONDS,
             workers: int | None = None, gil: bool | None = None, native: float = 0.0,
             max_waiting: int = MAX_WAITING_CALLS, gil_free: bool = False,
             asleep: bool = False) -> Decision:
    """The backend for calls measured at ``seconds_per_call`` using ``cpu_fraction`` CPU.

    ``seen_seconds`` is the time all calls measured so far took, and ``startup`` what starting
    worker processes would cost now (0 when they already run): short CPU-bound calls stay in
    the caller until their total outweighs it. ``native`` is the CPU time other threads of
    the process used per CPU second of a call (see :func:`native_share`).
    ``max_waiting`` caps how many waiting calls run at once. ``gil_free``: while a call
    computed, other threads could run Python (native code that releases the GIL).
    ``asleep``: it was seen sleeping on a clock, which uses no CPU however many sleep at
    once (the CPU it used so far, a first millisecond, says little about the rest).
    """
    workers = workers or usable_cpus()
    gil = gil_enabled() if gil is None else gil
    measured = f"{duration(seconds_per_call)} a call, {cpu_fraction:.0%} of it on the CPU"
    if coroutine:
        return Decision("asyncio", workers, "a coroutine function: awaited on an event loop")
    if seconds_per_call < INLINE_BELOW_SECONDS:
        return Decision("inline", 1, f"{measured}: cheaper than shipping the call anywhere "
                        f"(under {duration(INLINE_BELOW_SECONDS)}), so it runs in the caller")
    if native_threads(native, workers):
        return Decision("inline", 1, f"{measured}, and {native:.1f}x that on other threads: "
                        "native code (BLAS, say) runs threads of its own on the CPUs, so calls "
                        "run one at a time in the caller; splitting them would oversubscribe "
                        "the CPUs")
    if cpu_fraction < WAITING_BELOW_CPU_FRACTION and asleep:
        return Decision("threads", max_waiting, f"{measured}: mostly waiting, asleep on a "
                        f"clock, so up to {max_waiting} calls wait at once on threads",
                        waiting=True)
    if cpu_fraction < WAITING_BELOW_CPU_FRACTION:
        width = min(max_waiting, _waiting_width(cpu_fraction, workers))
        return Decision("threads", width, f"{measured}: mostly waiting, so up to {width} "
                        "calls wait at once on threads", waiting=True)
    if not gil:
        return Decision("threads", workers, f"{measured}: CPU-bound, and this interpreter has "
                        f"no GIL, so {workers} threads compute in parallel")
    if gil_free:
        return Decision("threads", workers, f"{measured}: CPU-bound in native code that "
                        f"releases the GIL, so {workers} threads compute in parallel with "
                        "nothing to ship")
    if seconds_per_call < LONG_CALL_SECONDS and seen_seconds < startup:
        return Decision("inline", 1, f"{measured}: CPU-bound, but together the calls take "
                        f"{duration(seen_seconds)}, less than starting worker processes "
                        f"({duration(startup)}): they run in the caller until they add up")
    return Decision("processes", workers, f"{measured}: CPU-bound, so {workers} worker "
                    "processes compute in parallel (threads would share one GIL)")


def _waiting_width(cpu_fraction: float, workers: int) -> int:
    # Little's law: with a fraction f of each call on the CPU, about workers / f calls keep
    # the CPUs busy; beyond that more threads only queue for the GIL.
    return max(workers, min(MAX_WAITING_CALLS, math.ceil(workers / max(cpu_fraction, 1e-9))))


def gil_was_free(wakes: int, elapsed: float) -> bool:
    """Whether a thread waking every ``GLANCE_SECONDS`` woke often enough while a call
    computed for ``elapsed`` seconds (its CPU time, where that can be read) to say the GIL
    was free meanwhile."""
    return elapsed >= GIL_SEEN_AFTER and wakes >= GIL_FREE_GLANCES * elapsed / GLANCE_SECONDS


def duration(seconds: float) -> str:
    """``seconds`` for a reader: "2.50 s", "1.5 ms", "12.0 us"."""
    if seconds >= 1:
        return f"{seconds:.2f} s"
    if seconds >= 1e-3:
        return f"{seconds * 1e3:.1f} ms"
    return f"{seconds * 1e6:.1f} us"
