# Source: https://docs.python.org/3/library/multiprocessing.html#introduction
#   (python/cpython, Doc/library/multiprocessing.rst: the first example, "data parallelism
#   using Pool")
# Licence: PSF-2.0 / Zero-Clause BSD (Python documentation examples), see LICENSES.md
# Changes: none

from multiprocessing import Pool

def f(x):
    return x*x

if __name__ == '__main__':
    with Pool(5) as p:
        print(p.map(f, [1, 2, 3]))
