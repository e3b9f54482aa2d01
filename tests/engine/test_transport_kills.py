"""A worker killed while its reply is on the wire fails only its task; the pool goes on.

The supervisor reads a reply frame whole (``recv_bytes``), so a worker that dies half-way
through writing a big one leaves that read with the end of the stream in the middle of a
frame. That must count as the death of that one worker: its task fails with
``WorkerCrashed``, a task queued behind it runs elsewhere, and every other result arrives.

Each of the pool's first two workers is the victim in turn (they are started together, so
what one of them inherits from the other's start is exercised both ways). Two tasks that
wait on a gate file pin the big task to the victim: the victim's gate opens first, so it is
the only idle worker when the big task is dispatched.

The kill is made to land mid-reply, not before or after it: the test watches the bytes the
test process has read (``rchar`` of ``/proc/self/io``, which counts the supervisor thread's
reads of the worker's pipe) grow past a few MiB after the task said it was returning, stops
the worker there, checks that less than the reply has arrived, and only then kills it.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable
from concurrent.futures import Future, wait
from pathlib import Path

import pytest
from tasks import square

import manybrains as mb

pytestmark = pytest.mark.skipif(not Path("/proc/self/io").exists(),
                                reason="counts the bytes read through /proc/self/io (Linux)")

REPLY_SIZE = 128 << 20  # bytes, not an array: arrays this big would go by shared memory
UNDER_WAY = 4 << 20  # read by the parent past the marker: the reply is being sent
SMALL = 25  # small tasks submitted before the big one, and as many after it
ATTEMPTS = 3  # a reply that got through before the stop is tried again
WITHIN = 15.0  # seconds any one wait of the test may take


# ---- tasks (module level: workers import them by name under every start method) ----------

def write_pid(path: str) -> None:
    """``path`` gets this process's pid, whole or not at all (a reader polls for it)."""
    Path(path + ".tmp").write_text(str(os.getpid()))
    os.replace(path + ".tmp", path)


def hold(gate: str) -> int:
    """Occupy this worker until the file ``gate + ".go"`` exists (or a minute passed)."""
    write_pid(gate)
    deadline = time.monotonic() + 60  # a failed test opens every gate; this is a backstop
    while not os.path.exists(gate + ".go") and time.monotonic() < deadline:
        time.sleep(0.005)
    return os.getpid()


def big_reply(marker: str, size: int) -> bytes:
    """A reply of ``size`` bytes; the worker's pid goes to ``marker`` just before it."""
    data = bytes(size)
    write_pid(marker)
    return data


# ---- the test's side ---------------------------------------------------------------------

def bytes_read() -> int:
    """What this process has read so far (all threads, pipes and sockets included)."""
    for line in Path("/proc/self/io").read_text().splitlines():
        if line.startswith("rchar:"):
            return int(line.split()[1])
    raise AssertionError("no rchar in /proc/self/io")


def wait_for(condition: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + WITHIN
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.0005)  # fine-grained: a reply takes a few hundred milliseconds to send


def read_pid(path: Path) -> int:
    wait_for(path.exists, f"{path.name} to be written")
    return int(path.read_text())


def results(futures: list[Future[int]]) -> list[int]:
    """Their results; fails (never hangs) if the pool stopped delivering."""
    _, pending = wait(futures, timeout=WITHIN)
    assert not pending, (f"{len(pending)} of {len(futures)} tasks never finished (lost, or "
                         "the pool is stuck)")
    return [f.result() for f in futures]


class Gates:
    """Pins the next task to one worker: each of two ``hold`` tasks occupies a worker until
    its gate opens; opening the victim's gate first leaves it the only idle worker."""

    def __init__(self, pool: mb.Pool, folder: Path) -> None:
        self.paths = [folder / "hold-a", folder / "hold-b"]
        self.holds = [pool.submit(hold, str(path)) for path in self.paths]
        self.pids = [read_pid(path) for path in self.paths]
        assert len(set(self.pids)) == 2, "both holds ran on one worker"

    def free(self, pid: int) -> None:
        """Let the hold on worker ``pid`` finish, and wait until it has."""
        index = self.pids.index(pid)
        self.open(index)
        assert results([self.holds[index]]) == [pid]

    def open(self, index: int) -> None:
        Path(f"{self.paths[index]}.go").touch()

    def open_all(self) -> None:
        for index in range(len(self.paths)):
            self.open(index)


def kill_mid_reply(marker: Path, reply: Future[bytes], victim: int) -> bool:
    """SIGKILL ``victim`` while it writes the reply; False if the whole reply got through
    first (the victim then goes on)."""
    assert read_pid(marker) == victim, "the big task ran on another worker than the victim"
    start = bytes_read()
    wait_for(lambda: bytes_read() - start >= UNDER_WAY or reply.done(), "the reply to start")
    os.kill(victim, signal.SIGSTOP)  # frozen mid-write: the parent drains the pipe, then waits
    time.sleep(0.2)
    if reply.done() or bytes_read() - start >= REPLY_SIZE:
        os.kill(victim, signal.SIGCONT)
        return False
    os.kill(victim, signal.SIGKILL)
    return True


def attempt(pool: mb.Pool, victim: int, folder: Path
            ) -> tuple[bool, Future[bytes], list[Future[int]]]:
    """Pin a big reply to ``victim`` amid small tasks and kill it mid-reply; whether the kill
    landed, the big task's future and the small ones'."""
    gates = Gates(pool, folder)
    try:
        gates.free(victim)
        before = [pool.submit(square, i) for i in range(SMALL)]
        reply = pool.submit(big_reply, str(folder / "returning"), REPLY_SIZE)
        after = [pool.submit(square, i) for i in range(SMALL, 2 * SMALL)]
        wait_for((folder / "returning").exists, "the big task to return")
        gates.open_all()  # the other worker takes the tasks after the big one meanwhile
        landed = kill_mid_reply(folder / "returning", reply, victim)
        results(gates.holds)
    finally:
        gates.open_all()
    return landed, reply, before + after


def unstick(pool: mb.Pool) -> None:
    # A supervisor blocked in the middle of a frame waits for its end forever: killing the
    # workers ends every stream, so the failing test can shut its pool down.
    for pid in pool.backend.worker_pids():
        os.kill(pid, signal.SIGKILL)


def check_kill_mid_reply(pool: mb.Pool, victim_index: int, tmp_path: Path) -> None:
    assert pool.map(square, range(4), chunksize=1) == [0, 1, 4, 9]
    wait_for(lambda: len(pool.backend.worker_pids()) == 2, "both workers to start")
    victim = pool.backend.worker_pids()[victim_index]  # in the order they started
    for number in range(ATTEMPTS):
        folder = tmp_path / str(number)
        folder.mkdir()
        landed, reply, others = attempt(pool, victim, folder)
        assert results(others) == [i * i for i in range(2 * SMALL)]
        if landed:
            break
        assert len(reply.result(timeout=WITHIN)) == REPLY_SIZE  # got through: again
    else:
        pytest.fail(f"no kill landed mid-reply in {ATTEMPTS} attempts")
    with pytest.raises(mb.WorkerCrashed, match="SIGKILL") as info:
        reply.result(timeout=WITHIN)
    assert info.value.pid == victim
    assert pool.statistics().crashed == 1
    assert victim not in pool.backend.worker_pids()
    assert results([pool.submit(square, i) for i in range(20)]) == [i * i for i in range(20)]


@pytest.mark.timeout(120)
@pytest.mark.parametrize("victim_index", [0, 1], ids=["first worker", "second worker"])
def test_a_worker_killed_mid_reply_fails_only_its_task(start_method, victim_index, tmp_path):
    with mb.Pool(2, start_method=start_method) as pool:
        try:
            check_kill_mid_reply(pool, victim_index, tmp_path)
        except BaseException:
            unstick(pool)
            raise
