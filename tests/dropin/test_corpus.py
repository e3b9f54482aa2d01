"""Real programs written for the stdlib pools behave the same with only the pool class swapped.

Each file in ``corpus/`` is a program from a public source: its header names the source, the
licence (full texts in ``corpus/LICENSES.md``) and any change made, which may only be input
sizes and sleep lengths. Every program runs as a script (``python NAME.py``) in a subprocess
that leads a session of its own, in a fresh temporary directory, twice: as written (the
stdlib) and as ``to_manybrains`` rewrites it (only the pool class import swapped). The
runs must agree on:

- stdout, after ``normalise`` (below);
- the exit status;
- the type of the exception that ends the program: the last line of the last traceback on
  stderr, when the exit status is not 0. Only that line of stderr is compared: the rest
  (a fork ``DeprecationWarning`` on 3.12+, worker tracebacks, progress bars) may differ;
- what it leaves behind: no process of its session may still be alive 2 s after it exits
  (one that is, is reported and then killed, so that the suite leaks nothing);
- time: the manybrains run may take at most twice the stdlib's time plus ``SLOWER_BY``
  seconds (a hang that ends, e.g. a pool that waits for work that the stdlib would have
  killed, shows as a run seconds too long).

A run that lasts longer than ``RUN_TIMEOUT`` seconds is killed, with its session, and fails.
Programs run unbuffered (``PYTHONUNBUFFERED=1``, as ``python -u`` or a terminal): what a
worker prints is written when it prints, not when it exits (a stdlib worker that is
terminated never writes a full buffer), whatever the environment of the suite says.

Markers, in a program's header as ``# corpus: NAME [ARGUMENTS]``; they exist only for what
varies between two runs of the stdlib itself:

``argv A B``
    run the program with these command-line arguments.
``racy``
    the result may depend on timing (a killed worker, an exception inside ``imap``, tqdm
    around ``imap``): the manybrains side runs 3 times and every run must match.
``sort-lines``
    the order of the output lines varies under the stdlib too (``imap_unordered``,
    ``as_completed``, prints from several workers): the sorted lines are compared.
``unique-lines``
    as ``sort-lines``, and a line printed a varying number of times counts once (an
    initializer's line with ``maxtasksperchild``).
``count-chars``
    workers print with ``end=' '`` and no newline, so each flushes its buffer at any point,
    even inside a word, and the blocks of different workers interleave: only how many of
    each character was printed is compared.
``tokens REGEX``
    threads print at once, and one ``print``'s text and its newline can land either side
    of another's: the sorted matches of REGEX in the whole output are compared.
``timings``
    every decimal number (``1.25``, ``3e-05``) is a duration: it becomes ``<float>``.
``pids``
    the program prints pids: a number equal to the pid of one of its processes (the
    program's own, and every process of its session, seen every ``PID_SAMPLING`` s while
    it runs) becomes ``<pid>``.
``worker-numbers``
    the N in a worker's name (``ForkPoolWorker-N``, ``SpawnPoolWorker-N``,
    ``ForkServerPoolWorker-N``, ``ForkProcess-N``, ...) depends on scheduling: it becomes
    ``<n>``. The rest of the name is still compared.
``replace REGEX => TEXT``
    ``re.sub(REGEX, TEXT, line)`` on every line (a pid, random bytes, a timestamp).
``expect-manybrains [exit=N] [error=TYPE]``
    where manybrains differs from the stdlib on purpose (docs/drop-in.md, "Where they
    differ, on purpose"), its runs are checked against the expected output written in the
    program, not against the stdlib's: the comment lines ``# | LINE`` that follow hold its
    normalised stdout; it must exit N (0 unless given) with the error TYPE (none unless
    given). Each use says why in the program's header.

Always, whatever the markers: memory addresses (``0x7f...``) become ``0x<addr>``.

All the programs' runs are made once per module (``corpus_runs``), a few at a time, and all
their threads and processes are gone before the first test starts; each test then compares
the runs of one program.
"""

from __future__ import annotations

import ast
import contextlib
import dataclasses
import difflib
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import psutil
import pytest

CORPUS = Path(__file__).resolve().parent / "corpus"
PROGRAMS = sorted(path.name for path in CORPUS.glob("*.py"))

RUN_TIMEOUT = 30.0  # seconds one run of one program may take
SETTLE = 2.0  # seconds after its exit by which every process of its session must be gone
SLOWER_BY = 5.0  # seconds the manybrains run may take beyond twice the stdlib's
RACY_RUNS = 3
AT_ONCE = 4  # runs at a time (2 cores: a run mostly waits, on its pool start or its sleeps)

MARKER = re.compile(r"^# corpus: (?P<name>[\w-]+)(?: (?P<args>.*))?$")
EXPECTED_LINE = re.compile(r"^# \| ?(?P<line>.*)$")
KNOWN_MARKERS = {"argv", "racy", "sort-lines", "unique-lines", "count-chars", "tokens", "timings",
                 "pids", "worker-numbers", "replace", "expect-manybrains"}
PID_SAMPLING = 0.02
PROGRAM_ENV = {**os.environ, "PYTHONUNBUFFERED": "1"}


# ---- the one rewrite: the stdlib's pool class becomes manybrains' ----------------------------

# module -> the class a program takes from it
POOL_CLASSES = {
    "multiprocessing": "Pool",
    "multiprocessing.pool": "Pool",
    "concurrent.futures": "ProcessPoolExecutor",
    "concurrent.futures.process": "ProcessPoolExecutor",
}


def _module_aliases(tree: ast.Module) -> dict[str, str]:
    """The names under which the program binds a module of POOL_CLASSES: name -> module."""
    aliases = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name in POOL_CLASSES:
                    aliases[alias.asname or alias.name] = alias.name
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            for alias in node.names:
                module = f"{node.module}.{alias.name}"
                if module in POOL_CLASSES:  # from concurrent import futures
                    aliases[alias.asname or alias.name] = module
    return aliases


def stdlib_pool_uses(source: str) -> list[str]:
    """Where the program takes a pool class from the stdlib: imports and ``module.Class(``."""
    tree = ast.parse(source)
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module in POOL_CLASSES and not node.level:
            found += [f"line {node.lineno}: from {node.module} import {alias.name}"
                      for alias in node.names if alias.name == POOL_CLASSES[node.module]]
    for name, module in _module_aliases(tree).items():
        pattern = rf"(?<![\w.]){re.escape(name)}\.{POOL_CLASSES[module]}\("
        found += [f"{name}.{POOL_CLASSES[module]}(" for _ in re.finditer(pattern, source)]
    return found


def to_manybrains(source: str) -> str:
    """The program with only its pool class taken from manybrains instead of the stdlib.

    - ``from multiprocessing import Pool`` (also ``multiprocessing.pool``, and among other
      names: ``from multiprocessing import Pool, RLock``) -> ``from manybrains import Pool``,
      the other names still imported from the stdlib; ``from concurrent.futures import
      ProcessPoolExecutor`` likewise;
    - ``M.Pool(`` where ``M`` is the program's name for ``multiprocessing`` (``multiprocessing``,
      ``mp``, ...) -> ``manybrains.Pool(``, and ``M.ProcessPoolExecutor(`` where ``M`` names
      ``concurrent.futures`` (``concurrent.futures``, ``futures``, ``cf``, ...) ->
      ``manybrains.ProcessPoolExecutor(``, with ``import manybrains`` added before the
      program's first import.

    Nothing else changes: ``multiprocessing.Queue``, ``Manager``, ``current_process``,
    ``concurrent.futures.as_completed`` and the stdlib's exception classes stay the stdlib's.
    """
    lines = source.splitlines(keepends=True)
    tree = ast.parse(source)
    edits = []  # (first line index, end line index, replacement text)
    for node in ast.walk(tree):
        if not (isinstance(node, ast.ImportFrom) and node.module in POOL_CLASSES
                and not node.level):
            continue
        wanted = POOL_CLASSES[node.module]
        swapped = [alias for alias in node.names if alias.name == wanted]
        if not swapped:
            continue
        indent = " " * node.col_offset
        kept = [alias for alias in node.names if alias.name != wanted]
        text = ""
        if kept:
            names = ", ".join(f"{a.name} as {a.asname}" if a.asname else a.name for a in kept)
            text += f"{indent}from {node.module} import {names}\n"
        for alias in swapped:
            name = f"{alias.name} as {alias.asname}" if alias.asname else alias.name
            text += f"{indent}from manybrains import {name}  # was: from {node.module}\n"
        assert node.end_lineno is not None
        edits.append((node.lineno - 1, node.end_lineno, text))
    for first, end, text in sorted(edits, reverse=True):
        lines[first:end] = [text]
    rewritten = "".join(lines)

    attribute_uses = 0
    for name, module in _module_aliases(tree).items():
        cls = POOL_CLASSES[module]
        pattern = rf"(?<![\w.]){re.escape(name)}\.{cls}\("
        rewritten, count = re.subn(pattern, f"manybrains.{cls}(", rewritten)
        attribute_uses += count
    if attribute_uses:
        tree = ast.parse(rewritten)
        first_import = next(node for node in tree.body
                            if isinstance(node, (ast.Import, ast.ImportFrom))
                            and not (isinstance(node, ast.ImportFrom)
                                     and node.module == "__future__"))
        lines = rewritten.splitlines(keepends=True)
        lines.insert(first_import.lineno - 1, "import manybrains  # added: the pool class\n")
        rewritten = "".join(lines)
    return rewritten


# ---- markers and normalisation -----------------------------------------------------------


@dataclasses.dataclass
class Program:
    name: str
    source: str
    argv: list[str]
    markers: set[str]
    replacements: list[tuple[re.Pattern[str], str]]
    tokens: re.Pattern[str] | None
    expected: list[str] | None  # the manybrains stdout, under expect-manybrains
    expected_exit: int = 0
    expected_error: str | None = None

    @classmethod
    def load(cls, name: str) -> Program:
        source = (CORPUS / name).read_text()
        argv: list[str] = []
        markers: set[str] = set()
        replacements = []
        tokens = None
        expected = None
        expected_exit, expected_error = 0, None
        for line in source.splitlines():
            if expected is not None and (found := EXPECTED_LINE.match(line)):
                expected.append(found["line"])
                continue
            if not (found := MARKER.match(line)):
                continue
            marker, args = found["name"], found["args"] or ""
            assert marker in KNOWN_MARKERS, f"{name}: unknown marker {marker!r}"
            markers.add(marker)
            if marker == "argv":
                argv = args.split()
            elif marker == "replace":
                regex, arrow, text = args.partition(" =>")
                assert arrow, f"{name}: replace wants REGEX => TEXT, not {args!r}"
                replacements.append((re.compile(regex), text.removeprefix(" ")))
            elif marker == "tokens":
                tokens = re.compile(args)
            elif marker == "expect-manybrains":
                expected = []
                options = dict(option.split("=", 1) for option in args.split())
                assert set(options) <= {"exit", "error"}, f"{name}: {args!r}"
                expected_exit = int(options.get("exit", 0))
                expected_error = options.get("error")
        return cls(name, source, argv, markers, replacements, tokens, expected, expected_exit,
                   expected_error)


ADDRESS = re.compile(r"0x[0-9a-fA-F]+")
DECIMAL = re.compile(r"(?<![\w.])\d+\.\d+(?:e[-+]?\d+)?|(?<![\w.])\d+e-\d+")
# (not \b: a worker's piece of a line may follow another's, "ForkPoolWorker-4ForkPoolWorker-3")
WORKER_NUMBER = re.compile(
    r"(?<![A-Za-z])((?:Spawn|Fork|ForkServer)(?:Pool)?(?:Worker|Process)|PoolWorker|SyncManager)"
    r"-\d+")


def normalise(program: Program, run: Run) -> list[str]:
    """The lines of the run's stdout with what varies from run to run under the stdlib
    replaced."""
    pids = None
    if "pids" in program.markers and run.pids:
        pids = re.compile(r"(?<!\d)(?:" + "|".join(map(str, sorted(run.pids))) + r")(?!\d)")
    out = []
    for line in run.stdout.splitlines():
        line = ADDRESS.sub("0x<addr>", line)
        if pids is not None:
            line = pids.sub("<pid>", line)
        if "worker-numbers" in program.markers:
            line = WORKER_NUMBER.sub(r"\1-<n>", line)
        if "timings" in program.markers:
            line = DECIMAL.sub("<float>", line)
        for regex, text in program.replacements:
            line = regex.sub(text, line)
        out.append(line.rstrip())
    if program.tokens is not None:
        return sorted(program.tokens.findall("\n".join(out)))
    if "count-chars" in program.markers:
        return [f"{char!r} x {count}" for char, count in sorted(Counter("".join(out)).items())]
    if "unique-lines" in program.markers:
        return sorted(set(out))
    if "sort-lines" in program.markers:
        return sorted(out)
    return out


def final_error(stderr: str, returncode: int | None) -> str | None:
    """The type of the exception that ended the program: its last traceback's last line."""
    if returncode in (0, None):
        return None
    lines = stderr.splitlines()
    starts = [i for i, line in enumerate(lines) if line.startswith("Traceback (most recent")]
    if not starts:
        return None
    for line in lines[starts[-1] + 1:]:
        if line and not line[0].isspace():
            return line.split(":", 1)[0].strip()
    return None


# ---- running one program -----------------------------------------------------------------


@dataclasses.dataclass
class Run:
    stdout: str
    stderr: str
    returncode: int | None  # None: killed after RUN_TIMEOUT
    seconds: float
    left_behind: list[str]
    pids: set[int]

    @property
    def error(self) -> str | None:
        return final_error(self.stderr, self.returncode)


def _session(sid: int) -> list[psutil.Process]:
    """The live (not zombie) processes of session ``sid``."""
    found = []
    for proc in psutil.process_iter(["status"]):
        with contextlib.suppress(OSError, psutil.Error):
            if os.getsid(proc.pid) == sid and proc.info["status"] != psutil.STATUS_ZOMBIE:
                found.append(proc)
    return found


def _describe(proc: psutil.Process) -> str:
    try:
        return f"{proc.pid}: {' '.join(proc.cmdline()) or proc.name()}"
    except psutil.Error:
        return f"{proc.pid}: (gone)"


def _kill_all(procs: list[psutil.Process]) -> None:
    for proc in procs:
        with contextlib.suppress(psutil.Error):
            proc.kill()
    psutil.wait_procs(procs, timeout=10)


def run_program(name: str, source: str, argv: list[str], sample_pids: bool = False) -> Run:
    """Run ``source`` as the script ``name`` in a new session, in an empty directory."""
    with tempfile.TemporaryDirectory(prefix="corpus-") as cwd:
        Path(cwd, name).write_text(source)
        stdout_path, stderr_path = Path(cwd, ".stdout"), Path(cwd, ".stderr")
        # files, not pipes: a process left behind holding them cannot stall the reading
        with open(stdout_path, "wb") as out, open(stderr_path, "wb") as err:
            start = time.monotonic()
            proc = subprocess.Popen([sys.executable, name, *argv], cwd=cwd,
                                    stdin=subprocess.DEVNULL, stdout=out, stderr=err,
                                    start_new_session=True, env=PROGRAM_ENV)
            pids = {proc.pid}
            returncode: int | None = None
            while returncode is None and time.monotonic() - start < RUN_TIMEOUT:
                if sample_pids:
                    pids.update(p.pid for p in _session(proc.pid))
                with contextlib.suppress(subprocess.TimeoutExpired):
                    returncode = proc.wait(timeout=PID_SAMPLING if sample_pids else 1.0)
            if returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
            seconds = time.monotonic() - start
        deadline = time.monotonic() + SETTLE
        while (left := _session(proc.pid)) and time.monotonic() < deadline:
            time.sleep(0.05)
        left_behind = [_describe(p) for p in left]
        _kill_all(left)
        _kill_all(_session(proc.pid))  # one forked while the others were being killed
        return Run(stdout_path.read_text(errors="replace"),
                   stderr_path.read_text(errors="replace"), returncode, seconds, left_behind,
                   pids)


@dataclasses.dataclass
class Result:
    program: Program
    stdlib: Run
    manybrains: list[Run]


@pytest.fixture(scope="module")
def corpus_runs(request: pytest.FixtureRequest) -> Iterator[dict[str, Result]]:
    """The runs of every program selected in this module, made before its first test."""
    wanted = sorted({item.callspec.params["program"] for item in request.session.items
                     if item.module is request.module and hasattr(item, "callspec")
                     and "corpus_runs" in getattr(item, "fixturenames", ())})
    programs = {name: Program.load(name) for name in wanted}
    with ThreadPoolExecutor(AT_ONCE, thread_name_prefix="corpus") as pool:
        stdlib = {name: pool.submit(run_program, name, p.source, p.argv, "pids" in p.markers)
                  for name, p in programs.items()}
        manybrains = {name: [pool.submit(run_program, name, to_manybrains(p.source), p.argv,
                                         "pids" in p.markers)
                             for _ in range(RACY_RUNS if "racy" in p.markers else 1)]
                      for name, p in programs.items()}
        results = {name: Result(programs[name], stdlib[name].result(),
                                [future.result() for future in manybrains[name]])
                   for name in programs}
    yield results


# ---- the tests -----------------------------------------------------------------------------


def _report(program: Program, stdlib: Run | None, run: Run) -> str:
    expected = program.expected if stdlib is None else normalise(program, stdlib)
    got = normalise(program, run)
    diff = "\n".join(difflib.unified_diff(expected, got, "expected", "manybrains", lineterm=""))
    stderr_tail = "\n".join(run.stderr.splitlines()[-15:])
    parts = [f"{program.name}:"]
    if stdlib is not None:
        parts.append(f"  stdlib:     exit {stdlib.returncode}, error {stdlib.error}, "
                     f"{stdlib.seconds:.1f} s, left behind {stdlib.left_behind}")
    parts += [f"  manybrains: exit {run.returncode}, error {run.error}, {run.seconds:.1f} s, "
              f"left behind {run.left_behind}",
              f"  stdout diff:\n{diff or '    (same)'}",
              f"  manybrains stderr (last lines):\n{stderr_tail}"]
    return "\n".join(parts)


def _problems(program: Program, stdlib: Run | None, run: Run) -> list[str]:
    problems = []
    if run.returncode is None:
        problems.append(f"timed out after {RUN_TIMEOUT:.0f} s")
    if run.left_behind:
        problems.append(f"left processes behind: {run.left_behind}")
    if stdlib is None:  # expect-manybrains
        if normalise(program, run) != program.expected:
            problems.append("stdout differs from the expected output")
        if (run.returncode, run.error) != (program.expected_exit, program.expected_error):
            problems.append(f"exit {run.returncode}, error {run.error} (expected "
                            f"{program.expected_exit}, {program.expected_error})")
        return problems
    if normalise(program, run) != normalise(program, stdlib):
        problems.append("stdout differs")
    if run.returncode != stdlib.returncode:
        problems.append(f"exit status {run.returncode} != stdlib's {stdlib.returncode}")
    if run.error != stdlib.error:
        problems.append(f"ending error {run.error} != stdlib's {stdlib.error}")
    if run.seconds > 2 * stdlib.seconds + SLOWER_BY:
        problems.append(f"took {run.seconds:.1f} s, the stdlib {stdlib.seconds:.1f} s")
    return problems


@pytest.mark.parametrize("program", PROGRAMS)
def test_rewrite_swaps_only_the_pool_class(program: str) -> None:
    source = (CORPUS / program).read_text()
    assert stdlib_pool_uses(source), f"{program} takes no pool class from the stdlib"
    rewritten = to_manybrains(source)
    assert rewritten != source
    assert stdlib_pool_uses(rewritten) == [], f"{program} still runs a stdlib pool"
    assert "manybrains" in rewritten
    compile(rewritten, program, "exec")
    # only import lines change, so every other line of the program is kept as it is
    kept = [line for line in source.splitlines() if "Pool" not in line or "import" not in line]
    for line in kept:
        if not re.search(r"\.(Pool|ProcessPoolExecutor)\(", line):
            assert line in rewritten.splitlines(), f"{program}: {line!r} was changed"


@pytest.mark.timeout(600)  # the first test also waits for corpus_runs: every program's runs
@pytest.mark.parametrize("program", PROGRAMS)
def test_program_behaves_as_with_the_stdlib(program: str, corpus_runs: dict[str, Result]) -> None:
    result = corpus_runs[program]
    stdlib = None if result.program.expected is not None else result.stdlib
    if stdlib is not None:
        assert stdlib.returncode is not None, f"{program}: the stdlib run timed out"
        assert not stdlib.left_behind, f"{program}: the stdlib run left {stdlib.left_behind}"
    failed: dict[str, list[int]] = {}  # the problems -> the runs that had them
    reports = {}
    for i, run in enumerate(result.manybrains, 1):
        if problems := _problems(result.program, stdlib, run):
            key = "; ".join(problems)
            failed.setdefault(key, []).append(i)
            reports.setdefault(key, _report(result.program, stdlib, run))
    assert not failed, "\n\n".join(
        f"run {', '.join(map(str, runs))} of {len(result.manybrains)}: {key}\n{reports[key]}"
        for key, runs in failed.items())


def test_rewrite_keeps_other_names_and_aliases() -> None:
    source = ("import multiprocessing as mp\n"
              "from multiprocessing import Pool as P, RLock\n"
              "from concurrent import futures\n"
              "def f():\n"
              "    from concurrent.futures import (ProcessPoolExecutor,\n"
              "                                    as_completed)\n"
              "    return mp.Pool(2), futures.ProcessPoolExecutor(), mp.Queue()\n")
    assert to_manybrains(source) == (
        "import manybrains  # added: the pool class\n"
        "import multiprocessing as mp\n"
        "from multiprocessing import RLock\n"
        "from manybrains import Pool as P  # was: from multiprocessing\n"
        "from concurrent import futures\n"
        "def f():\n"
        "    from concurrent.futures import as_completed\n"
        "    from manybrains import ProcessPoolExecutor  # was: from concurrent.futures\n"
        "    return manybrains.Pool(2), manybrains.ProcessPoolExecutor(), mp.Queue()\n")
