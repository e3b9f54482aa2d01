# Source: https://github.com/realpython/materials/blob/master/python-parallel-processing/02_process-based_parallelism/04_echo_benchmark.py
#   (Real Python, "Bypassing the GIL for Parallel Processing in Python")
# Licence: MIT, Copyright (c) 2018 Real Python, see LICENSES.md
# Changes: input size: 150_000 complex numbers instead of 15_000_000.
# corpus: timings
import time
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor


def echo(data):
    return data


if __name__ == "__main__":
    data = [complex(i, i) for i in range(150_000)]
    for executor in ThreadPoolExecutor(), ProcessPoolExecutor():
        t1 = time.perf_counter()
        with executor:
            future = executor.submit(echo, data)
            future.result()
        t2 = time.perf_counter()
        print(f"{executor.__class__.__name__:>20s}: {t2 - t1:.2f}s")
