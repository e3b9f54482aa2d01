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
the clock starts); the last column is the ratio to inline.

Usage: python benchmarks/bench_inner_threads.py [--tasks N] [--products P] [--repeat R] [--tiny]
"""

from __future__ import annotations

import argparse
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


def timed(run: Callable[[list[int]], list[float]], work: list[int], repeat: int) -> float:
    run(work[:WORKERS])  # warm: BLAS threads started, pages touched
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        run(work)
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def pool_row(work: list[int], repeat: int, cap: int | None) -> tuple[float, int]:
    """Seconds for ``work`` on a 2-worker pool, and the BLAS threads a worker ran."""
    options: dict[str, Any] = {}
    if cap is not None:  # override: the rows compare the two settings, whatever the shell set
        options = {"initializer": functools.partial(inner_threads.apply, override=True),
                   "initargs": (cap,)}
    with mb.Pool(WORKERS, **options) as pool:
        threads = max(pool.map(blas_threads, range(WORKERS), chunksize=1))
        seconds = timed(lambda w: pool.map(products, w, chunksize=1), work, repeat)
    return seconds, threads


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
    work = [args.products] * args.tasks
    inline = timed(run_inline, work, args.repeat)
    rows = [(f"inline (BLAS threads: {blas_threads()})", inline)]
    with threadpool_limits(1):  # for scale: the same loop on one BLAS thread
        rows.append(("inline, BLAS on 1 thread", timed(run_inline, work, args.repeat)))
    share = inner_threads.default(WORKERS)
    for label, cap in ((f"mb.Pool(2), capped at {share} each", share),
                       (f"mb.Pool(2), uncapped ({cpus} each)", cpus),
                       ("mb.Pool(2), no option given", None)):
        seconds, threads = pool_row(work, args.repeat, cap)
        rows.append((f"{label} [workers ran {threads}]", seconds))
    print(f"{args.tasks} tasks of {args.products} products of {SIZE}x{SIZE} matrices, "
          f"{cpus} usable CPUs, median of {args.repeat}")
    print(f"{'contender':<52} {'seconds':>8} {'vs inline':>10}")
    for label, seconds in rows:
        print(f"{label:<52} {seconds:>8.3f} {seconds / inline:>10.2f}")


if __name__ == "__main__":
    main()
