"""The "ray" backend beyond the contract: its three connections (a local instance of its own,
a cluster joined by address, the connection ``ray.init`` opened), stopping running tasks, what
it puts into the object store, and speed against one ``ray.remote`` call per item.

Most tests run on the session's Ray (conftest's ``ray_cluster``), through the connection this
process holds to it. A pool that starts Ray itself, or joins by address, needs a process
without one: those tests run a short script in a child process, which reports what it saw.
"""

from __future__ import annotations

import functools
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

ray = pytest.importorskip("ray")

import faults  # noqa: E402 - after the skip
import tasks  # noqa: E402 - the workers import it too: the cluster's PYTHONPATH has tests/
from conftest import RAY_LOOPBACK, new_pool  # noqa: E402

import manybrains as mb  # noqa: E402
from manybrains._remote import RemoteTraceback  # noqa: E402
from manybrains.backends.ray import RayStatistics  # noqa: E402

TESTS = Path(__file__).resolve().parents[1]


@pytest.fixture
def pool(ray_cluster: str) -> Iterator[mb.Pool]:
    with new_pool("ray", 2) as made:
        yield made


def _run_script(script: str, *args: str, unset: tuple[str, ...] = (), **env: str
                ) -> dict[str, object]:
    """Run ``script`` in a child process (tests/ on its path, ``unset`` not in its
    environment); what it printed as JSON."""
    environ = {**os.environ, "PYTHONPATH": os.pathsep.join([str(TESTS), *sys.path]), **env}
    for name in unset:
        environ.pop(name, None)
    done = subprocess.run([sys.executable, "-c", script, *args], env=environ, text=True,
                          capture_output=True, timeout=100)
    assert done.returncode == 0, done.stdout + done.stderr
    facts: dict[str, object] = json.loads(done.stdout.strip().splitlines()[-1])
    return facts


# ---- the three connections ------------------------------------------------------------------

_LOCAL = """
import json, os, signal, sys, time
import psutil, ray
import manybrains as mb, tasks

def on_sigterm(signum, frame):
    pass

def listening():
    # the addresses that this process and its children listen on
    found = set()
    for process in [psutil.Process(), *psutil.Process().children(recursive=True)]:
        try:
            # psutil 6 renamed connections() net_connections()
            read = getattr(process, "net_connections", None) or process.connections
            connections = read(kind="inet")
        except psutil.Error:
            continue
        found |= {c.laddr.ip for c in connections if c.status == psutil.CONN_LISTEN}
    return sorted(found)

signal.signal(signal.SIGTERM, on_sigterm)
started = time.monotonic()
pool = mb.Pool(2, backend=mb.Ray())
facts = {"init_s": time.monotonic() - started, "address": pool.statistics().address,
         "capacity": pool.backend.capacity, "client": type(pool.client).__name__,
         "sigterm_kept": signal.getsignal(signal.SIGTERM) is on_sigterm,
         "ray_processes": len(psutil.Process().children(recursive=True)),
         "squares": pool.map(tasks.square, range(300)) == [x * x for x in range(300)],
         "environment_kept": "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER" not in os.environ}
facts["listening"] = listening()
started = time.monotonic()
pool.shutdown()
facts["shutdown_s"] = time.monotonic() - started
facts["connected_after"] = ray.is_initialized()
facts["sigterm_after"] = signal.getsignal(signal.SIGTERM) is on_sigterm
deadline = time.monotonic() + 10
while psutil.Process().children(recursive=True) and time.monotonic() < deadline:
    time.sleep(0.1)
facts["left"] = [p.name() for p in psutil.Process().children(recursive=True)]
print(json.dumps(facts))
"""


@pytest.mark.timeout(120)
def test_a_pool_of_its_own_starts_a_local_ray_on_loopback_ignoring_ray_address_and_stops_it(
        ray_cluster: str) -> None:
    # RAY_ADDRESS names the session's cluster: a bare ray.init() would join it
    # and without the run's loopback setting: the pool must keep its Ray on 127.0.0.1 itself
    facts = _run_script(_LOCAL, RAY_ADDRESS=ray_cluster, unset=(RAY_LOOPBACK,))
    print(f"local Ray: started in {facts['init_s']:.2f} s, stopped in {facts['shutdown_s']:.2f} s")
    assert facts["address"] != ray_cluster and facts["capacity"] == 2, facts
    assert facts["client"] == "RayContext" and facts["squares"], facts
    assert facts["ray_processes"], "no Ray processes were started under the pool"
    loopback = {"127.0.0.1", "::ffff:127.0.0.1", "::1"}
    assert facts["listening"] and set(facts["listening"]) <= loopback, facts["listening"]
    assert facts["environment_kept"], "the pool left Ray's loopback setting in os.environ"
    assert facts["sigterm_kept"] and facts["sigterm_after"], "ray.init took over SIGTERM"
    assert facts["connected_after"] is False and facts["left"] == [], facts


_JOIN = """
import json, sys
import ray
import manybrains as mb, tasks

with mb.Pool(backend=mb.Ray(address=sys.argv[1])) as pool:
    facts = {"address": pool.statistics().address, "capacity": pool.backend.capacity,
             "squares": pool.map(tasks.square, range(300)) == [x * x for x in range(300)]}
facts["connected_after"] = ray.is_initialized()
print(json.dumps(facts))
"""


@pytest.mark.timeout(120)
def test_an_address_joins_that_cluster_and_leaves_it_running(ray_cluster: str) -> None:
    facts = _run_script(_JOIN, ray_cluster)
    assert facts == {"address": ray_cluster, "capacity": 2, "squares": True,
                     "connected_after": False}
    with new_pool("ray") as pool:  # the cluster still serves
        assert pool.map(tasks.square, range(10)) == [x * x for x in range(10)]


def test_an_open_connection_is_used_and_left_open(ray_cluster: str) -> None:
    with mb.Pool(backend=mb.Ray()) as pool:  # no address: the connection ray.init opened
        assert pool.statistics().address == ray_cluster
        assert pool.client.gcs_address == ray_cluster  # ray.get_runtime_context()
        assert pool.backend.capacity == 2
        assert pool.submit(tasks.add, 2, 3).result(timeout=30) == 5
    assert ray.is_initialized()
    assert ray.get(ray.remote(tasks.square).remote(7), timeout=30) == 49


def test_an_address_of_another_cluster_than_the_open_one_is_refused(ray_cluster: str) -> None:
    with pytest.raises(ValueError, match="already connected to the Ray cluster at"):
        mb.Pool(backend=mb.Ray(address="127.0.0.1:1"))
    assert ray.is_initialized()


# ---- stopping tasks and losing them -------------------------------------------------------


def _beats(path: Path) -> int:
    return path.read_text().count(".") if path.exists() else 0


def _wait_for(condition: Callable[[], object], what: str, seconds: float = 30) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, what
        time.sleep(0.02)


def test_a_task_past_its_timeout_is_stopped_in_its_worker(pool: mb.Pool, tmp_path: Path
                                                          ) -> None:
    beats = tmp_path / "beats"
    future = pool.submit(tasks.heartbeat, str(beats), 30.0, timeout=0.5)
    with pytest.raises(TimeoutError, match=r"task \d+ \(heartbeat\) ran longer than its "
                                           r"timeout of 0.5 s"):
        future.result(timeout=30)
    time.sleep(0.3)  # a line being written as the worker died may still land
    settled = _beats(beats)
    time.sleep(1.0)
    assert settled and _beats(beats) == settled, "the task went on after its timeout"
    assert pool.statistics().timed_out == 1
    assert pool.submit(tasks.square, 3).result(timeout=30) == 9  # a new worker takes over


def test_cancel_kills_a_running_task_and_a_cancelled_queued_task_never_runs(
        pool: mb.Pool, tmp_path: Path) -> None:
    beats, other, never = tmp_path / "beats", tmp_path / "other", tmp_path / "never"
    running = pool.submit(tasks.heartbeat, str(beats), 30.0)
    blocker = pool.submit(tasks.heartbeat, str(other), 1.0)
    _wait_for(lambda: beats.exists() and other.exists(), "the tasks never started")
    queued = pool.submit(tasks.heartbeat, str(never), 0.2)  # both CPUs are busy: it waits
    assert queued.cancel() and pool.cancel(running)
    assert running.cancelled() and queued.cancelled()
    time.sleep(0.3)
    settled = _beats(beats)
    assert blocker.result(timeout=30) is None  # the one left alone ran to its end
    time.sleep(0.5)
    assert _beats(beats) == settled, "the cancelled task went on"
    assert not never.exists(), "a task cancelled while queued ran"


def test_a_crashed_worker_fails_its_task_and_retries_run_it_again(pool: mb.Pool,
                                                                   tmp_path: Path) -> None:
    with pytest.raises(mb.WorkerCrashed, match=r"Ray lost task \d+ \(crash\)") as caught:
        pool.submit(tasks.crash).result(timeout=60)
    assert isinstance(caught.value.__cause__, ray.exceptions.WorkerCrashedError)
    marker = tmp_path / "crashed-once"
    assert pool.submit(tasks.crash_once, str(marker), retries=1).result(timeout=60) == \
        "second try"
    stats = pool.statistics()
    assert (stats.crashed, stats.retried, stats.failed) == (2, 1, 1), stats


def test_a_task_that_raised_keeps_its_type_and_is_never_run_again(pool: mb.Pool,
                                                                  tmp_path: Path) -> None:
    runs = tmp_path / "runs"

    def _count_then_fail() -> None:  # nested: it travels by value (workers cannot import
        with open(runs, "a") as f:  # this test module)
            f.write("ran\n")
        raise KeyError("wrong key")

    with pytest.raises(KeyError, match="wrong key") as caught:
        pool.submit(_count_then_fail, retries=3).result(timeout=30)
    cause = caught.value.__cause__
    assert isinstance(cause, RemoteTraceback) and "_count_then_fail" in cause.tb
    assert runs.read_text() == "ran\n"
    assert pool.statistics().retried == 0


# ---- the initializer, the object store, statistics -----------------------------------------


def test_the_initializer_runs_once_in_each_worker_process_before_its_tasks(
        ray_cluster: str, tmp_path: Path) -> None:
    log = tmp_path / "initialized"

    def note_pid(path: str, token: str) -> None:
        with open(path, "a") as f:
            f.write(f"{os.getpid()}\n")
        tasks.remember(token)

    with new_pool("ray", initializer=note_pid, initargs=(str(log), "ready")) as pool:
        ran = pool.map(tasks.pid_of, range(24), chunksize=1)
        assert pool.map(tasks.recall, range(8), chunksize=1) == ["ready"] * 8
    initialized = log.read_text().split()
    assert sorted(initialized) == sorted(set(initialized)), "twice in one worker"
    assert {str(pid) for pid in ran} <= set(initialized)


def test_a_big_initializer_runs_from_the_object_store(ray_cluster: str) -> None:
    ballast = bytes(range(256)) * 8192  # 2 MB of initargs: above the store threshold
    with new_pool("ray", initializer=tasks.remember, initargs=(ballast,)) as pool:
        seen = pool.map(lambda _: len(tasks.recall()), range(40), chunksize=2)
    assert seen == [len(ballast)] * 40


def test_a_big_array_is_stored_once_and_again_when_it_changes(pool: mb.Pool) -> None:
    numpy = pytest.importorskip("numpy")
    array = numpy.ones(300_000)  # 2.4 MB: above the store threshold
    futures = [pool.submit(tasks.array_sum, array, scale=2.0) for _ in range(3)]
    assert [f.result(timeout=30) for f in futures] == [600_000.0] * 3
    assert pool.statistics().stored == 1
    array[:] = 2.0
    assert pool.submit(tasks.array_sum, array).result(timeout=30) == 600_000.0
    assert pool.statistics().stored == 2


def test_big_arrays_mapped_over_are_stored_once_each_not_pickled_into_chunks(pool: mb.Pool
                                                                           ) -> None:
    numpy = pytest.importorskip("numpy")
    arrays = [numpy.full(200_000, float(i)) for i in range(6)]  # 1.6 MB each
    assert pool.map(tasks.array_sum, arrays, chunksize=2) == [a.sum() for a in arrays]
    assert pool.statistics().stored == 6
    pairs = [(a, 0.5) for a in arrays]
    assert pool.starmap(tasks.array_sum, pairs, chunksize=3) == [a.sum() * 0.5 for a in arrays]
    assert pool.statistics().stored == 6  # the same arrays: compared, not stored again
    back = pool.map(faults.identity, arrays[:2])
    assert all(b.flags.writeable and numpy.array_equal(a, b)
               for a, b in zip(arrays[:2], back, strict=True))


def test_results_are_writable_even_when_they_come_from_the_object_store(pool: mb.Pool
                                                                       ) -> None:
    numpy = pytest.importorskip("numpy")
    array = numpy.arange(300_000, dtype=numpy.float64)  # stored: read-only in the worker
    back = pool.submit(faults.identity, array).result(timeout=30)
    assert back.flags.writeable and numpy.array_equal(back, array)
    back[0] = -1.0  # the caller's own copy
    assert array[0] == 0.0
    pair = pool.submit(lambda a: (a[:10], {"all": a}), array).result(timeout=30)
    assert pair[0].flags.writeable and pair[1]["all"].flags.writeable


def test_a_big_function_travels_once_through_the_object_store(pool: mb.Pool) -> None:
    ballast = bytes(2 << 20)  # the closure pickles to 2 MB: above the store threshold
    results = pool.map(lambda x: x + len(ballast), range(200), chunksize=10)
    assert results == [x + len(ballast) for x in range(200)]


def test_statistics_and_insights_name_each_worker_by_node_and_pid(pool: mb.Pool,
                                                                  ray_cluster: str) -> None:
    assert pool.map(tasks.square, range(40), chunksize=5) == [x * x for x in range(40)]
    stats = pool.statistics()
    assert isinstance(stats, RayStatistics)
    assert stats.address == ray_cluster and stats.stored == 0
    assert sum(w.tasks for w in stats.workers) == 8
    assert all(" pid " in w.name for w in stats.workers), stats.workers
    insights = pool.insights()
    assert insights.tasks == 8 and insights.max_s is not None


# ---- speed ----------------------------------------------------------------------------------


@pytest.mark.timeout(120)
def test_a_map_of_tiny_calls_is_much_faster_than_one_ray_call_per_item(pool: mb.Pool) -> None:
    items = range(1000)
    one_by_one = ray.remote(max_retries=0)(tasks.square)

    def per_item() -> list[int]:
        return ray.get([one_by_one.remote(i) for i in items], timeout=60)

    def mapped() -> list[int]:
        return pool.map(tasks.square, items)

    expected = [x * x for x in items]
    assert per_item() == mapped() == expected  # both warm: workers up, functions exported
    per_item_s = _best_of(3, per_item)
    mapped_s = _best_of(3, mapped)
    print(f"1000 tiny calls: pool.map {mapped_s * 1000:.1f} ms, one ray.remote per item "
          f"{per_item_s * 1000:.1f} ms ({per_item_s / mapped_s:.0f}x)")
    assert per_item_s > 3 * mapped_s  # 10x and more on an idle machine


def _best_of(times: int, run: Callable[[], object]) -> float:
    best = float("inf")
    for _ in range(times):
        start = time.perf_counter()
        run()
        best = min(best, time.perf_counter() - start)
    return best


# ---- joblib -------------------------------------------------------------------------------


def test_joblib_runs_on_a_ray_pool(ray_cluster: str) -> None:
    joblib = pytest.importorskip("joblib")
    from manybrains.integrations.joblib import ManybrainsBackend

    joblib.register_parallel_backend("manybrains-ray", functools.partial(
        ManybrainsBackend, backend=mb.Ray(address=ray_cluster)))
    with joblib.parallel_config(backend="manybrains-ray"):
        squares = joblib.Parallel(n_jobs=2)(joblib.delayed(tasks.square)(i) for i in range(200))
        pids = set(joblib.Parallel(n_jobs=2)(joblib.delayed(tasks.pid_of)() for _ in range(20)))
        with pytest.raises(ZeroDivisionError):
            joblib.Parallel(n_jobs=2)(joblib.delayed(divmod)(1, d) for d in (1, 2, 0, 3))
    assert squares == [i * i for i in range(200)]
    assert pids and os.getpid() not in pids
