"""Several workers fill one SharedArray in place: no copies travel back.

Each task gets the array by name (a few hundred bytes, whatever its size) and writes its own
rows; the main process sees every write.
"""

import os

import numpy as np

import manybrains as mb


def fill(image: mb.SharedArray, row: int) -> int:
    pixels = np.asarray(image)  # a view of the shared memory
    pixels[row] = row * 10 + np.arange(pixels.shape[1])
    return os.getpid()


if __name__ == "__main__":
    with mb.SharedArray.zeros((8, 5), dtype="int64") as image, mb.Pool(2) as pool:
        pids = pool.starmap(fill, [(image, row) for row in range(8)], chunksize=1)
        print(np.asarray(image))
        print(f"{len(set(pids))} worker processes wrote 8 rows; row sums: "
              f"{np.asarray(image).sum(axis=1).tolist()}")
