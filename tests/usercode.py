"""Run a program's text the ways people run Python, to test code as they write it.

A test gives the source of a script whose task functions live in its own ``__main__`` and
runs it as a script file in a temporary folder (``python job.py``), as ``python -c``, piped to
``python -`` (a heredoc in a shell script or a CI job), or as cells of a real Jupyter kernel
(nbclient + ipykernel). A program reports what it saw with :func:`report` lines, which the
runner reads back from its output.

Every process gets a hard timeout and is killed by PID, with everything below it, in a
``finally`` block: a hung pool fails its test instead of hanging the suite.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import psutil

MODES = ("file", "-c", "stdin")
PREFIX = "@@usercode "

#: Pasted at the top of each program: ``report(name, value)`` prints one line the runner reads;
#: an exception that ends the program is reported as ``"uncaught"``: [type name, message]
#: (its workers' output shares stderr, so the last line there need not be the program's).
REPORTER = textwrap.dedent(f"""\
    import json as _json
    import sys as _sys

    def report(name, value):
        _sys.stdout.write({PREFIX!r} + _json.dumps([name, value]) + "\\n")
        _sys.stdout.flush()

    if __name__ == "__main__":  # the program's own process, not a worker that re-runs it
        def _report_uncaught(kind, exc, tb, _print=_sys.excepthook):
            report("uncaught", [kind.__name__, str(exc)])
            _print(kind, exc, tb)

        _sys.excepthook = _report_uncaught
    """)


@dataclass
class Outcome:
    """What a program printed and reported, and how it ended."""

    returncode: int | None  # None: it was still running at the deadline, and was killed
    stdout: str
    stderr: str
    reports: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0  # from its start to its exit
    # what it left running: processes of its session still alive LINGER s after it exited
    # (then killed, so the suite leaks nothing)
    left_behind: list[str] = field(default_factory=list)

    def __str__(self) -> str:  # what a failing assertion shows
        return (f"exit code {self.returncode}\n--- stdout ---\n{self.stdout[-3000:]}"
                f"\n--- stderr ---\n{self.stderr[-3000:]}")


def reports_in(text: str) -> dict[str, Any]:
    """The ``report()`` lines in a program's output, by name (the last value wins)."""
    found = {}
    for line in text.splitlines():
        if line.startswith(PREFIX):
            name, value = json.loads(line[len(PREFIX):])
            found[name] = value
    return found


def program(source: str) -> str:
    """``source`` (dedented) with the reporter above it."""
    return REPORTER + "\n" + textwrap.dedent(source)


def run(source: str, mode: str = "file", *, timeout: float = 60.0,
        env: dict[str, str] | None = None, args: Sequence[str] = ()) -> Outcome:
    """Run ``program(source)`` in a fresh interpreter, as ``mode`` says (see :data:`MODES`),
    with ``args`` as its command-line arguments.

    ``env`` entries are added to this process's environment (a value of ``""`` removes one).
    The program runs in a new temporary folder, its current directory.
    """
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    text = program(source)
    environ = {**os.environ, "PYTHONUNBUFFERED": "1"}
    for name, value in (env or {}).items():
        if value:
            environ[name] = value
        else:
            environ.pop(name, None)
    with tempfile.TemporaryDirectory(prefix="usercode-") as folder:
        stdin = None
        if mode == "file":
            path = os.path.join(folder, "job.py")
            with open(path, "w") as f:
                f.write(text)
            argv = [sys.executable, path, *args]
        elif mode == "-c":
            argv = [sys.executable, "-c", text, *args]
        else:
            argv = [sys.executable, "-", *args]
            stdin = text
        return _communicate(argv, stdin, folder, environ, timeout)


def _communicate(argv: list[str], stdin: str | None, cwd: str, env: dict[str, str],
                 timeout: float) -> Outcome:
    # A session of its own: the program and every process it starts share one group that
    # can be killed at once, and Ctrl-C in the terminal running the tests stays ours. Its
    # output goes to files, not pipes: a process it leaves behind holding them cannot keep
    # the reading waiting.
    start = time.monotonic()
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        process = subprocess.Popen(
            argv, cwd=cwd, env=env, text=True, start_new_session=True, stdout=out, stderr=err,
            stdin=subprocess.PIPE if stdin is not None else subprocess.DEVNULL)
        returncode: int | None = None
        left: list[str] = []
        try:
            if stdin is not None:
                assert process.stdin is not None
                with contextlib.suppress(BrokenPipeError):
                    process.stdin.write(stdin)
                process.stdin.close()
            with contextlib.suppress(subprocess.TimeoutExpired):
                returncode = process.wait(timeout=timeout)
            seconds = time.monotonic() - start
            if returncode is not None:
                left = _lingering(process.pid)
        finally:
            kill_tree(process.pid)  # whatever it left: workers, a forkserver, grandchildren
            process.wait()
        out.seek(0)
        err.seek(0)
        stdout, stderr = out.read(), err.read()
    return Outcome(returncode, stdout, stderr, reports_in(stdout), seconds, left)


LINGER = 2.0  # seconds a program's processes may take to exit after it did


def _lingering(session: int) -> list[str]:
    """The processes of ``session`` (a program started in a session of its own) still alive
    ``LINGER`` seconds after the program exited."""
    deadline = time.monotonic() + LINGER
    while True:
        alive = []
        for proc in psutil.process_iter(["status", "cmdline"]):
            with contextlib.suppress(OSError, psutil.Error):
                if os.getsid(proc.pid) == session and proc.info["status"] != psutil.STATUS_ZOMBIE:
                    alive.append(f"{proc.pid}: {' '.join(proc.info['cmdline'] or [])}")
        if not alive or time.monotonic() > deadline:
            return alive
        time.sleep(0.05)


def kill_tree(pid: int) -> None:
    """SIGKILL ``pid``, every process below it and its process group (by id)."""
    try:
        below = psutil.Process(pid).children(recursive=True)
    except psutil.Error:
        below = []
    for proc in below:
        with contextlib.suppress(psutil.Error):
            proc.kill()
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGKILL)  # orphans re-parented to init keep the group
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)
    psutil.wait_procs(below, timeout=5)


class Kernel:
    """A real Jupyter kernel (ipykernel, driven by nbclient) that runs cells one by one."""

    def __init__(self, client: Any) -> None:
        self._client = client
        self._notebook = client.nb

    def run(self, source: str, timeout: float = 60.0) -> Outcome:
        """Run one cell; its stdout, its error (as stderr) and its reports."""
        import nbformat

        cell = nbformat.v4.new_code_cell(program(source))
        self._notebook.cells.append(cell)
        self._client.timeout = timeout
        self._client.execute_cell(cell, len(self._notebook.cells) - 1)
        stdout, stderr, failed = [], [], False
        for output in cell.outputs:
            if output.output_type == "stream":
                (stdout if output.name == "stdout" else stderr).append(output.text)
            elif output.output_type == "error":
                failed = True
                stderr.append(f"{output.ename}: {output.evalue}\n" + "\n".join(output.traceback))
        out = "".join(stdout)
        return Outcome(1 if failed else 0, out, "".join(stderr), reports_in(out))

    @property
    def pid(self) -> int:
        """The kernel process's id."""
        return int(self._client.km.provisioner.process.pid)


@contextlib.contextmanager
def jupyter_kernel(timeout: float = 60.0) -> Iterator[Kernel]:
    """Start a kernel; on exit shut it down, and kill it and what it started if they stay."""
    import nbformat
    from nbclient import NotebookClient

    # shutdown_kernel="immediate": the kernel is killed at the end, not asked to exit. Asked,
    # a kernel that ever started a forkserver (a stdlib pool's as much as ours) takes seconds
    # to go, and what the cells left running is killed below either way.
    client = NotebookClient(nbformat.v4.new_notebook(), timeout=timeout, kernel_name="python3",
                            allow_errors=True, startup_timeout=timeout,
                            shutdown_kernel="immediate")
    started: list[psutil.Process] = []
    try:
        with client.setup_kernel():
            kernel = Kernel(client)
            started.append(psutil.Process(kernel.pid))
            try:
                yield kernel
            finally:  # what the kernel started (pools' workers, a forkserver) is known now
                with contextlib.suppress(psutil.Error):
                    started += started[0].children(recursive=True)
    finally:
        # psutil checks each process's start time: a reused pid is never killed.
        for proc in started:
            with contextlib.suppress(psutil.Error):
                proc.kill()
        psutil.wait_procs(started, timeout=5)
