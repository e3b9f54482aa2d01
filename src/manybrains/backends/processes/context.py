"""Which start method creates the workers.

forkserver is the default on Linux, as it is from Python 3.14 on: ``fork`` copies a parent
that may hold locks in other threads (a documented source of deadlocks), while a forkserver
forks clean children from a small server process. The server preloads the worker module and
cloudpickle, so a new worker costs a ``fork()``, not an interpreter start and its imports.
``spawn`` is the default elsewhere; ``fork`` is available on request.
"""

from __future__ import annotations

import multiprocessing
import os
import sys
import threading
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
    if context.get_start_method() == "fork":
        _guard_pickler_lock()
    if context.get_start_method() == "forkserver":
        # Ignored once the server runs; the stdlib's default preload is just __main__.
        context.set_forkserver_preload(["__main__", WORKER_MODULE])
    return context


_guarded = threading.Event()


def _guard_pickler_lock() -> None:
    """Fork only while no thread is inside cloudpickle's class-tracking lock.

    The supervisor thread forks workers while caller threads pickle tasks; a child forked
    while another thread held that lock would inherit it locked and hang on its first
    unpickling of a class defined at run time.
    """
    if _guarded.is_set():
        return
    _guarded.set()
    from cloudpickle import cloudpickle as implementation

    lock = getattr(implementation, "_DYNAMIC_CLASS_TRACKER_LOCK", None)
    if lock is not None:
        os.register_at_fork(before=lock.acquire, after_in_parent=lock.release,
                            after_in_child=lock.release)
