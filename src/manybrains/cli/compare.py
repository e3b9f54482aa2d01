"""``manybrains compare``: the threads / async / processes cheat sheet, measured here.

Two workloads, each run as a plain loop, on threads, on one asyncio event loop and on worker
processes (a manybrains pool):

- CPU-bound: a counting loop (count to N one by one), ``2 x CPUs`` times;
- I/O-bound: a wait (``time.sleep`` / ``asyncio.sleep``), many times over.

Threads get ``min(32, CPUs + 4)`` of them, as ``concurrent.futures`` does; processes get one
per CPU; asyncio awaits every wait at once. Whether each model shares memory is measured
too: every model runs a function that appends to a module-level list.
"""

from __future__ import annotations

import argparse
import asyncio
import concurrent.futures as cf
import json
import sys
import time
from dataclasses import asdict, dataclass
from typing import Any

from .errors import UsageError

HELP = "measure the threads / asyncio / processes cheat sheet on this machine"
MODELS = ("plain loop", "threads", "asyncio", "processes")
_COMPLEXITY = {"plain loop": "low", "threads": "medium", "asyncio": "high",
               "processes": "high (mb.map: low)"}
_SPEEDUP_IS_PARALLEL = 1.3  # a measured speed-up above this counts as parallel CPU


@dataclass(frozen=True)
class Workload:
    cpu_tasks: int
    count_to: int
    waits: int
    wait_s: float

    def describe(self) -> str:
        return (f"CPU-bound: {self.cpu_tasks} x counting to {self.count_to:,}; "
                f"I/O-bound: {self.waits} x waiting {self.wait_s * 1000:g} ms")


@dataclass(frozen=True)
class Row:
    model: str
    cpu_s: float
    cpu_speedup: float
    io_s: float
    io_speedup: float
    parallel_cpu: bool
    best_for_io: str  # "best", "yes" or "not ideal"
    memory_shared: bool
    gil_issue: bool
    complexity: str


def add_parser(commands: Any, name: str) -> None:
    parser = commands.add_parser(name, help=HELP, description=(__doc__ or "").split("\n\n")[1])
    parser.add_argument("--quick", action="store_true", help="small workloads: a few seconds")
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    parser.add_argument("--plot", metavar="FILE.png",
                        help="also draw the timings as a bar chart (needs matplotlib)")


# ---- the workloads -------------------------------------------------------------------------


def count(n: int) -> int:
    """The CPU-bound loop of the cheat sheet: count to ``n`` one by one."""
    total = 0
    for _ in range(n):
        total += 1
    return total


async def count_async(n: int) -> int:
    return count(n)  # nothing to await: the loop runs one count at a time


def wait(seconds: float) -> float:
    time.sleep(seconds)
    return seconds


async def wait_async(seconds: float) -> float:
    await asyncio.sleep(seconds)
    return seconds


_TOUCHED: list[int] = []


def touch(_: object = None) -> int:
    """Appends to a module-level list: visible to the caller only if memory is shared."""
    _TOUCHED.append(1)
    return len(_TOUCHED)


async def touch_async(_: object = None) -> int:
    return touch()


# ---- running one model ---------------------------------------------------------------------


class _Models:
    """Runs a function over inputs under each model; the pool is started once, up front."""

    def __init__(self, workers: int) -> None:
        import manybrains as mb

        self.threads = min(32, workers + 4)
        start = time.perf_counter()
        self._pool = mb.Pool(workers)
        self._pool.map(touch, range(workers), chunksize=1)  # every worker started and warm
        self.startup_s = time.perf_counter() - start

    def close(self) -> None:
        self._pool.shutdown()

    def run(self, model: str, fn: Any, afn: Any, inputs: list[Any]) -> float:
        start = time.perf_counter()
        if model == "plain loop":
            [fn(x) for x in inputs]
        elif model == "threads":
            with cf.ThreadPoolExecutor(self.threads) as executor:
                list(executor.map(fn, inputs))
        elif model == "asyncio":
            asyncio.run(_gather(afn, inputs))
        else:
            self._pool.map(fn, inputs, chunksize=1)
        return time.perf_counter() - start

    def shares_memory(self, model: str) -> bool:
        before = len(_TOUCHED)
        self.run(model, touch, touch_async, [None])
        return len(_TOUCHED) > before


async def _gather(afn: Any, inputs: list[Any]) -> list[Any]:
    return list(await asyncio.gather(*(afn(x) for x in inputs)))


def measure(workload: Workload, workers: int) -> tuple[list[Row], float]:
    """Every model on both workloads: the rows, and the pool's start-up time."""
    from ..backends.auto.policy import gil_enabled

    models = _Models(workers)
    try:
        # The best of two rounds, the models taking turns in each: a CPU-bound timing is easily
        # inflated by other programs, and load that comes and goes then hits every model.
        cpu = dict.fromkeys(MODELS, float("inf"))
        for _ in range(2):
            for m in MODELS:
                cpu[m] = min(cpu[m], models.run(m, count, count_async,
                                                [workload.count_to] * workload.cpu_tasks))
        io = {m: models.run(m, wait, wait_async, [workload.wait_s] * workload.waits)
              for m in MODELS}
        shared = {m: models.shares_memory(m) for m in MODELS}
    finally:
        models.close()
    fastest_io = min(io.values())
    rows = [Row(m, cpu[m], cpu["plain loop"] / cpu[m], io[m], io["plain loop"] / io[m],
                cpu["plain loop"] / cpu[m] >= _SPEEDUP_IS_PARALLEL,
                _io_verdict(io[m], fastest_io), shared[m],
                m == "threads" and gil_enabled(), _COMPLEXITY[m])
            for m in MODELS]
    return rows, models.startup_s


def _io_verdict(seconds: float, fastest: float) -> str:
    if seconds <= fastest * 1.5:
        return "best"
    return "yes" if seconds <= fastest * 6 else "not ideal"


# ---- output ----------------------------------------------------------------------------------


def table(rows: list[Row]) -> str:
    header = (f"{'model':<11} {'CPU-bound':>16}  {'parallel CPU':<13} {'I/O-bound':>16}  "
              f"{'best for I/O':<13} {'memory shared':<14} {'GIL issue':<10} complexity")
    lines = [header, "-" * len(header)]
    for r in rows:
        lines.append(
            f"{r.model:<11} {r.cpu_s:>7.2f} s {r.cpu_speedup:>5.2f}x  "
            f"{'yes' if r.parallel_cpu else 'no':<13} {r.io_s:>7.2f} s {r.io_speedup:>5.1f}x  "
            f"{r.best_for_io if r.model != 'plain loop' else '-':<13} "
            f"{_yes(r.memory_shared):<14} {_yes(r.gil_issue):<10} {r.complexity}")
    return "\n".join(lines)


def takeaways(rows: list[Row], workload: Workload, workers: int, threads: int,
              startup_s: float) -> list[str]:
    by = {r.model: r for r in rows}
    loop, th, aio, proc = by["plain loop"], by["threads"], by["asyncio"], by["processes"]
    gil = ("the GIL lets one thread count at a time" if th.gil_issue
           else "no GIL here, so threads count in parallel too")
    return [
        f"Threading = many workers, same brain, same memory: {workload.waits} waits took "
        f"{th.io_s:.2f} s on {threads} threads instead of {loop.io_s:.2f} s; counting "
        f"{th.cpu_speedup:.2f}x ({gil}).",
        f"Async = one brain, very smart scheduling: all {workload.waits} waits overlapped on "
        f"one thread in {aio.io_s:.2f} s ({aio.io_speedup:.0f}x); counting "
        f"{aio.cpu_speedup:.2f}x, since nothing in it awaits.",
        f"Multiprocessing = many brains, many memories, true parallelism: counting "
        f"{proc.cpu_speedup:.2f}x faster on {workers} processes; waiting only "
        f"{proc.io_speedup:.1f}x (one wait per process at a time); starting the pool took "
        f"{startup_s:.2f} s, paid once.",
    ]


def _busy_note(workers: int) -> str | None:
    """Other programs competing for the CPUs lower every parallel speed-up: say so."""
    import os

    try:
        load = os.getloadavg()[0]
    except (AttributeError, OSError):
        return None
    if load < workers * 0.5:
        return None
    return (f"Note: this machine was busy (load {load:.1f} on {workers} CPUs), so the parallel "
            "speed-ups are lower than an idle machine would show.")


def _yes(flag: bool) -> str:
    return "yes" if flag else "no"


def plot(rows: list[Row], path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")  # a file, never a window
    import matplotlib.pyplot as plt

    figure, (cpu_axis, io_axis) = plt.subplots(1, 2, figsize=(10, 3.5))
    names = [r.model for r in rows]
    cpu_axis.barh(names, [r.cpu_s for r in rows], color="tab:red")
    cpu_axis.set_title("CPU-bound: counting (s, lower is better)")
    io_axis.barh(names, [r.io_s for r in rows], color="tab:blue")
    io_axis.set_title("I/O-bound: waiting (s, lower is better)")
    for axis in (cpu_axis, io_axis):
        axis.invert_yaxis()
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


def _check_plot(path: str | None) -> None:
    """Fail before measuring, not after: a missing matplotlib or an unwritable file."""
    if path is None:
        return
    import importlib.util
    import os

    if importlib.util.find_spec("matplotlib") is None:
        raise UsageError("--plot needs matplotlib; install it with: "
                         "pip install 'manybrains[plot]'")
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        raise UsageError(f"--plot: no such folder: {folder}")


def run(args: argparse.Namespace) -> int:
    from .._cpus import usable_cpus

    _check_plot(args.plot)
    workers = usable_cpus()
    workload = (Workload(2 * workers, 1_500_000, 20, 0.05) if args.quick
                else Workload(2 * workers, 10_000_000, 50, 0.1))
    busy = _busy_note(workers)  # read before our own work raises the load
    start = time.perf_counter()
    rows, startup_s = measure(workload, workers)
    threads = min(32, workers + 4)
    lines = takeaways(rows, workload, workers, threads, startup_s)
    if args.plot:
        plot(rows, args.plot)
    if args.json:
        print(json.dumps({"cpus": workers, "threads": threads, "workload": asdict(workload),
                          "pool_startup_s": startup_s, "models": [asdict(r) for r in rows],
                          "takeaways": lines}, indent=2))
        return 0
    print(f"The cheat sheet, measured on this machine ({workers} CPUs, "
          f"Python {sys.version.split()[0]}).\n{workload.describe()}.\n")
    print(table(rows))
    print("\n" + "\n".join(f"- {line}" for line in lines))
    if busy:
        print(f"\n{busy}")
    print(f"\n({time.perf_counter() - start:.1f} s in all"
          + (f"; chart written to {args.plot})" if args.plot else ")"))
    return 0
