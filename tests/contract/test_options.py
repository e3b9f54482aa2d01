"""A backend's own options: one typed object each (``mb.Processes``, ``mb.Dask``, ...).

``Pool(backend="dask")`` is ``Pool(backend=mb.Dask())``; what only one backend has is written
on its object, so a combination that cannot work is an error before anything starts.
"""

from __future__ import annotations

import dataclasses
import multiprocessing
import time

import pytest
from tasks import sleep_then, square

import manybrains as mb
from manybrains.backends import known_backends, options_for

MOVED = [("max_memory_per_worker", 1 << 30, "Processes"), ("inner_threads", 1, "Processes"),
         ("cancel_running", True, "Processes"), ("address", "tcp://127.0.0.1:8786", "Dask"),
         ("client", object(), "Dask"), ("dashboard", True, "Dask")]


# ---- a name is its options with the defaults -----------------------------------------------


@pytest.mark.parametrize("name", known_backends())
def test_a_name_stands_for_its_options_with_the_defaults(name: str):
    options = options_for(name)
    assert options.name == name
    assert options == type(options)()
    assert options_for(options) is options


def test_the_pool_keeps_the_options_it_was_given():
    processes = mb.Processes(max_memory_per_worker=1 << 30, cancel_running=True)
    with mb.Pool(1, backend=processes) as pool:
        assert pool.options is processes
        assert pool.map(square, range(4)) == [0, 1, 4, 9]
    with mb.Pool(1, backend="threads") as pool:
        assert pool.options == mb.Threads()


def test_options_are_frozen():
    with pytest.raises(dataclasses.FrozenInstanceError):
        mb.Processes().cancel_running = True  # type: ignore[misc]


# ---- the start method: an option of processes, and a shorthand -----------------------------


def test_start_method_and_context_are_a_shorthand_for_processes_options(start_method: str):
    with mb.Pool(1, start_method=start_method) as pool:
        assert pool.options == mb.Processes(start_method=start_method)
    context = multiprocessing.get_context("spawn")
    with mb.Pool(1, None, (), None, context) as pool:  # multiprocessing.Pool's 5th positional
        assert pool.options == mb.Processes(start_method=context)
        assert pool.statistics().start_method == "spawn"


def test_processes_options_reach_the_workers():
    with mb.Pool(1, backend=mb.Processes(start_method="spawn")) as pool:
        assert pool.statistics().start_method == "spawn"


def test_auto_starts_its_processes_with_its_processes_options():
    with mb.Pool(1, backend="auto", start_method="spawn") as pool:
        assert pool.options == mb.Auto(processes=mb.Processes(start_method="spawn"))
        engine = pool.backend._engine("processes")  # type: ignore[attr-defined]
        assert engine.statistics().start_method == "spawn"


@pytest.mark.parametrize("name", ["threads", "asyncio", "inline", "dask", "ray"])
def test_start_method_on_a_backend_without_processes_is_refused(name: str):
    with pytest.raises(TypeError, match=f"backend '{name}' starts none"):
        mb.Pool(1, backend=name, start_method="spawn")


def test_a_start_method_given_twice_is_refused():
    with pytest.raises(TypeError, match="given twice"):
        mb.Pool(1, backend=mb.Processes(start_method="spawn"), start_method="spawn")
    with pytest.raises(TypeError, match="same option"):
        mb.Pool(1, None, (), None, multiprocessing.get_context("spawn"), start_method="spawn")


# ---- what cannot work is an error, before anything starts ----------------------------------


@pytest.mark.parametrize(("keyword", "value", "where"), MOVED, ids=[m[0] for m in MOVED])
def test_a_keyword_that_moved_says_where_it_went(keyword: str, value: object, where: str):
    with pytest.raises(TypeError, match=rf"backend=manybrains\.{where}\({keyword}=\.\.\.\)"):
        mb.Pool(1, **{keyword: value})


def test_an_unknown_keyword_is_a_plain_type_error():
    with pytest.raises(TypeError, match="unexpected keyword argument 'workerz'"):
        mb.Pool(1, workerz=2)  # type: ignore[call-arg]


@pytest.mark.parametrize(("make", "error", "words"), [
    (lambda: mb.Processes(max_memory_per_worker=0), ValueError, "max_memory_per_worker must"),
    (lambda: mb.Processes(inner_threads="2"), TypeError, "inner_threads must"),
    (lambda: mb.Processes(cancel_running="yes"), TypeError, "cancel_running must"),
    (lambda: mb.Auto(processes="spawn"), TypeError, "manybrains.Processes"),
    (lambda: mb.Dask(address="tcp://a:1", client=object()), ValueError, "not both"),
    (lambda: mb.Dask(address=8786), TypeError, "address must be a str"),
    (lambda: mb.Dask(address="tcp://a:1", dashboard=True), ValueError, "serves its own"),
    (lambda: mb.Processes(futures="stdlib"), ValueError, "futures must be"),
    (lambda: mb.Ray(address=6379), TypeError, "address must be a Ray"),
    (lambda: mb.Ray(address=" "), TypeError, "address must be a Ray"),
], ids=["memory", "inner-threads", "cancel-running", "auto", "address-and-client", "address",
        "dashboard", "futures", "ray-address", "ray-blank-address"])
def test_a_bad_option_is_refused_where_it_is_written(make, error, words):
    with pytest.raises(error, match=words):
        make()


def test_options_of_an_unknown_backend_are_refused():
    class Quantum(mb.BackendOptions):
        name = "quantum"

    with pytest.raises(mb.BackendNotFound, match="unknown backend 'quantum'"):
        mb.Pool(1, backend=Quantum())


# ---- what the pool says about itself -------------------------------------------------------


def test_client_is_none_off_dask_and_closed_follows_shutdown():
    pool = mb.Pool(1, backend="threads")
    assert pool.client is None
    assert not pool.closed and "running" in repr(pool)
    pool.shutdown()
    assert pool.closed and "shut down" in repr(pool)


def test_a_statistic_of_another_backend_says_which_fields_every_backend_has():
    with mb.Pool(1, backend="threads") as pool:
        stats = pool.statistics()
    assert stats.done == 0 and stats.backend == "threads"
    with pytest.raises(AttributeError, match=r"'threads' backend has no 'start_method'.*done"):
        stats.start_method  # noqa: B018 - the read is the test
    assert dataclasses.replace(stats, done=3).done == 3  # copies are not confused by it


def test_each_backend_says_its_own_defaults():
    with mb.Pool(backend="threads") as threads, mb.Pool(backend="inline") as inline:
        assert threads.workers == min(32, mb.usable_cpus() + 4)
        assert inline.workers == mb.usable_cpus()


def test_concurrent_futures_contract_marks_a_sent_task_running():
    with mb.Pool(1, backend=mb.Processes(futures="concurrent.futures")) as stdlib, \
            mb.Pool(1) as ours:
        stdlib.submit(square, 1).result(timeout=30)  # its worker is up
        ours.submit(square, 1).result(timeout=30)
        sent = stdlib.submit(sleep_then, 0.5, "sent")
        deadline = time.monotonic() + 5
        while not sent.running() and time.monotonic() < deadline:  # once sent to the worker
            time.sleep(0.005)
        assert sent.running() and not sent.cancel()  # sent: too late, as in the stdlib
        queued = ours.submit(sleep_then, 0.5, "ours")
        assert not queued.running()  # ours: RUNNING only once the worker says it started
        assert sent.result(timeout=30) == "sent" and queued.result(timeout=30) == "ours"
