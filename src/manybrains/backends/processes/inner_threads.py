"""How many threads the BLAS and OpenMP libraries of each worker may start.

OpenBLAS, MKL, BLIS and OpenMP each start one thread per CPU of the machine, in every process
that loads them. Two workers doing matrix products on two cores would run four BLAS threads
that fight over two cores, so each worker's libraries are capped at their share:
``usable CPUs // workers`` (:func:`default`), or ``Processes(inner_threads=N)``, as joblib/loky do.

A library reads its thread count once, when it loads, from environment variables, so the cap
is set in two ways (:func:`apply` does both):

- the variables (:func:`environment`), for a library the worker loads later (a ``spawn``
  worker that imports numpy in its first task) and for processes the worker starts;
- threadpoolctl, for a library already loaded (a fork of a parent that imported numpy).
  It is imported only when such a library is in the process, so a worker without numpy
  pays for reading ``/proc/self/maps`` and nothing else.

The user's own setting wins over the default: a library whose variables the user set in the
parent's environment keeps the count they chose (OpenBLAS also reads ``OMP_NUM_THREADS``, so
that one counts for it too). An explicit ``inner_threads=N`` (``override=True``) is the more
specific choice and wins over the variables, as joblib's ``inner_max_num_threads`` does.
The variables manybrains set are listed in :data:`MARKER`, so that a process started from a
worker (a nested pool) does not take them for the user's.
"""

from __future__ import annotations

import os
import sys
import warnings
from collections.abc import Mapping

from ..._cpus import usable_cpus

#: Each variable set in a worker, with every variable its library reads for its thread count:
#: when the user set any of those, the library runs as the user asked.
VARIABLES: dict[str, tuple[str, ...]] = {
    "OMP_NUM_THREADS": ("OMP_NUM_THREADS",),
    "OPENBLAS_NUM_THREADS": ("OPENBLAS_NUM_THREADS", "GOTO_NUM_THREADS", "OMP_NUM_THREADS"),
    "MKL_NUM_THREADS": ("MKL_NUM_THREADS", "OMP_NUM_THREADS"),
    "BLIS_NUM_THREADS": ("BLIS_NUM_THREADS", "OMP_NUM_THREADS"),
    "VECLIB_MAXIMUM_THREADS": ("VECLIB_MAXIMUM_THREADS",),
    "NUMEXPR_NUM_THREADS": ("NUMEXPR_NUM_THREADS", "OMP_NUM_THREADS"),
}

#: Names the variables that manybrains, not the user, set in this process's environment.
MARKER = "MANYBRAINS_INNER_THREADS_SET"

# threadpoolctl's name for a loaded library -> the variable above that configures it.
_LIBRARY_VARIABLE = {
    "openblas": "OPENBLAS_NUM_THREADS",
    "mkl": "MKL_NUM_THREADS",
    "blis": "BLIS_NUM_THREADS",
    "flexiblas": "OMP_NUM_THREADS",
    "openmp": "OMP_NUM_THREADS",
}

# File names of the libraries threadpoolctl controls, as they appear in /proc/self/maps.
_LIBRARY_FILES = ("openblas", "libmkl", "libblis", "flexiblas", "libgomp", "libiomp", "libomp")
# Where /proc is missing: packages that load one of those libraries when imported.
_LIBRARY_PACKAGES = ("numpy", "scipy", "torch", "sklearn")


def default(workers: int, cpus: int | None = None) -> int:
    """Each worker's share of the usable CPUs (or of ``cpus``), at least one thread."""
    _check("workers", workers)
    return max(1, (usable_cpus() if cpus is None else cpus) // workers)


# What a template measured once for every worker it forks, which has the template's CPUs and
# mapped libraries at its fork: (usable CPUs, a BLAS/OpenMP library mapped). A worker's cap
# uses it and forgets it, so that a pool started inside the worker measures its own. It
# spares each worker three cgroup files and /proc/self/maps before its first task.
_from_template: tuple[int, bool] | None = None


def measure_for_workers() -> None:
    """In a template: measure once what each worker's :func:`cap` needs (see above)."""
    global _from_template
    _from_template = (usable_cpus(), _libraries_loaded())


def cap(inner_threads: int | None, workers: int) -> None:
    """What a worker of a pool of ``workers`` runs at start: ``Processes(inner_threads=...)``
    given (it wins over the user's variables), or else the default share."""
    global _from_template
    measured, _from_template = _from_template, None
    cpus, loaded = measured if measured is not None else (None, None)
    if inner_threads is None:
        apply(default(workers, cpus), loaded=loaded)
    else:
        apply(inner_threads, override=True, loaded=loaded)


def user_set(environ: Mapping[str, str] | None = None) -> set[str]:
    """The thread-count variables in ``environ`` (default: this process's) the user set."""
    environ = os.environ if environ is None else environ
    ours = set(environ.get(MARKER, "").split(","))
    names = {name for reads in VARIABLES.values() for name in reads}
    return {name for name in names if name in environ and name not in ours}


def environment(n: int, *, override: bool = False,
                environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """The variables that cap a worker's libraries at ``n`` threads, set before they load.

    Without ``override``, a variable whose library the user configured in ``environ``
    (default: this process's environment) is left out. The result names what it sets in
    :data:`MARKER`; it is empty when there is nothing to set.
    """
    _check("inner_threads", n)
    mine = _ours(user_set(environ), override)
    if not mine:
        return {}
    return {**dict.fromkeys(mine, str(n)), MARKER: ",".join(mine)}


def apply(n: int, *, override: bool = False, loaded: bool | None = None) -> None:
    """Cap this process's BLAS/OpenMP threads at ``n``: call it first thing in a worker.

    Sets :func:`environment` in ``os.environ`` and, if such a library is already loaded,
    caps it through threadpoolctl (and numexpr, if imported), except where the user's
    variables decide (unless ``override``). ``loaded``: whether such a library is, when
    already known (else this process's memory map says).
    """
    user = user_set()
    mine = _ours(user, override)
    os.environ.update(environment(n, override=override))
    if not mine:
        return
    if (_libraries_loaded() if loaded is None else loaded):
        _limit_loaded([api for api, variable in _LIBRARY_VARIABLE.items() if variable in mine],
                      n)
    numexpr = sys.modules.get("numexpr")
    if numexpr is not None and "NUMEXPR_NUM_THREADS" in mine:
        numexpr.set_num_threads(n)


def _limit_loaded(apis: list[str], n: int) -> None:
    try:
        from threadpoolctl import ThreadpoolController

        ThreadpoolController().select(internal_api=apis).limit(limits=n)
    except Exception as exc:  # noqa: BLE001 - a cap is worth a warning, never a dead worker
        warnings.warn(f"manybrains could not cap this worker's BLAS/OpenMP threads at {n}: "
                      f"{type(exc).__name__}: {exc}", RuntimeWarning, stacklevel=3)


def _ours(user: set[str], override: bool) -> list[str]:
    """The variables manybrains sets: all with ``override``, else those the user left alone."""
    return [name for name, reads in VARIABLES.items() if override or not user & set(reads)]


def _libraries_loaded() -> bool:
    try:
        with open("/proc/self/maps") as f:  # plain open(): this runs at every worker start
            maps = f.read()
    except OSError:  # not Linux: judge by the packages imported
        return any(name in sys.modules for name in _LIBRARY_PACKAGES)
    return any(name in maps for name in _LIBRARY_FILES)


def _check(name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int >= 1, got {type(value).__name__}")
    if value < 1:
        raise ValueError(f"{name} must be >= 1, got {value}")
    return value
