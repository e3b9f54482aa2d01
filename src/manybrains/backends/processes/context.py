"""Which start method creates the workers.

``template`` is the default on Linux: workers are forked from a copy of the parent made
while it ran a single thread (see :mod:`.template`), as fast as ``fork`` and as safe as
``forkserver``. A parent that already runs other threads and has no template yet gets
``forkserver`` (Python 3.14's default): it never copies a parent that may hold locks in
other threads, and its server preloads the worker module. ``spawn`` is the default where
neither exists; ``fork``, ``forkserver`` and ``spawn`` are available on request.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import sys
import threading
from collections.abc import Callable, Iterator
from multiprocessing.context import BaseContext
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .template import Template

WORKER_MODULE = "manybrains.backends.processes.worker"


def default_start_method() -> str:
    """template where the platform can fork (Linux), spawn elsewhere."""
    methods = multiprocessing.get_all_start_methods()
    if sys.platform.startswith("linux") and "forkserver" in methods:
        return "template"
    return "spawn"


def available_start_methods() -> list[str]:
    """Every ``start_method`` a pool accepts here, the default first."""
    methods = multiprocessing.get_all_start_methods()
    if default_start_method() == "template":
        return ["template", *methods]
    return methods


class Launch:
    """How one pool (or one spawned process) starts its processes, and why."""

    def __init__(self, context: Any, reason: str, release: Callable[[], None] = lambda: None
                 ) -> None:
        self.context = context
        self.method: str = context.get_start_method()
        self.reason = reason
        # What a started process already holds: the parent's __main__ globals (tokens, see
        # manybrains._mainspace) and semaphore memory; None when it inherits nothing.
        self.inherited_globals: dict[str, str] | None = None
        self.inherited_memory: list[tuple[int, int]] | None = None
        self.kept: object = None  # inherited as it is by every process this starts
        self.release = release  # call once no process will be started any more


def choose(start_method: str | BaseContext | None, keep: object = None) -> Launch:
    """The way to start processes for ``start_method`` (a name, a context, or None).

    ``keep``: what every process started needs (a pool's initializer and initargs); a fresh
    template holds it, and its processes inherit it instead of unpickling a copy.
    """
    _refuse_nested_start()
    if isinstance(start_method, BaseContext):
        return _stdlib_launch(start_method, "the context passed in")
    method = start_method or default_start_method()
    if method == "template":
        return _template_launch(explicit=start_method is not None, keep=keep)
    if method not in multiprocessing.get_all_start_methods():
        choices = ", ".join(map(repr, available_start_methods()))
        raise ValueError(f"start_method={method!r} is not available here; choose one of "
                         f"{choices}")
    return _stdlib_launch(multiprocessing.get_context(method), f"start_method={method!r}")


def _stdlib_launch(context: BaseContext, reason: str) -> Launch:
    launch = Launch(_prepared(context), reason)
    if launch.method == "fork":  # workers are copies of this process, as from a template
        from ... import _mainspace

        launch.inherited_globals = _mainspace.snapshot()
    return launch


def _refuse_nested_start() -> None:
    import multiprocessing.process

    if getattr(multiprocessing.process.current_process(), "_inheriting", False):
        raise RuntimeError(
            "a spawn or forkserver worker re-ran the main script and reached this pool: put "
            "the code that starts pools under `if __name__ == \"__main__\":`, or use the "
            "default start method, which never re-runs the script")


def _template_launch(*, explicit: bool, keep: object) -> Launch:
    if not sys.platform.startswith("linux"):
        if explicit:
            raise ValueError("start_method='template' needs Linux; choose 'spawn'")
        return Launch(multiprocessing.get_context("spawn"), "the default off Linux")
    from . import template

    found, reason = template.acquire(keep=keep)
    if found is None:
        return _stdlib_launch(multiprocessing.get_context("forkserver"), reason)
    launch = Launch(template.TemplateContext(found), reason, found.release)
    launch.inherited_globals = found.snapshot
    launch.inherited_memory = found.semaphores
    launch.kept = found.kept if found.kept is keep else None
    return launch


def hold_template(start_method: str | BaseContext | None) -> Template | None:
    """A template kept for process pools started later, if they will use one (see
    :func:`.template.hold`); None otherwise. Release it when done."""
    if isinstance(start_method, BaseContext) or not sys.platform.startswith("linux"):
        return None
    if (start_method or default_start_method()) != "template":
        return None
    from . import template

    return template.hold()


@contextlib.contextmanager
def starting(launch: Launch) -> Iterator[None]:
    """Within the block, objects are pickled for a process ``launch`` is starting, and a
    ``spawn`` or ``forkserver`` process started is not told to re-run the main script."""
    from ... import _inheritance, _mainspace

    _starting.active = True
    try:
        with _mainspace.sending_to(launch.inherited_globals), \
                _inheritance.starting(launch.inherited_memory, launch.kept):
            yield
    finally:
        _starting.active = False


_starting = threading.local()


def _never_rerun_main() -> None:
    """Processes we start get no instruction to run the main script again (installed once).

    The stdlib's spawn and forkserver children re-run the parent's main script (as
    ``__mp_main__``) so that functions defined there can be found by name: an unguarded
    script starts its pools again, and one piped to ``python -`` cannot be found at all.
    Ours need neither: ``__main__`` functions travel by value onto the worker's own
    ``__main__`` (see :mod:`manybrains._mainspace`). Other processes of the program are
    started as the stdlib starts them.
    """
    import multiprocessing.spawn as spawn

    original = spawn.get_preparation_data
    if getattr(original, "manybrains", False):
        return

    def get_preparation_data(name: str) -> dict[str, Any]:
        data: dict[str, Any] = original(name)
        if getattr(_starting, "active", False):
            data.pop("init_main_from_path", None)
            data.pop("init_main_from_name", None)
        return data

    get_preparation_data.manybrains = True  # type: ignore[attr-defined]
    spawn.get_preparation_data = get_preparation_data


def _prepared(context: BaseContext) -> BaseContext:
    if context.get_start_method() == "fork":
        _guard_pickler_lock()
    if context.get_start_method() in ("forkserver", "spawn"):
        _never_rerun_main()
    if context.get_start_method() == "forkserver":
        # Ignored once the server runs. Not __main__ (the stdlib's default): see above.
        context.set_forkserver_preload([WORKER_MODULE])
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
