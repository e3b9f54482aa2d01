"""Code as people write it: task functions in the script's (or notebook's) own ``__main__``.

Each program here is run the ways people run Python (see :mod:`usercode`): a script file
(``python job.py``), ``python -c``, piped to ``python -``, and cells of a real Jupyter kernel,
under every start method and the default. What it must give is what the stdlib gives:

- one ``__main__`` per worker: what an initializer set in a global is there for the tasks,
  what a task stored in a global is there for the next task on that worker, workers never
  change the parent's globals, and a global the parent rebinds between two maps is seen;
- ``multiprocessing`` locks, values and queues work in ``initargs`` and as ``mb.spawn``
  arguments; as a pool task argument one is refused at submit with the ways that work;
- no main guard needed: an unguarded script with ``mb.spawn`` or ``mb.Pool`` runs, except
  under ``spawn``, which must re-run the script and says in one line how to fix it.

Each program runs once per mode and start method (cached for the module); each case is its
own test. Documented limits are strict xfails, listed in ``KNOWN_LIMITS``.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import pytest
import usercode
from conftest import POOL_START_METHODS

METHODS = [*POOL_START_METHODS, "default"]
SCRIPT_TIMEOUT = 60.0
CELL_TIMEOUT = 30.0  # a notebook cell; the module's kernel runs about forty of them

# The task functions and one function per case; ``METHOD`` is replaced by the start method.
TASKS = '''
import multiprocessing
import os

import manybrains as mb

METHOD = None  # the start method under test; None: the default

model = None


def load(name):
    global model
    model = name


def predict(x):
    return [model, x]


_cache = {}


def remember(x):
    _cache[x] = True
    return [os.getpid(), sorted(_cache)]


counter = 0


def bump(x):
    global counter
    counter += x
    return counter


scale = 1


def scaled(x):
    return x * scale


def init_shared(lock, value, queue):
    global shared
    shared = (lock, value, queue)


def use_shared(x):
    lock, value, queue = shared
    with lock:
        value.value += 1
    queue.put(x)
    return x


def use_direct(lock, value, queue):
    with lock:
        value.value += 1
    queue.put("from spawn")
    return value.value


def holds(lock):
    return lock is not None


def executor(**options):
    # "template" is manybrains' own: the executor's default, with no stdlib context
    context = None if METHOD in (None, "template") else multiprocessing.get_context(METHOD)
    return mb.ProcessPoolExecutor(2, mp_context=context, **options)


def pool(workers, **options):
    return mb.Pool(workers, start_method=METHOD, **options)


def stdlib():
    # What a stdlib user writes: primitives from the context the pool uses.
    if METHOD in (None, "template"):
        return multiprocessing
    return multiprocessing.get_context(METHOD)


def case_pool_initializer_global():
    with pool(2, initializer=load, initargs=("resnet",)) as p:
        return p.map(predict, range(4))


def case_executor_initializer_global():
    with executor(initializer=load, initargs=("resnet",)) as ex:
        return list(ex.map(predict, range(4)))


def case_cache_persists():
    with pool(1) as p:
        return [p.submit(remember, x).result(timeout=30) for x in (1, 2, 3)]


def case_parent_globals_unchanged():
    with pool(2) as p:
        p.map(bump, [1, 2, 3])
        p.map(remember, [7, 8])
    return [counter, sorted(_cache)]


def case_rebind_seen():
    global scale
    with pool(2) as p:
        first = p.map(scaled, [1, 2])
        scale = 10
        second = p.map(scaled, [1, 2])
    scale = 1
    return [first, second]


def case_rebind_seen_by_submit():
    # submit keeps a function's pickle for the next submit: a rebound global must reach the
    # workers all the same, and so must a function defined anew under the same name.
    global scale, scaled_twice
    with pool(2) as p:
        first = [p.submit(scaled, x).result() for x in (1, 2)]
        scale = 10
        second = [p.submit(scaled, x).result() for x in (1, 2)]
        scaled_twice = lambda x: 2 * x  # noqa: E731 - as people write it
        third = p.submit(scaled_twice, 1).result()
        scaled_twice = lambda x: 3 * x  # noqa: E731
        fourth = p.submit(scaled_twice, 1).result()
    scale = 1
    return [first, second, [third, fourth]]


def _shared_objects():
    mp = stdlib()
    return mp.Lock(), mp.Value("i", 0), mp.Queue()


def _drain(queue, n):
    return sorted(queue.get(timeout=10) for _ in range(n))


def case_stdlib_initargs_pool():
    lock, value, queue = _shared_objects()
    with pool(2, initializer=init_shared, initargs=(lock, value, queue)) as p:
        results = p.map(use_shared, range(4))
    return [results, value.value, _drain(queue, 4)]


def case_stdlib_initargs_executor():
    lock, value, queue = _shared_objects()
    with executor(initializer=init_shared, initargs=(lock, value, queue)) as ex:
        results = list(ex.map(use_shared, range(4)))
    return [results, value.value, _drain(queue, 4)]


def case_stdlib_spawn_args():
    lock, value, queue = _shared_objects()
    handle = mb.spawn(use_direct, lock, value, queue, start_method=METHOD)
    result = handle.result(timeout=30)
    return [result, value.value, _drain(queue, 1)]


def case_stdlib_lock_task_argument():
    lock = stdlib().Lock()
    with pool(1) as p:
        try:
            future = p.submit(holds, lock)
        except Exception as exc:  # refused at submit: what the user is told
            return ["refused at submit", type(exc).__name__, str(exc)]
        try:
            return ["accepted", future.result(timeout=30)]
        except Exception as exc:
            return ["failed later", type(exc).__name__, str(exc)]
'''

RUN_CASES = """
if __name__ == "__main__":
    for name, case in list(globals().items()):
        if name.startswith("case_"):
            try:
                report(name[5:], case())
            except Exception as exc:
                report(name[5:], {"error": f"{type(exc).__name__}: {exc}"})
    report("finished", True)
"""

# The classic multiprocessing example, as tutorials write it: no main guard.
UNGUARDED_SPAWN = """
import os
import sys

import manybrains as mb

METHOD = None


def task(num):
    sys.stdout.write(f"Processing {num}\\n")
    sys.stdout.flush()
    return os.getpid()


handles = [mb.spawn(task, n, start_method=METHOD) for n in (1, 2, 3)]
pids = [h.result(timeout=30) for h in handles]
print(f"Done: {len(set(pids))} processes")
"""

UNGUARDED_POOL = """
import manybrains as mb

METHOD = None


def square(x):
    return x * x


with mb.Pool(2, start_method=METHOD) as pool:
    report("squares", pool.map(square, range(5)))
"""


def _source(text: str, method: str) -> str:
    value = None if method == "default" else method
    return text.replace("METHOD = None", f"METHOD = {value!r}", 1)


# ---- what each case must give ------------------------------------------------------------

RESNET = [["resnet", x] for x in range(4)]
SHARED = [[0, 1, 2, 3], 4, [0, 1, 2, 3]]  # task results, the shared counter, the queue
# A stdlib primitive as a task argument: refused at submit, naming both ways that work.
WAYS_THAT_WORK = (re.compile(r"initargs"), re.compile(r"\b(mb|manybrains)\.(Lock|Value|Queue)"))


def _check_cache(value: Any) -> None:
    pids = {pid for pid, _ in value}
    assert len(pids) == 1, f"the three tasks ran in more than one worker: {value}"
    assert [keys for _, keys in value] == [[1], [1, 2], [1, 2, 3]], value


def _check_refused(value: Any) -> None:
    assert value[0] == "refused at submit", value
    for way in WAYS_THAT_WORK:
        assert way.search(value[2]), f"the error does not name {way.pattern!r}: {value[2]}"


EXPECTED: dict[str, Any] = {
    "pool_initializer_global": RESNET,
    "executor_initializer_global": RESNET,
    "cache_persists": _check_cache,
    "parent_globals_unchanged": [0, []],
    "rebind_seen": [[1, 2], [10, 20]],
    "rebind_seen_by_submit": [[1, 2], [10, 20], [2, 3]],
    "stdlib_initargs_pool": SHARED,
    "stdlib_initargs_executor": SHARED,
    "stdlib_spawn_args": [1, 1, ["from spawn"]],
    "stdlib_lock_task_argument": _check_refused,
}
CASES = list(EXPECTED)


def _check(case: str, outcome: usercode.Outcome) -> None:
    assert case in outcome.reports, f"the program did not report {case!r}:\n{outcome}"
    value, expected = outcome.reports[case], EXPECTED[case]
    if callable(expected):
        expected(value)
    else:
        assert value == expected, f"{case}: got {value!r}, want {expected!r}"


# ---- documented limits ----------------------------------------------------------------------

# "case/methods/modes": each part one name, a comma-separated list, or "*" for any. Each entry
# is a strict xfail: when the limit goes away, the test passes and says to remove the entry.
# None now: a kernel runs threads, and a plain multiprocessing.Lock() (the 'fork' context's,
# on Python < 3.14) cannot reach a forkserver; the workers are forked then, as the stdlib's are.
KNOWN_LIMITS: set[str] = set()


def _matches(test_id: str, pattern: str) -> bool:
    return all(part == "*" or name in part.split(",")
               for name, part in zip(test_id.split("/"), pattern.split("/"), strict=True))


def _known_limit(test_id: str) -> list[pytest.MarkDecorator]:
    for pattern in KNOWN_LIMITS:
        if _matches(test_id, pattern):
            return [pytest.mark.xfail(strict=True, reason=(
                f"a documented limit ({pattern}): see KNOWN_LIMITS and docs/worker-model.md"))]
    return []


def _params(cases: list[str], methods: list[str], modes: tuple[str, ...] | list[str]
            ) -> list[Any]:
    return [pytest.param(c, m, o, id=f"{c}-{m}-{o}", marks=_known_limit(f"{c}/{m}/{o}"))
            for o in modes for m in methods for c in cases]


# ---- scripts: a file, python -c, python - ----------------------------------------------------

_runs: dict[tuple[str, str, str], usercode.Outcome] = {}


def _run_once(name: str, text: str, method: str, mode: str) -> usercode.Outcome:
    """Each program runs once per start method and mode; its cases share the outcome."""
    key = (name, method, mode)
    if key not in _runs:
        _runs[key] = usercode.run(_source(text, method), mode, timeout=SCRIPT_TIMEOUT)
    return _runs[key]


# The first case of each start method and mode waits for the whole program, which the runner
# kills at SCRIPT_TIMEOUT: the test's own limit is longer, so that a hang fails one test.
@pytest.mark.timeout(SCRIPT_TIMEOUT + 40)
@pytest.mark.parametrize(("case", "method", "mode"), _params(CASES, METHODS, usercode.MODES))
def test_script(case: str, method: str, mode: str) -> None:
    outcome = _run_once("cases", TASKS + RUN_CASES, method, mode)
    assert outcome.returncode is not None, f"the script hung:\n{outcome}"
    _check(case, outcome)


GUARD_HINT = re.compile(r"""__name__ == ['"]__main__['"]""")


def _unguarded_outcome(name: str, method: str, mode: str) -> usercode.Outcome:
    outcome = _run_once(name, UNGUARDED_SPAWN if name == "spawn" else UNGUARDED_POOL,
                        method, mode)
    assert outcome.returncode is not None, f"the script hung:\n{outcome}"
    if method == "spawn" and mode == "file" and outcome.returncode != 0:
        # The stdlib's spawn re-runs the script, which would start the processes again: if
        # manybrains' spawn does too, the program's own error says how to fix it, in its
        # first line. (Better still, it runs as under every other method.)
        kind, message = outcome.reports.get("uncaught", ["nothing", ""])
        assert GUARD_HINT.search(message.splitlines()[0] if message else ""), (
            f"no main-guard advice in the {kind} that ended the program:\n{outcome}")
        return outcome
    assert outcome.returncode == 0, outcome
    return outcome


@pytest.mark.timeout(SCRIPT_TIMEOUT + 40)
@pytest.mark.parametrize(("case", "method", "mode"),
                         _params(["unguarded_spawn"], METHODS, usercode.MODES))
def test_unguarded_spawn_example(case: str, method: str, mode: str) -> None:
    outcome = _unguarded_outcome("spawn", method, mode)
    if outcome.returncode == 0:
        lines = outcome.stdout.splitlines()
        assert sorted(line for line in lines if line.startswith("Processing")) == [
            "Processing 1", "Processing 2", "Processing 3"], outcome
        assert "Done: 3 processes" in lines, outcome


@pytest.mark.timeout(SCRIPT_TIMEOUT + 40)
@pytest.mark.parametrize(("case", "method", "mode"),
                         _params(["unguarded_pool"], METHODS, usercode.MODES))
def test_unguarded_pool(case: str, method: str, mode: str) -> None:
    outcome = _unguarded_outcome("pool", method, mode)
    if outcome.returncode == 0:
        assert outcome.reports.get("squares") == [0, 1, 4, 9, 16], outcome


# ---- a Jupyter kernel: the same cases as cells -----------------------------------------------

# Two cells: the parent rebinds a global between two maps on one pool.
# A global rebound in a later cell, seen by map and by submit (which keeps its function's
# pickle from one call to the next).
REBIND_CELLS = (
    "scale = 1\nnotebook_pool = pool(2)\nreport('first', notebook_pool.map(scaled, [1, 2]))\n"
    "report('first_submit', [notebook_pool.submit(scaled, x).result() for x in (1, 2)])",
    "scale = 10\ntry:\n    report('second', notebook_pool.map(scaled, [1, 2]))\n"
    "    report('second_submit', [notebook_pool.submit(scaled, x).result() for x in (1, 2)])\n"
    "finally:\n    notebook_pool.shutdown()",
)


@pytest.fixture(scope="module")
def notebook() -> Iterator[dict[str, usercode.Outcome]]:
    """One kernel for the module; every start method's cells run in it at setup, so that
    the helpers a kernel keeps (a forkserver, a resource tracker) exist before any test."""
    pytest.importorskip("nbclient")
    pytest.importorskip("ipykernel")
    outcomes = {}
    with usercode.jupyter_kernel() as kernel:
        for method in METHODS:
            # Each start method re-runs the notebook from its first cell (``%reset`` would
            # also drop ``__main__.__spec__``, which a real kernel has).
            defined = kernel.run(_source(TASKS, method))
            assert defined.returncode == 0, defined
            cells = [f"report({case!r}, case_{case}())" for case in CASES if case != "rebind_seen"]
            reports: dict[str, Any] = {}
            text = []
            for cell in [*cells, *REBIND_CELLS]:
                ran = kernel.run(cell, timeout=CELL_TIMEOUT)
                reports.update(ran.reports)
                text.append(str(ran))
            if "first" in reports or "second" in reports:
                by_map = [reports.get("first"), reports.get("second")]
                by_submit = [reports.get("first_submit"), reports.get("second_submit")]
                # what submit saw must be what map saw (a mismatch shows both)
                reports["rebind_seen"] = (by_map if by_submit == by_map
                                          else {"map": by_map, "submit": by_submit})
            outcomes[method] = usercode.Outcome(0, "\n".join(text), "", reports)
        yield outcomes


# The first test also waits for the kernel and every start method's cells (the fixture).
@pytest.mark.timeout(180)
@pytest.mark.parametrize(("case", "method", "mode"), _params(CASES, METHODS, ["notebook"]))
def test_notebook(notebook: dict[str, usercode.Outcome], case: str, method: str,
                  mode: str) -> None:
    _check(case, notebook[method])


# ---- the runner itself -------------------------------------------------------------------


def test_a_hung_program_is_killed_with_everything_it_started():
    # A pool whose task never returns, after a task left a helper process running: past the
    # deadline the runner kills the program, its workers, its forkserver and the helper,
    # which nothing of manybrains would stop (no_leaks fails the test if one is left).
    outcome = usercode.run("""
        import subprocess
        import time
        import manybrains as mb

        def start_helper():
            return subprocess.Popen(["sleep", "600"]).pid

        if __name__ == "__main__":
            pool = mb.Pool(2, start_method="forkserver")
            pool.submit(start_helper).result()
            report("started", True)
            pool.submit(time.sleep, 600).result()
    """, timeout=5)
    assert outcome.returncode is None, outcome
    assert outcome.reports.get("started") is True, (outcome.reports, outcome)
