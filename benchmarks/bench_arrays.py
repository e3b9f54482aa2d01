"""Big numpy arrays through a pool: manybrains against multiprocessing, side by side.

1. ``pool.map(np.sum, arrays)`` over 16 arrays of 50 MB (float64) on 2 workers:
   manybrains.Pool (arrays travel through a reused shared-memory arena) against
   multiprocessing.Pool (arrays pickled through pipes). Time of the first call (cold: fresh
   shared memory) and the median of the next ones (warm), and the peak extra memory of the
   first call (drop of the machine's available memory, sampled every 2 ms).
2. One 400 MB array read whole (``np.sum``) by 16 tasks on 2 workers: a manybrains
   SharedArray under forkserver, against a global inherited by a fork pool (pool start
   included: inheriting needs a new pool), and multiprocessing.shared_memory attached by
   hand in each task of a forkserver pool.

Usage: python benchmarks/bench_arrays.py [--repeat R] [--tiny]
"""

from __future__ import annotations

import argparse
import multiprocessing
import statistics
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from multiprocessing import shared_memory
from typing import Any

import numpy as np
import psutil

import manybrains as mb

WORKERS = 2
MB = 1 << 20


# ---- measuring ------------------------------------------------------------------------------

@contextmanager
def peak_extra_memory() -> Iterator[list[int]]:
    """Yields a list that holds, after the block, the peak drop of available memory."""
    baseline = psutil.virtual_memory().available
    lowest = [baseline]
    stop = threading.Event()

    def sample() -> None:
        while not stop.wait(0.002):
            lowest[0] = min(lowest[0], psutil.virtual_memory().available)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    result = [0]
    try:
        yield result
    finally:
        stop.set()
        sampler.join()
        result[0] = max(0, baseline - lowest[0])


def timed(fn: Callable[[], Any]) -> float:
    started = time.perf_counter()
    fn()
    return time.perf_counter() - started


def cold_and_warm(call: Callable[[], Any], repeat: int) -> tuple[float, int, float]:
    """(first call's seconds, its peak extra bytes, median seconds of ``repeat`` more)."""
    with peak_extra_memory() as extra:
        cold = timed(call)
    warm = statistics.median(timed(call) for _ in range(repeat))
    return cold, extra[0], warm


# ---- 1. many big arrays to np.sum ----------------------------------------------------------

def sum_arrays(count: int, size: int, repeat: int) -> None:
    arrays = [np.random.default_rng(i).random(size // 8) for i in range(count)]
    expected = [a.sum() for a in arrays]
    print(f"\n{count} x {size / MB:.0f} MB float64 arrays, pool.map(np.sum, arrays), "
          f"{WORKERS} workers")
    print(f"{'':<22}{'cold s':>9}{'warm s':>9}{'peak extra MB':>15}")
    with mb.Pool(WORKERS) as pool:
        pool.map(abs, [1, 2])  # workers started
        row("manybrains.Pool", *cold_and_warm(lambda: check(pool.map(np.sum, arrays),
                                                            expected), repeat))
    with multiprocessing.get_context("forkserver").Pool(WORKERS) as pool:
        pool.map(abs, [1, 2])
        row("multiprocessing.Pool", *cold_and_warm(lambda: check(pool.map(np.sum, arrays),
                                                                 expected), repeat))
    copy = np.empty_like(arrays[0])
    one_copy = timed(lambda: [np.copyto(copy, a) for a in arrays])
    print(f"(one memory copy of all {count * size / MB:.0f} MB: {one_copy:.3f} s)")


def check(got: list[float], expected: list[float]) -> None:
    assert np.allclose(got, expected)


def row(label: str, cold: float, extra: int, warm: float) -> None:
    print(f"{label:<22}{cold:>9.3f}{warm:>9.3f}{extra / MB:>15.0f}", flush=True)


# ---- 2. one big array read by many tasks -------------------------------------------------------

_INHERITED: np.ndarray | None = None


def total_shared(sa: mb.SharedArray) -> float:
    return float(np.asarray(sa).sum())


def total_inherited(_: int) -> float:
    assert _INHERITED is not None
    return float(_INHERITED.sum())


def total_by_hand(name: str, shape: tuple[int, ...]) -> float:
    shm = shared_memory.SharedMemory(name)
    array = np.ndarray(shape, np.float64, buffer=shm.buf)
    total = float(array.sum())
    del array
    shm.close()
    return total


def read_shared(size: int, tasks: int, repeat: int) -> None:
    global _INHERITED
    source = np.random.default_rng(0).random(size // 8)
    expected = [float(source.sum())] * tasks
    print(f"\none {size / MB:.0f} MB array read whole by {tasks} tasks, {WORKERS} workers")
    print(f"{'':<36}{'first s':>9}{'median s':>10}")
    with mb.SharedArray.from_array(source) as sa, \
            mb.Pool(WORKERS, start_method="forkserver") as pool:
        pool.map(abs, [1, 2])

        def shared() -> None:
            check(pool.map(total_shared, [sa] * tasks, chunksize=1), expected)

        first = timed(shared)
        print(f"{'manybrains.SharedArray (forkserver)':<36}{first:>9.3f}"
              f"{statistics.median(timed(shared) for _ in range(repeat)):>10.3f}", flush=True)

    _INHERITED = source

    def inherited() -> None:
        with multiprocessing.get_context("fork").Pool(WORKERS) as fork_pool:
            check(fork_pool.map(total_inherited, range(tasks), chunksize=1), expected)

    first = timed(inherited)
    print(f"{'global inherited by fork (+ start)':<36}{first:>9.3f}"
          f"{statistics.median(timed(inherited) for _ in range(repeat)):>10.3f}", flush=True)
    _INHERITED = None

    shm = shared_memory.SharedMemory(create=True, size=source.nbytes)
    try:
        np.ndarray(source.shape, source.dtype, buffer=shm.buf)[:] = source
        with multiprocessing.get_context("forkserver").Pool(WORKERS) as hand_pool:
            hand_pool.map(abs, [1, 2])

            def by_hand() -> None:
                check(hand_pool.starmap(total_by_hand, [(shm.name, source.shape)] * tasks,
                                        chunksize=1), expected)

            first = timed(by_hand)
            print(f"{'shared_memory by hand (forkserver)':<36}{first:>9.3f}"
                  f"{statistics.median(timed(by_hand) for _ in range(repeat)):>10.3f}",
                  flush=True)
    finally:
        shm.close()
        shm.unlink()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5, help="warm runs; the median")
    parser.add_argument("--tiny", action="store_true", help="a few MB: a smoke test")
    args = parser.parse_args()
    if args.tiny:
        sum_arrays(4, 2 * MB, 1)
        read_shared(4 * MB, 4, 1)
    else:
        sum_arrays(16, 50 * MB, args.repeat)
        read_shared(400 * MB, 16, args.repeat)


if __name__ == "__main__":
    main()
