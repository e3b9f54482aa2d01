"""manybrains: parallel Python on every core, with an engine that never hangs.

>>> import manybrains as mb
>>> mb.map(lambda x: x * x, range(5))
[0, 1, 4, 9, 16]

The names below are imported on first use: worker processes import this package too, and
every millisecond of their start-up is paid before the first result.
"""

from __future__ import annotations

from importlib import import_module as _import_module
from typing import TYPE_CHECKING
from typing import Any as _Any

if TYPE_CHECKING:
    from ._api import advise as advise
    from ._api import default_pool as default_pool
    from ._api import imap as imap
    from ._api import map as map
    from ._api import shutdown_default_pool as shutdown_default_pool
    from ._api import submit as submit
    from ._async_result import AsyncResult as AsyncResult
    from ._cpus import usable_cpus as usable_cpus
    from ._errors import BackendNotFound as BackendNotFound
    from ._errors import BrokenPool as BrokenPool
    from ._errors import InitializerFailed as InitializerFailed
    from ._errors import ManybrainsError as ManybrainsError
    from ._errors import PoolClosed as PoolClosed
    from ._errors import SerializationError as SerializationError
    from ._errors import UnpicklingFailed as UnpicklingFailed
    from ._errors import WorkerCrashed as WorkerCrashed
    from ._executor import ProcessPoolExecutor as ProcessPoolExecutor
    from ._pool import Pool as Pool
    from ._remote import RemoteError as RemoteError
    from ._remote import RemoteTraceback as RemoteTraceback
    from ._spawn import Handle as Handle
    from ._spawn import spawn as spawn
    from ._stream import ResultIterator as ResultIterator
    from .advisor import Advice as Advice
    from .backends._base import Statistics as Statistics
    from .backends._base import WorkerStats as WorkerStats
    from .insights import Insights as Insights
    from .ipc.autoshare import set_array_threshold as set_array_threshold
    from .ipc.queue import Queue as Queue
    from .ipc.queue import QueueClosed as QueueClosed
    from .ipc.semaphore import Lock as Lock
    from .ipc.semaphore import Semaphore as Semaphore
    from .ipc.shared import Array as Array
    from .ipc.shared import Value as Value
    from .ipc.sharedarray import SharedArray as SharedArray
    from .options import Asyncio as Asyncio
    from .options import Auto as Auto
    from .options import BackendOptions as BackendOptions
    from .options import Dask as Dask
    from .options import Inline as Inline
    from .options import Processes as Processes
    from .options import Ray as Ray
    from .options import Threads as Threads
    from .progress import ProgressSnapshot as ProgressSnapshot

__version__ = "0.1.0"

# public name -> the module defining it
_EXPORTS = {
    "advise": "._api",
    "Advice": ".advisor",
    "AsyncResult": "._async_result",
    "ResultIterator": "._stream",
    "default_pool": "._api",
    "imap": "._api",
    "map": "._api",
    "shutdown_default_pool": "._api",
    "submit": "._api",
    "usable_cpus": "._cpus",
    "BackendNotFound": "._errors",
    "BrokenPool": "._errors",
    "InitializerFailed": "._errors",
    "ManybrainsError": "._errors",
    "PoolClosed": "._errors",
    "SerializationError": "._errors",
    "UnpicklingFailed": "._errors",
    "WorkerCrashed": "._errors",
    "ProcessPoolExecutor": "._executor",
    "Pool": "._pool",
    "Statistics": ".backends._base",
    "WorkerStats": ".backends._base",
    "Insights": ".insights",
    "ProgressSnapshot": ".progress",
    "RemoteError": "._remote",
    "RemoteTraceback": "._remote",
    "Handle": "._spawn",
    "spawn": "._spawn",
    "set_array_threshold": ".ipc.autoshare",
    "Queue": ".ipc.queue",
    "Lock": ".ipc.semaphore",
    "Semaphore": ".ipc.semaphore",
    "QueueClosed": ".ipc.queue",
    "Array": ".ipc.shared",
    "Value": ".ipc.shared",
    "SharedArray": ".ipc.sharedarray",
    "Asyncio": ".options",
    "Auto": ".options",
    "BackendOptions": ".options",
    "Dask": ".options",
    "Inline": ".options",
    "Processes": ".options",
    "Ray": ".options",
    "Threads": ".options",
}

__all__ = tuple(sorted(_EXPORTS))


def __getattr__(name: str) -> _Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'manybrains' has no attribute {name!r}")
    value = getattr(_import_module(module, __name__), name)
    if isinstance(value, type) and value.__qualname__ == name:
        # Shown as manybrains.Pool, the name users know (not manybrains._pool.Pool), and
        # pickled by that name: unpickling looks it up here, through this function.
        value.__module__ = __name__
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    """The public names and the module's dunders; not its helpers or loaded submodules."""
    dunders = [name for name in globals() if name.startswith("__") and name.endswith("__")]
    return sorted([*__all__, *dunders])


# Only needed above: mb.TYPE_CHECKING and mb.annotations are not manybrains' names.
del annotations, TYPE_CHECKING
