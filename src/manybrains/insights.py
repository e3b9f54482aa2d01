"""Where a pool's time went: per worker, per task, and the slowest tasks with their arguments.

``pool.insights()`` returns an :class:`Insights`; ``print(pool.insights())`` draws it as a
table. The process engine measures every task (its worker reports run time and the time it
spent unpickling the task and pickling the result in each reply); other backends report
their per-worker counters only.

A "task" is one message to a worker: a single ``submit``, or one chunk of a ``map``.
"""

from __future__ import annotations

import heapq
import itertools
import random
import reprlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ._task import Task
    from .backends._base import Backend

__all__ = ("Insights", "SlowTask", "TaskTimings", "WorkerInsight", "collect")

_SAMPLE = 10_000  # task times kept for percentiles (a uniform sample past that)
_SLOWEST = 5

_short = reprlib.Repr()
_short.maxstring = _short.maxother = 40
_short.maxlist = _short.maxtuple = _short.maxdict = _short.maxset = 4
_short.maxlevel = 2


@dataclass(frozen=True)
class SlowTask:
    """One of the slowest tasks: how long it ran and what it was called with."""

    seconds: float
    label: str  # "task 17 (resize, 8 calls)"
    arguments: str  # a short repr of its arguments (or of its chunk's items)


@dataclass(frozen=True)
class WorkerInsight:
    """What one worker did."""

    name: str
    tasks: int
    busy_s: float
    idle_s: float
    serialize_s: float | None  # None where the backend does not pickle or does not measure


class TaskTimings:
    """Run times of finished tasks, recorded by an engine thread, read by anyone.

    Cheap enough for every task: a counter, a sum, a bounded sample, and a five-entry heap
    whose arguments are described only when a task gets into it.
    """

    def __init__(self, sample_size: int = _SAMPLE) -> None:
        self.count = 0
        self.total_s = 0.0
        self.max_s = 0.0
        self._sample: list[float] = []
        self._sample_size = sample_size
        self._slowest: list[tuple[float, int, SlowTask]] = []  # a min-heap
        self._order = itertools.count()
        self._random = random.Random(0)

    def record(self, seconds: float, label: str, task: Task | None) -> None:
        """A task ran for ``seconds``; ``task`` is described if it is among the slowest."""
        self.count += 1
        self.total_s += seconds
        self.max_s = max(self.max_s, seconds)
        self._keep_sample(seconds)
        if len(self._slowest) < _SLOWEST or seconds > self._slowest[0][0]:
            slow = SlowTask(seconds, label, describe(task))
            entry = (seconds, next(self._order), slow)
            if len(self._slowest) < _SLOWEST:
                heapq.heappush(self._slowest, entry)
            else:
                heapq.heapreplace(self._slowest, entry)

    def _keep_sample(self, seconds: float) -> None:
        if len(self._sample) < self._sample_size:
            self._sample.append(seconds)
            return
        slot = self._random.randrange(self.count)  # reservoir sampling: uniform over all
        if slot < self._sample_size:
            self._sample[slot] = seconds

    def sample(self) -> list[float]:
        return sorted(self._sample)

    def slowest(self) -> list[SlowTask]:
        return [slow for _, _, slow in sorted(self._slowest, reverse=True)]


def describe(task: Task | None) -> str:
    """A short repr of a task's arguments: ``(3, 'a.png', size=2)`` or its chunk's items."""
    if task is None:
        return "?"
    if task.items is not None:
        return _short.repr(list(task.items[:5]) if isinstance(task.items, Sequence)
                           else task.items)
    parts = [_short.repr(a) for a in task.args]
    parts += [f"{k}={_short.repr(v)}" for k, v in task.kwargs.items()]
    return f"({', '.join(parts)})"


@dataclass(frozen=True)
class Insights:
    """Per-worker counters and task-time statistics of one pool; ``str()`` is a table."""

    backend: str
    workers: list[WorkerInsight]
    tasks: int  # tasks with a measured run time (0 where the backend does not measure)
    mean_s: float | None = None
    p50_s: float | None = None
    p95_s: float | None = None
    max_s: float | None = None
    slowest: list[SlowTask] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        """Plain data, for JSON."""
        from dataclasses import asdict

        return asdict(self)

    def table(self) -> str:
        """The insights as a text table."""
        lines = [f"manybrains insights: {self.backend}, {len(self.workers)} workers", ""]
        lines += _worker_rows(self.workers)
        lines.append("")
        lines += self._task_lines()
        return "\n".join(lines)

    __str__ = table

    def _task_lines(self) -> list[str]:
        if not self.tasks or self.mean_s is None:
            return ["task times: not measured on this backend"]
        stats = (f"mean {_ms(self.mean_s)}  p50 {_ms(self.p50_s)}  p95 {_ms(self.p95_s)}  "
                 f"max {_ms(self.max_s)}")
        lines = [f"task times ({self.tasks:,} tasks): {stats}", "slowest tasks:"]
        lines += [f"  {_ms(s.seconds):>10}  {s.label}  args {s.arguments}"
                  for s in self.slowest]
        return lines


def _worker_rows(workers: list[WorkerInsight]) -> list[str]:
    header = f"{'worker':<28} {'tasks':>8} {'busy s':>9} {'idle s':>9} {'pickling s':>11}"
    rows = [header, "-" * len(header)]
    for w in workers:
        pickling = "-" if w.serialize_s is None else f"{w.serialize_s:.3f}"
        rows.append(f"{w.name[:28]:<28} {w.tasks:>8,} {w.busy_s:>9.3f} {w.idle_s:>9.3f} "
                    f"{pickling:>11}")
    return rows


def _ms(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    return f"{seconds * 1000:.3g} ms" if seconds < 1 else f"{seconds:.3g} s"


def collect(backend: Backend) -> Insights:
    """The insights of ``backend`` now: its worker table plus task timings where measured."""
    stats = backend.statistics()
    workers = [_worker(row, i) for i, row in enumerate(stats.get("workers", []), 1)]
    timings: TaskTimings | None = getattr(backend, "task_timings", lambda: None)()
    if timings is None or not timings.count:
        return Insights(backend.name, workers, 0)
    sample = timings.sample()
    return Insights(backend.name, workers, timings.count, mean_s=timings.total_s / timings.count,
                    p50_s=_percentile(sample, 0.50), p95_s=_percentile(sample, 0.95),
                    max_s=timings.max_s, slowest=timings.slowest())


def _worker(row: dict[str, Any], number: int) -> WorkerInsight:
    if "pid" in row:
        name = f"worker {number} (pid {row['pid']})"
    else:
        name = str(row.get("name") or row.get("address") or f"worker {number}")
    serialize = row.get("serialize_s")
    return WorkerInsight(name, int(row.get("tasks", 0)), float(row.get("busy_s", 0.0)),
                         float(row.get("idle_s", 0.0)),
                         None if serialize is None else float(serialize))


def _percentile(ordered: list[float], q: float) -> float:
    """The q-quantile of sorted values, by the nearest-rank method."""
    return ordered[min(len(ordered) - 1, max(0, int(q * len(ordered) + 0.5) - 1))]
