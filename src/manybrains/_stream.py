"""Map over submit, written once: a function over an iterable, a bounded window of chunks at a time.

Four callers stream this way: :class:`~manybrains.Pool` (``map``, ``imap``, ``amap``, ...),
:meth:`ProcessPoolExecutor.map <manybrains.ProcessPoolExecutor.map>` and the
``manybrains map`` command. Each hands over a :class:`Plan` (how big a chunk is, how one is
submitted, how many may be in flight, how to stop the rest) and gets the chunks' outcomes
back in input order or as they finish::

    items --chunks()--> Flow.fill() --plan.submit--> backend
                          ^                             | done-callback: notify(seq)
                          |                             v
    consumer <--yield-- Flow.step() <--Flow.settle(seq) (sizer, progress, on_failure)

The consumer cuts the next chunk only when one is yielded, so a 10-million-item generator is
read as the work goes and memory stays bounded: at most ``plan.window()`` chunks are in flight
or waiting to be yielded in order. Chunk sizes adapt from each finished chunk's timing, and
the window is asked again at every step because ``"auto"`` widens it once it knows the work.

:class:`Flow` holds every decision; the drivers differ only in how they wait for a chunk:
:func:`stream_chunks` and :class:`ResultIterator` block a thread, :func:`astream` awaits, so
an event loop keeps running.
"""

from __future__ import annotations

import concurrent.futures as cf
import contextlib
import dataclasses
import enum
import functools
import multiprocessing
import queue
import sys
import threading
import time
import weakref
from collections.abc import AsyncIterator, Callable, Generator, Iterable, Iterator, Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from types import TracebackType
from typing import TYPE_CHECKING, Any, Generic, NoReturn, TypeVar

from ._chunking import ChunkSizer, chunks
from ._task import ChunkOutcome
from .progress import NO_PROGRESS, Tracker

if TYPE_CHECKING:
    import asyncio

T = TypeVar("T")
SubmitChunk = Callable[[Sequence[Any]], "Future[ChunkOutcome]"]
# abort(futures, kill): stop the chunks left behind by an early exit; kill: running ones too
Abort = Callable[["list[Future[ChunkOutcome]]", bool], None]
# on_failure(chunk, error): the outcome of a chunk whose future raised, or raise
OnFailure = Callable[[Sequence[Any], Exception], ChunkOutcome]


def reraise(chunk: Sequence[Any], error: Exception) -> NoReturn:
    """A chunk that failed as a whole fails the stream with its error."""
    raise error


def in_its_place(chunk: Sequence[Any], error: Exception) -> ChunkOutcome:
    """A chunk that failed as a whole is raised where its results would have come, after
    the results before it (the stdlib's ``Executor.map``)."""
    return ChunkOutcome([], error)


def canceller(kill: Callable[[Future[Any]], object] | None) -> Abort:
    """An abort that cancels the chunks not started; on Ctrl-C (``kill``) it also stops the
    running ones with ``kill`` (a backend's ``cancel``), or lets them finish when None."""
    def abort(futures: list[Future[ChunkOutcome]], hard: bool) -> None:
        for future in futures:
            if hard and kill is not None:
                kill(future)
            else:
                future.cancel()
    return abort


def unbounded() -> int:
    """A window with room for every chunk: everything is submitted at once, as the stdlib's
    ``Executor.map`` does."""
    return sys.maxsize


@dataclass(slots=True)  # not frozen: that costs a microsecond on every map, however small
class Plan:
    """How one map runs: the seams its caller fills. ``on_failure`` runs in the consumer's
    thread, before the stream goes on."""

    sizer: ChunkSizer
    submit: SubmitChunk
    window: Callable[[], int]  # how many chunks may be in flight or waiting to be yielded
    abort: Abort
    on_failure: OnFailure = reraise  # the CLI runs a failed chunk again item by item
    deadline: float | None = None  # time.monotonic() past which waiting raises TimeoutError
    # Whether the calls after one that raised still run, submitted again as the rest of its
    # chunk (multiprocessing's imap goes on after an error); else a chunk stops there.
    continue_after_error: bool = False


class Step(enum.Enum):
    """What :meth:`Flow.step` says when it has no outcome to yield."""

    WAIT = "wait for a chunk to finish, then settle it"
    DONE = "every chunk was yielded"


class Flow:
    """The chunks of one stream: submitted, in flight, and finished but not yet yielded.

    As a context manager it hands the chunks still in flight to ``plan.abort`` on an early
    exit, with ``kill=True`` unless the exit is one of ``soft_exits`` (a ``break``, an
    error): a KeyboardInterrupt means the work must stop now, not run on in the background.
    """

    def __init__(self, items: Iterable[Any], plan: Plan, *, ordered: bool,
                 progress: Tracker = NO_PROGRESS, notify: Callable[[int], None] | None = None,
                 soft_exits: tuple[type[BaseException], ...] = (GeneratorExit, Exception)
                 ) -> None:
        self._source = chunks(items, plan.sizer)
        self._plan = plan
        self._sizer, self._submit, self._window = plan.sizer, plan.submit, plan.window
        self._ordered = ordered
        self.progress = progress
        self._finished: queue.SimpleQueue[int] = queue.SimpleQueue()
        self._notify = notify or self._finished.put  # notify(seq): chunk seq finished
        # wait(): block until a chunk finishes; its number. With no deadline (the common
        # case) that is the queue's own get, not one call more per chunk.
        self.wait: Callable[[], int] = (self._finished.get if plan.deadline is None
                                        else self._wait_until_deadline)
        self._soft_exits = soft_exits
        self._inflight: dict[int, tuple[Future[ChunkOutcome], Sequence[Any]]] = {}
        self._buffered: dict[int, ChunkOutcome] = {}
        # A resubmitted chunk's outcomes that finished while an earlier one of the same
        # chunk still waits to be yielded (rare: only after a call raised).
        self._later: dict[int, list[ChunkOutcome]] = {}
        self._submitted = self._emitted = 0
        self._exhausted = False

    def fill(self) -> None:
        """Submit chunks until the window is full or the input ends."""
        while not self._exhausted and (len(self._inflight) + len(self._buffered)
                                       < self._window()):
            try:
                chunk = next(self._source, None)
            except Exception as exc:  # noqa: BLE001 - the input's own error, raised in its place
                self._exhausted = True
                self._add(_failed_input(exc), ())
                return
            if chunk is None:
                self._exhausted = True
                return
            self._add(self._submit(chunk), chunk)

    def step(self) -> ChunkOutcome | Step:
        """Fill the window; then the next outcome to yield, or what to do instead."""
        self.fill()
        seq = self._emitted if self._ordered else next(iter(self._buffered), -1)
        outcome = self._buffered.pop(seq, None)
        if outcome is None:
            return Step.WAIT if self._inflight else Step.DONE
        if self._later and seq in self._later:
            self._buffered[seq] = self._next_later(seq)
        elif seq not in self._inflight:  # else the rest of this chunk is still running
            self._emitted += 1
        return outcome

    def _next_later(self, seq: int) -> ChunkOutcome:
        waiting = self._later[seq]
        outcome = waiting.pop(0)
        if not waiting:
            del self._later[seq]
        return outcome

    def futures(self) -> list[Future[ChunkOutcome]]:
        """The futures of the chunks in flight, in the order they were submitted."""
        return [future for _, (future, _) in sorted(self._inflight.items())]

    def busy(self) -> bool:
        """Whether a chunk it submitted has not finished yet."""
        return any(not future.done() for future, _ in list(self._inflight.values()))

    def wait_at_most(self, timeout: float) -> int | None:
        """The next chunk that finishes within ``timeout`` seconds, else None."""
        try:
            return self._finished.get(timeout=max(0.0, timeout))
        except queue.Empty:
            return None

    def _wait_until_deadline(self) -> int:
        seq = self.wait_at_most(self.remaining() or 0.0)
        if seq is None:
            raise cf.TimeoutError
        return seq

    def remaining(self) -> float | None:
        """Seconds left before the plan's deadline (None: no deadline)."""
        deadline = self._plan.deadline
        return None if deadline is None else max(0.0, deadline - time.monotonic())

    def settle(self, seq: int) -> None:
        """Chunk ``seq`` finished: learn from it, report it, keep it until its turn."""
        future, chunk = self._inflight.pop(seq)
        try:
            outcome = future.result()
        except Exception as error:  # noqa: BLE001 - the whole chunk failed: the plan decides
            outcome = self._plan.on_failure(chunk, error)
        else:
            if isinstance(outcome, _InputError):  # no call ran: nothing to learn or count
                self._buffered[seq] = outcome
                return
            self._sizer.record(len(outcome.values) + (outcome.error is not None),
                                    outcome.elapsed)
        self.progress.chunk_done(outcome)  # as chunks finish, not as they are yielded
        if outcome.error is not None and self._plan.continue_after_error:
            self._run_rest(seq, chunk[len(outcome.values) + 1:])
        if seq in self._buffered:
            self._later.setdefault(seq, []).append(outcome)
        else:
            self._buffered[seq] = outcome

    def _run_rest(self, seq: int, rest: Sequence[Any]) -> None:
        """The calls after the one that raised run too, as chunk ``seq``'s continuation:
        their results are yielded after its error, before the next chunk's."""
        if rest:
            self._track(seq, self._submit(rest), rest)

    def _add(self, future: Future[ChunkOutcome], chunk: Sequence[Any]) -> None:
        self._track(self._submitted, future, chunk)
        self._submitted += 1

    def _track(self, seq: int, future: Future[ChunkOutcome], chunk: Sequence[Any]) -> None:
        self._inflight[seq] = (future, chunk)
        future.add_done_callback(functools.partial(_report, self._notify, seq))

    def __enter__(self) -> Flow:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if exc_type is not None:
            self.abort(kill=not issubclass(exc_type, self._soft_exits))

    def abort(self, *, kill: bool) -> None:
        """Stop the chunks in flight: cancel those not started; with ``kill`` the running
        ones too."""
        self._plan.abort([future for future, _ in self._inflight.values()], kill)


# ---- the drivers -----------------------------------------------------------------------------


def stream_chunks(items: Iterable[Any], plan: Plan, *, ordered: bool,
                  progress: Tracker = NO_PROGRESS) -> Generator[ChunkOutcome, None, None]:
    """Yield every chunk's outcome, in input order or as chunks finish."""
    return _outcomes(Flow(items, plan, ordered=ordered, progress=progress))


class ResultIterator(Generic[T]):
    """A map's results one at a time: ``multiprocessing``'s ``IMapIterator``.

    A call that raised raises its error in its place. With ``plan.continue_after_error``
    (the calls after it in its chunk run too) the next ``next()`` goes on with the results
    after it; without it the iteration ends there, as a generator's would. An error of the input or
    of the stream itself always ends it.
    ``next(timeout)`` raises ``multiprocessing.TimeoutError`` when nothing arrives in time,
    and the iteration can go on. An iterator dropped or closed before its end cancels the
    chunks that have not started.
    """

    def __init__(self, items: Iterable[Any], plan: Plan, *, ordered: bool,
                 progress: Tracker = NO_PROGRESS) -> None:
        self._flow = flow = Flow(items, plan, ordered=ordered, progress=progress)
        self._values: Iterator[T] = iter(())
        self._error: BaseException | None = None
        self._done = False
        self._keep_going = plan.continue_after_error
        self._turn = threading.Lock()
        progress.__enter__()
        # Dropped unfinished: as a generator closed early (GeneratorExit), not started work
        # is cancelled; the finalizer holds the flow, never this iterator.
        self._abandon = weakref.finalize(self, _close_flow, flow, GeneratorExit())

    def __iter__(self) -> ResultIterator[T]:
        return self

    def __next__(self, timeout: float | None = None) -> T:
        """The next result; ``multiprocessing.TimeoutError`` if none comes within
        ``timeout`` seconds."""
        for value in self._values:  # the common case: a chunk's next value
            return value
        return self._advance(None if timeout is None else time.monotonic() + timeout)

    next = __next__  # multiprocessing's spelling, for it.next(timeout)

    @property
    def running(self) -> bool:
        """Whether calls of it are still running or queued (``multiprocessing``'s pool keeps
        an ``imap`` in its ``_cache`` until every result has arrived, read or not)."""
        return not self._done and self._flow.busy()

    def close(self) -> None:
        """Stop early: cancel the chunks that have not started."""
        if not self._done:
            self._finish(GeneratorExit())

    def stop(self, error: BaseException, *, kill: bool) -> bool:
        """Stop now: cancel the chunks not started, and with ``kill`` the running ones too;
        the next ``next()`` raises ``error``. Whether the iteration was still going."""
        if self._done:
            return False
        self._flow.abort(kill=kill)
        self._values, self._error = iter(()), error
        self._finish(error)
        return True

    def _advance(self, deadline: float | None) -> T:
        with self._turn:  # several threads may share one iterator, as the stdlib's
            for value in self._values:  # another thread refilled it meanwhile
                return value
            return self._step(deadline)

    def _step(self, deadline: float | None) -> T:
        error = self._error
        if error is not None:
            self._error = None
            self._raise(error)
        while not self._done:
            try:
                step = self._flow.step()
                if step is Step.WAIT:
                    seq = self._wait(deadline)
                    if seq is None:  # the iteration can go on: nothing is stopped
                        raise multiprocessing.TimeoutError("no result came within the timeout")
                    self._flow.settle(seq)
                    continue
            except multiprocessing.TimeoutError:
                raise
            except BaseException as exc:
                self._finish(exc)
                raise
            if step is Step.DONE:
                self._finish(None)
                break
            self._values, error = iter(step.values), step.error
            for value in self._values:
                self._error = error
                return value
            if error is not None:
                self._raise(error)
        raise StopIteration

    def _raise(self, error: BaseException) -> NoReturn:
        """A call's error, in its place; unless the plan goes on, the iteration ends there."""
        if not self._keep_going:
            self._finish(error)
        raise error

    def _wait(self, deadline: float | None) -> int | None:
        if deadline is None:
            return self._flow.wait()
        return self._flow.wait_at_most(deadline - time.monotonic())

    def _finish(self, exc: BaseException | None) -> None:
        if self._done:
            return
        self._done = True
        self._abandon.detach()
        _close_flow(self._flow, exc)


def _close_flow(flow: Flow, exc: BaseException | None) -> None:
    """Leave a flow as a ``with flow.progress, flow:`` block would on ``exc`` (None: its end)."""
    exc_type = None if exc is None else type(exc)
    try:
        flow.__exit__(exc_type, exc, None)
    finally:
        flow.progress.__exit__(exc_type, exc, None)


def submit_all(items: Iterable[Any], plan: Plan) -> list[Future[ChunkOutcome]]:
    """Every chunk submitted now, whatever ``plan.window`` says (``map_async``): their
    futures in input order. An error of the input is the last one's outcome, in its place."""
    flow = Flow(items, dataclasses.replace(plan, window=unbounded), ordered=True)
    flow.fill()
    return flow.futures()


def stream_submitted(items: Iterable[Any], plan: Plan) -> Iterator[Any]:
    """Every result in input order, from chunks submitted now (``Executor.map``).

    Nothing here keeps a result the caller was given: each is popped off its chunk's list
    before it is yielded, so a large result is freed as soon as the caller drops it.
    """
    flow = Flow(items, plan, ordered=True)
    flow.fill()
    return _released(_outcomes(flow))


def _released(outcomes: Generator[ChunkOutcome, None, None]) -> Iterator[Any]:
    with contextlib.closing(outcomes):  # an early exit cancels what has not started, now
        for outcome in outcomes:
            values, error = outcome.values, outcome.error
            values.reverse()
            while values:
                yield values.pop()
            if error is not None:
                raise error


def _outcomes(flow: Flow) -> Generator[ChunkOutcome, None, None]:
    with flow.progress, flow:  # the progress closes on every exit, showing what ended it
        while (step := flow.step()) is not Step.DONE:
            if step is Step.WAIT:
                flow.settle(flow.wait())
            else:
                yield step


async def astream(items: Iterable[Any], plan: Plan, *, ordered: bool,
                  progress: Tracker = NO_PROGRESS) -> AsyncIterator[Any]:
    """:func:`stream` for a coroutine: waiting for chunks never blocks the event loop.

    A cancelled consumer cancels the chunks not yet started; running ones finish.
    """
    import asyncio

    loop = asyncio.get_running_loop()
    finished: asyncio.Queue[int] = asyncio.Queue()

    def notify(seq: int) -> None:  # called in whichever thread finished the chunk
        loop.call_soon_threadsafe(finished.put_nowait, seq)

    flow = Flow(items, plan, ordered=ordered, progress=progress, notify=notify,
                soft_exits=(GeneratorExit, asyncio.CancelledError, Exception))
    with progress, flow:
        while (step := flow.step()) is not Step.DONE:
            if step is Step.WAIT:
                flow.settle(await _finished_chunk(finished, flow.remaining()))
                continue
            for value in step.values:
                yield value
            if step.error is not None:
                raise step.error


async def _finished_chunk(finished: asyncio.Queue[int], timeout: float | None) -> int:
    """The next chunk that finished; the sync driver's TimeoutError once the deadline passes."""
    import asyncio

    if timeout is None:
        return await finished.get()
    try:
        seq: int = await asyncio.wait_for(finished.get(), timeout)
    except asyncio.TimeoutError:  # before Python 3.11, not concurrent.futures' TimeoutError
        raise cf.TimeoutError from None
    return seq


def collect(outcomes: Generator[ChunkOutcome, None, None]) -> list[Any]:
    """Every result in a list, a chunk at a time (no per-item generator step: a map of a
    cheap function would spend more time yielding than computing)."""
    results: list[Any] | None = None
    with contextlib.closing(outcomes):  # on an error, chunks in flight are aborted now
        for outcome in outcomes:
            if results is None:
                results = outcome.values  # a chunk's own list: one copy fewer
            else:
                results.extend(outcome.values)
            if outcome.error is not None:
                raise outcome.error
    return [] if results is None else results


class _InputError(ChunkOutcome):
    """The input iterable raised while the next chunk was cut from it."""


def _failed_input(exc: Exception) -> Future[ChunkOutcome]:
    # Like the builtin map, and multiprocessing's imap: the results of the items before the
    # failing one come first, then its error, in its place in the output.
    future: Future[ChunkOutcome] = Future()
    future.set_result(_InputError([], exc))
    return future


def _report(notify: Callable[[int], None], seq: int, _: object) -> None:
    notify(seq)
