"""Where a pool's time went: per worker, per task, and the slowest tasks with their arguments.

``pool.insights()`` returns an :class:`Insights`; ``print(pool.insights())`` draws it as a
table. The process engine measures every task (its worker reports run time and the time it
spent unpickling the task and pickling the result in each reply); other backends report
their per-worker counters only.

A "task" is one message to a worker: a single ``submit``, or one chunk of a ``map``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ._timings import SlowTask

if TYPE_CHECKING:
    from .backends._base import Backend, WorkerStats

__all__ = ("Insights", "SlowTask", "WorkerInsight", "collect")


@dataclass(frozen=True)
class WorkerInsight:
    """What one worker did."""

    name: str
    tasks: int
    busy_s: float
    idle_s: float
    serialize_s: float | None  # None where the backend does not pickle or does not measure


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
    workers = [_worker(row, i) for i, row in enumerate(backend.statistics().workers, 1)]
    timings = backend.task_timings()
    if timings is None or not timings.count:
        return Insights(backend.name, workers, 0)
    sample = timings.sample()
    return Insights(backend.name, workers, timings.count, mean_s=timings.total_s / timings.count,
                    p50_s=_percentile(sample, 0.50), p95_s=_percentile(sample, 0.95),
                    max_s=timings.max_s, slowest=timings.slowest())


def _worker(row: WorkerStats, number: int) -> WorkerInsight:
    name = f"worker {number} ({row.name})" if row.pid is not None else row.name
    # Only backends that pickle tasks measure pickling; elsewhere the column says "-".
    serialize = row.serialize_s if row.pid is not None else None
    return WorkerInsight(name or f"worker {number}", row.tasks, row.busy_s, row.idle_s,
                         serialize)


def _percentile(ordered: list[float], q: float) -> float:
    """The q-quantile of sorted values, by the nearest-rank method."""
    return ordered[min(len(ordered) - 1, max(0, int(q * len(ordered) + 0.5) - 1))]
