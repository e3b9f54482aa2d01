"""manybrains against every peer, side by side: ``python -m benchmarks.harness``.

    python -m benchmarks.harness                  # everything; writes docs/benchmarks.{md,png,json}
    python -m benchmarks.harness --tiny           # seconds: every workload and library, tiny sizes
    python -m benchmarks.harness --tiny --ray-address 127.0.0.1:6379  # Ray ones on that cluster
    python -m benchmarks.harness --only W1,W3 --repeat 5 --json out.json
    python -m benchmarks.harness --only S1,W1n --libraries manybrains,loky --json out.json
    python -m benchmarks.harness --from-json docs/benchmarks.json --out docs   # redraw only

Each cell (one workload on one library) runs in a fresh subprocess with a time limit; a cold
workload (pool start-up is part of its clock) runs each repeat in a fresh subprocess of its
own. A cell's number is the median of its repeats, and its ratio is to the fastest peer on
that workload (baselines such as the plain loop are shown but are not peers). A library that
is not installed is reported as skipped, and so is one whose adapter lacks the operation a
workload needs (S1: a one-future-per-task API), with that reason; a cell that raises, gives a
wrong result or runs out of time is reported as failed, with the reason. ``--tiny`` runs all
the cells of one library (or of one family of libraries: the Ray ones share one Ray
instance) in one subprocess, so that the whole matrix is checked in seconds: its numbers
mean nothing.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from collections import Counter
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from .peers import ADAPTERS
from .workloads import CELL_BUDGET_S, WORKLOADS

ROOT = Path(__file__).resolve().parent.parent
Cell = tuple[str, str]  # (workload key, library name)

# Every library gets one BLAS/OpenMP thread per process, as loky and joblib already arrange
# for their own workers: with one thread per worker no library gains or loses by
# oversubscribing the cores.
_ONE_THREAD = {name: "1" for name in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS",
                                      "MKL_NUM_THREADS", "VECLIB_MAXIMUM_THREADS")}


# ---- inside a cell's subprocess ---------------------------------------------------------------

def run_cells_here(cells: Sequence[Cell], size: str, repeat: int, workers: int,
                   result_file: str, ray_address: str | None = None) -> None:
    """Run ``cells`` one after another in this process, appending one JSON line each; the
    Ray adapters on the cluster at ``ray_address`` where one is given."""
    from . import peers

    try:
        if ray_address and any(ADAPTERS[library].family == "ray" for _, library in cells):
            peers.join_ray(ray_address)
        for key, library in cells:
            workload = WORKLOADS[key]
            record: dict[str, Any] = {"workload": key, "library": library}
            try:
                adapter = ADAPTERS[library](workers)
                sizes = workload.tiny if size == "tiny" else workload.full
                record.update(status="ok", samples=workload.measure(adapter, sizes, repeat))
            # anything a library raises is reported in the table; the next cell still runs
            except Exception as exc:  # noqa: BLE001
                record.update(status="failed", reason=f"{type(exc).__name__}: {exc}",
                              traceback=traceback.format_exc(limit=8))
            with open(result_file, "a") as out:
                out.write(json.dumps(record) + "\n")
    finally:
        peers.close_clusters()


# ---- the parent: planning and running subprocesses --------------------------------------------

def plan(keys: Sequence[str], libraries: Sequence[str] | None) -> list[Cell]:
    cells = []
    for key in keys:
        workload = WORKLOADS[key]
        names = [name for name, a in ADAPTERS.items() if a.kind != "baseline"]
        for name in [*names, *workload.baselines]:
            if libraries is None or name in libraries:
                cells.append((key, name))
    return cells


def child_env() -> dict[str, str]:
    env = {**os.environ, **_ONE_THREAD}
    # so that every library's workers (forkserver, spawn, loky, Dask's nannies) import the
    # task functions from this checkout
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH")) if p)
    return env


def run_subprocess(cells: Sequence[Cell], size: str, repeat: int, workers: int,
                   timeout: float, ray_address: str | None = None) -> list[dict[str, Any]]:
    """Run ``cells`` in one fresh interpreter; a cell it did not finish is a failure."""
    with tempfile.TemporaryDirectory(prefix="mb-bench-") as tmp:
        result_file = str(Path(tmp) / "cells.jsonl")
        command = [sys.executable, "-m", "benchmarks.harness", "--cells",
                   ",".join(f"{k}:{lib}" for k, lib in cells), "--size", size,
                   "--repeat", str(repeat), "--workers", str(workers), "--result", result_file]
        if ray_address:
            command += ["--ray-address", ray_address]
        # its own session: on a timeout the whole tree (its pool workers too) is killed
        proc = subprocess.Popen(command, cwd=ROOT, env=child_env(), start_new_session=True,
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        try:
            output, _ = proc.communicate(timeout=timeout)
            why = f"the cell's process exited with {proc.returncode}: {output[-1500:]}"
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.communicate()
            why = f"timed out after {timeout:.0f} s"
        done = []
        if os.path.exists(result_file):
            with open(result_file) as lines:
                done = [json.loads(line) for line in lines]
    finished = {(r["workload"], r["library"]) for r in done}
    return done + [{"workload": k, "library": lib, "status": "failed", "reason": why}
                   for k, lib in cells if (k, lib) not in finished]


# A family's W5 (a fresh interpreter to its first result) starts a cluster of its own (a Ray
# instance: several seconds of both cores), and a --tiny run checks wiring, not timings: those
# cells run in full runs only.
TINY_SKIPS_FAMILY_COLD = "--tiny: its fresh start starts a cluster of its own; full runs time it"


def skip_reason(cell: Cell, *, tiny: bool) -> str | None:
    """Why ``cell`` is not run at all, or None: it runs."""
    key, library = cell
    adapter, needs = ADAPTERS[library], WORKLOADS[key].needs
    if needs is not None and not adapter.supports(needs[0]):
        return needs[1]
    if tiny and adapter.family and key == "W5":
        return TINY_SKIPS_FAMILY_COLD
    if not adapter.available():
        return f"{adapter.module} is not installed"
    return None


def run_matrix(cells: Sequence[Cell], *, tiny: bool, repeat: int, workers: int,
               timeout: float, jobs: int, ray_address: str | None = None
               ) -> list[dict[str, Any]]:
    runnable, records = [], []
    for key, library in cells:
        reason = skip_reason((key, library), tiny=tiny)
        if reason is None:
            runnable.append((key, library))
        else:
            records.append({"workload": key, "library": library, "status": "skipped",
                            "reason": reason})
    if tiny:  # the matrix is checked, nothing is timed
        groups = tiny_groups(runnable)
        with ThreadPoolExecutor(jobs) as pool:
            for done in pool.map(lambda g: run_subprocess(g, "tiny", 1, workers, timeout,
                                                          ray_address), groups):
                records.extend(done)
                for record in done:
                    progress(record)
        return records
    for cell in runnable:
        record = run_full_cell(cell, repeat, workers, timeout)
        progress(record)
        records.append(record)
    return records


def tiny_groups(cells: Sequence[Cell]) -> list[list[Cell]]:
    """One process per library, or per family of libraries that share what ``prepare``
    starts (the Ray adapters: one Ray instance, started once), the families first: they are
    the slowest."""
    groups: dict[str, list[Cell]] = {}
    for key, library in cells:
        groups.setdefault(ADAPTERS[library].family or library, []).append((key, library))
    return sorted(groups.values(), key=lambda g: ADAPTERS[g[0][1]].family is None)


def run_full_cell(cell: Cell, repeat: int, workers: int, timeout: float) -> dict[str, Any]:
    if not WORKLOADS[cell[0]].cold:
        return run_subprocess([cell], "full", repeat, workers, timeout)[0]
    samples: list[dict[str, Any]] = []
    for _ in range(repeat):  # a fresh process per repeat: start-up is what is measured
        record = run_subprocess([cell], "full", 1, workers, timeout)[0]
        if record["status"] != "ok":
            return record
        samples.extend(record["samples"])
        spent = sum(s["seconds"] for s in samples)
        if spent + samples[-1]["seconds"] > CELL_BUDGET_S:
            break
    return {**record, "samples": samples}


def progress(record: dict[str, Any]) -> None:
    if record["status"] == "ok":
        times = [s["seconds"] for s in record["samples"]]
        text = f"{statistics.median(times):.4f} s (median of {len(times)})"
    else:
        text = f"{record['status']}: {record.get('reason', '')[:300]}"
    print(f"  {record['workload']:<4} {record['library']:<19} {text}", file=sys.stderr,
          flush=True)


# ---- summarising ------------------------------------------------------------------------------

def summarise(records: list[dict[str, Any]], workers: int) -> list[dict[str, Any]]:
    """Medians, extra metrics, cross-library result checks and ratios to the best peer."""
    for record in records:
        record["kind"] = ADAPTERS[record["library"]].kind
        if record["status"] == "ok":
            samples = record["samples"]
            record["median_s"] = statistics.median(s["seconds"] for s in samples)
            record["extras"] = {key: statistics.median(s[key] for s in samples)
                                for key in samples[0] if key not in ("seconds", "check")}
    check_results(records)
    serial = {r["workload"]: r["median_s"] for r in records
              if r["library"] == "serial" and r["status"] == "ok"}
    for key in {r["workload"] for r in records}:
        cells = [r for r in records if r["workload"] == key and r["status"] == "ok"]
        peers = [r["median_s"] for r in cells if r["kind"] == "peer"]
        best = min(peers) if peers else None
        for r in cells:
            r["ratio_to_best_peer"] = r["median_s"] / best if best else None
            if "efficiency" in WORKLOADS[key].extras and key in serial:
                parallel = 1 if r["library"] == "serial" else workers
                r["extras"]["efficiency"] = serial[key] / (parallel * r["median_s"])
    return records


def check_results(records: list[dict[str, Any]]) -> None:
    """Where a workload's answer is too costly to know in advance, every library must agree
    with the most common answer."""
    for key in WORKLOADS:
        cells = [r for r in records if r["workload"] == key and r["status"] == "ok"
                 and "check" in r["samples"][0]]
        votes = Counter(s["check"] for r in cells for s in r["samples"])
        if not votes:
            continue
        agreed = votes.most_common(1)[0][0]
        for r in cells:
            wrong = [s["check"] for s in r["samples"] if s["check"] != agreed]
            if wrong:
                r.update(status="failed", reason=f"wrong result {wrong[0]} (others: {agreed})")


# ---- the machine ------------------------------------------------------------------------------

def machine() -> dict[str, Any]:
    import platform
    from importlib import metadata

    import psutil

    model = "unknown"
    try:
        with open("/proc/cpuinfo") as info:
            model = next(line.split(":", 1)[1].strip() for line in info
                         if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    versions = {}
    for package in ("manybrains", "loky", "joblib", "mpire", "pebble", "dask", "distributed",
                    "ray", "numpy", "scipy", "cloudpickle", "psutil", "matplotlib"):
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            versions[package] = None
    return {"cpu_model": model, "logical_cpus": os.cpu_count(),
            "usable_cpus": len(os.sched_getaffinity(0)),
            "ram_gib": round(psutil.virtual_memory().total / 2**30, 1),
            "os": platform.platform(), "python": platform.python_version(),
            "implementation": platform.python_implementation(), "versions": versions}


# ---- the command ------------------------------------------------------------------------------

def parse(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.harness", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tiny", action="store_true",
                        help="tiny sizes, one repeat: checks that every cell runs; no timings")
    parser.add_argument("--only", help="comma-separated workloads, e.g. W1,W3 (default: all)")
    parser.add_argument("--libraries", help="comma-separated libraries (default: all)")
    parser.add_argument("--repeat", type=int, default=3, help="repeats per cell (median)")
    parser.add_argument("--workers", type=int, default=None,
                        help="workers per pool (default: the CPUs this process may use)")
    parser.add_argument("--timeout", type=float, default=None,
                        help="seconds per subprocess (default 300; --tiny: 150)")
    parser.add_argument("--jobs", type=int, default=2,
                        help="--tiny only: libraries checked at the same time")
    parser.add_argument("--json", help="write the results to this JSON file")
    parser.add_argument("--out", help="write benchmarks.md and benchmarks.png to this folder "
                        "(default for a full run of everything: docs/)")
    parser.add_argument("--from-json", help="no run: redraw the report from this JSON file")
    parser.add_argument("--ray-address", help="--tiny only: the Ray adapters join this running "
                        "Ray cluster (left running) instead of starting an instance of their "
                        "own, e.g. the test suite's")
    parser.add_argument("--cells", help=argparse.SUPPRESS)  # the subprocess side
    parser.add_argument("--size", default="full", help=argparse.SUPPRESS)
    parser.add_argument("--result", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.repeat < 1:
        parser.error("--repeat must be >= 1")
    if args.ray_address and not (args.tiny or args.cells):
        parser.error("--ray-address is for --tiny runs: a full run times Ray on an instance "
                     "of its own")
    for name, given, known in (("workload", args.only, WORKLOADS),
                               ("library", args.libraries, ADAPTERS)):
        unknown = [x for x in (given or "").split(",") if x and x not in known]
        if unknown:
            parser.error(f"unknown {name} {unknown}; choose from {', '.join(known)}")
    return args


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    args = parse(argv)
    workers = args.workers or len(os.sched_getaffinity(0))
    if args.cells:
        cells = [tuple(c.split(":", 1)) for c in args.cells.split(",")]
        run_cells_here(cells, args.size, args.repeat, workers, args.result,  # type: ignore[arg-type]
                       args.ray_address)
        return {}
    from . import report

    results = (json.loads(Path(args.from_json).read_text()) if args.from_json
               else run(args, workers))
    print(report.markdown_table(results))
    out = args.out or (None if args.tiny or args.only or args.libraries or args.from_json
                       else str(ROOT / "docs"))
    json_path = args.json or (str(Path(out) / "benchmarks.json") if out and not args.from_json
                              else None)
    if json_path:
        Path(json_path).write_text(json.dumps(results, indent=1) + "\n")
    if out:
        Path(out).mkdir(parents=True, exist_ok=True)
        report.write(results, Path(out))
    return results


def sample_load(loads: list[float], stop: threading.Event) -> None:
    while not stop.wait(30.0):
        loads.append(os.getloadavg()[0])


def run(args: argparse.Namespace, workers: int) -> dict[str, Any]:
    keys = args.only.split(",") if args.only else list(WORKLOADS)
    libraries = args.libraries.split(",") if args.libraries else None
    timeout = args.timeout or (150.0 if args.tiny else 300.0)
    repeat = 1 if args.tiny else args.repeat
    started, load_before = time.time(), os.getloadavg()
    print(f"{len(plan(keys, libraries))} cells, {repeat} repeat(s), {workers} workers; "
          f"load average {load_before[0]:.2f}", file=sys.stderr, flush=True)
    loads: list[float] = []
    stop = threading.Event()
    # the machine may be shared: the 1-minute load average every 30 s says how quiet it was
    sampler = threading.Thread(target=sample_load, args=(loads, stop), daemon=True)
    sampler.start()
    try:
        records = run_matrix(plan(keys, libraries), tiny=args.tiny, repeat=repeat,
                             workers=workers, timeout=timeout, jobs=max(1, args.jobs),
                             ray_address=args.ray_address)
    finally:
        stop.set()
    return {
        "settings": {"tiny": args.tiny, "repeat": repeat, "workers": workers,
                     "timeout_s": timeout, "command": " ".join(["python -m benchmarks.harness",
                                                                *(sys.argv[1:])])},
        "machine": machine(),
        "run": {"started": time.strftime("%Y-%m-%d %H:%M:%S %Z", time.localtime(started)),
                "duration_s": round(time.time() - started, 1),
                "load_average_before": load_before, "load_average_after": os.getloadavg(),
                "load_average_during": loads},
        "workloads": {k: {"title": w.title, "clock": w.clock, "cold": w.cold,
                          "sizes": w.tiny if args.tiny else w.full}
                      for k, w in WORKLOADS.items() if k in keys},
        "libraries": {name: {"kind": a.kind, "how": a.how, "family": a.family}
                      for name, a in ADAPTERS.items()},
        "cells": summarise(records, workers),
    }


if __name__ == "__main__":
    main()
