"""Matrix products on 2 workers against running them inline, with and without the BLAS cap.

Each task multiplies 300x300 float64 matrices ``--products`` times. The same tasks run:

- inline, in this process, one after another (its BLAS uses every usable CPU), and for
  scale the same on one BLAS thread;
- on ``mb.Pool(2)`` with each worker's BLAS capped at its share (usable CPUs // 2);
- on ``mb.Pool(2)`` uncapped: each worker's BLAS on every CPU, as OpenBLAS starts by default,
  so the two workers run twice as many BLAS threads as there are CPUs;
- on ``mb.Pool(2)`` as a user gets it, with no option given.

The cap of the first two pool rows is set by an initializer (``inner_threads.apply``), so
they compare the two settings whatever the engine does by itself. numpy is imported before the
pools start, as in most programs: a worker forked from this process holds BLAS already loaded.
Each row is the median of ``--repeat`` runs of all tasks (pools started and warmed before
the clock starts), the rows taking turns so that the load of the machine weighs on all of
them alike; the last column is the ratio to inline.

Usage: python benchmarks/bench_inner_threads.py [--tasks N] [--products P] [--repeat R] [--tiny]
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import statistics
import time
from collections.abc import Callable
from typing import Any

import numpy as np
from threadpoolctl import threadpool_limits

import manybrains as mb
from manybrains._cpus import usable_cpus
from manybrains.backends.processes import inner_threads

WORKERS = 2
SIZE = 300
PAUSE = 0.3  # seconds between two timed runs
Run = Callable[[list[int]], list[float]]


def products(count: int) -> float:
    """``count`` products of two 300x300 matrices; a number, so the result ships cheaply."""
    rng = np.random.default_rng(count)
    a, b = rng.random((SIZE, SIZE)), rng.random((SIZE, SIZE))
    for _ in range(count):
        a = (a @ b) / SIZE
    return float(a[0, 0])


def blas_threads(_item: object = None) -> int:
    from threadpoolctl import threadpool_info

    return max((lib["num_threads"] for lib in threadpool_info() if lib["user_api"] == "blas"),
               default=0)


def run_inline(work: list[int]) -> list[float]:
    return [products(n) for n in work]


def run_inline_one_thread(work: list[int]) -> list[float]:
    with threadpool_limits(1):
        return run_inline(work)


def open_pool(stack: contextlib.ExitStack, cap: int | None) -> tuple[Run, int]:
    """A 2-worker pool's way to run the work, and the BLAS threads its workers run."""
    options: dict[str, Any] = {}
    if cap is not None:  # override: the rows compare the two settings, whatever the shell set
        options = {"initializer": functools.partial(inner_threads.apply, override=True),
                   "initargs": (cap,)}
    pool = stack.enter_context(mb.Pool(WORKERS, **options))
    threads = max(pool.map(blas_threads, range(WORKERS), chunksize=1))
    return (lambda work: pool.map(products, work, chunksize=1)), threads


def measure(runs: list[Run], work: list[int], repeat: int) -> list[float]:
    """The median seconds of each run over ``work``, the runs taking turns, so that a change
    of load on the machine falls on all of them alike."""
    for run in runs:
        run(work[:WORKERS])  # warm: BLAS threads started, pages touched
    times: list[list[float]] = [[] for _ in runs]
    for _ in range(repeat):
        for run, seconds in zip(runs, times, strict=True):
            time.sleep(PAUSE)  # idle BLAS threads of the previous run stop spinning
            started = time.perf_counter()
            run(work)
            seconds.append(time.perf_counter() - started)
    return [statistics.median(seconds) for seconds in times]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=16, help="tasks in all (default 16)")
    parser.add_argument("--products", type=int, default=40, help="products per task")
    parser.add_argument("--repeat", type=int, default=5, help="runs per row; the median")
    parser.add_argument("--tiny", action="store_true", help="a few products: a smoke test")
    args = parser.parse_args()
    if args.tiny:
        args.tasks, args.products, args.repeat = 4, 2, 1
    cpus = usable_cpus()
    share = inner_threads.default(WORKERS)
    labels = [f"inline (BLAS threads: {blas_threads()})", "inline, BLAS on 1 thread"]
    runs: list[Run] = [run_inline, run_inline_one_thread]
    with contextlib.ExitStack() as stack:
        for label, cap in ((f"mb.Pool(2), capped at {share} each", share),
                           (f"mb.Pool(2), uncapped ({cpus} each)", cpus),
                           ("mb.Pool(2), no option given", None)):
            run, threads = open_pool(stack, cap)
            labels.append(f"{label} [workers ran {threads}]")
            runs.append(run)
        seconds = measure(runs, [args.products] * args.tasks, args.repeat)
    print(f"{args.tasks} tasks of {args.products} products of {SIZE}x{SIZE} matrices, "
          f"{cpus} usable CPUs, median of {args.repeat}, the rows taking turns")
    print(f"{'contender':<52} {'seconds':>8} {'vs inline':>10}")
    for label, value in zip(labels, seconds, strict=True):
        print(f"{label:<52} {value:>8.3f} {value / seconds[0]:>10.2f}")


if __name__ == "__main__":
    main()
