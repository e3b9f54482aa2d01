# Source: https://docs.python.org/3/library/multiprocessing.html#multiprocessing.pool.AsyncResult
#   (python/cpython, Doc/library/multiprocessing.rst, "Process Pools": "The following
#   example demonstrates the use of a pool"). It ends, as documented, with an uncaught
#   multiprocessing.TimeoutError.
# Licence: PSF-2.0 / Zero-Clause BSD (Python documentation examples), see LICENSES.md
# Changes: none

from multiprocessing import Pool
import time

def f(x):
    return x*x

if __name__ == '__main__':
    with Pool(processes=4) as pool:         # start 4 worker processes
        result = pool.apply_async(f, (10,)) # evaluate "f(10)" asynchronously in a single process
        print(result.get(timeout=1))        # prints "100" unless your computer is *very* slow

        print(pool.map(f, range(10)))       # prints "[0, 1, 4,..., 81]"

        it = pool.imap(f, range(10))
        print(next(it))                     # prints "0"
        print(next(it))                     # prints "1"
        print(it.next(timeout=1))           # prints "4" unless your computer is *very* slow

        result = pool.apply_async(time.sleep, (10,))
        print(result.get(timeout=1))        # raises multiprocessing.TimeoutError
