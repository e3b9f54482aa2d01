# Source: https://docs.python.org/3.13/library/asyncio-eventloop.html#executing-code-in-thread-or-process-pools
#   (python/cpython, Doc/library/asyncio-eventloop.rst, loop.run_in_executor() example,
#   as in the 3.12/3.13 documentation)
# Licence: PSF-2.0 / Zero-Clause BSD (Python documentation examples), see LICENSES.md
# Changes: input size: cpu_bound sums range(10 ** 5) instead of range(10 ** 7).
# The thread pools print 100 random bytes read from /dev/urandom:
# corpus: replace ^(default|custom) thread pool b.*$ => \1 thread pool <random bytes>

import asyncio
import concurrent.futures

def blocking_io():
    # File operations (such as logging) can block the
    # event loop: run them in a thread pool.
    with open('/dev/urandom', 'rb') as f:
        return f.read(100)

def cpu_bound():
    # CPU-bound operations will block the event loop:
    # in general it is preferable to run them in a
    # process pool.
    return sum(i * i for i in range(10 ** 5))

async def main():
    loop = asyncio.get_running_loop()

    ## Options:

    # 1. Run in the default loop's executor:
    result = await loop.run_in_executor(
        None, blocking_io)
    print('default thread pool', result)

    # 2. Run in a custom thread pool:
    with concurrent.futures.ThreadPoolExecutor() as pool:
        result = await loop.run_in_executor(
            pool, blocking_io)
        print('custom thread pool', result)

    # 3. Run in a custom process pool:
    with concurrent.futures.ProcessPoolExecutor() as pool:
        result = await loop.run_in_executor(
            pool, cpu_bound)
        print('custom process pool', result)

if __name__ == '__main__':
    asyncio.run(main())
