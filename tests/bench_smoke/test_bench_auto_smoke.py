"""The auto benchmark runs end to end at a tiny size (its numbers are not checked here)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "benchmarks" / "bench_auto.py"
sys.path.insert(0, str(ROOT))

from benchmarks.bench_auto import WORKLOADS  # noqa: E402


@pytest.mark.timeout(180)
def test_bench_auto_tiny_times_every_workload_on_every_backend_and_scores_auto():
    # two cells at a time: its numbers are not checked, each cell is a fresh interpreter
    done = subprocess.run([sys.executable, str(SCRIPT), "--tiny", "--jobs", "2"],
                          capture_output=True, text=True, timeout=170, check=False, cwd=ROOT)
    assert done.returncode == 0, done.stderr
    out = done.stdout
    kinds = {w.kind for w in WORKLOADS}
    assert kinds >= {"cpu", "native", "waiting", "mixed", "tiny"}
    scored = 0
    for work in WORKLOADS:
        row = re.search(rf"^{re.escape(work.name)} +{work.kind} +(.*)$", out, re.M)
        assert row, (work.name, out)
        if "skipped" in row.group(1):
            continue
        times = re.findall(r"([\d.]+)s\b", row.group(1))
        assert len(times) == (5 if work.needs == "coroutine" else 4), row.group(0)
        assert re.search(r"(inline|threads|processes|asyncio) +[\d.]+x +(yes|NO)$",
                         row.group(1)), row.group(0)
        scored += 1
    assert re.search(rf"^auto within 1.25x of the best backend \(\+50 ms\): \d+ of {scored}$",
                     out, re.M), out
    assert out.count("auto chose ") == scored
    assert re.search(r"^20 x 10 ms waits .*asyncio.gather [\d.]+s, 20 threads [\d.]+s$", out,
                     re.M), out
    for label in ("seen for the first time", "warm", "first call in a fresh process"):
        assert re.search(rf"mb\.map, [^\n]*{label}[^\n]* [\d.]+s +[\d.]+x gather, [\d.]+x "
                         "threads", out), (label, out)
