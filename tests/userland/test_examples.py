"""Every script in examples/ runs and prints what it promises."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def run(name: str, *args: str) -> str:
    done = subprocess.run([sys.executable, str(EXAMPLES / name), *args], capture_output=True,
                          text=True, timeout=50, check=False)
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr and "leaked" not in done.stderr, done.stderr
    return done.stdout


def test_every_example_is_tested():
    tested = {"01_processes.py", "02_threads_vs_processes.py", "03_queue.py",
              "04_shared_value.py", "05_shared_array.py", "06_memory.py"}
    assert {p.name for p in EXAMPLES.glob("*.py")} == tested


def test_processes():
    lines = run("01_processes.py").splitlines()
    processing = sorted(line.split(" (")[0] for line in lines[:-1])
    assert processing == ["Processing 1", "Processing 2", "Processing 3"]
    pids = {int(m) for m in re.findall(r"pid (\d+)", "\n".join(lines[:-1]))}
    assert len(pids) == 3
    assert lines[-1].startswith("Done: 3 processes ran the task")


def test_threads_vs_processes():
    import manybrains as mb

    out = run("02_threads_vs_processes.py", "200000")
    assert f"cores: {mb.usable_cpus()}\n" in out  # the machine's, not a constant
    threads = float(re.search(r"^threads: +(\d+\.\d+) s", out, re.M)[1])
    processes = float(re.search(r"^processes: +(\d+\.\d+) s", out, re.M)[1])
    assert threads > 0 and processes > 0  # both loops ran (the example checks the counts)
    assert re.search(r"^speed-up: +\d+\.\d+x$", out, re.M)


def test_queue():
    assert run("03_queue.py") == "Hello from process\n"


def test_shared_value():
    out = run("04_shared_value.py", "20000")
    assert "with the lock:    40000 of 40000 (0 updates lost)" in out
    unlocked = re.search(r"without the lock: (\d+) of 40000 \(\d+ updates lost\)", out)
    assert unlocked and 0 < int(unlocked[1]) <= 40000  # updates can be lost, never invented


def test_shared_array():
    pytest.importorskip("numpy")
    out = run("05_shared_array.py")
    assert "row sums: [10, 60, 110, 160, 210, 260, 310, 360]" in out
    assert "[70 71 72 73 74]]" in out


def test_memory_picture():
    out = run("06_memory.py")
    main = re.search(r"^main: pid (\d+), data at (0x[0-9a-f]+)", out, re.M)
    assert main
    processes = re.findall(r"^process \d: pid (\d+), data at \S+, 2 items", out, re.M)
    assert len(processes) == 2 and main[1] not in processes
    assert "after processes: main sees 1 item(s)" in out
    threads = re.findall(r"^thread \d: pid (\d+), data at (0x[0-9a-f]+)", out, re.M)
    assert threads == [(main[1], main[2])] * 2  # same process, same list
    assert "after threads: main sees 3 items" in out
