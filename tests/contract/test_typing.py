"""The pool's methods type-check for plain and ``async def`` functions: mypy on
typing_check.py, against the source beside these tests."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("mypy")

ROOT = Path(__file__).resolve().parents[2]


def test_pool_methods_type_check_for_coroutine_functions(tmp_path: Path) -> None:
    checked = Path(__file__).with_name("typing_check.py")
    done = subprocess.run(
        [sys.executable, "-m", "mypy", "--config-file", str(ROOT / "pyproject.toml"),
         "--follow-imports=silent",  # errors elsewhere in src are the lint run's to report
         "--cache-dir", str(tmp_path / "cache"), str(checked)],
        env={**os.environ, "MYPYPATH": str(ROOT / "src")}, cwd=tmp_path,
        capture_output=True, text=True, timeout=50, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
