"""A process sends "Hello from process" to the main process through a Queue."""

import manybrains as mb


def worker(q: mb.Queue) -> None:
    q.put("Hello from process")


if __name__ == "__main__":
    q = mb.Queue()
    p = mb.spawn(worker, q)
    p.join()  # safe before get(): the item waits in shared memory, not in a pipe
    print(q.get())
