"""BLAS/OpenMP threads in workers are capped at their share of the CPUs.

The pool tests read ``threadpoolctl.threadpool_info()`` inside tasks of a real script (run as
a subprocess, so that whether the parent imported numpy and which variables it was started
with are the test's choice), under every start method. Each runs twice: with the cap applied
by an initializer that calls :func:`inner_threads.cap` (the functions), and by the engine
itself (``engine``: what a user gets with no initializer).
"""

from __future__ import annotations

import os
import textwrap

import pytest
import usercode
from conftest import START_METHODS

import manybrains as mb
from manybrains._cpus import usable_cpus
from manybrains.backends.processes import inner_threads

pytest.importorskip("numpy")
pytest.importorskip("threadpoolctl")

CPUS = usable_cpus()
needs_two_cpus = pytest.mark.skipif(CPUS < 2, reason="one CPU: the cap and no cap are the same")

# ---- the variables ------------------------------------------------------------------------


def test_default_is_each_workers_share_of_the_usable_cpus(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(inner_threads, "usable_cpus", lambda: 8)
    assert [inner_threads.default(w) for w in (1, 3, 8, 16)] == [8, 2, 1, 1]


@pytest.mark.parametrize(("bad", "error"), [(0, ValueError), (-2, ValueError),
                                            (True, TypeError), ("2", TypeError)])
def test_bad_counts_are_refused(bad: object, error: type[Exception]):
    with pytest.raises(error, match="must be"):
        inner_threads.environment(bad)  # type: ignore[arg-type]
    with pytest.raises(error, match="workers must be"):
        inner_threads.default(bad)  # type: ignore[arg-type]
    with pytest.raises(error, match="inner_threads must be"):
        mb.Processes(inner_threads=bad)  # type: ignore[arg-type]


def test_every_variable_is_set_when_the_user_set_none():
    env = inner_threads.environment(3, environ={"PATH": "/bin"})
    assert {name: env[name] for name in inner_threads.VARIABLES} == dict.fromkeys(
        inner_threads.VARIABLES, "3")
    assert set(env[inner_threads.MARKER].split(",")) == set(inner_threads.VARIABLES)


def test_a_library_the_user_configured_keeps_the_users_count():
    # OpenBLAS, MKL, BLIS and numexpr also read OMP_NUM_THREADS: setting theirs would
    # override what the user asked of them.
    env = inner_threads.environment(1, environ={"OMP_NUM_THREADS": "4"})
    assert set(env) == {"VECLIB_MAXIMUM_THREADS", inner_threads.MARKER}
    env = inner_threads.environment(1, environ={"OPENBLAS_NUM_THREADS": "4"})
    assert "OPENBLAS_NUM_THREADS" not in env
    assert env["OMP_NUM_THREADS"] == env["MKL_NUM_THREADS"] == "1"


def test_override_sets_every_variable_whatever_the_user_set():
    env = inner_threads.environment(2, override=True, environ={"OMP_NUM_THREADS": "4"})
    assert env["OMP_NUM_THREADS"] == env["OPENBLAS_NUM_THREADS"] == "2"


def test_variables_set_by_manybrains_are_not_taken_for_the_users():
    # A worker's own environment (a nested pool starts from it) holds the cap it was given.
    worker_env = {"PATH": "/bin", **inner_threads.environment(2, environ={})}
    assert inner_threads.user_set(worker_env) == set()
    assert inner_threads.environment(1, environ=worker_env)["OPENBLAS_NUM_THREADS"] == "1"


def test_a_cap_that_fails_warns_and_the_worker_goes_on(monkeypatch: pytest.MonkeyPatch):
    import threadpoolctl

    def broken() -> None:
        raise OSError("unreadable library")

    monkeypatch.setattr(os, "environ", {})  # apply() writes the variables here, not ours
    monkeypatch.setattr(inner_threads, "_libraries_loaded", lambda: True)
    monkeypatch.setattr(threadpoolctl, "ThreadpoolController", broken)
    with pytest.warns(RuntimeWarning, match="could not cap .* at 2: OSError: unreadable"):
        inner_threads.apply(2)
    assert os.environ["OPENBLAS_NUM_THREADS"] == "2"


# ---- apply() in a fresh interpreter --------------------------------------------------------

BLAS_THREADS = """
def blas_threads(_item=None):
    import numpy  # noqa: F401 - loads the BLAS library if this process has not yet
    from threadpoolctl import threadpool_info

    return sorted({lib["num_threads"] for lib in threadpool_info() if lib["user_api"] == "blas"})
"""


# The scripts start with none of the variables, whatever this process holds (a test that ran
# a pool's initializer in this process may have set them), plus those a test gives.
NO_VARIABLES = dict.fromkeys(
    [*{name for reads in inner_threads.VARIABLES.values() for name in reads}, inner_threads.MARKER],
    "")


def _run(source: str, **env: str) -> usercode.Outcome:
    outcome = usercode.run(BLAS_THREADS + textwrap.dedent(source), timeout=60,
                           env={**NO_VARIABLES, **env})
    assert outcome.returncode == 0, outcome
    return outcome


@needs_two_cpus
def test_apply_before_numpy_loads_sets_the_variables_and_imports_nothing():
    outcome = _run("""
        import os, sys
        from manybrains.backends.processes import inner_threads

        inner_threads.apply(1)
        report("imported", [m for m in ("threadpoolctl", "numpy") if m in sys.modules])
        report("variable", os.environ["OPENBLAS_NUM_THREADS"])
        report("threads", blas_threads())
    """)
    assert outcome.reports == {"imported": [], "variable": "1", "threads": [1]}


@needs_two_cpus
def test_apply_caps_a_library_already_loaded():
    outcome = _run("""
        import numpy
        from manybrains.backends.processes import inner_threads

        report("before", blas_threads())
        inner_threads.apply(1)
        report("after", blas_threads())
    """)
    assert outcome.reports == {"before": [CPUS], "after": [1]}


@needs_two_cpus
def test_apply_leaves_a_loaded_library_the_user_configured():
    outcome = _run("""
        import numpy
        from manybrains.backends.processes import inner_threads

        inner_threads.apply(1)
        report("kept", blas_threads())
        inner_threads.apply(1, override=True)
        report("override", blas_threads())
    """, OPENBLAS_NUM_THREADS="2")
    assert outcome.reports == {"kept": [2], "override": [1]}


# ---- in a pool's workers ------------------------------------------------------------------

POOL = """
import manybrains as mb
from manybrains.backends.processes import inner_threads

if NUMPY_FIRST:
    import numpy  # the parent loaded BLAS: a fork-like worker holds it already

if __name__ == "__main__":
    inner = OPTIONS.get("inner_threads")
    options = {}
    if BY_INITIALIZER:
        options = {"initializer": inner_threads.cap, "initargs": (inner, WORKERS)}
    processes = mb.Processes(start_method=METHOD, inner_threads=inner)
    with mb.Pool(WORKERS, backend=processes, **options) as pool:
        report("threads", pool.map(blas_threads, range(2 * WORKERS), chunksize=1))
"""
WIRING = ["initializer", "engine"]


def _pool_threads(method: str | None, wiring: str, *, workers: int, numpy_first: bool = False,
                  options: dict[str, object] | None = None, **env: str) -> set[int]:
    settings = (f"METHOD = {method!r}\nWORKERS = {workers}\nNUMPY_FIRST = {numpy_first}\n"
                f"OPTIONS = {options or {}!r}\nBY_INITIALIZER = {wiring == 'initializer'}\n")
    outcome = _run(settings + POOL, **env)
    return {n for threads in outcome.reports["threads"] for n in threads}


@needs_two_cpus
@pytest.mark.parametrize("numpy_first", [False, True], ids=["numpy-in-worker", "numpy-first"])
@pytest.mark.parametrize("wiring", WIRING)
@pytest.mark.parametrize("method", [*START_METHODS, None])
def test_workers_get_their_share_by_default(method: str | None, wiring: str,
                                            numpy_first: bool):
    threads = _pool_threads(method, wiring, workers=2, numpy_first=numpy_first)
    assert threads == {inner_threads.default(2)}


@needs_two_cpus
@pytest.mark.parametrize("wiring", WIRING)
@pytest.mark.parametrize("method", START_METHODS)
def test_the_users_variable_wins_over_the_default(method: str, wiring: str):
    mine = 2 if inner_threads.default(2) == 1 else 1
    threads = _pool_threads(method, wiring, workers=2, numpy_first=True,
                            OPENBLAS_NUM_THREADS=str(mine))
    assert threads == {mine}


@needs_two_cpus
@pytest.mark.parametrize("wiring", WIRING)
@pytest.mark.parametrize("method", START_METHODS)
def test_inner_threads_wins_over_the_default_and_the_users_variable(method: str, wiring: str):
    # One worker's default is every CPU; the user asked for every CPU too.
    threads = _pool_threads(method, wiring, workers=1, numpy_first=True,
                            options={"inner_threads": 1}, OMP_NUM_THREADS=str(CPUS))
    assert threads == {1}
