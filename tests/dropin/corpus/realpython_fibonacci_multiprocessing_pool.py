# Source: https://github.com/realpython/materials/blob/master/python-parallel-processing/02_process-based_parallelism/02_fibonacci_multiprocessing_pool.py
#   (Real Python, "Bypassing the GIL for Parallel Processing in Python")
# Licence: MIT, Copyright (c) 2018 Real Python, see LICENSES.md
# Changes: input size: range(25) instead of range(40).
import multiprocessing


def fib(n):
    return n if n < 2 else fib(n - 2) + fib(n - 1)


if __name__ == "__main__":
    with multiprocessing.Pool(processes=4) as pool:
        results = pool.map(fib, range(25))
        for i, result in enumerate(results):
            print(f"fib({i}) = {result}")
