"""A joblib parallel backend named ``"manybrains"``: joblib and scikit-learn on a Pool.

Importing this module registers it::

    import joblib
    import manybrains.integrations.joblib  # noqa: F401

    with joblib.parallel_config(backend="manybrains"):
        joblib.Parallel(n_jobs=2)(joblib.delayed(f)(i) for i in range(1000))
        cross_val_score(model, X, y, n_jobs=2)  # scikit-learn's n_jobs too

The work then runs on a :class:`manybrains.Pool` with its fault model: a worker that dies
fails its batch with :class:`~manybrains.WorkerCrashed` (no hang) and is replaced. Options
given to ``parallel_config(backend="manybrains", ...)`` beyond joblib's own go to ``Pool``,
for example ``start_method="spawn"``; the pool's own ``backend`` is a keyword of
``ManybrainsBackend`` (``functools.partial(ManybrainsBackend, backend=mb.Dask(...))``,
registered under a name of its own: see docs/cluster.md). joblib batches calls itself (auto
batching), so each joblib batch is one manybrains task.
"""

from __future__ import annotations

from concurrent.futures import Future
from dataclasses import replace
from typing import Any

import joblib
from joblib._parallel_backends import (
    AutoBatchingMixin,
    FallbackToBackend,
    ParallelBackendBase,
    SequentialBackend,
)

from .._cpus import usable_cpus
from .._pool import Pool
from ..backends import options_for
from ..options import Auto, BackendOptions, Processes

__all__ = ("NAME", "ManybrainsBackend", "register")

NAME = "manybrains"


class ManybrainsBackend(AutoBatchingMixin, ParallelBackendBase):  # type: ignore[misc]
    """Runs each joblib batch as one task of a manybrains Pool, created per Parallel call."""

    supports_retrieve_callback = True  # results come back through futures' callbacks
    supports_inner_max_num_threads = True

    def __init__(self, nesting_level: int | None = None,
                 inner_max_num_threads: int | None = None, **pool_options: Any) -> None:
        super().__init__(nesting_level=nesting_level,
                         inner_max_num_threads=inner_max_num_threads)
        self._pool_options = pool_options
        self._pool: Pool | None = None

    def effective_n_jobs(self, n_jobs: int | None) -> int:
        if n_jobs == 0:
            raise ValueError("n_jobs == 0 in Parallel has no meaning")
        if n_jobs is None:
            return 1
        if n_jobs < 0:
            return max(usable_cpus() + 1 + n_jobs, 1)
        return n_jobs

    def configure(self, n_jobs: int = 1, parallel: Any = None, prefer: str | None = None,
                  require: str | None = None, **kwargs: Any) -> int:
        workers = self.effective_n_jobs(n_jobs)
        if workers == 1:  # one worker in another process only adds the trip there and back
            raise FallbackToBackend(SequentialBackend(nesting_level=self.nesting_level))
        self.parallel = parallel
        # kwargs are joblib's memmapping options (max_nbytes, mmap_mode, ...): processes
        # receive their arguments pickled, and big arrays through manybrains' shared memory.
        options = dict(self._pool_options)
        # As loky does, each worker's BLAS/OpenMP gets its share of the cores (the pool's
        # default), or what parallel_config(inner_max_num_threads=...) says. Set by the
        # engine in each worker, even one whose numpy is loaded already, never here.
        if self.inner_max_num_threads is not None:
            options["backend"] = _capped(options.get("backend", "processes"),
                                         self.inner_max_num_threads)
        self._pool = Pool(workers, **options)
        return workers

    def submit(self, func: Any, callback: Any = None) -> Future[Any]:
        assert self._pool is not None, "configure() creates the pool"
        future = self._pool.submit(func)
        if callback is not None:
            future.add_done_callback(callback)
        return future

    def retrieve_result_callback(self, out: Future[Any]) -> Any:
        return out.result()

    def terminate(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None
        self.reset_batch_stats()

    def abort_everything(self, ensure_ready: bool = True) -> None:
        """A batch failed: stop the rest now; start afresh if joblib will submit again."""
        if self._pool is not None:
            self._pool.terminate()
            self._pool = None
        if ensure_ready and self.parallel is not None:
            self.configure(n_jobs=self.parallel.n_jobs, parallel=self.parallel)


def _capped(backend: str | BackendOptions, threads: int) -> str | BackendOptions:
    """``backend`` with each worker process's BLAS/OpenMP at ``threads``, unless its options
    already say (threads and the other in-process backends have no such cap)."""
    own = options_for(backend)
    if isinstance(own, Processes) and own.inner_threads is None:
        return replace(own, inner_threads=threads)
    if isinstance(own, Auto) and own.processes.inner_threads is None:
        return replace(own, processes=replace(own.processes, inner_threads=threads))
    return backend


def register() -> None:
    """Register the ``"manybrains"`` backend with joblib (importing this module does it)."""
    joblib.register_parallel_backend(NAME, ManybrainsBackend)


register()
