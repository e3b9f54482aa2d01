"""The ``"auto"`` backend: measure each function, then run it where it fits.

The default of ``manybrains.map``/``imap``/``submit``. It owns the other backends (started on
first use) and routes every task by its function, following
:func:`.policy.classify` (the rule :func:`manybrains.advise` applies too)::

    submit(task)
      coroutine function ---------------------------------------------> asyncio
      function seen before -> its decision ---------------------------> threads | processes
                                                                        | inline
      new function -> probe: run this task on a thread and watch it (its CPU clock read
           from outside with time.pthread_getcpuclockid, the process's CPU clock, the
           system call it waits in, how often the watcher gets the GIL):
           finished within 5 ms, or plainly waiting at 5 ms, or else at its end
           (at most 50 ms; a second while it imports modules, then the next call
           probes again) -> decision; this task stays on its thread, the next follow
      waiting work (threads) -> its gate: at most its concurrency limit at once

Every later call run on a thread or in the caller is measured again (its thread's CPU time
against wall time; the whole process's CPU time too where the call runs alone, which tells
native code running its own threads, such as BLAS, from plain Python), calls in worker
processes by their run time, so the choice can change as the measurements settle;
``statistics().choices`` says what was chosen and why. The decision sets ``capacity``,
which widens the pool's window: hundreds of waiting calls queued at their gate, two chunks per
process for computation, one chunk at a time inline.

Waiting calls do not all start at once: each function's gate (:mod:`.gate`) admits as many as
its limit (:mod:`.limit`), which grows while calls succeed and latency holds and shrinks when
latency climbs or calls fail with overload errors (those calls run again). The pool's
``concurrency`` caps it (256 by default).

A task with a timeout never runs inline: a call in the caller cannot be interrupted.
"""

from __future__ import annotations

import dataclasses
import threading
import weakref
from collections import OrderedDict
from collections.abc import Mapping
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ..._errors import SerializationError, check_open
from ..._future import TaskFuture
from ..._task import AsyncCall, Task, unpickled, unwrap
from .. import get_backend, options_for
from .._base import COUNTER_NAMES, Backend, PoolOptions, Statistics
from ..processes.context import hold_template
from .gate import Call, Gate, cancel_call
from .policy import MAX_WAITING_CALLS, PROCESS_START_SECONDS, Decision
from .profile import PROBE_SECONDS, Profile, measured

if TYPE_CHECKING:
    from ...options import Auto

__all__ = ["PROBE_SECONDS", "AutoBackend", "backend_class"]

_REMEMBERED = 256  # functions whose measurements are kept

# ---- the backend ------------------------------------------------------------------------


@dataclass(frozen=True)
class AutoStatistics(Statistics):
    """``"auto"``'s snapshot: the totals of its engines, and what it chose for each function."""

    # per function, where it runs and why (plain data: "function", "backend", "why", the
    # measurements behind it, "history", and "concurrency" for waiting calls)
    choices: tuple[Mapping[str, Any], ...] = ()
    engines: Mapping[str, Statistics] = field(default_factory=dict)  # per engine


class AutoBackend(Backend):
    """Routes each function to the backend its measured calls call for."""

    name = "auto"
    default_concurrency = MAX_WAITING_CALLS  # waiting calls of one function in flight at most
    pickles_tasks = True  # the pool pickles once; local backends get the function back

    def __init__(self, options: PoolOptions[Auto]) -> None:
        self._options = options
        self.capacity = 1  # until a function is measured: probe one chunk at a time
        self._lock = threading.Lock()
        self._engines: dict[str, Backend] = {}
        self._profiles: OrderedDict[object, Profile] = OrderedDict()
        self._gates: weakref.WeakSet[Gate] = weakref.WeakSet()  # busy ones outlive profiles
        self._max_waiting = options.concurrency or MAX_WAITING_CALLS
        self._closed = False
        # Before any thread of ours starts: a process pool started later (by this backend,
        # or by the user after a first mb.map) is then forked from a template, fast and safe.
        self._template = hold_template(options.own.processes.start_method)

    def submit(self, task: Task, *, timeout: float | None = None, retries: int = 0
               ) -> Future[Any]:
        profile = self._profile(task)
        if profile.decision is None and profile.start_probe():
            return self._probe(profile, task, timeout, retries)
        decision = profile.wait_for_decision()
        self.capacity = decision.width
        if profile.take_confirmation():
            return self._confirm(profile, task, timeout, retries)
        return self._route(profile, decision, task, timeout, retries)

    def cancel(self, future: Future[Any]) -> bool:
        # The future is its engine's own (or its gate's): the one whose handle it carries
        # cancels it, the others answer False.
        with self._lock:
            engines = list(self._engines.values())
            threads = self._engines.get("threads")
        if isinstance(future, TaskFuture) and isinstance(future.handle, Call):
            return cancel_call(future, threads)
        return any(engine.cancel(future) for engine in engines)

    def shutdown(self, *, wait: bool = True, cancel_futures: bool = False, kill: bool = False
                 ) -> None:
        with self._lock:
            self._closed = True
            engines = dict(self._engines)
            gates = list(self._gates)
        if cancel_futures or kill:
            for gate in gates:
                gate.cancel_queued()
        threads = engines.pop("threads", None)
        for engine in engines.values():
            engine.shutdown(wait=wait, cancel_futures=cancel_futures, kill=kill)
        template, self._template = self._template, None
        if template is not None:
            template.release()
        if threads is None:
            return
        if kill:  # running calls are abandoned, queued ones were cancelled above
            threads.shutdown(wait=wait, cancel_futures=cancel_futures, kill=True)
            return
        if wait:
            for gate in gates:
                gate.drain()  # its queued calls still run: they were accepted before
            threads.shutdown(wait=True, cancel_futures=cancel_futures)
            return
        _after_all(gates, lambda: threads.shutdown(wait=False, cancel_futures=cancel_futures))

    def statistics(self) -> AutoStatistics:
        with self._lock:
            engines = dict(self._engines)
            profiles = list(self._profiles.values())
        per_engine = {name: engine.statistics() for name, engine in engines.items()}
        totals = {key: sum(getattr(stats, key) for stats in per_engine.values())
                  for key in (*COUNTER_NAMES, "in_flight", "queued")}
        workers = tuple(dataclasses.replace(row, backend=name)
                        for name, stats in per_engine.items() for row in stats.workers)
        return AutoStatistics(self.name, **totals, workers=workers,
                          choices=tuple(p.explain() for p in profiles), engines=per_engine)

    # ---- routing --------------------------------------------------------------------------

    def _profile(self, task: Task) -> Profile:
        fn = unwrap(task.fn)
        key = getattr(fn, "__code__", fn)  # a lambda re-created in a loop is the same work
        with self._lock:
            check_open(self._closed)
            profile = self._profiles.get(key)
            if profile is None:
                profile = self._profiles[key] = Profile(fn, self._options.workers,
                                                        self._process_startup,
                                                        self._max_waiting)
                if len(self._profiles) > _REMEMBERED:
                    self._profiles.popitem(last=False)
            if isinstance(unpickled(task.fn), AsyncCall):
                profile.decide_coroutine()
            return profile

    def _route(self, profile: Profile, decision: Decision, task: Task, timeout: float | None,
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
        elif name == "threads" and decision.waiting:
            return self._gate(profile).submit(task, timeout, retries)
        else:
            future = engine.submit(measured(task, profile, precise=profile.sample(),
                                            alone=name == "inline"),
                                   timeout=timeout, retries=retries)
        return future

    def _gate(self, profile: Profile) -> Gate:
        if profile.gate is not None:  # every waiting call comes here: no locks once made
            return profile.gate
        threads = self._engine("threads")

        def run(task: Task, timeout: float | None, retries: int) -> Future[Any]:
            # Queued calls keep running after shutdown(wait=False): the engine outlives them.
            future = threads.submit(measured(task, profile, precise=profile.sample()),
                                    timeout=timeout, retries=retries)
            return future

        gate = profile.gate_for(run)
        with self._lock:
            self._gates.add(gate)
        return gate

    def _probe(self, profile: Profile, task: Task, timeout: float | None, retries: int
               ) -> Future[Any]:
        engine = self._engine("threads")
        try:
            future = engine.submit(measured(task, profile, probe=True, precise=True),
                                   timeout=timeout, retries=retries)
        except BaseException:
            profile.abandon_probe()
            raise
        decision = profile.watch_probe()
        if decision is not None:  # None: the next call probes again
            self.capacity = decision.width
        return future

    def _confirm(self, profile: Profile, task: Task, timeout: float | None, retries: int
                 ) -> Future[Any]:
        """Run a call on a thread, measured like the probe, whose numbers replace the
        probe's: the probe imported modules, so its time was mostly theirs."""
        engine = self._engine("threads")
        future = engine.submit(measured(task, profile, precise=True, confirms=True),
                               timeout=timeout, retries=retries)
        return future

    def _process_startup(self) -> float:
        return 0.0 if "processes" in self._engines else PROCESS_START_SECONDS

    def _engine(self, name: str) -> Backend:
        with self._lock:
            check_open(self._closed)
            engine = self._engines.get(name)
            if engine is None:
                workers = self._max_waiting if name == "threads" else self._options.workers
                own = self._options.own.processes if name == "processes" else options_for(name)
                engine = get_backend(name)(self._options.for_backend(own, workers))
                self._engines[name] = engine
            return engine


def _after_all(gates: list[Gate], then: Any) -> None:
    """Call ``then()`` once every gate in ``gates`` is idle."""
    remaining = [len(gates)]
    lock = threading.Lock()

    def one_idle() -> None:
        with lock:
            remaining[0] -= 1
            last = remaining[0] == 0
        if last:
            then()

    if not gates:
        then()
    for gate in gates:
        gate.when_idle(one_idle)


backend_class = AutoBackend
