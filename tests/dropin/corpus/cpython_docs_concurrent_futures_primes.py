# Source: https://docs.python.org/3/library/concurrent.futures.html#processpoolexecutor-example
#   (python/cpython, Doc/library/concurrent.futures.rst, "ProcessPoolExecutor Example")
# Licence: PSF-2.0 / Zero-Clause BSD (Python documentation examples), see LICENSES.md
# Changes: input sizes: PRIMES holds 9- and 10-digit numbers instead of 15- and 16-digit
#   ones (same shape: a repeated prime, and a last number that is not prime).

import concurrent.futures
import math

PRIMES = [
    100000007,
    100000037,
    100000007,
    100000039,
    100000049,
    999999999]

def is_prime(n):
    if n < 2:
        return False
    if n == 2:
        return True
    if n % 2 == 0:
        return False

    sqrt_n = int(math.floor(math.sqrt(n)))
    for i in range(3, sqrt_n + 1, 2):
        if n % i == 0:
            return False
    return True

def main():
    with concurrent.futures.ProcessPoolExecutor() as executor:
        for number, prime in zip(PRIMES, executor.map(is_prime, PRIMES)):
            print('%d is prime: %s' % (number, prime))

if __name__ == '__main__':
    main()
