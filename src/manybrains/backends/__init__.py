"""The backend registry: a name -> the module that implements it, imported on first use.

Importing manybrains imports no backend; ``backend="dask"`` imports dask only then. Each
name's options class (:mod:`manybrains.options`) is looked up by the same name. Worker
processes import this package too (their modules live under it), so it imports nothing else
at start-up.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ..options import BackendOptions
    from ._base import Backend

__all__ = ("available_backends", "get_backend", "install_hint", "known_backends",
           "options_for")

# name -> (module, the pip extra that brings its dependencies, or None)
_REGISTRY: dict[str, tuple[str, str | None]] = {
    "processes": ("manybrains.backends.processes", None),
    "threads": ("manybrains.backends.threads", None),
    "asyncio": ("manybrains.backends.asyncio_loop", None),
    "inline": ("manybrains.backends.inline", None),
    "auto": ("manybrains.backends.auto", None),
    "dask": ("manybrains.backends.dask", "dask"),
    "ray": ("manybrains.backends.ray", "ray"),
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
    from ..options import BackendOptions, options_class

    if isinstance(backend, BackendOptions):
        return backend
    _check_known(backend)
    return options_class(backend)()


def install_hint(name: str) -> str:
    """What to run so that backend ``name`` can be used here."""
    extra = _REGISTRY[name][1]
    return f"pip install 'manybrains[{extra}]'" if extra else "reinstall manybrains"


def get_backend(name: str) -> type[Backend]:
    """The backend class registered as ``name``; BackendNotFound says what to do if missing."""
    from .._errors import BackendNotFound

    _check_known(name)
    try:
        module = importlib.import_module(_REGISTRY[name][0])
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
