"""progress= on map/imap/amap on a process pool: snapshots, the tqdm bar, failures, early
exits and Ctrl-C. That every backend reports progress is in test_contract.py."""

from __future__ import annotations

import asyncio
import io
import re
import signal
import threading
import time
from typing import Any

import pytest
from tasks import fail_on, sleep_then, square

import manybrains as mb
import manybrains.progress as progress_module
from manybrains.progress import ProgressSnapshot


class Recorder:
    """A progress callback that keeps every snapshot."""

    def __init__(self, raise_on_first: BaseException | None = None) -> None:
        self.snapshots: list[ProgressSnapshot] = []
        self._raise = raise_on_first

    def __call__(self, snapshot: ProgressSnapshot) -> None:
        self.snapshots.append(snapshot)
        if self._raise is not None and len(self.snapshots) == 1:
            raise self._raise

    @property
    def last(self) -> ProgressSnapshot:
        return self.snapshots[-1]


@pytest.fixture
def backend() -> str:
    """conftest's ``pool`` here is a process pool."""
    return "processes"


def test_a_chunk_of_n_items_advances_n(pool):
    recorder = Recorder()
    pool.map(square, range(100), chunksize=25, progress=recorder)
    assert [s.done for s in recorder.snapshots] == [25, 50, 75, 100, 100]


@pytest.fixture
def bars(monkeypatch) -> list[Any]:
    """Every bar the maps of a test make, each counting its ``close()`` calls.

    The list holds each bar, so tqdm's ``__del__`` (which closes a bar when it is collected)
    cannot close it in the map's place: only a ``close()`` call counts.
    """
    made: list[Any] = []

    class CountingBar(progress_module._bar_class()):  # type: ignore[misc]
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            self.closes = 0
            super().__init__(*args, **kwargs)
            made.append(self)

        def close(self) -> None:
            self.closes += 1
            super().close()

    monkeypatch.setattr(progress_module, "_BAR_CLASS", CountingBar)
    return made


def test_bar_shows_the_work_and_closes(pool, bars):
    out = io.StringIO()
    pool.map(square, range(1000), progress={"file": out, "desc": "squaring"})
    text = out.getvalue()
    assert "squaring" in text
    assert "1000/1000" in text
    assert "100%" in text
    assert [bar.closes >= 1 for bar in bars] == [True]


def test_bar_counts_failures_and_closes_when_the_map_raises(pool, bars):
    out = io.StringIO()
    with pytest.raises(ValueError, match="bad input 3"):
        pool.map(fail_on, range(10), chunksize=1, progress={"file": out})
    assert "failed=1" in out.getvalue()
    # closed by the map, not left on screen half-drawn
    assert [bar.closes >= 1 for bar in bars] == [True]
    assert not progress_module._bar_class()._instances


def test_a_timed_out_task_counts_as_failed(pool):
    recorder = Recorder()
    with pytest.raises(TimeoutError):
        pool.map(sleep_then, [10], timeout=0.3, progress=recorder)
    assert recorder.last.failed == 1
    assert recorder.last.finished


def test_imap_left_early_still_finishes_the_progress(pool):
    recorder = Recorder()
    results = pool.imap(square, iter(range(10_000)), progress=recorder)
    assert next(results) == 0
    results.close()
    assert recorder.last.finished
    assert recorder.last.total is None  # a generator's length is unknown
    assert pool.map(square, range(3)) == [0, 1, 4]


def test_interrupt_during_the_map_finishes_the_progress_and_the_pool_goes_on(pool):
    recorder = Recorder(raise_on_first=KeyboardInterrupt())
    with pytest.raises(KeyboardInterrupt):
        pool.map(sleep_then, [0.05] * 20, chunksize=1, progress=recorder)
    assert recorder.last.finished
    assert pool.map(square, range(3)) == [0, 1, 4]


def test_amap_reports_progress(pool):
    recorder = Recorder()
    assert asyncio.run(pool.amap(square, range(200), progress=recorder)) == [
        x * x for x in range(200)]
    assert recorder.last.done == 200


def test_default_map_takes_progress_too():
    recorder = Recorder()
    assert mb.map(square, range(100), backend="threads", progress=recorder)[-1] == 99 * 99
    assert recorder.last.done == 100


def test_bad_progress_value_is_a_type_error_at_the_call(pool):
    with pytest.raises(TypeError, match="progress must be"):
        pool.imap(square, range(3), progress=42)


def test_snapshot_rate_and_remaining():
    snapshot = ProgressSnapshot(done=50, failed=0, total=100, elapsed=2.0)
    assert snapshot.rate == 25.0
    assert snapshot.remaining == 2.0
    assert ProgressSnapshot(0, 0, None, 0.0).remaining is None


# ---- the bar moves while the map runs -----------------------------------------------------


class Screen(io.StringIO):
    """A terminal stand-in that keeps each write: what the bar showed, in order."""

    def __init__(self) -> None:
        super().__init__()
        self.writes: list[str] = []

    def write(self, text: str) -> int:
        self.writes.append(text)
        return super().write(text)

    def counts(self, total: int) -> list[int]:
        return [int(n) for n in re.findall(rf"(\d+)/{total}\b", "".join(self.writes))]


def test_bar_moves_during_the_map_not_only_at_the_end(pool):
    screen = Screen()
    # 20 items of 50 ms on two workers: half a second, several of tqdm's 0.1 s refreshes.
    pool.map(sleep_then, [0.05] * 20, chunksize=1, progress={"file": screen})
    counts = screen.counts(20)
    assert counts == sorted(counts) and counts[-1] == 20
    between = [n for n in counts if 0 < n < 20]
    assert len(set(between)) >= 2, screen.writes  # drawn at two points at least before the end


def test_progress_true_draws_a_moving_tqdm_bar_on_stderr(pool, capsys):
    results = pool.imap(sleep_then, [0.05] * 20, chunksize=1, progress=True)
    seen = [next(results) for _ in range(10)]
    time.sleep(0.15)  # past tqdm's minimum refresh interval
    next(results)
    midway = capsys.readouterr().err
    assert seen == [None] * 10
    partial = [int(n) for n in re.findall(r"(\d+)/20\b", midway)]
    assert partial and 0 < max(partial) < 20, midway  # drawn while the map still runs
    assert list(results) == [None] * 9
    assert "20/20" in capsys.readouterr().err


def test_bar_says_interrupted_when_ctrl_c_ends_the_map(pool):
    screen = Screen()
    main = threading.get_ident()
    # Ctrl-C as the terminal sends it: SIGINT to the main thread, waiting in the map.
    ctrl_c = threading.Timer(0.3, signal.pthread_kill, (main, signal.SIGINT))
    # Python's own handler, even where pytest was started with SIGINT ignored (in the background)
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    ctrl_c.start()
    try:
        with pytest.raises(KeyboardInterrupt):
            pool.map(sleep_then, [0.1] * 40, chunksize=1, progress={"file": screen})
    finally:
        ctrl_c.join()
        signal.signal(signal.SIGINT, previous)
    text = "".join(screen.writes)
    assert "interrupted" in text.rsplit("\r", 1)[-1], text  # the bar's last state says so
    assert 0 < screen.counts(40)[-1] < 40
    assert pool.map(square, range(3)) == [0, 1, 4]


def test_bar_without_interrupt_does_not_say_interrupted(pool):
    screen = Screen()
    pool.map(square, range(10), progress={"file": screen})
    assert "interrupted" not in "".join(screen.writes)


def _lazy_apis():
    def imap(pool, items, progress):
        return pool.imap(sleep_then, items, chunksize=1, progress=progress)

    def istarmap(pool, items, progress):
        return pool.istarmap(sleep_then, [(d,) for d in items], chunksize=1,
                             progress=progress)

    def aimap(pool, items, progress):
        async def main():
            got = []
            async for value in pool.aimap(sleep_then, items, chunksize=1, progress=progress):
                got.append((value, len(progress.snapshots)))
            return got
        return iter(asyncio.run(main()))

    return {"imap": imap, "istarmap": istarmap, "aimap": aimap}


@pytest.mark.parametrize("api", list(_lazy_apis()))
def test_lazy_maps_report_progress_as_results_arrive(pool, api):
    recorder = Recorder()
    items = [0.03] * 12
    seen_at_each_result = []
    for value in _lazy_apis()[api](pool, items, recorder):
        if api == "aimap":
            value, seen = value
            seen_at_each_result.append(seen)
        else:
            seen_at_each_result.append(recorder.snapshots[-1].done if recorder.snapshots else 0)
        assert value is None or isinstance(value, tuple)
    assert recorder.last.done == 12 and recorder.last.finished
    # Before the last result was handed over, the progress had already moved.
    assert any(0 < n < 12 for n in seen_at_each_result[:-1]), seen_at_each_result


def test_starmap_reports_progress(pool):
    recorder = Recorder()
    assert pool.starmap(sleep_then, [(0.01, i) for i in range(8)], chunksize=1,
                        progress=recorder) == list(range(8))
    done = [s.done for s in recorder.snapshots]
    assert done == sorted(done) and done[-1] == 8 and len(set(done)) >= 8
