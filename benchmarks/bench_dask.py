"""manybrains on Dask against plain ``client.map`` + ``gather``, on the same cluster.

One LocalCluster (worker processes, one thread each, on 127.0.0.1) is started by a
``manybrains.Pool(backend="dask")``; the plain-Dask runs use that pool's own client, so both
sides use the same scheduler and the same workers, and runs alternate between them.

- tiny:  1,000 calls of ``x * x``. Goal: manybrains at least 10x faster (it batches calls
         into chunks; Dask pays about a millisecond or more per task).
- cpu:   8 pure-Python CPU-bound calls. Goal: within 10% of ``client.map``.
- lists: 40 calls each returning a list of 5,000 ints (Dask serializes a returned list
         element by element; manybrains returns one pickled blob per chunk).

Usage: python benchmarks/bench_dask.py [--workers N] [--repeat R] [--tiny]
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from typing import Any

import manybrains as mb


def square(x: int) -> int:
    return x * x


def burn(n: int) -> int:
    total = 0
    for i in range(n):
        total += i * i % 7
    return total


def int_list(n: int) -> list[int]:
    return list(range(n))


def timed(run: Callable[[], Any]) -> tuple[float, Any]:
    start = time.perf_counter()
    result = run()
    return time.perf_counter() - start, result


def compare(name: str, pool: mb.Pool, fn: Callable[[Any], Any], items: list[Any],
            repeat: int) -> dict[str, Any]:
    """Median seconds of ``pool.map`` and of ``client.map`` + ``gather``, alternating."""
    client = pool.client
    ours: list[float] = []
    plain: list[float] = []
    for _ in range(repeat):
        seconds, ours_result = timed(lambda: pool.map(fn, items))
        ours.append(seconds)
        seconds, plain_result = timed(
            lambda: client.gather(client.map(fn, items, pure=False)))
        plain.append(seconds)
        assert ours_result == plain_result, f"{name}: the two sides disagree"
    return {"name": name, "calls": len(items), "manybrains": statistics.median(ours),
            "client.map": statistics.median(plain)}


def report(rows: list[dict[str, Any]]) -> None:
    print(f"{'case':<8}{'calls':>7}{'manybrains s':>15}{'client.map s':>15}{'speed-up':>10}")
    for row in rows:
        ratio = row["client.map"] / row["manybrains"]
        print(f"{row['name']:<8}{row['calls']:>7}{row['manybrains']:>15.4f}"
              f"{row['client.map']:>15.4f}{ratio:>9.2f}x")


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--tiny", action="store_true", help="a few seconds, for a smoke test")
    args = parser.parse_args(argv)
    tiny_calls, burn_n, list_calls = (100, 10_000, 4) if args.tiny else (1000, 3_000_000, 40)
    repeat = 1 if args.tiny else args.repeat
    start, pool = timed(lambda: mb.Pool(args.workers, backend="dask"))
    print(f"LocalCluster of {args.workers} worker processes started in {start:.2f} s")
    with pool:
        pool.map(square, range(10))  # warm: both sides then run on started workers
        rows = [compare("tiny", pool, square, list(range(tiny_calls)), repeat),
                compare("cpu", pool, burn, [burn_n] * 8, repeat),
                compare("lists", pool, int_list, [5000] * list_calls, repeat)]
    report(rows)
    tiny, cpu = rows[0], rows[1]
    print(f"goal tiny >= 10x: {tiny['client.map'] / tiny['manybrains']:.1f}x; "
          f"goal cpu within 10%: {cpu['manybrains'] / cpu['client.map'] - 1:+.1%}")
    return rows


if __name__ == "__main__":
    main()
