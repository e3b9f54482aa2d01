# Source: https://github.com/minister19/Python_snippets/blob/main/concurrency_parallelism/concurrent.futures/15.process_pool_vs_multiprocessing_pool.py
# Licence: MIT, Copyright (c) 2021 Shuang Gao, see LICENSES.md
# Changes: input sizes: value = [100000, 200000] instead of [100000000, 200000000] (twice).
# corpus: timings
import time
import concurrent.futures
import multiprocessing


value = [100000, 200000]


def counting(n):
    start = time.time()
    while n > 0:
        n -= 1
    return time.time() - start


def main():
    start = time.time()
    with concurrent.futures.ProcessPoolExecutor() as executor:
        for number, time_taken in zip(value, executor.map(counting, value)):
            print('Start: {} Time taken: {}'.format(number, time_taken))
    print('Total time taken: {}'.format(time.time() - start))


if __name__ == '__main__':
    main()


value = [100000, 200000]


def counting(n):
    start = time.time()
    while n > 0:
        n -= 1
    return time.time() - start


def main2():
    start = time.time()
    with multiprocessing.Pool() as p:
        for number, time_taken in zip(value, p.map(counting, value)):
            print('Start: {} Time taken: {}'.format(number, time_taken))
    print('Total time taken: {}'.format(time.time() - start))


if __name__ == '__main__':
    main2()
