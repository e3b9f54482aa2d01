"""The ``manybrains`` command line."""

from __future__ import annotations

import argparse
import time
from collections.abc import Sequence

import manybrains as mb


def count(n: int) -> int:
    """The seed's CPU-bound loop: count to ``n`` one by one."""
    total = 0
    for _ in range(n):
        total += 1
    return total


def demo(tasks: int = 8, size: int = 5_000_000) -> str:
    """Run the counting loop serially and on every core; report the speed-up."""
    start = time.perf_counter()
    serial = [count(size) for _ in range(tasks)]
    serial_s = time.perf_counter() - start
    mb.map(count, [1000])  # start the workers first: the comparison is about the work
    start = time.perf_counter()
    parallel = mb.map(count, [size] * tasks)
    parallel_s = time.perf_counter() - start
    assert parallel == serial
    workers = mb.default_pool().workers
    return (f"{tasks} x counting to {size:,}: serial {serial_s:.2f} s, "
            f"manybrains on {workers} workers {parallel_s:.2f} s, "
            f"speed-up {serial_s / parallel_s:.2f}x")


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``manybrains`` and ``python -m manybrains``."""
    parser = argparse.ArgumentParser(prog="manybrains", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="a smaller demo")
    args = parser.parse_args(argv)
    print(demo(size=1_000_000 if args.quick else 5_000_000))
    return 0
