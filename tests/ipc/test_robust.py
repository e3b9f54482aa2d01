"""A process killed inside a shared primitive does not wedge the processes that remain.

Every test kills a real process (SIGKILL) that holds a lock, a permit, or is inside a queue
operation, and then checks that the others go on: within a bound, with at most the item in
flight lost, and with the recovery visible (``recoveries``, ``recovered``, a warning).
"""

from __future__ import annotations

import logging
import os
import queue
import random
import signal
import subprocess
import time
from pathlib import Path

import pytest

import manybrains as mb
from manybrains.backends.processes.context import available_start_methods
from manybrains.ipc import owners
from manybrains.ipc.mutex import SLICE, UNOWNED_GRACE

# The start methods a user's processes come from: manybrains' template, and the stdlib's.
METHODS = [m for m in ("template", "fork", "spawn") if m in available_start_methods()]
RECOVERS_WITHIN = 5.0  # generous: a loaded CI machine; the design says about SLICE seconds


# ---- what the killed processes run (module level: spawn imports them) ----------------------


def hold(lock: object, marker: str, seconds: float = 60.0) -> None:
    """Take ``lock`` (a Lock or Semaphore), say so in ``marker``, then hold it."""
    with lock:  # type: ignore[attr-defined]
        Path(marker).write_text(str(os.getpid()))
        time.sleep(seconds)


def hold_value_lock(shared: object, marker: str) -> None:
    with shared.get_lock():  # type: ignore[attr-defined]
        Path(marker).write_text(str(os.getpid()))
        time.sleep(60)


def take_unrecorded(lock: mb.Lock) -> None:
    """Take the semaphore and die before recording ownership: the unrecorded instant."""
    assert lock._mutex.try_semaphore(False)
    os._exit(0)


def take_a_permit_unrecorded(sem: mb.Semaphore) -> None:
    """Die between taking a permit and counting it as held: the acquire's last instant."""
    sem._add(sem._my_slot(), 2, +1)  # taking
    assert sem._try(False)
    os._exit(0)


def take_a_signal_and_die(sem: mb.Semaphore) -> None:
    sem.acquire()
    os._exit(0)


def hammer_lock(lock: mb.Lock, counter: mb.Value) -> None:
    while True:
        with lock:
            counter.value += 1


def produce_forever(q: mb.Queue, producer: int) -> None:
    seq = 0
    while True:
        q.put((producer, seq))
        seq += 1


def produce(q: mb.Queue, producer: int, count: int) -> None:
    for seq in range(count):
        q.put((producer, seq))


def consume_logging(q: mb.Queue, log: str) -> None:
    with open(log, "a") as f:
        while True:
            item = q.get()
            f.write(f"{item}\n")
            f.flush()


def acquire_within(lock: mb.Lock, seconds: float) -> bool:
    if lock.acquire(timeout=seconds):
        lock.release()
        return True
    return False


# ---- helpers ---------------------------------------------------------------------------------


def wait_for(path: Path, seconds: float = 60.0) -> None:
    deadline = time.monotonic() + seconds
    while not (path.exists() and path.read_text()):
        assert time.monotonic() < deadline, f"the child never wrote {path}"
        time.sleep(0.01)


def kill(handle: mb.Handle) -> None:  # type: ignore[type-arg]
    handle.kill()
    handle.join(timeout=30)
    assert handle.exitcode == -signal.SIGKILL


def timed_acquire(lock: object) -> float:
    started = time.monotonic()
    assert lock.acquire(timeout=RECOVERS_WITHIN), "the lock stayed wedged"  # type: ignore[attr-defined]
    return time.monotonic() - started


# ---- locks -----------------------------------------------------------------------------------


@pytest.mark.parametrize("method", METHODS)
def test_a_lock_whose_holder_is_killed_is_repaired_by_the_next_waiter(method, tmp_path, caplog):
    lock = mb.Lock()
    marker = tmp_path / "held"
    holder = mb.spawn(hold, lock, str(marker), start_method=method)
    wait_for(marker)
    assert lock.owner_pid == holder.pid
    assert not lock.acquire(timeout=0.3)  # a live holder keeps it
    kill(holder)
    with caplog.at_level(logging.WARNING, logger="manybrains"):
        waited = timed_acquire(lock)
    try:
        assert lock.recovered and lock.recoveries == 1
        assert lock.owner_pid == os.getpid()
        assert waited < 3 * SLICE + 1.0
        assert f"process {holder.pid} died holding it" in caplog.text
    finally:
        lock.release()
    assert lock.owner_pid is None
    with lock:  # an ordinary acquire afterwards: no longer "recovered"
        assert not lock.recovered


def test_a_process_killed_before_recording_itself_is_repaired_after_the_grace(caplog):
    lock = mb.Lock()
    mb.spawn(take_unrecorded, lock).join(timeout=30)
    assert lock.owner_pid is None and not lock.acquire(block=False)
    with caplog.at_level(logging.WARNING, logger="manybrains"):
        waited = timed_acquire(lock)
    lock.release()
    assert UNOWNED_GRACE <= waited < UNOWNED_GRACE + 3.0
    assert lock.recoveries == 1 and "a process died holding it" in caplog.text


def test_a_live_holder_is_never_robbed(tmp_path):
    lock = mb.Lock()
    marker = tmp_path / "held"
    holder = mb.spawn(hold, lock, str(marker), UNOWNED_GRACE + 1.0)
    wait_for(marker)
    assert not lock.acquire(timeout=UNOWNED_GRACE + 0.3)  # longer than any grace
    holder.join(timeout=30)
    assert holder.exitcode == 0 and lock.recoveries == 0
    with lock:
        assert not lock.recovered


def test_a_recycled_pid_is_not_the_dead_holder():
    me = owners.me()
    assert owners.alive(me) and owners.pid_of(me) == os.getpid()
    assert not owners.alive(me + (1 << 22))  # the same pid, started at another time
    assert not owners.alive(0)
    # A process whose start time could not be read is recorded by its pid alone.
    ended = subprocess.Popen(["true"])
    ended.wait()
    assert owners.alive(os.getpid()) and not owners.alive(ended.pid)


@pytest.mark.parametrize("method", METHODS)
def test_killing_lock_users_at_random_points_never_wedges_the_rest(method):
    lock, counter = mb.Lock(), mb.Value("q", 0)
    rng = random.Random(7)
    for _ in range(3):
        users = [mb.spawn(hammer_lock, lock, counter, start_method=method) for _ in range(2)]
        deadline = time.monotonic() + 60
        while counter.value < 1000:  # both are running and taking the lock
            assert time.monotonic() < deadline
            time.sleep(0.01)
        time.sleep(rng.uniform(0, 0.05))
        for user in users:
            kill(user)
        timed_acquire(lock)
        lock.release()
        before = counter.value
        with lock:  # nobody else is left: the count is stable while we hold it
            assert counter.value == before


@pytest.mark.parametrize("make", [
    lambda: mb.Value("i", 0),
    lambda: mb.Array("i", 4),
    pytest.param(lambda: mb.SharedArray.zeros(4, "int64"), id="SharedArray"),
], ids=["Value", "Array", "SharedArray"])
def test_the_lock_of_shared_memory_is_repaired_too(make, tmp_path):
    shared = make()
    marker = tmp_path / "held"
    holder = mb.spawn(hold_value_lock, shared, str(marker))
    wait_for(marker)
    kill(holder)
    if isinstance(shared, mb.Value):
        assert shared.add(5) == 5  # add() takes the lock
    elif isinstance(shared, mb.Array):
        assert shared.add(1, 5) == 5
    else:
        with shared.lock:
            shared[1] += 5
        assert shared[1] == 5
    assert shared.get_lock().recoveries == 1


def test_a_pool_task_killed_by_its_timeout_while_holding_a_lock_frees_it(tmp_path):
    lock = mb.Lock()
    with mb.Pool(2) as pool:
        with pytest.raises(TimeoutError):  # (no name kept: the traceback would keep the lock)
            pool.submit(hold, lock, str(tmp_path / "held"), timeout=1.0).result(timeout=60)
        assert pool.submit(acquire_within, lock, RECOVERS_WITHIN).result(timeout=60)
    assert lock.recoveries == 1


# ---- semaphores ------------------------------------------------------------------------------


@pytest.mark.parametrize("method", METHODS)
def test_permits_of_killed_holders_are_given_back(method, tmp_path):
    sem = mb.Semaphore(2)
    holders = []
    for i in range(2):
        marker = tmp_path / f"held{i}"
        holders.append(mb.spawn(hold, sem, str(marker), start_method=method))
        wait_for(marker)
    assert not sem.acquire(timeout=0.3)  # both permits are taken by live processes
    for holder in holders:
        kill(holder)
    timed_acquire(sem)
    assert sem.acquire(timeout=RECOVERS_WITHIN)  # the second permit came back too
    assert sem.recoveries == 2 and not sem.acquire(block=False)
    sem.release()
    sem.release()
    assert sem.value() == 2


def test_a_permit_taken_in_the_instant_before_it_is_counted_comes_back():
    sem = mb.Semaphore(1)
    mb.spawn(take_a_permit_unrecorded, sem).join(timeout=30)
    assert sem.value() == 0
    timed_acquire(sem)
    assert sem.recoveries == 1
    sem.release()


def test_a_signal_taken_by_a_process_that_died_is_not_sent_again():
    sem = mb.Semaphore(0)  # used to signal: released by one process, acquired by another
    sem.release()
    mb.spawn(take_a_signal_and_die, sem).join(timeout=30)
    assert not sem.acquire(timeout=3 * SLICE)  # nothing is missing from 0: no top-up
    assert sem.recoveries == 0 and sem.value() == 0


# ---- the queue -------------------------------------------------------------------------------


@pytest.mark.parametrize("method", METHODS)
def test_a_producer_killed_mid_stream_loses_at_most_its_item_in_flight(method):
    q = mb.Queue(maxsize=64)
    victim = mb.spawn(produce_forever, q, 0, start_method=method)
    survivor = mb.spawn(produce, q, 1, 3000, start_method=method)
    got: dict[int, list[int]] = {0: [], 1: []}
    rng = random.Random(3)
    kill_after = rng.randint(200, 1500)
    while len(got[1]) < 3000:
        producer, seq = q.get(timeout=RECOVERS_WITHIN)  # Empty here: the queue wedged
        got[producer].append(seq)
        if len(got[0]) + len(got[1]) == kill_after:
            kill(victim)
    survivor.join(timeout=30)
    assert survivor.exitcode == 0
    with pytest.raises(queue.Empty):
        q.get(timeout=0.3)  # nothing more: the victim is dead
    assert got[1] == list(range(3000))  # the survivor lost nothing
    assert got[0] == list(range(len(got[0])))  # the victim's items: in order, no gap


@pytest.mark.parametrize("method", METHODS)
def test_a_consumer_killed_mid_get_loses_at_most_its_item_in_flight(method, tmp_path):
    q, total = mb.Queue(maxsize=64), 3000
    log = tmp_path / "consumed"
    log.touch()
    producer = mb.spawn(produce, q, 0, total, start_method=method)
    victim = mb.spawn(consume_logging, q, str(log), start_method=method)
    while len(log.read_text().splitlines()) < 300:
        time.sleep(0.005)
    kill(victim)
    mine = []
    while True:
        try:
            mine.append(q.get(timeout=1.0)[1])  # the producer, wedged, would end this early
        except queue.Empty:
            break
    producer.join(timeout=30)
    assert producer.exitcode == 0
    theirs = [eval(line)[1] for line in log.read_text().splitlines()]
    assert not set(mine) & set(theirs)  # nothing delivered twice
    assert len(set(mine) | set(theirs)) >= total - 1  # at most the one in flight is lost


def test_a_record_whose_wake_up_was_lost_is_still_read():
    q = mb.Queue()
    q.put("item")
    assert q._items.acquire(False)  # as if a reader died between its wake-up and its read
    started = time.monotonic()
    assert q.get(timeout=RECOVERS_WITHIN) == "item"
    assert time.monotonic() - started < 3 * SLICE + 1.0
    assert q.qsize() == 0


def test_a_wake_up_without_a_record_is_not_taken_for_the_close():
    q = mb.Queue()
    q._items.release()  # as if a writer died after waking readers it had not fed
    with pytest.raises(queue.Empty):
        q.get(timeout=0.3)
    q.put(1)
    assert q.get(timeout=5) == 1
    q.close()
    with pytest.raises(mb.QueueClosed):
        q.get(timeout=5)
