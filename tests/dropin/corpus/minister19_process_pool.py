# Source: https://github.com/minister19/Python_snippets/blob/main/concurrency_parallelism/concurrent.futures/12.process_pool.py
# Licence: MIT, Copyright (c) 2021 Shuang Gao, see LICENSES.md
# Changes: sleep lengths: the task sleeps 0.2 s instead of 2 s, main() 1.5 s instead of 3 s.
from concurrent.futures import ProcessPoolExecutor, as_completed
from time import sleep


def task(message):
    sleep(0.2)
    return message


def main():
    executor = ProcessPoolExecutor(5)
    future = executor.submit(task, ("Completed"))
    print(future.done())
    sleep(1.5)
    print(future.done())
    print(future.result())


if __name__ == '__main__':
    main()


values = [2, 3, 4, 5]


def square(n):
    return n * n


def main2():
    with ProcessPoolExecutor(max_workers=5) as executor:
        results = executor.map(square, values)
    for result in results:
        print(result)


if __name__ == '__main__':
    main2()
