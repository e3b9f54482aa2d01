"""Every test runs under a hard timeout (pytest-timeout, see pyproject.toml) and under
``no_leaks``: a test fails if it leaves processes, threads or /dev/shm segments behind.

A process belongs to this test run when any of these holds, so that none escapes however it
was started and whoever its parent is now:

- it descends from the test process (fork, spawn, forkserver workers, subprocesses);
- it is in the test process's process group (a forked orphan, re-parented to init, keeps it);
- its environment carries this run's ``MANYBRAINS_TEST_RUN`` marker, which every process
  started with ``exec`` inherits (a forkserver's workers, a grandchild in a new session).

Only the exact pids of multiprocessing's forkserver and resource tracker, which live as long
as the test process by design, and those of the session's Dask cluster (its host process and
what runs under it, whatever their pids after a worker restart) are exempt. /dev/shm is
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
import subprocess
import sys
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
    if _backend_of(request) == "dask":  # up before the snapshot: not this test's leak
        request.getfixturevalue("dask_cluster")
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
    },
    "report_worker_pids": {
        **{name: "tasks run in the test process" for name in ("threads", "asyncio", "inline")},
        "auto": "its rows are those of the engines it chose for each function",
        "dask": "a Dask worker is named by its address; its process is the cluster's",
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
    """The one place a test pool is made: on "dask", one that uses the session cluster."""
    if backend == "dask":
        return mb.Pool(workers, backend=mb.Dask(address=_cluster.address), **options)
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
