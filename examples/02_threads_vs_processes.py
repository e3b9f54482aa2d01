"""The counting loop on two threads, then on two processes: only processes use two cores.

Usage: python 02_threads_vs_processes.py [COUNT]   (default 10_000_000)
"""

import sys
import threading
import time

import manybrains as mb


def count(n: int) -> int:
    total = 0
    for _ in range(n):
        total += 1
    return total


def with_threads(n: int) -> float:
    started = time.perf_counter()
    threads = [threading.Thread(target=count, args=(n,)) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return time.perf_counter() - started


def with_processes(pool: mb.Pool, n: int) -> float:
    started = time.perf_counter()
    assert pool.map(count, [n, n], chunksize=1) == [n, n]
    return time.perf_counter() - started


if __name__ == "__main__":
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 10_000_000
    with mb.Pool(2) as pool:
        pool.map(count, [1, 1], chunksize=1)  # start the workers before timing
        threads = with_threads(n)
        processes = with_processes(pool, n)
    print(f"cores: {mb.usable_cpus()}")
    print(f"threads:   {threads:.3f} s (one GIL: the two loops take turns)")
    print(f"processes: {processes:.3f} s (one GIL each: the loops run side by side)")
    print(f"speed-up:  {threads / processes:.2f}x")
