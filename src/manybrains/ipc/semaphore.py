"""Named semaphores and locks that travel to any process by name.

``multiprocessing.Lock`` can only be handed to a child while it is being started, so it
cannot be an argument of a pool task. These wrap the same C semaphore (``sem_open``) under a
name this module controls: pickling sends the name and the receiver opens the same
semaphore, under every start method. The creating object unlinks the name (when
garbage-collected or at exit); processes that opened it by name never do.
"""

from __future__ import annotations

import _multiprocessing  # type: ignore[import-not-found]
import contextlib
import os
import weakref
from types import TracebackType
from typing import Any, TypeVar

from .segment import new_name

_RECURSIVE_MUTEX, _SEMAPHORE = 0, 1
_MAX = _multiprocessing.SemLock.SEM_VALUE_MAX

S = TypeVar("S", bound="Semaphore")


class Semaphore:
    """A counting semaphore shared between processes (``acquire``/``release``)."""

    _kind = _SEMAPHORE

    def __init__(self, value: int = 1, *, name: str | None = None) -> None:
        self.name = name or new_name("s")
        self._lock = _multiprocessing.SemLock(self._kind, value, _MAX, "/" + self.name, False)
        weakref.finalize(self, _unlink, self.name, os.getpid())
        self._bind()

    def _bind(self) -> None:
        # Bound C methods: the queue calls these in its hottest loops.
        self.acquire = self._lock.acquire
        self.release = self._lock.release

    @classmethod
    def attach(cls: type[S], name: str) -> S:
        """The semaphore another object created as ``name``; that object keeps owning it."""
        self = cls.__new__(cls)
        self.name = name
        try:
            self._lock = _multiprocessing.SemLock._rebuild(0, cls._kind, _MAX, "/" + name)
        except FileNotFoundError:
            raise FileNotFoundError(
                f"semaphore {name!r} no longer exists: the object that created it was closed "
                "or garbage-collected") from None
        self._bind()
        return self

    def value(self) -> int:
        """The current count (a snapshot)."""
        return int(self._lock._get_value())

    def __reduce__(self) -> tuple[Any, tuple[str]]:
        return (type(self).attach, (self.name,))

    def __enter__(self) -> bool:
        return bool(self.acquire())

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.release()

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name} value={self.value()}>"


class Lock(Semaphore):
    """A recursive lock shared between processes: ``with lock: ...``."""

    _kind = _RECURSIVE_MUTEX

    def __init__(self, *, name: str | None = None) -> None:
        super().__init__(1, name=name)

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name}>"


def _unlink(name: str, creator: int) -> None:
    if os.getpid() == creator:  # a forked copy of the creator does not own the name
        with contextlib.suppress(FileNotFoundError):
            _multiprocessing.sem_unlink("/" + name)
