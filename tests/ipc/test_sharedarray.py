"""manybrains.SharedArray and the automatic shared-memory path for big numpy arrays."""

from __future__ import annotations

import mmap
import os
import pickle
import signal
import stat
import subprocess
import sys
import textwrap

import pytest

import manybrains as mb
from manybrains.ipc.segment import unlink

np = pytest.importorskip("numpy")

MB = 1 << 20


def fill_row(sa: mb.SharedArray, row: int) -> int:
    sa[row] = row + 1
    return os.getpid()


def backed_by_shared_memory(array: np.ndarray) -> bool:
    """Whether ``array`` views a shared mapping (rather than bytes read from a pipe)."""
    base = array
    while isinstance(base, (np.ndarray, memoryview)):
        base = base.base if isinstance(base, np.ndarray) else base.obj
    return isinstance(base, mmap.mmap)


def describe_argument(array: np.ndarray) -> tuple[bool, float]:
    return backed_by_shared_memory(array), float(array.sum())


def scale_in_place(array: np.ndarray) -> float:
    array *= 2
    return float(array.sum())


def kill_myself(_: object) -> None:
    os.kill(os.getpid(), signal.SIGKILL)


def own_segments() -> set[str]:
    return {e for e in os.listdir("/dev/shm") if e.startswith(f"mb{os.getpid()}")}


# ---- SharedArray -------------------------------------------------------------------------


def test_zeros_and_from_array():
    sa = mb.SharedArray.zeros((3, 4), dtype="int32")
    assert sa.shape == (3, 4) and sa.dtype == np.int32 and sa.nbytes == 48
    assert not np.asarray(sa).any()
    source = np.arange(10.0)
    copy = mb.SharedArray.from_array(source)
    assert np.array_equal(copy.array, source) and not np.shares_memory(copy.array, source)
    assert len(copy) == 10 and copy[3] == 3.0


def test_asarray_is_a_view_not_a_copy():
    sa = mb.SharedArray.zeros(1000)
    view = np.asarray(sa)
    assert np.shares_memory(view, sa.array)
    view[5] = 42.0
    assert sa[5] == 42.0
    assert np.asarray(sa, dtype=np.float64) is sa.array


def test_object_dtypes_are_refused():
    with pytest.raises(TypeError, match="Python objects"):
        mb.SharedArray.zeros(3, dtype=object)


def test_segment_is_private_to_the_user():
    sa = mb.SharedArray.zeros(10)
    mode = stat.S_IMODE(os.stat(f"/dev/shm/{sa.name}").st_mode)
    assert mode == 0o600


def test_pickles_by_name_whatever_its_size():
    sa = mb.SharedArray.zeros(4 * MB)
    assert len(pickle.dumps(sa)) < 1000


def test_workers_write_into_it_under_every_start_method(start_method):
    sa = mb.SharedArray.zeros((4, 1000), dtype="int64")
    with mb.Pool(2, start_method=start_method) as pool:
        pids = pool.starmap(fill_row, [(sa, row) for row in range(4)], chunksize=1)
    assert os.getpid() not in pids
    assert [int(v) for v in sa.array.sum(axis=1)] == [1000, 2000, 3000, 4000]


def test_a_spawned_process_writes_into_it():
    sa = mb.SharedArray.zeros((2, 8))
    mb.spawn(fill_row, sa, 1).result(timeout=30)
    assert sa.array[1].tolist() == [2.0] * 8 and not sa.array[0].any()


def test_close_unlink_and_context_manager():
    with mb.SharedArray.zeros(100) as sa:
        name = sa.name
        assert sa.owner and os.path.exists(f"/dev/shm/{name}")
    assert not os.path.exists(f"/dev/shm/{name}")
    with pytest.raises(ValueError, match="closed"):
        sa.array  # noqa: B018
    sa.close()
    sa.unlink()  # both idempotent
    other = mb.SharedArray.zeros(10)
    data = pickle.dumps(other)
    other.unlink()
    with pytest.raises(FileNotFoundError, match="no longer exists"):
        pickle.loads(data)


def test_the_owner_going_away_removes_the_segment():
    sa = mb.SharedArray.zeros(10)
    name = sa.name
    del sa
    assert not os.path.exists(f"/dev/shm/{name}")


def test_a_killed_worker_leaves_nothing_behind():
    with mb.SharedArray.from_array(np.arange(1000.0)) as sa, mb.Pool(1) as pool:
        with pytest.raises(mb.WorkerCrashed):
            pool.submit(kill_myself, sa).result(timeout=30)
        assert pool.submit(fill_row, sa, 0).result(timeout=30)  # the pool goes on
        assert sa[0] == 1.0 and sa[999] == 999.0
    assert own_segments() == set()


def test_no_resource_tracker_warnings(tmp_path):
    script = tmp_path / "uses_shared_memory.py"
    script.write_text(textwrap.dedent("""
        import numpy as np
        import manybrains as mb

        def total(sa):
            return float(np.asarray(sa).sum())

        if __name__ == "__main__":
            sa = mb.SharedArray.from_array(np.ones(1000))
            with mb.Pool(2, start_method="spawn") as pool:
                print(pool.map(total, [sa] * 4))
            kept = mb.SharedArray.zeros(10)  # never closed: removed at exit
    """))
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                          timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[1000.0, 1000.0, 1000.0, 1000.0]"
    assert "resource_tracker" not in done.stderr and "leaked" not in done.stderr


# ---- the automatic path for big arrays ---------------------------------------------------------


def test_big_arguments_travel_through_shared_memory(start_method):
    arrays = [np.full(MB // 8 * 2, float(i)) for i in range(4)]  # 2 MB each
    small = np.ones(100)
    with mb.Pool(2, start_method=start_method) as pool:
        seen = pool.map(describe_argument, [*arrays, small])
    assert seen == [(True, float(i) * (MB // 8 * 2)) for i in range(4)] + [(False, 100.0)]


def test_np_sum_over_big_arrays_is_exact():
    arrays = [np.random.default_rng(i).random(300_000) for i in range(6)]
    with mb.Pool(2) as pool:
        assert pool.map(np.sum, arrays) == [a.sum() for a in arrays]


def test_threshold_is_configurable_and_can_be_turned_off():
    medium = np.ones(10_000)  # 80 kB
    with mb.Pool(1) as pool:
        previous = mb.set_array_threshold(50_000)
        try:
            assert pool.submit(describe_argument, medium).result()[0] is True
            mb.set_array_threshold(None)
            big = np.ones(MB)
            assert pool.submit(describe_argument, big).result() == (False, float(MB))
        finally:
            mb.set_array_threshold(previous)
        assert pool.submit(describe_argument, medium).result()[0] is False
    with pytest.raises(ValueError, match="positive"):
        mb.set_array_threshold(0)


def test_segments_are_reused_across_calls():
    arrays = [np.ones(MB // 8 * 3) for _ in range(6)]
    with mb.Pool(2) as pool:
        pool.map(np.sum, arrays)
        after_first = own_segments()
        assert after_first != set()
        seen = set(after_first)
        for _ in range(3):
            pool.map(np.sum, arrays)
            now = own_segments()
            assert after_first <= now  # kept and lent again, not replaced
            seen |= now
        # A later map may keep more arrays in flight at once (its chunk size is learned),
        # so it may add a segment; without reuse, each map would add six.
        assert len(seen) <= len(arrays)
    assert own_segments() == set()  # the pool's shutdown removed them


def test_a_worker_mutating_its_argument_does_not_touch_the_callers_array():
    array = np.ones(MB)
    with mb.Pool(1) as pool:
        assert pool.submit(scale_in_place, array).result() == 2.0 * MB
        assert pool.submit(np.sum, array).result() == float(MB)
    assert array.sum() == float(MB)


def test_big_results_come_back_through_shared_memory(start_method):
    with mb.Pool(1, start_method=start_method) as pool:
        result = pool.submit(np.arange, 1_000_000, dtype=np.float64).result()
    assert backed_by_shared_memory(result)
    assert result[-1] == 999_999.0 and result.flags.writeable
    assert own_segments() == set()  # its name was removed as soon as it was mapped


@pytest.mark.parametrize("make", [
    lambda: np.asfortranarray(np.arange(400_000.0).reshape(400, 1000)),
    lambda: np.arange(800_000.0)[::2],
    lambda: np.zeros(200_000, dtype=[("x", "f8"), ("n", "i4")]),
], ids=["fortran", "strided", "structured"])
def test_layouts_and_dtypes_round_trip(make):
    array = make()
    with mb.Pool(1) as pool:
        back = pool.submit(np.copy, array).result()
    assert back.dtype == array.dtype and back.shape == array.shape
    assert np.array_equal(back, array)


def test_a_worker_killed_holding_big_arguments_leaks_nothing():
    with mb.Pool(1) as pool:
        with pytest.raises(mb.WorkerCrashed):
            pool.submit(kill_myself, np.ones(MB)).result(timeout=30)
        assert pool.submit(np.sum, np.ones(MB)).result(timeout=30) == float(MB)
    assert own_segments() == set()


# ---- SharedArray.empty, the orphan sweep, the threshold from the environment -------------------


def test_empty_is_shared_writable_and_refuses_objects():
    sa = mb.SharedArray.empty((2, 3), dtype="int16")
    assert sa.shape == (2, 3) and sa.dtype == np.int16 and sa.nbytes == 12
    assert os.path.exists(f"/dev/shm/{sa.name}")
    with mb.Pool(1) as pool:
        pool.submit(fill_row, sa, 1).result(timeout=30)
    assert np.asarray(sa)[1].tolist() == [2, 2, 2]
    with pytest.raises(TypeError, match="Python objects"):
        mb.SharedArray.empty(3, dtype=object)
    sa.close()
    sa.unlink()


_ORPHAN_MAKER = textwrap.dedent("""
    import os, signal, sys
    from manybrains.ipc.segment import Segment

    segment = Segment.create(4096)
    print(segment.name, flush=True)
    if sys.argv[1] == "die":
        os.kill(os.getpid(), signal.SIGKILL)  # no chance to remove it
    sys.stdin.read()  # live until told
""")


def _segment_of_a_process(how: str) -> tuple[subprocess.Popen[str], str]:
    proc = subprocess.Popen([sys.executable, "-c", _ORPHAN_MAKER, how], text=True,
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    assert proc.stdout is not None
    name = proc.stdout.readline().strip()
    assert name and os.path.exists(f"/dev/shm/{name}")
    return proc, name


def test_a_pool_shutting_down_removes_segments_of_dead_processes_only(monkeypatch):
    from manybrains.ipc import arena

    # Another program's pool on this machine may sweep the orphan too: also record that
    # this pool's shutdown swept, and what was there when it did.
    swept = []
    sweep = arena.sweep_orphans

    def recording() -> int:
        swept.append(os.path.exists(f"/dev/shm/{orphan}"))
        return sweep()

    monkeypatch.setattr(arena, "sweep_orphans", recording)
    dead, orphan = _segment_of_a_process("die")
    dead.wait(timeout=30)
    alive, kept = _segment_of_a_process("live")
    try:
        with mb.Pool(1) as pool:
            pool.submit(fill_row, mb.SharedArray.zeros((1, 1)), 0).result(timeout=30)
        assert swept, "the pool's shutdown did not sweep"
        assert not os.path.exists(f"/dev/shm/{orphan}"), "the orphan sweep did not remove it"
        assert os.path.exists(f"/dev/shm/{kept}"), "a live process's segment was removed"
    finally:
        alive.communicate("", timeout=30)
        unlink(kept)
        unlink(orphan)


_THRESHOLD_SCRIPT = textwrap.dedent("""
    import mmap, sys
    import numpy as np
    import manybrains as mb

    def shared(array):
        base = array
        while isinstance(base, (np.ndarray, memoryview)):
            base = base.base if isinstance(base, np.ndarray) else base.obj
        return isinstance(base, mmap.mmap)

    def make(n):
        return np.ones(n)

    if __name__ == "__main__":
        with mb.Pool(1, start_method=sys.argv[1]) as pool:
            argument = pool.submit(shared, np.ones(10_000)).result()       # 80 kB in
            result = shared(pool.submit(make, 10_000).result())            # 80 kB back
            big = pool.submit(shared, np.ones(1 << 18)).result()           # 2 MB in
        print(mb.set_array_threshold(None), argument, result, big)  # the setting it replaced
""")


@pytest.mark.parametrize(("value", "expected"), [
    ("50000", "50000 True True True"),
    ("off", "None False False False"),
    ("", f"{MB} False False True"),
])
def test_the_threshold_comes_from_the_environment_in_parent_and_workers(value, expected,
                                                                       start_method, tmp_path):
    script = tmp_path / "threshold.py"
    script.write_text(_THRESHOLD_SCRIPT)
    env = {**os.environ, "MANYBRAINS_ARRAY_THRESHOLD": value}
    done = subprocess.run([sys.executable, str(script), start_method],
                          capture_output=True, text=True, timeout=60, env=env, check=False)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == expected.split()


@pytest.mark.parametrize("value", ["big", "-5", "1.5"])
def test_a_bad_threshold_in_the_environment_says_what_to_write(value):
    env = {**os.environ, "MANYBRAINS_ARRAY_THRESHOLD": value}
    done = subprocess.run([sys.executable, "-c", "import manybrains as mb; mb.Pool"],
                          capture_output=True, text=True, timeout=60, env=env, check=False)
    assert done.returncode != 0
    assert f"MANYBRAINS_ARRAY_THRESHOLD={value!r}: give a number of bytes" in done.stderr
