"""A shared counter incremented by two processes, without and then with the lock.

``counter.value += 1`` reads, adds and writes back: two processes interleave those steps and
updates are lost. Under ``counter.lock`` (or with ``counter.add(1)``) none are.

Usage: python 04_shared_value.py [INCREMENTS_PER_PROCESS]   (default 200_000)
"""

import sys

import manybrains as mb


def unlocked(counter: mb.Value, times: int) -> None:
    for _ in range(times):
        counter.value += 1


def locked(counter: mb.Value, times: int) -> None:
    for _ in range(times):
        with counter.lock:
            counter.value += 1


def run(task, times: int) -> int:
    counter = mb.Value("i", 0)
    handles = [mb.spawn(task, counter, times) for _ in range(2)]
    for h in handles:
        h.result()
    return counter.value


if __name__ == "__main__":
    times = int(sys.argv[1]) if len(sys.argv) > 1 else 200_000
    expected = 2 * times
    without = run(unlocked, times)
    print(f"without the lock: {without} of {expected} ({expected - without} updates lost)")
    with_lock = run(locked, times)
    print(f"with the lock:    {with_lock} of {expected} ({expected - with_lock} updates lost)")
