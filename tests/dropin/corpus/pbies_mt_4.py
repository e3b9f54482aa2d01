# Source: https://github.com/pbies/bitcoin-tools/blob/main/mt/mt-4.py
# Licence: MIT, Copyright (c) 2024-2025 pbies, see LICENSES.md
# Changes: none. (No ``if __name__ == '__main__'`` guard, as written.)
# The four workers print their chunks with end=' ' and flush them in blocks that
# interleave, cutting words:
# corpus: count-chars
#!/usr/bin/env python3

from multiprocessing.pool import Pool

def go(arg):
	print(arg, end=' ')

pool = Pool(4)

pool.map(go, range(16384), chunksize=4096)

pool.close()
pool.join()
