"""How many waiting calls of one function run at once: a limit that follows the other side.

Calls that mostly wait usually wait on something: a server, an API, a database. Opening a
connection for every call at once overflows a small listen backlog, trips a rate limit (HTTP
429) or queues inside the server, so ``"auto"`` does not jump to its maximum. Like TCP's
congestion control (and Netflix's concurrency-limits), the limit is *additive increase,
multiplicative decrease*, fed by each finished call::

    a call succeeds, latency holds     slow start: +1/2 a call (x1.5 a round trip: a queue
                                       shows a round trip late, and an overflowing backlog
                                       costs a timeout), later +1 a round trip; only while
                                       the limit is in use
    latency passes 1.5x its best       slow start ends (as TCP's HyStart does): a queue is
                                       starting, grow by one a round trip from here
    latency (smoothed) climbs past     in flight x best / latency (at most halved): a queue
      2x its best                      is building on the other side, and about that many
                                       calls kept up with it
    a call fails with an overload      x0.7   (connection refused/reset, a timeout, HTTP 429
      error                                    or 503); run again, later, only when the
                                               other side surely did not act on it
                                               (refused, 429, 503: see safe_to_run_again)
    at most one decrease a round trip: calls started before the last one tell nothing new

A call that waits on a clock (``time.sleep``: there is no other side) starts at the cap; any
other waiting call starts at ``INITIAL`` and grows. ``Pool(concurrency=N)`` is the cap.
"""

from __future__ import annotations

import math
import statistics
import threading
import time
from collections import deque
from typing import Any

INITIAL = 4  # a listen backlog of 5 (Python's http.server default) takes a burst this big
LATENCY_CLIMB = 2.0
SLOW_START_EXIT = 1.5
SLOW_START_STEP = 0.5
OVERLOAD_CUT = 0.7
_SMOOTHING = 0.25  # weight of each new latency in the running average
_LATENCY_MEMORY = 0.9  # how quickly the best latency forgets (per decrease), see _cut
_OVERLOAD_STATUS = frozenset({429, 503})  # too many requests; service unavailable
_SETTLED_OVER = 64  # calls: "settled" is the median limit over the latest this many


class ConcurrencyLimit:
    """The number of calls allowed in flight, adjusted from each finished call."""

    def __init__(self, cap: int, *, initial: int = INITIAL, unbounded_wait: bool = False
                 ) -> None:
        self.cap = cap
        self._lock = threading.Lock()
        self._limit = float(cap if unbounded_wait else min(cap, initial))
        self._slow_start = not unbounded_wait
        # Slower calls on a clock mean this process is short of CPU, not the other side full.
        self._watch_latency = not unbounded_wait
        self._best_latency = math.inf
        self._latency: float | None = None  # smoothed: one slow call is no queue
        self._last_cut = 0.0  # when the limit last went down
        self.peak = 0  # most calls seen in flight at once
        self._history: deque[int] = deque(maxlen=_SETTLED_OVER)  # AIMD saw-tooths: a median
        self.overloads = 0
        self.cuts: dict[str, int] = {}  # decreases by cause: an overload error, or "latency"
        self.why = (f"started at {cap} (the cap): its calls sleep on a clock, nothing on the "
                    "other side to overwhelm" if unbounded_wait else
                    f"started at {int(self._limit)} and growing while calls succeed and "
                    "latency holds")

    @property
    def limit(self) -> int:
        return max(1, int(self._limit))

    def started(self, in_flight: int) -> None:
        self.peak = max(self.peak, in_flight)

    def finished(self, started: float, latency: float, in_flight: int, overload: str | None
                 ) -> None:
        """A call started at ``started`` (monotonic), with ``in_flight`` calls running then
        (itself included), finished after ``latency`` seconds; ``overload`` names its overload
        error, if it failed with one."""
        with self._lock:
            self._history.append(self.limit)
            fresh = started >= self._last_cut  # it began under the current limit
            if overload is not None:
                self.overloads += 1
                if fresh:
                    self._cut(OVERLOAD_CUT, in_flight, f"a call failed with {overload}",
                              overload)
                return
            self._best_latency = min(self._best_latency, latency)
            smooth = self._latency = latency if self._latency is None else (
                self._latency + _SMOOTHING * (latency - self._latency))
            if self._watch_latency and min(smooth, latency) > SLOW_START_EXIT * self._best_latency:
                self._slow_start = False
            if self._watch_latency and min(smooth, latency) > LATENCY_CLIMB * self._best_latency:
                if fresh:
                    self._cut(max(0.5, self._best_latency / smooth), in_flight,
                              f"latency climbed to "
                              f"{smooth / self._best_latency:.1f}x its best "
                              f"({self._best_latency * 1e3:.1f} ms)", "latency")
                return
            if in_flight * 2 < self._limit:  # not in use: success says nothing about more
                return
            self._limit = min(float(self.cap), self._limit + (
                SLOW_START_STEP if self._slow_start else 1.0 / self._limit))

    def _cut(self, factor: float, in_flight: int, cause: str, kind: str) -> None:
        before = self.limit
        self.cuts[kind] = self.cuts.get(kind, 0) + 1
        self._limit = max(1.0, min(self._limit, float(in_flight)) * factor)
        self._slow_start = False
        self._last_cut = time.monotonic()
        # The best latency may have been a lucky one; forget it a little so that the limit is
        # not pinned down for ever by one fast call.
        self._best_latency /= _LATENCY_MEMORY
        self.why = (f"lowered from {before} to {self.limit} when {cause} at {in_flight} in "
                    "flight; raised by one a round trip while calls succeed and latency holds")

    def describe(self) -> dict[str, Any]:
        with self._lock:
            settled = int(statistics.median(self._history)) if self._history else self.limit
            return {"limit": self.limit, "settled": settled, "cap": self.cap,
                    "peak_in_flight": self.peak, "overloads": self.overloads,
                    "cuts": dict(self.cuts), "why": self.why}


def overload_error(error: BaseException | None) -> str | None:
    """What says that ``error`` (or an error it was raised from) means "too much at once":
    a refused, reset or timed-out connection, or an HTTP 429 or 503 answer. None otherwise."""
    seen = 0
    while error is not None and seen < 6:  # requests/httpx wrap the socket's error
        if isinstance(error, (ConnectionError, TimeoutError)):
            return type(error).__name__
        status = _status(error)
        if status in _OVERLOAD_STATUS:
            return f"{type(error).__name__} {status}"
        reason = getattr(error, "reason", None)  # urllib.error.URLError
        nested = reason if isinstance(reason, BaseException) else None
        error = nested or error.__cause__ or error.__context__
        seen += 1
    return None


def safe_to_run_again(error: BaseException | None) -> bool:
    """Whether ``error`` says the other side did not act on the call at all: the connection
    was refused or never made (a full listen backlog drops it: the connect times out), or the
    answer was 429 or 503. A timeout or a reset once connected may come after the server did
    the work (a POST that was applied), so such a call is not run again."""
    seen = 0
    while error is not None and seen < 6:
        if isinstance(error, ConnectionRefusedError) or _status(error) in _OVERLOAD_STATUS:
            return True
        if type(error).__name__ in _NOT_CONNECTED or _failed_to_send(error):
            return True
        reason = getattr(error, "reason", None)
        nested = reason if isinstance(reason, BaseException) else None
        error = nested or error.__cause__ or error.__context__
        seen += 1
    return False


# requests / urllib3 / httpx: the connection was never made, so nothing was sent.
_NOT_CONNECTED = frozenset({"ConnectTimeout", "ConnectTimeoutError", "NewConnectionError",
                            "ConnectError"})


def _failed_to_send(error: BaseException) -> bool:
    # urllib wraps an OSError in URLError only while connecting and sending the request; an
    # error reading the answer is raised as it is.
    import urllib.error

    return (type(error) is urllib.error.URLError and isinstance(error.reason, OSError)
            and not isinstance(error.reason, ConnectionResetError))


def _status(error: BaseException) -> object:
    for owner in (error, getattr(error, "response", None)):
        for name in ("status_code", "status", "code"):
            value = getattr(owner, name, None)
            if isinstance(value, int) and not isinstance(value, bool):
                return value
    return None
