"""Checked by mypy (tests/contract/test_typing.py), never run: what the pool's methods
return, for plain and for ``async def`` functions."""

from __future__ import annotations

from collections.abc import AsyncIterator
from concurrent.futures import Future

from typing_extensions import assert_type

import manybrains as mb


def square(x: int) -> int:
    return x * x


async def fetch(x: int) -> str:
    return str(x)


def sync_calls(pool: mb.Pool) -> None:
    assert_type(pool.submit(square, 2), Future[int])
    assert_type(pool.submit(fetch, 2), Future[str])
    assert_type(pool.map(square, [1]), list[int])
    assert_type(pool.map(fetch, [1]), list[str])
    assert_type(pool.starmap(fetch, [(1,)]), list[str])
    assert_type(pool.imap(square, [1]), mb.ResultIterator[int])
    assert_type(pool.imap(fetch, [1]), mb.ResultIterator[str])
    assert_type(pool.istarmap(fetch, [(1,)]), mb.ResultIterator[str])
    assert_type(pool.imap_unordered(square, [1]).next(timeout=1), int)
    assert_type(pool.aimap(fetch, [1]), AsyncIterator[str])
    assert_type(pool.statistics().workers[0].busy_s, float)


def module_level_calls() -> None:
    assert_type(mb.submit(square, 2), Future[int])
    assert_type(mb.submit(fetch, 2), Future[str])
    assert_type(mb.map(square, [1]), list[int])
    assert_type(mb.map(fetch, [1]), list[str])
    assert_type(mb.imap(square, [1]), mb.ResultIterator[int])
    assert_type(mb.imap(fetch, [1]), mb.ResultIterator[str])


async def async_calls(pool: mb.Pool) -> None:
    assert_type(await pool.asubmit(fetch, 2), str)
    assert_type(await pool.asubmit(square, 2), int)
    assert_type(await pool.amap(fetch, [1]), list[str])
    assert_type(await pool.amap(square, [1]), list[int])
