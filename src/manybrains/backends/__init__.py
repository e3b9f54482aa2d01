"""The backend registry: a name -> its options class and the module that implements it.

A module is imported on first use: importing manybrains imports no backend, and
``backend="dask"`` imports dask only then. Each name is spelled once, by its options class.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from ..options import Asyncio, Auto, BackendOptions, Dask, Inline, Processes, Threads

if TYPE_CHECKING:
    from ._base import Backend

__all__ = ("available_backends", "get_backend", "install_hint", "known_backends",
           "options_for")

# name -> (options class, module, the pip extra that brings its dependencies, or None)
_REGISTRY: dict[str, tuple[type[BackendOptions], str, str | None]] = {
    options.name: (options, module, extra) for options, module, extra in (
        (Processes, "manybrains.backends.processes", None),
        (Threads, "manybrains.backends.threads", None),
        (Asyncio, "manybrains.backends.asyncio_loop", None),
        (Inline, "manybrains.backends.inline", None),
        (Auto, "manybrains.backends.auto", None),
        (Dask, "manybrains.backends.dask", "dask"),
    )
}


def known_backends() -> tuple[str, ...]:
    """Every backend name manybrains knows, installed or not."""
    return tuple(_REGISTRY)


def available_backends() -> tuple[str, ...]:
    """The backends that can be used here (their extras are installed)."""
    names = []
    for name in _REGISTRY:
        try:
            get_backend(name)
        except LookupError:  # BackendNotFound
            continue
        names.append(name)
    return tuple(names)


def options_for(backend: str | BackendOptions) -> BackendOptions:
    """The options a ``backend=`` argument stands for: a name means its defaults."""
    if isinstance(backend, BackendOptions):
        return backend
    _check_known(backend)
    return _REGISTRY[backend][0]()


def install_hint(name: str) -> str:
    """What to run so that backend ``name`` can be used here."""
    extra = _REGISTRY[name][2]
    return f"pip install 'manybrains[{extra}]'" if extra else "reinstall manybrains"


def get_backend(name: str) -> type[Backend]:
    """The backend class registered as ``name``; BackendNotFound says what to do if missing."""
    from .._errors import BackendNotFound

    _check_known(name)
    try:
        module = importlib.import_module(_REGISTRY[name][1])
    except ImportError as exc:
        raise BackendNotFound(f"backend {name!r} needs packages that are not installed "
                              f"({exc.name or exc}); run: {install_hint(name)}") from exc
    backend_class: type[Backend] = module.backend_class
    return backend_class


def _check_known(name: object) -> None:
    from .._errors import BackendNotFound

    if not isinstance(name, str) or name not in _REGISTRY:
        raise BackendNotFound(f"unknown backend {name!r}; choose one of "
                              f"{', '.join(map(repr, known_backends()))}, or pass the options "
                              "of one (manybrains.Processes(...), manybrains.Dask(...), ...)")
