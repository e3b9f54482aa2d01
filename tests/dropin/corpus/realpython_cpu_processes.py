# Source: https://github.com/realpython/materials/blob/master/python-concurrency/cpu_processes.py
#   (Real Python, "Speed Up Your Python Program With Concurrency", 2024 edition)
# Licence: MIT, Copyright (c) 2018 Real Python, see LICENSES.md
# Changes: input size: fib(20) instead of fib(35).
# corpus: timings
import concurrent.futures
import time


def main():
    start_time = time.perf_counter()
    with concurrent.futures.ProcessPoolExecutor() as executor:
        executor.map(fib, [20] * 20)
    duration = time.perf_counter() - start_time
    print(f"Computed in {duration} seconds")


def fib(n):
    return n if n < 2 else fib(n - 2) + fib(n - 1)


if __name__ == "__main__":
    main()
