"""manybrains.Value and manybrains.Array: shared numbers with a lock that travels."""

from __future__ import annotations

import os
import pickle

import pytest

import manybrains as mb


def add_many(counter: mb.Value, times: int) -> int:
    for _ in range(times):
        counter.add(1)
    return os.getpid()


def add_with_lock(counter: mb.Value, times: int) -> None:
    for _ in range(times):
        with counter.lock:
            counter.value += 1


def fill_slot(arr: mb.Array, index: int) -> None:
    arr[index] = index * 10
    arr.add(0, 1)


def shm_entries(name: str) -> list[str]:
    return [e for e in os.listdir("/dev/shm") if name in e]


def test_value_get_set_and_add():
    v = mb.Value("i", 5)
    assert v.value == 5
    v.value = 7
    assert v.add(3) == 10 and v.value == 10
    assert v.add(-10) == 0
    assert "Value 'i' 0" in repr(v)
    d = mb.Value("d", 1.5)
    assert d.add(0.25) == 1.75
    assert v.get_lock() is v.lock


def test_unknown_typecode_is_refused():
    with pytest.raises(ValueError, match="unknown typecode 'z'"):
        mb.Value("z", 0)


def test_value_counts_exactly_across_pool_tasks(start_method):
    counter = mb.Value("q", 0)
    with mb.Pool(2, start_method=start_method) as pool:
        pids = pool.starmap(add_many, [(counter, 500)] * 8, chunksize=1)
    assert counter.value == 4000
    assert os.getpid() not in pids


def test_value_with_the_lock_in_spawned_processes():
    counter = mb.Value("i", 0)
    handles = [mb.spawn(add_with_lock, counter, 2000) for _ in range(2)]
    for h in handles:
        h.result(timeout=30)
    assert counter.value == 4000


def test_array_from_list_and_size():
    arr = mb.Array("d", [1.0, 2.0, 3.0])
    assert len(arr) == 3 and arr.tolist() == [1.0, 2.0, 3.0]
    assert arr[1] == 2.0 and arr[1:] == [2.0, 3.0] and list(arr) == [1.0, 2.0, 3.0]
    arr[2] = 9.0
    assert arr.add(2, 1.0) == 10.0
    zeros = mb.Array("i", 4)
    assert zeros.tolist() == [0, 0, 0, 0]
    with pytest.raises(ValueError, match="size"):
        mb.Array("i", -1)


def test_array_is_shared_with_pool_tasks(start_method):
    arr = mb.Array("i", 6)
    with mb.Pool(2, start_method=start_method) as pool:
        pool.map(fill_slot, [arr] * 5, range(1, 6))
    assert arr.tolist() == [5, 10, 20, 30, 40, 50]


def test_pickles_by_name_not_by_value():
    arr = mb.Array("d", 100_000)
    assert len(pickle.dumps(arr)) < 500
    copy = pickle.loads(pickle.dumps(arr))
    copy[7] = 3.5
    assert arr[7] == 3.5


def test_segments_and_semaphores_go_with_the_owner():
    v = mb.Value("i", 1)
    name = v.name
    assert len(shm_entries(name)) == 3  # the memory, the lock and who holds the lock
    attached = pickle.loads(pickle.dumps(v))
    del attached  # an attached copy removes nothing
    assert len(shm_entries(name)) == 3
    del v
    assert shm_entries(name) == []
