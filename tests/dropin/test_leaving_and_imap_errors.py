"""Two stdlib behaviours programs rely on, each in a real script run under the stdlib and
again with only the import swapped:

- ``imap``/``imap_unordered`` raise a call's error at its place and the next ``next()`` goes
  on with the remaining results (CPython's own ``mp_pool.py`` example checks this);
- leaving ``with Pool()`` terminates the pool: the stdlib's documentation leaves a 10 s task
  behind, and a task that never ends must not hang the program. manybrains fails what it
  stopped with ``PoolClosed`` instead of leaving it pending forever, and waits for
  ``submit``'s futures, as ``concurrent.futures`` does.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import psutil
import pytest

import manybrains as mb

SOURCE = str(Path(mb.__file__).resolve().parent.parent)
STDLIB = "from multiprocessing import Pool"
SWAPPED = "from manybrains import Pool"

IMAP_ERRORS = """
    import sys
    from multiprocessing import Pool

    def f(x):
        if x == 5:
            raise ZeroDivisionError(f"item {x}")
        return x * x

    def drain(it):
        seen = []
        while True:
            try:
                seen.append(it.next(timeout=30) if len(seen) % 2 else next(it))
            except ZeroDivisionError as error:
                seen.append(f"error: {error}")
            except StopIteration:
                return seen

    if __name__ == "__main__":
        with Pool(2) as pool:
            print(drain(pool.imap(f, range(10))))
            print(sorted(map(str, drain(pool.imap_unordered(f, range(10))))))
            try:
                print(list(pool.imap(f, range(10))))
            except ZeroDivisionError:
                print("list(imap) raised ZeroDivisionError")
            if sys.argv[1] == "manybrains":  # the stdlib ends a chunked imap at the error
                print("chunks of 3:", drain(pool.imap(f, range(10), 3)))
"""

DOCUMENTATION_EXAMPLE = """
    import time
    from multiprocessing import TimeoutError
    from multiprocessing import Pool

    def f(x):
        return x * x

    if __name__ == "__main__":
        with Pool(processes=2) as pool:
            print(pool.map(f, range(10)))
            res = pool.apply_async(time.sleep, (10,))  # a single worker sleeps for 10 s
            try:
                print(res.get(timeout=1))
            except TimeoutError:
                print("We lacked patience and got a multiprocessing.TimeoutError")
            print("For the moment, the pool remains available for more work")
        print("Now the pool is closed and no longer available")
"""

NEVER_ENDS = """
    import os
    import sys
    import time
    from multiprocessing import Pool

    def forever(x):
        while True:
            time.sleep(0.05)

    if __name__ == "__main__":
        with Pool(2) as pool:
            result = pool.apply_async(forever, (1,), callback=print, error_callback=print)
            chunks = pool.map_async(forever, range(4), 1)
            it = pool.imap(forever, range(4))
            time.sleep(0.3)
        print("left the block")
        if sys.argv[1] == "manybrains":
            for pending in (result, chunks):
                try:
                    pending.get(timeout=5)
                except Exception as error:
                    print(type(error).__name__,
                          "terminated when its `with` block ended" in str(error))
            try:
                next(it)
            except Exception as error:
                print("imap:", type(error).__name__)
"""

FUTURES_ARE_WAITED_FOR = """
    import time
    from manybrains import Pool

    def slow(x):
        time.sleep(0.3)
        return x

    if __name__ == "__main__":
        with Pool(2) as pool:
            futures = [pool.submit(slow, x) for x in range(3)]
        print([future.result(timeout=0) for future in futures])
"""


def _run(script: str, tmp_path: Path, *, swap: bool, timeout: float = 60
         ) -> tuple[subprocess.CompletedProcess[str], float, list[psutil.Process]]:
    source = textwrap.dedent(script)
    if swap:
        assert STDLIB in source
        source = source.replace(STDLIB, SWAPPED)
    path = tmp_path / ("swapped.py" if swap else "stdlib.py")
    path.write_text(source)
    env = {**os.environ, "PYTHONPATH": SOURCE}
    start = time.monotonic()
    process = subprocess.Popen([sys.executable, str(path), "manybrains" if swap else "stdlib"],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               cwd=tmp_path, env=env, start_new_session=True)
    try:
        out, err = process.communicate(timeout=timeout)
    finally:
        left = _left_in_session(process.pid)
    elapsed = time.monotonic() - start
    return subprocess.CompletedProcess(process.args, process.returncode, out, err), elapsed, left


def _left_in_session(sid: int) -> list[psutil.Process]:
    """What the script left behind (its session), killed so the suite leaks nothing."""
    deadline = time.monotonic() + 2
    while True:
        left = [p for p in psutil.process_iter() if _session(p) == sid]
        if not left or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    for p in left:
        p.kill()
    psutil.wait_procs(left, timeout=5)
    return left


def _session(process: psutil.Process) -> int | None:
    try:
        return os.getsid(process.pid)
    except OSError:
        return None


def test_imap_goes_on_after_a_call_raises_as_the_stdlib_does(tmp_path):
    stdlib, _, _ = _run(IMAP_ERRORS, tmp_path, swap=False)
    swapped, _, left = _run(IMAP_ERRORS, tmp_path, swap=True)
    assert swapped.returncode == stdlib.returncode == 0, swapped.stderr
    *same, chunked = swapped.stdout.splitlines()
    assert same == stdlib.stdout.splitlines()
    assert "'error: item 5', 36, 49" in stdlib.stdout  # the results after the error come
    # and with chunks too: the calls after the failing one in its chunk still run
    assert chunked == "chunks of 3: [0, 1, 4, 9, 16, 'error: item 5', 36, 49, 64, 81]"
    assert not left


@pytest.mark.timeout(90)
def test_leaving_the_block_stops_pending_work_as_the_stdlib_documentation_expects(tmp_path):
    stdlib, _, _ = _run(DOCUMENTATION_EXAMPLE, tmp_path, swap=False)
    swapped, swapped_s, left = _run(DOCUMENTATION_EXAMPLE, tmp_path, swap=True)
    assert swapped.returncode == stdlib.returncode == 0, swapped.stderr
    assert swapped.stdout == stdlib.stdout
    assert swapped_s < 6, f"took {swapped_s:.1f} s: the 10 s task was waited for"
    assert not left


@pytest.mark.timeout(90)
def test_a_task_that_never_ends_does_not_hang_the_end_of_the_block(tmp_path):
    stdlib, _, _ = _run(NEVER_ENDS, tmp_path, swap=False, timeout=30)
    assert stdlib.returncode == 0 and stdlib.stdout == "left the block\n"
    swapped, _, left = _run(NEVER_ENDS, tmp_path, swap=True, timeout=30)
    assert swapped.returncode == 0, swapped.stderr
    # where the stdlib's results wait forever, ours say why they will never come
    assert swapped.stdout.splitlines() == ["left the block", "PoolClosed True",
                                           "PoolClosed True", "imap: PoolClosed"]
    assert not left


def test_leaving_the_block_waits_for_submitted_futures(tmp_path):
    done, _, left = _run(FUTURES_ARE_WAITED_FOR, tmp_path, swap=False)
    assert done.returncode == 0, done.stderr
    assert done.stdout == "[0, 1, 2]\n"
    assert not left
