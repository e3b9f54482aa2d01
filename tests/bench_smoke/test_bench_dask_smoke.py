"""The Dask benchmark runs end to end in its tiny mode (numbers are not checked here)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("distributed")

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "bench_dask.py"


@pytest.mark.timeout(180)
def test_bench_dask_tiny_mode_runs_and_reports_every_case() -> None:
    # Its own process: the benchmark starts and closes a LocalCluster of its own.
    done = subprocess.run([sys.executable, str(SCRIPT), "--tiny"], capture_output=True,
                          text=True, timeout=170)
    assert done.returncode == 0, done.stderr[-3000:]
    lines = done.stdout.splitlines()
    for case in ("tiny", "cpu", "lists"):
        assert any(line.startswith(case) and line.endswith("x") for line in lines), done.stdout
    assert "goal tiny >= 10x" in done.stdout
