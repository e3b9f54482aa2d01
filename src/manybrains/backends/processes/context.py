"""Which start method creates the workers.

``template`` is the default on Linux: workers are forked from a copy of the parent made
while it ran a single thread (see :mod:`.template`), as fast as ``fork`` and as safe as
``forkserver``. A parent that already runs other threads and has no template yet gets
``forkserver`` (Python 3.14's default): it never copies a parent that may hold locks in
other threads, and its server preloads the worker module. ``spawn`` is the default where
neither exists; ``fork``, ``forkserver`` and ``spawn`` are available on request.

One rule bends that policy: manybrains never refuses what the stdlib's pool would accept. When
what the workers start with (a pool's initializer and initargs, ``spawn``'s call) reaches a
forkserver, or a template forked earlier, only by inheritance (a ``multiprocessing.Queue()``
of the ``fork`` context, an object that cannot be pickled), and multiprocessing would fork
here (its start method is ``fork``: Linux before Python 3.14, or ``set_start_method``), the
workers are forked, as multiprocessing's are, and ``start_method_why`` says why.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import sys
import threading
from collections.abc import Callable, Iterable, Iterator
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


Parts = Callable[[], Iterable[tuple[str, object]]]


def choose(start_method: str | BaseContext | None, keep: object = None,
           parts: Parts | None = None) -> Launch:
    """The way to start processes for ``start_method`` (a name, a context, or None).

    ``keep``: what every process started needs (a pool's initializer and initargs); a fresh
    template holds it, and its processes inherit it instead of unpickling a copy. ``parts``:
    its named pieces (``"initargs[0]"``, ...), to say which one made the processes fork.
    """
    _refuse_nested_start()
    if isinstance(start_method, BaseContext):
        return _stdlib_launch(start_method, "the context passed in")
    method = start_method or default_start_method()
    if method == "template":
        return _template_launch(explicit=start_method is not None, keep=keep, parts=parts)
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


def _template_launch(*, explicit: bool, keep: object, parts: Parts | None) -> Launch:
    if not sys.platform.startswith("linux"):
        if explicit:
            raise ValueError("start_method='template' needs Linux; choose 'spawn'")
        return Launch(multiprocessing.get_context("spawn"), "the default off Linux")
    # inner_threads and worker, which only the template's workers run, are imported before
    # the template is forked (this process imports them for its pool anyway): a template
    # imports before it can fork its first worker, and a process just forked imports slower,
    # each page it writes copied first.
    from . import inner_threads, template, worker  # noqa: F401

    found, reason = template.acquire(keep=keep)
    if found is None:
        launch = _stdlib_launch(multiprocessing.get_context("forkserver"), reason)
        no_template = (f"{threading.active_count()} threads run in this process and no "
                       "template was made before they started")
    else:
        launch = Launch(template.TemplateContext(found), reason, found.release)
        launch.inherited_globals = found.snapshot
        launch.inherited_memory = found.semaphores
        launch.kept = found.kept if found.kept is keep else None
        no_template = "the template in use was forked without it"
    if keep is None or launch.kept is keep or stdlib_start_method() != "fork":
        return launch  # inherited by a fresh template; or refused, as multiprocessing would
    culprit = _only_inherited(launch, keep, parts)
    if culprit is None:
        return launch
    launch.release()
    return _stdlib_launch(multiprocessing.get_context("fork"), (
        f"forked, as multiprocessing's start method here ('fork') does: {culprit}, and no "
        f"template can hand it over ({no_template})"))


def stdlib_start_method() -> str:
    """The start method of multiprocessing's default context, read without fixing it.

    ``get_start_method()`` and ``get_context()`` would fix it, and the program's own
    ``set_start_method()`` would then fail. The first of ``get_all_start_methods()`` is the
    default: ``fork`` on Linux up to Python 3.13, ``forkserver`` from 3.14.
    """
    chosen: str | None = multiprocessing.get_start_method(allow_none=True)
    return chosen or multiprocessing.get_all_start_methods()[0]


def _only_inherited(launch: Launch, keep: object, parts: Parts | None) -> str | None:
    """What in ``keep`` ``launch`` cannot hand to a process but ``fork`` would, described;
    None when all of it travels."""
    failure = _trial_pickle(launch, keep)
    if failure is None:
        return None
    name = "what the processes start with"
    for part_name, part in parts() if parts is not None else ():
        part_failure = _trial_pickle(launch, part)
        if part_failure is not None:
            name, failure = f"{part_name} ({type(part).__qualname__})", part_failure
            break
    from ..._mp_primitives import NotInherited

    if isinstance(failure, NotInherited):
        return (f"{name} holds a multiprocessing lock of the 'fork' context, which only a "
                "forked process inherits")
    said = f"{type(failure).__name__}: {failure}"
    if len(said) > 160:
        said = said[:157] + "..."
    return f"{name} cannot be pickled ({said}); a forked process inherits it as it is"


def _trial_pickle(launch: Launch, obj: object) -> BaseException | None:
    """Why ``obj`` cannot be pickled for a process ``launch`` starts; None if it can."""
    from ..._serialize import PROTOCOL, Pickler
    from ...ipc.autoshare import no_sharing

    try:
        with starting(launch), no_sharing():  # big arrays are not shared for a trial
            Pickler(_Discard(), protocol=PROTOCOL).dump(obj)
    except (Exception, SystemExit) as exc:  # noqa: BLE001 - a __reduce__ may raise anything
        return exc
    return None


class _Discard:
    """A file that forgets what is written to it: a trial pickle needs no bytes."""

    def write(self, data: Any) -> int:
        return len(memoryview(data))


def hold_template(start_method: str | BaseContext | None) -> Template | None:
    """A template kept for process pools started later, if they will use one (see
    :func:`.template.hold`); None otherwise. Release it when done."""
    if isinstance(start_method, BaseContext) or not sys.platform.startswith("linux"):
        return None
    if (start_method or default_start_method()) != "template":
        return None
    from . import inner_threads, template, worker  # noqa: F401 - see _template_launch

    return template.hold()


@contextlib.contextmanager
def starting(launch: Launch) -> Iterator[None]:
    """Within the block, objects are pickled for a process ``launch`` is starting, and a
    ``spawn`` or ``forkserver`` process started is not told to re-run the main script."""
    from ... import _mainspace, _mp_primitives

    _starting.active = True
    try:
        with _mainspace.sending_to(launch.inherited_globals), \
                _mp_primitives.starting(launch.inherited_memory, launch.kept, launch.method):
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
