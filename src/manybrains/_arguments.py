"""Argument checks shared by the pool and its module-level shortcuts.

Each bad value raises ``TypeError``/``ValueError`` naming the argument and what it accepts,
before any work is queued.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Literal

ChunkSize = int | Literal["auto"]


def zip_args(iterables: tuple[Iterable[Any], ...]) -> tuple[Iterable[Any], bool]:
    for it in iterables:
        check_iterable(it)
    if len(iterables) == 1:
        return iterables[0], False
    return zip(*iterables, strict=False), True


def check_callable(fn: object) -> None:
    if not callable(fn):
        raise TypeError(f"expected a callable as the function, got {type(fn).__name__}: {fn!r}")


def check_iterable(items: Any) -> Any:
    try:
        iter(items)
    except TypeError:
        raise TypeError(f"expected an iterable of inputs, got {type(items).__name__}") from None
    return items


def check_chunksize(chunksize: ChunkSize) -> int | None:
    if chunksize == "auto":
        return None
    return positive_int("chunksize", chunksize, hint=' or "auto"')


def check_timeout(timeout: float | None) -> float | None:
    if timeout is None:
        return None
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or not timeout > 0:
        raise ValueError(f"timeout must be a positive number of seconds or None, got {timeout!r}")
    return float(timeout)


def check_retries(retries: int) -> int:
    if isinstance(retries, bool) or not isinstance(retries, int) or retries < 0:
        raise ValueError(f"retries must be an int >= 0, got {retries!r}")
    return retries


def optional_positive(name: str, value: int | None) -> int | None:
    return None if value is None else positive_int(name, value)


def positive_int(name: str, value: object, hint: str = "") -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int >= 1{hint}, got {type(value).__name__}")
    if value < 1:
        raise ValueError(f"{name} must be >= 1{hint}, got {value}")
    return value
