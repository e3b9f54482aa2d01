"""manybrains.Queue against multiprocessing.Queue, SimpleQueue and faster-fifo, side by side.

Throughput: one producer process puts N small items (ints), the main process gets them:
one item per put/get; lists of 1000 items per put (the usual way to batch with
multiprocessing: the reader gets whole lists); and, for manybrains only, put_many/get_many
in 1000s (each item still a separate queue item, shared fairly among readers). Latency: a
ping-pong between two processes over two queues; one-way latency is half the median round
trip.

Usage: python benchmarks/bench_queue.py [--items N] [--repeat R] [--tiny]
"""

from __future__ import annotations

import argparse
import multiprocessing
import statistics
import time
from collections.abc import Callable
from typing import Any

import manybrains as mb

BATCH = 1000
CTX = multiprocessing.get_context("fork")  # the same process start for every contender


# ---- the contenders -------------------------------------------------------------------------

def make_queue(kind: str) -> Any:
    if kind == "manybrains.Queue":
        return mb.Queue()
    if kind == "mp.Queue":
        return CTX.Queue()
    if kind == "faster-fifo":
        import faster_fifo

        return faster_fifo.Queue(max_size_bytes=4 << 20)  # the ring size of mb.Queue()
    return CTX.SimpleQueue()


def _installed(module: str) -> bool:
    try:
        __import__(module)
    except ImportError:
        return False
    return True


# faster-fifo (a C++ shared-memory queue) is a peer where it is installed (the bench extra).
KINDS = ("manybrains.Queue", "mp.Queue", "mp.SimpleQueue") + (
    ("faster-fifo",) if _installed("faster_fifo") else ())


def put_singles(q: Any, n: int) -> None:
    put = q.put
    for i in range(n):
        put(i)


def put_lists(q: Any, n: int) -> None:
    for start in range(0, n, BATCH):
        q.put(list(range(start, min(n, start + BATCH))))


def put_many(q: Any, n: int) -> None:
    for start in range(0, n, BATCH):
        q.put_many(range(start, min(n, start + BATCH)))


def get_singles(q: Any, n: int) -> None:
    get = q.get
    for _ in range(n):
        get()


def get_lists(q: Any, n: int) -> None:
    got = 0
    while got < n:
        got += len(q.get())


def get_many(q: Any, n: int) -> None:
    got = 0
    while got < n:
        got += len(q.get_many(BATCH))


def echo(inbox: Any, outbox: Any, n: int) -> None:
    for _ in range(n):
        outbox.put(inbox.get())


# ---- measurements ---------------------------------------------------------------------------

def throughput(kind: str, n: int, producer: Callable[[Any, int], None],
               consumer: Callable[[Any, int], None]) -> float:
    q = make_queue(kind)
    process = CTX.Process(target=producer, args=(q, n))
    started = time.perf_counter()
    process.start()
    consumer(q, n)
    elapsed = time.perf_counter() - started
    process.join()
    return n / elapsed


def latency(kind: str, pings: int) -> float:
    inbox, outbox = make_queue(kind), make_queue(kind)
    process = CTX.Process(target=echo, args=(inbox, outbox, pings))
    process.start()
    inbox.put(0)
    outbox.get()  # the echo process is running
    round_trips = []
    for i in range(pings - 1):
        started = time.perf_counter()
        inbox.put(i)
        outbox.get()
        round_trips.append(time.perf_counter() - started)
    process.join()
    return statistics.median(round_trips) / 2


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=1_000_000)
    parser.add_argument("--pings", type=int, default=5_000)
    parser.add_argument("--repeat", type=int, default=3, help="runs per cell; the median")
    parser.add_argument("--tiny", action="store_true", help="a few thousand items: a smoke test")
    args = parser.parse_args()
    if args.tiny:
        args.items, args.pings, args.repeat = 2_000, 50, 1

    def median(fn: Callable[[], float]) -> float:
        return statistics.median(fn() for _ in range(args.repeat))

    print(f"{args.items:,} items from one process to another, median of {args.repeat} runs")
    print(f"{'queue':<18}{'single items/s':>16}{'lists items/s':>16}{'put_many items/s':>18}"
          f"{'latency us':>12}")
    for kind in KINDS:
        single = median(lambda k=kind: throughput(k, args.items, put_singles, get_singles))
        lists = median(lambda k=kind: throughput(k, args.items, put_lists, get_lists))
        many = "-"
        if kind == "manybrains.Queue":
            many = f"{median(lambda: throughput(KINDS[0], args.items, put_many, get_many)):,.0f}"
        one_way = median(lambda k=kind: latency(k, args.pings))
        print(f"{kind:<18}{single:>16,.0f}{lists:>16,.0f}{many:>18}{one_way * 1e6:>12.1f}",
              flush=True)


if __name__ == "__main__":
    main()
