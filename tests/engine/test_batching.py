"""Small tasks travel in batches: many per write and per read, queued behind a short task.

What batching must not cost: a task is never stuck behind a long one while another worker
idles, a crash in a burst fails only the task that crashed, and the fast path for a small
call (a cached function, plain arguments) gives the same results and errors as the whole
pickle. The framing itself is checked on a real socket pair.
"""

from __future__ import annotations

import math
import os
import signal
import socket
import threading
import time
from concurrent.futures import wait
from multiprocessing.connection import Connection
from pathlib import Path

import pytest
from tasks import add, square

import manybrains as mb
from manybrains.backends.processes.channel import Channel


def test_tasks_are_not_queued_behind_a_task_that_runs_long():
    with mb.Pool(2) as pool:
        assert pool.map(square, range(2000)) == [i * i for i in range(2000)]  # short, learned
        slow = pool.submit(time.sleep, 2.0)
        time.sleep(0.3)  # it has run longer than the queueing budget now
        fast = [pool.submit(square, i) for i in range(3000)]
        done, _ = wait(fast, timeout=10)
        # Queued behind the sleeper, some would have waited for it to end.
        assert len(done) == len(fast) and not slow.done()
        assert [f.result() for f in fast] == [i * i for i in range(3000)]
        slow.result(timeout=10)


def test_a_crash_in_a_burst_fails_only_its_task():
    with mb.Pool(2) as pool:
        pool.map(square, range(1000))
        before = [pool.submit(square, i) for i in range(1500)]
        crash = pool.submit(os._exit, 3)
        after = [pool.submit(square, i) for i in range(1500)]
        with pytest.raises(mb.WorkerCrashed, match="exit code 3"):
            crash.result(timeout=30)
        assert [f.result(timeout=30) for f in before + after] == [i * i for i in range(1500)] * 2
        assert pool.statistics().crashed == 1


def test_the_fast_path_and_the_whole_pickle_agree():
    with mb.Pool(2) as pool:
        calls = [
            pool.submit(add, 2, y=3),  # keywords
            pool.submit(math.sqrt, 16.0),  # a builtin, by reference
            pool.submit(sorted, [3, 1, 2], reverse=True),
            pool.submit(len, {1, 2, 3}),  # a set: not plain, pickled whole
            pool.submit(square, 10**30),  # a big int
            pool.submit(lambda x: x + 1, 1),  # by value, each time
            pool.submit(str.upper, "abc"),  # a method descriptor: pickled whole
            pool.submit(repr, ("nested", [1, {"a": (2, 3)}])),
        ]
        assert [f.result(timeout=30) for f in calls] == [
            5, 4.0, [3, 2, 1], 3, 10**60, 2, "ABC", repr(("nested", [1, {"a": (2, 3)}]))]
        with pytest.raises(mb.SerializationError, match="argument 0"):
            pool.submit(square, threading.Lock())
        with pytest.raises(ZeroDivisionError):
            pool.submit(divmod, 1, 0).result(timeout=30)


def hold(gate: str) -> int:
    """Write this worker's pid to ``gate``, then wait until ``gate + ".go"`` exists."""
    with open(gate + ".tmp", "w") as f:
        f.write(str(os.getpid()))
    os.replace(gate + ".tmp", gate)
    deadline = time.monotonic() + 60  # a backstop: a failed test opens every gate
    while not os.path.exists(gate + ".go") and time.monotonic() < deadline:
        time.sleep(0.005)
    return os.getpid()


def _pid_in(path: Path) -> int:
    deadline = time.monotonic() + 15
    while not path.exists():
        assert time.monotonic() < deadline, f"{path.name} was never written"
        time.sleep(0.005)
    return int(path.read_text())


def test_a_worker_that_does_not_read_holds_up_no_other(tmp_path):
    # Worker A is stopped (SIGSTOP) while idle, and a task too big for its pipe is sent to
    # it: the supervisor writes what fits and goes on serving worker B meanwhile.
    gates = [tmp_path / "a", tmp_path / "b"]
    with mb.Pool(2) as pool:
        holds = [pool.submit(hold, str(gate)) for gate in gates]
        a, b = (_pid_in(gate) for gate in gates)
        assert a != b
        stopped = False
        try:
            Path(f"{gates[0]}.go").touch()
            assert holds[0].result(timeout=15) == a  # A is idle, reading its pipe
            os.kill(a, signal.SIGSTOP)
            stopped = True
            big = pool.submit(len, b"x" * (64 << 20))
            time.sleep(0.2)  # the supervisor has sent A what its pipe takes
            Path(f"{gates[1]}.go").touch()
            assert holds[1].result(timeout=15) == b
            small = [pool.submit(square, i) for i in range(200)]
            done, _ = wait(small, timeout=15)
            assert len(done) == len(small), "the supervisor was stuck writing to worker A"
            assert not big.done()
        finally:
            for gate in gates:
                Path(f"{gate}.go").touch()
            if stopped:
                os.kill(a, signal.SIGCONT)
        assert big.result(timeout=30) == 64 << 20


# ---- the framing, on a real socket pair ---------------------------------------------------

@pytest.fixture
def pair():
    a, b = socket.socketpair()
    left, right = Connection(a.detach()), Connection(b.detach())
    yield left, right
    left.close()
    right.close()


def test_many_frames_in_one_write_come_out_one_by_one(pair):
    left, right = pair
    frames = [bytes([i % 251]) * (i % 97) for i in range(500)]
    Channel(left).write(frames)
    reader = Channel(right)
    got: list[bytes] = []
    while len(got) < len(frames):
        got += reader.read_some()
    assert got == frames


def test_a_big_frame_is_read_whole_and_the_framing_is_connections(pair):
    left, right = pair
    big = os.urandom(3 << 20)  # more than one read, and than the socket's buffer
    writer = threading.Thread(target=Channel(left).write, args=([b"x", big, b"y"],))
    writer.start()
    reader = Channel(right)
    got: list[bytes] = []
    while len(got) < 3:
        got += reader.read_some()
    writer.join()
    assert [bytes(g) for g in got] == [b"x", big, b"y"]
    # Either side may still use the plain Connection methods.
    left.send_bytes(b"from send_bytes")
    assert reader.read_some() == [b"from send_bytes"]
    Channel(right).write([b"to recv_bytes"])
    assert left.recv_bytes() == b"to recv_bytes"


def test_the_other_end_closing_ends_the_read(pair):
    left, right = pair
    left.send_bytes(b"last")
    left.close()
    reader = Channel(right)
    assert reader.read_some() == [b"last"]
    with pytest.raises(EOFError):
        reader.read_some()
