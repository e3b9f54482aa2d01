"""Which worker takes the next task, and which running task is past its deadline.

Decisions over the supervisor's worker slots, kept apart from the supervisor's loop so that
the policy reads in one place; only the supervisor thread calls them.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator

from .state import Record, WorkerSlot

# Tasks are queued behind a running one only while they are small (a queued task cannot be
# taken back and given to another worker, so only cheap ones are committed early) and the
# worker's tasks are short: those queued add up to no more than PREFETCH_MAX_SECONDS of its
# recent pace, so none waits long while another worker idles. Tiny tasks then travel many to a
# write, and the worker never waits for the next one. (The pipe never blocks the supervisor:
# what does not fit waits in the worker's channel.)
PREFETCH_BYTES = 32 * 1024
PREFETCH_MAX_SECONDS = 0.002
PREFETCH_MAX_TASKS = 256


def pick_worker(workers: Iterable[WorkerSlot], record: Record, limit: int | None = None
                ) -> WorkerSlot | None:
    """An idle ready worker; else one that can take the task without blocking the send.

    ``limit``: the calls a worker may run in its life (``max_tasks_per_worker``); a worker
    takes the task only if its calls fit in what it has left.
    """
    if limit is not None:  # once per call: without a limit the loop is what it always was
        workers = [w for w in workers if fits(w, record, limit)]
    size = len(record.frame)
    fallback = None
    for w in workers:
        if w.retiring or w.fate is not None or w.conn.closed:
            continue
        if not w.inflight and w.ready:
            return w
        if (_can_queue(w, size)
                and (fallback is None or len(w.inflight) < len(fallback.inflight))):
            fallback = w  # the shortest queue: a burst is spread over the workers
    return fallback


def fits(w: WorkerSlot, record: Record, limit: int) -> bool:
    """``w`` can run ``record`` and stay within ``limit`` calls. A fresh worker takes any
    task, even a chunk larger than the limit (the chunk sizer never makes one): else no
    worker ever could, and the pool would replace workers forever."""
    return w.calls == 0 or w.calls + record.size <= limit


def outgrown(workers: Iterable[WorkerSlot], record: Record, limit: int
             ) -> Iterator[WorkerSlot]:
    """The workers that can take no more tasks: ``record``, next in the queue, would carry
    them past ``limit``. Left as they are, they would hold their places in the pool while
    the queue waits for a fresh worker that cannot start."""
    for w in workers:
        if not w.retiring and w.fate is None and not fits(w, record, limit):
            yield w


def _can_queue(w: WorkerSlot, size: int) -> bool:
    # A starting worker reads its pipe only after its initializer; a busy one only after its
    # tasks, which must be short, or the queued task would wait while others idle.
    if w.inflight_bytes + size > PREFETCH_BYTES + (len(w.inflight[0].frame) if w.inflight
                                                   else 0):
        return False
    if not w.ready:
        return not w.inflight
    queued = len(w.inflight)  # with this one: the running task's successors
    if queued > PREFETCH_MAX_TASKS or w.last_elapsed * queued > PREFETCH_MAX_SECONDS:
        return False
    # The last task was short, but the running one may not be: one running for longer than
    # the whole budget (a task that waits on something) takes nothing more behind it.
    started = w.inflight[0].started if w.inflight else None
    return started is None or time.monotonic() - started <= PREFETCH_MAX_SECONDS


def overdue(workers: Iterable[WorkerSlot], now: float) -> Iterator[tuple[WorkerSlot, Record]]:
    """The workers whose running task has passed its timeout, with that task."""
    for w, head, deadline in _deadlines(workers):
        if now >= deadline:
            yield w, head


def next_deadline(workers: Iterable[WorkerSlot], now: float) -> float | None:
    """Seconds until the first running task's timeout passes; None when none has one."""
    deadlines = [deadline for _, _, deadline in _deadlines(workers)]
    return max(0.0, min(deadlines) - now) if deadlines else None


def _deadlines(workers: Iterable[WorkerSlot]) -> Iterator[tuple[WorkerSlot, Record, float]]:
    # Only a task known to have started has a clock (the worker may still be starting), and
    # a worker already being killed has its fate decided.
    for w in workers:
        head = w.inflight[0] if w.inflight else None
        if head is None or w.fate is not None or head.timeout is None or head.started is None:
            continue
        yield w, head, head.started + head.timeout
