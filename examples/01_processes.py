"""Three processes, each printing "Processing N", then "Done".

``multiprocessing.Process(target=task, args=(n,))`` starts a process and ``join()`` waits; with
manybrains ``spawn`` does both jobs and ``result()`` also hands back what the task returned.
"""

import os
import sys

import manybrains as mb


def task(num: int) -> int:
    # One write per line: lines from several processes sharing a pipe never interleave.
    sys.stdout.write(f"Processing {num} (pid {os.getpid()})\n")
    sys.stdout.flush()
    return os.getpid()


if __name__ == "__main__":
    handles = [mb.spawn(task, n) for n in (1, 2, 3)]
    pids = [h.result() for h in handles]  # waits for each; re-raises if one failed
    print(f"Done: {len(set(pids))} processes ran the task, the main process is {os.getpid()}")
