# Source: https://pymotw.com/3/concurrent.futures/#process-pools
#   (Python 3 Module of the Week, dhellmann/pymotw-3,
#   source/concurrent.futures/futures_process_pool_map.py)
# Licence: BSD-2-Clause, Copyright (c) 2016 Doug Hellmann (code of PyMOTW-3), see LICENSES.md
# Changes: none. (No ``if __name__ == '__main__'`` guard and no shutdown, as written.)
# Which of the two workers runs a task varies:
# corpus: replace in process \d+$ => in process <pid>
#!/usr/bin/env python3
# encoding: utf-8
#
# Copyright (c) 2016 Doug Hellmann.  All rights reserved.
# Written for https://pymotw.com
#
"""Running tasks in a managed group of processes.
"""

#end_pymotw_header
from concurrent import futures
import os


def task(n):
    return (n, os.getpid())


ex = futures.ProcessPoolExecutor(max_workers=2)
results = ex.map(task, range(5, 0, -1))
for n, pid in results:
    print('ran task {} in process {}'.format(n, pid))
