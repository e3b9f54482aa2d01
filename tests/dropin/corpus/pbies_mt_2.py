# Source: https://github.com/pbies/bitcoin-tools/blob/main/mt/mt-2.py
# Licence: MIT, Copyright (c) 2024-2025 pbies, see LICENSES.md
# Changes: sleep length: 0.01 s instead of 1 s.
# (tqdm's bar goes to stderr; stdout stays empty.)
# corpus: racy
#!/usr/bin/env python3

from multiprocessing import Pool
import tqdm
import time

def _foo(my_number):
	square = my_number * my_number
	time.sleep(0.01)
	return square 

if __name__ == '__main__':
	with Pool(2) as p:
		r = list(tqdm.tqdm(p.imap_unordered(_foo, range(30), chunksize=1000), total=30))
