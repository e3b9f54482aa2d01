"""The primitives' kill soak runs end to end at a tiny size.

Two kills per primitive judge little, but they must not find a problem either: the exit
status is 0 only without a wedge, a duplicate or more items lost than kills. It must also
run every row, print its table, and leave no process or shared memory behind (the latter
checked by the autouse leak check as well).
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

SOAK = Path(__file__).resolve().parents[2] / "benchmarks" / "soak_primitives.py"
ROWS = ("Lock", "Value.add", "Array.add", "SharedArray.lock", "Semaphore(2)",
        "Queue producers", "Queue consumers")


def test_soak_primitives_tiny():
    done = subprocess.run([sys.executable, str(SOAK), "--tiny"], capture_output=True,
                          text=True, timeout=55, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "Traceback" not in done.stderr, done.stderr
    time = r"(?:[\d.]+ s|-)"
    for name in ROWS:
        row = rf"^{re.escape(name)} +\d+ +(?:\d+|-) +\d+ +(?:\d+|-) +{time} +{time}$"
        assert re.search(row, done.stdout, re.M), done.stdout
    assert "/dev/shm: nothing left behind" in done.stdout, done.stdout
