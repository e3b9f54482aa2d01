"""Every method of the stdlib pools takes the same parameters on manybrains': the same names,
kinds and defaults, in the same order, on the Python running the suite; manybrains' own
options only come after them. A program that calls ``pool.apply_async(func=f, args=(1,))``
or ``pool.starmap(func=f, iterable=pairs)`` must run after the import swap."""

from __future__ import annotations

import concurrent.futures
import inspect
import multiprocessing.pool

import pytest

import manybrains as mb
from manybrains._stream import ResultIterator

# Where a default differs on purpose, and why (docs/drop-in.md says the same).
DIFFERENT_DEFAULTS = {
    # The stdlib sends each item in a message of its own; "auto" sizes chunks from measured
    # call times. The results, their order and where an error is raised are the same.
    ("imap", "chunksize"): "auto",
    ("imap_unordered", "chunksize"): "auto",
}
# Public names of the stdlib class that are not part of what a program calls.
NOT_API = {"Process"}  # multiprocessing's hook for its own worker class

# (stdlib class, manybrains class, whether a program constructs it itself)
PAIRS = [(multiprocessing.pool.Pool, mb.Pool, True),
         (concurrent.futures.ProcessPoolExecutor, mb.ProcessPoolExecutor, True),
         (multiprocessing.pool.AsyncResult, mb.AsyncResult, False),
         (multiprocessing.pool.IMapIterator, ResultIterator, False)]  # what imap returns


def _methods(cls: type, constructed: bool) -> list[str]:
    names = [name for name in vars(cls) if not name.startswith("_") and name not in NOT_API]
    dunders = ("__init__", "__enter__", "__exit__", "__next__", "__iter__")
    names += [name for name in dunders if name in vars(cls)
              and (constructed or name != "__init__")]
    return [name for name in names if callable(getattr(cls, name))]


CASES = [(stdlib, ours, name) for stdlib, ours, constructed in PAIRS
         for name in _methods(stdlib, constructed)]


@pytest.mark.parametrize(("stdlib", "ours", "name"), CASES,
                         ids=[f"{s.__name__}.{n}" for s, _, n in CASES])
def test_the_stdlib_parameters_come_first_with_the_same_names_kinds_and_defaults(
        stdlib, ours, name):
    theirs = list(inspect.signature(getattr(stdlib, name)).parameters.values())
    mine = list(inspect.signature(getattr(ours, name)).parameters.values())
    assert len(mine) >= len(theirs), f"{name}: {mine} lacks parameters of {theirs}"
    for their, my in zip(theirs, mine, strict=False):
        assert (my.name, my.kind) == (their.name, their.kind), f"{name}: {my} is not {their}"
        expected = DIFFERENT_DEFAULTS.get((name, their.name), their.default)
        assert my.default == expected, f"{name}({their.name}): default {my.default!r}"
    for extra in mine[len(theirs):]:  # manybrains' own options: never positional
        assert extra.kind in (inspect.Parameter.KEYWORD_ONLY, inspect.Parameter.VAR_POSITIONAL,
                              inspect.Parameter.VAR_KEYWORD), f"{name}: extra {extra}"


def test_the_documented_default_differences_are_still_different():
    # A difference that no longer exists must leave the table (and docs/drop-in.md).
    for (name, parameter), value in DIFFERENT_DEFAULTS.items():
        assert inspect.signature(getattr(mb.Pool, name)).parameters[parameter].default == value


def test_every_method_is_callable_by_the_stdlib_keyword_names(pool_keywords):
    pool, seen = pool_keywords
    assert pool.apply(func=divmod, args=(7, 2), kwds={}) == (3, 1)
    result = pool.apply_async(func=divmod, args=(9, 4), kwds={}, callback=seen.append,
                              error_callback=seen.append)
    assert result.get(timeout=30) == (2, 1) and seen == [(2, 1)]
    assert pool.map(func=abs, iterable=[-1, -2], chunksize=1) == [1, 2]
    assert pool.map_async(func=abs, iterable=[-3], chunksize=None, callback=None,
                          error_callback=None).get(timeout=30) == [3]
    assert list(pool.imap(func=abs, iterable=[-4], chunksize=1)) == [4]
    assert list(pool.imap_unordered(func=abs, iterable=[-5], chunksize=1)) == [5]
    assert pool.starmap(func=pow, iterable=[(2, 3)], chunksize=None) == [8]
    assert pool.starmap_async(func=pow, iterable=[(3, 2)], chunksize=1, callback=None,
                              error_callback=None).get(timeout=30) == [9]


@pytest.fixture
def pool_keywords():
    with mb.Pool(processes=1, initializer=None, initargs=(), maxtasksperchild=None,
                 context=None) as pool:
        yield pool, []
