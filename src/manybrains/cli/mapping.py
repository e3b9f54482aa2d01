"""``manybrains map MODULE:FUNCTION [INPUT]``: a function over every line of a file or stdin.

Each line of INPUT (with --jsonl: each JSON Lines record) is one call FUNCTION(item); the
calls run on every core and each result is written as one JSON line, to stdout or --output:

    {"index": 0, "input": "photo.png", "result": [640, 480]}

"index" is the item's line number, from 0. An item whose call raises, runs past --timeout
or crashes its worker does not stop the run: it goes to --errors FILE with the error and
its traceback (without that option: one line on stderr), and the exit status is 1.
--resume skips the items whose results --output already holds, so an interrupted run goes
on where it stopped. What the function prints goes to stderr: stdout carries the results.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import importlib
import inspect
import json
import os
import sys
import time
import traceback
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future
from typing import IO, TYPE_CHECKING, Any, TypeVar

from .._chunking import ChunkSizer, window
from .._stream import Plan, canceller, stream_chunks
from .._task import ChunkOutcome
from ..progress import NO_PROGRESS, BarTracker, Tracker
from .errors import UsageError

if TYPE_CHECKING:
    from .._pool import Pool

T = TypeVar("T")

HELP = "apply MODULE:FUNCTION to each line (or JSON record) of a file, on every core"

Item = tuple[int, Any]  # (line number, the line or its JSON value)
# what one item gives: its JSON line, or the record of its error (a dict)
Written = str | dict[str, Any]


def add_parser(commands: Any, name: str) -> None:
    parser = commands.add_parser(name, help=HELP, description=(__doc__ or "").split("\n\n", 1)[1],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("function", metavar="MODULE:FUNCTION",
                        help="the function to call, e.g. mypackage.images:resize")
    parser.add_argument("input", metavar="INPUT", nargs="?", default="-",
                        help="a file of items, one per line (default: stdin)")
    parser.add_argument("--jsonl", action="store_true",
                        help="parse each line as JSON (automatic for .jsonl/.ndjson files)")
    parser.add_argument("-o", "--output", metavar="FILE", help="write results here, not stdout")
    parser.add_argument("--errors", metavar="FILE", help="write failed items here, as JSON lines")
    parser.add_argument("--resume", action="store_true",
                        help="skip items whose results are already in --output; append the rest")
    parser.add_argument("--workers", type=_positive_int, help="how many workers (default: CPUs)")
    parser.add_argument("--backend", default="processes",
                        help="processes (default), threads, asyncio, inline, auto or dask")
    order = parser.add_mutually_exclusive_group()
    order.add_argument("--ordered", dest="ordered", action="store_true", default=True,
                       help="write results in input order (default)")
    order.add_argument("--unordered", dest="ordered", action="store_false",
                       help="write results as they finish")
    parser.add_argument("--progress", action="store_true", help="show a progress bar on stderr")
    parser.add_argument("--timeout", type=_positive_float, metavar="SECONDS",
                        help="fail an item that runs longer than this")
    parser.add_argument("--retries", type=_non_negative_int, default=0,
                        help="run an item whose worker crashed again, up to this many times")


# ---- in the worker ---------------------------------------------------------------------------


def run_chunk(fn: Callable[[Any], Any], chunk: Sequence[Item]) -> ChunkOutcome:
    """Call ``fn`` on each item; encode results to JSON here, in parallel, not in the parent.

    An item that raises becomes the record of its error: the chunk goes on.
    """
    start = time.perf_counter()
    written = [_written(fn, index, item) for index, item in chunk]
    return ChunkOutcome(written, None, time.perf_counter() - start)


def _written(fn: Callable[[Any], Any], index: int, item: Any) -> Written:
    try:
        value = fn(item)
        if inspect.isawaitable(value):
            value = asyncio.run(_awaited(value))
        return json.dumps({"index": index, "input": item, "result": value}, ensure_ascii=False)
    # SystemExit too: the function's sys.exit() ends its item, not the run. Ctrl-C still
    # stops the run (KeyboardInterrupt is not caught).
    except (Exception, SystemExit) as exc:  # noqa: BLE001 - reported, the run goes on
        return _error_record(index, item, exc)


async def _awaited(value: Any) -> Any:
    return await value


def _error_record(index: int, item: Any, exc: BaseException) -> dict[str, Any]:
    return {"index": index, "input": item, "error": f"{type(exc).__name__}: {exc}",
            "traceback": "".join(traceback.format_exception(exc))}


# ---- in the parent ---------------------------------------------------------------------------


class _Sink:
    """Where results and failed items go."""

    def __init__(self, results: IO[str], errors: IO[str] | None) -> None:
        self._results = results
        self._errors = errors
        self.failed = 0

    def write(self, written: list[Written]) -> None:
        lines = [entry for entry in written if isinstance(entry, str)]
        if lines:
            self._results.write("\n".join(lines) + "\n")
        for entry in written:
            if not isinstance(entry, str):
                self.fail(entry)

    def fail(self, record: dict[str, Any]) -> None:
        self.failed += 1
        if self._errors is not None:
            self._errors.write(json.dumps(record, ensure_ascii=False) + "\n")
        else:
            print(f"manybrains map: item {record['index']} failed: {record['error']}",
                  file=sys.stderr)


class _Runner:
    """How the command's chunks run on the pool: each chunk is one task, and a chunk that
    fails as a whole (its worker crashed, or it timed out) is run again item by item, so
    only the culprit fails."""

    def __init__(self, pool: Pool, fn: Callable[[Any], Any], args: argparse.Namespace) -> None:
        self._pool = pool
        self._fn = fn
        self._timeout = args.timeout
        self._retries = args.retries

    def plan(self) -> Plan:
        # a per-item deadline needs one item per task
        sizer = ChunkSizer(self._pool.workers, None, fixed=1 if self._timeout else None)
        return Plan(sizer, self._submit, functools.partial(window, self._pool.workers),
                    canceller(self._pool.cancel), on_failure=self._one_by_one)

    def _submit(self, chunk: Sequence[Item]) -> Future[ChunkOutcome]:
        return self._pool.submit(run_chunk, self._fn, chunk, timeout=self._timeout,
                                 retries=self._retries)

    def _one_by_one(self, chunk: Sequence[Item], error: Exception) -> ChunkOutcome:
        if len(chunk) == 1:
            return ChunkOutcome([_error_record(*chunk[0], error)])
        futures = [self._submit([item]) for item in chunk]
        written: list[Written] = []
        for future, item in zip(futures, chunk, strict=True):
            try:
                written += future.result().values
            except Exception as exc:  # noqa: BLE001 - this item is the culprit
                written.append(_error_record(*item, exc))
        return ChunkOutcome(written)


class _ItemBar(BarTracker):
    """The bar counts the items whose call raised: their error records."""

    def chunk_done(self, outcome: ChunkOutcome) -> None:
        failed = sum(not isinstance(entry, str) for entry in outcome.values)
        self.advance(len(outcome.values), failed=failed)


def load_function(spec: str) -> Callable[[Any], Any]:
    """``package.module:function`` (or ``module:Class.method``), imported from here."""
    module_name, colon, attribute = spec.partition(":")
    if not colon or not module_name or not attribute:
        raise UsageError(f"expected MODULE:FUNCTION, got {spec!r}")
    if os.getcwd() not in sys.path:  # as ``python -m`` does; workers inherit sys.path
        sys.path.insert(0, os.getcwd())
    try:
        found: Any = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        raise UsageError(f"cannot import {module_name!r}: {exc}") from None
    for part in attribute.split("."):
        try:
            found = getattr(found, part)
        except AttributeError:
            raise UsageError(f"module {module_name!r} has no attribute {attribute!r}") from None
    if not callable(found):
        raise UsageError(f"{spec} is not callable")
    return found  # type: ignore[no-any-return]


def read_items(lines: IO[str], jsonl: bool, skip: set[int], sink: _Sink) -> Iterator[Item]:
    """The items to run: each line, or its JSON value; a line that is not JSON fails alone."""
    for index, line in enumerate(lines):
        if index in skip:
            continue
        text = line.rstrip("\r\n")
        if not jsonl:
            yield index, text
            continue
        if not text.strip():
            continue
        try:
            yield index, json.loads(text)
        except ValueError as exc:
            sink.fail(_error_record(index, text, exc))


def finished_indices(path: str) -> set[int]:
    """The indices already in an output file; a last line cut short is removed."""
    try:
        with open(path, "rb+") as file:
            data = file.read()
            complete = data.rfind(b"\n") + 1
            if complete < len(data):  # an interrupted run stopped mid-line
                file.truncate(complete)
    except FileNotFoundError:
        return set()
    indices = set()
    for line in data[:complete].splitlines():
        try:
            indices.add(int(json.loads(line)["index"]))
        except (ValueError, KeyError, TypeError):
            continue
    return indices


def _open(stack: contextlib.ExitStack, path: str | None, mode: str) -> IO[str] | None:
    if path is None or path == "-":
        return None
    try:
        return stack.enter_context(open(path, mode, encoding="utf-8", errors="replace"))
    except OSError as exc:
        raise UsageError(f"cannot open {path}: {exc.strerror}") from None


def _count_lines(path: str) -> int | None:
    if path == "-":
        return None
    with open(path, "rb") as file:
        return sum(chunk.count(b"\n") for chunk in iter(lambda: file.read(1 << 20), b""))


def run(args: argparse.Namespace) -> int:
    if args.resume and args.output is None:
        raise UsageError("--resume needs --output FILE (the results to resume from)")
    fn = load_function(args.function)
    skip = finished_indices(args.output) if args.resume else set()
    with contextlib.ExitStack() as stack:
        source = _open(stack, args.input, "r") or sys.stdin
        results = _open(stack, args.output, "a" if args.resume else "w") or sys.stdout
        sink = _Sink(results, _open(stack, args.errors, "w"))
        # stdout carries the results: what the function prints (in a worker process or in
        # a thread here) goes to stderr
        stack.enter_context(contextlib.redirect_stdout(sys.stderr))
        pool = stack.enter_context(_pool(args))
        items = read_items(source, args.jsonl or args.input.endswith((".jsonl", ".ndjson")),
                           skip, sink)
        outcomes = stream_chunks(items, _Runner(pool, fn, args).plan(), ordered=args.ordered,
                                 progress=_tracker(args, len(skip)))
        for outcome in stack.enter_context(contextlib.closing(outcomes)):
            sink.write(outcome.values)
        results.flush()
    if sink.failed:
        where = f"; see {args.errors}" if args.errors else ""
        print(f"manybrains map: {sink.failed} item(s) failed{where}", file=sys.stderr)
    return 1 if sink.failed else 0


def _pool(args: argparse.Namespace) -> Pool:
    import manybrains as mb

    try:
        return mb.Pool(args.workers, backend=args.backend)
    except LookupError as exc:  # BackendNotFound: unknown, or its extra is not installed
        raise UsageError(str(exc)) from None


def _tracker(args: argparse.Namespace, skipped: int) -> Tracker:
    if not args.progress:
        return NO_PROGRESS
    total = _count_lines(args.input)
    return _ItemBar({"unit": "item", "file": sys.stderr},
                    None if total is None else max(0, total - skipped))


def _positive_int(text: str) -> int:
    value = _parse(int, text, "a whole number")
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {text}")
    return value


def _non_negative_int(text: str) -> int:
    value = _parse(int, text, "a whole number")
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, got {text}")
    return value


def _positive_float(text: str) -> float:
    value = _parse(float, text, "a number of seconds")
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be more than 0, got {text}")
    return value


def _parse(kind: Callable[[str], T], text: str, what: str) -> T:
    try:
        return kind(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}") from None
