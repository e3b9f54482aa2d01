"""Run times of finished tasks, kept cheaply enough to record every one.

An engine thread records; :mod:`manybrains.insights` reads and reports. It lives low in the
package so that engines depend on it, not on the report module.
"""

from __future__ import annotations

import heapq
import itertools
import random
import reprlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

_SAMPLE = 10_000  # task times kept for percentiles (a uniform sample past that)
_SLOWEST = 5

_short = reprlib.Repr()
_short.maxstring = _short.maxother = 40
_short.maxlist = _short.maxtuple = _short.maxdict = _short.maxset = 4
_short.maxlevel = 2


class Described(Protocol):
    """What :func:`describe` reads of a task (a :class:`~manybrains._task.Task`, or an
    engine's record that carries the task's fields instead of the task)."""

    @property
    def args(self) -> tuple[Any, ...]: ...
    @property
    def kwargs(self) -> Mapping[str, Any] | None: ...
    @property
    def items(self) -> Sequence[Any] | None: ...


@dataclass(frozen=True)
class SlowTask:
    """One of the slowest tasks: how long it ran and what it was called with."""

    seconds: float
    label: str  # "task 17 (resize, 8 calls)"
    arguments: str  # a short repr of its arguments (or of its chunk's items)


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

    def record(self, seconds: float, label: str | Callable[[], str],
               task: Described | None) -> None:
        """A task ran for ``seconds``; ``task`` is described, and ``label`` made (when a
        callable), only if it is among the slowest."""
        self.count += 1
        self.total_s += seconds
        self.max_s = max(self.max_s, seconds)
        self._keep_sample(seconds)
        if len(self._slowest) < _SLOWEST or seconds > self._slowest[0][0]:
            slow = SlowTask(seconds, label if isinstance(label, str) else label(),
                            describe(task))
            entry = (seconds, next(self._order), slow)
            if len(self._slowest) < _SLOWEST:
                heapq.heappush(self._slowest, entry)
            else:
                heapq.heapreplace(self._slowest, entry)

    def _keep_sample(self, seconds: float) -> None:
        if len(self._sample) < self._sample_size:
            self._sample.append(seconds)
            return
        # reservoir sampling, uniform over all (random() rather than randrange(): this runs
        # for every task, and randrange is Python code, twice as slow)
        slot = int(self._random.random() * self.count)
        if slot < self._sample_size:
            self._sample[slot] = seconds

    def sample(self) -> list[float]:
        return sorted(self._sample)

    def slowest(self) -> list[SlowTask]:
        return [slow for _, _, slow in sorted(self._slowest, reverse=True)]


def describe(task: Described | None) -> str:
    """A short repr of a task's arguments: ``(3, 'a.png', size=2)`` or its chunk's items."""
    if task is None:
        return "?"
    if task.items is not None:
        return _short.repr(list(task.items[:5]) if isinstance(task.items, Sequence)
                           else task.items)
    parts = [_short.repr(a) for a in task.args]
    parts += [f"{k}={_short.repr(v)}" for k, v in (task.kwargs or {}).items()]
    return f"({', '.join(parts)})"
