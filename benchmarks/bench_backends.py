"""One API, many brains: each kind of work through ``manybrains.map`` defaults, beside the
tool a user would otherwise reach for, in one run.

    python benchmarks/bench_backends.py            # full sizes, median of 5 runs
    python benchmarks/bench_backends.py --tiny     # seconds, for a smoke test

Cases (full size):
  waiting (coroutine)   200 x asyncio.sleep(50 ms): mb.map      vs asyncio.gather   goal <= 1.2x
  waiting (blocking)    200 x time.sleep(50 ms):    mb.map      vs 200 threads      goal <= 1.2x
  computing             8 CPU-bound calls:          mb.map      vs 1 core (serial)  goal: efficiency
                                                                                      >= 0.95
  cheap calls           x * x over range(200_000):  mb.map      vs a plain loop     goal >= 1.0x
  10,000 coroutines     asyncio.sleep(0.1) on "processes", 2 workers, concurrency=5000:
                                                                                    goal <= 0.5 s
"mb.map" rows are the median of warm runs (the default pool and its decision are reused, as in
a program calling it repeatedly); the first, cold run is printed beside them.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import manybrains as mb


@dataclass
class Sizes:
    waits: int = 200
    wait_seconds: float = 0.05
    cpu_calls: int = 8
    cpu_loop: int = 4_000_000
    cheap: int = 200_000
    coroutines: int = 10_000
    coroutine_seconds: float = 0.1
    runs: int = 5


TINY = Sizes(waits=20, wait_seconds=0.01, cpu_calls=4, cpu_loop=20_000, cheap=2_000,
             coroutines=200, coroutine_seconds=0.01, runs=2)


# ---- the work -------------------------------------------------------------------------------


async def async_wait(seconds: float) -> float:
    await asyncio.sleep(seconds)
    return seconds


def blocking_wait(seconds: float) -> float:
    time.sleep(seconds)
    return seconds


def count(n: int) -> int:
    total = 0
    for _ in range(n):
        total += 1
    return total


def square(x: int) -> int:
    return x * x


# ---- the peers ------------------------------------------------------------------------------


def gather(n: int, seconds: float) -> None:
    async def main() -> None:
        await asyncio.gather(*(async_wait(seconds) for _ in range(n)))

    asyncio.run(main())


def many_threads(n: int, seconds: float) -> None:
    threads = [threading.Thread(target=blocking_wait, args=(seconds,)) for _ in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()


def plain_loop(n: int) -> None:
    [square(x) for x in range(n)]


# ---- measuring ------------------------------------------------------------------------------


def timed(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def cold_and_warm(fn: Callable[[], object], runs: int) -> tuple[float, float]:
    cold = timed(fn)
    return cold, statistics.median(timed(fn) for _ in range(runs))


def median(fn: Callable[[], object], runs: int) -> float:
    return statistics.median(timed(fn) for _ in range(runs))


def row(case: str, ours: tuple[float, float], peer_name: str, peer: float, verdict: str) -> str:
    cold, warm = ours
    return (f"{case:<22} mb.map {warm * 1e3:9.1f} ms (cold {cold * 1e3:7.1f})   "
            f"{peer_name:<16} {peer * 1e3:9.1f} ms   {verdict}")


def waiting_cases(s: Sizes) -> list[str]:
    delays = [s.wait_seconds] * s.waits
    co = cold_and_warm(lambda: mb.map(async_wait, delays), s.runs)
    peer = median(lambda: gather(s.waits, s.wait_seconds), s.runs)
    lines = [row("waiting (coroutine)", co, "asyncio.gather", peer, f"{co[1] / peer:.2f}x "
                 "(goal <= 1.2x)")]
    bl = cold_and_warm(lambda: mb.map(blocking_wait, delays), s.runs)
    peer = median(lambda: many_threads(s.waits, s.wait_seconds), s.runs)
    lines.append(row("waiting (blocking)", bl, f"{s.waits} threads", peer,
                     f"{bl[1] / peer:.2f}x (goal <= 1.2x)"))
    return lines


def computing_case(s: Sizes) -> list[str]:
    serial = median(lambda: count(s.cpu_loop), s.runs) * s.cpu_calls
    ours = cold_and_warm(lambda: mb.map(count, [s.cpu_loop] * s.cpu_calls), s.runs)
    cpus = mb.usable_cpus()
    efficiency = serial / (ours[1] * min(cpus, s.cpu_calls))
    return [row(f"computing ({s.cpu_calls} calls)", ours, "serial, 1 core", serial,
                f"efficiency {efficiency:.2f} on {cpus} cores (goal >= 0.95)")]


def cheap_case(s: Sizes) -> list[str]:
    ours = cold_and_warm(lambda: mb.map(lambda x: x * x, range(s.cheap)), s.runs)
    peer = median(lambda: plain_loop(s.cheap), s.runs)
    return [row(f"cheap ({s.cheap} x*x)", ours, "plain loop", peer,
                f"{peer / ours[1]:.2f}x the loop's speed (goal >= 1.0x)")]


def coroutine_case(s: Sizes) -> list[str]:
    delays = [s.coroutine_seconds] * s.coroutines
    with mb.Pool(2, backend="processes", concurrency=s.coroutines // 2) as pool:
        pool.map(async_wait, delays[:2])  # start the workers: their start-up is not the case
        took = median(lambda: pool.map(async_wait, delays), s.runs)
    return [f"{s.coroutines} coroutines     processes, 2 workers: {took * 1e3:9.1f} ms "
            f"(goal <= 500 ms at full size; one await is {s.coroutine_seconds * 1e3:.0f} ms)"]


def main(argv: list[str] | None = None) -> list[str]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tiny", action="store_true", help="tiny sizes, for a smoke test")
    sizes = TINY if parser.parse_args(argv).tiny else Sizes()
    lines = [*waiting_cases(sizes), *computing_case(sizes), *cheap_case(sizes),
             *coroutine_case(sizes)]
    for line in lines:
        print(line)
    for choice in mb.default_pool().statistics().choices:
        print(f"  auto chose {choice['backend']} for {choice['function']}: {choice['why']}")
    mb.shutdown_default_pool()
    return lines


if __name__ == "__main__":
    main()
