"""Task functions for the Dask tests, in a module the cluster's workers can import."""

from __future__ import annotations

import os
import threading
import time
import uuid
from pathlib import Path
from typing import Any

_initialized: list[Any] = []


def square(x: int) -> int:
    return x * x


def add(x: int, y: int) -> int:
    return x + y


def fail_on_three(x: int) -> int:
    if x == 3:
        raise ValueError(f"three is not allowed (got {x})")
    return x


def sleep_then(seconds: float, value: Any = None) -> Any:
    time.sleep(seconds)
    return value


def fresh_token() -> str:
    """A different answer on every run: proves a call really ran again."""
    return uuid.uuid4().hex


def unpicklable_result() -> threading.Lock:
    return threading.Lock()


def crash() -> None:
    os._exit(13)


def crash_once(marker: str) -> str:
    """Kill the worker the first time; succeed when run again."""
    path = Path(marker)
    if not path.exists():
        path.write_text("crashed")
        os._exit(13)
    return "second try"


def array_sum(array: Any, scale: float = 1.0) -> float:
    return float(array.sum()) * scale


def remember(value: Any) -> None:
    _initialized.append(value)


def remembered() -> list[Any]:
    return list(_initialized)


def refuse(reason: str) -> None:
    raise RuntimeError(reason)


def heartbeat(path: str, seconds: float) -> None:
    """Append a line every 50 ms for ``seconds``: shows whether the task still runs."""
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        with open(path, "a") as f:
            f.write(".\n")
        time.sleep(0.05)


def where_and_remembered() -> tuple[str, list[Any]]:
    from distributed import get_worker

    return get_worker().address, list(_initialized)
