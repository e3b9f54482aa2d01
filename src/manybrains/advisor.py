"""Which model fits a function: measured, with the reason.

The threads / asyncio / processes cheat sheet, as a measurement: threads (or an event loop)
for work that waits, processes for work that computes, and nothing at all for work so cheap
that handing it to someone else costs more than doing it. :func:`classify` is the rule;
``backend="auto"`` applies it to the first calls of each function, and :func:`advise`
applies it to sample calls and prints what each backend would cost.

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
import threading
import time
from dataclasses import dataclass, field, replace
from typing import Any

from ._cpus import usable_cpus
from ._task import DEFAULT_CONCURRENCY, function_name, is_coroutine_function

INLINE_BELOW_SECONDS = 10e-6  # a chunked call costs about 1-2 us to ship to a process and back
WAITING_BELOW_CPU_FRACTION = 0.5
LONG_CALL_SECONDS = 0.005  # one CPU-bound call this long is worth a worker process
MAX_WAITING_CALLS = 256  # threads (or coroutines) "auto" keeps in flight for waiting work
PROCESS_START_SECONDS = 0.1  # starting a pool of worker processes, for estimates only
SHIP_SECONDS_PER_CALL = 2e-6
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
    measured = f"{_duration(seconds_per_call)} a call, {cpu_fraction:.0%} of it on the CPU"
    if coroutine:
        return Decision("asyncio", workers, "a coroutine function: awaited on an event loop")
    if seconds_per_call < INLINE_BELOW_SECONDS:
        return Decision("inline", 1, f"{measured}: cheaper than shipping the call anywhere "
                        f"(under {_duration(INLINE_BELOW_SECONDS)}), so it runs in the caller")
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
                        f"{_duration(seen_seconds)}, less than starting worker processes "
                        f"({_duration(startup)}): they run in the caller until they add up")
    return Decision("processes", workers, f"{measured}: CPU-bound, so {workers} worker "
                    "processes compute in parallel (threads would share one GIL)")


def _waiting_width(cpu_fraction: float, workers: int) -> int:
    # Little's law: with a fraction f of each call on the CPU, about workers / f calls keep
    # the CPUs busy; beyond that more threads only queue for the GIL.
    return max(workers, min(MAX_WAITING_CALLS, math.ceil(workers / max(cpu_fraction, 1e-9))))


# ---- advise ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Advice:
    """What :func:`advise` measured and recommends; ``str(advice)`` explains it."""

    function: str
    calls_measured: int
    seconds_per_call: float
    cpu_fraction: float
    coroutine: bool
    recommendation: str
    reason: str
    items: int = 1000
    workers: int = field(default_factory=usable_cpus)
    native_share: float = 0.0  # CPU time of other threads per CPU second of a call
    releases_gil: bool = False  # other threads ran Python while it computed

    @property
    def estimates(self) -> dict[str, float]:
        """Estimated seconds to run :attr:`items` calls on each backend (a rough model)."""
        return _estimates(self)

    def for_items(self, items: int) -> Advice:
        """The same measurements, with estimates and a recommendation for ``items`` calls."""
        decision = _decide(self.seconds_per_call, self.cpu_fraction, self.coroutine, items,
                           self.native_share, self.releases_gil)
        return replace(self, items=items, recommendation=decision.backend,
                       reason=decision.reason)

    def __str__(self) -> str:
        native = (f" and {self.native_share:.1f}x that on native threads"
                  if native_threads(self.native_share, self.workers) else "")
        lines = [f"{self.function}: {_duration(self.seconds_per_call)} a call, "
                 f"{self.cpu_fraction:.0%} on the CPU{native} "
                 f"({self.calls_measured} calls measured)",
                 f"estimated time for {self.items} calls on {self.workers} CPUs:"]
        for name, seconds in sorted(self.estimates.items(), key=lambda kv: kv[1]):
            mark = "  <- recommended" if name == self.recommendation else ""
            lines.append(f"  {name:<10} {_duration(seconds):>10}{mark}")
        lines.append(f"recommendation: backend={self.recommendation!r}: {self.reason}")
        return "\n".join(lines)


def advise(fn: Any, /, *args: Any, **kwargs: Any) -> Advice:
    """Call ``fn(*args, **kwargs)`` here a few times, measure, and say which backend fits.

    The calls really run (up to 5 of them, or fewer when each takes long), so pass sample
    arguments that are safe to repeat. Use :meth:`Advice.for_items` for another item count.
    """
    coroutine = is_coroutine_function(fn)
    calls, wall, cpu, delay, others, gil_free = _measure(fn, args, kwargs, coroutine)
    per_call, fraction = wall / calls, cpu_fraction(cpu, wall, delay)
    share = native_share(others, cpu, wall)
    decision = _decide(per_call, fraction, coroutine, Advice.items, share, gil_free)
    name = function_name(fn)
    return Advice(name, calls, per_call, fraction, coroutine, decision.backend, decision.reason,
                  native_share=share, releases_gil=gil_free)


def _decide(per_call: float, fraction: float, coroutine: bool, items: int,
            native: float, gil_free: bool) -> Decision:
    # What "auto" would do once it has seen all ``items`` calls: short CPU-bound work that adds
    # up to less than starting worker processes stays in the caller.
    return classify(per_call, fraction, coroutine=coroutine, seen_seconds=items * per_call,
                    native=native, gil_free=gil_free)


def _measure(fn: Any, args: tuple[Any, ...], kwargs: dict[str, Any], coroutine: bool
             ) -> tuple[int, float, float, float, float, bool]:
    """(calls, wall, CPU, CPU-wait and other threads' CPU seconds, whether the GIL stayed
    free): up to 5 calls, stopping after half a second."""
    calls, wall, cpu, others = 0, 0.0, 0.0, 0.0
    delay0 = run_delay()
    with GilWatch() as watch:
        while calls < 5 and (calls == 0 or wall < 0.5):
            cpu0, process0, wall0 = time.thread_time(), time.process_time(), time.perf_counter()
            _call(fn, args, kwargs, coroutine)
            wall += time.perf_counter() - wall0
            own = time.thread_time() - cpu0
            cpu += own
            others += time.process_time() - process0 - own
            calls += 1
    return calls, wall, cpu, run_delay() - delay0, others - watch.cpu, watch.gil_free


class GilWatch:
    """A thread that wakes every half millisecond while calls run in this one: a call that
    holds the GIL lets it run only once a switch interval (5 ms)."""

    def __init__(self) -> None:
        self.cpu = 0.0  # the watcher's own CPU time, which is no call's
        self.gil_free = False
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, name="manybrains-gil-watch",
                                        daemon=True)

    def __enter__(self) -> GilWatch:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _watch(self) -> None:
        cpu0, start, wakes = time.thread_time(), time.perf_counter(), 0
        while not self._stop.wait(GLANCE_SECONDS):
            wakes += 1
            self.gil_free = gil_was_free(wakes, time.perf_counter() - start)
        self.cpu = time.thread_time() - cpu0


def gil_was_free(wakes: int, elapsed: float) -> bool:
    """Whether a thread waking every ``GLANCE_SECONDS`` woke often enough over ``elapsed``
    seconds to say the GIL was free meanwhile."""
    return elapsed >= GIL_SEEN_AFTER and wakes >= GIL_FREE_GLANCES * elapsed / GLANCE_SECONDS


def _call(fn: Any, args: tuple[Any, ...], kwargs: dict[str, Any], coroutine: bool) -> None:
    if coroutine:
        import asyncio

        asyncio.run(fn(*args, **kwargs))
    else:
        fn(*args, **kwargs)


def _estimates(advice: Advice) -> dict[str, float]:
    n, t, f, cpus = advice.items, advice.seconds_per_call, advice.cpu_fraction, advice.workers
    compute, wait = n * t * f, n * t * (1 - f)
    shares_one_gil = gil_enabled() and not advice.releases_gil
    parallel = compute if shares_one_gil else compute / min(n, cpus)
    threads = parallel + wait / min(n, MAX_WAITING_CALLS)
    spread = float(min(n, cpus))
    if native_threads(advice.native_share, cpus):
        # Each call's native threads already keep the CPUs busy: splitting the calls gains
        # nothing (and oversubscribes them)
        spread, threads = 1.0, n * t
    estimates = {
        "inline": n * t,
        "threads": threads,
        "processes": PROCESS_START_SECONDS + (n * t) / spread + n * SHIP_SECONDS_PER_CALL,
    }
    if advice.coroutine:
        estimates["asyncio"] = compute + wait / min(n, DEFAULT_CONCURRENCY)
        del estimates["threads"]  # a coroutine function is not run on threads by auto
    return estimates


def _duration(seconds: float) -> str:
    if seconds >= 1:
        return f"{seconds:.2f} s"
    if seconds >= 1e-3:
        return f"{seconds * 1e3:.1f} ms"
    return f"{seconds * 1e6:.1f} us"
