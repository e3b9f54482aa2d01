# Source: https://pymotw.com/3/multiprocessing/communication.html#process-pools
#   (Python 3 Module of the Week, dhellmann/pymotw-3, source/multiprocessing/multiprocessing_pool.py)
# Licence: BSD-2-Clause, Copyright (c) 2009 Doug Hellmann (code of PyMOTW-3), see LICENSES.md
# Changes: none
# The initializer's lines come from the workers in any order, and the stdlib's workers write
# the pieces of a line at once, so that one line may hold two "Starting" and the next a bare
# name: the words are compared, not the lines.
# corpus: worker-numbers
# corpus: tokens Starting|(?:Fork|Spawn|ForkServer)PoolWorker-<n>|(?:Input   |Built-in|Pool    ): .*
#!/usr/bin/env python3
# encoding: utf-8
#
# Copyright (c) 2009 Doug Hellmann All rights reserved.
#
"""
"""

#end_pymotw_header
import multiprocessing


def do_calculation(data):
    return data * 2


def start_process():
    print('Starting', multiprocessing.current_process().name)


if __name__ == '__main__':
    inputs = list(range(10))
    print('Input   :', inputs)

    builtin_outputs = map(do_calculation, inputs)
    print('Built-in:', builtin_outputs)

    pool_size = multiprocessing.cpu_count() * 2
    pool = multiprocessing.Pool(
        processes=pool_size,
        initializer=start_process,
    )
    pool_outputs = pool.map(do_calculation, inputs)
    pool.close()  # no more tasks
    pool.join()  # wrap up current tasks

    print('Pool    :', pool_outputs)
