"""The logging cookbook's "logging to a single file from multiple processes" runs unchanged.

Its QueueHandler/QueueListener variant starts a listener thread, then a pool whose initializer
gets a ``multiprocessing.Queue()``. A program that runs a thread has no template, and a queue
of the default ('fork') context cannot reach a forkserver worker; the stdlib's pool forks
here, so manybrains forks too, and says why. Each case is a real script run with the
interpreter of the test run, under the default start method, as its user runs it.
"""

from __future__ import annotations

import json
from pathlib import Path

import usercode

# The cookbook's code, with one import changed; the listener also writes each record it
# takes from the queue to a file of its own, so that the test can tell that route apart.
COOKBOOK = """
    import json
    import logging
    import logging.handlers
    import multiprocessing
    import os
    import sys
    import time

    from manybrains import Pool  # was: from multiprocessing import Pool


    def worker_init(q):
        # all records from worker processes go to qh and then into q
        qh = logging.handlers.QueueHandler(q)
        logger = logging.getLogger()
        logger.setLevel(logging.DEBUG)
        logger.addHandler(qh)
        logging.info("worker ready")


    def logger_init(path, context):
        q = multiprocessing.get_context(context).Queue() if context else multiprocessing.Queue()
        # this is the handler for all log records
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(levelname)s: %(process)s - %(message)s"))
        via_queue = logging.FileHandler(path)
        via_queue.setFormatter(logging.Formatter("%(process)s %(message)s"))
        # ql gets records from the queue and sends them to the handlers
        ql = logging.handlers.QueueListener(q, handler, via_queue)
        ql.start()
        logger = logging.getLogger()
        logger.setLevel(logging.DEBUG)
        # add the handler to the logger so records from this process are handled
        logger.addHandler(handler)
        return ql, q


    def f(x):
        logging.info("hello from task %d", x)
        time.sleep(0.1)  # so that each worker gets some of the tasks
        return x * x


    def main():
        q_listener, q = logger_init(sys.argv[1], sys.argv[2] if len(sys.argv) > 2 else None)
        logging.info("hello from main thread")
        pool = Pool(4, worker_init, [q])
        results = pool.map(f, range(10), 1)
        stats = pool.statistics()
        pool.close()
        pool.join()
        q_listener.stop()
        print(json.dumps({"results": results, "parent": os.getpid(),
                          "method": stats.start_method, "why": stats.start_method_why,
                          "stdlib": multiprocessing.get_start_method(allow_none=True)
                                    or multiprocessing.get_all_start_methods()[0]}))


    if __name__ == "__main__":
        main()
"""

# A plain thread runs, and the workers share a multiprocessing.Lock() with the parent.
THREAD_AND_LOCK = """
    import json
    import multiprocessing
    import threading

    from manybrains import Pool


    def init(lock):
        global LOCK
        LOCK = lock


    def try_lock(wait):
        # Free, it may still be held a moment by the other worker trying it: wait a little.
        if LOCK.acquire(True, wait) if wait else LOCK.acquire(False):
            LOCK.release()
            return True
        return False


    if __name__ == "__main__":
        stop = threading.Event()
        thread = threading.Thread(target=stop.wait)
        thread.start()
        lock = multiprocessing.Lock()
        try:
            with Pool(2, init, (lock,)) as pool:
                with lock:  # held here: no worker can take the same lock
                    held = pool.map(try_lock, [0] * 4)
                free = pool.map(try_lock, [5] * 4)
                stats = pool.statistics()
        finally:
            stop.set()
            thread.join()
        print(json.dumps({"held": held, "free": free, "method": stats.start_method,
                          "why": stats.start_method_why,
                          "stdlib": multiprocessing.get_all_start_methods()[0]}))
"""

# The program asks for forkserver itself: the stdlib refuses the queue, and so does manybrains,
# saying what to do.
EXPLICIT_FORKSERVER = """
    import json
    import multiprocessing

    import manybrains as mb


    def init(q):
        pass


    if __name__ == "__main__":
        q = multiprocessing.get_context("fork").Queue()
        context = multiprocessing.get_context("forkserver")
        found = {}
        for name, make in [("stdlib", multiprocessing.Pool), ("manybrains", mb.Pool)]:
            try:
                make(2, init, [q], context=context).terminate()
                found[name] = "accepted"
            except Exception as exc:
                found[name] = f"{type(exc).__name__}: {exc}"
        print(json.dumps(found))
"""


def _run(script: str, *args: str) -> tuple[dict, str]:
    """Run ``script`` as a file: what it printed last, as JSON, and its stderr."""
    done = usercode.run(script, timeout=50, args=args)
    assert done.returncode == 0, done
    return json.loads(done.stdout.strip().splitlines()[-1]), done.stderr


def _check_cookbook(found: dict, stderr: str, log: Path) -> None:
    assert found["results"] == [x * x for x in range(10)]
    records = [line.split(" ", 1) for line in log.read_text().splitlines()]
    by_message: dict[str, set[int]] = {}
    for pid, message in records:
        by_message.setdefault(message, set()).add(int(pid))
    tasks = [f"hello from task {x}" for x in range(10)]
    assert all(task in by_message for task in tasks), records  # each one, through the queue
    workers = set().union(*(by_message[task] for task in tasks))
    assert found["parent"] not in workers
    assert len(workers) >= 2, f"every task ran in one worker: {records}"
    assert workers <= by_message["worker ready"]
    # The cookbook's own handler writes them too (each worker's records also reach the
    # parent's handlers directly, as the inherited handler writes them under the stdlib's fork).
    assert all(task in stderr for task in tasks)
    assert "hello from main thread" in stderr


def test_the_cookbook_queue_listener_pattern_logs_every_record(tmp_path):
    log = tmp_path / "via_queue.log"
    found, stderr = _run(COOKBOOK, str(log))
    _check_cookbook(found, stderr, log)
    if found["stdlib"] == "fork":  # Python 3.10-3.13 on Linux: fork, and say why
        assert found["method"] == "fork"
        assert "initargs[0] (Queue)" in found["why"], found["why"]
        assert "'fork' context" in found["why"] and "threads run" in found["why"]
    else:  # 3.14: the default queue is forkserver's, which a forkserver worker can reach
        assert found["method"] == "forkserver"


def test_the_cookbook_with_a_forkserver_queue_keeps_forkserver_workers(tmp_path):
    # What the refusals advise. The workers do not re-run the script, yet worker_init reads
    # logging.handlers, which only the script imported: it is imported for them.
    log = tmp_path / "via_queue.log"
    found, stderr = _run(COOKBOOK, str(log), "forkserver")
    _check_cookbook(found, stderr, log)
    assert found["method"] == "forkserver"


def test_a_running_thread_and_a_stdlib_lock_in_initargs_share_the_lock():
    found, _ = _run(THREAD_AND_LOCK)
    assert found["held"] == [False] * 4, "the workers do not share the parent's lock"
    assert found["free"] == [True] * 4
    if found["stdlib"] == "fork":
        assert found["method"] == "fork"
        assert "initargs[0] (Lock)" in found["why"], found["why"]


def test_an_explicit_forkserver_still_refuses_a_fork_queue_saying_what_to_do():
    found, _ = _run(EXPLICIT_FORKSERVER)
    assert found["stdlib"] != "accepted"
    refused = found["manybrains"]
    assert refused.startswith("SerializationError: cannot pickle initargs[0] (Queue)"), refused
    for fix in ("multiprocessing.get_context('forkserver')", "mb.Queue", "start_method='fork'"):
        assert fix in refused, f"the error does not say {fix!r}: {refused}"
