# Source: https://github.com/realpython/materials/blob/master/concurrency-overview/cpu_mp.py
#   (Real Python, "Speed Up Your Python Program With Concurrency")
# Licence: MIT, Copyright (c) 2018 Real Python, see LICENSES.md
# Changes: input size: numbers are 50_000 + x instead of 5_000_000 + x.
# corpus: timings
#!/usr/bin/env python3
import multiprocessing
import time


def cpu_bound(number):
    return sum(i * i for i in range(number))


def find_sums(numbers):
    with multiprocessing.Pool() as pool:
        pool.map(cpu_bound, numbers)


if __name__ == "__main__":
    numbers = [50_000 + x for x in range(20)]

    start_time = time.time()
    find_sums(numbers)
    duration = time.time() - start_time
    print(f"Duration {duration} seconds")
