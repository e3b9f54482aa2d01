# Source: https://pymotw.com/3/concurrent.futures/#process-pools
#   (Python 3 Module of the Week, dhellmann/pymotw-3,
#   source/concurrent.futures/futures_process_pool_broken.py)
# Licence: BSD-2-Clause, Copyright (c) 2016 Doug Hellmann (code of PyMOTW-3), see LICENSES.md
# Changes: none. (No ``if __name__ == '__main__'`` guard, as written.)
# The stdlib breaks the whole pool when one of its workers is killed, so the next task
# fails with BrokenProcessPool ("could not start new tasks: ..."). manybrains replaces the
# killed worker and runs the next task (docs/drop-in.md, "Where they differ, on purpose":
# "a worker dies"), so nothing is printed after "submitting another task":
# corpus: racy
# corpus: replace ^killing process \d+$ => killing process <pid>
# corpus: expect-manybrains
# | getting the pid for one worker
# | killing process <pid>
# | submitting another task
#!/usr/bin/env python3
# encoding: utf-8
#
# Copyright (c) 2016 Doug Hellmann.  All rights reserved.
# Written for https://pymotw.com
#
"""Detecting broken process pools.
"""

#end_pymotw_header
from concurrent import futures
import os
import signal


with futures.ProcessPoolExecutor(max_workers=2) as ex:
    print('getting the pid for one worker')
    f1 = ex.submit(os.getpid)
    pid1 = f1.result()

    print('killing process {}'.format(pid1))
    os.kill(pid1, signal.SIGHUP)

    print('submitting another task')
    f2 = ex.submit(os.getpid)
    try:
        pid2 = f2.result()
    except futures.process.BrokenProcessPool as e:
        print('could not start new tasks: {}'.format(e))
