"""What a backend runs: one call, or one chunk of calls of the same function.

Every backend executes tasks with these functions, so a chunk behaves the same in a worker
process, a thread or the caller: items run in order, and the first item that raises stops the
chunk, keeping the results before it.

A coroutine function travels wrapped in :class:`AsyncCall`, a plain callable, so that a
backend without an event loop (a worker process, a thread) can run it: a single call runs on a
fresh loop, and a chunk runs its items *concurrently* on one loop, up to ``concurrency`` at
once. That keeps a chunk one engine task: a worker process holds thousands of waiting
coroutines while the engine sees one message each way.
"""

from __future__ import annotations

import array
import itertools
import time
import types
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ._serialize import PickledOnce

if TYPE_CHECKING:
    import asyncio

# asyncio and inspect are imported where used: every worker process imports this module, and
# most never see a coroutine.

DEFAULT_CONCURRENCY = 100


@dataclass(slots=True)
class Task:
    """``fn(*args, **kwargs)``, or ``fn`` applied to each of ``items`` when they are given."""

    fn: Callable[..., Any]
    args: tuple[Any, ...] = ()
    kwargs: dict[str, Any] = field(default_factory=dict)
    items: Sequence[Any] | None = None
    star: bool = False  # each item is an argument tuple: fn(*item)

    @property
    def size(self) -> int:
        """How many calls of ``fn`` this task makes."""
        return 1 if self.items is None else len(self.items)

    def parts(self) -> list[tuple[str, object]]:
        """The named pieces of the task, to say which one failed to pickle."""
        fn = unwrap(self.fn)
        named: list[tuple[str, object]] = [(f"the function {function_name(fn)}", fn)]
        named += [(f"positional argument {i}", a) for i, a in enumerate(self.args)]
        named += [(f"keyword argument {k!r}", v) for k, v in self.kwargs.items()]
        if self.items is not None:
            named += [(f"item {i} of the input", v) for i, v in enumerate(self.items)]
        return named


@dataclass(slots=True)
class ChunkOutcome:
    """What a chunk produced: the results in order, then the error that stopped it, if any."""

    values: list[Any]
    error: BaseException | None = None
    elapsed: float = 0.0  # seconds spent running the calls, to size later chunks


class PackedScalars:
    """A chunk's results of one number type, as one array for the trip back.

    Pickled one by one, 100,000 ``numpy.int64`` take 120 ms and 1.9 MB; as an array, a copy
    of 800 kB. Plain ``int`` results that fit in 64 bits go as an ``array.array`` too: the
    caller's thread, through which every result of a pool passes, rebuilds them about twice
    as fast as it unpickles them one by one. The caller gets the same type back for each
    value (``list(array)``, ``array.tolist()``).
    """

    __slots__ = ("array",)

    _SMALLEST = 64  # fewer ints than this travel as they are: packing them saves nothing

    def __init__(self, array: Any) -> None:
        self.array = array

    def __reduce__(self) -> tuple[type[PackedScalars], tuple[Any]]:
        return PackedScalars, (self.array,)

    @staticmethod
    def pack(values: list[Any]) -> list[Any] | PackedScalars:
        """``values`` as one array when they are ints, or numbers or booleans of one numpy
        type."""
        if not values:
            return values
        kind = type(values[0])
        if kind is int:
            return PackedScalars._pack_ints(values)
        if kind.__module__ != "numpy":
            return values  # the common case costs one type check
        import numpy as np  # already loaded: the values are numpy's

        if not issubclass(kind, (np.number, np.bool_)) or len(set(map(type, values))) != 1:
            return values
        return PackedScalars(np.fromiter(values, dtype=values[0].dtype, count=len(values)))

    @staticmethod
    def _pack_ints(values: list[Any]) -> list[Any] | PackedScalars:
        # bools and IntEnums (int subclasses) must come back as they went
        if len(values) < PackedScalars._SMALLEST or set(map(type, values)) != {int}:
            return values
        try:
            return PackedScalars(array.array("q", values))
        except OverflowError:  # past 64 bits: pickled one by one, as any int
            return values

    @staticmethod
    def unpack(values: list[Any] | PackedScalars) -> list[Any]:
        """The list :meth:`pack` was given, each value of its own type again."""
        if type(values) is list:
            return values
        packed = values.array  # type: ignore[union-attr]
        if type(packed) is array.array:
            result: list[Any] = packed.tolist()
            return result
        return list(packed)


class AsyncCall:
    """A coroutine function as a plain callable: each call runs on a fresh event loop.

    ``concurrency`` is how many items of one chunk may be awaited at once.
    """

    __slots__ = ("concurrency", "fn")

    def __init__(self, fn: Callable[..., Awaitable[Any]],
                 concurrency: int = DEFAULT_CONCURRENCY) -> None:
        self.fn = fn
        self.concurrency = concurrency

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        import asyncio

        return asyncio.run(_awaited(self.fn(*args, **kwargs)))

    def __repr__(self) -> str:
        return f"AsyncCall({function_name(self.fn)}, concurrency={self.concurrency})"


_CO_COROUTINE = 0x80  # inspect.CO_COROUTINE, without importing inspect


def is_coroutine_function(fn: object) -> bool:
    """Whether calling ``fn`` returns a coroutine: ``async def``, a partial of one, or an
    object whose ``__call__`` is ``async def``."""
    if type(fn) is types.FunctionType and not fn.__dict__:  # the common case, cheaply (no
        return bool(fn.__code__.co_flags & _CO_COROUTINE)  # inspect.markcoroutinefunction)
    import inspect

    if inspect.iscoroutinefunction(fn):
        return True
    inner = getattr(fn, "func", None)  # functools.partial
    if inner is not None:
        return is_coroutine_function(inner)
    return callable(fn) and inspect.iscoroutinefunction(type(fn).__call__)


def unwrap(fn: Callable[..., Any]) -> Callable[..., Any]:
    """The user's function inside the wrappers the pool adds (PickledOnce, AsyncCall)."""
    while isinstance(fn, (PickledOnce, AsyncCall)):
        fn = fn.fn
    return fn


def unpickled(fn: Callable[..., Any]) -> Callable[..., Any]:
    """``fn`` without its PickledOnce wrapper: a backend in this process calls it directly."""
    return fn.fn if isinstance(fn, PickledOnce) else fn


def run_task(task: Task) -> Any:
    """Run ``task`` here; a single call raises, a chunk returns a :class:`ChunkOutcome`."""
    if task.items is None:
        return task.fn(*task.args, **task.kwargs)
    return run_chunk(task.fn, task.items, task.star)


def run_chunk(fn: Callable[..., Any], items: Sequence[Any], star: bool) -> ChunkOutcome:
    """Apply ``fn`` to each item in order, stopping at the first item that raises."""
    coroutine_fn = _async_call(fn)
    if coroutine_fn is not None:
        import asyncio

        return asyncio.run(_run_chunk_on_loop(coroutine_fn, items, star))
    start = time.perf_counter()
    values: list[Any] = []
    # list.extend keeps what was appended before an exception, so the C-speed map() path
    # also tells which item failed (the one at len(values)) without a Python-level loop.
    try:
        values.extend(itertools.starmap(fn, items) if star else map(fn, items))
    except BaseException as exc:  # noqa: BLE001 - the error belongs to that item
        return ChunkOutcome(values, exc, time.perf_counter() - start)
    return ChunkOutcome(values, None, time.perf_counter() - start)


async def _run_chunk_on_loop(call: AsyncCall, items: Sequence[Any], star: bool
                             ) -> ChunkOutcome:
    import asyncio

    limit = asyncio.Semaphore(call.concurrency)
    return await run_chunk_async(call.fn, items, star, limit)


async def run_chunk_async(fn: Callable[..., Awaitable[Any]], items: Sequence[Any], star: bool,
                          limit: asyncio.Semaphore) -> ChunkOutcome:
    """Await ``fn`` on every item concurrently (``limit`` bounds how many run at once).

    The outcome is the one a sequential run would give: the results before the first item
    (in input order) that raised, then its error. Items after a failed one are cancelled or
    never started.
    """
    import asyncio

    start = time.perf_counter()
    state = _ChunkState(len(items))

    async def one(index: int, item: Any) -> None:
        async with limit:
            if index > state.first_error:
                return  # an earlier item already failed: a sequential run stops there
            try:
                state.values[index] = await (fn(*item) if star else fn(item))
            except BaseException as exc:  # noqa: BLE001 - the error belongs to that item
                state.fail(index, exc)

    state.tasks = [asyncio.ensure_future(one(i, item)) for i, item in enumerate(items)]
    # return_exceptions: an item cancelled while it waited for the limit must not fail the rest
    await asyncio.gather(*state.tasks, return_exceptions=True)
    stop = state.first_error
    return ChunkOutcome(state.values[:stop], state.error, time.perf_counter() - start)


class _ChunkState:
    __slots__ = ("error", "first_error", "tasks", "values")

    def __init__(self, size: int) -> None:
        self.values: list[Any] = [None] * size
        self.first_error = size
        self.error: BaseException | None = None
        self.tasks: list[asyncio.Future[None]] = []

    def fail(self, index: int, exc: BaseException) -> None:
        if index >= self.first_error:
            return  # e.g. cancelled because an earlier item failed
        self.first_error, self.error = index, exc
        for task in self.tasks[index + 1:]:
            task.cancel()


def _async_call(fn: object) -> AsyncCall | None:
    if isinstance(fn, PickledOnce):
        fn = fn.fn
    return fn if isinstance(fn, AsyncCall) else None


async def _awaited(awaitable: Awaitable[Any]) -> Any:
    return await awaitable


def task_label(task_id: int, fn: Callable[..., Any], calls: int | None = None) -> str:
    """``"task 17 (square)"``, or ``"task 18 (square, 40 calls)"`` for a chunk: how error
    messages and reports name a task."""
    more = "" if calls is None else f", {calls} calls"
    return f"task {task_id} ({function_name(unwrap(fn))}{more})"


def function_name(fn: object) -> str:
    """A function's qualified name, or its type's for other callables."""
    return getattr(fn, "__qualname__", None) or type(fn).__qualname__
