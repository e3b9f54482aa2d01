"""What a progress bar costs: a map of 200,000 tiny calls with and without ``progress=``.

    python benchmarks/bench_progress.py               # 200,000 calls, 9 rounds
    python benchmarks/bench_progress.py --calls 20000 --rounds 3

Each round runs the same map three ways on one warm pool: no progress, a tqdm bar (rendered
to a null file, so the formatting is paid but the terminal stays clean) and a callback, in
a rotating order. The overhead is the time with progress over the time without, for the
median and for the best round. On a shared machine a whole map's noise is larger than the
bar, so the bar's own cost (open and close, and one update per chunk) is also timed alone.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from collections.abc import Callable
from typing import Any, TextIO

import manybrains as mb


def square(x: int) -> int:
    return x * x


def timed(run: Callable[[], Any]) -> float:
    start = time.perf_counter()
    run()
    return time.perf_counter() - start


def bar_costs(null: TextIO, chunks: int) -> tuple[float, float]:
    """Seconds to open and close a bar, and to advance it by one chunk: exact where a
    whole map's timing is noisy."""
    from manybrains._task import ChunkOutcome
    from manybrains.progress import tracker

    start = time.perf_counter()
    with tracker({"file": null}, 10**9):
        pass
    open_close = time.perf_counter() - start
    outcome = ChunkOutcome(list(range(1000)))
    with tracker({"file": null}, 10**9) as bar:
        start = time.perf_counter()
        for _ in range(chunks):
            bar.chunk_done(outcome)
        per_chunk = (time.perf_counter() - start) / chunks
    return open_close, per_chunk


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=200_000)
    parser.add_argument("--rounds", type=int, default=9)
    parser.add_argument("--backend", default="processes")
    args = parser.parse_args()
    items = range(args.calls)
    snapshots: list[object] = []
    with open(os.devnull, "w") as null, mb.Pool(backend=args.backend) as pool:
        ways: dict[str, dict[str, Any]] = {
            "no progress": {},
            "tqdm bar": {"progress": {"file": null}},
            "callback": {"progress": snapshots.append},
        }
        pool.map(square, items)  # warm the workers and the chunk sizer
        before = pool.statistics().done
        pool.map(square, items, progress={"file": null})  # and import tqdm
        chunks = pool.statistics().done - before
        times: dict[str, list[float]] = {name: [] for name in ways}
        names = list(ways)
        for round_ in range(args.rounds):
            # a different order each round, so that a noisy neighbour hits every way alike
            for name in names[round_ % 3:] + names[:round_ % 3]:
                options = ways[name]
                times[name].append(timed(lambda o=options: pool.map(square, items, **o)))
        open_close, per_chunk = bar_costs(null, 10_000)
    no_progress = statistics.median(times["no progress"])
    bar_s = open_close + chunks * per_chunk
    print(f"{args.calls:,} calls of x*x on {args.backend}: {chunks} chunks; a bar costs "
          f"{open_close * 1000:.2f} ms to open and close + {per_chunk * 1e6:.2f} us a chunk = "
          f"{bar_s * 1000:.2f} ms, {100 * bar_s / no_progress:.1f} % of the median map")
    print(f"timed maps, {args.rounds} rounds:")
    for label, pick in (("median", statistics.median), ("best", min)):
        base = pick(times["no progress"])
        for name, runs in times.items():
            value = pick(runs)
            print(f"  {label:<6} {name:<12} {value * 1000:8.1f} ms  "
                  f"{100 * (value / base - 1):+6.1f} %")


if __name__ == "__main__":
    main()
