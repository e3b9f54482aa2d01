# Source: https://github.com/python/cpython/blob/main/Lib/test/test_multiprocessing_main_handling.py
#   (python/cpython, Lib/test/test_multiprocessing_main_handling.py: the script in
#   ``test_source``, which CPython runs as ``python script.py START_METHOD``)
# Licence: PSF-2.0 (CPython's test suite), see LICENSES.md
# Changes: none; run with the argument "spawn", as SpawnCmdLineTest does.
# corpus: argv spawn
# multiprocessing includes all sorts of shenanigans to make __main__
# attributes accessible in the subprocess in a pickle compatible way.

# We run the "doesn't work in the interactive interpreter" example from
# the docs to make sure it *does* work from an executed __main__,
# regardless of the invocation mechanism

import sys
import time
from multiprocessing import Pool, set_start_method

# We use this __main__ defined function in the map call below in order to
# check that multiprocessing in correctly running the unguarded
# code in child processes and then making it available as __main__
def f(x):
    return x*x

# Check explicit relative imports
if "check_sibling" in __file__:
    # We're inside a package and not in a __main__.py file
    # so make sure explicit relative imports work correctly
    from . import sibling

if __name__ == '__main__':
    start_method = sys.argv[1]
    set_start_method(start_method)
    p = Pool(5)
    results = []
    p.map_async(f, [1, 2, 3], callback=results.extend)
    deadline = time.time() + 5 # up to 5 s to report the results
    while not results:
        time.sleep(0.05)
        if time.time() > deadline:
            raise RuntimeError("Timed out waiting for results")
    results.sort()
    print(start_method, "->", results)
