"""manybrains: parallel Python on every core, with an engine that never hangs.

>>> import manybrains as mb
>>> mb.map(lambda x: x * x, range(5))
[0, 1, 4, 9, 16]
"""

from ._api import default_pool as default_pool
from ._api import imap as imap
from ._api import map as map
from ._api import shutdown_default_pool as shutdown_default_pool
from ._api import submit as submit
from ._cpus import usable_cpus as usable_cpus
from ._errors import BackendNotFound as BackendNotFound
from ._errors import BrokenPool as BrokenPool
from ._errors import InitializerFailed as InitializerFailed
from ._errors import ManybrainsError as ManybrainsError
from ._errors import PoolClosed as PoolClosed
from ._errors import SerializationError as SerializationError
from ._errors import WorkerCrashed as WorkerCrashed
from ._executor import ProcessPoolExecutor as ProcessPoolExecutor
from ._pool import Pool as Pool
from ._remote import RemoteError as RemoteError
from ._remote import RemoteTraceback as RemoteTraceback

__version__ = "0.1.0"

__all__ = (
    "BackendNotFound",
    "BrokenPool",
    "InitializerFailed",
    "ManybrainsError",
    "Pool",
    "PoolClosed",
    "ProcessPoolExecutor",
    "RemoteError",
    "RemoteTraceback",
    "SerializationError",
    "WorkerCrashed",
    "default_pool",
    "imap",
    "map",
    "shutdown_default_pool",
    "submit",
    "usable_cpus",
)
