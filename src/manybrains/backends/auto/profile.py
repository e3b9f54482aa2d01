"""What ``"auto"`` knows about one function: its measured calls and the current decision.

A call run on a thread or in the caller measures its wall time; one in ``_SAMPLE_EVERY`` (and
the probe) also its thread's CPU time, how long the thread waited for a CPU, and the whole
process's CPU time. The thread's CPU time against wall time tells computing from waiting; the
process's CPU time against wall time tells a call that runs native threads of its own (a BLAS
product keeps every core busy while its Python thread holds one). Calls in worker processes
report their run time only.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any

from ..._errors import SerializationError
from ..._task import ChunkOutcome, Task, function_name, run_task, unpickled
from .gate import Gate, Run
from .limit import ConcurrencyLimit
from .policy import (
    GLANCE_SECONDS,
    LONG_CALL_SECONDS,
    NATIVE_MIN_SHARE,
    Decision,
    classify,
    cpu_fraction,
    gil_enabled,
    gil_was_free,
    native_share,
    run_delay,
    waiting_on_a_clock,
)
from .probe import ProbeClock, Reading

PROBE_SECONDS = LONG_CALL_SECONDS  # a new function's first call is watched this long
# ... and one that computes (or runs native threads) until it ends, up to this long: a whole
# call tells a BLAS call's start-up from its steady state, and costs no more than that call.
PROBE_COMPUTING_SECONDS = 0.05
PROBE_IMPORTING_SECONDS = 1.0  # ... and one still importing modules, up to this long
_ASLEEP_SECONDS = 0.001  # a probe seen asleep on a clock after this long is waiting work
PROBE_START_SECONDS = 1.0  # waiting for the probe's thread to start (a busy machine)
_SAMPLE_EVERY = 8


class Profile:
    """What is known about one function: its measured calls and the current decision."""

    def __init__(self, fn: Any, workers: int, startup: Callable[[], float],
                 max_waiting: int) -> None:
        self.name = function_name(fn)
        self.workers = workers
        self.max_waiting = max_waiting  # the pool's cap on waiting calls at once
        self._startup = startup  # what starting worker processes would cost now
        self.decision: Decision | None = None
        self.history: list[str] = []
        self.calls = 0
        self.seconds = 0.0
        # Decisions follow the calls since the last review (the latest half of all calls), so
        # one odd first call stops counting once enough normal ones have been measured.
        self._recent = _Sums()
        self.per_call: float | None = None  # as of the last review
        self.cpu_fraction: float | None = None  # None: only measured in worker processes
        self.native = 0.0  # CPU of the process's other threads per CPU second of a call
        self._native_sums = [0.0, 0.0, 0.0]  # others' CPU, own CPU, wall: every call read
        self._runs_native = False
        self._confirm = False  # the probe was atypical: measure the next call the same way
        self._reprobe = False  # the probe ended, but imported modules: the next call probes
        self._reprobes = 0
        self.gil_free = False  # the probe's thread let others run Python while it computed
        self._glances = 0
        self.on_a_clock: bool | None = None  # the probe slept on a timer (None: not seen)
        self.gate: Gate | None = None  # made once its calls turn out to wait
        self._lock = threading.Lock()
        self._decided = threading.Event()
        self._probing = False
        self._probe_started = threading.Event()
        self._probe_clock: ProbeClock | None = None
        self._next_review = 1
        self._sampled = 0
        self._unpicklable: str | None = None  # why worker processes cannot run it

    # -- deciding ----------------------------------------------------------------------------

    def decide_coroutine(self) -> None:
        if self.decision is None or self.decision.backend != "asyncio":
            self._set(self._classify(0.0, 0.0, coroutine=True))

    def start_probe(self) -> bool:
        """True for the one caller that gets to probe this function."""
        with self._lock:
            if self._probing or self.decision is not None:
                return False
            self._probing = True
            return True

    def abandon_probe(self) -> None:
        with self._lock:
            self._probing = False

    def watch_probe(self) -> Decision | None:
        """Wait until the probe finished or ran ``PROBE_SECONDS``; decide from what it did.

        None: the probe ended but imported modules, so its time was mostly theirs; the next
        call probes again (twice at most).
        """
        caller0 = time.thread_time()  # this thread's CPU is no native helper's
        self._probe_started.wait(PROBE_START_SECONDS)
        start = time.perf_counter()
        if not self._glance_until(start, start + PROBE_SECONDS, look=True):
            reading = self._read_running_probe(time.thread_time() - caller0)
            if reading is None or not reading.clearly_waits():
                self._glance_until(start, start + PROBE_COMPUTING_SECONDS, look=False)
            reading = self._read_running_probe(time.thread_time() - caller0)
            if reading is not None and reading.imported:  # what it did is the import's
                self._glance_until(start, start + PROBE_IMPORTING_SECONDS, look=False)
        with self._lock:
            if self._reprobe:
                self._reprobe = False
                return None
            if self.decision is None:
                reading = self._read_running_probe(time.thread_time() - caller0)
                self._set(self._classify_reading(reading))
            assert self.decision is not None
            return self.decision

    def _glance_until(self, start: float, deadline: float, *, look: bool) -> bool:
        """Wait for the probe's decision until ``deadline``, waking every half millisecond:
        how often this thread gets to run while the probe computes tells whether the probe
        holds the GIL (:meth:`_count_glance`), and with
        ``look`` it reads what the probe's thread waits on (a sleep of a millisecond ends
        before one look at the end would see it), and stops once the probe has slept on a
        clock for a millisecond: nothing else will be learnt by watching a sleep. Whether
        it was decided."""
        last = (time.perf_counter(), self._probe_cpu())
        while (left := deadline - time.perf_counter()) > 0:
            if self._decided.wait(min(left, GLANCE_SECONDS)) or self._reprobe:
                return True
            self._count_glance(start, last, now := (time.perf_counter(), self._probe_cpu()))
            last = now
            clock = self._probe_clock
            if look and clock is not None and self.on_a_clock is not False:
                seen = waiting_on_a_clock(clock.native_id)
                self.on_a_clock = seen if seen is not None else self.on_a_clock
                if seen and time.perf_counter() - start >= _ASLEEP_SECONDS:
                    break
        return self._decided.is_set()

    def wait_for_decision(self) -> Decision:
        """The decision, once the probe that another caller started has made it."""
        decision = self.decision
        if decision is not None:  # the common case: no Event.wait, which takes a lock
            return decision
        if not self._decided.wait(PROBE_START_SECONDS + PROBE_SECONDS):
            with self._lock:
                if self.decision is None:  # the probe never started: assume waiting work
                    self._set(self._classify(PROBE_SECONDS, 0.0))
        assert self.decision is not None
        return self.decision

    def gate_for(self, run: Run) -> Gate:
        """The gate that holds this function's waiting calls to its concurrency limit."""
        with self._lock:
            if self.gate is None:
                self.gate = Gate(ConcurrencyLimit(self.max_waiting,
                                                  unbounded_wait=bool(self.on_a_clock)), run)
            return self.gate

    def _count_glance(self, start: float, last: tuple[float, float | None],
                      now: tuple[float, float | None]) -> None:
        """Count a glance (this thread ran) from ``last`` to ``now``, each a wall time and the
        probe's CPU time then, and judge whether the GIL is free while the probe computes.

        A glance counts only if the probe also computed for a quarter of it, and glances are
        weighed against the probe's own CPU time: on a loaded machine this thread also wakes
        freely while the probe waits for a CPU, and Python code holding the GIL whenever it
        ran looked like native code that releases it."""
        clock = self._probe_clock
        if clock is None or now[1] is None:  # no per-thread CPU clock: wakes against wall time
            self._glances += 1
            self.gil_free = gil_was_free(self._glances, now[0] - start)
            return
        if last[1] is not None and now[1] - last[1] >= (now[0] - last[0]) / 4:
            self._glances += 1
        self.gil_free = gil_was_free(self._glances, now[1] - clock.cpu)

    def _probe_cpu(self) -> float | None:
        clock = self._probe_clock
        return None if clock is None else clock.thread_cpu()

    def _read_running_probe(self, caller_cpu: float) -> Reading | None:
        clock = self._probe_clock
        return None if clock is None else clock.read(caller_cpu)

    def _classify_reading(self, reading: Reading | None) -> Decision:
        if reading is None:
            return self._classify(PROBE_SECONDS, 0.0)
        if reading.waits() and self.on_a_clock is None:
            self.on_a_clock = waiting_on_a_clock(reading.native_id)  # waiting: on what?
        self._judge_native(reading.native)
        self._confirm = reading.imported
        wall = max(reading.wall, PROBE_SECONDS)  # the probe ran at least this long, and goes on
        return self._classify(wall, reading.fraction, seen=wall)

    def _set(self, decision: Decision) -> None:
        if self.decision is not None and decision.backend != self.decision.backend:
            self.history.append(f"was {self.decision.backend} until {self.calls} calls")
        self.decision = decision
        self._decided.set()

    # -- measuring ---------------------------------------------------------------------------

    def sample(self) -> bool:
        """Whether the next task measures its CPU time (one in ``_SAMPLE_EVERY``: reading
        how long a thread waited for a CPU costs two reads of /proc)."""
        self._sampled += 1
        return self._sampled % _SAMPLE_EVERY == 1

    def probe_began(self) -> ProbeClock:
        """Called on the probe's thread as its call begins."""
        clock = self._probe_clock = ProbeClock.now()
        self._probe_started.set()
        return clock

    def take_confirmation(self) -> bool:
        """True once after a probe that imported modules: the next call is measured like a
        probe, and its numbers replace the probe's."""
        if not self._confirm:  # the common case, without the lock
            return False
        with self._lock:
            confirm, self._confirm = self._confirm, False
            return confirm

    def record(self, calls: int, seconds: float, cpu: float | None, delay: float = 0.0,
               process_cpu: float | None = None, *, atypical: bool = False,
               replaces: bool = False) -> None:
        """``calls`` calls took ``seconds``, ``cpu`` of them on the CPU (None: not measured),
        ``delay`` waiting for a CPU, while the whole process used ``process_cpu``.

        ``atypical``: the probe imported modules (a first call's one-off cost), so the next
        call confirms; ``replaces``: that confirming call, which replaces what came before.
        """
        with self._lock:
            self.calls += calls
            self.seconds += seconds
            if atypical and self.decision is None and self._reprobes < 2:
                self._reprobes += 1
                self._probing, self._probe_clock, self._reprobe = False, None, True
                self._probe_started.clear()
                return
            if replaces:
                self._recent = _Sums()
            self._recent.add(calls, seconds, cpu, delay, process_cpu)
            self._confirm = self._confirm or atypical
            if self.calls >= self._next_review or self.decision is None or replaces:
                self._next_review = 2 * self.calls  # review at 1, 2, 4, 8... calls
                self._review()

    def record_remote(self, future: Future[Any]) -> None:
        """A chunk finished in a worker process: its run time is known, its CPU time not."""
        if future.cancelled() or future.exception() is not None:
            return
        outcome = future.result()
        if isinstance(outcome, ChunkOutcome):
            calls = len(outcome.values) + (outcome.error is not None)
            self.record(calls, outcome.elapsed, None)

    def _review(self) -> None:
        recent, self._recent = self._recent, _Sums()
        if (self.decision is not None and self.decision.backend == "asyncio") or not recent.calls:
            return
        self.per_call = recent.seconds / recent.calls
        if recent.cpu_wall > 0:
            self.cpu_fraction = cpu_fraction(recent.cpu, recent.cpu_wall)
        if recent.own_wall > 0:
            sums = self._native_sums
            sums[0] += recent.others_cpu
            sums[1] += recent.own_cpu
            sums[2] += recent.own_wall
            self._judge_native(native_share(*sums))
        fraction = 1.0 if self.cpu_fraction is None else self.cpu_fraction
        decision = self.decision
        if (decision is not None and decision.backend == "threads" and not decision.waiting
                and gil_enabled() and not self.gil_free):
            # Computing on threads that share one GIL, each call waits for it as much as it
            # runs: that waiting is not the call's own.
            fraction = min(1.0, fraction * decision.width)
        self._set(self._classify(self.per_call, fraction, seen=self.seconds))

    def _judge_native(self, share: float) -> None:
        # Over every call read so far, not the latest few: on a busy machine one sample may
        # catch the helpers descheduled. Once seen, it takes a clearly lower share to undo.
        self.native = share
        threshold = NATIVE_MIN_SHARE / 2 if self._runs_native else NATIVE_MIN_SHARE
        self._runs_native = share >= threshold

    def cannot_pickle(self, error: SerializationError) -> Decision:
        """Its tasks cannot travel to worker processes: run them on threads from now on."""
        with self._lock:
            self._unpicklable = str(error)
            self._set(self._classify(self.per_call or PROBE_SECONDS, 1.0, seen=self.seconds))
            assert self.decision is not None
            return self.decision

    def _classify(self, per_call: float, fraction: float, *, seen: float = 0.0,
                  coroutine: bool = False) -> Decision:
        decision = classify(per_call, fraction, coroutine=coroutine, seen_seconds=seen,
                            startup=self._startup(), workers=self.workers,
                            native=self._native_for_rule(), max_waiting=self.max_waiting,
                            gil_free=self.gil_free, asleep=bool(self.on_a_clock))
        if decision.backend != "processes" or self._unpicklable is None:
            return decision
        return Decision("threads", self.workers, f"{decision.reason}; but its tasks cannot be "
                        f"pickled for worker processes ({self._unpicklable}), so threads run "
                        "them, one at a time under the GIL")

    def _native_for_rule(self) -> float:
        # The rule compares with its own threshold; a verdict kept by hysteresis must pass it.
        return max(self.native, NATIVE_MIN_SHARE) if self._runs_native else self.native

    def explain(self) -> dict[str, Any]:
        """The decision and the numbers behind it, for statistics."""
        with self._lock:
            decision = self.decision
            gate = self.gate
            explained: dict[str, Any] = {
                "function": self.name, "backend": decision.backend if decision else None,
                "why": decision.reason if decision else "being measured",
                "calls_measured": self.calls, "seconds_per_call": self.per_call,
                "cpu_fraction": self.cpu_fraction, "native_share": self.native,
                "releases_gil": self.gil_free,
                "history": list(self.history)}
        if gate is not None:
            explained["concurrency"] = gate.describe()
        return explained


class _Sums:
    """Calls and their seconds; CPU seconds against runnable seconds, where measured."""

    __slots__ = ("calls", "cpu", "cpu_wall", "others_cpu", "own_cpu", "own_wall", "seconds")

    def __init__(self) -> None:
        self.calls, self.seconds, self.cpu, self.cpu_wall = 0, 0.0, 0.0, 0.0
        # where the whole process's CPU time was read
        self.others_cpu, self.own_cpu, self.own_wall = 0.0, 0.0, 0.0

    def add(self, calls: int, seconds: float, cpu: float | None, delay: float,
            process_cpu: float | None) -> None:
        self.calls += calls
        self.seconds += seconds
        if cpu is not None:
            self.cpu += cpu
            self.cpu_wall += seconds - delay  # the time it could have run
        if process_cpu is not None and cpu is not None:
            self.others_cpu += process_cpu - cpu
            self.own_cpu += cpu
            self.own_wall += seconds


def measured(task: Task, profile: Profile, *, probe: bool = False, precise: bool,
             alone: bool = False, confirms: bool = False) -> Task:
    """``task`` as a call that measures its own wall and CPU time into ``profile``.

    Every task measures its wall time; a ``precise`` one also its CPU time and how long its
    thread waited for a CPU; one that runs ``alone`` (the probe, a call in the caller) also
    the whole process's CPU time, which other calls running beside it would blur.
    """
    # Task(...) rather than dataclasses.replace: this runs for every call, and replace() is
    # several times slower.
    inner = Task(unpickled(task.fn), task.args, task.kwargs, task.items, task.star)
    return Task(_Measure(inner, profile, probe, precise, alone or probe, confirms))


class _Measure:
    """Runs a task and records how long it took and how much of that was CPU time."""

    def __init__(self, inner: Task, profile: Profile, probe: bool, precise: bool, alone: bool,
                 confirms: bool) -> None:
        self.inner, self.profile, self.probe, self.precise = inner, profile, probe, precise
        self.alone, self.confirms = alone, confirms
        self.__qualname__ = profile.name

    def __call__(self) -> Any:
        if not self.precise:
            wall0 = time.perf_counter()
            try:
                return run_task(self.inner)
            finally:
                self.profile.record(self.inner.size, time.perf_counter() - wall0, None)
        clock = self.profile.probe_began() if self.probe else None
        delay0, process0 = run_delay(), time.process_time()
        cpu0, wall0 = time.thread_time(), time.perf_counter()
        try:
            return run_task(self.inner)
        finally:
            wall, cpu = time.perf_counter() - wall0, time.thread_time() - cpu0
            # A probe still running when the decision came had company from then on.
            alone = self.alone and not (self.probe and self.profile.decision is not None)
            process_cpu = time.process_time() - process0 if alone else None
            imported = False
            if clock is not None:
                clock.imports.stop()
                imported = clock.imports.imported
            self.profile.record(self.inner.size, wall, cpu, run_delay() - delay0, process_cpu,
                                atypical=imported, replaces=self.confirms)
