"""The Ray benchmark runs end to end in its tiny mode (numbers are not checked here)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("ray")

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "bench_ray.py"


@pytest.mark.timeout(180)
def test_bench_ray_tiny_mode_runs_and_reports_every_case(ray_cluster: str) -> None:
    # Its own process, on the session's Ray (starting one of its own takes seconds; the
    # benchmark's own start is the same ray.init as the harness's Ray peers').
    done = subprocess.run([sys.executable, str(SCRIPT), "--tiny", "--address", ray_cluster],
                          capture_output=True, text=True, timeout=170)
    assert done.returncode == 0, done.stderr[-3000:]
    lines = done.stdout.splitlines()
    for case in ("tiny", "shared", "shared-put", "shared-map", "lists"):
        assert any(line.split()[:1] == [case] and line.endswith("x") for line in lines), \
            done.stdout
    assert "goal tiny >= 10x" in done.stdout
