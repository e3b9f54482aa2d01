"""Only the task a worker was running fails when the worker dies; a task sent to it that it
never took runs on another worker.

A worker killed from outside between two tasks is still in the supervisor's table for a
moment, and the next task may be sent to it. Scripts, as users write them, run as
subprocesses.
"""

from __future__ import annotations

import pytest
import usercode

# Kill a worker between tasks, then submit at once: 30 times in one pool.
KILL_THEN_SUBMIT = """
    import os
    import signal
    import sys

    from manybrains import Pool

    def square(x):
        return x * x

    if __name__ == "__main__":
        method = None if sys.argv[1] == "template" else sys.argv[1]
        with Pool(2, start_method=method) as pool:
            for i in range(30):
                victim = pool.apply(os.getpid)
                os.kill(victim, signal.SIGKILL)
                assert pool.apply(square, (i,)) == i * i
        print("ok")
"""

# The same, with no race left to chance: the worker is stopped, so a task sent to it
# waits in its pipe (a small one) or half-sent (a big one) when it is killed.
KILL_A_STOPPED_WORKER = """
    import os
    import signal
    import sys
    import time

    from manybrains import Pool

    def size(data):
        return len(data)

    if __name__ == "__main__":
        method = None if sys.argv[1] == "template" else sys.argv[1]
        with Pool(1, start_method=method) as pool:
            for nbytes in (10, 10, 8_000_000):
                victim = pool.apply(os.getpid)
                os.kill(victim, signal.SIGSTOP)
                result = pool.apply_async(size, (b"x" * nbytes,))
                time.sleep(0.3)  # sent to it: it sits in its pipe
                os.kill(victim, signal.SIGKILL)
                assert result.get(timeout=30) == nbytes
            stats = pool.statistics()
            assert stats.crashed == 0 and stats.failed == 0, stats
        print("ok")
"""


# Workers that keep dying before they take their first task (here: as they take it, before
# they note it): after a few in a row the task fails, as a crash, rather than the pool
# starting workers forever.
FRESH_WORKERS_KEEP_DYING = """
    import os

    from manybrains import Pool, WorkerCrashed
    from manybrains.backends.processes import worker

    def square(x):
        return x * x

    def die(mark, task_id):
        os._exit(1)

    if __name__ == "__main__":
        worker.TaskMark.started = die  # the workers fork from this process: they have it too
        with Pool(1) as pool:
            try:
                pool.apply_async(square, (3,)).get(timeout=30)
            except WorkerCrashed:
                print("crashed")
        print("ok")
"""


def _run(source: str, start_method: str) -> list[str]:
    done = usercode.run(source, timeout=90, args=[start_method])
    assert done.returncode == 0, done
    assert done.stdout.splitlines()[-1] == "ok"
    assert not done.left_behind
    return done.stdout.splitlines()[:-1]


@pytest.mark.timeout(120)
@pytest.mark.parametrize("start_method", ["template", "fork", "forkserver"])
def test_a_task_sent_to_a_worker_just_killed_runs_elsewhere(start_method):
    _run(KILL_THEN_SUBMIT, start_method)


@pytest.mark.parametrize("start_method", ["template", "spawn"])
def test_tasks_a_killed_worker_never_took_run_elsewhere(start_method):
    _run(KILL_A_STOPPED_WORKER, start_method)


def test_a_task_fails_when_fresh_workers_keep_dying_before_taking_it():
    assert _run(FRESH_WORKERS_KEEP_DYING, "template") == ["crashed"]
