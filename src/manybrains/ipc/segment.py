"""Named POSIX shared-memory segments, without the stdlib's resource tracker.

``multiprocessing.shared_memory`` registers every segment with a resource tracker, also in
processes that only attach to it (before Python 3.13); the tracker then warns about "leaked"
segments and unlinks them under the owner's feet. Here each segment has one owner, the
process that created it, and only the owner unlinks it: when asked, when its Python object
goes away, or at exit. Other processes attach by name and never unlink.

Segments are created with mode 0600 and named ``mb<owner pid>_<random>``, so a segment left
by a crashed process can be traced to it. Attaching is cached per process: the same mapping
is reused while the segment exists, so pages touched once are not faulted in again.
"""

from __future__ import annotations

import _posixshmem  # type: ignore[import-not-found]
import contextlib
import mmap
import os
from collections import OrderedDict

PREFIX = "mb"
_MODE = 0o600
_CACHE_SIZE = 64  # attached segments kept mapped per process
_POPULATE = getattr(mmap, "MAP_POPULATE", 0)  # Linux
_POPULATE_FROM = 1 << 20


def new_name(kind: str = "") -> str:
    """A fresh segment name owned by this process; ``kind`` tags what it is for."""
    return f"{PREFIX}{os.getpid()}{kind}_{os.urandom(6).hex()}"


class Segment:
    """One mapping of a named shared-memory segment.

    ``buf`` is a writable memoryview over the whole segment. Dropping the last reference to
    it (and to views made from it) unmaps the segment; nothing is unmapped while a view lives.
    """

    __slots__ = ("__weakref__", "_fd", "buf", "name", "size")

    def __init__(self, name: str, size: int, fd: int, *, populate: bool = False) -> None:
        self.name = name
        self.size = size
        self._fd = fd
        flags = mmap.MAP_SHARED | (_POPULATE if populate else 0)
        self.buf = memoryview(mmap.mmap(fd, max(size, 1), flags=flags))

    @classmethod
    def create(cls, size: int, name: str | None = None) -> Segment:
        """A new segment of ``size`` bytes, readable and writable by this user only."""
        name = name or new_name()
        fd = _posixshmem.shm_open("/" + name, os.O_CREAT | os.O_EXCL | os.O_RDWR, mode=_MODE)
        try:
            os.ftruncate(fd, max(size, 1))
            return cls(name, size, fd)
        except BaseException:
            os.close(fd)
            unlink(name)
            raise

    @classmethod
    def open(cls, name: str) -> Segment:
        """A new mapping of the existing segment ``name`` (not cached)."""
        try:
            fd = _posixshmem.shm_open("/" + name, os.O_RDWR, mode=_MODE)
        except FileNotFoundError:
            raise FileNotFoundError(
                f"shared memory {name!r} no longer exists: the process that created it "
                "closed it or exited; keep the owning object alive while others use it"
            ) from None
        try:
            size = os.fstat(fd).st_size
            # Map every page of existing data at once: a reader touching them one by one
            # pays a page fault each, many times slower than mapping them in one call.
            return cls(name, size, fd, populate=size >= _POPULATE_FROM)
        except BaseException:
            os.close(fd)
            raise

    @property
    def unlinked(self) -> bool:
        """Whether the name is gone (the memory stays mapped here until released)."""
        if self._fd < 0:
            return True
        try:
            return os.fstat(self._fd).st_nlink == 0
        except OSError:
            return True

    def close_fd(self) -> None:
        """Close the file descriptor; the mapping stays valid."""
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def __del__(self) -> None:
        with contextlib.suppress(Exception):
            self.close_fd()


def unlink(name: str) -> bool:
    """Remove the segment ``name``; False if it was already gone."""
    try:
        _posixshmem.shm_unlink("/" + name)
    except FileNotFoundError:
        return False
    return True


class _AttachCache:
    """Recently attached segments of this process, by name, dropped once unlinked."""

    def __init__(self) -> None:
        self._segments: OrderedDict[str, Segment] = OrderedDict()
        self._pid = os.getpid()

    def get(self, name: str) -> Segment:
        if self._pid != os.getpid():  # a forked child: the parent's fds are not ours to reuse
            self.__init__()  # type: ignore[misc]
        segment = self._segments.get(name)
        if segment is not None and not segment.unlinked:
            self._segments.move_to_end(name)
            return segment
        self._sweep()
        segment = self._segments[name] = Segment.open(name)
        while len(self._segments) > _CACHE_SIZE:
            self._segments.popitem(last=False)[1].close_fd()
        return segment

    def _sweep(self) -> None:
        # Unlinked segments would stay mapped (pinning their memory) for as long as we
        # cached them; the owner unlinking one is the sign it is no longer needed.
        for name in [n for n, s in self._segments.items() if s.unlinked]:
            self._segments.pop(name).close_fd()


_cache = _AttachCache()


def attach(name: str) -> Segment:
    """The segment ``name``, mapped once per process and reused while it exists."""
    return _cache.get(name)


def sweep_orphans() -> int:
    """Remove segments and semaphores whose creating process is gone; how many were removed.

    Only the creator removes a segment, so one whose creator was killed would stay forever.
    Called where processes of ours have ended (a pool shutting down, a crashed spawn).
    """
    import _multiprocessing  # type: ignore[import-not-found]

    removed = 0
    try:
        entries = os.listdir("/dev/shm")
    except OSError:
        return 0
    for entry in entries:
        semaphore = entry.startswith("sem.")
        name = entry[4:] if semaphore else entry
        pid = creator_pid(name)
        if pid is None or pid == os.getpid() or process_alive(pid):
            continue
        with contextlib.suppress(OSError):
            if semaphore:
                _multiprocessing.sem_unlink("/" + name)
            else:
                _posixshmem.shm_unlink("/" + name)
            removed += 1
    return removed


def creator_pid(name: str) -> int | None:
    """The pid in a manybrains segment name (``mb<pid>...``), or None for other names."""
    if not name.startswith(PREFIX):
        return None
    digits = name[len(PREFIX):len(PREFIX) + 10]
    end = next((i for i, c in enumerate(digits) if not c.isdigit()), len(digits))
    return int(digits[:end]) if end else None


def process_alive(pid: int) -> bool:
    """Whether a process with this pid exists (it may belong to another user)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
