"""The ``template`` start method: when it is used, what it inherits, and that it cleans up.

Each case is a real script run as a subprocess: the pytest process runs threads of its own
(the per-test timeout), which is exactly what makes a pool fall back to ``forkserver``.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import psutil
import pytest

# Below the per-test limit (60 s), so that a hung script is killed here, with its children,
# before pytest-timeout ends the test run without running the finally block.
TIMEOUT = 40


def run(code: str, *args: str) -> dict:
    """Run ``code`` as a script; the JSON object it printed last."""
    process = subprocess.Popen([sys.executable, "-c", textwrap.dedent(code), *args],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        out, err = process.communicate(timeout=TIMEOUT)
    finally:
        if process.poll() is None:
            _kill_tree(process.pid)
            process.communicate()
    assert process.returncode == 0, f"the script failed:\n{err}"
    return json.loads(out.strip().splitlines()[-1])


def _kill_tree(pid: int) -> None:
    try:
        parent = psutil.Process(pid)
        for child in parent.children(recursive=True):
            child.kill()
        parent.kill()
    except psutil.NoSuchProcess:
        pass


def test_a_single_threaded_program_gets_template_workers():
    found = run("""
        import json, manybrains as mb
        def double(x): return 2 * x
        with mb.Pool(2) as pool:
            print(json.dumps({"result": pool.map(double, range(4)),
                              "method": pool.statistics().start_method}))
    """)
    assert found == {"result": [0, 2, 4, 6], "method": "template"}


def test_never_forks_while_another_thread_holds_a_lock():
    found = run("""
        import json, threading, manybrains as mb
        lock, started, done = threading.Lock(), threading.Event(), threading.Event()
        def hold():
            with lock:
                started.set()
                done.wait()
        thread = threading.Thread(target=hold)
        thread.start()
        started.wait()
        with mb.Pool(2) as pool:
            stats = pool.statistics()
            result = pool.map(abs, [-1, -2, -3])
        done.set()
        thread.join()
        print(json.dumps({"result": result, "method": stats.start_method,
                          "why": stats.start_method_why}))
    """)
    assert found["result"] == [1, 2, 3]
    assert found["method"] == "forkserver"
    assert "threads run in this process" in found["why"]


def test_a_first_mb_map_keeps_the_fast_path_for_a_later_pool():
    found = run("""
        import json, threading, manybrains as mb
        def double(x): return 2 * x
        mb.map(double, range(3))
        threads = threading.active_count()
        with mb.Pool(4) as pool:
            print(json.dumps({"threads": threads, "result": pool.map(double, range(3)),
                              "method": pool.statistics().start_method}))
    """)
    assert found["result"] == [0, 2, 4]
    assert found["method"] == "template"


def test_initializer_arguments_are_inherited_not_pickled():
    # A thread lock cannot be pickled: only a worker that inherits initargs can receive it.
    code = """
        import json, sys, threading, manybrains as mb
        def init(lock):
            global LOCK
            LOCK = lock
        def locked(x):
            with LOCK:
                return type(LOCK).__name__
        method = sys.argv[1] if sys.argv[1] != "default" else None
        try:
            with mb.Pool(2, initializer=init, initargs=(threading.Lock(),),
                         start_method=method) as pool:
                found = pool.map(locked, range(2))
        except mb.SerializationError as exc:
            found = "SerializationError: " + str(exc)
        print(json.dumps({"found": found}))
    """
    assert run(code, "default")["found"] == ["lock", "lock"]
    refused = run(code, "forkserver")["found"]
    assert refused.startswith("SerializationError: cannot pickle initargs[0]")


def test_a_stdlib_lock_made_after_the_template_is_refused_with_the_fix():
    # Where multiprocessing would fork, so do the workers (tests/engine/
    # test_start_method_choice.py); where it would spawn, both refuse a 'fork' lock.
    found = run("""
        import json, threading, multiprocessing, manybrains as mb
        def init(lock):
            pass
        multiprocessing.set_start_method("spawn")
        mb.map(abs, [1])  # keeps a template; the thread below makes later pools reuse it
        stop = threading.Event()
        thread = threading.Thread(target=stop.wait)
        thread.start()
        lock = multiprocessing.get_context("fork").Lock()  # after the template was forked
        try:
            mb.Pool(2, initializer=init, initargs=(lock,)).shutdown()
            found = "accepted"
        except mb.SerializationError as exc:
            found = str(exc)
        stop.set()
        thread.join()
        print(json.dumps({"found": found}))
    """)
    assert "was made after" in found["found"]
    assert "mb.Lock" in found["found"]


@pytest.mark.parametrize("method", ["forkserver", "spawn"])
def test_a_setup_that_cannot_load_in_the_worker_breaks_the_pool_once_with_the_cause(method):
    found = run("""
        import json, os, sys, manybrains as mb
        PARENT = os.getpid()
        def explode():
            if os.getpid() != PARENT:
                raise LookupError("no such model in this process")
        class Model:
            def __reduce__(self):
                return (explode, ())
        def init(model):
            pass
        if __name__ == "__main__":
            with mb.Pool(1, initializer=init, initargs=(Model(),),
                         start_method=sys.argv[1]) as pool:
                try:
                    pool.submit(abs, -1).result(timeout=30)
                    found = {"error": None}
                except mb.InitializerFailed as exc:
                    found = {"error": str(exc), "cause": type(exc.__cause__).__name__}
            print(json.dumps(found))
    """, method)
    assert "could not load the pool's initializer" in found["error"]
    assert "no such model" in found["error"]
    assert found["cause"] == "LookupError"


def test_the_template_exits_with_its_last_pool():
    found = run("""
        import json, os, psutil, manybrains as mb
        me = psutil.Process()
        with mb.Pool(2) as pool:
            pool.map(abs, range(4))
            during = sorted(p.pid for p in me.children(recursive=True))
            workers = sorted(pool.backend.worker_pids())
        after = [p.pid for p in me.children(recursive=True)]
        print(json.dumps({"during": during, "workers": workers, "after": after}))
    """)
    assert len(found["during"]) == 3, found  # the template and its two workers
    assert set(found["workers"]) < set(found["during"])
    assert found["after"] == []


def test_a_killed_parent_takes_the_template_and_its_workers_along():
    process = subprocess.Popen([sys.executable, "-c", textwrap.dedent("""
        import json, sys, time, psutil, manybrains as mb
        pool = mb.Pool(2)
        pool.map(abs, range(4))
        pids = [p.pid for p in psutil.Process().children(recursive=True)]
        print(json.dumps(pids), flush=True)
        time.sleep(60)
    """)], stdout=subprocess.PIPE, text=True)
    try:
        assert process.stdout is not None
        pids = json.loads(process.stdout.readline())
        assert len(pids) == 3
        os.kill(process.pid, signal.SIGKILL)
        process.wait(timeout=10)
        deadline = time.monotonic() + 5
        while any(_alive(pid) for pid in pids) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not [pid for pid in pids if _alive(pid)]
    finally:
        if process.poll() is None:
            _kill_tree(process.pid)
        process.wait()


def _alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def test_a_pool_inside_a_task_gets_a_template_of_its_own():
    found = run("""
        import json, manybrains as mb
        def inner(x):
            return x + 1
        def outer(x):
            with mb.Pool(1) as pool:
                return pool.map(inner, [x, x])[0], pool.statistics().start_method
        with mb.Pool(2) as pool:
            print(json.dumps({"found": pool.map(outer, range(3))}))
    """)
    assert found["found"] == [[1, "template"], [2, "template"], [3, "template"]]


def test_a_function_the_worker_holds_travels_by_reference():
    # Its default argument cannot be pickled: only a worker that holds the very function
    # (a template's, forked after it was defined) can run it; forkserver workers cannot.
    code = """
        import json, sys, threading, manybrains as mb
        def locked(x, lock=threading.Lock()):
            with lock:
                return x * 2
        method = None if sys.argv[1] == "default" else sys.argv[1]
        try:
            with mb.Pool(2, start_method=method) as pool:
                found = pool.map(locked, range(3))
        except mb.SerializationError as exc:
            found = "SerializationError: " + str(exc)
        print(json.dumps({"found": found}))
    """
    assert run(code, "default")["found"] == [0, 2, 4]
    assert run(code, "forkserver")["found"].startswith("SerializationError")


@pytest.mark.parametrize("method", ["default", "forkserver"])
def test_only_the_globals_a_function_reads_travel_with_it(method):
    # ``point.value`` reads an attribute, not the global ``value``: the unpicklable global
    # must not be sent along.
    found = run("""
        import json, sys, threading, types, manybrains as mb
        value = threading.Lock()
        def read(point):
            return point.value
        if __name__ == "__main__":
            method = None if sys.argv[1] == "default" else sys.argv[1]
            with mb.Pool(1, start_method=method) as pool:
                got = pool.map(read, [types.SimpleNamespace(value=v) for v in (1, 2)])
            print(json.dumps({"found": got}))
    """, method)
    assert found["found"] == [1, 2]


def test_templates_alive_together_each_exit_when_done():
    # Each spawn in a single-threaded program forks a template of its own; a template forked
    # while another exists must not keep the other's socket open, or that one never exits.
    found = run("""
        import json, time, psutil, manybrains as mb
        handles = [mb.spawn(abs, -n) for n in range(3)]
        templates = len(psutil.Process().children())
        start = time.monotonic()
        spawned = [h.result() for h in handles]
        print(json.dumps({"templates": templates, "spawned": spawned,
                          "took": time.monotonic() - start,
                          "after": len(psutil.Process().children())}))
    """)
    assert found["templates"] == 3 and found["spawned"] == [0, 1, 2], found
    assert found["after"] == 0
    assert found["took"] < 4.0, "a template had to be killed after its grace period"


def test_what_a_spawned_child_puts_on_a_stdlib_queue_arrives():
    # Its queue's feeder thread must be flushed at exit, on every Python (3.12 moved that
    # into the exit handlers): one lost item in five runs is a failure.
    found = run("""
        import json, multiprocessing, manybrains as mb
        def child(queue, n):
            queue.put(n)
        queue = multiprocessing.Queue()
        for n in range(5):
            mb.spawn(child, queue, n).join()
        got = sorted(queue.get(timeout=10) for _ in range(5))
        print(json.dumps({"got": got}))
    """)
    assert found["got"] == [0, 1, 2, 3, 4]
