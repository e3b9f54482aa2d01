"""The process engine against multiprocessing.Pool and concurrent.futures, side by side.

    python benchmarks/bench_engine.py            # full sizes, medians of 5 runs
    python benchmarks/bench_engine.py --tiny     # seconds; what the test suite runs

Workloads: E1 200,000 calls of x*x (throughput, and against a plain loop); E2 8 x a
10-million-iteration Python loop (parallel efficiency = serial / (workers x parallel));
E3 a fresh interpreter from ``import`` to the first result of a cold map, and a second call on
the warm pool. Each number is the median of ``--repeat`` runs; every library runs in the same
process, one after the other, on the same input.
"""

from __future__ import annotations

import argparse
import concurrent.futures as cf
import json
import multiprocessing
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any

import manybrains as mb


def square(x: int) -> int:
    return x * x


def count(n: int) -> int:
    total = 0
    for _ in range(n):
        total += 1
    return total


def median_time(fn: Callable[[], Any], repeat: int) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def e1_tiny_tasks(n: int, workers: int, repeat: int) -> dict[str, float]:
    items = range(n)
    ctx = multiprocessing.get_context("forkserver")
    with ctx.Pool(workers) as mp_pool, cf.ProcessPoolExecutor(workers, mp_context=ctx) as ex, \
            mb.Pool(workers) as pool:
        mp_pool.map(square, range(100))
        list(ex.map(square, range(100)))
        pool.map(square, range(100))
        return {
            "plain loop": median_time(lambda: [square(x) for x in items], repeat),
            "manybrains Pool.map": median_time(lambda: pool.map(square, items), repeat),
            "manybrains.map (defaults)": median_time(lambda: mb.map(square, items), repeat),
            "multiprocessing.Pool.map": median_time(lambda: mp_pool.map(square, items), repeat),
            "ProcessPoolExecutor.map chunksize=1000": median_time(
                lambda: list(ex.map(square, items, chunksize=1000)), repeat),
        }


def e2_cpu_loops(size: int, workers: int, repeat: int) -> dict[str, float]:
    tasks = [size] * 8
    ctx = multiprocessing.get_context("forkserver")
    serial = median_time(lambda: [count(n) for n in tasks], max(1, repeat // 2))
    with ctx.Pool(workers) as mp_pool, mb.Pool(workers) as pool:
        mp_pool.map(count, [1, 1])
        pool.map(count, [1, 1])
        times = {
            "manybrains Pool.map": median_time(lambda: pool.map(count, tasks), repeat),
            "multiprocessing.Pool.map": median_time(lambda: mp_pool.map(count, tasks, 1),
                                                    repeat),
        }
    return {"serial": serial, **{f"{k} efficiency": serial / (workers * v)
                                 for k, v in times.items()}, **times}


_COLD = """
import time
start = time.perf_counter()
{setup}
first = time.perf_counter() - start
start = time.perf_counter()
{again}
print(first, time.perf_counter() - start)
"""


def e3_cold_start(repeat: int) -> dict[str, float]:
    cases = {
        "manybrains.map": ("import manybrains as mb; mb.map(abs, [1])", "mb.map(abs, [1])"),
        "manybrains.Pool(2) (template)": (
            "import manybrains as mb; p = mb.Pool(2); p.submit(abs, -1).result()",
            "p.submit(abs, -1).result()"),
        "multiprocessing.Pool (fork)": (
            "import multiprocessing as m; p = m.get_context('fork').Pool(2); p.apply(abs, (-1,))",
            "p.apply(abs, (-1,))"),
        "multiprocessing.Pool (forkserver)": (
            "import multiprocessing as m; p = m.get_context('forkserver').Pool(2); p.map(abs, [1])",
            "p.map(abs, [1])"),
    }
    results: dict[str, float] = {}
    for name, (setup, again) in cases.items():
        runs = [_run_cold(setup, again) for _ in range(repeat)]
        results[f"{name}: import to first result"] = statistics.median(r[0] for r in runs)
        results[f"{name}: second call"] = statistics.median(r[1] for r in runs)
    return results


def _run_cold(setup: str, again: str) -> tuple[float, float]:
    code = _COLD.format(setup=setup, again=again)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, timeout=120).stdout.split()
    return float(out[0]), float(out[1])


def main(argv: list[str] | None = None) -> dict[str, dict[str, float]]:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tiny", action="store_true", help="tiny sizes: checks, not numbers")
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--json", help="write the results to this file")
    args = parser.parse_args(argv)
    repeat = 1 if args.tiny else args.repeat
    results = {
        "E1 200k x*x (s)": e1_tiny_tasks(2_000 if args.tiny else 200_000, args.workers, repeat),
        "E2 8 x 10M loop (s)": e2_cpu_loops(10_000 if args.tiny else 10_000_000, args.workers,
                                            repeat),
        "E3 cold start (s)": e3_cold_start(1 if args.tiny else repeat),
    }
    for workload, numbers in results.items():
        print(workload)
        for name, value in numbers.items():
            print(f"  {name:55s} {value:10.4f}")
    e1 = results["E1 200k x*x (s)"]
    print(f"E1 manybrains Pool.map vs multiprocessing.Pool.map: "
          f"{e1['multiprocessing.Pool.map'] / e1['manybrains Pool.map']:.2f}x throughput")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=2)
    mb.shutdown_default_pool()
    return results


if __name__ == "__main__":
    main()
