"""Ways to break a worker, importable by workers under every start method."""

from __future__ import annotations

import ctypes
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path


def _in_worker() -> bool:
    return os.environ.get("MANYBRAINS_TEST_PARENT") != str(os.getpid())


os.environ.setdefault("MANYBRAINS_TEST_PARENT", str(os.getpid()))


# ---- ways for a task to end a worker -------------------------------------------------------


def exit_abruptly(code: int = 1) -> None:
    os._exit(code)


def sigkill_self() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


def segfault() -> None:
    ctypes.string_at(0)


def abort() -> None:
    os.abort()


def raise_(exc: BaseException) -> None:
    raise exc


def crash_first_time(marker: str, value: int, crash_on: int = 2) -> int:
    """For ``crash_on``, kill the worker the first time (per marker file); else succeed."""
    path = Path(marker)
    if value == crash_on and not path.exists():
        path.write_text("crashed once")
        os.kill(os.getpid(), signal.SIGKILL)
    return value


def sleep_with_child(seconds: float, pidfile: str) -> None:
    """Start a child process, record the worker's pid and the child's, then hang."""
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    Path(pidfile).write_text(f"{os.getpid()} {child.pid}")
    time.sleep(seconds)


class Unpicklable(Exception):
    """An exception that cannot travel back: it holds a lock."""

    def __init__(self, a: int, b: int) -> None:
        super().__init__(a)
        self.lock = threading.Lock()


def raise_unpicklable() -> None:
    raise Unpicklable(1, 2)


def hold_memory(megabytes: int) -> int:
    """Leak: keep ``megabytes`` alive in this worker; returns the worker pid."""
    _leak.append(bytearray(megabytes << 20))
    return os.getpid()


_leak: list[bytearray] = []


def big_result(size: int) -> bytes:
    return bytes(size)


# ---- objects that fail while being (un)pickled ---------------------------------------------


class ExitOnPickle:
    def __reduce__(self):
        raise SystemExit("no pickling for you")


class FailOnPickle:
    def __reduce__(self):
        raise RuntimeError("refuses to be pickled")


def _rebuild_failing_in_worker(how: str) -> object:
    if _in_worker():
        _HOW[how]()
    return "rebuilt in the parent"


def _rebuild_failing_in_parent() -> object:
    if not _in_worker():
        raise RuntimeError("cannot be rebuilt in the parent")
    return "rebuilt in a worker"


_HOW = {
    "raise": lambda: raise_(ValueError("bad state")),
    "exit": lambda: raise_(SystemExit(3)),
    "_exit": lambda: exit_abruptly(7),
    "segfault": segfault,
}


class BreaksInWorker:
    """Pickles fine; unpickling it in a worker raises, exits or segfaults."""

    def __init__(self, how: str) -> None:
        self.how = how

    def __reduce__(self):
        return (_rebuild_failing_in_worker, (self.how,))


class BreaksInParent:
    """A result that a worker pickles fine but the parent cannot unpickle."""

    def __reduce__(self):
        return (_rebuild_failing_in_parent, ())


class CrashOnPickle:
    """A result whose pickling kills the worker."""

    def __reduce__(self):
        os._exit(9)


def make(kind: str) -> object:
    return {"unpicklable": FailOnPickle(), "crash": CrashOnPickle(),
            "parent": BreaksInParent()}[kind]


def identity(x: object) -> object:
    return x
