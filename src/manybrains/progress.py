"""Progress of a map: a tqdm bar (terminal or Jupyter), or snapshots handed to a callback.

``progress=`` on ``map``/``imap``/``amap``/``aimap`` takes:

- ``True``: a ``tqdm.auto`` bar (a widget in Jupyter, text on stderr elsewhere);
- a dict: the same bar, built with these tqdm options (``{"desc": "resize", "unit": "img"}``);
- a callable: called with a :class:`ProgressSnapshot` each time a chunk finishes and once
  at the end (``snapshot.finished``), for a custom display or a log line.

The stream reports each finished chunk in the consumer's thread, so the cost is one call per
chunk, not per item: chunks are sized to run about 25 ms, which keeps the bar moving on tiny
tasks while a map of long tasks (chunks of one) advances on every item. A bar counts failed
items in its postfix and is closed on every exit: end of input, an error, a ``break``,
Ctrl-C.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from types import TracebackType

    from ._task import ChunkOutcome

__all__ = ("NO_PROGRESS", "ProgressOption", "ProgressSnapshot", "Tracker", "tracker")


@dataclass(frozen=True)
class ProgressSnapshot:
    """Where a map stands: what a progress callback receives."""

    done: int  # items finished, failed ones included
    failed: int
    total: int | None  # None when the input's length is not known
    elapsed: float  # seconds since the map started
    finished: bool = False  # the last snapshot of this map

    @property
    def rate(self) -> float:
        """Items finished per second so far."""
        return self.done / self.elapsed if self.elapsed > 0 else 0.0

    @property
    def remaining(self) -> float | None:
        """Estimated seconds left, when the total is known and something has finished."""
        if self.total is None or not self.done:
            return None
        return max(0, self.total - self.done) / self.rate


ProgressOption = bool | Mapping[str, Any] | Callable[[ProgressSnapshot], object] | None


class Tracker:
    """Follows one map; this base class shows nothing (``progress=False``)."""

    def __init__(self, total: int | None = None) -> None:
        self.total = total
        self.done = 0
        self.failed = 0
        self._started = 0.0
        self._last_error: BaseException | None = None

    def chunk_done(self, outcome: ChunkOutcome) -> None:
        """A chunk finished: its values, and the item error that stopped it, if any."""
        failed = outcome.error is not None
        if failed:
            self._last_error = outcome.error
        self.advance(len(outcome.values) + failed, failed=int(failed))

    def advance(self, done: int, failed: int = 0) -> None:
        """``done`` more items finished, ``failed`` of them with an error."""
        self.done += done
        self.failed += failed
        self._show()

    def snapshot(self, finished: bool = False) -> ProgressSnapshot:
        return ProgressSnapshot(self.done, self.failed, self.total,
                                time.perf_counter() - self._started, finished)

    def __enter__(self) -> Tracker:
        self._started = time.perf_counter()
        self._open()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        # An error that failed a whole chunk (a crash, a timeout) was never counted.
        if isinstance(exc, Exception) and exc is not self._last_error:
            self.failed += 1
        self._close(exc)

    # what subclasses show
    def _open(self) -> None:
        pass

    def _show(self) -> None:
        pass

    def _close(self, exc: BaseException | None) -> None:
        pass


NO_PROGRESS = Tracker()  # shared: with nothing shown, its counters are never read


class CallbackTracker(Tracker):
    """Hands a :class:`ProgressSnapshot` to a callback after every chunk and at the end."""

    def __init__(self, callback: Callable[[ProgressSnapshot], object],
                 total: int | None) -> None:
        super().__init__(total)
        self._callback = callback

    def _show(self) -> None:
        self._callback(self.snapshot())

    def _close(self, exc: BaseException | None) -> None:
        self._callback(self.snapshot(finished=True))


class BarTracker(Tracker):
    """A ``tqdm.auto`` bar, created when the map starts and closed however it ends."""

    def __init__(self, options: Mapping[str, Any], total: int | None) -> None:
        super().__init__(total)
        self._options = {"total": total, "unit": "task", "miniters": 1, "dynamic_ncols": True,
                         **options}
        self._bar: Any = None

    def _open(self) -> None:
        self._bar = _bar_class()(**self._options)

    def _show(self) -> None:
        bar = self._bar
        if self.failed:
            bar.set_postfix(failed=self.failed, refresh=False)
        bar.update(self.done - bar.n)

    def _close(self, exc: BaseException | None) -> None:
        bar = self._bar
        if self.failed:
            bar.set_postfix(failed=self.failed, refresh=False)
        if isinstance(exc, KeyboardInterrupt):
            bar.set_description_str("interrupted", refresh=False)
        bar.close()


def tracker(option: ProgressOption, total: int | None) -> Tracker:
    """The tracker for a ``progress=`` argument; raises TypeError for anything else."""
    if option is None or option is False:
        return NO_PROGRESS
    if option is True:
        return BarTracker({}, total)
    if isinstance(option, Mapping):
        return BarTracker(option, total)
    if callable(option):
        return CallbackTracker(option, total)
    raise TypeError("progress must be True/False, a dict of tqdm options or a callable "
                    f"taking a ProgressSnapshot, got {type(option).__name__}")


_BAR_CLASS: Any = None


def _bar_class() -> Any:
    """tqdm.auto's bar without its monitor thread, which outlives every bar.

    The monitor only forces a redraw of bars that stopped being updated; ours are updated
    on every chunk, and a thread left running would surprise anyone counting threads.
    """
    global _BAR_CLASS
    if _BAR_CLASS is None:
        from tqdm.auto import tqdm

        _BAR_CLASS = type("ManybrainsBar", (tqdm,), {"monitor_interval": 0})
    return _BAR_CLASS
