"""CPython's own tests of its pools pass against manybrains' drop-ins.

``cpython_conformance.py`` runs the process-pool classes of ``test.test_concurrent_futures``
against ``mb.ProcessPoolExecutor`` and the pool classes of ``test._test_multiprocessing``
against ``mb.Pool``, under forkserver and spawn, in a child interpreter whose standard library
has the ``test`` package (CPython 3.12 or newer; pyenv's 3.13 here). Every test must pass or be
skipped for a reason named in ``cpython_conformance.SKIPS`` (or by the stdlib itself).

manybrains' own dependencies reach that interpreter as links to this environment's pure-Python
packages (psutil's extension is ABI3, so it loads on any CPython 3); where they do not import
there, a virtual environment is built once under ``.venv-conformance/``.
"""

from __future__ import annotations

import glob
import importlib.util
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from cpython_conformance import SKIPS

ROOT = Path(__file__).resolve().parents[2]
RUNNER = Path(__file__).resolve().parents[1] / "cpython_conformance.py"
DEPENDENCIES = ("cloudpickle", "psutil", "tqdm")
_PROBE = "import test.test_concurrent_futures, test._test_multiprocessing"
FORCE = "MANYBRAINS_CONFORMANCE"

pytestmark = pytest.mark.timeout(240)


def _candidates() -> list[str]:
    found = [sys.executable]
    pyenv_root = os.environ.get("PYENV_ROOT", os.path.expanduser("~/.pyenv"))
    found += sorted(glob.glob(os.path.join(pyenv_root, "versions", "3.1[3-9]*", "bin",
                                           "python")), reverse=True)
    found += [f"/usr/bin/python3.{minor}" for minor in (14, 13, 12)]
    return found


def _has_test_package(python: str) -> bool:
    if not os.path.exists(python):
        return False
    probe = subprocess.run([python, "-c", f"import sys; assert sys.version_info >= (3, 12); "
                            f"{_PROBE}"], capture_output=True, timeout=60)
    return probe.returncode == 0


@pytest.fixture(scope="module")
def interpreter() -> str:
    # The same 45 s of work whatever interpreter runs the suite: done once per CI run, by the
    # interpreters that ship the suites (3.12 and 3.13 in .ci/run), unless asked for.
    if not os.environ.get(FORCE) and not _has_test_package(sys.executable):
        pytest.skip(f"CPython's own pool tests run in the suite of an interpreter that ships "
                    f"them (3.12 or newer with its `test` package); {FORCE}=1 runs them from "
                    "here with the newest one found")
    for python in _candidates():
        if _has_test_package(python):
            return python
    pytest.skip("no CPython >= 3.12 with its `test` package was found (looked at this "
                "interpreter, pyenv's versions and /usr/bin/python3.1x)")


@pytest.fixture(scope="module")
def child_path(interpreter: str, tmp_path_factory: pytest.TempPathFactory) -> str:
    """A PYTHONPATH under which ``interpreter`` imports manybrains and its dependencies."""
    links = tmp_path_factory.mktemp("conformance-deps")
    for name in DEPENDENCIES:
        spec = importlib.util.find_spec(name)
        if spec is not None and spec.submodule_search_locations:
            (links / name).symlink_to(next(iter(spec.submodule_search_locations)))
    path = os.pathsep.join([str(ROOT / "src"), str(links)])
    if _imports(interpreter, path):
        return path
    return os.pathsep.join([str(ROOT / "src"), _conformance_venv(interpreter)])


def _imports(python: str, path: str) -> bool:
    check = subprocess.run([python, "-c", "import " + ", ".join(DEPENDENCIES)],
                           env={**os.environ, "PYTHONPATH": path}, capture_output=True,
                           timeout=60)
    return check.returncode == 0


def _conformance_venv(python: str) -> str:
    where = ROOT / ".venv-conformance"
    site = subprocess.run([python, "-c", "import sys; print(f'python{sys.version_info[0]}."
                           "{sys.version_info[1]}')"], capture_output=True, text=True,
                          check=True).stdout.strip()
    packages = where / "lib" / site / "site-packages"
    if not _imports(python, str(packages)):
        built = subprocess.run([python, "-m", "venv", str(where)], capture_output=True)
        pip = subprocess.run([str(where / "bin" / "python"), "-m", "pip", "install", "-q",
                              *DEPENDENCIES], capture_output=True, text=True, timeout=600)
        if built.returncode or pip.returncode or not _imports(python, str(packages)):
            pytest.skip(f"{python} cannot import {', '.join(DEPENDENCIES)} and installing them "
                        f"into {where} failed: {pip.stderr[-300:]}")
    return str(packages)


SUITES = [(suite, method) for suite in ("executor", "pool") for method in ("forkserver", "spawn")]


def test_cpython_suites_pass(interpreter: str, child_path: str, tmp_path: Path) -> None:
    # The four runs go at once: most of their time is the tests' own sleeps.
    runs = {}
    for suite, method in SUITES:
        report = tmp_path / f"{suite}-{method}.json"
        log = (tmp_path / f"{suite}-{method}.log").open("w")
        runs[suite, method] = (report, log, subprocess.Popen(
            [interpreter, str(RUNNER), suite, method, str(report)],
            env={**os.environ, "PYTHONPATH": child_path}, cwd=tmp_path, stdout=log,
            stderr=subprocess.STDOUT))
    problems = []
    deadline = time.monotonic() + 200  # for all four together, inside the test's timeout
    for (suite, method), (report, log, process) in runs.items():
        try:
            process.wait(timeout=max(1.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            problems.append(f"{suite} under {method} did not finish in time")
        finally:
            process.kill()
            process.wait()
            log.close()
        problems += _check(suite, method, report)
    assert not problems, "\n\n".join(problems)


def _check(suite: str, method: str, report_path: Path) -> list[str]:
    if not report_path.exists():
        log = report_path.with_suffix(".log").read_text()
        return [f"{suite} under {method}: the runner did not report:\n{log[-3000:]}"]
    report = json.loads(report_path.read_text())
    summary = (f"{suite} under {method} on Python {report['python']}: {report['ran']} ran, "
               f"{report['passed']} passed, {report['failed']} failed, {report['skipped']} "
               "skipped")
    print(summary)
    problems = [f"{summary}\n{name}\n{trace}" for name, trace in report["failures"].items()]
    named = {f"manybrains: {reason}" for reason in SKIPS[suite].values()}
    problems += [f"{summary}: {test} skipped for an unlisted reason: {reason}"
                 for test, reason in report["skips"].items()
                 if reason.startswith("manybrains:") and reason not in named]
    if report["passed"] < {"executor": 40, "pool": 20}[suite]:
        problems.append(f"{summary}: fewer tests ran than the suite has")
    return problems
