"""The futures manybrains hands out: stdlib ``concurrent.futures.Future`` objects.

Done-callbacks run in an engine thread. The stdlib catches only ``Exception`` around them, so
a callback raising ``SystemExit`` would kill that thread and leave every other future pending
forever; here any callback failure is logged and the engine goes on.
"""

from __future__ import annotations

import contextlib
import logging
from concurrent.futures import Future, InvalidStateError
from typing import Any

LOGGER = logging.getLogger("manybrains")


class TaskFuture(Future[Any]):
    """A ``concurrent.futures.Future`` whose done-callbacks cannot break the engine."""

    def _invoke_callbacks(self) -> None:
        for callback in self._done_callbacks:  # type: ignore[attr-defined]
            try:
                callback(self)
            except BaseException:
                LOGGER.exception("a done-callback of %r raised", self)


def set_result(future: Future[Any], value: Any) -> None:
    """Resolve ``future`` unless the caller cancelled it meanwhile."""
    with contextlib.suppress(InvalidStateError):  # cancelled by its owner meanwhile
        future.set_result(value)


def set_exception(future: Future[Any], exc: BaseException) -> None:
    """Fail ``future`` unless the caller cancelled it meanwhile."""
    with contextlib.suppress(InvalidStateError):
        future.set_exception(exc)
