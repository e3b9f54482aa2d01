"""manybrains on Ray against plain ``ray.remote`` + ``ray.get``, on the same Ray instance.

One local Ray instance (``--workers`` CPUs, on 127.0.0.1, no dashboard) is started with
``ray.init``; a ``manybrains.Pool(backend=mb.Ray())`` runs through that connection, so both
sides use the same raylet and the same worker processes, and runs alternate between them.

- tiny:       1,000 calls of ``x * x``: ``pool.map`` (chunked automatically) against one
              ``ray.remote`` task per call. Goal: manybrains at least 10x faster (it batches
              calls into chunks; Ray pays a fraction of a millisecond or more per task).
- shared:     32 tasks that each read one 32 MB numpy array passed as an argument:
              ``pool.submit(fn, array, i)``, which puts the array into Ray's object store
              once, against ``f.remote(array, i)``, with which Ray copies it there on every
              call.
- shared-put: the same manybrains side against Ray at its best: ``ray.put`` once, then
              ``f.remote(ref, i)``.
- shared-map: ``pool.map(partial(fn, array), range(32))`` (the function, array and all, is
              pickled and stored once per map) against ``ray.put`` once.
- lists:      40 calls each returning a list of 5,000 ints.

Usage: python benchmarks/bench_ray.py [--workers N] [--repeat R] [--tiny] [--address HOST:PORT]
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from collections.abc import Callable
from functools import partial
from typing import Any

# Ray's servers on 127.0.0.1 only: on Linux Ray does so only where told that clusters are
# unsupported here (read when ray is imported).
os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")

import numpy as np
import ray

import manybrains as mb

MB = 1 << 20


def square(x: int) -> int:
    return x * x


def strided_sum(array: Any, i: int) -> float:
    return float(array[i::64].sum())


def int_list(n: int) -> list[int]:
    return list(range(n))


def timed(run: Callable[[], Any]) -> tuple[float, Any]:
    start = time.perf_counter()
    result = run()
    return time.perf_counter() - start, result


def compare(name: str, calls: int, ours: Callable[[], Any], plain: Callable[[], Any],
            repeat: int) -> dict[str, Any]:
    """Median seconds of the manybrains side and of the plain-Ray side, alternating."""
    ours_s: list[float] = []
    plain_s: list[float] = []
    for _ in range(repeat):
        seconds, ours_result = timed(ours)
        ours_s.append(seconds)
        seconds, plain_result = timed(plain)
        plain_s.append(seconds)
        assert ours_result == plain_result, f"{name}: the two sides disagree"
    return {"name": name, "calls": calls, "manybrains": statistics.median(ours_s),
            "ray": statistics.median(plain_s)}


def report(rows: list[dict[str, Any]]) -> None:
    print(f"{'case':<12}{'calls':>7}{'manybrains s':>15}{'ray.remote s':>15}{'speed-up':>10}")
    for row in rows:
        ratio = row["ray"] / row["manybrains"]
        print(f"{row['name']:<12}{row['calls']:>7}{row['manybrains']:>15.4f}"
              f"{row['ray']:>15.4f}{ratio:>9.2f}x")


def run_cases(pool: mb.Pool, tiny: bool, repeat: int) -> list[dict[str, Any]]:
    tiny_calls, array_mb, shared_calls, list_calls = (100, 2, 4, 4) if tiny else (1000, 32, 32,
                                                                                40)
    remote_square = ray.remote(square)
    remote_sum = ray.remote(strided_sum)
    remote_list = ray.remote(int_list)
    ray.get([remote_square.remote(i) for i in range(10)])  # warm: exported, workers leased
    pool.map(square, range(10))

    items = list(range(tiny_calls))
    array = np.random.default_rng(0).random(array_mb * MB // 8)
    tasks = range(shared_calls)

    def ours_shared() -> list[float]:
        return [f.result() for f in [pool.submit(strided_sum, array, i) for i in tasks]]

    def plain_put() -> list[float]:
        ref = ray.put(array)
        return list(ray.get([remote_sum.remote(ref, i) for i in tasks]))

    return [
        compare("tiny", tiny_calls, lambda: pool.map(square, items),
                lambda: ray.get([remote_square.remote(x) for x in items]), repeat),
        compare("shared", shared_calls, ours_shared,
                lambda: ray.get([remote_sum.remote(array, i) for i in tasks]), repeat),
        compare("shared-put", shared_calls, ours_shared, plain_put, repeat),
        compare("shared-map", shared_calls, lambda: pool.map(partial(strided_sum, array), tasks),
                plain_put, repeat),
        compare("lists", list_calls, lambda: pool.map(int_list, [5000] * list_calls),
                lambda: ray.get([remote_list.remote(5000) for _ in range(list_calls)]),
                repeat),
    ]


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--tiny", action="store_true", help="a few seconds, for a smoke test")
    parser.add_argument("--address", help="join this running Ray cluster (left running) "
                                          "instead of starting a local instance")
    args = parser.parse_args(argv)
    repeat = 1 if args.tiny else args.repeat
    if args.address:
        ray.init(address=args.address, configure_logging=False)
        print(f"joined the Ray cluster at {args.address}")
    else:
        start, _ = timed(lambda: ray.init(address="local", num_cpus=args.workers,
                                          include_dashboard=False,
                                          _node_ip_address="127.0.0.1",
                                          configure_logging=False))
        print(f"Ray instance of {args.workers} CPUs started in {start:.2f} s")
    try:
        with mb.Pool(args.workers, backend=mb.Ray()) as pool:  # runs through that connection
            rows = run_cases(pool, args.tiny, repeat)
    finally:
        ray.shutdown()
    report(rows)
    tiny = rows[0]
    print(f"goal tiny >= 10x: {tiny['ray'] / tiny['manybrains']:.1f}x")
    return rows


if __name__ == "__main__":
    main()
