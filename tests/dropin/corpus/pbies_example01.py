# Source: https://github.com/pbies/bitcoin-tools/blob/main/mt/example01.py
# Licence: MIT, Copyright (c) 2024-2025 pbies, see LICENSES.md
# Changes: sleep length: 0.05 s instead of 1 s. (No ``if __name__ == '__main__'`` guard,
#   as written.)
# Tasks print from 3 threads, then 3 processes, in any order, and a
# thread's line can be cut by another's:
# corpus: tokens Task \d+ (?:started|finished)
#!/usr/bin/env python3

import concurrent.futures as cf
import time

def sleep_and_print(num):
	print(f"Task {num} started")
	time.sleep(0.05)
	print(f"Task {num} finished")

# Using ThreadPoolExecutor (threads)
with cf.ThreadPoolExecutor(max_workers=3) as executor:
	futures = [executor.submit(sleep_and_print, i) for i in range(10)]
	for future in cf.as_completed(futures):
		future.result()

# Using ProcessPoolExecutor (processes)
with cf.ProcessPoolExecutor(max_workers=3) as executor:
	futures = [executor.submit(sleep_and_print, i) for i in range(10)]
	for future in cf.as_completed(futures):
		future.result()
