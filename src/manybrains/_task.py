"""What a backend runs: one call, or one chunk of calls of the same function.

Every backend executes tasks with these functions, so a chunk behaves the same in a worker
process, a thread or the caller: items run in order, and the first item that raises stops the
chunk, keeping the results before it.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any


@dataclass(slots=True)
class Task:
    """``fn(*args, **kwargs)``, or ``fn`` applied to each of ``items`` when they are given."""

    fn: Callable[..., Any]
    args: tuple[Any, ...] = ()
    kwargs: dict[str, Any] = field(default_factory=dict)
    items: Sequence[Any] | None = None
    star: bool = False  # each item is an argument tuple: fn(*item)

    @property
    def size(self) -> int:
        """How many calls of ``fn`` this task makes."""
        return 1 if self.items is None else len(self.items)

    def parts(self) -> list[tuple[str, object]]:
        """The named pieces of the task, to say which one failed to pickle."""
        named: list[tuple[str, object]] = [(f"the function {_name(self.fn)}", self.fn)]
        named += [(f"positional argument {i}", a) for i, a in enumerate(self.args)]
        named += [(f"keyword argument {k!r}", v) for k, v in self.kwargs.items()]
        if self.items is not None:
            named += [(f"item {i} of the input", v) for i, v in enumerate(self.items)]
        return named


@dataclass(slots=True)
class ChunkOutcome:
    """What a chunk produced: the results in order, then the error that stopped it, if any."""

    values: list[Any]
    error: BaseException | None = None
    elapsed: float = 0.0  # seconds spent running the calls, to size later chunks


def run_task(task: Task) -> Any:
    """Run ``task`` here; a single call raises, a chunk returns a :class:`ChunkOutcome`."""
    if task.items is None:
        return task.fn(*task.args, **task.kwargs)
    return run_chunk(task.fn, task.items, task.star)


def run_chunk(fn: Callable[..., Any], items: Sequence[Any], star: bool) -> ChunkOutcome:
    """Apply ``fn`` to each item in order, stopping at the first item that raises."""
    start = time.perf_counter()
    values: list[Any] = []
    # list.extend keeps what was appended before an exception, so the C-speed map() path
    # also tells which item failed (the one at len(values)) without a Python-level loop.
    try:
        values.extend(itertools.starmap(fn, items) if star else map(fn, items))
    except BaseException as exc:  # noqa: BLE001 - the error belongs to that item
        return ChunkOutcome(values, exc, time.perf_counter() - start)
    return ChunkOutcome(values, None, time.perf_counter() - start)


def _name(fn: object) -> str:
    return getattr(fn, "__qualname__", None) or type(fn).__qualname__
