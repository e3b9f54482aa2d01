"""Workers are named and numbered as the stdlib's pools name and number theirs.

``multiprocessing.Pool`` workers are ``ForkPoolWorker-N`` (``SpawnPoolWorker-N``,
``ForkServerPoolWorker-N``), ``ProcessPoolExecutor`` workers keep the Process names
(``ForkProcess-N``...), and N comes from the program's process counter, shared with every
``Process`` it makes. One script runs on the stdlib and on manybrains, the import changed;
the default start method, ``template``, forks, so it is compared with the stdlib's ``fork``.
"""

from __future__ import annotations

import pytest
import usercode

SCRIPT = """
    import multiprocessing
    import os
    import sys
    import time

    if sys.argv[1] == "manybrains":
        from manybrains import Pool, ProcessPoolExecutor
    else:
        from concurrent.futures import ProcessPoolExecutor
        from multiprocessing.pool import Pool

    def who(main):
        time.sleep(0.05)
        me = multiprocessing.current_process()
        parent = multiprocessing.parent_process()
        return (me.name, me._identity, parent.pid == main[0], parent.name, parent.is_alive(),
                bytes(me.authkey).hex() == main[1])

    def names(run):
        # Until every worker has run a task (a busy worker may take them all).
        seen = set()
        for _ in range(50):
            seen |= set(run())
            if len({name for name, *_ in seen}) >= 2:
                break
        return sorted(seen)

    if __name__ == "__main__":
        method = sys.argv[2]
        context = None if method == "template" else multiprocessing.get_context(method)
        key = [(os.getpid(), bytes(multiprocessing.current_process().authkey).hex())] * 4
        # The program's own processes share the counter with the pools' workers.
        print("before", multiprocessing.Process().name)
        with Pool(2, None, (), None, context) as pool:
            print("pool", names(lambda: pool.map(who, key, 1)))
        print("after", multiprocessing.Process().name)
        with ProcessPoolExecutor(2, mp_context=context) as executor:
            print("executor", names(lambda: executor.map(who, key)))
        # Each worker runs one task, then a new one, with a new number, takes its place.
        with Pool(2, None, (), 1, context) as pool:
            print("replaced", sorted({n for n, *_ in pool.map(who, key, 1)}))
"""


def _run(library: str, method: str) -> list[str]:
    done = usercode.run(SCRIPT, timeout=120, args=[library, method])
    assert done.returncode == 0, done
    return done.stdout.splitlines()


@pytest.mark.timeout(180)
@pytest.mark.parametrize(("method", "stdlib_method"), [
    ("template", "fork"), ("fork", "fork"), ("forkserver", "forkserver"), ("spawn", "spawn")])
def test_workers_have_the_stdlib_names_and_numbers(method, stdlib_method):
    ours = _run("manybrains", method)
    theirs = _run("stdlib", stdlib_method)
    assert ours == theirs
