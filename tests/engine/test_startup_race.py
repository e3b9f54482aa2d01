"""The supervisor thread starts workers while the program's other threads import modules.

A module another thread is still importing lacks the names its body has not reached yet: a
supervisor that read ``multiprocessing.synchronize.SemLock`` while tqdm's first bar (or a
stdlib ``Pool``) was importing that module broke the pool ("cannot start a worker process")
and failed every task. Each script here runs in a fresh interpreter, where those modules
are imported for the first time.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import manybrains as mb

SOURCE = str(Path(mb.__file__).resolve().parent.parent)

# As users write it: a tqdm bar around a pool's results (tqdm's first bar makes a
# multiprocessing.RLock, importing multiprocessing.synchronize), a stdlib Pool started right
# after ours, and threads of the program importing multiprocessing's modules meanwhile.
PATTERNS_SCRIPT = """
    import multiprocessing
    import sys
    import threading

    import manybrains
    from tqdm import tqdm

    def square(x):
        return x * x

    if __name__ == "__main__":
        expected = [x * x for x in range(8)]
        if sys.argv[1] == "tqdm":
            with manybrains.Pool(2) as pool:
                assert list(tqdm(pool.imap(square, range(8)), total=8)) == expected
        elif sys.argv[1] == "two-pools":
            with manybrains.Pool(2) as pool, multiprocessing.Pool(2) as theirs:
                assert pool.map(square, range(8)) == theirs.map(square, range(8))
        else:
            with manybrains.Pool(2) as pool:
                importers = [threading.Thread(target=__import__, args=(name,)) for name in
                             ("multiprocessing.synchronize", "multiprocessing.managers",
                              "multiprocessing.sharedctypes")]
                for thread in importers:
                    thread.start()
                for thread in importers:
                    thread.join()
                assert pool.map(square, range(8)) == expected
        print("ok")
"""

# No luck needed: a worker's replacement starts while another thread is inside
# multiprocessing.synchronize's body, slowed down as a big module's would be.
HALF_IMPORTED_SCRIPT = """
    import os
    import signal
    import sys
    import threading
    import time

    import manybrains

    def square(x):
        return x * x

    def import_slowly(name, begun):
        if name in sys.modules:  # imported already: there is nothing to race with
            return begun.set()
        def trace(frame, event, arg):
            if frame.f_globals.get("__name__") != name:
                return None
            begun.set()
            time.sleep(0.002)  # each line of the module's body
            return trace
        sys.settrace(trace)  # this thread only
        try:
            __import__(name)
        finally:
            sys.settrace(None)

    if __name__ == "__main__":
        method = None if sys.argv[1] == "template" else sys.argv[1]
        begun = threading.Event()
        importer = threading.Thread(target=import_slowly,
                                    args=("multiprocessing.synchronize", begun))
        with manybrains.Pool(2, start_method=method) as pool:
            victim = pool.apply(os.getpid)
            importer.start()
            begun.wait(10)
            os.kill(victim, signal.SIGKILL)  # replaced while the import runs
            importer.join()
            assert pool.map(square, range(8)) == [x * x for x in range(8)]
        print("ok")
"""

# The modules the supervisor thread imports while it runs a pool through its paths: starting
# and replacing workers, results and errors, prints and logs, a timeout (a kill).
AUDIT_SCRIPT = """
    import logging
    import os
    import sys
    import threading
    import time

    imported = []

    def on_event(event, args):
        thread = threading.current_thread().name
        if event == "import" and thread.startswith("manybrains-supervisor"):
            imported.append(args[0])

    sys.addaudithook(on_event)

    import manybrains

    def task(what):
        if what == "print":
            print("printed")
            logging.getLogger("user").warning("logged")
        elif what == "raise":
            raise ValueError("raised")
        elif what == "unpicklable":
            return threading.Lock()
        elif what == "crash":
            os._exit(3)
        elif what == "sleep":
            time.sleep(30)
        return what

    if __name__ == "__main__":
        method = None if sys.argv[1] == "template" else sys.argv[1]
        with manybrains.Pool(2, start_method=method, max_tasks_per_worker=4) as pool:
            assert pool.map(task, range(6)) == list(range(6))
            for what in ("print", "raise", "unpicklable", "crash"):
                try:
                    pool.submit(task, what).result(timeout=60)
                except Exception as error:
                    print(what, type(error).__name__)
            try:
                pool.submit(task, "sleep", timeout=0.2).result(timeout=60)
            except TimeoutError:
                print("timed out")
            assert pool.map(task, range(6)) == list(range(6))
        print("imported by the supervisor:", sorted(set(imported)))
"""


def _script(tmp_path: Path, name: str, source: str) -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(source))
    return path


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": SOURCE}


def _run_many(script: Path, argvs: list[str], at_once: int = 3) -> list[str]:
    """Run ``script`` once per argument, ``at_once`` fresh interpreters at a time; the last
    line of each failed run's stderr."""
    failures = []
    for first in range(0, len(argvs), at_once):
        runs = [subprocess.Popen([sys.executable, str(script), argv], cwd=script.parent,
                                 env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                 text=True) for argv in argvs[first:first + at_once]]
        for run in runs:
            out, err = run.communicate(timeout=60)
            if run.returncode != 0 or out.strip() != "ok":
                failures.append((err.strip().splitlines() or [f"exit {run.returncode}"])[-1])
    return failures


@pytest.mark.timeout(120)
def test_pools_start_while_the_program_imports_multiprocessing(tmp_path):
    script = _script(tmp_path, "patterns.py", PATTERNS_SCRIPT)
    failures = _run_many(script, ["tqdm", "two-pools", "threads"] * 8)
    assert not failures, f"{len(failures)} of 24 runs failed: {failures}"


@pytest.mark.parametrize("start_method", ["template", "forkserver", "spawn"])
def test_a_worker_is_replaced_while_multiprocessing_is_half_imported(start_method, tmp_path):
    script = _script(tmp_path, "half_imported.py", HALF_IMPORTED_SCRIPT)
    assert _run_many(script, [start_method] * 2) == []


@pytest.mark.parametrize("start_method", ["template", "fork", "forkserver", "spawn"])
def test_the_supervisor_thread_imports_nothing(start_method, tmp_path):
    script = _script(tmp_path, "audit.py", AUDIT_SCRIPT)
    done = subprocess.run([sys.executable, str(script), start_method], capture_output=True,
                          text=True, timeout=90, cwd=tmp_path, env=_env())
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    # the paths were taken
    assert "raise ValueError" in lines
    assert "crash WorkerCrashed" in lines
    assert "timed out" in lines
    assert lines[-1] == "imported by the supervisor: []"


def test_pickling_beside_a_half_imported_module_reads_nothing_it_lacks(monkeypatch):
    # Another thread importing multiprocessing.synchronize has put it in sys.modules without
    # SemLock yet: manybrains' pickler, in any thread, must not read it as if it were there.
    import types

    from manybrains import _serialize

    module = "multiprocessing.synchronize"
    monkeypatch.setitem(sys.modules, module, types.ModuleType(module))
    value = {"x": [1, 2.5, "three"], "y": types.SimpleNamespace(z=b"four")}  # an object:
    assert _serialize.loads(_serialize.dumps(value)) == value  # the pickler's hook runs
