"""The workloads: what each one runs, at which size, and what its clock covers.

Each ``measure_*`` function runs one workload on one adapter (see :mod:`benchmarks.peers`) and
returns one sample per timed run: ``{"seconds": ..., <extra metrics>}``. Results are checked
against the known answer where that is cheap, so no library can win by computing nothing;
where it is not (B1, B3) each sample carries a ``check`` value that the harness compares
across libraries.

Two kinds of clock:

- warm (W1, W1c, W1n, S1, W2, W3, W3s, W6): the pool is started and used once before the
  clock runs, as in a program that keeps its pool; every repeat is one more call on that pool.
- cold (W4, B1, B2, B3; ``Workload.cold``): pool start-up and per-worker set-up are the point,
  so the clock covers them, and the harness runs each repeat in a fresh process.

W5 starts a fresh interpreter per repeat and times, inside it, from the first import to the
first result.

W1n is W1 over a numpy array (``np.arange``) instead of a ``range``: the results, numpy
scalars or Python ints, are compared with the serial answer as Python numbers, after the
clock. S1 submits every call on its own, through the library's one-future-per-task API
(``Adapter.submit_each``), and then collects every result: the clock covers both, and each
sample reports tasks per second too. A library without such an API is reported as skipped
(``Workload.needs``), not failed.
"""

from __future__ import annotations

import asyncio
import math
import os
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from .peers import Adapter, Init, resolve

Sample = dict[str, Any]
Sizes = dict[str, Any]
MB = 1 << 20


# ---- the tasks (module level: every library's workers import them by name) --------------------

def square(x: int) -> int:
    return x * x


def count(n: int) -> int:
    total = 0
    for _ in range(n):
        total += 1
    return total


def array_sum(array: Any) -> float:
    import numpy as np

    return float(np.sum(array))


def read_sum(_: int, shared: Any) -> float:
    return float(resolve(shared).sum())


def spin(seconds: float) -> None:
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        pass


_initialised = False


def slow_init(seconds: float) -> None:
    global _initialised
    time.sleep(seconds)  # stands for opening a connection or reading a file
    _initialised = True


def one_ms_task(i: int) -> int:
    if not _initialised:
        raise RuntimeError("the per-worker initializer did not run in this worker")
    spin(0.001)
    return i


def blocking_wait(seconds: float) -> float:
    time.sleep(seconds)
    return seconds


async def async_wait(seconds: float) -> float:
    await asyncio.sleep(seconds)
    return seconds


def convolve(seed: int, shared: Any) -> float:
    import numpy as np
    from scipy.signal import convolve2d

    kernel = np.random.default_rng(seed).random((4, 4))
    return float(convolve2d(resolve(shared), kernel, mode="valid").sum())


def count_prefixes(counter: Counter[str], word: str) -> None:
    for end in range(1, len(word) + 1):
        counter[word[:end]] += 1


def as_counter(counter: Counter[str]) -> Counter[str]:
    return counter


_model: Any = None


def load_model(seconds: float, dim: int, layers: int) -> None:
    """Stands for deserialising a big model: CPU-bound, once per worker."""
    import numpy as np

    global _model
    spin(seconds)
    _model = np.random.default_rng(0).standard_normal((layers, dim, dim)) / math.sqrt(dim)


def predict(seed: int) -> int:
    import numpy as np

    if _model is None:
        raise RuntimeError("the model was not loaded in this worker")
    x = np.random.default_rng(seed).standard_normal((64, _model.shape[1]))
    for weights in _model:
        x = np.tanh(x @ weights)
    return int(np.argmax(x.sum(axis=0)))


# ---- clocks -----------------------------------------------------------------------------------

def timed(run: Callable[[], Any]) -> tuple[float, Any]:
    start = time.perf_counter()
    result = run()
    return time.perf_counter() - start, result


def expect(got: Sequence[Any], wanted: Sequence[Any], what: str) -> None:
    if list(got) != list(wanted):
        raise AssertionError(f"{what}: wrong results (first: {list(got)[:3]!r})")


@contextmanager
def peak_extra_memory() -> Iterator[dict[str, float]]:
    """Peak growth, in MB, of the proportional set size of this process and all its children,
    sampled every 5 ms in a thread. PSS counts a shared page once across the processes that
    map it, so shared memory is neither missed nor counted twice."""
    import psutil

    def tree_pss() -> int:
        total = 0
        me = psutil.Process()
        for proc in [me, *me.children(recursive=True)]:
            try:
                total += proc.memory_full_info().pss
            except psutil.Error:
                continue  # a worker that just exited
        return total

    baseline = tree_pss()
    peak = [baseline]
    stop = threading.Event()

    def sample() -> None:
        while not stop.wait(0.005):
            peak[0] = max(peak[0], tree_pss())

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    out: dict[str, float] = {}
    try:
        yield out
    finally:
        stop.set()
        sampler.join()
        out["peak_extra_mb"] = max(0, max(peak[0], tree_pss()) - baseline) / MB


@contextmanager
def running(adapter: Adapter) -> Iterator[Adapter]:
    """``prepare`` before and ``stop`` + ``release`` after, whatever happens."""
    adapter.prepare()
    try:
        yield adapter
    finally:
        try:
            adapter.stop()
        finally:
            adapter.release()


# A cell stops repeating once one more run would take it past this many seconds: a run of a
# minute (chunksize=1 defaults on W1) is hundreds of times off the pace, and two more would
# not change that, only the length of the whole run. Such cells report how many runs they had.
CELL_BUDGET_S = 60.0


def warm_runs(run: Callable[[], Any], repeat: int,
              check: Callable[[Any], None] | None = None) -> list[Sample]:
    """Repeat ``run`` on a warm pool; ``check``, if given, sees each result after its clock."""
    samples: list[Sample] = []
    spent = 0.0
    while len(samples) < repeat:
        seconds, result = timed(run)
        if check is not None:
            check(result)
        samples.append({"seconds": seconds})
        spent += seconds
        if spent + seconds > CELL_BUDGET_S:
            break
    return samples


# ---- W1 .. W6 ---------------------------------------------------------------------------------

def measure_w1_defaults(a: Adapter, s: Sizes, repeat: int) -> list[Sample]:
    items = range(s["n"])
    wanted = [x * x for x in items]
    with running(a):
        a.start()
        a.map_defaults(square, items[: max(1, s["n"] // 100)])
        return warm_runs(lambda: expect(a.map_defaults(square, items), wanted, "W1"), repeat)


def as_python(values: Sequence[Any]) -> list[Any]:
    """Numpy scalars as the Python numbers they hold; anything else as it is."""
    import numpy as np

    return [v.item() if isinstance(v, np.generic) else v for v in values]


def measure_w1_numpy(a: Adapter, s: Sizes, repeat: int) -> list[Sample]:
    import numpy as np

    items = np.arange(s["n"])
    wanted = [x * x for x in range(s["n"])]
    with running(a):
        a.start()
        a.map_defaults(square, items[: max(1, s["n"] // 100)])
        return warm_runs(lambda: a.map_defaults(square, items), repeat,
                         check=lambda got: expect(as_python(got), wanted, "W1n"))


def measure_s1(a: Adapter, s: Sizes, repeat: int) -> list[Sample]:
    items = range(s["tasks"])
    wanted = [x * x for x in items]
    with running(a):
        a.start()
        a.submit_each(square, items[: max(a.workers, s["tasks"] // 100)])
        samples = warm_runs(lambda: a.submit_each(square, items), repeat,
                            check=lambda got: expect(got, wanted, "S1"))
    return [{**sample, "tasks_per_s": s["tasks"] / sample["seconds"]} for sample in samples]


def w1_chunk(n: int, workers: int) -> int:
    return max(1, n // (4 * workers))


def measure_w1_chunked(a: Adapter, s: Sizes, repeat: int) -> list[Sample]:
    items = range(s["n"])
    wanted = [x * x for x in items]
    chunk = w1_chunk(s["n"], a.workers)
    with running(a):
        a.start()
        a.map(square, items[: max(1, s["n"] // 10)], chunksize=chunk)
        return warm_runs(lambda: expect(a.map(square, items, chunksize=chunk), wanted, "W1c"),
                         repeat)


def measure_w2(a: Adapter, s: Sizes, repeat: int) -> list[Sample]:
    tasks = [s["loop"]] * s["tasks"]
    with running(a):
        a.start()
        a.map(count, [1] * a.workers, chunksize=1)
        return warm_runs(lambda: expect(a.map(count, tasks, chunksize=1), tasks, "W2"), repeat)


def measure_w3(a: Adapter, s: Sizes, repeat: int) -> list[Sample]:
    import numpy as np

    n = s["array_mb"] * MB // 8
    arrays = []
    for i in range(s["arrays"]):
        array = np.empty(n)
        array.fill(i + 1)  # its sum is exact, and known
        arrays.append(array)
    wanted = [float(n * (i + 1)) for i in range(s["arrays"])]
    with running(a):
        a.start()
        a.map(square, [1] * a.workers, chunksize=1)
        with peak_extra_memory() as memory:  # on the first call: nothing is reused yet
            first, got = timed(lambda: a.map_arrays(array_sum, arrays))
        expect(got, wanted, "W3")
        samples = warm_runs(lambda: expect(a.map_arrays(array_sum, arrays), wanted, "W3"),
                            repeat)
    return [{**sample, "first_s": first, **memory} for sample in samples]


def measure_w3s(a: Adapter, s: Sizes, repeat: int) -> list[Sample]:
    n = s["array_mb"] * MB // 8
    tasks = range(s["tasks"])
    wanted = [float(n)] * s["tasks"]
    with running(a):
        source = a.new_array((n,))
        source.fill(1.0)
        setup_s, handle = timed(lambda: share_and_start(a, source))

        def run() -> None:
            expect(a.map(read_sum, tasks, chunksize=1, shared=handle), wanted, "W3s")

        first = timed(run)[0]
        samples = warm_runs(run, repeat)
    return [{**sample, "first_s": first, "setup_s": setup_s} for sample in samples]


def share_and_start(a: Adapter, array: Any) -> Any:
    """Hand ``array`` to the library its way and start the pool; the handle tasks read."""
    handle, init = a.share(array)
    a.start([init] if init else [])
    return handle


def measure_w4(a: Adapter, s: Sizes, repeat: int) -> list[Sample]:
    items = list(range(s["tasks"]))
    init: Init = (slow_init, (s["init_s"],))
    samples = []
    for _ in range(repeat):
        with running(a):
            seconds, got = timed(lambda: (a.start([init]), a.map(one_ms_task, items))[1])
        expect(got, items, "W4")
        samples.append({"seconds": seconds})
    return samples


_COLD = """\
import time
_started = time.perf_counter()
{code}
print("first result after", time.perf_counter() - _started, flush=True)
"""


def measure_w5(a: Adapter, s: Sizes, repeat: int) -> list[Sample]:
    code = _COLD.format(code=a.cold_start_code())
    samples = []
    for _ in range(repeat):
        done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                              timeout=s["timeout_s"], env=os.environ.copy(), check=False)
        lines = [line for line in done.stdout.splitlines() if line.startswith("first result")]
        if done.returncode != 0 or not lines:
            raise RuntimeError(f"cold start failed ({done.returncode}): {done.stderr[-2000:]}")
        samples.append({"seconds": float(lines[-1].split()[-1])})
    return samples


def measure_w6(a: Adapter, s: Sizes, repeat: int) -> list[Sample]:
    delays = [s["wait_s"]] * s["calls"]
    with running(a):
        a.start()
        a.map_waiting(blocking_wait, delays, async_wait)  # thread pools and choices made
        return warm_runs(
            lambda: expect(a.map_waiting(blocking_wait, delays, async_wait), delays, "W6"),
            repeat)


# ---- mpire's three ----------------------------------------------------------------------------

def measure_b1(a: Adapter, s: Sizes, repeat: int) -> list[Sample]:
    # A user's script imports what its tasks use at the top: fork-based pools inherit it.
    import scipy.signal  # noqa: F401

    return [b1_once(a, s) for _ in range(repeat)]


def b1_once(a: Adapter, s: Sizes) -> Sample:
    import numpy as np

    with running(a):
        image = a.new_array((s["side"], s["side"]))
        np.random.default_rng(0).random(out=image)
        setup_s, handle = timed(lambda: share_and_start(a, image))
        run_s, got = timed(lambda: a.map(convolve, range(s["filters"]), chunksize=1,
                                         shared=handle))
    return {"seconds": setup_s + run_s, "setup_s": setup_s, "check": f"{sum(got):.6e}"}


def make_words(count: int, vocabulary: int) -> list[str]:
    """Zipf-distributed words drawn from a random vocabulary: many repeats, as in text."""
    import numpy as np

    rng = np.random.default_rng(0)
    letters = np.array(list("abcdefghijklmnopqrstuvwxyz"))
    vocab = ["".join(rng.choice(letters, int(n))) for n in rng.integers(3, 11, vocabulary)]
    picks = np.minimum(rng.zipf(1.3, count), vocabulary) - 1
    return [vocab[i] for i in picks]


def measure_b2(a: Adapter, s: Sizes, repeat: int) -> list[Sample]:
    words = make_words(s["words"], s["vocabulary"])
    total = sum(len(w) for w in words)
    samples = []
    for _ in range(repeat):
        with running(a):
            def run() -> Counter[str]:
                a.start()
                merged: Counter[str] = Counter()
                for part in a.fold(Counter, count_prefixes, as_counter, words):
                    merged.update(part)
                return merged

            seconds, merged = timed(run)
        if sum(merged.values()) != total or merged[words[0][:1]] == 0:
            raise AssertionError("B2: prefix counts are wrong")
        samples.append({"seconds": seconds})
    return samples


def measure_b3(a: Adapter, s: Sizes, repeat: int) -> list[Sample]:
    init: Init = (load_model, (s["load_s"], s["dim"], s["layers"]))
    items = list(range(s["predictions"]))
    samples = []
    for _ in range(repeat):
        with running(a):
            seconds, got = timed(lambda: (a.start([init]), a.map(predict, items))[1])
        samples.append({"seconds": seconds, "check": str(sum(got))})
    return samples


# ---- the table of workloads -------------------------------------------------------------------

@dataclass(frozen=True)
class Workload:
    key: str
    title: str
    clock: str  # what the clock covers, for the report
    measure: Callable[[Adapter, Sizes, int], list[Sample]]
    full: Sizes
    tiny: Sizes
    cold: bool = False
    baselines: tuple[str, ...] = ("serial",)
    extras: tuple[str, ...] = field(default=())
    # (adapter operation, reason): a library whose adapter lacks the operation is reported
    # as skipped with this reason instead of being run
    needs: tuple[str, str] | None = None


WORKLOADS: dict[str, Workload] = {w.key: w for w in (
    Workload("W1", "200,000 x*x, defaults",
             "warm pool; the one-liner with the library's defaults (manybrains.map, chunksize 1 "
             "where that is the default)",
             measure_w1_defaults, {"n": 200_000}, {"n": 500}),
    Workload("W1c", "200,000 x*x, chunksize n/(4 workers)",
             "warm pool; the same explicit chunk size for every library",
             measure_w1_chunked, {"n": 200_000}, {"n": 2_000}),
    Workload("W1n", "200,000 x*x over np.arange, defaults",
             "warm pool; W1's one-liner with the library's defaults, the input a numpy array; "
             "results checked against the serial answer as Python numbers, after the clock",
             measure_w1_numpy, {"n": 200_000}, {"n": 500}),
    Workload("S1", "20,000 x*x, one future per task",
             "warm pool; every call submitted on its own through the library's "
             "one-future-per-task API, then every result collected: the clock covers both",
             measure_s1, {"tasks": 20_000}, {"tasks": 300}, extras=("tasks_per_s",),
             needs=("submit_each", "no one-future-per-task API")),
    Workload("W2", "8 x 10M-iteration loop",
             "warm pool; efficiency = serial / (workers x parallel)",
             measure_w2, {"tasks": 8, "loop": 10_000_000}, {"tasks": 4, "loop": 20_000},
             extras=("efficiency",)),
    Workload("W3", "16 x 50 MB arrays to np.sum",
             "warm pool; arrays passed as task arguments; peak extra memory (PSS of the "
             "process tree) on the first call",
             measure_w3, {"arrays": 16, "array_mb": 50}, {"arrays": 4, "array_mb": 2},
             extras=("peak_extra_mb", "first_s")),
    Workload("W3s", "one 400 MB array read by 16 tasks",
             "the array already shared and the pool started (setup timed apart); each task "
             "sums the whole array",
             measure_w3s, {"tasks": 16, "array_mb": 400}, {"tasks": 4, "array_mb": 4},
             extras=("setup_s", "first_s")),
    Workload("W4", "0.5 s worker init + 2,000 x 1 ms",
             "cold: pool start, a 0.5 s initializer in every worker, 2,000 tasks of 1 ms CPU",
             measure_w4, {"init_s": 0.5, "tasks": 2_000}, {"init_s": 0.01, "tasks": 40},
             cold=True),
    Workload("W5", "fresh interpreter to first result",
             "a new interpreter per repeat: from the first import to the first result of a "
             "pool with default workers (interpreter start-up itself not counted)",
             measure_w5, {"timeout_s": 120}, {"timeout_s": 60}, baselines=()),
    Workload("W6", "200 x 50 ms waits",
             "warm; each library's best tool for waiting (threads where it has them)",
             measure_w6, {"calls": 200, "wait_s": 0.05}, {"calls": 20, "wait_s": 0.01},
             baselines=("asyncio", "threads")),
    Workload("B1", "convolve2d of a shared image",
             "cold: share a 5000x5000 float64 image (200 MB), start the pool, 8 x "
             "scipy.signal.convolve2d with a random 4x4 filter",
             measure_b1, {"side": 5000, "filters": 8}, {"side": 200, "filters": 4},
             cold=True, extras=("setup_s",)),
    Workload("B2", "stateful word-prefix counting",
             "cold: 400,000 Zipf words, every prefix counted into per-worker state that is "
             "returned at the end and merged",
             measure_b2, {"words": 400_000, "vocabulary": 20_000},
             {"words": 2_000, "vocabulary": 200}, cold=True),
    Workload("B3", "1 s model load + 1,000 predictions",
             "cold: pool start, a 1 s CPU-bound model load in every worker, 1,000 predictions "
             "of ~3 ms (4 dense layers)",
             measure_b3, {"load_s": 1.0, "dim": 256, "layers": 4, "predictions": 1_000},
             {"load_s": 0.01, "dim": 16, "layers": 2, "predictions": 40}, cold=True),
)}
