"""The memory picture: processes have their own copy of the data, threads share one.

Each process appends to ``data`` and prints its pid, the address of the list it sees and its
length; the main process's list is untouched. Threads append to the very same list (one
address) and the main thread sees all their appends.
"""

import os
import threading

import manybrains as mb

data: list[str] = ["from main"]


def touch(who: str) -> tuple[int, int]:
    data.append(who)
    line = f"{who}: pid {os.getpid()}, data at {hex(id(data))}, {len(data)} items\n"
    print(line, end="", flush=True)  # one write, so lines from two threads do not interleave
    return id(data), len(data)


if __name__ == "__main__":
    print(f"main: pid {os.getpid()}, data at {hex(id(data))}, {len(data)} items")
    for who in ("process 1", "process 2"):
        mb.spawn(touch, who).result()
    print(f"after processes: main sees {len(data)} item(s): each process changed its own copy")
    threads = [threading.Thread(target=touch, args=(f"thread {i}",)) for i in (1, 2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    print(f"after threads: main sees {len(data)} items: threads changed the shared list")
