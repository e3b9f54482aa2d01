"""Task functions shared by the tests, importable by workers under every start method."""

from __future__ import annotations

import os
import time


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
