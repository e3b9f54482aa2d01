"""What a cold start pays for: the modules a first pool imports, and the kill that replaced
psutil on its path (the process tree read from /proc)."""

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

from manybrains.backends.processes import kill

linux_only = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")


def _modules_after(code: str) -> set[str]:
    done = subprocess.run([sys.executable, "-c", textwrap.dedent(code) +
                           "\nimport json, sys; print(json.dumps(sorted(sys.modules)))"],
                          capture_output=True, text=True, timeout=120, check=True)
    return set(json.loads(done.stdout.splitlines()[-1]))


@linux_only
def test_a_first_pool_imports_no_psutil_and_no_other_options():
    # kill_tree reads /proc itself; psutil would cost every pool's start several ms.
    loaded = _modules_after("""
        import manybrains as mb
        with mb.Pool(2) as pool:
            assert pool.map(abs, range(-3, 3)) == [3, 2, 1, 0, 1, 2]
    """)
    assert "manybrains.backends.processes.supervisor" in loaded  # the engine did start
    assert "psutil" not in loaded
    assert "manybrains._other_options" not in loaded  # no other backend's options


def test_import_manybrains_alone_imports_no_engine():
    loaded = _modules_after("import manybrains")
    assert not {"asyncio", "concurrent.futures.process", "psutil", "dataclasses",
                "manybrains.backends.processes"} & loaded


@linux_only
def test_kill_tree_kills_every_descendant_and_finds_what_psutil_finds():
    shell = subprocess.Popen(["sh", "-c", "sleep 60 & (sleep 60 & sleep 60; :) & wait"])
    try:
        deadline = time.monotonic() + 10
        family: list[int] = []
        while len(family) < 4 and time.monotonic() < deadline:  # 2 sleeps, a subshell, 1 sleep
            time.sleep(0.02)
            family = [p.pid for p in psutil.Process(shell.pid).children(recursive=True)]
        assert len(family) >= 4, family
        assert sorted(kill._descendants(shell.pid)) == sorted(family)
        kill.kill_tree(shell.pid)
        # Killed, or ended on its own first: its children die first, which ends its `wait`.
        assert shell.wait(timeout=10) in (0, -signal.SIGKILL)
        for pid in family:
            assert _gone(pid), pid
    finally:
        if shell.poll() is None:  # the test failed before the kill: leave nothing behind
            for child in psutil.Process(shell.pid).children(recursive=True):
                child.kill()
            shell.kill()
            shell.wait()


@linux_only
def test_kill_tree_of_a_process_that_has_ended_is_harmless():
    ended = subprocess.Popen([sys.executable, "-c", "pass"])
    try:
        assert _gone(ended.pid)  # a zombie, not reaped yet: its pid is not anyone else's
        assert kill._descendants(ended.pid) == []
        kill.kill_tree(ended.pid)
        kill.kill_tree(None)
    finally:
        ended.wait()


def _gone(pid: int, wait_s: float = 10) -> bool:
    deadline = time.monotonic() + wait_s
    while time.monotonic() < deadline:
        try:
            if psutil.Process(pid).status() == psutil.STATUS_ZOMBIE:
                return True  # killed; reaped by whoever adopted it
        except psutil.NoSuchProcess:
            return True
        time.sleep(0.02)
    return False


@linux_only
def test_workers_asked_for_early_get_the_pids_the_template_answered():
    # A pool asks for its first workers as it is made, before its supervisor thread reads
    # any answer: each answer must reach the worker it belongs to. (A fresh interpreter: one
    # running other threads gets no template.)
    done = subprocess.run([sys.executable, "-c", textwrap.dedent("""
        import json, psutil, manybrains as mb
        with mb.Pool(3) as pool:
            pool.map(abs, range(6))
            templates = psutil.Process().children()
            print(json.dumps({"workers": sorted(pool.backend.worker_pids()),
                              "method": pool.statistics().start_method,
                              "forked": [sorted(c.pid for c in t.children())
                                         for t in templates]}))
    """)], capture_output=True, text=True, timeout=120, check=True)
    found = json.loads(done.stdout.splitlines()[-1])
    assert found["method"] == "template"
    assert found["forked"] == [found["workers"]], found


@linux_only
def test_a_failed_early_request_is_made_again_and_breaks_the_pool_as_before():
    done = subprocess.run([sys.executable, "-c", textwrap.dedent("""
        import manybrains as mb
        from manybrains.backends.processes import template

        def refuse(self):
            raise OSError("no more processes")

        template.TemplateProcess.request = refuse
        pool = mb.Pool(2)  # Pool() itself does not raise
        try:
            pool.submit(abs, -1).result(timeout=30)
        except mb.BrokenPool as exc:
            print("broken:", exc)
        finally:
            pool.shutdown()
    """)], capture_output=True, text=True, timeout=120, check=True)
    assert "broken: cannot start a worker process" in done.stdout, done
    assert "no more processes" in done.stdout


@linux_only
def test_template_workers_cap_from_the_templates_measure_and_forget_it():
    # The template measures CPUs and mapped libraries once; each worker uses that for its
    # cap and forgets it, so that a pool started inside a task measures its own.
    done = subprocess.run([sys.executable, "-c", textwrap.dedent("""
        import json, os, manybrains as mb
        from manybrains.backends.processes import inner_threads

        def look(_):
            return [inner_threads._from_template, os.environ.get("OMP_NUM_THREADS")]

        with mb.Pool(2) as pool:
            print(json.dumps({"seen": pool.map(look, range(2), chunksize=1),
                              "method": pool.statistics().start_method,
                              "share": inner_threads.default(2)}))
    """)], capture_output=True, text=True, timeout=120, check=True, env=_without_caps())
    found = json.loads(done.stdout.splitlines()[-1])
    assert found["method"] == "template"
    assert found["seen"] == [[None, str(found["share"])]] * 2, found


def _without_caps() -> dict[str, str]:
    """This environment without the thread-count variables, a user's or manybrains'."""
    from manybrains.backends.processes import inner_threads

    names = {n for reads in inner_threads.VARIABLES.values() for n in reads}
    return {k: v for k, v in os.environ.items() if k not in names | {inner_threads.MARKER}}
