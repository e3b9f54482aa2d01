# Source: https://github.com/minister19/Python_snippets/blob/main/concurrency_parallelism/concurrent.futures/14.multiprocessing_5.py
# Licence: MIT, Copyright (c) 2021 Shuang Gao, see LICENSES.md
# Changes: none
import time
import multiprocessing


def square(n):
    result = n*n
    return result


if __name__ == '__main__':
    inputs = range(5)
    p = multiprocessing.Pool(processes=4)
    p_outputs = p.map(square, inputs)
    p.close()
    p.join()
    print('Pool: ', p_outputs)
