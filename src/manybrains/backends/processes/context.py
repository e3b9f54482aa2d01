"""Which start method creates the workers.

forkserver is the default on Linux, as it is from Python 3.14 on: ``fork`` copies a parent
that may hold locks in other threads (a documented source of deadlocks), while a forkserver
forks clean children from a small server process. The server preloads the worker module and
cloudpickle, so a new worker costs a ``fork()``, not an interpreter start and its imports.
``spawn`` is the default elsewhere; ``fork`` is available on request.
"""

from __future__ import annotations

import multiprocessing
import sys
from multiprocessing.context import BaseContext

WORKER_MODULE = "manybrains.backends.processes.worker"


def default_start_method() -> str:
    """forkserver where the platform has it (Linux), spawn elsewhere."""
    methods = multiprocessing.get_all_start_methods()
    if sys.platform.startswith("linux") and "forkserver" in methods:
        return "forkserver"
    return "spawn"


def get_context(start_method: str | BaseContext | None) -> BaseContext:
    """The multiprocessing context for ``start_method`` (a name, a context, or None)."""
    if isinstance(start_method, BaseContext):
        context = start_method
    else:
        method = start_method or default_start_method()
        available = multiprocessing.get_all_start_methods()
        if method not in available:
            raise ValueError(f"start_method={method!r} is not available here; "
                             f"choose one of {', '.join(map(repr, available))}")
        context = multiprocessing.get_context(method)
    if context.get_start_method() == "forkserver":
        # Ignored once the server runs; the stdlib's default preload is just __main__.
        context.set_forkserver_preload(["__main__", WORKER_MODULE])
    return context
