"""One ``__main__`` per worker: how functions and classes of the user's script travel.

Under the stdlib, a worker has one ``__main__`` module: what the pool's initializer stores in
a global is what every later task reads, and a cache a task fills stays for the next task in
that worker. cloudpickle alone breaks this, because it sends each ``__main__`` function by
value with a private copy of its globals. manybrains sends them by these rules instead:

1. **By reference** when the worker's ``__main__`` already holds that very function (or
   class): a worker forked from a template (see ``backends/processes/template.py``) is a copy
   of the parent, so everything that existed when the template was forked is there.
2. **By value** otherwise, rebuilt in the worker *on the worker's own ``__main__``
   namespace*: its globals are the worker's ``__main__`` globals, not a copy.
3. **Globals travel with a token.** Each global a function reads is sent with a token that
   names the parent's value (it changes when the parent rebinds the name). A worker stores a
   global only when its token differs from the one it last stored (or inherited) for that
   name. So what the worker made of a global (an initializer's ``model = load()``) is not
   overwritten by the parent's stale value, while a value the parent rebinds between two maps
   (a notebook cell) reaches the workers. Values a template worker inherited are not sent.

Changes are seen by identity, as under ``fork``: mutating a parent's global in place (not
rebinding it) after the workers have it is not sent again. Workers never change the
parent's globals. The parent keeps a reference to each global value it has tokenized (a
weak one where the type allows), so a token is never reused for a different object.
"""

from __future__ import annotations

import contextlib
import dis
import functools
import itertools
import os
import sys
import threading
import types
import weakref
from collections.abc import Callable, Iterator
from typing import Any

# ---- tokens: which parent value a worker holds ---------------------------------------------

_nonce = os.urandom(6).hex()  # tokens of different processes never collide
_counter = itertools.count(1)
_tokens: dict[str, tuple[Callable[[], Any], str]] = {}
_tokens_lock = threading.Lock()


def _reset_after_fork() -> None:
    global _nonce
    _nonce = os.urandom(6).hex()  # a worker's own nested pools get tokens of their own


os.register_at_fork(after_in_child=_reset_after_fork)


def token(name: str, value: Any) -> str:
    """The token of ``value`` as the current binding of global ``name`` in this process."""
    with _tokens_lock:
        entry = _tokens.get(name)
        if entry is not None and entry[0]() is value:
            return entry[1]
        new = f"{_nonce}:{next(_counter)}"
        _tokens[name] = (_reference(value), new)
        return new


def _reference(value: Any) -> Callable[[], Any]:
    try:
        return weakref.ref(value)
    except TypeError:  # ints, dicts, lists...: hold them, so their id is never reused
        return lambda: value


def _main_dict() -> dict[str, Any]:
    return vars(sys.modules["__main__"])


def snapshot() -> dict[str, str]:
    """Tokens of every current ``__main__`` global: what a template forked now inherits."""
    return {name: token(name, value) for name, value in list(_main_dict().items())
            if not name.startswith("__")}


# ---- where the pickle goes -------------------------------------------------------------------

_local = threading.local()


@contextlib.contextmanager
def sending_to(inherited: dict[str, str] | None) -> Iterator[None]:
    """Within the block, pickle for workers that inherited ``inherited`` (None: nothing)."""
    previous = getattr(_local, "inherited", None)
    _local.inherited = inherited
    try:
        yield
    finally:
        _local.inherited = previous


def _target() -> dict[str, str] | None:
    found: dict[str, str] | None = getattr(_local, "inherited", None)
    return found


# ---- the worker's side ---------------------------------------------------------------------

_applied: dict[str, str] = {}  # name -> token of the parent's value this process holds
_inherited_ids: dict[str, int] = {}  # in a template worker: what it holds from the fork


def inherit(tokens: dict[str, str]) -> None:
    """In a template: its ``__main__`` holds the parent's values of ``tokens``."""
    global _applied, _inherited_ids
    _applied = dict(tokens)
    main = _main_dict()
    _inherited_ids = {name: id(main[name]) for name in tokens if name in main}


def _merge(globals_: list[tuple[str, str, Any]]) -> None:
    main = _main_dict()
    for name, tok, value in globals_:
        if value is not _INHERITED and _applied.get(name) != tok:
            main[name] = value
            _applied[name] = tok


class _Inherited:
    """Marks a global the receiving worker already holds from its template."""

    def __reduce__(self) -> str:
        return "_INHERITED"


_INHERITED = _Inherited()


# ---- the pickling rules ----------------------------------------------------------------------


def reduce(obj: Any) -> Any:
    """A reduction for a ``__main__`` function or class, or ``NotImplemented``."""
    if isinstance(obj, types.FunctionType):
        if obj.__module__ == "__main__" and obj.__globals__ is _main_dict():
            return _reduce_function(obj)
    elif isinstance(obj, type) and obj.__module__ == "__main__":
        return _reduce_class(obj)
    return NotImplemented


def pickle_depends_on(fn: Any) -> tuple[Any, ...] | None:
    """What a pickle of the ``__main__`` function ``fn`` depends on, for a cache of it: a
    pickle made for the same :func:`sending_to` target stays right while every item is the
    same object. None for what :func:`reduce` does not handle, and for closures (a cell can
    be rebound unseen).

    Its own name and the globals it reads (rebinding one gives it a new token), its defaults
    and attributes, and the loaded modules (a newly imported submodule travels with it).
    """
    if not isinstance(fn, types.FunctionType) or fn.__closure__ or fn.__dict__:
        return None
    main = _main_dict()
    if fn.__module__ != "__main__" or fn.__globals__ is not main:
        return None
    names = _names(fn.__code__)
    return (main.get(fn.__name__), fn.__defaults__, fn.__kwdefaults__,
            len(sys.modules), *(main.get(name) for name in names))


def _held_by_target(name: str, obj: Any) -> bool:
    inherited = _target()
    if inherited is None or _main_dict().get(name) is not obj:
        return False
    return inherited.get(name) == token(name, obj)


def _held_by_parent(name: str, obj: Any) -> bool:
    # In a template worker: the parent has this object too, at the same name.
    return _inherited_ids.get(name) == id(obj) and _main_dict().get(name) is obj


def _reduce_class(cls: type) -> Any:
    name = cls.__qualname__
    if _held_by_target(name, cls) or _held_by_parent(name, cls):
        return (_main_attribute, (name,))
    return NotImplemented  # cloudpickle sends it by value, keeping its identity per process


def _reduce_function(fn: types.FunctionType) -> Any:
    # Submodules travel as references: unpickling them imports them in the worker.
    state: dict[str, Any] = {"globals": _globals_of(fn), "submodules": _submodules_of(fn)}
    if fn.__qualname__ == fn.__name__ and (_held_by_target(fn.__name__, fn)
                                            or _held_by_parent(fn.__name__, fn)):
        return (_main_attribute, (fn.__name__,), state, None, None, _set_state)
    state.update(defaults=fn.__defaults__, kwdefaults=fn.__kwdefaults__, dict=fn.__dict__,
                 qualname=fn.__qualname__, doc=fn.__doc__,
                 cells=[cell.cell_contents for cell in fn.__closure__ or ()])
    skeleton = (fn.__code__, fn.__name__, len(fn.__closure__ or ()))
    return (_function_skeleton, skeleton, state, None, None, _set_state)


def _globals_of(fn: types.FunctionType) -> list[tuple[str, str, Any]]:
    main = _main_dict()
    inherited = _target() or {}
    found = []
    for name in sorted(_names(fn.__code__)):
        if name in main:
            value = main[name]
            tok = token(name, value)
            found.append((name, tok, _INHERITED if inherited.get(name) == tok else value))
    return found


def _submodules_of(fn: types.FunctionType) -> list[types.ModuleType]:
    """The submodules ``fn`` reaches through a module global, as ``logging.handlers``.

    The script imported them (``import logging.handlers``); a worker that does not re-run it
    (forkserver, spawn, or a template forked before the import) has only ``logging``, so
    they are imported there when ``fn`` arrives (cloudpickle does the same for its own
    functions).
    """
    main = _main_dict()
    attributes = _attributes(fn.__code__)
    found = []
    for name in _names(fn.__code__):
        module = main.get(name)
        if not isinstance(module, types.ModuleType) or not getattr(module, "__path__", None):
            continue  # not a package: it has no submodules
        prefix = module.__name__ + "."
        for loaded, sub in list(sys.modules.items()):
            if (isinstance(loaded, str) and loaded.startswith(prefix) and sub is not None
                    and set(loaded[len(prefix):].split(".")) <= attributes):
                found.append(sub)
    return found


@functools.lru_cache(maxsize=1024)
def _attributes(code: types.CodeType) -> frozenset[str]:
    """The names ``code`` (and the code nested in it) uses as globals or attributes."""
    names = set(code.co_names)
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            names |= _attributes(const)
    return frozenset(names)


@functools.lru_cache(maxsize=1024)
def _names(code: types.CodeType) -> frozenset[str]:
    """The global names ``code`` (and the code nested in it) reads or writes."""
    names = {op.argval for op in dis.get_instructions(code) if op.opname in _GLOBAL_OPS}
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            names |= _names(const)
    return frozenset(names)


_GLOBAL_OPS = frozenset({"LOAD_GLOBAL", "STORE_GLOBAL", "DELETE_GLOBAL", "LOAD_NAME"})


def _main_attribute(name: str) -> Any:
    return _main_dict()[name]


def _function_skeleton(code: types.CodeType, name: str, cells: int) -> types.FunctionType:
    closure = tuple(types.CellType() for _ in range(cells)) or None
    return types.FunctionType(code, _main_dict(), name, None, closure)


def _set_state(fn: types.FunctionType, state: dict[str, Any]) -> None:
    _merge(state["globals"])
    if "qualname" not in state:  # by reference: the worker's own function
        return
    fn.__defaults__ = state["defaults"]
    fn.__kwdefaults__ = state["kwdefaults"]
    fn.__dict__.update(state["dict"] or {})
    fn.__qualname__ = state["qualname"]
    fn.__doc__ = state["doc"]
    fn.__module__ = "__main__"
    for cell, value in zip(fn.__closure__ or (), state["cells"], strict=True):
        cell.cell_contents = value
