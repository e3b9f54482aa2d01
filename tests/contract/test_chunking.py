"""Adaptive chunk sizing and usable-CPU detection, tested on their own."""

from __future__ import annotations

import itertools

import pytest

from manybrains._chunking import (
    GROWTH,
    TARGET_SECONDS,
    CallCosts,
    ChunkSizer,
    chunks,
    known_length,
)
from manybrains._cpus import cgroup_cpu_quota


def test_first_chunk_is_one_call_then_growth_is_bounded():
    sizer = ChunkSizer(2, None)
    assert sizer.next_size() == 1
    sizer.record(1, 1e-6)  # a microsecond a call: the target would be 25,000 calls
    assert sizer.next_size() == GROWTH
    sizer.record(GROWTH, GROWTH * 1e-6)
    assert sizer.next_size() == GROWTH * GROWTH


def test_size_settles_where_a_chunk_runs_for_the_target_time():
    sizer = ChunkSizer(2, None)
    for _ in range(10):
        size = sizer.next_size()
        sizer.record(size, size * 1e-4)
    assert abs(sizer.next_size() - TARGET_SECONDS / 1e-4) <= 1


def test_slow_calls_stay_one_per_chunk():
    sizer = ChunkSizer(2, 100)
    for _ in range(5):
        assert sizer.next_size() == 1
        sizer.record(1, 0.5)


def test_known_length_leaves_work_for_every_worker_and_a_floor_at_the_tail():
    sizer = ChunkSizer(2, 1000)
    sizes = []
    while sum(sizes) < 1000:
        size = sizer.next_size()
        sizes.append(size)
        sizer.record(size, size * 1e-3)  # a millisecond a call: the tail floor is 2 calls
    assert sum(sizes) == 1000
    assert max(sizes) <= 1000 // 4  # never more than the rest split two per worker
    assert sizes[-3] < sizes[10]  # chunks shrink towards the end...
    assert min(sizes[1:-1]) >= 2  # ...but the tail does not dissolve into one-call chunks


def test_fixed_size_and_limit():
    assert ChunkSizer(2, None, fixed=7).next_size() == 7
    assert ChunkSizer(2, None, fixed=7, limit=3).next_size() == 3


def test_ranges_are_sliced_not_materialized():
    sizer = ChunkSizer(1, 10, fixed=4)
    parts = list(chunks(range(10), sizer))
    assert parts == [range(0, 4), range(4, 8), range(8, 10)]


def test_generators_are_read_only_as_chunks_are_requested():
    consumed = itertools.count()

    def source():
        for i in range(1000):
            next(consumed)
            yield i

    stream = chunks(source(), ChunkSizer(1, None, fixed=5))
    assert next(stream) == [0, 1, 2, 3, 4]
    assert next(consumed) == 5  # five read, not more


def test_cgroup_quota_v2_and_v1(tmp_path):
    (tmp_path / "cpu.max").write_text("150000 100000\n")
    assert cgroup_cpu_quota(str(tmp_path)) == 1.5
    (tmp_path / "cpu.max").write_text("max 100000\n")
    assert cgroup_cpu_quota(str(tmp_path)) is None
    (tmp_path / "cpu.max").unlink()
    (tmp_path / "cpu").mkdir()
    (tmp_path / "cpu" / "cpu.cfs_quota_us").write_text("300000")
    (tmp_path / "cpu" / "cpu.cfs_period_us").write_text("100000")
    assert cgroup_cpu_quota(str(tmp_path)) == 3.0
    assert cgroup_cpu_quota(str(tmp_path / "missing")) is None


def test_lists_and_tuples_are_sliced_and_their_length_is_known():
    items = list(range(10))
    parts = list(chunks(items, ChunkSizer(1, 10, fixed=4)))
    assert parts == [items[0:4], items[4:8], items[8:10]]
    assert next(chunks(tuple(items), ChunkSizer(1, 10, fixed=4))) == (0, 1, 2, 3)
    assert known_length(items) == 10 and known_length(iter(items)) is None


def test_numpy_arrays_are_sliced_into_views_not_lists_of_scalars():
    np = pytest.importorskip("numpy")
    array = np.arange(10.0)
    parts = list(chunks(array, ChunkSizer(1, 10, fixed=4)))
    assert [type(p) for p in parts] == [np.ndarray] * 3
    assert all(np.shares_memory(p, array) for p in parts)
    assert [len(p) for p in parts] == [4, 4, 2]
    assert known_length(array) == 10


def test_a_pool_map_over_a_numpy_array_sends_slices(monkeypatch):
    np = pytest.importorskip("numpy")
    import manybrains as mb
    from manybrains import _stream

    sent = []
    original = _stream.chunks

    def spying(items, sizer):
        for chunk in original(items, sizer):
            sent.append(type(chunk).__name__)
            yield chunk

    monkeypatch.setattr(_stream, "chunks", spying)
    with mb.Pool(1) as pool:
        assert pool.map(float, np.arange(100.0), chunksize=10) == [float(x) for x in range(100)]
        assert pool.map(abs, list(range(-5, 5)), chunksize=5) == [5, 4, 3, 2, 1, 0, 1, 2, 3, 4]
        assert pool.map(abs, range(-3, 3), chunksize=3) == [3, 2, 1, 0, 1, 2]
    assert sent == ["ndarray"] * 10 + ["list"] * 2 + ["range"] * 2


def test_a_function_measured_by_an_earlier_map_starts_at_its_measured_size():
    costs = CallCosts()
    first = ChunkSizer(2, None, costs=costs, key="f")
    assert first.next_size() == 1  # never measured: one call first
    first.record(1, 1e-6)
    first.record(GROWTH, GROWTH * 1e-6)
    again = ChunkSizer(2, None, costs=costs, key="f")
    assert again.next_size() == int(TARGET_SECONDS / 1e-6)  # no climb from one call
    other = ChunkSizer(2, None, costs=costs, key="g")
    assert other.next_size() == 1
    again.record(1, 1.0)  # this map's own measurement outweighs the earlier one at once
    assert again.next_size() <= 2


def test_call_costs_forget_the_oldest_function():
    costs = CallCosts()
    for key in range(CallCosts.REMEMBERED + 1):
        costs.put(key, 1, 1.0)
    assert costs.get(0) is None and costs.get(CallCosts.REMEMBERED) == (1, 1.0)
