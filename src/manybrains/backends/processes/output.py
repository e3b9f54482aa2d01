"""Workers' ``logging`` records and ``print`` output, delivered in the parent process.

A worker process inherits file descriptors 1 and 2, so its prints already reach the terminal
the pool started in, but nowhere else: not a redirected ``sys.stdout`` (pytest's capture,
``contextlib.redirect_stdout``), not a Jupyter cell, and its logging records never reach the
parent's handlers. So the worker ships both over the pipe it already has to the supervisor::

    worker process                              parent, supervisor thread
    logging.info("...") -> _ShippingHandler ──┐
    print("...")  -> line-buffered stream ────┼─► pipe ─► deliver_log: the parent's handlers
                                              │           deliver_output: sys.stdout / stderr
    task result ──────────────────────────────┘           (then the task's future resolves)

One pipe per worker keeps each worker's records and lines in the order it wrote them, and
they arrive before the result of the task that wrote them. Nothing is sent when a task
neither logs nor prints. Output written to the file descriptors directly (C code, a
subprocess) still goes straight to them.
"""

from __future__ import annotations

import contextlib
import io
import logging
import pickle
import sys
import threading
from collections.abc import Callable
from typing import Any, TextIO

__all__ = ("SEND_LOCK", "deliver_log", "deliver_output", "install", "parent_levels")

# Results (worker main thread) and records/lines (any thread of the worker) share one pipe:
# each message is sent whole under this lock.
SEND_LOCK = threading.Lock()

STDOUT, STDERR = 1, 2
ShipLog = Callable[[bytes], None]
ShipOutput = Callable[[int, bytes], None]


# ---- parent side: what the worker should log ------------------------------------------------


def parent_levels() -> dict[str, Any]:
    """The parent's logging levels, so that a worker ships only records the parent keeps."""
    manager = logging.root.manager
    loggers = [(name, logger) for name, logger in list(manager.loggerDict.items())
               if isinstance(logger, logging.Logger)]
    levels = {name: logger.level for name, logger in loggers if logger.level != logging.NOTSET}
    handled = [name for name, logger in loggers if logger.handlers]
    if logging.root.handlers:
        handled.append(ROOT)
    return {"root": logging.root.level, "loggers": levels, "disable": manager.disable,
            "handled": handled}


ROOT = "root"


# ---- worker side ------------------------------------------------------------------------------


def install(ship_log: ShipLog, ship_output: ShipOutput, levels: dict[str, Any] | None) -> None:
    """In a worker: send logging records and stdout/stderr lines to the parent."""
    _install_logging(ship_log, levels)
    sys.stdout = _shipping_stream(ship_output, STDOUT, sys.stdout)
    sys.stderr = _shipping_stream(ship_output, STDERR, sys.stderr)


def uninstall() -> None:
    """Undo :func:`install` (in a process forked from a worker: it has no pipe of its own)."""
    for name in ("stdout", "stderr"):
        raw = getattr(getattr(getattr(sys, name), "buffer", None), "raw", None)
        if isinstance(raw, _ShippingRaw) and raw._original is not None:
            setattr(sys, name, raw._original)
    for logger in _loggers():
        for handler in list(logger.handlers):
            if isinstance(handler, _ShippingHandler):
                logger.removeHandler(handler)


def flush() -> None:
    """Send what the worker's streams still hold (a last line without its newline)."""
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(OSError, ValueError, AttributeError):
            stream.flush()


def _install_logging(ship: ShipLog, levels: dict[str, Any] | None) -> None:
    root = logging.getLogger()
    if levels is not None:
        root.setLevel(levels["root"])
        for name, level in levels["loggers"].items():
            logging.getLogger(name).setLevel(level)
        logging.disable(levels["disable"])
    # Handlers inherited through fork, or added by an import, would write from here as well.
    for logger in _loggers():
        for handler in list(logger.handlers):
            logger.removeHandler(handler)
    # The shipping handler stands in for the parent's handlers, on the loggers that have
    # some there: a forked worker of the stdlib's pools holds copies of them in those places.
    # Where the parent has none, neither does such a worker: its root logger stays empty
    # (logging.basicConfig() in an initializer works), and a record that no handler takes
    # goes to logging's last resort, which writes to sys.stderr, which reaches the parent.
    shipping = _ShippingHandler(ship)
    for name in [ROOT] if levels is None else levels.get("handled", [ROOT]):
        logging.getLogger(None if name == ROOT else name).addHandler(shipping)


def _loggers() -> list[logging.Logger]:
    found = list(logging.root.manager.loggerDict.values())
    return [logging.root, *(logger for logger in found if isinstance(logger, logging.Logger))]


class _ShippingHandler(logging.Handler):
    """Sends each record, made picklable, to the parent."""

    def __init__(self, ship: ShipLog) -> None:
        super().__init__()
        self._ship = ship
        self._sent = threading.local()  # the record last sent by this thread

    def emit(self, record: logging.LogRecord) -> None:
        # On two loggers of one record's path, it is sent once: the parent hands it to its
        # logger, from which it propagates as it would here.
        if getattr(self._sent, "record", None) is record:
            return
        self._sent.record = record
        try:
            self._ship(pickle.dumps(_portable(record), protocol=pickle.HIGHEST_PROTOCOL))
        except Exception:  # noqa: BLE001 - logging must never fail the task
            self.handleError(record)


def _portable(record: logging.LogRecord) -> dict[str, Any]:
    """The record's attributes with the message formatted and the traceback as text.

    Arguments and exception objects may not pickle; what the parent needs is the text.
    """
    state = dict(record.__dict__)
    state["msg"] = record.getMessage()
    state["args"] = None
    if record.exc_info:
        state["exc_text"] = record.exc_text or _FORMATTER.formatException(record.exc_info)
    state["exc_info"] = None
    try:
        pickle.dumps(state)
    except Exception:  # noqa: BLE001 - an unpicklable ``extra=`` value: keep plain values
        state = {k: v if isinstance(v, (str, int, float, bool, type(None))) else repr(v)
                 for k, v in state.items()}
    return state


_FORMATTER = logging.Formatter()


class _ShippingRaw(io.RawIOBase):
    """The bytes under a worker's sys.stdout or sys.stderr: each write is one message."""

    def __init__(self, ship: ShipOutput, channel: int, original: TextIO | None) -> None:
        super().__init__()
        self._ship = ship
        self._channel = channel
        self._original = original

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        payload = bytes(data)
        with contextlib.suppress(OSError, ValueError):  # the parent is gone; nobody reads
            self._ship(self._channel, payload)
        return len(payload)

    def fileno(self) -> int:
        # C code and subprocesses asking for the descriptor get the inherited one.
        if self._original is None:
            raise io.UnsupportedOperation("fileno")
        return self._original.fileno()

    def isatty(self) -> bool:
        try:
            return bool(self._original is not None and self._original.isatty())
        except (OSError, ValueError):
            return False


def _shipping_stream(ship: ShipOutput, channel: int, original: TextIO | None) -> TextIO:
    # Line-buffered, as on a terminal: a line is sent when it is complete, so a print just
    # before a task hangs or crashes is not lost in a buffer.
    raw = _ShippingRaw(ship, channel, original)
    return io.TextIOWrapper(io.BufferedWriter(raw), encoding="utf-8",  # the parent re-encodes
                            errors="backslashreplace", line_buffering=True)


# ---- parent side: delivery, on the supervisor thread ------------------------------------------


def deliver_log(payload: bytes | memoryview) -> None:
    """Hand a worker's record to the parent's logger of the same name (and its handlers)."""
    try:
        record = logging.makeLogRecord(pickle.loads(payload))
        logger = logging.getLogger(None if record.name == ROOT else record.name)
        if logger.isEnabledFor(record.levelno):
            logger.handle(record)
    except Exception:  # a bad record or handler must not stop the engine
        logging.getLogger("manybrains").debug("cannot deliver a worker's record", exc_info=True)


def deliver_output(channel: int, payload: bytes | memoryview) -> None:
    """Write a worker's output to the parent's current sys.stdout or sys.stderr."""
    stream = sys.stderr if channel == STDERR else sys.stdout
    if stream is None:
        return
    try:
        stream.write(bytes(payload).decode("utf-8", "replace"))
        stream.flush()
    except Exception:  # noqa: BLE001 - a closed or broken stdout must not stop the engine
        pass
