"""Is ``auto`` ever the wrong choice? A labelled set of workloads, each run on every backend.

    python benchmarks/bench_auto.py            # full sizes, medians of 3 runs a cell
    python benchmarks/bench_auto.py --tiny     # seconds, for a smoke test
    python benchmarks/bench_auto.py --tiny --jobs 2   # the same, two cells at a time

Every cell is a fresh interpreter running one ``mb.map(fn, items, backend=...)``, timed from
the call to its return (pool start-up included), as a script would see it. A workload passes
when ``auto`` takes at most 1.25x the best explicit backend + 50 ms. Then, in the same run:
200 x 50 ms waits through ``mb.map`` (a function seen for the first time, on a pool already
started; the first call in a fresh process; a warm call) beside ``asyncio.gather`` and 200
threads.

The workloads (kind: what each call does):
  cpu       pure-Python loops of 30 ms, 3 ms and 200 ms a call
  native    a 400x400 BLAS product (multi-threaded), numpy sort of 1M floats and zlib of
            2 MB (single-threaded, releasing the GIL)
  waiting   30 ms sleeps, 1 ms sleeps, GETs against a local server answering 429 above 10
            requests at once (10 ms each), coroutines of 20 ms
  mixed     10 ms of waiting then 10 ms of computing
  tiny      100,000 calls of a microsecond
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import threading
import time
import zlib
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
SERVER = ROOT / "tests" / "http_servers.py"
BACKENDS = ("inline", "threads", "processes", "asyncio")
SLACK_RATIO, SLACK_SECONDS = 1.25, 0.05


# ---- the work ---------------------------------------------------------------------------------


def spin(n: int) -> int:
    total = 0
    for i in range(n):
        total += i % 7
    return total


def sleep_for(seconds: float) -> float:
    time.sleep(seconds)
    return seconds


async def async_sleep(seconds: float) -> float:
    await asyncio.sleep(seconds)
    return seconds


def wait_then_spin(n: int) -> int:
    time.sleep(0.01)
    return spin(n)


def tiny(x: int) -> int:
    return x % 7 + 1


def squeeze(size: int) -> int:
    return len(zlib.compress(os.urandom(256) * (size // 256), 6))


_MATRICES: dict[int, Any] = {}
_ARRAYS: dict[int, Any] = {}


def product(n: int) -> float:
    import numpy as np

    a = _MATRICES.get(n)
    if a is None:
        a = _MATRICES[n] = np.random.default_rng(0).random((n, n))
    return float((a @ a)[0, 0])


def numpy_sort(n: int) -> float:
    import numpy as np

    a = _ARRAYS.get(n)
    if a is None:
        a = _ARRAYS[n] = np.random.default_rng(0).random(n)
    return float(np.sort(a)[n // 2])


def http_get(url: str) -> bytes:
    from urllib.request import urlopen

    with urlopen(url, timeout=10) as answer:
        return bytes(answer.read())


# ---- the set ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Workload:
    name: str
    kind: str
    fn: Callable[..., Any]
    full: tuple[Any, int]  # (argument, calls)
    tiny: tuple[Any, int]
    needs: str = ""  # "numpy", "server", "coroutine"


# 30 ms of spin() is about 1.5M iterations on a 2020s core; sizes scale from there.
WORKLOADS = [
    Workload("cpu 30 ms", "cpu", spin, (1_500_000, 16), (100_000, 4)),
    Workload("cpu 3 ms", "cpu", spin, (150_000, 100), (15_000, 20)),
    Workload("cpu 200 ms x 4", "cpu", spin, (10_000_000, 4), (300_000, 2)),
    Workload("blas 400x400", "native", product, (400, 40), (100, 10), "numpy"),
    Workload("numpy sort 1M", "native", numpy_sort, (1_000_000, 20), (10_000, 5), "numpy"),
    Workload("zlib 2 MB", "native", squeeze, (2_000_000, 16), (100_000, 4)),
    Workload("sleep 30 ms", "waiting", sleep_for, (0.03, 100), (0.005, 20)),
    Workload("sleep 1 ms", "waiting", sleep_for, (0.001, 500), (0.001, 20)),
    Workload("http, 429 above 10", "waiting", http_get, ("", 120), ("", 20), "server"),
    Workload("coroutines 20 ms", "waiting", async_sleep, (0.02, 200), (0.005, 20),
             "coroutine"),
    Workload("wait 10 + spin 10 ms", "mixed", wait_then_spin, (500_000, 40), (20_000, 8)),
    Workload("tiny x 100k", "tiny", tiny, (None, 100_000), (None, 2_000)),
]


# ---- one cell, in its own interpreter -----------------------------------------------------------


def run_cell(name: str, backend: str, tiny_size: bool, url: str) -> float:
    import manybrains as mb

    work = next(w for w in WORKLOADS if w.name == name)
    arg, calls = work.tiny if tiny_size else work.full
    if work.needs == "server":
        items: Any = [f"{url}/{i}" for i in range(calls)]
    elif arg is None:
        items = range(calls)
    else:
        items = [arg] * calls
    if work.needs == "numpy":
        work.fn(arg)  # the array is made here: the cell times the calls, not the set-up
    started = time.perf_counter()
    results = mb.map(work.fn, items, backend=backend)
    elapsed = time.perf_counter() - started
    assert len(results) == calls
    if backend == "auto":
        for choice in mb.default_pool("auto").statistics().choices:
            print(f"choice {choice['backend']}: {choice['why']}", file=sys.stderr)
    return elapsed


def cell(name: str, backend: str, tiny_size: bool, url: str) -> tuple[float, str]:
    args = [sys.executable, str(Path(__file__)), "--cell", name, backend, "--url", url]
    done = subprocess.run([*args, *(["--tiny"] if tiny_size else [])], capture_output=True,
                          text=True, timeout=300, check=False, cwd=ROOT)
    if done.returncode != 0:
        raise RuntimeError(f"{name} on {backend} failed:\n{done.stderr[-3000:]}")
    why = " / ".join(line.removeprefix("choice ") for line in done.stderr.splitlines()
                     if line.startswith("choice "))
    return float(done.stdout.split()[-1]), why


def backends_for(work: Workload) -> list[str]:
    # The event loop runs coroutine functions; a plain function there would block it.
    return [b for b in BACKENDS if b != "asyncio" or work.needs == "coroutine"] + ["auto"]


def available(work: Workload) -> bool:
    if work.needs != "numpy":
        return True
    try:
        import numpy  # noqa: F401
    except ImportError:
        return False
    return True


def measure_set(tiny_size: bool, runs: int, url: str, jobs: int = 1
                ) -> tuple[list[str], int, int]:
    """Every workload on every backend, one cell after another; with ``jobs`` > 1 (for --tiny,
    whose numbers mean nothing) ``jobs`` cells at a time, but never two against the server
    (it answers 429 above 10 requests at once, summed over every cell)."""
    with ThreadPoolExecutor(jobs) as pool:
        ahead: dict[tuple[str, str, int], Future[tuple[float, str]]] = {}
        if jobs > 1:
            ahead = {(work.name, backend, i): pool.submit(cell, work.name, backend, tiny_size, url)
                     for work in WORKLOADS if available(work) and work.needs != "server"
                     for backend in backends_for(work) for i in range(runs)}
        try:
            return _measure_set(tiny_size, runs, url, ahead)
        finally:
            for future in ahead.values():
                future.cancel()


def _measure_set(tiny_size: bool, runs: int, url: str,
                 ahead: dict[tuple[str, str, int], Future[tuple[float, str]]]
                 ) -> tuple[list[str], int, int]:
    lines = [f"{'workload':<22} {'kind':<8} " + " ".join(f"{b:>10}" for b in (*BACKENDS, "auto"))
             + "   best         auto/best  pass"]
    print(lines[0], flush=True)
    passed = total = 0
    for work in WORKLOADS:
        if not available(work):
            lines.append(f"{work.name:<22} {work.kind:<8} skipped: numpy is not installed")
            print(lines[-1], flush=True)
            continue
        times: dict[str, float] = {}
        why = ""
        for backend in backends_for(work):
            samples = []
            for i in range(runs):
                started = ahead.get((work.name, backend, i))
                seconds, reason = (started.result() if started is not None
                                   else cell(work.name, backend, tiny_size, url))
                samples.append(seconds)
                why = reason or why
            times[backend] = statistics.median(samples)
        auto = times.pop("auto")
        best = min(times, key=times.__getitem__)
        ok = auto <= SLACK_RATIO * times[best] + SLACK_SECONDS
        passed, total = passed + ok, total + 1
        cells = " ".join(f"{times[b]:>9.3f}s" if b in times else f"{'-':>10}" for b in BACKENDS)
        lines.append(f"{work.name:<22} {work.kind:<8} {cells} {auto:>9.3f}s   "
                     f"{best:<10} {auto / times[best]:>8.2f}x   {'yes' if ok else 'NO'}")
        lines.append(f"{'':<31}auto chose {why}")
        print(*lines[-2:], sep="\n", flush=True)
    lines.append(f"auto within {SLACK_RATIO}x of the best backend (+{SLACK_SECONDS * 1e3:.0f} ms): "
                 f"{passed} of {total}")
    print(lines[-1], flush=True)
    return lines, passed, total


# ---- 200 waits, beside the peers ---------------------------------------------------------------


def gather(n: int, seconds: float) -> None:
    async def main() -> None:
        await asyncio.gather(*(async_sleep(seconds) for _ in range(n)))

    asyncio.run(main())


def many_threads(n: int, seconds: float) -> None:
    threads = [threading.Thread(target=sleep_for, args=(seconds,)) for _ in range(n)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()


def timed(fn: Callable[[], object]) -> float:
    started = time.perf_counter()
    fn()
    return time.perf_counter() - started


def first_call_in_a_fresh_process(n: int, seconds: float) -> float:
    code = ("import time, manybrains as mb\n"
            "def wait(s):\n    time.sleep(s)\n    return s\n"
            f"t = time.perf_counter(); mb.map(wait, [{seconds}] * {n}); "
            "print(time.perf_counter() - t)\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=60, check=True)
    return float(done.stdout.split()[-1])


def waits_case(n: int, seconds: float, runs: int) -> list[str]:
    import manybrains as mb

    delays = [seconds] * n
    mb.map(sleep_for, delays)  # the pool and its threads are up; sleep_for is known
    fresh, warm, cold, peer_gather, peer_threads = [], [], [], [], []
    for i in range(runs):
        def wait(s: float) -> float:  # a new function object each run: measured afresh
            time.sleep(s)
            return s

        wait.__code__ = wait.__code__.replace(co_name=f"wait_{i}")  # a code object of its own
        fresh.append(timed(lambda: mb.map(wait, delays)))
        warm.append(timed(lambda: mb.map(sleep_for, delays)))
        cold.append(first_call_in_a_fresh_process(n, seconds))
        peer_gather.append(timed(lambda: gather(n, seconds)))
        peer_threads.append(timed(lambda: many_threads(n, seconds)))
    g, t = statistics.median(peer_gather), statistics.median(peer_threads)
    lines = [f"{n} x {seconds * 1e3:.0f} ms waits (medians of {runs}): "
             f"asyncio.gather {g:.3f}s, {n} threads {t:.3f}s"]
    for label, samples in (("mb.map, a function seen for the first time", fresh),
                           ("mb.map, warm (the same function again)", warm),
                           ("mb.map, the first call in a fresh process", cold)):
        ours = statistics.median(samples)
        lines.append(f"  {label:<46} {ours:.3f}s  {ours / g:.2f}x gather, {ours / t:.2f}x "
                     "threads")
    return lines


# ---- main ------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> list[str]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tiny", action="store_true", help="tiny sizes, one run a cell")
    parser.add_argument("--runs", type=int, default=None, help="runs a cell (median)")
    parser.add_argument("--jobs", type=int, default=1,
                        help="--tiny only: cells run at the same time (default 1)")
    parser.add_argument("--cell", nargs=2, metavar=("WORKLOAD", "BACKEND"), help=argparse.SUPPRESS)
    parser.add_argument("--url", default="", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.jobs < 1 or (args.jobs > 1 and not args.tiny):
        parser.error("--jobs > 1 is for --tiny: cells timed side by side slow each other")
    if args.cell:
        print(run_cell(args.cell[0], args.cell[1], args.tiny, args.url))
        return []
    runs = args.runs or (1 if args.tiny else 3)
    sys.path.insert(0, str(SERVER.parent))
    import http_servers

    with http_servers.running("limit", 10, 0.002 if args.tiny else 0.01) as url:
        lines, _, _ = measure_set(args.tiny, runs, url, args.jobs)
    n, seconds = (20, 0.01) if args.tiny else (200, 0.05)
    for line in waits_case(n, seconds, 1 if args.tiny else 5):
        print(line, flush=True)
        lines.append(line)
    return lines


if __name__ == "__main__":
    main()
