"""manybrains.Queue: FIFO, blocking and closing rules, across processes and pool tasks."""

from __future__ import annotations

import os
import queue
import threading
import time

import pytest

import manybrains as mb


def produce(q: mb.Queue, start: int, count: int, close: bool = False) -> int:
    for i in range(start, start + count):
        q.put(i)
    if close:
        q.close()
    return count


def consume_all(q: mb.Queue) -> list[int]:
    return list(q)


def shm_entries(prefix: str) -> list[str]:
    return [e for e in os.listdir("/dev/shm") if prefix in e]


# ---- one process ---------------------------------------------------------------------------


def test_fifo_order_and_qsize():
    q = mb.Queue()
    assert q.empty() and q.qsize() == 0
    for item in ["a", 1, None, {"k": [1, 2]}]:
        q.put(item)
    assert q.qsize() == 4 and not q.empty()
    assert [q.get() for _ in range(4)] == ["a", 1, None, {"k": [1, 2]}]


def test_get_nowait_on_empty_raises_queue_empty():
    q = mb.Queue()
    with pytest.raises(queue.Empty):
        q.get_nowait()
    with pytest.raises(queue.Empty):
        q.get_many(5, block=False)


def test_get_timeout_waits_then_raises_queue_empty():
    q = mb.Queue()
    started = time.monotonic()
    with pytest.raises(queue.Empty):
        q.get(timeout=0.2)
    assert 0.15 <= time.monotonic() - started < 5


def test_put_after_close_raises_and_readers_drain_then_stop():
    q = mb.Queue()
    q.put_many([1, 2, 3])
    q.close()
    q.close()  # idempotent
    assert q.closed
    with pytest.raises(mb.QueueClosed, match="closed"):
        q.put(4)
    with pytest.raises(ValueError):  # QueueClosed is a ValueError, like multiprocessing's
        q.put_nowait(4)
    assert list(q) == [1, 2, 3]
    with pytest.raises(mb.QueueClosed):
        q.get(timeout=1)
    with pytest.raises(mb.QueueClosed):
        q.get_nowait()
    assert q.qsize() == 0


def test_maxsize_bounds_the_queue():
    q = mb.Queue(maxsize=2)
    q.put(1)
    q.put_nowait(2)
    assert q.full()
    with pytest.raises(queue.Full):
        q.put_nowait(3)
    with pytest.raises(queue.Full):
        q.put(3, timeout=0.1)
    assert q.get() == 1
    q.put(3, timeout=1)
    assert [q.get(), q.get()] == [2, 3]


def test_a_full_ring_blocks_put_until_room():
    q = mb.Queue(capacity=4096)
    payload = b"x" * 900  # under a quarter of the ring: stays in the ring
    for _ in range(4):
        q.put_nowait(payload)
    with pytest.raises(queue.Full):
        q.put_nowait(payload)
    with pytest.raises(queue.Full):
        q.put(payload, timeout=0.1)
    assert q.get() == payload
    q.put(payload, timeout=1)
    assert q.qsize() == 4


def test_put_many_and_get_many_keep_order():
    q = mb.Queue()
    q.put_many(range(100))
    assert q.get_many(30) == list(range(30))
    assert q.get_many(1000, timeout=1) == list(range(30, 100))


def test_lambdas_travel_and_unpicklable_items_fail_at_put():
    q = mb.Queue()
    q.put(lambda x: x + 1)
    assert q.get()(1) == 2
    with pytest.raises(TypeError):
        q.put(threading.Lock())
    assert q.empty()


def test_bad_arguments_are_refused():
    with pytest.raises(ValueError, match="maxsize"):
        mb.Queue(maxsize=-1)
    with pytest.raises(ValueError, match="capacity"):
        mb.Queue(capacity=10)
    with pytest.raises(ValueError, match="max_items"):
        mb.Queue().get_many(0)


def test_the_queue_is_removed_with_its_owner():
    q = mb.Queue()
    q.put(b"y" * (2 << 20))  # spilled into a segment of its own, never read
    name = q.name
    assert len(shm_entries(name)) >= 2  # the ring, the spilled item (and semaphores)
    del q
    assert shm_entries(name) == []


def test_attaching_after_the_owner_is_gone_says_why():
    import pickle

    q = mb.Queue()
    data = pickle.dumps(q)
    del q
    with pytest.raises(FileNotFoundError, match="no longer exists"):
        pickle.loads(data)


# ---- across processes ------------------------------------------------------------------------


def test_spawned_producer_and_iteration_until_closed(start_method):
    q = mb.Queue()
    handle = mb.spawn(produce, q, 0, 1000, close=True, start_method=start_method)
    assert list(q) == list(range(1000))
    assert handle.result(timeout=30) == 1000


def test_big_items_cross_processes_through_the_ring_and_spilled():
    q = mb.Queue(capacity=64 * 1024)
    items = [os.urandom(n) for n in (10, 10_000, 15_000, 5_000_000, 40_000)] * 20
    handle = mb.spawn(consume_all, q)
    q.put_many(items)
    q.close()
    assert handle.result(timeout=30) == items


def test_pool_tasks_are_producers():
    q = mb.Queue()
    with mb.Pool(2) as pool:
        counts = pool.map(produce, [q] * 4, [0, 100, 200, 300], [100] * 4)
    assert counts == [100] * 4
    assert sorted(q.get_many(1000, timeout=1)) == list(range(400))


def test_many_consumers_share_the_items_exactly_once():
    q = mb.Queue(maxsize=50)
    consumers = [mb.spawn(consume_all, q) for _ in range(3)]
    q.put_many(range(3000))
    q.close()
    seen = [item for c in consumers for item in c.result(timeout=30)]
    assert sorted(seen) == list(range(3000))


def test_close_wakes_a_blocked_reader():
    q = mb.Queue()
    reader = mb.spawn(consume_all, q)
    time.sleep(0.3)  # let it block in get()
    assert reader.is_alive()
    q.close()
    assert reader.result(timeout=10) == []


def test_get_many_across_processes_returns_every_item_in_order():
    q = mb.Queue(capacity=8192)  # wraps around the ring many times
    handle = mb.spawn(produce, q, 0, 20_000, close=True)
    got: list[int] = []
    while True:
        try:
            got += q.get_many(64, timeout=10)
        except mb.QueueClosed:
            break
    assert got == list(range(20_000))
    handle.join(timeout=30)
