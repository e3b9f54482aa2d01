"""Indexing a shared object the way its buffer is indexed: ``len(a)``, ``a[i]``, ``a[i] = v``.

``Array`` wraps a ctypes array and ``SharedArray`` a numpy view; each says which buffer it
forwards to, and this class forwards the sequence protocol there, unlocked (as the stdlib's
``multiprocessing.Array`` does without its lock, and as numpy does).
"""

from __future__ import annotations

from typing import Any


class ItemAccess:
    """``len``, ``[index]`` and ``[index] = value`` on :attr:`_items`, the wrapped buffer."""

    __slots__ = ()

    @property
    def _items(self) -> Any:
        raise NotImplementedError

    def __len__(self) -> int:
        return len(self._items)

    def __getitem__(self, index: Any) -> Any:
        return self._items[index]

    def __setitem__(self, index: Any, value: Any) -> None:
        self._items[index] = value
