"""The side-by-side harness runs every workload on every library at tiny size (numbers are not
checked here): each cell gives a number, or says plainly that its library is not installed or
has no API for the workload (S1: one future per task). The Ray family runs on the session's
Ray (``--ray-address``): starting an instance of its own takes seconds of both cores, and a
full run still does (W5, a family's cold start, is not in --tiny either)."""

from __future__ import annotations

import importlib.util
import json
import math
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

pytest.importorskip("numpy")
pytest.importorskip("scipy")

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from benchmarks.harness import TINY_SKIPS_FAMILY_COLD  # noqa: E402
from benchmarks.peers import ADAPTERS  # noqa: E402
from benchmarks.workloads import WORKLOADS  # noqa: E402


@pytest.fixture(scope="session")
def ray_address(request: pytest.FixtureRequest) -> Iterator[list[str]]:
    """``--ray-address`` and the session Ray's address, where Ray is installed (up before the
    test's leak snapshot, being session-scoped); no option where it is not, so that the Ray
    cells are still reported as skipped."""
    if importlib.util.find_spec("ray") is None:
        yield []
    else:
        yield ["--ray-address", request.getfixturevalue("ray_cluster")]


@pytest.mark.timeout(170)
def test_every_workload_and_library_gives_a_number_or_a_reported_skip(
        tmp_path: Path, ray_address: list[str]) -> None:
    results_file = tmp_path / "results.json"
    done = subprocess.run([sys.executable, "-m", "benchmarks.harness", "--tiny", *ray_address,
                           "--json", str(results_file), "--out", str(tmp_path)],
                          cwd=ROOT, capture_output=True, text=True, timeout=160, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    results = json.loads(results_file.read_text())
    cells = {(c["workload"], c["library"]): c for c in results["cells"]}

    for key, workload in WORKLOADS.items():
        libraries = [n for n, a in ADAPTERS.items() if a.kind != "baseline"]
        for library in [*libraries, *workload.baselines]:
            cell = cells.pop((key, library))
            if workload.needs and not ADAPTERS[library].supports(workload.needs[0]):
                assert cell["status"] == "skipped", cell
                assert cell["reason"] == workload.needs[1]
            elif ADAPTERS[library].family and key == "W5":  # a whole cluster: not in --tiny
                assert cell["status"] == "skipped", cell
                assert cell["reason"] == TINY_SKIPS_FAMILY_COLD
            elif ADAPTERS[library].available():
                assert cell["status"] == "ok", (key, library, cell.get("reason"),
                                                cell.get("traceback"))
                assert math.isfinite(cell["median_s"]) and cell["median_s"] >= 0
            else:
                assert cell["status"] == "skipped", cell
                assert "not installed" in cell["reason"]
    assert not cells, f"cells nobody asked for: {sorted(cells)}"
    # one future per task: joblib alone has no such API; the rate is reported beside the time
    s1 = {c["library"]: c for c in results["cells"] if c["workload"] == "S1"}
    assert {n for n, c in s1.items() if c["status"] == "skipped"
            and c["reason"] == "no one-future-per-task API"} == {"joblib"}
    assert s1["manybrains"]["extras"]["tasks_per_s"] > 0

    page = (tmp_path / "benchmarks.md").read_text()
    assert "| W1 200,000 x*x, defaults |" in page and "B3" in page
    assert "measure nothing" in page  # a tiny run never passes for real numbers
    if importlib.util.find_spec("matplotlib") is not None:
        assert (tmp_path / "benchmarks.png").stat().st_size > 1000
