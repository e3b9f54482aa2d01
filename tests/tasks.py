"""Task functions shared by the tests, importable by workers under every start method."""

from __future__ import annotations

import asyncio
import os
import threading
import time
import uuid
from pathlib import Path
from typing import Any


def square(x: int) -> int:
    return x * x


def add(x: int, y: int) -> int:
    return x + y


def pid_of(_: object = None) -> int:
    return os.getpid()


def sleep_then(seconds: float, value: object = None) -> object:
    time.sleep(seconds)
    return value


def fail_on(x: int, bad: int = 3) -> int:
    if x == bad:
        raise ValueError(f"bad input {x}")
    return x


_state: dict[str, object] = {}


def remember(value: object) -> None:
    _state["value"] = value


def recall(_: object = None) -> object:
    return _state.get("value")


def count_calls(_: object = None) -> int:
    _state["calls"] = int(_state.get("calls", 0)) + 1  # type: ignore[call-overload]
    return int(_state["calls"])  # type: ignore[call-overload]


def small_work(x: int) -> int:
    """A few microseconds of pure-Python work, returning a checkable value."""
    return sum(range(x % 200)) + x


def refuse(reason: str) -> None:
    """An initializer that fails, as one whose model file is missing would."""
    raise RuntimeError(reason)


def crash(_: object = None) -> None:
    """End the worker process at once, as a segfault in native code would."""
    os._exit(13)


def crash_once(marker: str) -> str:
    """End the worker the first time; succeed when run again."""
    path = Path(marker)
    if not path.exists():
        path.write_text("crashed")
        os._exit(13)
    return "second try"


def fresh_token(_: object = None) -> str:
    """A different answer on every run: proves a call really ran again."""
    return uuid.uuid4().hex


def unpicklable_result() -> threading.Lock:
    return threading.Lock()


def array_sum(array: Any, scale: float = 1.0) -> float:
    return float(array.sum()) * scale


def heartbeat(path: str, seconds: float) -> None:
    """Append a line every 50 ms for ``seconds``: shows whether the task still runs."""
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        with open(path, "a") as f:
            f.write(".\n")
        time.sleep(0.05)


# ---- coroutine functions ---------------------------------------------------------------------


async def async_double(x: int) -> int:
    await asyncio.sleep(0.001)
    return 2 * x


async def async_sleep_then(seconds: float, value: object = None) -> object:
    await asyncio.sleep(seconds)
    return value


async def async_heartbeat(path: str, seconds: float) -> None:
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        with open(path, "a") as f:
            f.write(".\n")
        await asyncio.sleep(0.05)


async def async_fail_on(x: int, bad: int = 3) -> int:
    await asyncio.sleep(0)
    if x == bad:
        raise KeyError(x)
    return x
