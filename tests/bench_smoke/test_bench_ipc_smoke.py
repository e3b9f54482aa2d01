"""The IPC benchmarks run end to end at a tiny size (their numbers are not checked here)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"


def run_tiny(script: str) -> str:
    done = subprocess.run([sys.executable, str(BENCHMARKS / script), "--tiny"],
                          capture_output=True, text=True, timeout=55, check=False)
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr, done.stderr
    return done.stdout


def test_bench_queue_tiny():
    out = run_tiny("bench_queue.py")
    number = r"[\d,]+"
    assert re.search(rf"^manybrains\.Queue +{number} +{number} +{number} +[\d.]+$", out, re.M)
    for peer in ("mp.Queue", "mp.SimpleQueue"):
        assert re.search(rf"^{re.escape(peer)} +{number} +{number} +- +[\d.]+$", out, re.M)


def test_bench_arrays_tiny():
    pytest.importorskip("numpy")
    out = run_tiny("bench_arrays.py")
    for label in ("manybrains.Pool", "multiprocessing.Pool"):
        assert re.search(rf"^{re.escape(label)} +[\d.]+ +[\d.]+ +\d+$", out, re.M)
    for label in ("manybrains.SharedArray (forkserver)", "global inherited by fork (+ start)",
                  "shared_memory by hand (forkserver)"):
        assert re.search(rf"^{re.escape(label)} +[\d.]+ +[\d.]+$", out, re.M)
