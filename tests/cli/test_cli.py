"""The command line, run as a user runs it: a subprocess, its output, its exit status."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

USER_MODULE = '''
import os
import sys
import time

def shout(text):
    if text == "bad":
        raise ValueError("bad line")
    print("worker saw", text)
    return text.upper()

def crash_on_die(text):
    if text == "die":
        os._exit(3)
    return text

def exit_on_quit(text):
    if text == "quit":
        sys.exit(3)
    return text

def hang_on_slow(text):
    if text == "slow":
        time.sleep(60)
    return text

def total(record):
    return record["a"] + record["b"]

def not_json(text):
    return {1, 2}
'''


def manybrains(*args: str, cwd: Path | None = None, stdin: str | None = None,
               command: tuple[str, ...] = (sys.executable, "-m", "manybrains"), timeout: float = 50
               ) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*command, *args], cwd=cwd, input=stdin, capture_output=True,
                          text=True, timeout=timeout)


@pytest.fixture
def work(tmp_path: Path) -> Path:
    (tmp_path / "userfns.py").write_text(USER_MODULE)
    (tmp_path / "words.txt").write_text("a\nb\nbad\nc\n")
    return tmp_path


def records(text: str) -> list[dict[str, object]]:
    return [json.loads(line) for line in text.splitlines()]


# ---- help and bad arguments ------------------------------------------------------------------


@pytest.mark.parametrize("command", [(), ("info",), ("compare",), ("map",)])
def test_every_command_has_help(command):
    result = manybrains(*command, "--help")
    assert result.returncode == 0
    assert result.stdout.startswith("usage: manybrains")


def test_console_script_is_installed():
    script = shutil.which("manybrains", path=os.path.dirname(sys.executable))
    if script is None:
        pytest.skip("the package is not installed with its console script here")
    result = manybrains("--version", command=(script,))
    assert result.returncode == 0 and result.stdout.startswith("manybrains ")


@pytest.mark.parametrize(("args", "says"), [
    ((), "choose a command"),
    (("frobnicate",), "invalid choice: 'frobnicate'"),
    (("info", "--bogus"), "unrecognized arguments: --bogus"),
    (("map",), "the following arguments are required: MODULE:FUNCTION"),
    (("map", "userfns:shout", "--workers", "0"), "--workers: must be at least 1"),
    (("map", "userfns:shout", "--timeout", "soon"), "--timeout: expected a number of seconds"),
    (("map", "userfns", "words.txt"), "expected MODULE:FUNCTION"),
    (("map", "nosuchmodule:f", "words.txt"), "cannot import 'nosuchmodule'"),
    (("map", "userfns:nope", "words.txt"), "has no attribute 'nope'"),
    (("map", "userfns:shout", "missing.txt"), "cannot open missing.txt"),
    (("map", "userfns:shout", "words.txt", "--resume"), "--resume needs --output"),
    (("map", "userfns:shout", "words.txt", "--backend", "nope"), "unknown backend 'nope'"),
])
def test_bad_arguments_exit_2_with_one_line(work, args, says):
    result = manybrains(*args, cwd=work)
    assert result.returncode == 2
    assert result.stdout == ""
    assert len(result.stderr.splitlines()) == 1, result.stderr
    assert says in result.stderr


# ---- info and compare ------------------------------------------------------------------------


def test_info_reports_the_machine():
    result = manybrains("info")
    assert result.returncode == 0
    for label in ("CPUs", "GIL", "start methods", "backends", "python"):
        assert label in result.stdout
    facts = json.loads(manybrains("info", "--json").stdout)
    assert facts["cpus_usable"] >= 1
    assert facts["default_start_method"] in facts["start_methods"]
    assert facts["backends"]["processes"] is None  # None: usable


def test_compare_quick_prints_the_measured_cheat_sheet():
    result = manybrains("compare", "--quick")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    for model in ("plain loop", "threads", "asyncio", "processes"):
        assert any(line.startswith(model) for line in lines)
    assert "Threading = many workers, same brain" in result.stdout
    assert "Multiprocessing = many brains" in result.stdout


def test_the_first_demo_spelling_runs_the_quick_comparison_as_json():
    result = manybrains("--quick", "--json")
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    models = {m["model"]: m for m in data["models"]}
    assert list(models) == ["plain loop", "threads", "asyncio", "processes"]
    assert models["plain loop"]["cpu_speedup"] == 1.0
    assert models["threads"]["memory_shared"] and not models["processes"]["memory_shared"]
    # waits overlap on an event loop: far faster than one after another
    assert models["asyncio"]["io_s"] < models["plain loop"]["io_s"] / 4
    assert len(data["takeaways"]) == 3


def test_plot_without_matplotlib_says_how_to_get_it(tmp_path):
    code = ("import sys; sys.modules['matplotlib'] = None; from manybrains.cli import main; "
            f"sys.exit(main(['compare', '--quick', '--plot', {str(tmp_path / 'c.png')!r}]))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            timeout=50)
    assert result.returncode == 2
    assert "pip install 'manybrains[plot]'" in result.stderr
    assert result.stdout == ""  # it stops before measuring anything


# ---- map ---------------------------------------------------------------------------------------


def test_map_writes_results_in_order_and_failed_items_to_the_errors_file(work):
    result = manybrains("map", "userfns:shout", "words.txt", "--errors", "errors.jsonl",
                        "--workers", "2", cwd=work)
    assert result.returncode == 1
    assert records(result.stdout) == [
        {"index": 0, "input": "a", "result": "A"},
        {"index": 1, "input": "b", "result": "B"},
        {"index": 3, "input": "c", "result": "C"}]
    (error,) = records((work / "errors.jsonl").read_text())
    assert error["index"] == 2 and error["error"] == "ValueError: bad line"
    assert "raise ValueError" in str(error["traceback"])
    assert "worker saw a" in result.stderr  # prints go to stderr: stdout is for results
    assert "1 item(s) failed; see errors.jsonl" in result.stderr


def test_map_reads_stdin_and_runs_unordered(work):
    lines = "".join(f"{i}\n" for i in range(200))
    result = manybrains("map", "userfns:crash_on_die", "--unordered", cwd=work, stdin=lines)
    assert result.returncode == 0, result.stderr
    got = records(result.stdout)
    assert sorted(int(r["index"]) for r in got) == list(range(200))  # type: ignore[call-overload]
    assert all(r["result"] == r["input"] for r in got)


def test_a_crashing_item_fails_alone(work):
    result = manybrains("map", "userfns:crash_on_die", "-", "--workers", "2", cwd=work,
                        stdin="a\nb\ndie\nc\nd\n")
    assert result.returncode == 1
    assert [r["input"] for r in records(result.stdout)] == ["a", "b", "c", "d"]
    assert "item 2 failed: WorkerCrashed" in result.stderr


def test_a_crash_inside_a_large_chunk_fails_only_its_item(work):
    # Tiny calls travel in chunks of hundreds by item 1500: the chunk that crashed runs
    # again item by item, and the bar counts every item once.
    lines = "".join("die\n" if i == 1500 else f"{i}\n" for i in range(2000))
    result = manybrains("map", "userfns:crash_on_die", "-", "--workers", "2", "--progress",
                        cwd=work, stdin=lines)
    assert result.returncode == 1
    assert [r["index"] for r in records(result.stdout)] == [i for i in range(2000) if i != 1500]
    assert "item 1500 failed: WorkerCrashed" in result.stderr
    assert "2000/2000" not in result.stderr  # stdin: no total, only a count
    assert "2000" in result.stderr and "failed=1" in result.stderr


@pytest.mark.parametrize("backend", ["processes", "threads", "inline"])
def test_an_item_calling_sys_exit_fails_alone(work, backend):
    # SystemExit raised by the function belongs to its item, as any other error: the run goes
    # on and says the item failed, it does not end with the function's exit status.
    result = manybrains("map", "userfns:exit_on_quit", "-", "--backend", backend, cwd=work,
                        stdin="a\nquit\nb\n")
    assert result.returncode == 1, result.stderr
    assert [r["input"] for r in records(result.stdout)] == ["a", "b"]
    assert "item 1 failed: SystemExit: 3" in result.stderr


def test_an_item_past_the_timeout_fails_alone(work):
    result = manybrains("map", "userfns:hang_on_slow", "--timeout", "0.5", cwd=work,
                        stdin="a\nslow\nb\n")
    assert result.returncode == 1
    assert [r["input"] for r in records(result.stdout)] == ["a", "b"]
    assert "item 1 failed: TimeoutError" in result.stderr


def test_jsonl_input_and_output_file(work):
    (work / "pairs.jsonl").write_text('{"a": 1, "b": 2}\n{"a": 10, "b": 20}\nnot json\n')
    result = manybrains("map", "userfns:total", "pairs.jsonl", "-o", "out.jsonl", cwd=work)
    assert result.returncode == 1
    assert result.stdout == ""
    assert [r["result"] for r in records((work / "out.jsonl").read_text())] == [3, 30]
    assert "item 2 failed" in result.stderr


def test_a_result_that_is_not_json_is_a_failed_item(work):
    result = manybrains("map", "userfns:not_json", cwd=work, stdin="x\n")
    assert result.returncode == 1
    assert "not JSON serializable" in result.stderr


def test_resume_skips_what_the_output_holds_and_drops_a_cut_line(work):
    output = work / "out.jsonl"
    output.write_text('{"index": 0, "input": "a", "result": "A"}\n{"index": 1, "inp')
    result = manybrains("map", "userfns:shout", "words.txt", "-o", "out.jsonl", "--resume",
                        "--errors", "errors.jsonl", cwd=work)
    assert result.returncode == 1
    got = records(output.read_text())
    assert [r["index"] for r in got] == [0, 1, 3]
    assert "worker saw a" not in result.stderr  # item 0 was not run again


def test_progress_bar_goes_to_stderr(work):
    result = manybrains("map", "userfns:shout", "words.txt", "--progress", "--errors",
                        "errors.jsonl", cwd=work)
    assert "4/4" in result.stderr and "failed=1" in result.stderr
    assert len(records(result.stdout)) == 3


def test_map_on_threads(work):
    result = manybrains("map", "userfns:shout", "--backend", "threads", cwd=work,
                        stdin="x\ny\n")
    assert result.returncode == 0, result.stderr
    assert [r["result"] for r in records(result.stdout)] == ["X", "Y"]


def test_module_and_function_names_from_the_help_example_parse(work):
    # A dotted attribute path reaches a function inside a class namespace.
    (work / "pkg_fns.py").write_text(textwrap.dedent("""
        class Text:
            @staticmethod
            def length(s):
                return len(s)
    """))
    result = manybrains("map", "pkg_fns:Text.length", cwd=work, stdin="abc\n")
    assert records(result.stdout) == [{"index": 0, "input": "abc", "result": 3}]


# ---- more map options, async functions, the --plot path ----------------------------------------

MORE_USER_FUNCTIONS = '''
import asyncio
import os
from pathlib import Path

def crash_once(text):
    marker = Path(text + ".crashed")
    if text.startswith("flaky") and not marker.exists():
        marker.write_text("once")
        os._exit(3)
    return text

async def slow_upper(text):
    await asyncio.sleep(0.05)
    return text.upper()
'''


@pytest.fixture
def more(work: Path) -> Path:
    (work / "morefns.py").write_text(MORE_USER_FUNCTIONS)
    return work


def test_retries_run_a_crashed_item_again(more):
    result = manybrains("map", "morefns:crash_once", "--retries", "1", "--workers", "2",
                        cwd=more, stdin="a\nflaky1\nb\nflaky2\n")
    assert result.returncode == 0, result.stderr
    assert [r["result"] for r in records(result.stdout)] == ["a", "flaky1", "b", "flaky2"]
    assert (more / "flaky1.crashed").exists() and (more / "flaky2.crashed").exists()


def test_without_retries_the_crashed_item_fails(more):
    result = manybrains("map", "morefns:crash_once", cwd=more, stdin="a\nflaky3\n")
    assert result.returncode == 1
    assert "item 1 failed: WorkerCrashed" in result.stderr


def test_jsonl_flag_parses_stdin_lines_as_json(work):
    pairs = '{"a": 1, "b": 2}\n{"a": 5, "b": 6}\n'
    result = manybrains("map", "userfns:total", "--jsonl", cwd=work, stdin=pairs)
    assert result.returncode == 0, result.stderr
    assert records(result.stdout) == [
        {"index": 0, "input": {"a": 1, "b": 2}, "result": 3},
        {"index": 1, "input": {"a": 5, "b": 6}, "result": 11}]
    plain = manybrains("map", "userfns:total", cwd=work, stdin=pairs)  # lines as text
    assert plain.returncode == 1 and "item 0 failed: TypeError" in plain.stderr


@pytest.mark.parametrize("backend", ["processes", "asyncio", "auto"])
def test_async_functions_are_awaited(more, backend):
    lines = "".join(f"w{i}\n" for i in range(20))
    result = manybrains("map", "morefns:slow_upper", "--backend", backend, cwd=more,
                        stdin=lines)
    assert result.returncode == 0, result.stderr
    assert [r["result"] for r in records(result.stdout)] == [f"W{i}" for i in range(20)]


FAKE_PYPLOT = '''
import json, os

calls = []

class Axis:
    def __init__(self, index):
        self.index = index
    def barh(self, names, values, color=None):
        calls.append({"axis": self.index, "names": list(names), "values": list(values)})
    def set_title(self, title):
        calls.append({"axis": self.index, "title": title})
    def invert_yaxis(self):
        pass

class Figure:
    def tight_layout(self):
        pass
    def savefig(self, path, dpi=None):
        with open(path, "w") as f:
            json.dump(calls, f)

def subplots(rows, columns, figsize=None):
    return Figure(), (Axis(0), Axis(1))

def close(figure):
    pass
'''


@pytest.fixture
def fake_matplotlib(tmp_path: Path) -> dict[str, str]:
    """The environment of a Python where matplotlib records the chart instead of drawing it."""
    package = tmp_path / "fake" / "matplotlib"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("def use(backend):\n    assert backend == 'Agg'\n")
    (package / "pyplot.py").write_text(FAKE_PYPLOT)
    return {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path / "fake"), *sys.path])}


def _compare_plot(path: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "manybrains", "compare", "--quick", "--plot",
                           str(path)], capture_output=True, text=True, timeout=50, env=env)


def test_plot_draws_both_workloads_for_every_model(tmp_path, fake_matplotlib):
    chart = tmp_path / "chart.png"
    result = _compare_plot(chart, fake_matplotlib)
    assert result.returncode == 0, result.stderr
    bars = [c for c in json.loads(chart.read_text()) if "names" in c]
    assert [b["axis"] for b in bars] == [0, 1]
    for bar in bars:
        assert bar["names"] == ["plain loop", "threads", "asyncio", "processes"]
        assert all(v > 0 for v in bar["values"])


def test_plot_into_a_missing_folder_fails_before_measuring(tmp_path, fake_matplotlib):
    result = _compare_plot(tmp_path / "no" / "c.png", fake_matplotlib)
    assert result.returncode == 2 and "no such folder" in result.stderr
    assert result.stdout == ""  # nothing was measured
