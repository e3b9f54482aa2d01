"""The backends benchmark runs end to end at a tiny size (its numbers are not checked here)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "bench_backends.py"


def test_bench_backends_tiny_prints_every_case_beside_its_peer():
    done = subprocess.run([sys.executable, str(SCRIPT), "--tiny"], capture_output=True,
                          text=True, timeout=55, check=False)
    assert done.returncode == 0, done.stderr
    out = done.stdout
    for case, peer in [("waiting (coroutine)", "asyncio.gather"),
                       ("waiting (blocking)", "20 threads"),
                       ("computing (4 calls)", "serial, 1 core"),
                       ("cheap (2000 x*x)", "plain loop")]:
        assert re.search(rf"^{re.escape(case)} +mb\.map +[\d.]+ ms .*{re.escape(peer)} +[\d.]+ ms",
                         out, re.M), out
    assert re.search(r"^200 coroutines +processes, 2 workers: +[\d.]+ ms", out, re.M), out
    assert "auto chose threads for blocking_wait" in out
