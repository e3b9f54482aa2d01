"""Code written for the stdlib pools runs with one import changed: task functions in a real
script's ``__main__``, run as a subprocess under each start method that re-imports it."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import manybrains as mb

SOURCE = str(Path(mb.__file__).resolve().parent.parent)

MP_SCRIPT = """
    import multiprocessing
    import sys

    from manybrains import Pool  # was: from multiprocessing import Pool

    def cube(x):
        return x ** 3

    def fails(x):
        raise ValueError(f"no {x}")

    if __name__ == "__main__":
        context = multiprocessing.get_context(sys.argv[1])
        seen = []
        with Pool(2, None, (), None, context) as pool:
            print(pool.map(cube, range(6), 2))
            pool.apply_async(cube, (3,), callback=seen.append).wait()
            print(seen)
            print(sorted(pool.imap_unordered(cube, range(4))))
            print(pool.starmap(pow, [(2, 3), (3, 2)]))
            pool.map_async(fails, [1], error_callback=seen.append).wait()
            print(type(seen[-1]).__name__, seen[-1])
            pool.close()
            pool.join()
"""

EXECUTOR_SCRIPT = """
    import multiprocessing
    import pickle
    import sys

    from manybrains import ProcessPoolExecutor  # was: from concurrent.futures import ...

    def cube(x):
        return x ** 3

    class Unpicklable:
        def __reduce__(self):
            raise RuntimeError("refused")

    if __name__ == "__main__":
        context = multiprocessing.get_context(sys.argv[1])
        with ProcessPoolExecutor(2, mp_context=context) as ex:
            print(list(ex.map(cube, range(4))))
            error = ex.submit(cube, Unpicklable()).exception()
            print(isinstance(error, pickle.PicklingError), isinstance(error, RuntimeError))
            print(ex.submit(cube, 5).result())
"""


def _run(script: str, start_method: str, tmp_path: Path) -> list[str]:
    path = tmp_path / "user_script.py"
    path.write_text(textwrap.dedent(script))
    env = {**os.environ, "PYTHONPATH": SOURCE}
    done = subprocess.run([sys.executable, str(path), start_method], capture_output=True,
                          text=True, timeout=90, cwd=tmp_path, env=env)
    assert done.returncode == 0, done.stderr
    return done.stdout.splitlines()


@pytest.mark.parametrize("start_method", ["forkserver", "spawn"])
def test_multiprocessing_pool_script_runs_on_manybrains(start_method, tmp_path):
    assert _run(MP_SCRIPT, start_method, tmp_path) == [
        "[0, 1, 8, 27, 64, 125]", "[27]", "[0, 1, 8, 27]", "[8, 9]", "ValueError no 1"]


@pytest.mark.parametrize("start_method", ["forkserver", "spawn"])
def test_executor_script_runs_on_manybrains(start_method, tmp_path):
    assert _run(EXECUTOR_SCRIPT, start_method, tmp_path) == ["[0, 1, 8, 27]", "True True",
                                                             "125"]
