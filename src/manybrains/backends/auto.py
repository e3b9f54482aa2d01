"""The ``"auto"`` backend: measure each function, then run it where it fits.

The default of ``manybrains.map``/``imap``/``submit``. It owns the other backends (started on
first use) and routes every task by its function, following
:func:`manybrains.advisor.classify`::

    submit(task)
      coroutine function ---------------------------------------------> asyncio
      function seen before -> its decision ---------------------------> threads | processes
                                                                        | inline
      new function -> probe: run this task on a thread and watch it:
           finished within 5 ms, or still running after 5 ms with its
           CPU clock read from outside (time.pthread_getcpuclockid)
           -> decision; this task stays on its thread, the next ones follow

Every later call run on a thread or in the caller is measured again (its thread's CPU time
against wall time), calls in worker processes by their run time, so the choice can change as
the measurements settle; ``statistics()["choices"]`` says what was chosen and why. The
decision sets ``capacity``, which widens the pool's window: hundreds of waiting calls in
flight on threads, two chunks per process for computation, one chunk at a time inline.

A task with a timeout never runs inline: a call in the caller cannot be interrupted.
"""

from __future__ import annotations

import dataclasses
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any

from .._errors import SerializationError, check_open
from .._task import AsyncCall, ChunkOutcome, Task, function_name, run_task, unpickled, unwrap
from ..advisor import (
    LONG_CALL_SECONDS,
    MAX_WAITING_CALLS,
    PROCESS_START_SECONDS,
    Decision,
    classify,
    cpu_fraction,
    run_delay,
)
from . import get_backend
from ._base import Backend, PoolOptions

PROBE_SECONDS = LONG_CALL_SECONDS  # a new function's first call is watched this long
_PROBE_START_SECONDS = 1.0  # waiting for the probe's thread to start (a busy machine)
_REMEMBERED = 256  # functions whose measurements are kept
_SAMPLE_EVERY = 8

# ---- the backend ------------------------------------------------------------------------


class AutoBackend(Backend):
    """Routes each function to the backend its measured calls call for."""

    name = "auto"
    pickles_tasks = True  # the pool pickles once; local backends get the function back

    def start(self, options: PoolOptions) -> None:
        self._options = options
        self.capacity = 1  # until a function is measured: probe one chunk at a time
        self._lock = threading.Lock()
        self._engines: dict[str, Backend] = {}
        self._profiles: OrderedDict[object, _Profile] = OrderedDict()
        self._closed = False

    def submit(self, task: Task, *, timeout: float | None = None, retries: int = 0
               ) -> Future[Any]:
        profile = self._profile(task)
        if profile.decision is None and profile.start_probe():
            return self._probe(profile, task, timeout, retries)
        decision = profile.wait_for_decision()
        self.capacity = decision.width
        return self._route(profile, decision, task, timeout, retries)

    def cancel(self, future: Future[Any]) -> bool:
        engine: Backend | None = getattr(future, "engine", None)
        return engine.cancel(future) if engine is not None else False

    def shutdown(self, *, wait: bool = True, cancel_futures: bool = False, kill: bool = False
                 ) -> None:
        with self._lock:
            self._closed = True
            engines = list(self._engines.values())
        for engine in engines:
            engine.shutdown(wait=wait, cancel_futures=cancel_futures, kill=kill)

    def statistics(self) -> dict[str, Any]:
        with self._lock:
            engines = dict(self._engines)
            profiles = list(self._profiles.values())
        per_engine = {name: engine.statistics() for name, engine in engines.items()}
        totals = {key: sum(int(stats.get(key, 0)) for stats in per_engine.values())
                  for key in ("submitted", "done", "failed", "retried", "in_flight")}
        workers = [{"backend": name, **row} for name, stats in per_engine.items()
                   for row in stats.get("workers", [])]
        return {**totals, "workers": workers, "choices": [p.explain() for p in profiles],
                "engines": per_engine}

    # ---- routing --------------------------------------------------------------------------

    def _profile(self, task: Task) -> _Profile:
        fn = unwrap(task.fn)
        key = getattr(fn, "__code__", fn)  # a lambda re-created in a loop is the same work
        with self._lock:
            check_open(self._closed)
            profile = self._profiles.get(key)
            if profile is None:
                profile = self._profiles[key] = _Profile(fn, self._options.workers,
                                                         self._process_startup)
                if len(self._profiles) > _REMEMBERED:
                    self._profiles.popitem(last=False)
            if isinstance(unpickled(task.fn), AsyncCall):
                profile.decide_coroutine()
            return profile

    def _route(self, profile: _Profile, decision: Decision, task: Task, timeout: float | None,
               retries: int) -> Future[Any]:
        name = decision.backend
        if name == "inline" and timeout is not None:
            name = "threads"  # only a thread can be abandoned at its deadline
        engine = self._engine(name)
        if name == "processes":
            try:
                future = engine.submit(task, timeout=timeout, retries=retries)
            except SerializationError as exc:  # it ran here, so a thread can run it too
                return self._route(profile, profile.cannot_pickle(exc), task, timeout, retries)
            future.add_done_callback(profile.record_remote)
        elif name == "asyncio":
            future = engine.submit(task, timeout=timeout, retries=retries)
        else:
            future = engine.submit(_measured(task, profile, precise=profile.sample()),
                                   timeout=timeout, retries=retries)
        future.engine = engine  # type: ignore[attr-defined]
        return future

    def _probe(self, profile: _Profile, task: Task, timeout: float | None, retries: int
               ) -> Future[Any]:
        engine = self._engine("threads")
        try:
            future = engine.submit(_measured(task, profile, probe=True, precise=True),
                                   timeout=timeout, retries=retries)
        except BaseException:
            profile.abandon_probe()
            raise
        future.engine = engine  # type: ignore[attr-defined]
        self.capacity = profile.watch_probe().width
        return future

    def _process_startup(self) -> float:
        return 0.0 if "processes" in self._engines else PROCESS_START_SECONDS

    def _engine(self, name: str) -> Backend:
        with self._lock:
            check_open(self._closed)
            engine = self._engines.get(name)
            if engine is None:
                engine = self._engines[name] = get_backend(name)()
                workers = MAX_WAITING_CALLS if name == "threads" else self._options.workers
                engine.start(dataclasses.replace(self._options, workers=workers))
            return engine


# ---- measurements ------------------------------------------------------------------------


class _Profile:
    """What is known about one function: its measured calls and the current decision."""

    def __init__(self, fn: Any, workers: int, startup: Callable[[], float]) -> None:
        self.name = function_name(fn)
        self.workers = workers
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
        self._lock = threading.Lock()
        self._decided = threading.Event()
        self._probing = False
        self._probe_started = threading.Event()
        # the probe's thread (ident, native id) and its CPU, CPU-wait and wall clocks at start
        self._probe_clock: tuple[int, int, float, float, float] | None = None
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

    def watch_probe(self) -> Decision:
        """Wait until the probe finished or ran ``PROBE_SECONDS``; decide from what it did."""
        self._probe_started.wait(_PROBE_START_SECONDS)
        self._decided.wait(PROBE_SECONDS)
        with self._lock:
            if self.decision is None:
                self._set(self._classify_running_probe())
            assert self.decision is not None
            return self.decision

    def wait_for_decision(self) -> Decision:
        """The decision, once the probe that another caller started has made it."""
        if not self._decided.wait(_PROBE_START_SECONDS + PROBE_SECONDS):
            with self._lock:
                if self.decision is None:  # the probe never started: assume waiting work
                    self._set(self._classify(PROBE_SECONDS, 0.0))
        assert self.decision is not None
        return self.decision

    def _classify_running_probe(self) -> Decision:
        clock = self._probe_clock
        if clock is None:
            return self._classify(PROBE_SECONDS, 0.0)
        ident, native_id, cpu0, delay0, wall0 = clock
        wall = time.perf_counter() - wall0
        delay = run_delay(native_id) - delay0
        try:
            cpu = time.clock_gettime(time.pthread_getcpuclockid(ident)) - cpu0
        except (AttributeError, OSError):  # no per-thread CPU clock here: assume it computes
            cpu = wall
        fraction = cpu_fraction(cpu, wall, delay)
        wall = max(wall, PROBE_SECONDS)  # the probe has run at least this long, and goes on
        return self._classify(wall, fraction, seen=wall)

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

    def probe_began(self, cpu0: float, delay0: float, wall0: float) -> None:
        self._probe_clock = (threading.get_ident(), threading.get_native_id(), cpu0, delay0,
                             wall0)
        self._probe_started.set()

    def record(self, calls: int, seconds: float, cpu: float | None, delay: float = 0.0
               ) -> None:
        """``calls`` calls took ``seconds``, ``cpu`` of them on the CPU (None: not measured)
        and ``delay`` waiting for a CPU."""
        with self._lock:
            self.calls += calls
            self.seconds += seconds
            self._recent.add(calls, seconds, cpu, delay)
            if self.calls >= self._next_review or self.decision is None:
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
        fraction = 1.0 if self.cpu_fraction is None else self.cpu_fraction
        self._set(self._classify(self.per_call, fraction, seen=self.seconds))

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
                            startup=self._startup(), workers=self.workers)
        if decision.backend != "processes" or self._unpicklable is None:
            return decision
        return Decision("threads", self.workers, f"{decision.reason}; but its tasks cannot be "
                        f"pickled for worker processes ({self._unpicklable}), so threads run "
                        "them, one at a time under the GIL")

    def explain(self) -> dict[str, Any]:
        """The decision and the numbers behind it, for statistics."""
        with self._lock:
            decision = self.decision
            return {"function": self.name,
                    "backend": decision.backend if decision else None,
                    "why": decision.reason if decision else "being measured",
                    "calls_measured": self.calls,
                    "seconds_per_call": self.per_call, "cpu_fraction": self.cpu_fraction,
                    "history": list(self.history)}


class _Sums:
    """Calls and their seconds; CPU seconds against runnable seconds, where measured."""

    __slots__ = ("calls", "cpu", "cpu_wall", "seconds")

    def __init__(self) -> None:
        self.calls, self.seconds, self.cpu, self.cpu_wall = 0, 0.0, 0.0, 0.0

    def add(self, calls: int, seconds: float, cpu: float | None, delay: float) -> None:
        self.calls += calls
        self.seconds += seconds
        if cpu is not None:
            self.cpu += cpu
            self.cpu_wall += seconds - delay  # the time it could have run


def _measured(task: Task, profile: _Profile, *, probe: bool = False, precise: bool) -> Task:
    """``task`` as a call that measures its own wall and CPU time into ``profile``.

    Every task measures its wall time; a ``precise`` one also its CPU time and how long its
    thread waited for a CPU.
    """
    inner = dataclasses.replace(task, fn=unpickled(task.fn))
    return Task(_Measure(inner, profile, probe, precise))


class _Measure:
    """Runs a task and records how long it took and how much of that was CPU time."""

    def __init__(self, inner: Task, profile: _Profile, probe: bool, precise: bool) -> None:
        self.inner, self.profile, self.probe, self.precise = inner, profile, probe, precise
        self.__qualname__ = profile.name

    def __call__(self) -> Any:
        if not self.precise:
            wall0 = time.perf_counter()
            try:
                return run_task(self.inner)
            finally:
                self.profile.record(self.inner.size, time.perf_counter() - wall0, None)
        delay0, cpu0, wall0 = run_delay(), time.thread_time(), time.perf_counter()
        if self.probe:
            self.profile.probe_began(cpu0, delay0, wall0)
        try:
            return run_task(self.inner)
        finally:
            wall, cpu = time.perf_counter() - wall0, time.thread_time() - cpu0
            self.profile.record(self.inner.size, wall, cpu, run_delay() - delay0)


backend_class = AutoBackend
