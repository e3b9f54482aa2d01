"""Soak: SIGKILL processes at random points inside manybrains' shared primitives, many times.

Each row of the report is one primitive, hammered by real processes of the chosen start
method; one of them is SIGKILLed 0-20 ms after the previous one was replaced, wherever it
is at that moment (often inside ``acquire``, ``release``, ``put`` or ``get``), and a fresh
process takes its place:

- ``Lock``, ``Value.add``, ``Array.add``, ``SharedArray.lock``: two workers loop on the
  lock (``with lock: counter.value += 1``, ``value.add(1)``, ...). After a kill the workers
  pause and this process takes the lock: the time from the kill until it has it is the
  recovery time. Then the replacement must get it too.
- ``Semaphore(2)``: three workers loop ``with sem: ...``; after a kill this process must
  take both permits (a dead holder's permit is given back), and no third one.
- ``Queue producers``: two producers put ``(producer, seq, time)`` in a loop into a
  ``Queue(maxsize=64)`` that this process drains; a killed producer restarts after the item
  it had in flight. Recovery: until an item put after the kill arrives. Per producer, items
  must arrive in order, without duplicates, and only in-flight items may be missing.
- ``Queue consumers``: two producers feed two consumers that forward each item to a second
  queue that this process drains; consumers are killed. Recovery: until a ``get`` started
  after the kill returns. The producers must keep putting; at most one item per kill may be
  missing, none duplicated.

A primitive not usable again within 5 s of a kill (or whose replacement process cannot
use it within 5 s of starting) is *wedged*; its row stops there, except a semaphore's: a
permit that did not come back is given back by hand and the row goes on, so that the table
says how often that happens. The exit status is non-zero on any wedge, any duplicated,
corrupt or out-of-order item, more items lost than kills, or a ``/dev/shm`` entry of this
run left behind.

Usage: python benchmarks/soak_primitives.py [--kills N] [--start-method fork|spawn|forkserver]
                                            [--seed S] [--tiny]
"""

from __future__ import annotations

import argparse
import gc
import itertools
import logging
import multiprocessing
import os
import random
import signal
import statistics
import sys
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from multiprocessing.process import BaseProcess
from queue import Empty
from typing import Any

import manybrains as mb

BOUND = 5.0  # seconds: not usable again within this after a kill means wedged
START_BOUND = 60.0  # seconds a fresh process may take to start (spawn, on a busy machine)
DELAY = 0.020  # the most seconds between a replacement working and the next kill
MAXSIZE = 64
STOP, PAUSE = 0, 1  # the words of the control array the workers poll


# ---- what the workers do (module level: spawn and forkserver import them by name) --------

def quiet() -> None:
    # Each repair logs a warning; the report counts them instead (``recoveries``).
    logging.getLogger("manybrains").setLevel(logging.ERROR)


def lock_op(target: Any) -> Callable[[], None]:
    lock, counter = target

    def op() -> None:
        with lock:
            counter.value += 1
    return op


def value_op(target: Any) -> Callable[[], None]:
    return lambda: target.add(1)


def array_op(target: Any) -> Callable[[], None]:
    return lambda: target.add(0, 1)  # one element for everyone: the lock is contended


def shared_array_op(target: Any) -> Callable[[], None]:
    lock = target.lock

    def op() -> None:
        with lock:
            target[0] += 1
    return op


def semaphore_op(target: Any) -> Callable[[], None]:
    def op() -> None:
        with target:
            pass
    return op


OPS: dict[str, Callable[[Any], Callable[[], None]]] = {
    "Lock": lock_op, "Value.add": value_op, "Array.add": array_op,
    "SharedArray.lock": shared_array_op, "Semaphore(2)": semaphore_op,
}


def hammer(kind: str, target: Any, control: Any, progress: Any, ready: Any, slot: int) -> None:
    """Loop on the primitive, counting in ``progress[slot]``, until told to stop."""
    quiet()
    op = OPS[kind](target)
    done = 0
    ready[slot] = time.monotonic()
    while not control[STOP]:
        if control[PAUSE]:
            time.sleep(0.001)
            continue
        op()
        done += 1
        progress[slot] = done  # only this process writes its slot: no lock needed


def produce(queue: mb.Queue, control: Any, confirmed: Any, ready: Any, slot: int,
            first: int) -> None:
    """Put ``(slot, seq, time)`` for seq = first, first + 1, ... until told to stop."""
    quiet()
    seq = first
    ready[slot] = time.monotonic()
    while not control[STOP]:
        queue.put((slot, seq, time.monotonic()))
        confirmed[slot] = seq  # the last item put for sure; the next one is in flight
        seq += 1


def forward(queue: mb.Queue, out: mb.Queue, ready: Any, slot: int, incarnation: int) -> None:
    """Move items from ``queue`` to ``out``, one at a time, until ``queue`` is closed."""
    quiet()
    ready[slot] = time.monotonic()
    while True:
        try:
            item = queue.get()
        except mb.QueueClosed:
            return
        out.put((slot, incarnation, time.monotonic(), item))


# ---- the processes ----------------------------------------------------------------------

STARTED: set[int] = set()  # every pid this run started, for the /dev/shm check


class Crew:
    """Processes running ``target`` in numbered slots; a killed one is replaced in its slot."""

    def __init__(self, ctx: Any, target: Callable[..., None], args: tuple[Any, ...],
                 size: int) -> None:
        self.ctx, self.target, self.args = ctx, target, args
        self.ready = mb.Array("d", size)  # when each slot's process began its loop
        self.processes: list[BaseProcess | None] = [None] * size

    def start(self, slot: int, *extra: Any) -> None:
        self.ready[slot] = 0.0
        process = self.ctx.Process(target=self.target, daemon=True,
                                   args=(*self.args, self.ready, slot, *extra))
        process.start()
        STARTED.add(process.pid)
        self.processes[slot] = process

    def kill(self, slot: int) -> float:
        """SIGKILL the process in ``slot``; when, by the monotonic clock."""
        process = self.processes[slot]
        assert process is not None and process.pid is not None
        os.kill(process.pid, signal.SIGKILL)
        killed = time.monotonic()
        process.join()
        return killed

    def alive(self) -> bool:
        return any(p is not None and p.is_alive() for p in self.processes)

    def end(self, within: float = BOUND) -> None:
        """Wait for the processes to exit (they were told to); SIGKILL what lingers."""
        deadline = time.monotonic() + within
        for process in self.processes:
            if process is not None:
                process.join(max(0.0, deadline - time.monotonic()))
                if process.is_alive():
                    process.kill()
                    process.join()


def wait_until(condition: Callable[[], bool], within: float,
               meanwhile: Callable[[], None] = lambda: time.sleep(0.0005)) -> bool:
    deadline = time.monotonic() + within
    while not condition():
        if time.monotonic() >= deadline:
            return False
        meanwhile()
    return True


# ---- the report -------------------------------------------------------------------------

@dataclass
class Row:
    name: str
    kills: int = 0
    repairs: int | None = None
    wedges: int = 0
    lost: int | None = None
    recoveries: list[float] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    def wedged(self, why: str) -> None:
        self.wedges += 1
        self.problems.append(f"wedged: {why}")

    @property
    def failed(self) -> bool:
        too_many_lost = self.lost is not None and self.lost > self.kills
        return bool(self.wedges or too_many_lost or self.problems)


def seconds(values: list[float], pick: Callable[[list[float]], float]) -> str:
    return f"{pick(values):.3f} s" if values else "-"


def table(rows: list[Row]) -> str:
    head = (f"{'primitive':<18} {'kills':>6} {'repairs':>8} {'wedges':>7} {'lost':>6} "
            f"{'median recovery':>16} {'max recovery':>13}")
    lines = [head, "-" * len(head)]
    for row in rows:
        lines.append(
            f"{row.name:<18} {row.kills:>6} "
            f"{'-' if row.repairs is None else row.repairs:>8} {row.wedges:>7} "
            f"{'-' if row.lost is None else row.lost:>6} "
            f"{seconds(row.recoveries, statistics.median):>16} "
            f"{seconds(row.recoveries, max):>13}")
    return "\n".join(lines)


# ---- rows of hammered locks and semaphores ------------------------------------------------

@dataclass(frozen=True)
class Hammered:
    name: str
    workers: int
    make: Callable[[], Any]
    lock_of: Callable[[Any], Any]  # what this process takes to see it is usable again
    permits: int = 1  # a semaphore's: after a kill all of them must come, and no more


HAMMERED = [
    Hammered("Lock", 2, lambda: (mb.Lock(), mb.Value("q", 0)), lambda t: t[0]),
    Hammered("Value.add", 2, lambda: mb.Value("q", 0), lambda t: t.lock),
    Hammered("Array.add", 2, lambda: mb.Array("q", 4), lambda t: t.lock),
    Hammered("SharedArray.lock", 2, lambda: mb.SharedArray.zeros(4, "int64"),
             lambda t: t.lock),
    Hammered("Semaphore(2)", 3, lambda: mb.Semaphore(2), lambda t: t, permits=2),
]


def take_all(lock: Any, permits: int, since: float) -> tuple[float | None, int]:
    """Take ``permits`` of ``lock``, then give them back: the seconds since ``since`` it
    took (None if they did not all come within BOUND), and how many came."""
    taken = 0
    try:
        deadline = time.monotonic() + BOUND
        while taken < permits:
            if not lock.acquire(timeout=max(0.0, deadline - time.monotonic())):
                return None, taken
            taken += 1
        return time.monotonic() - since, taken
    finally:
        for _ in range(taken):
            lock.release()


def extra_permit(semaphore: Any, permits: int) -> bool:
    """Whether ``semaphore`` has more than ``permits`` free while nobody else holds one
    (a dead holder's permit given back twice); takes the extra ones away again."""
    held = [semaphore.acquire(timeout=BOUND) for _ in range(permits)]
    extra = 0
    while semaphore.acquire(False):
        extra += 1
    for _ in range(sum(held)):
        semaphore.release()
    return extra > 0


def works(crew: Crew, progress: Any, slot: int) -> bool:
    """The process in ``slot`` started and got through the primitive within BOUND."""
    return (wait_until(lambda: crew.ready[slot] > 0, START_BOUND)
            and wait_until(lambda: progress[slot] > 0, BOUND))


def soak_hammered(spec: Hammered, ctx: Any, kills: int) -> Row:
    row = Row(spec.name)
    target = spec.make()
    control, progress = mb.Array("q", 2), mb.Array("q", spec.workers)
    crew = Crew(ctx, hammer, (spec.name, target, control, progress), spec.workers)
    lock = spec.lock_of(target)
    try:
        for slot in range(spec.workers):
            crew.start(slot)
        if not all(works(crew, progress, slot) for slot in range(spec.workers)):
            row.wedged("the first workers never got through")
            return row
        while row.kills < kills:
            time.sleep(random.uniform(0, DELAY))
            slot = random.randrange(spec.workers)
            killed = crew.kill(slot)
            control[PAUSE] = 1  # the others step aside: this process takes the lock now
            row.kills += 1
            took, taken = take_all(lock, spec.permits, killed)
            if took is None and spec.permits == 1:
                row.wedged(f"this process could not take the lock within {BOUND:g} s")
                break
            if took is None:  # lost for good: given back by hand, to measure how often
                row.wedged(f"{spec.permits - taken} permit(s) did not come back within "
                           f"{BOUND:g} s (given back by hand to go on)")
                for _ in range(spec.permits - taken):
                    lock.release()
            else:
                row.recoveries.append(took)
            if spec.permits > 1 and extra_permit(lock, spec.permits):
                row.problems.append("more permits free than the semaphore was made with")
            progress[slot] = 0
            control[PAUSE] = 0
            crew.start(slot)
            if not works(crew, progress, slot):
                row.wedged("the replacement worker never got through")
                break
    finally:
        control[STOP] = 1
        control[PAUSE] = 0
        crew.end()
        row.repairs = lock.recoveries
    return row


# ---- rows of queue kills -------------------------------------------------------------------

class Received:
    """Items drained from a queue: per producer, every seq in arrival order."""

    def __init__(self, producers: int) -> None:
        self.seqs: list[list[int]] = [[] for _ in range(producers)]
        self.corrupt = 0
        self.after: float | None = None  # the kill time items are watched against
        self.recovered_at: float | None = None

    def watch(self, killed: float) -> None:
        self.after, self.recovered_at = killed, None

    def record(self, item: Any, stamp: float, now: float) -> None:
        """``item`` = (producer, seq, when it was put); ``stamp``: when the step that this
        row watches (a put, a get) began."""
        try:
            producer, seq, _ = item
            self.seqs[producer].append(int(seq))
        except (TypeError, ValueError, IndexError):
            self.corrupt += 1
            return
        if self.after is not None and self.recovered_at is None and stamp > self.after:
            self.recovered_at = now


def drain(queue: mb.Queue, take: Callable[[Any, float], None], wait: float) -> None:
    """Take what ``queue`` has (waiting up to ``wait`` for the first item)."""
    try:
        items = queue.get_many(512, timeout=wait)
    except Empty:
        return
    now = time.monotonic()
    for item in items:
        take(item, now)


def drain_for(queue: mb.Queue, take: Callable[[Any, float], None], duration: float) -> None:
    deadline = time.monotonic() + duration
    while (left := deadline - time.monotonic()) > 0:
        drain(queue, take, min(left, 0.005))


def check_producer(row: Row, producer: int, seqs: list[int], last: int,
                   in_flight: set[int]) -> int:
    """Problems in what one producer's items did; returns how many went missing."""
    if any(b <= a for a, b in itertools.pairwise(seqs)):
        row.problems.append(f"producer {producer}: items duplicated or out of order")
    got = set(seqs)
    if got - set(range(last + 1)):
        row.problems.append(f"producer {producer}: items that were never put")
    missing = set(range(last + 1)) - got
    if missing - in_flight:
        row.problems.append(f"producer {producer}: {len(missing - in_flight)} items lost "
                            "that no killed process had in flight")
    return len(missing)


def queue_repairs(queue: mb.Queue) -> int | None:
    # The queue's two locks count their repairs; the queue has no public total (yet).
    locks = [getattr(queue, name, None) for name in ("_put_lock", "_get_lock")]
    if any(lock is None for lock in locks):
        return None
    return sum(lock.recoveries for lock in locks)


def soak_queue_producers(ctx: Any, kills: int) -> Row:
    row = Row("Queue producers")
    queue = mb.Queue(maxsize=MAXSIZE)
    control, confirmed = mb.Array("q", 2), mb.Array("q", [-1, -1])
    crew = Crew(ctx, produce, (queue, control, confirmed), 2)
    received = Received(2)
    in_flight: list[set[int]] = [set(), set()]

    def take(item: Any, now: float) -> None:
        received.record(item, item[2] if isinstance(item, tuple) and len(item) == 3 else 0.0,
                        now)

    def pump() -> None:
        drain(queue, take, 0.005)

    def past(slot: int, seq: int) -> bool:
        # Confirmed, not only received: the next kill then finds ``confirmed`` up to date,
        # so the item it records as in flight is the one the process really had.
        seqs = received.seqs[slot]
        return confirmed[slot] > seq and bool(seqs) and seqs[-1] > seq

    try:
        for slot in range(2):
            crew.start(slot, 0)
        if not wait_until(lambda: past(0, -1) and past(1, -1), START_BOUND, pump):
            row.wedged("the first producers' items never came")
            return row
        while row.kills < kills:
            drain_for(queue, take, random.uniform(0, DELAY))
            slot = random.randrange(2)
            killed = crew.kill(slot)
            row.kills += 1
            received.watch(killed)
            flight = confirmed[slot] + 1
            in_flight[slot].add(flight)
            crew.start(slot, flight + 1)
            if not wait_until(lambda: received.recovered_at is not None, BOUND, pump):
                row.wedged("no item put after the kill arrived")
                break
            assert received.recovered_at is not None and received.after is not None
            row.recoveries.append(received.recovered_at - received.after)
            if not (wait_until(lambda slot=slot: crew.ready[slot] > 0, START_BOUND, pump)
                    and wait_until(lambda slot=slot, flight=flight: past(slot, flight),
                                   BOUND, pump)):
                row.wedged("the restarted producer's items never came")
                break
    finally:
        control[STOP] = 1
        wait_until(lambda: not crew.alive(), BOUND, pump)  # a producer may wait for room
        crew.end()
        while not queue.empty():
            pump()
        row.repairs = queue_repairs(queue)
    row.lost = sum(check_producer(row, p, received.seqs[p], confirmed[p], in_flight[p])
                   for p in range(2))
    if received.corrupt:
        row.problems.append(f"{received.corrupt} corrupt items")
    return row


def soak_queue_consumers(ctx: Any, kills: int) -> Row:
    row = Row("Queue consumers")
    queue, out = mb.Queue(maxsize=MAXSIZE), mb.Queue()
    control, confirmed = mb.Array("q", 2), mb.Array("q", [-1, -1])
    producers = Crew(ctx, produce, (queue, control, confirmed), 2)
    consumers = Crew(ctx, forward, (queue, out), 2)
    incarnations = [0, 0]
    received = Received(2)
    newest = [0, 0]  # per consumer slot, the newest incarnation that forwarded an item

    def take(item: Any, now: float) -> None:
        try:
            slot, incarnation, got_at, inner = item
        except (TypeError, ValueError):
            received.corrupt += 1
            return
        newest[slot] = max(newest[slot], incarnation)
        received.record(inner, got_at, now)

    def pump() -> None:
        drain(out, take, 0.005)

    try:
        for slot in range(2):
            producers.start(slot, 0)
            consumers.start(slot, 0)
        if not wait_until(lambda: all(received.seqs), START_BOUND, pump):
            row.wedged("the first items never came through")
            return row
        while row.kills < kills:
            drain_for(out, take, random.uniform(0, DELAY))
            slot = random.randrange(2)
            killed = consumers.kill(slot)
            row.kills += 1
            received.watch(killed)
            put_before = list(confirmed)
            incarnations[slot] += 1
            consumers.start(slot, incarnations[slot])
            if not wait_until(lambda: received.recovered_at is not None, BOUND, pump):
                row.wedged("no get began after the kill and returned")
                break
            assert received.recovered_at is not None and received.after is not None
            row.recoveries.append(received.recovered_at - received.after)
            if not wait_until(lambda put_before=put_before: all(
                    confirmed[p] > put_before[p] for p in range(2)), BOUND, pump):
                row.wedged("a producer stopped putting")
                break
            if not (wait_until(lambda slot=slot: consumers.ready[slot] > 0, START_BOUND, pump)
                    and wait_until(lambda slot=slot: newest[slot] == incarnations[slot],
                                   BOUND, pump)):
                row.wedged("the restarted consumer forwarded nothing")
                break
    finally:
        control[STOP] = 1
        wait_until(lambda: not producers.alive(), BOUND, pump)
        producers.end()
        queue.close()  # the consumers drain what is left, then stop
        wait_until(lambda: not consumers.alive(), BOUND, pump)
        consumers.end()
        while not out.empty():
            pump()
        row.repairs = (queue_repairs(queue) or 0) + (queue_repairs(out) or 0)
    # Two consumers forward concurrently: a producer's items may arrive out of order.
    for p in range(2):
        received.seqs[p].sort()
    row.lost = sum(check_producer(row, p, received.seqs[p], confirmed[p],
                                  set(range(confirmed[p] + 1)))
                   for p in range(2))
    if received.corrupt:
        row.problems.append(f"{received.corrupt} corrupt items")
    return row


# ---- the run -------------------------------------------------------------------------------

def shm_left(pids: set[int]) -> list[str]:
    """``/dev/shm`` entries (segments, semaphores) named after a process of this run."""
    prefixes = tuple(f"{kind}mb{pid}" for pid in pids for kind in ("", "sem."))
    try:
        entries = os.listdir("/dev/shm")
    except FileNotFoundError:
        return []
    # The pid must end where the name goes on (a letter or '_'), not run into more digits.
    return sorted(entry for entry in entries for prefix in prefixes
                  if entry.startswith(prefix) and not entry[len(prefix):][:1].isdigit())


def spread(kills: int, rows: int) -> list[int]:
    return [kills // rows + (1 if i < kills % rows else 0) for i in range(rows)]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--kills", type=int, default=1000, help="kills over all primitives")
    parser.add_argument("--start-method", default="fork",
                        choices=multiprocessing.get_all_start_methods())
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--tiny", action="store_true", help="a handful of kills: a smoke test")
    args = parser.parse_args(argv)
    quiet()
    kills = 14 if args.tiny else args.kills
    seed = args.seed if args.seed is not None else int.from_bytes(os.urandom(4), "little")
    random.seed(seed)
    ctx = multiprocessing.get_context(args.start_method)
    soaks: list[Callable[[int], Row]] = [
        *(lambda n, spec=spec: soak_hammered(spec, ctx, n) for spec in HAMMERED),
        lambda n: soak_queue_producers(ctx, n),
        lambda n: soak_queue_consumers(ctx, n),
    ]
    print(f"soak_primitives: {kills} kills, start method {args.start_method}, seed {seed}",
          flush=True)
    began, rows = time.monotonic(), []
    for soak, share in zip(soaks, spread(kills, len(soaks)), strict=True):
        rows.append(soak(share))
        gc.collect()  # the row's primitives go now: their segments are unlinked
    print(table(rows))
    print(f"{sum(r.kills for r in rows)} kills in {time.monotonic() - began:.0f} s")
    for row in rows:
        for problem, times in Counter(row.problems).items():
            print(f"{row.name}: {problem}" + (f" ({times} times)" if times > 1 else ""))
    left = shm_left({os.getpid(), *STARTED})
    print("/dev/shm: " + (", ".join(left) + " left behind" if left else "nothing left behind"))
    return 1 if left or any(row.failed for row in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
