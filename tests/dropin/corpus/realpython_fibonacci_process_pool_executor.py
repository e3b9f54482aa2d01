# Source: https://github.com/realpython/materials/blob/master/python-parallel-processing/02_process-based_parallelism/03_fibonacci_concurrent_futures_process_pool.py
#   (Real Python, "Bypassing the GIL for Parallel Processing in Python")
# Licence: MIT, Copyright (c) 2018 Real Python, see LICENSES.md
# Changes: input size: range(25) instead of range(40).
from concurrent.futures import ProcessPoolExecutor


def fib(n):
    return n if n < 2 else fib(n - 2) + fib(n - 1)


if __name__ == "__main__":
    with ProcessPoolExecutor(max_workers=4) as executor:
        results = executor.map(fib, range(25))
        for i, result in enumerate(results):
            print(f"fib({i}) = {result}")
