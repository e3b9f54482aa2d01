"""How a pool reaches Ray, and how it lets go: one of three connections.

============  ===============================================  ==========================
connection    made by                                          at the pool's shutdown
============  ===============================================  ==========================
local         ``mb.Ray()``: a Ray instance of ``workers`` CPUs  ``ray.shutdown()`` stops it
address       ``mb.Ray(address=...)``: joins that cluster       disconnects; it runs on
existing      ``ray.init()`` was already called here            left open
============  ===============================================  ==========================

Ray allows one connection per process, so a pool made while one is open runs through it.
``ray.init()`` with no address joins whatever cluster ``RAY_ADDRESS`` (or the last
``ray start`` on this machine) names; the local case asks for ``address="local"``, which
starts a fresh instance whatever the environment says. ``ray.init`` also installs its own
SIGTERM handler; the program's handlers are put back as soon as it returns.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import ray

__all__ = ("Connection", "connect", "start_local")

_SIGNALS = (signal.SIGTERM, signal.SIGINT)
# What Ray reads to decide whether a node may take part in a cluster (see _loopback_only).
_CLUSTERS_ENV = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"
# Ray warns on every local start that token authentication is on: news to nobody here.
_AUTH_LOGGER = "ray._private.authentication.authentication_token_setup"


@dataclass
class Connection:
    """The pool's way to its cluster: ``context`` is ``Pool.client``."""

    kind: str  # "local", "address" or "existing"
    context: Any  # the RayContext ray.init returned, or the runtime context of one open
    address: str | None  # the cluster's GCS address

    def close(self) -> None:
        """Stop the local instance, or disconnect from the cluster joined; leave one found
        open as it was."""
        if self.kind != "existing" and ray.is_initialized():
            with _signals_kept():  # ray.shutdown leaves them alone today; it may not always
                ray.shutdown()


def connect(address: str | None, workers: int) -> Connection:
    """The connection for ``mb.Ray(address=address)`` on a pool of ``workers``."""
    if ray.is_initialized():
        return _existing(address)
    with _signals_kept(), _quiet():
        if address is not None:
            context = ray.init(address=address, configure_logging=False, log_to_driver=True)
            return Connection("address", context, _gcs_address())
        context = start_local(workers, log_to_driver=True)
    return Connection("local", context, _gcs_address())


def start_local(cpus: int, **options: Any) -> Any:
    """``ray.init`` of a fresh local instance of ``cpus`` CPUs, every server of it on
    127.0.0.1, with no dashboard; ``options`` go to ``ray.init`` too."""
    with _loopback_only():
        # Explicit "local": RAY_ADDRESS (or a cluster `ray start` left) must not be joined.
        return ray.init(address="local", num_cpus=cpus, include_dashboard=False,
                        _node_ip_address="127.0.0.1", configure_logging=False, **options)


@contextlib.contextmanager
def _loopback_only() -> Iterator[None]:
    """Keep a local instance's servers on loopback while it starts.

    Asked for 127.0.0.1, Ray takes the address of the machine's network interface instead,
    and its servers listen there and on every interface, unless it believes clusters are
    unsupported here (as on macOS and Windows), when it keeps to loopback. This says so for
    the block: to the driver (a module constant, read at each call) and to the processes it
    starts (the environment variable they inherit and read).
    """
    from ray._private import ray_constants

    saved_env = os.environ.get(_CLUSTERS_ENV)
    saved = getattr(ray_constants, "ENABLE_RAY_CLUSTER", None)
    os.environ[_CLUSTERS_ENV] = "0"
    if saved is not None:
        ray_constants.ENABLE_RAY_CLUSTER = False
    try:
        yield
    finally:
        if saved is not None:
            ray_constants.ENABLE_RAY_CLUSTER = saved
        if saved_env is None:
            os.environ.pop(_CLUSTERS_ENV, None)
        else:
            os.environ[_CLUSTERS_ENV] = saved_env


def cluster_cpus() -> int | None:
    """How many CPUs the cluster has now (None if it says none)."""
    cpus = int(ray.cluster_resources().get("CPU", 0))  # type: ignore[no-untyped-call]
    return cpus or None


def _existing(address: str | None) -> Connection:
    current = _gcs_address()
    if address is not None and not _same_cluster(address, current):
        raise ValueError(
            f"this process is already connected to the Ray cluster at {current} (ray.init "
            f"was called), and Ray allows one connection per process: give mb.Ray() no "
            f"address to run there, or call ray.shutdown() before asking for {address!r}")
    return Connection("existing", ray.get_runtime_context(), current)


def _gcs_address() -> str | None:
    address: str | None = ray.get_runtime_context().gcs_address
    return address


def _same_cluster(address: str, current: str | None) -> bool:
    if current is None or address == current:
        return address == current
    try:  # "127.0.0.1:6379" and "localhost:6379" name the node's own address
        from ray._private.services import canonicalize_bootstrap_address

        return bool(canonicalize_bootstrap_address(address) == current)
    except Exception:  # noqa: BLE001 - a form Ray cannot resolve here is another cluster
        return False


@contextlib.contextmanager
def _signals_kept() -> Iterator[None]:
    """Put the program's SIGTERM and SIGINT handlers back after the block."""
    if threading.current_thread() is not threading.main_thread():
        yield  # only the main thread sets handlers: Ray sets none from here either
        return
    saved = {number: signal.getsignal(number) for number in _SIGNALS}
    try:
        yield
    finally:
        for number, handler in saved.items():
            if handler is not None:  # None: set outside Python, cannot be restored
                signal.signal(number, handler)


class _NoAuthNotice(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return "Token authentication is enabled" not in record.getMessage()


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    notice = _NoAuthNotice()
    logger = logging.getLogger(_AUTH_LOGGER)
    logger.addFilter(notice)
    try:
        yield
    finally:
        logger.removeFilter(notice)
