"""A worker's lifetime limit (``maxtasksperchild``): never more live workers than ``workers``.

``multiprocessing.Pool`` keeps exactly ``processes`` workers alive: a worker that reached
its limit exits after its last task, and only then is it replaced. The count is taken from
outside, with psutil, while the pool runs: a worker counts from its start until it has
exited (a zombie no longer counts), whichever process it is a child of (the test process, a
template, a forkserver).
"""

from __future__ import annotations

import os
import threading
import time
from collections import Counter

import psutil
import pytest

import manybrains as mb

WORKERS = 2
TASKS = 20


def sleep_then_pid(_: object = None) -> int:
    time.sleep(0.02)  # long enough that the workers' lifetimes overlap
    return os.getpid()


def pid_of(_: object = None) -> int:
    return os.getpid()


class Census:
    """Samples the live processes under the test process, until stopped; the pool's
    workers among them are told apart afterwards (the pids the pool named, or that ran a
    task), since a worker may be a grandchild (of a template, of a forkserver)."""

    def __init__(self, pool: mb.Pool) -> None:
        self._pool = pool
        self._stop = threading.Event()
        self._samples: list[set[int]] = []
        self.workers: set[int] = set()
        self._thread = threading.Thread(target=self._run, name="census")

    def __enter__(self) -> Census:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join(timeout=30)

    def most_alive(self, also_workers: set[int]) -> int:
        """The most workers seen alive at once."""
        workers = self.workers | also_workers
        assert self._samples, "the census took no sample"
        return max(len(sample & workers) for sample in self._samples)

    def _run(self) -> None:
        me = psutil.Process()
        while not self._stop.is_set():
            self.workers.update(self._pool.backend.worker_pids())
            self._samples.append(_alive(me.children(recursive=True)))
            time.sleep(0.001)


def _alive(processes: list[psutil.Process]) -> set[int]:
    alive = set()
    for process in processes:
        try:
            if process.status() != psutil.STATUS_ZOMBIE:
                alive.add(process.pid)
        except psutil.NoSuchProcess:  # gone between the listing and the look
            pass
    return alive


def test_live_workers_never_exceed_the_pool_width(start_method):
    pool = mb.Pool(WORKERS, start_method=start_method, maxtasksperchild=1)
    with pool, Census(pool) as census:
        futures = [pool.submit(sleep_then_pid, i) for i in range(TASKS)]
        pids = [f.result(timeout=40) for f in futures]
    assert len(pids) == TASKS
    assert set(Counter(pids).values()) == {1}, "a worker ran more than its one task"
    seen = census.most_alive(set(pids))
    assert 0 < seen <= WORKERS, f"{seen} workers alive at once"  # 0: the census saw none


@pytest.mark.parametrize("chunksize", [None, 2])
def test_a_worker_runs_at_most_its_limit_of_calls_in_a_chunked_map(chunksize):
    # The chunks are no larger than the limit; a worker with calls left takes the next
    # chunk only if it fits in what it has left. Dispatch is the same under every start
    # method: fork starts the ~50 workers fastest.
    with mb.Pool(WORKERS, maxtasksperchild=3, start_method="fork") as pool:
        pids = pool.map(pid_of, range(100), chunksize=chunksize)
    assert len(pids) == 100
    assert max(Counter(pids).values()) <= 3
