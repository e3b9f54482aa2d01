"""The "dask" backend against real clusters: one started here from the `dask` command line
(scheduler + 2 worker processes, as on a real deployment), and the LocalCluster a pool starts
when it is given no address.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

distributed = pytest.importorskip("distributed")

import faults  # noqa: E402 - after the skip
import tasks  # noqa: E402 - the workers import it too: the cluster's PYTHONPATH has tests/

import manybrains as mb  # noqa: E402
from manybrains._remote import RemoteTraceback  # noqa: E402
from manybrains._task import ChunkOutcome, Task  # noqa: E402
from manybrains.backends import get_backend  # noqa: E402
from manybrains.backends._base import PoolOptions  # noqa: E402
from manybrains.options import Dask  # noqa: E402

TESTS = Path(__file__).resolve().parents[1]


# ---- a cluster started the way users start one ------------------------------------------


def _dask(*args: str, log: Path) -> subprocess.Popen[bytes]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(TESTS), *sys.path])}
    with log.open("wb") as out:
        return subprocess.Popen([sys.executable, "-m", "dask", *args], env=env,
                                stdout=out, stderr=subprocess.STDOUT)


def _stop(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM, then SIGKILL for it and whatever it started, by PID."""
    try:
        family = psutil.Process(process.pid).children(recursive=True)
    except psutil.NoSuchProcess:
        family = []
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=15)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
    for child in family:
        try:
            child.kill()
            child.wait(timeout=5)
        except psutil.NoSuchProcess:
            continue


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A scheduler and two single-thread workers on 127.0.0.1; yields the address."""
    folder = tmp_path_factory.mktemp("dask")
    scheduler_file = folder / "scheduler.json"
    scheduler = _dask("scheduler", "--host", "127.0.0.1", "--port", "0", "--no-dashboard",
                      "--scheduler-file", str(scheduler_file), log=folder / "scheduler.log")
    workers = _dask("worker", "--scheduler-file", str(scheduler_file), "--nworkers", "2",
                    "--nthreads", "1", "--host", "127.0.0.1", "--no-dashboard",
                    log=folder / "workers.log")
    try:
        with distributed.Client(scheduler_file=str(scheduler_file), timeout=30,
                                set_as_default=False) as client:
            client.wait_for_workers(2, timeout=60)
            # distributed starts one offload thread on first use and keeps it for the life
            # of the process (as multiprocessing keeps its forkserver): start it here, so
            # that it is not counted as a leak of the first test that happens to use it.
            client.sync(distributed.utils.offload, int)
            address = client.scheduler.address
        yield address
    finally:
        _stop(workers)
        _stop(scheduler)


def _backend(address: str | None = None, *, client: object = None, workers: int = 2):
    backend = get_backend("dask")(PoolOptions(Dask(address=address, client=client), workers))
    return backend


@pytest.fixture
def dask_backend(cluster: str) -> Iterator:
    backend = _backend(cluster)
    yield backend
    backend.shutdown(wait=True, cancel_futures=True)


class _FailsToLoad:
    """Pickles fine; unpickling it (in the worker) raises."""

    def __reduce__(self):
        return (faults.raise_, (ValueError("bad state"),))


# ---- on an existing cluster, by address or client ---------------------------------------


def test_address_runs_calls_and_chunks_and_leaves_the_cluster_running(cluster: str) -> None:
    pids = {p.pid for p in psutil.Process().children(recursive=True)}
    first = _backend(cluster)
    assert first.submit(Task(tasks.add, (2, 3))).result(timeout=30) == 5
    outcome = first.submit(Task(tasks.square, items=range(10))).result(timeout=30)
    assert outcome.values == [x * x for x in range(10)] and outcome.error is None
    first.shutdown(wait=True)
    assert {p.pid for p in psutil.Process().children(recursive=True)} == pids
    second = _backend(cluster)  # the cluster still serves a new pool
    assert second.submit(Task(tasks.square, (9,))).result(timeout=30) == 81
    second.shutdown(wait=True)


def test_a_given_client_is_used_and_left_open(cluster: str) -> None:
    with distributed.Client(cluster, set_as_default=False) as client:
        backend = _backend(client=client)
        assert backend.client is client
        assert backend.submit(Task(tasks.square, (4,))).result(timeout=30) == 16
        backend.shutdown(wait=True)
        assert client.status == "running"
        assert client.submit(tasks.square, 5).result(timeout=30) == 25


def test_a_task_exception_keeps_its_type_and_the_worker_traceback(dask_backend) -> None:
    future = dask_backend.submit(Task(tasks.fail_on, (3,)))
    with pytest.raises(ValueError, match="bad input 3") as caught:
        future.result(timeout=30)
    cause = caught.value.__cause__
    assert isinstance(cause, RemoteTraceback)
    assert "tasks.py" in cause.tb and "fail_on" in cause.tb


def test_a_chunk_keeps_the_results_before_the_failing_item(dask_backend) -> None:
    outcome = dask_backend.submit(Task(tasks.fail_on, items=[1, 2, 3, 4])).result(timeout=30)
    assert isinstance(outcome, ChunkOutcome)
    assert outcome.values == [1, 2]
    assert isinstance(outcome.error, ValueError)
    assert isinstance(outcome.error.__cause__, RemoteTraceback)


def test_an_unpicklable_argument_fails_at_submit_naming_it(dask_backend) -> None:
    with pytest.raises(mb.SerializationError, match="positional argument 0"):
        dask_backend.submit(Task(tasks.square, (threading.Lock(),)))
    assert dask_backend.statistics().submitted == 0


def test_an_unpicklable_result_fails_that_task_only(dask_backend) -> None:
    with pytest.raises(mb.SerializationError, match="cannot pickle the result"):
        dask_backend.submit(Task(tasks.unpicklable_result)).result(timeout=30)
    assert dask_backend.submit(Task(tasks.square, (3,))).result(timeout=30) == 9


def test_an_unpicklable_result_is_also_an_instance_of_the_pickling_error(dask_backend
                                                                         ) -> None:
    with pytest.raises(TypeError, match="cannot pickle") as caught:  # what pickle raised
        dask_backend.submit(Task(tasks.unpicklable_result)).result(timeout=30)
    assert isinstance(caught.value, mb.SerializationError)
    assert isinstance(caught.value.__cause__, RemoteTraceback)


def test_a_task_its_worker_cannot_unpickle_fails_alone(dask_backend) -> None:
    with pytest.raises(mb.UnpicklingFailed, match="could not unpickle the task") as caught:
        dask_backend.submit(Task(tasks.add, (_FailsToLoad(), 1))).result(timeout=30)
    assert isinstance(caught.value, ValueError)  # also what unpickling raised
    assert dask_backend.statistics().crashed == 0  # the cluster did not lose it
    assert dask_backend.submit(Task(tasks.square, (3,))).result(timeout=30) == 9


def test_a_function_is_unpickled_once_per_worker(dask_backend) -> None:
    calls: list[int] = []

    def count(_: int) -> int:  # a closure: it travels by value, and its list with it
        calls.append(1)
        return len(calls)

    seen = [dask_backend.submit(Task(count, (i,))).result(timeout=30) for i in range(8)]
    assert max(seen) > 1  # a worker ran it again from its cache, with the same list


def test_identical_calls_each_run(dask_backend) -> None:
    futures = [dask_backend.submit(Task(tasks.fresh_token)) for _ in range(4)]
    assert len({f.result(timeout=30) for f in futures}) == 4  # pure=False: no deduplication


def test_timeout_fails_the_future_and_abandons_the_task(dask_backend) -> None:
    start = time.monotonic()
    future = dask_backend.submit(Task(tasks.sleep_then, (3.0,)), timeout=0.3)
    with pytest.raises(TimeoutError, match="cannot stop a running task"):
        future.result(timeout=30)
    assert time.monotonic() - start < 2.5
    assert dask_backend.statistics().timed_out == 1


def test_the_timeout_clock_starts_when_the_task_starts(dask_backend) -> None:
    busy = [dask_backend.submit(Task(tasks.sleep_then, (1.0,))) for _ in range(2)]
    queued = dask_backend.submit(Task(tasks.sleep_then, (0.1, "ran")), timeout=0.8)
    assert queued.result(timeout=30) == "ran"  # waited ~1 s for a worker, ran 0.1 s
    assert [f.result(timeout=30) for f in busy] == [None, None]


def test_cancel_a_queued_task(dask_backend) -> None:
    busy = [dask_backend.submit(Task(tasks.sleep_then, (1.0,))) for _ in range(2)]
    queued = dask_backend.submit(Task(tasks.fresh_token))
    assert dask_backend.cancel(queued) is True
    assert queued.cancelled()
    assert [f.result(timeout=30) for f in busy] == [None, None]
    assert dask_backend.cancel(busy[0]) is False  # already done


def test_a_big_array_is_sent_once_and_again_when_it_changes(dask_backend) -> None:
    numpy = pytest.importorskip("numpy")
    array = numpy.ones(300_000)  # 2.4 MB: above the scatter threshold
    results = [dask_backend.submit(Task(tasks.array_sum, (array,), {"scale": 2.0}))
               for _ in range(3)]
    assert [f.result(timeout=30) for f in results] == [600_000.0] * 3
    assert dask_backend.statistics().scattered == 1
    array[:] = 2.0
    assert dask_backend.submit(Task(tasks.array_sum, (array,))).result(timeout=30) == 600_000.0
    assert dask_backend.statistics().scattered == 2


def test_statistics_count_tasks_per_worker(dask_backend) -> None:
    for f in [dask_backend.submit(Task(tasks.square, (i,))) for i in range(6)]:
        f.result(timeout=30)
    with pytest.raises(ValueError):
        dask_backend.submit(Task(tasks.fail_on, (3,))).result(timeout=30)
    stats = dask_backend.statistics()
    assert (stats.submitted, stats.done, stats.failed) == (7, 6, 1)
    assert stats.in_flight == 0
    assert sum(w.tasks for w in stats.workers) == 7
    assert all(w.name.startswith("tcp://127.0.0.1:") for w in stats.workers)
    assert stats.scheduler.startswith("tcp://127.0.0.1:")


def test_submit_after_shutdown_raises_pool_closed(cluster: str) -> None:
    backend = _backend(cluster)
    backend.shutdown(wait=True)
    backend.shutdown(wait=True)  # idempotent
    with pytest.raises(mb.PoolClosed):
        backend.submit(Task(tasks.square, (2,)))


def test_shutdown_waits_for_queued_work(cluster: str) -> None:
    backend = _backend(cluster)
    futures = [backend.submit(Task(tasks.sleep_then, (0.2, i))) for i in range(4)]
    backend.shutdown(wait=True)
    assert [f.result(timeout=0) for f in futures] == [0, 1, 2, 3]


def test_pool_map_on_an_address(cluster: str) -> None:
    with mb.Pool(2, backend=mb.Dask(address=cluster)) as pool:
        assert pool.map(tasks.square, range(500)) == [x * x for x in range(500)]
        assert sorted(pool.imap(tasks.square, iter(range(50)), ordered=False)) == \
            [x * x for x in range(50)]


# ---- a LocalCluster of the pool's own -----------------------------------------------------


@pytest.mark.timeout(120)
def test_local_cluster_runs_the_pool_api_and_closes_with_it(cluster: str) -> None:
    with mb.Pool(2, backend="dask") as pool:
        client = pool.client
        assert client.scheduler.address.startswith("tcp://127.0.0.1:")
        assert pool.backend.dashboard_link is None
        assert pool.map(tasks.square, range(1000)) == [x * x for x in range(1000)]
        assert pool.starmap(tasks.add, [(1, 2), (3, 4)]) == [3, 7]
        assert sorted(pool.imap(tasks.square, iter(range(100)), ordered=False)) == \
            [x * x for x in range(100)]
        assert pool.submit(lambda x: x + 1, 41).result(timeout=30) == 42  # closures travel
        with pytest.raises(ValueError):
            pool.map(tasks.fail_on, range(10))
        workers = {w.name for w in pool.statistics().workers}
        assert workers and all(a.startswith("tcp://127.0.0.1:") for a in workers)
    assert client.status == "closed"


@pytest.mark.timeout(120)
def test_a_lost_worker_fails_its_task_and_retries_resubmit(cluster: str,
                                                          tmp_path: Path) -> None:
    with mb.Pool(1, backend="dask") as pool:
        with pytest.raises(mb.WorkerCrashed, match="lost"):
            pool.submit(tasks.crash).result(timeout=60)
        marker = str(tmp_path / "crashed-once")
        assert pool.submit(tasks.crash_once, marker, retries=1).result(timeout=60) == \
            "second try"
        stats = pool.statistics()
        assert (stats.crashed, stats.retried) == (2, 1)


@pytest.mark.timeout(120)
def test_terminate_stops_running_tasks_at_once(cluster: str) -> None:
    pool = mb.Pool(1, backend="dask")
    running = pool.submit(tasks.sleep_then, 60.0)
    time.sleep(0.5)
    start = time.monotonic()
    pool.terminate()
    assert time.monotonic() - start < 20
    assert running.cancelled()


@pytest.mark.timeout(120)
def test_the_initializer_runs_in_every_worker(cluster: str) -> None:
    with mb.Pool(2, backend="dask", initializer=tasks.remember, initargs=("ready",)) as pool:
        assert pool.starmap(tasks.recall, [()] * 4, chunksize=1) == ["ready"] * 4


@pytest.mark.timeout(120)
def test_a_failing_initializer_raises_initializer_failed(cluster: str) -> None:
    with pytest.raises(mb.InitializerFailed, match="no model"):
        mb.Pool(1, backend="dask", initializer=tasks.refuse, initargs=("no model",))


# ---- the rest of the Dask promises ---------------------------------------------------------


@pytest.mark.timeout(120)
def test_pool_given_a_client_runs_the_whole_api_and_leaves_the_client_open(cluster: str
                                                                          ) -> None:
    with distributed.Client(cluster, set_as_default=False) as client:
        with mb.Pool(backend=mb.Dask(client=client)) as pool:
            assert pool.client is client
            assert pool.map(tasks.square, range(200)) == [x * x for x in range(200)]
            assert list(pool.imap(tasks.square, iter(range(5)))) == [0, 1, 4, 9, 16]
            assert pool.submit(tasks.add, 1, 2).result(timeout=30) == 3
        assert client.status == "running"
        assert client.submit(tasks.square, 6).result(timeout=30) == 36


@pytest.mark.timeout(120)
def test_dashboard_true_serves_a_dashboard_address(cluster: str) -> None:
    import urllib.request

    with mb.Pool(1, backend=mb.Dask(dashboard=True)) as pool:
        link = pool.backend.dashboard_link
        assert link is not None and link.startswith("http://127.0.0.1:"), link
        root = link.split("/status")[0]
        with urllib.request.urlopen(root + "/health", timeout=10) as answer:
            assert answer.status == 200
    with mb.Pool(1, backend="dask") as pool:
        assert pool.backend.dashboard_link is None


@pytest.mark.timeout(120)
def test_the_initializer_also_runs_in_a_worker_that_joins_later(cluster: str,
                                                                tmp_path: Path) -> None:
    with mb.Pool(backend=mb.Dask(address=cluster), initializer=tasks.remember,
                 initargs=("ready",)) as pool:
        client = pool.client
        before = set(client.scheduler_info()["workers"])
        late = _dask("worker", cluster, "--nworkers", "1", "--nthreads", "1", "--host",
                     "127.0.0.1", "--no-dashboard", log=tmp_path / "late.log")
        try:
            client.wait_for_workers(len(before) + 1, timeout=60)
            (joined,) = set(client.scheduler_info()["workers"]) - before
            # only there: a task bound to a worker never runs on another
            assert client.submit(tasks.recall, workers=[joined], pure=False
                                 ).result(timeout=30) == "ready"
        finally:
            _stop(late)


@pytest.mark.timeout(120)
def test_terminate_stops_the_work_itself(cluster: str, tmp_path: Path) -> None:
    beats = tmp_path / "beats"
    pool = mb.Pool(1, backend="dask")
    running = pool.submit(tasks.heartbeat, str(beats), 60.0)
    deadline = time.monotonic() + 30
    while not beats.exists():
        assert time.monotonic() < deadline, "the task never started"
        time.sleep(0.05)
    pool.terminate()
    assert running.cancelled()
    time.sleep(0.5)  # a line being written when the worker died may still land
    settled = beats.read_text().count(".")
    time.sleep(1.0)
    assert beats.read_text().count(".") == settled, "the task went on after terminate()"
