"""joblib and scikit-learn code running on a manybrains pool through the joblib backend."""

from __future__ import annotations

import os

import psutil
import pytest

joblib = pytest.importorskip("joblib")

import manybrains as mb  # noqa: E402
from manybrains.integrations import joblib as mb_joblib  # noqa: E402


def _square(x: int) -> int:
    return x * x


def test_importing_registers_the_backend() -> None:
    with joblib.parallel_config(backend="manybrains", n_jobs=2):
        backend, n_jobs = joblib.parallel.get_active_backend()
    assert isinstance(backend, mb_joblib.ManybrainsBackend)
    assert n_jobs == 2


def test_parallel_runs_on_manybrains_worker_processes() -> None:
    with joblib.parallel_config(backend="manybrains"):
        results = joblib.Parallel(n_jobs=2)(joblib.delayed(_square)(i) for i in range(1000))
        pids = set(joblib.Parallel(n_jobs=2)(joblib.delayed(os.getpid)() for _ in range(20)))
    assert results == [i * i for i in range(1000)]
    assert os.getpid() not in pids
    assert 1 <= len(pids) <= 2
    assert all(psutil.pid_exists(p) is False for p in pids)  # the pool ended with the call


def test_a_task_error_keeps_its_type() -> None:
    with joblib.parallel_config(backend="manybrains"), pytest.raises(ZeroDivisionError):
        joblib.Parallel(n_jobs=2)(joblib.delayed(divmod)(1, d) for d in (1, 2, 0, 3))


def test_a_crashed_worker_fails_the_call_instead_of_hanging() -> None:
    with joblib.parallel_config(backend="manybrains"), pytest.raises(mb.WorkerCrashed):
        joblib.Parallel(n_jobs=2)(joblib.delayed(os._exit)(3) for _ in range(4))


def test_n_jobs_1_runs_here() -> None:
    with joblib.parallel_config(backend="manybrains"):
        assert joblib.Parallel(n_jobs=1)(joblib.delayed(os.getpid)() for _ in range(3)) == \
            [os.getpid()] * 3


@pytest.mark.timeout(120)
def test_scikit_learn_cross_val_score_matches_the_serial_run() -> None:
    pytest.importorskip("sklearn")
    from sklearn.datasets import load_iris
    from sklearn.model_selection import cross_val_score
    from sklearn.tree import DecisionTreeClassifier

    features, labels = load_iris(return_X_y=True)
    model = DecisionTreeClassifier(random_state=0)
    serial = cross_val_score(model, features, labels, cv=5, n_jobs=None)
    joblib.register_parallel_backend("manybrains-counted", _Counted)
    with joblib.parallel_config(backend="manybrains-counted"):
        parallel = cross_val_score(model, features, labels, cv=5, n_jobs=2)
    assert parallel.tolist() == serial.tolist()
    assert serial.mean() > 0.9  # a real fit, not an empty result
    assert _Counted.submitted >= 1  # the folds went through the manybrains pool


class _Counted(mb_joblib.ManybrainsBackend):
    """The real backend, counting the batches it is given."""

    submitted = 0

    def submit(self, func, callback=None):
        type(self).submitted += 1
        return super().submit(func, callback)


def _blas_threads(_: int) -> int:
    import numpy  # noqa: F401 - loads OpenBLAS
    from threadpoolctl import threadpool_info

    return max(info["num_threads"] for info in threadpool_info())


@pytest.mark.parametrize("inner", [None, 2])
def test_each_worker_gets_its_share_of_blas_threads_and_the_caller_keeps_its_environment(
        inner: int | None) -> None:
    pytest.importorskip("numpy")
    before = dict(os.environ)
    with joblib.parallel_config(backend="manybrains", inner_max_num_threads=inner):
        counts = set(joblib.Parallel(n_jobs=2)(joblib.delayed(_blas_threads)(i)
                                               for i in range(4)))
    expected = inner if inner is not None else max(1, mb.usable_cpus() // 2)
    assert counts == {expected}
    assert dict(os.environ) == before
