"""The BLAS-cap benchmark runs end to end at a tiny size (its numbers are not checked here)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from manybrains.backends.processes import inner_threads

BENCHMARK = Path(__file__).resolve().parents[2] / "benchmarks" / "bench_inner_threads.py"


def test_bench_inner_threads_tiny():
    pytest.importorskip("numpy")
    pytest.importorskip("threadpoolctl")
    done = subprocess.run([sys.executable, str(BENCHMARK), "--tiny"], capture_output=True,
                          text=True, timeout=55, check=False)
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr, done.stderr
    row = r" +[\d.]+ +[\d.]+$"
    assert re.search(r"^inline \(BLAS threads: \d+\)" + row, done.stdout, re.M), done.stdout
    assert re.search(r"^inline, BLAS on 1 thread" + row, done.stdout, re.M), done.stdout
    # The capped row's workers really ran the cap: the initializer's apply() took effect.
    share = inner_threads.default(2)
    assert re.search(rf"^mb\.Pool\(2\), capped at {share} each \[workers ran {share}\]" + row,
                     done.stdout, re.M), done.stdout
    for label in (r"mb\.Pool\(2\), uncapped \(\d+ each\)", r"mb\.Pool\(2\), no option given"):
        assert re.search(rf"^{label} \[workers ran \d+\]" + row, done.stdout, re.M), done.stdout
