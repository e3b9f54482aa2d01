"""``multiprocessing`` locks, queues and values handed to processes as they start.

The stdlib lets its primitives travel only "through inheritance": in ``initargs`` of a pool,
or as arguments of a ``Process``, pickled while the child is being started. manybrains
starts its processes the same way, so these work in ``initargs=`` of ``Pool`` and
``ProcessPoolExecutor`` and as arguments of ``mb.spawn``:

- under ``fork`` they are inherited as they are;
- under ``template`` (the default) and ``forkserver`` their file descriptors travel with the
  start request, and a lock made by the default (``fork``) context, which has no name and
  exists only in memory the child inherits, is handed over by its address: a template is a
  copy of the parent, so the memory is there if the lock existed when it was forked;
- under ``spawn`` and ``forkserver`` a lock made by the default (``fork``) context cannot be
  reached (no name, no inherited memory), nor by a template forked before the lock was made:
  pickling it raises :class:`NotInherited`, whose message says what to do. The default start
  method never gets that far where the stdlib would fork: it forks too (see
  :func:`manybrains.backends.processes.context.choose`).

As task arguments they are refused, as by the stdlib; ``mb.Lock``, ``mb.Queue``, ``mb.Value``
and ``mb.Array`` travel anywhere, task arguments included.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from typing import Any

_local = threading.local()
Ranges = list[tuple[int, int]]


@contextlib.contextmanager
def starting(inherited_memory: Ranges | None, kept: object = None, method: str | None = None
             ) -> Iterator[None]:
    """Within the block, pickle for a process being started.

    ``inherited_memory``: the semaphore mappings the new process inherits (a template's),
    or None when it inherits none. ``kept``: an object the new process inherits as it is
    (see :func:`inherit`): it is pickled as a reference to that copy. ``method``: the start
    method of the new process, for the advice of a refusal.
    """
    from multiprocessing.context import get_spawning_popen, set_spawning_popen

    previous = getattr(_local, "start", None)
    _local.start = (inherited_memory, kept, method)
    stand_in = get_spawning_popen() is None
    if stand_in:  # the stdlib checks that a process is being started; one is, by us
        set_spawning_popen(_Collector())  # type: ignore[arg-type]
    try:
        yield
    finally:
        _local.start = previous
        if stand_in:
            set_spawning_popen(None)


class _Collector:
    """A "spawning popen" for a trial pickle: descriptors are noted, never sent."""

    def duplicate_for_child(self, fd: int) -> int:
        return fd

    class DupFd:
        def __init__(self, fd: int) -> None:
            self.fd = fd

        def detach(self) -> int:
            raise RuntimeError("a descriptor of a trial pickle was unpickled")


class Kept:
    """What every process a pool (or ``spawn``) starts needs: its initializer and initargs.

    An object of its own, so the pickler sees it (picklers never ask about plain tuples).
    """

    __slots__ = ("value",)

    def __init__(self, value: Any) -> None:
        self.value = value

    def __getstate__(self) -> Any:
        return self.value

    def __setstate__(self, value: Any) -> None:
        self.value = value


_kept: object = None  # in a template and its workers: what the pool asked it to keep


def inherit(kept: object) -> None:
    """In a template: ``kept`` is in this process's memory, for every worker it forks."""
    global _kept
    _kept = kept


def _kept_object() -> object:
    return _kept


def reduce_kept(obj: Any) -> Any:
    """A reference to the starting process's inherited copy of ``obj``, or NotImplemented."""
    start = getattr(_local, "start", None)
    if start is not None and start[1] is not None and obj is start[1]:
        return (_kept_object, ())
    return NotImplemented


class NotInherited(TypeError):
    """A ``multiprocessing`` lock of the ``fork`` context cannot reach the process starting.

    Only a process forked from one that holds the lock (the parent, or a template forked
    after the lock was made) can use it; the message says what to do instead.
    """


def reduce_semlock(lock: Any) -> Any:
    """How a ``multiprocessing`` SemLock travels to a starting process, or NotImplemented."""
    start = getattr(_local, "start", None)
    semlock = lock._semlock
    if start is None or semlock.name is not None:
        return NotImplemented  # the stdlib's way: refused, or opened by name
    inherited, method = start[0], start[2]
    kind = type(lock).__name__
    if inherited is None:
        context = method if method in ("forkserver", "spawn") else "forkserver"
        raise NotInherited(
            f"this is, or holds, a multiprocessing {kind} of the 'fork' context "
            "(multiprocessing's default on Linux before Python 3.14), which only a forked "
            "process can inherit, and these processes are started by "
            f"{method or 'a forkserver or spawn'} (multiprocessing refuses it there too): "
            f"make it with multiprocessing.get_context({context!r}), use mb.Lock / mb.Queue "
            "/ mb.Value, which travel anywhere, or pass start_method='fork'")
    if not any(low <= semlock.handle < high for low, high in inherited):
        raise NotInherited(
            f"this is, or holds, a multiprocessing {kind} of the 'fork' context that was "
            "made after the process that starts these processes (a template, made while the "
            "program ran one thread) was forked, so they cannot inherit it: make it before "
            "the first pool, or with multiprocessing.get_context('forkserver'), use mb.Lock "
            "/ mb.Queue / mb.Value, which travel anywhere, or pass start_method='fork'")
    state = (semlock.handle, semlock.kind, semlock.maxvalue, None)
    return (_rebuild_semlock, (type(lock), state))


def _rebuild_semlock(cls: Any, state: tuple[Any, ...]) -> Any:
    lock = cls.__new__(cls)
    lock.__setstate__(state)
    return lock


def semaphore_memory() -> Ranges:
    """Address ranges of the POSIX semaphores this process has mapped (Linux)."""
    ranges = []
    try:
        with open("/proc/self/maps") as maps:
            for line in maps:
                if "/dev/shm/sem." in line:
                    low, high = line.split(None, 1)[0].split("-")
                    ranges.append((int(low, 16), int(high, 16)))
    except OSError:
        pass
    return ranges
