# Source: https://github.com/Kirrito-k423/BHive-Prediction-Compare/blob/main/test/testTQDM.py
#   (itself after https://stackoverflow.com/questions/41920124, as its last line says)
# Licence: MIT, Copyright (c) 2021 Michael Gilbert, see LICENSES.md
# Changes: sleep length: 0.01 s instead of 1 s.
# (tqdm's bar goes to stderr; stdout stays empty.)
# corpus: racy
from multiprocessing import Pool
import tqdm
import time

def _foo(my_number):
   square = my_number * my_number
   time.sleep(0.01)
   return square 

if __name__ == '__main__':
   with Pool(2) as p:
      r = list(tqdm.tqdm(p.imap(_foo, range(30)), total=30))

# https://stackoverflow.com/questions/41920124/multiprocessing-use-tqdm-to-display-a-progress-bar
