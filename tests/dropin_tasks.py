"""Task functions for the stdlib drop-in tests, importable by workers under every start method."""

from __future__ import annotations

import os
import signal
import threading
import time


class Payload:
    """A picklable user object that a weak reference can watch."""

    def __init__(self, size: int = 0) -> None:
        self.data = bytes(size)

    def __repr__(self) -> str:
        return f"Payload({len(self.data)})"


class RefusesPickle:
    """Its ``__reduce__`` raises RuntimeError, as in CPython's test_map_unplicklable."""

    def __reduce__(self) -> tuple[object, ...]:
        raise RuntimeError("cannot pickle this one")


def make_payload(_: object = None) -> Payload:
    return Payload()


def lock_result(_: object = None) -> object:
    return threading.Lock()  # cannot be pickled, even by cloudpickle


def raise_key_error() -> None:
    raise KeyError("missing key")


def kill_self(_: object = None) -> None:
    os.kill(os.getpid(), signal.SIGKILL)


def sleep_square(x: int, seconds: float = 0.0) -> int:
    time.sleep(seconds)
    return x * x


def takes_option_names(timeout: object = None, retries: object = None) -> tuple[object, object]:
    return timeout, retries


def count_up_to(total: int, fail_at: int):  # type: ignore[no-untyped-def]
    """A generator that raises ValueError when it reaches ``fail_at``."""
    for i in range(total):
        if i == fail_at:
            raise ValueError(f"the input failed at {i}")
        yield i


def _refuse_to_load() -> None:
    raise ValueError("cannot be rebuilt here")


class BreaksWhenLoaded:
    """Pickles fine; unpickling it, in whichever process, raises ValueError."""

    def __reduce__(self) -> tuple[object, ...]:
        return (_refuse_to_load, ())


def make_breaks_when_loaded(_: object = None) -> BreaksWhenLoaded:
    return BreaksWhenLoaded()
