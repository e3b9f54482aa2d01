"""Two stdlib behaviours programs rely on, each in a real script run under the stdlib and
again with only the import swapped:

- ``imap``/``imap_unordered`` raise a call's error at its place and the next ``next()`` goes
  on with the remaining results (CPython's own ``mp_pool.py`` example checks this);
- leaving ``with Pool()`` terminates the pool: a task that never ends must not hang the
  program (the stdlib documentation's own example, which leaves a 10 s task behind, is in
  the corpus: ``corpus/cpython_docs_pool_of_workers.py``). manybrains fails what it stopped
  with ``PoolClosed`` instead of leaving it pending forever, and waits for ``submit``'s
  futures, as ``concurrent.futures`` does.
"""

from __future__ import annotations

import pytest
import usercode

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


def _run(script: str, *, swap: bool, timeout: float = 60) -> usercode.Outcome:
    """The script as written (the stdlib), or with only its pool import swapped."""
    if swap:
        assert STDLIB in script
        script = script.replace(STDLIB, SWAPPED)
    return usercode.run(script, timeout=timeout, args=["manybrains" if swap else "stdlib"])


def test_imap_goes_on_after_a_call_raises_as_the_stdlib_does():
    stdlib = _run(IMAP_ERRORS, swap=False)
    swapped = _run(IMAP_ERRORS, swap=True)
    assert swapped.returncode == stdlib.returncode == 0, swapped
    *same, chunked = swapped.stdout.splitlines()
    assert same == stdlib.stdout.splitlines()
    assert "'error: item 5', 36, 49" in stdlib.stdout  # the results after the error come
    # and with chunks too: the calls after the failing one in its chunk still run
    assert chunked == "chunks of 3: [0, 1, 4, 9, 16, 'error: item 5', 36, 49, 64, 81]"
    assert not swapped.left_behind


@pytest.mark.timeout(90)
def test_a_task_that_never_ends_does_not_hang_the_end_of_the_block():
    stdlib = _run(NEVER_ENDS, swap=False, timeout=30)
    assert stdlib.returncode == 0 and stdlib.stdout == "left the block\n"
    swapped = _run(NEVER_ENDS, swap=True, timeout=30)
    assert swapped.returncode == 0, swapped
    # where the stdlib's results wait forever, ours say why they will never come
    assert swapped.stdout.splitlines() == ["left the block", "PoolClosed True",
                                           "PoolClosed True", "imap: PoolClosed"]
    assert not swapped.left_behind


def test_leaving_the_block_waits_for_submitted_futures():
    done = _run(FUTURES_ARE_WAITED_FOR, swap=False)
    assert done.returncode == 0, done
    assert done.stdout == "[0, 1, 2]\n"
    assert not done.left_behind
