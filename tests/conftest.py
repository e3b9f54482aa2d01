"""Every test runs under a hard timeout (pytest-timeout, see pyproject.toml) and under
``no_leaks``: a test fails if it leaves processes, threads or /dev/shm segments behind.

A process belongs to this test run when any of these holds, so that none escapes however it
was started and whoever its parent is now:

- it descends from the test process (fork, spawn, forkserver workers, subprocesses);
- it is in the test process's process group (a forked orphan, re-parented to init, keeps it);
- its environment carries this run's ``MANYBRAINS_TEST_RUN`` marker, which every process
  started with ``exec`` inherits (a forkserver's workers, a grandchild in a new session).

Only the exact pids of multiprocessing's forkserver and resource tracker, which live as long
as the test process by design, and those of the session's Dask and Ray clusters (each one's
host process and what runs under it, whatever their pids after a worker restart; for Ray also
every process carrying the session Ray's own ``MANYBRAINS_TEST_RAY`` marker, which its
servers and worker processes inherit wherever they are re-parented) are exempt. /dev/shm is
machine-wide: only manybrains segments made by a process of this run (or by a process that
has since died) are counted, so a concurrent session's processes and segments are never
blamed here.
"""

from __future__ import annotations

import contextlib
import gc
import multiprocessing
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest

import manybrains as mb
from manybrains.backends import available_backends, known_backends
from manybrains.backends.processes.context import available_start_methods
from manybrains.ipc import segment

RUN_MARKER = "MANYBRAINS_TEST_RUN"
# Set before any test starts a process: each one inherits it, and so do their children.
RUN_ID = f"{os.getpid()}-{secrets.token_hex(4)}"
os.environ[RUN_MARKER] = RUN_ID
# Every Ray process of the run (the session's cluster, this process and the scripts that join
# it) keeps its servers on 127.0.0.1: on Linux, Ray does so only where told that clusters are
# unsupported here (see manybrains.backends.ray.connection, which says so for a pool's own).
RAY_LOOPBACK = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"
os.environ.setdefault(RAY_LOOPBACK, "0")

# Tunable for the fixture's own tests, which would otherwise wait the full settle time.
_SETTLE_SECONDS = float(os.environ.get("MANYBRAINS_LEAK_SETTLE", "5"))

# The stdlib's start methods (what multiprocessing.get_context() accepts too), and every
# start method a Pool is tested under: the ``start_method`` fixture, so the fault table and
# the Ctrl-C and killed-parent tests, run over POOL_START_METHODS. A new one is one name here.
START_METHODS = [m for m in ("fork", "forkserver", "spawn")
                 if m in multiprocessing.get_all_start_methods()]
POOL_START_METHODS = [m for m in ("template", *START_METHODS) if m in available_start_methods()]


def _long_lived() -> set[int]:
    """Helpers multiprocessing starts once and keeps for the life of the test process."""
    from multiprocessing import forkserver, resource_tracker

    pids = {getattr(forkserver._forkserver, "_forkserver_pid", None),  # type: ignore[attr-defined]
            getattr(resource_tracker._resource_tracker, "_pid", None)}  # type: ignore[attr-defined]
    return {pid for pid in pids if pid}


def _descendants(pid: int, children: dict[int, list[int]]) -> set[int]:
    found: set[int] = set()
    stack = list(children.get(pid, []))
    while stack:
        child = stack.pop()
        if child not in found:
            found.add(child)
            stack.extend(children.get(child, []))
    return found


def _processes() -> dict[int, str]:
    """Every live or zombie process of this test run but the test process itself."""
    me = os.getpid()
    group = os.getpgid(0)
    table = {}
    for proc in psutil.process_iter(["ppid", "status", "cmdline", "name", "environ"],
                                    ad_value=None):
        table[proc.pid] = proc.info
    children: dict[int, list[int]] = {}
    for pid, info in table.items():
        children.setdefault(info["ppid"], []).append(pid)
    ours = _descendants(me, children)
    for pid, info in table.items():
        if pid == me or pid in ours:
            continue
        environ = info["environ"] or {}
        if environ.get(RUN_MARKER) == RUN_ID or _group_of(pid) == group:
            ours.add(pid)
    exempt = _long_lived()
    if _cluster.host is not None:  # a worker it restarts after a crash has a new pid
        exempt |= {_cluster.host.pid, *_descendants(_cluster.host.pid, children)}
    exempt |= _session_ray_processes(table, children)
    found = {}
    for pid in ours:
        info = table[pid]
        if pid in exempt and info["status"] != psutil.STATUS_ZOMBIE:
            continue
        found[pid] = " ".join(info["cmdline"] or []) or info["name"] or "?"
    return found


def _group_of(pid: int) -> int | None:
    try:
        return os.getpgid(pid)
    except OSError:
        return None


def _threads() -> set[threading.Thread]:
    return {t for t in threading.enumerate() if t.is_alive()}


def _segments(processes: dict[int, str]) -> set[str]:
    """manybrains segments this test process (or one of its processes) may have made.

    A segment whose creator is alive outside this test run belongs to another program
    (another pytest session, a benchmark) and is not this test's leak.
    """
    try:
        entries = os.listdir("/dev/shm")
    except FileNotFoundError:
        return set()
    ours = {os.getpid(), *processes}
    found = set()
    for entry in entries:
        creator = segment.creator_pid(entry.removeprefix("sem."))
        if creator is None:
            continue
        if creator in ours or not segment.process_alive(creator):
            found.add(entry)
    return found


Snapshot = tuple[dict[int, str], set[threading.Thread], set[str]]


def _snapshot() -> Snapshot:
    processes = _processes()
    return processes, _threads(), _segments(processes)


def leftovers(before: Snapshot) -> list[str]:
    """What exists now that did not before ``before`` was taken."""
    procs, threads, segments = before
    now = _processes()
    found = [f"process {pid}: {cmd}" for pid, cmd in now.items() if pid not in procs]
    found += [f"thread {t.name}" for t in _threads() - threads]
    found += [f"/dev/shm/{name}" for name in _segments(now) - segments]
    return found


@pytest.fixture(autouse=True)
def no_leaks(request: pytest.FixtureRequest) -> Iterator[None]:
    """Fail the test if it leaves processes, threads or shared memory behind."""
    cluster = _SESSION_CLUSTERS.get(_backend_of(request) or "")
    if cluster is not None:  # up before the snapshot: not this test's leak
        request.getfixturevalue(cluster)
    before = _snapshot()
    yield
    mb.shutdown_default_pool()
    deadline = time.monotonic() + _SETTLE_SECONDS
    while (left := leftovers(before)) and time.monotonic() < deadline:
        # What only the cycle collector frees (an exception's traceback holding a task's
        # arguments, a shared object among them) is garbage, not a leak: collect it.
        gc.collect()
        time.sleep(0.05)
    assert not left, "the test left these behind:\n  " + "\n  ".join(left)


@pytest.fixture(params=POOL_START_METHODS)
def start_method(request: pytest.FixtureRequest) -> str:
    """Each start method a Pool has on this platform."""
    return str(request.param)


# ---- backends: every test of the contract runs on each one ----------------------------------

# Every backend the registry knows, in its order: the one list the tests use. One that needs
# packages not installed here is skipped by the ``backend`` fixture, saying which.
BACKENDS = known_backends()

# What a backend cannot do, and why: a test marked ``@pytest.mark.needs("ability")`` is skipped
# on the backends named under that ability. The one place such differences are written down.
CANNOT: dict[str, dict[str, str]] = {
    "cancel_running": {
        "inline": "each task has run to completion by the time submit returns",
    },
    "queue": {
        "inline": "nothing waits: every task ran inside submit",
        "auto": "auto runs up to 256 waiting calls at once: nothing queues behind one",
    },
    "run_beside_the_caller": {
        "inline": "each task runs in the caller: an awaiting event loop waits for it",
    },
    "crash": {
        name: "tasks run in the test process, which os._exit would end"
        for name in ("threads", "asyncio", "inline", "auto")
    },
    "block_beside_others": {
        "asyncio": "one event loop runs every task: a plain function that sleeps holds up the "
                   "rest, so its tests wait with coroutines",
    },
    "run_at_most_workers": {
        "asyncio": "coroutines: up to the pool's concurrency (100) wait at once on its loop",
        "auto": "waiting calls: up to 256 at once",
    },
    "use_only_its_workers": {
        "dask": "a pool given a cluster's address runs on every worker of that cluster",
        "ray": "a pool on a Ray cluster runs on every CPU of that cluster",
    },
    "report_worker_pids": {
        **{name: "tasks run in the test process" for name in ("threads", "asyncio", "inline")},
        "auto": "its rows are those of the engines it chose for each function",
        "dask": "a Dask worker is named by its address; its process is the cluster's",
        "ray": "a Ray worker process is the cluster's, maybe on another machine: its row is "
               "named by node and pid",
    },
}


def can(backend: str, ability: str) -> bool:
    """Whether ``backend`` can do ``ability`` (``CANNOT`` does not name it under it): for a
    test that checks more on the backends that can, rather than skipping the others."""
    return backend not in CANNOT.get(ability, {})


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "needs(*abilities): skipped on the backends that "
                                       "cannot (conftest.CANNOT says which and why)")


def _backend_of(request: pytest.FixtureRequest) -> str | None:
    callspec = getattr(request.node, "callspec", None)
    return callspec.params.get("backend") if callspec is not None else None


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    """Each backend, as anyio's ``anyio_backend``: a test taking it runs once per backend."""
    name = str(request.param)
    if name not in available_backends():
        pytest.skip(f"backend {name!r}: its packages are not installed")
    for marker in request.node.iter_markers("needs"):
        for ability in marker.args:
            if reason := CANNOT.get(ability, {}).get(name):
                pytest.skip(f"{name}: {reason}")
    return name


def new_pool(backend: str, workers: int | None = 2, **options: Any) -> mb.Pool:
    """The one place a test pool is made: on "dask" and "ray", one that uses the session's
    cluster (on Ray through the connection the test process holds to it)."""
    if backend == "dask":
        return mb.Pool(workers, backend=mb.Dask(address=_cluster.address), **options)
    if backend == "ray":
        return mb.Pool(workers, backend=mb.Ray(address=_ray.address), **options)
    return mb.Pool(workers, backend=backend, **options)


@pytest.fixture
def make_pool(backend: str) -> Iterator[Callable[..., mb.Pool]]:
    """``make_pool(workers=2, **options)``: a pool of the test's backend, ended afterwards."""
    made: list[mb.Pool] = []

    def make(workers: int | None = 2, **options: Any) -> mb.Pool:
        made.append(new_pool(backend, workers, **options))
        return made[-1]

    yield make
    for pool in made:  # a test that failed half-way leaves no pool running
        pool.terminate()


@pytest.fixture
def pool(make_pool: Callable[..., mb.Pool]) -> Iterator[mb.Pool]:
    """A two-worker pool of each backend."""
    with make_pool(2) as made:
        yield made


# ---- the session's Dask cluster ------------------------------------------------------------

# A LocalCluster in a process of its own, so that its threads and workers are never this
# process's: the leak check exempts exactly that process and what runs under it. A lost task
# fails at once (allowed-failures 0), as on the pool's own LocalCluster; retries are the pool's.
_CLUSTER_SCRIPT = """
import sys, dask, distributed
with dask.config.set({"distributed.scheduler.allowed-failures": 0}):
    cluster = distributed.LocalCluster(
        n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1",
        dashboard_address=None, scheduler_kwargs={"dashboard_address": "127.0.0.1:0"})
print(cluster.scheduler_address, flush=True)
sys.stdin.read()  # until the test session closes the pipe
cluster.close(timeout=20)
"""


class _SessionCluster:
    host: subprocess.Popen[str] | None = None
    address: str | None = None


_cluster = _SessionCluster()
TESTS = Path(__file__).resolve().parent


@pytest.fixture(scope="session")
def dask_cluster() -> Iterator[str]:
    """One Dask cluster for the whole run (2 single-thread worker processes); its address."""
    distributed = pytest.importorskip("distributed")
    # the workers import the tests' task modules (tasks.py) by name, as a user's would
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(TESTS), *sys.path])}
    host = subprocess.Popen([sys.executable, "-c", _CLUSTER_SCRIPT], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True, env=env)
    _cluster.host = host
    try:
        assert host.stdout is not None
        _cluster.address = host.stdout.readline().strip()
        assert _cluster.address.startswith("tcp://"), "the Dask cluster did not start"
        with distributed.Client(_cluster.address, timeout=30, set_as_default=False) as client:
            client.wait_for_workers(2, timeout=60)
            # distributed starts one offload thread on first use and keeps it for the life
            # of the process (as multiprocessing keeps its forkserver): start it now, so that
            # it is not counted as a leak of the first test that happens to use it.
            client.sync(distributed.utils.offload, int)
        yield _cluster.address
    finally:
        _close_cluster(host)


def _close_cluster(host: subprocess.Popen[str]) -> None:
    """Close its stdin (it closes the cluster); SIGKILL it and its workers if it lingers."""
    family = psutil.Process(host.pid).children(recursive=True)
    with contextlib.suppress(OSError):
        assert host.stdin is not None
        host.stdin.close()
    try:
        host.wait(timeout=30)
    except subprocess.TimeoutExpired:
        host.kill()
        host.wait()
    for process in family:
        with contextlib.suppress(psutil.NoSuchProcess):
            process.kill()
    _cluster.host = _cluster.address = None


# ---- the session's Ray cluster -------------------------------------------------------------

# A local Ray instance in a process of its own, started as ``mb.Ray()`` starts one (2 CPUs,
# every server on 127.0.0.1, no dashboard), in a temporary folder of its own so that no other
# Ray on this machine is joined or disturbed. Ray's servers and worker processes are its descendants
# and inherit RAY_MARKER; the leak check exempts exactly those. Token authentication is off
# on it: a driver joining by address would need the token, which is Ray's business, not ours.
_RAY_SCRIPT = """
import sys, ray
from manybrains.backends.ray.connection import start_local
context = start_local(2, _temp_dir=sys.argv[1])
print(context.address_info["address"], flush=True)
sys.stdin.read()  # until the test session closes the pipe
ray.shutdown()
"""
RAY_MARKER = "MANYBRAINS_TEST_RAY"
# The session cluster each backend's tests run on, started before a test's leak snapshot.
_SESSION_CLUSTERS = {"dask": "dask_cluster", "ray": "ray_cluster"}


class _SessionRay:
    host: subprocess.Popen[str] | None = None
    address: str | None = None


_ray = _SessionRay()


def _session_ray_processes(table: dict[int, dict[str, Any]], children: dict[int, list[int]]
                           ) -> set[int]:
    """The session Ray's processes: its host, what runs under it, and what carries its marker."""
    if _ray.host is None:
        return set()
    marked = {pid for pid, info in table.items()
              if (info["environ"] or {}).get(RAY_MARKER) == RUN_ID}
    return {_ray.host.pid, *_descendants(_ray.host.pid, children), *marked}


@pytest.fixture(scope="session")
def ray_cluster() -> Iterator[str]:
    """One local Ray instance for the whole run (2 CPUs), and this process connected to it, as
    a program that called ``ray.init(address=...)`` is: pools on "ray" run through that
    connection. Yields the cluster's address."""
    ray = pytest.importorskip("ray")
    folder = tempfile.mkdtemp(prefix="mbray-")  # short: Ray's socket paths live under it
    # the workers import the tests' task modules (tasks.py) by name, as a user's would
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(TESTS), *sys.path]),
           RAY_MARKER: RUN_ID, "RAY_AUTH_MODE": "disabled"}
    host = subprocess.Popen([sys.executable, "-c", _RAY_SCRIPT, folder], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True, env=env)
    _ray.host = host
    try:
        assert host.stdout is not None
        _ray.address = host.stdout.readline().strip()
        assert _ray.address, "the session's Ray did not start"
        _connect_to_ray(ray, _ray.address)
        yield _ray.address
    finally:
        _close_ray(ray, host, folder)


def _connect_to_ray(ray: Any, address: str) -> None:
    """``ray.init`` to ``address``, keeping pytest's signal handlers (Ray sets SIGTERM's)."""
    handlers = {number: signal.getsignal(number) for number in (signal.SIGTERM, signal.SIGINT)}
    try:
        ray.init(address=address, configure_logging=False, log_to_driver=True)
    finally:
        for number, handler in handlers.items():
            if handler is not None:
                signal.signal(number, handler)


def _close_ray(ray: Any, host: subprocess.Popen[str], folder: str) -> None:
    """Disconnect, close the host's stdin (it stops Ray); SIGKILL, by pid, whatever of the
    session's Ray lingers."""
    with contextlib.suppress(Exception):
        ray.shutdown()
    family = _marked_ray_processes()
    with contextlib.suppress(psutil.NoSuchProcess):
        family += psutil.Process(host.pid).children(recursive=True)
    with contextlib.suppress(OSError):
        assert host.stdin is not None
        host.stdin.close()
    try:
        host.wait(timeout=30)
    except subprocess.TimeoutExpired:
        host.kill()
        host.wait()
    for process in family:
        with contextlib.suppress(psutil.NoSuchProcess):
            process.kill()
    shutil.rmtree(folder, ignore_errors=True)
    _ray.host = _ray.address = None


def _marked_ray_processes() -> list[psutil.Process]:
    return [proc for proc in psutil.process_iter(["environ"], ad_value=None)
            if (proc.info["environ"] or {}).get(RAY_MARKER) == RUN_ID]
