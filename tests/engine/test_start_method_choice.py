"""The default start method never refuses what the stdlib's pool, on the same Python, accepts.

A program that runs a thread has no template: its workers come from a forkserver, which cannot
receive what only a forked process inherits (a lock of the 'fork' context, an object that
cannot be pickled). Where multiprocessing would fork (its start method is 'fork': Linux before
Python 3.14), the workers are forked; where it would not, both refuse, and manybrains says what
to do. Each case is a real script, run as a subprocess: the default start method depends on the
threads of the program, and pytest runs threads of its own.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest

# A thread that runs for the whole script, as a web server's or a log listener's would.
THREAD = """
    import threading
    _stop = threading.Event()
    threading.Thread(target=_stop.wait, daemon=True).start()
"""


def run(code: str, *, thread_first: bool = True) -> dict:
    """Run ``code`` as a script, after starting a thread unless told; the JSON object it
    printed last."""
    script = textwrap.dedent(code)
    if thread_first:
        script = textwrap.dedent(THREAD) + script
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=40)
    assert done.returncode == 0, f"the script failed:\n{done.stderr}"
    return json.loads(done.stdout.strip().splitlines()[-1])


needs_stdlib_fork = pytest.mark.skipif(
    sys.platform != "linux" or sys.version_info >= (3, 14),
    reason="multiprocessing forks by default only on Linux before Python 3.14")


@needs_stdlib_fork
def test_mb_spawn_of_a_default_queue_forks_while_a_thread_runs():
    found = run("""
        import json, multiprocessing, manybrains as mb
        def put(q):
            q.put("from the child")
            return 7
        q = multiprocessing.Queue()
        handle = mb.spawn(put, q)
        print(json.dumps({"result": handle.result(timeout=30), "got": q.get(timeout=10)}))
    """)
    assert found == {"result": 7, "got": "from the child"}


@needs_stdlib_fork
def test_an_initarg_that_cannot_be_pickled_is_inherited_as_under_fork():
    # The stdlib's fork pool never pickles initargs; a thread lock is inherited as it is.
    found = run("""
        import json, multiprocessing, threading, manybrains as mb
        def init(lock):
            global LOCK
            LOCK = lock
        def kind(_):
            return type(LOCK).__name__
        with mb.Pool(2, init, (threading.Lock(),), start_method="template") as pool:
            stats = pool.statistics()
            result = pool.map(kind, range(2))
        multiprocessing.set_start_method("spawn")  # not fixed by the pool: still the program's
        print(json.dumps({"result": result, "method": stats.start_method,
                          "why": stats.start_method_why}))
    """)
    assert found["result"] == ["lock", "lock"]
    assert found["method"] == "fork"
    assert "initargs[0] (lock) cannot be pickled" in found["why"], found["why"]


@needs_stdlib_fork
def test_a_lock_made_after_the_template_in_use_forks():
    found = run("""
        import json, multiprocessing, manybrains as mb
        def init(lock):
            global LOCK
            LOCK = lock
        def try_lock(_):
            return LOCK.acquire(block=False)
        first = mb.Pool(1)  # forks a template; its thread makes later pools reuse it
        first.submit(abs, -1).result(timeout=30)
        lock = multiprocessing.Lock()  # after the template was forked
        with mb.Pool(2, init, (lock,)) as pool:
            with lock:
                held = pool.map(try_lock, range(2))
            stats = pool.statistics()
        first.shutdown()
        print(json.dumps({"held": held, "method": stats.start_method,
                          "why": stats.start_method_why}))
    """, thread_first=False)
    assert found["held"] == [False, False]
    assert found["method"] == "fork"
    assert "the template in use was forked without it" in found["why"], found["why"]


def test_where_multiprocessing_would_spawn_a_fork_lock_is_refused_by_both():
    found = run("""
        import json, multiprocessing, manybrains as mb
        def init(lock):
            pass
        multiprocessing.set_start_method("spawn")
        lock = multiprocessing.get_context("fork").Lock()
        found = {}
        for name, make in [("stdlib", multiprocessing.Pool), ("manybrains", mb.Pool)]:
            try:
                make(2, init, (lock,)).terminate()
                found[name] = "accepted"
            except Exception as exc:
                found[name] = f"{type(exc).__name__}: {exc}"
        print(json.dumps(found))
    """)
    if sys.version_info >= (3, 11):  # 3.10 sends the lock's address, and its workers hang
        assert found["stdlib"] != "accepted"
    refused = found["manybrains"]
    assert refused.startswith("SerializationError: cannot pickle initargs[0] (Lock)"), refused
    for fix in ("multiprocessing.get_context(", "mb.Lock", "start_method='fork'"):
        assert fix in refused, f"the error does not say {fix!r}: {refused}"
