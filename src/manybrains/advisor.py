"""Which model fits a function: measured, with the reason.

:func:`advise` calls a function on sample arguments, measures the calls, and says which
backend the threads / asyncio / processes cheat sheet (the rule ``backend="auto"`` applies:
:mod:`manybrains.backends.auto.policy`) picks for them and what each backend would cost.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field, replace
from typing import Any

from ._cpus import usable_cpus
from ._task import DEFAULT_CONCURRENCY, function_name, is_coroutine_function
from .backends.auto.policy import (
    GLANCE_SECONDS,
    MAX_WAITING_CALLS,
    PROCESS_START_SECONDS,
    Decision,
    classify,
    cpu_fraction,
    duration,
    gil_enabled,
    gil_was_free,
    native_share,
    native_threads,
    run_delay,
)

SHIP_SECONDS_PER_CALL = 2e-6  # a chunked call's trip to a worker process and back


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
        lines = [f"{self.function}: {duration(self.seconds_per_call)} a call, "
                 f"{self.cpu_fraction:.0%} on the CPU{native} "
                 f"({self.calls_measured} calls measured)",
                 f"estimated time for {self.items} calls on {self.workers} CPUs:"]
        for name, seconds in sorted(self.estimates.items(), key=lambda kv: kv[1]):
            mark = "  <- recommended" if name == self.recommendation else ""
            lines.append(f"  {name:<10} {duration(seconds):>10}{mark}")
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
