"""One adapter per library: the way its own documentation runs each kind of work, with its best
settings, so that every comparison is with the peer at its best rather than at its worst.

The workloads are written once against these operations::

    prepare()                     untimed: start a Dask cluster or a Ray instance; nothing
                                  for the others
    new_array(shape)              where a big input is built (manybrains: in shared memory)
    share(array) -> handle, init  make one big array readable by every worker, its natural way
    start(inits)                  start the pool; each init runs once in every worker
    map(fn, items, chunksize=, shared=)   [fn(x) or fn(x, shared=handle) for x in items]
    map_defaults(fn, items)       the one-liner a user writes first, with the defaults
    submit_each(fn, items)        one future per call, each submitted on its own, then every
                                  result collected: [fn(x) for x in items]; a library without
                                  such an API keeps the default, which raises
                                  NotImplementedError, and the harness reports it as skipped
    map_arrays(fn, arrays)        big arrays as task arguments
    map_waiting(fn, items, coroutine)   calls that wait: threads where the library has them
    fold(new_state, step, finish, items)  per-worker state, handed back at the end
    stop(); release()
    cold_start_code()             source that starts a pool and gets one result (for W5)

``chunksize=None`` means the library's own automatic batching where it has one, and
otherwise ``multiprocessing.Pool``'s rule (a quarter of an even share per worker), since a
user of those APIs has to pick a number and that rule is the well-known one.
"""

from __future__ import annotations

import importlib.util
import inspect
import math
import multiprocessing
import os
import sys
import threading
from collections.abc import Callable, Iterable, Sequence
from functools import partial
from typing import Any, ClassVar

Init = tuple[Callable[..., object], tuple[Any, ...]]

# A handle that tells a task to read the array its worker's initializer stored (the stdlib
# way: initializer + initargs, inherited through fork or pickled once per worker).
WORKER_GLOBAL = "worker-global array"
# Every Ray instance of a run (the peers' and the cold starts' in child processes, which
# inherit this) keeps its servers on 127.0.0.1: Ray on Linux does so only where told that
# clusters are unsupported here. mb.Ray() does the same for the instance it starts.
os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
_worker_array: Any = None
_inits_done: set[str] = set()


def set_worker_array(array: Any) -> None:
    global _worker_array
    _worker_array = array


def resolve(shared: Any) -> Any:
    """The numpy array behind any library's handle for a shared array."""
    import numpy as np

    if isinstance(shared, str) and shared == WORKER_GLOBAL:
        return _worker_array
    ray = sys.modules.get("ray")
    if ray is not None and isinstance(shared, ray.ObjectRef):  # ray.put once: read in place
        return ray.get(shared)
    return np.asarray(shared)


def run_inits(*inits: Init) -> None:
    for fn, args in inits:
        fn(*args)


def best_chunksize(n: int, workers: int) -> int:
    return max(1, math.ceil(n / (4 * workers)))


def split(items: Sequence[Any], parts: int) -> list[Sequence[Any]]:
    size = max(1, math.ceil(len(items) / parts))
    return [items[i:i + size] for i in range(0, len(items), size)]


def fold_chunk(chunk: Iterable[Any], *, new_state: Callable[[], Any],
               step: Callable[[Any, Any], None], finish: Callable[[Any], Any]) -> Any:
    state = new_state()
    for item in chunk:
        step(state, item)
    return finish(state)


def _with_shared(fn: Callable[..., Any], shared: Any) -> Callable[..., Any]:
    return fn if shared is None else partial(fn, shared=shared)


class InitOnce:
    """Runs the inits the first time a worker calls the task: joblib has no initializer, and
    a module-level "load once" cache is what its users write instead."""

    def __init__(self, fn: Callable[..., Any], inits: Sequence[Init]) -> None:
        self.fn, self.inits = fn, tuple(inits)
        self.key = ",".join(f"{f.__module__}.{f.__qualname__}" for f, _ in self.inits)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        if self.key not in _inits_done:
            run_inits(*self.inits)
            _inits_done.add(self.key)
        return self.fn(*args, **kwargs)


# ---- the common shape -------------------------------------------------------------------------

class Adapter:
    name: ClassVar[str]
    module: ClassVar[str]  # what must import for the adapter to run; its version is reported
    kind: ClassVar[str] = "peer"  # "ours", "peer" or "baseline"
    how: ClassVar[str] = ""  # one line for the report: API, start method, settings
    # Adapters of one family share what prepare() starts (one Ray instance per process): a
    # --tiny run checks a family in one process, and the report sets an "ours" member
    # against the family's best peer too.
    family: ClassVar[str | None] = None

    def __init__(self, workers: int) -> None:
        self.workers = workers

    @classmethod
    def available(cls) -> bool:
        return importlib.util.find_spec(cls.module) is not None

    @classmethod
    def supports(cls, operation: str) -> bool:
        """Whether this adapter has its own ``operation`` rather than the base class's."""
        return getattr(cls, operation) is not getattr(Adapter, operation)

    def prepare(self) -> None:
        pass

    def new_array(self, shape: tuple[int, ...]) -> Any:
        import numpy as np

        return np.empty(shape)

    def share(self, array: Any) -> tuple[Any, Init | None]:
        return WORKER_GLOBAL, (set_worker_array, (array,))

    def start(self, inits: Sequence[Init] = ()) -> None:
        pass

    def map(self, fn: Callable[..., Any], items: Sequence[Any], *, chunksize: int | None = None,
            shared: Any = None) -> list[Any]:
        raise NotImplementedError

    def map_defaults(self, fn: Callable[..., Any], items: Sequence[Any]) -> list[Any]:
        return self.map(fn, items)

    def submit_each(self, fn: Callable[..., Any], items: Sequence[Any]) -> list[Any]:
        raise NotImplementedError(f"{self.name} has no one-future-per-task API")

    def map_arrays(self, fn: Callable[..., Any], arrays: Sequence[Any]) -> list[Any]:
        return self.map(fn, arrays)

    def map_waiting(self, fn: Callable[..., Any], items: Sequence[Any],
                    coroutine: Callable[..., Any]) -> list[Any]:
        return self.map(fn, items, chunksize=1)

    def fold(self, new_state: Callable[[], Any], step: Callable[[Any, Any], None],
             finish: Callable[[Any], Any], items: Sequence[Any]) -> list[Any]:
        task = partial(fold_chunk, new_state=new_state, step=step, finish=finish)
        return self.map(task, split(items, 4 * self.workers), chunksize=1)

    def stop(self) -> None:
        pass

    def release(self) -> None:
        pass

    def cold_start_code(self) -> str:
        raise NotImplementedError

    def _chunk(self, n: int, chunksize: int | None) -> int:
        return chunksize or best_chunksize(n, self.workers)


# ---- manybrains -------------------------------------------------------------------------------

class Manybrains(Adapter):
    name = "manybrains"
    module = "manybrains"
    kind = "ours"
    how = ("Pool (template start method), chunksize auto; defaults and waiting work: "
           "manybrains.map (backend auto); a big shared input handed to the initializer, which "
           "template workers inherit without a copy; one future per task: Pool.submit")

    def __init__(self, workers: int) -> None:
        super().__init__(workers)
        self._pool: Any = None

    def start(self, inits: Sequence[Init] = ()) -> None:
        import manybrains as mb

        self._pool = mb.Pool(self.workers, initializer=run_inits if inits else None,
                             initargs=tuple(inits))

    def map(self, fn: Callable[..., Any], items: Sequence[Any], *, chunksize: int | None = None,
            shared: Any = None) -> list[Any]:
        return self._pool.map(_with_shared(fn, shared), items, chunksize=chunksize or "auto")

    def map_defaults(self, fn: Callable[..., Any], items: Sequence[Any]) -> list[Any]:
        import manybrains as mb

        return mb.map(fn, items)

    def submit_each(self, fn: Callable[..., Any], items: Sequence[Any]) -> list[Any]:
        futures = [self._pool.submit(fn, x) for x in items]
        return [future.result() for future in futures]

    def map_waiting(self, fn: Callable[..., Any], items: Sequence[Any],
                    coroutine: Callable[..., Any]) -> list[Any]:
        return self.map_defaults(fn, items)

    def stop(self) -> None:
        import manybrains as mb

        if self._pool is not None:
            self._pool.shutdown()
            self._pool = None
        mb.shutdown_default_pool()

    def cold_start_code(self) -> str:
        return "import manybrains as mb\nmb.Pool().submit(abs, -1).result()"


# ---- the standard library ---------------------------------------------------------------------

class StdlibPool(Adapter):
    name = "multiprocessing"
    module = "multiprocessing"
    how = ("multiprocessing.Pool (platform default start method: fork on Linux before 3.14), "
           "initializer/initargs, map's own chunking; one future per task: apply_async + "
           "get; waiting work: multiprocessing.pool.ThreadPool, one thread per call")

    def __init__(self, workers: int) -> None:
        super().__init__(workers)
        self._pool: Any = None
        self._threads: Any = None

    def start(self, inits: Sequence[Init] = ()) -> None:
        self._pool = multiprocessing.Pool(self.workers, initializer=run_inits if inits else None,
                                          initargs=tuple(inits))

    def map(self, fn: Callable[..., Any], items: Sequence[Any], *, chunksize: int | None = None,
            shared: Any = None) -> list[Any]:
        return self._pool.map(_with_shared(fn, shared), items, chunksize)

    def submit_each(self, fn: Callable[..., Any], items: Sequence[Any]) -> list[Any]:
        pending = [self._pool.apply_async(fn, (x,)) for x in items]
        return [result.get() for result in pending]

    def map_waiting(self, fn: Callable[..., Any], items: Sequence[Any],
                    coroutine: Callable[..., Any]) -> list[Any]:
        from multiprocessing.pool import ThreadPool

        if self._threads is None:
            self._threads = ThreadPool(len(items))
        return self._threads.map(fn, items, 1)

    def stop(self) -> None:
        for pool in (self._pool, self._threads):
            if pool is not None:
                pool.close()
                pool.join()
        self._pool = self._threads = None

    def cold_start_code(self) -> str:
        return "import multiprocessing as m\nm.Pool().apply(abs, (-1,))"


class StdlibExecutor(Adapter):
    name = "concurrent.futures"
    module = "concurrent.futures"
    how = ("ProcessPoolExecutor (platform default start method: fork on Linux before 3.14), "
           "initializer/initargs, map(chunksize=n/(4 workers)); one future per task: submit + "
           "result; waiting work: ThreadPoolExecutor, a thread per call")

    def __init__(self, workers: int) -> None:
        super().__init__(workers)
        self._pool: Any = None
        self._threads: Any = None

    def start(self, inits: Sequence[Init] = ()) -> None:
        from concurrent.futures import ProcessPoolExecutor

        self._pool = ProcessPoolExecutor(self.workers, initializer=run_inits if inits else None,
                                         initargs=tuple(inits))

    def map(self, fn: Callable[..., Any], items: Sequence[Any], *, chunksize: int | None = None,
            shared: Any = None) -> list[Any]:
        return list(self._pool.map(_with_shared(fn, shared), items,
                                   chunksize=self._chunk(len(items), chunksize)))

    def map_defaults(self, fn: Callable[..., Any], items: Sequence[Any]) -> list[Any]:
        return list(self._pool.map(fn, items))

    def submit_each(self, fn: Callable[..., Any], items: Sequence[Any]) -> list[Any]:
        futures = [self._pool.submit(fn, x) for x in items]
        return [future.result() for future in futures]

    def map_waiting(self, fn: Callable[..., Any], items: Sequence[Any],
                    coroutine: Callable[..., Any]) -> list[Any]:
        from concurrent.futures import ThreadPoolExecutor

        if self._threads is None:
            self._threads = ThreadPoolExecutor(len(items))
        return list(self._threads.map(fn, items))

    def stop(self) -> None:
        for pool in (self._pool, self._threads):
            if pool is not None:
                pool.shutdown(wait=True)
        self._pool = self._threads = None

    def cold_start_code(self) -> str:
        return ("from concurrent.futures import ProcessPoolExecutor\n"
                "ProcessPoolExecutor().submit(abs, -1).result()")


# ---- loky and joblib --------------------------------------------------------------------------

class Loky(Adapter):
    name = "loky"
    module = "loky"
    how = ("get_reusable_executor (loky start method), initializer/initargs (pickled to each "
           "worker), map(chunksize=n/(4 workers)); one future per task: submit + result; no "
           "thread pool: waiting work on processes")

    def __init__(self, workers: int) -> None:
        super().__init__(workers)
        self._pool: Any = None

    def start(self, inits: Sequence[Init] = ()) -> None:
        from loky import get_reusable_executor

        self._pool = get_reusable_executor(self.workers,
                                           initializer=run_inits if inits else None,
                                           initargs=tuple(inits))

    def map(self, fn: Callable[..., Any], items: Sequence[Any], *, chunksize: int | None = None,
            shared: Any = None) -> list[Any]:
        return list(self._pool.map(_with_shared(fn, shared), items,
                                   chunksize=self._chunk(len(items), chunksize)))

    def map_defaults(self, fn: Callable[..., Any], items: Sequence[Any]) -> list[Any]:
        return list(self._pool.map(fn, items))

    def submit_each(self, fn: Callable[..., Any], items: Sequence[Any]) -> list[Any]:
        futures = [self._pool.submit(fn, x) for x in items]
        return [future.result() for future in futures]

    def stop(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None

    def cold_start_code(self) -> str:
        return ("from loky import get_reusable_executor\n"
                "get_reusable_executor().submit(abs, -1).result()")


class Joblib(Adapter):
    name = "joblib"
    module = "joblib"
    how = ("Parallel(n_jobs, backend loky), batch_size auto, big arrays memory-mapped "
           "automatically; per-worker set-up loaded once per process on first use; no "
           "one-future-per-task API; waiting work: prefer='threads', a thread per call")

    def __init__(self, workers: int) -> None:
        super().__init__(workers)
        self._inits: tuple[Init, ...] = ()

    def share(self, array: Any) -> tuple[Any, Init | None]:
        return array, None  # joblib dumps it once to a memory map that every worker opens

    def start(self, inits: Sequence[Init] = ()) -> None:
        self._inits = tuple(inits)

    def map(self, fn: Callable[..., Any], items: Sequence[Any], *, chunksize: int | None = None,
            shared: Any = None) -> list[Any]:
        from joblib import Parallel, delayed

        task = delayed(InitOnce(fn, self._inits) if self._inits else fn)
        kwargs = {} if shared is None else {"shared": shared}
        return Parallel(n_jobs=self.workers, batch_size=chunksize or "auto")(
            task(x, **kwargs) for x in items)

    def map_waiting(self, fn: Callable[..., Any], items: Sequence[Any],
                    coroutine: Callable[..., Any]) -> list[Any]:
        from joblib import Parallel, delayed

        return Parallel(n_jobs=len(items), prefer="threads")(delayed(fn)(x) for x in items)

    def cold_start_code(self) -> str:
        return ("from joblib import Parallel, delayed\n"
                "Parallel(n_jobs=-1)([delayed(abs)(-1)])")


# ---- mpire ------------------------------------------------------------------------------------

class Mpire(Adapter):
    name = "mpire"
    module = "mpire"
    how = ("WorkerPool (fork), keep_alive, worker_init, shared_objects for big arrays, "
           "use_worker_state + worker_exit for per-worker state, automatic chunking; one "
           "future per task: apply_async + get; waiting work: start_method='threading', a "
           "thread per call")

    def __init__(self, workers: int) -> None:
        super().__init__(workers)
        self._pool: Any = None
        self._threads: Any = None
        self._shared: Any = None
        self._init: Callable[..., None] | None = None
        self._tasks: dict[tuple[int, int], Callable[..., Any]] = {}

    def share(self, array: Any) -> tuple[Any, Init | None]:
        self._shared = array  # inherited copy-on-write by the forked workers
        return array, None

    def start(self, inits: Sequence[Init] = ()) -> None:
        from mpire import WorkerPool

        self._pool = WorkerPool(self.workers, keep_alive=True, shared_objects=self._shared)
        if inits:
            inits = tuple(inits)
            if self._shared is None:
                self._init = lambda: run_inits(*inits)
            else:
                self._init = lambda _shared: run_inits(*inits)

    def _task(self, fn: Callable[..., Any], shared: Any) -> Callable[..., Any]:
        # keep_alive reuses the workers only while the function is the same object
        key = (id(fn), id(shared))
        if key not in self._tasks:
            if self._shared is not None:
                self._tasks[key] = lambda shared_objects, x: fn(x, shared=shared_objects)
            else:
                self._tasks[key] = _with_shared(fn, shared)
        return self._tasks[key]

    def map(self, fn: Callable[..., Any], items: Sequence[Any], *, chunksize: int | None = None,
            shared: Any = None) -> list[Any]:
        return self._pool.map(self._task(fn, shared), items, chunk_size=chunksize,
                              worker_init=self._init, concatenate_numpy_output=False)

    def map_defaults(self, fn: Callable[..., Any], items: Sequence[Any]) -> list[Any]:
        return self._pool.map(fn, items)

    def submit_each(self, fn: Callable[..., Any], items: Sequence[Any]) -> list[Any]:
        pending = [self._pool.apply_async(fn, (x,)) for x in items]
        return [result.get() for result in pending]

    def map_waiting(self, fn: Callable[..., Any], items: Sequence[Any],
                    coroutine: Callable[..., Any]) -> list[Any]:
        from mpire import WorkerPool

        if self._threads is None:
            self._threads = WorkerPool(len(items), start_method="threading", keep_alive=True)
        return self._threads.map(fn, items, chunk_size=1)

    def fold(self, new_state: Callable[[], Any], step: Callable[[Any, Any], None],
             finish: Callable[[Any], Any], items: Sequence[Any]) -> list[Any]:
        from mpire import WorkerPool

        with WorkerPool(self.workers, use_worker_state=True) as pool:
            pool.map(lambda ws, x: step(ws["state"], x), items,
                     worker_init=lambda ws: ws.update(state=new_state()),
                     worker_exit=lambda ws: finish(ws["state"]))
            return list(pool.get_exit_results())

    def stop(self) -> None:
        for pool in (self._pool, self._threads):
            if pool is not None:
                pool.stop_and_join()
        self._pool = self._threads = None
        self._tasks.clear()

    def cold_start_code(self) -> str:
        return ("from mpire import WorkerPool\n"
                "WorkerPool(keep_alive=True).map(abs, [-1])")


# ---- pebble -----------------------------------------------------------------------------------

class Pebble(Adapter):
    name = "pebble"
    module = "pebble"
    how = ("ProcessPool (platform default start method: fork on Linux before 3.14), "
           "initializer/initargs, map(chunksize=n/(4 workers)); one future per task: "
           "schedule + result; waiting work: pebble.ThreadPool, a thread per call")

    def __init__(self, workers: int) -> None:
        super().__init__(workers)
        self._pool: Any = None
        self._threads: Any = None

    def start(self, inits: Sequence[Init] = ()) -> None:
        from pebble import ProcessPool

        self._pool = ProcessPool(self.workers, initializer=run_inits if inits else None,
                                 initargs=tuple(inits))

    def map(self, fn: Callable[..., Any], items: Sequence[Any], *, chunksize: int | None = None,
            shared: Any = None) -> list[Any]:
        future = self._pool.map(_with_shared(fn, shared), items,
                                chunksize=self._chunk(len(items), chunksize))
        return list(future.result())

    def map_defaults(self, fn: Callable[..., Any], items: Sequence[Any]) -> list[Any]:
        return list(self._pool.map(fn, items).result())

    def submit_each(self, fn: Callable[..., Any], items: Sequence[Any]) -> list[Any]:
        futures = [self._pool.schedule(fn, args=(x,)) for x in items]
        return [future.result() for future in futures]

    def map_waiting(self, fn: Callable[..., Any], items: Sequence[Any],
                    coroutine: Callable[..., Any]) -> list[Any]:
        from pebble import ThreadPool

        if self._threads is None:
            self._threads = ThreadPool(len(items))
        return list(self._threads.map(fn, items).result())

    def stop(self) -> None:
        for pool in (self._pool, self._threads):
            if pool is not None:
                pool.close()
                pool.join()
        self._pool = self._threads = None

    def cold_start_code(self) -> str:
        return ("from pebble import ProcessPool\n"
                "ProcessPool().schedule(abs, args=(-1,)).result()")


# ---- Dask -------------------------------------------------------------------------------------

# One LocalCluster per process, started before any clock runs and kept for the next cell
# (the --tiny run checks every workload in one process).
_cluster: Any = None


def close_clusters() -> None:
    """Close what the adapters' prepare() started in this process: Dask's cluster, Ray."""
    global _cluster
    try:
        if _cluster is not None:
            _cluster.close()
            _cluster = None
    finally:
        stop_ray()


class Dask(Adapter):
    name = "dask"
    module = "distributed"
    how = ("LocalCluster on 127.0.0.1 (worker processes, 1 thread each; started before the "
           "clock), dask.bag with 4 partitions per worker, scatter for big arrays, client.run "
           "for per-worker set-up; one future per task: client.submit (pure=False) + "
           "client.gather; waiting work: the threaded scheduler, a thread per call")

    def __init__(self, workers: int) -> None:
        super().__init__(workers)
        self._client: Any = None

    def prepare(self) -> None:
        global _cluster
        from dask.distributed import Client, LocalCluster

        if _cluster is None or len(_cluster.workers) != self.workers:
            _cluster = LocalCluster(n_workers=self.workers, threads_per_worker=1,
                                    processes=True, host="127.0.0.1", dashboard_address=None)
        self._client = Client(_cluster, set_as_default=True)

    def share(self, array: Any) -> tuple[Any, Init | None]:
        return self._client.scatter(array, broadcast=True), None

    def start(self, inits: Sequence[Init] = ()) -> None:
        if inits:
            self._client.run(run_inits, *inits)

    def map(self, fn: Callable[..., Any], items: Sequence[Any], *, chunksize: int | None = None,
            shared: Any = None) -> list[Any]:
        import dask.bag as db

        if shared is not None:  # a future: client.map resolves it in each worker
            return self._gather(self._client.map(fn, items, shared=shared, pure=False))
        parts = math.ceil(len(items) / self._chunk(len(items), chunksize))
        return db.from_sequence(items, npartitions=parts).map(fn).compute()

    def map_defaults(self, fn: Callable[..., Any], items: Sequence[Any]) -> list[Any]:
        import dask.bag as db

        return db.from_sequence(items).map(fn).compute()

    def submit_each(self, fn: Callable[..., Any], items: Sequence[Any]) -> list[Any]:
        return self._gather([self._client.submit(fn, x, pure=False) for x in items])

    def map_arrays(self, fn: Callable[..., Any], arrays: Sequence[Any]) -> list[Any]:
        # hash=False: a warm run scatters equal arrays again, under the keys the previous
        # run is still releasing, and its tasks then lose their inputs.
        futures = self._client.scatter(list(arrays), hash=False)
        return self._gather(self._client.map(fn, futures, pure=False))

    def map_waiting(self, fn: Callable[..., Any], items: Sequence[Any],
                    coroutine: Callable[..., Any]) -> list[Any]:
        import dask

        return list(dask.compute(*[dask.delayed(fn)(x) for x in items], scheduler="threads",
                                 num_workers=len(items)))

    def _gather(self, futures: list[Any]) -> list[Any]:
        return list(self._client.gather(futures))

    def release(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None

    def cold_start_code(self) -> str:
        return ("from dask.distributed import Client, LocalCluster\n"
                "client = Client(LocalCluster(n_workers=2, threads_per_worker=1, "
                "host='127.0.0.1', dashboard_address=None))\n"
                "client.submit(abs, -1).result()")

# ---- Ray --------------------------------------------------------------------------------------

# One Ray instance per process, shared by the three Ray adapters as the Dask cluster is: started
# by the first prepare(), before any clock runs, and kept for the next cell (the --tiny run
# checks every workload of the family in one process); close_clusters() stops it.
_ray_cpus: int | None = None


def start_ray(workers: int) -> None:
    """A local Ray instance of ``workers`` CPUs on 127.0.0.1, unless one is up already."""
    global _ray_cpus
    import ray

    if ray.is_initialized():
        if _ray_cpus in (None, workers):  # None: opened by our caller, who closes it
            return
        ray.shutdown()
    # address="local": a fresh instance, never a cluster someone else left running here
    ray.init(address="local", num_cpus=workers, include_dashboard=False,
             _node_ip_address="127.0.0.1", configure_logging=False)
    _ray_cpus = workers


def join_ray(address: str) -> None:
    """Connect this process to the running Ray cluster at ``address`` (left running): the
    Ray adapters' prepare() then uses it instead of starting an instance of their own, and
    close_clusters() leaves it alone (the process disconnects as it exits). For a --tiny check
    on a Ray that is already up (the test suite's)."""
    global _ray_cpus
    import ray

    if ray.is_initialized():
        ray.shutdown()
    ray.init(address=address, configure_logging=False)
    _ray_cpus = None  # not ours to stop: start_ray() keeps it whatever the worker count


def stop_ray() -> None:
    global _ray_cpus
    if _ray_cpus is not None:
        import ray

        if ray.is_initialized():
            ray.shutdown()
        _ray_cpus = None


def run_batch(fn: Callable[..., Any], items: Sequence[Any], **kwargs: Any) -> list[Any]:
    """One Ray task for a batch of calls (Ray's docs' remedy for tasks that are too small)."""
    return [fn(x, **kwargs) for x in items]


def call_one(fn: Callable[..., Any], x: Any, **kwargs: Any) -> Any:
    return fn(x, **kwargs)


class Caller:
    """A threaded Ray actor's class (``max_concurrency``): Ray's threads for waiting work."""

    def call(self, fn: Callable[..., Any], x: Any) -> Any:
        return fn(x)


_RAY_INIT = ("ray.init(address='local', include_dashboard=False, "
             "_node_ip_address='127.0.0.1', configure_logging=False)")


class RayPool(Adapter):
    name = "ray-pool"
    module = "ray"
    family = "ray"
    how = ("ray.util.multiprocessing.Pool (one actor process per worker) on a local Ray "
           "instance started before the clock, initializer/initargs, map's own chunking "
           "(n/(4 workers)); a big shared input: ray.put once, each task ray.get's it in "
           "place; one future per task: apply_async + get; no thread pool: waiting work on "
           "the actors, chunksize 1")

    def __init__(self, workers: int) -> None:
        super().__init__(workers)
        self._pool: Any = None
        self._stored: list[Any] = []

    def prepare(self) -> None:
        start_ray(self.workers)

    def share(self, array: Any) -> tuple[Any, Init | None]:
        import ray

        self._stored.append(ray.put(array))
        return self._stored[-1], None

    def start(self, inits: Sequence[Init] = ()) -> None:
        from ray.util.multiprocessing import Pool

        self._pool = Pool(self.workers, initializer=run_inits if inits else None,
                          initargs=tuple(inits))

    def map(self, fn: Callable[..., Any], items: Sequence[Any], *, chunksize: int | None = None,
            shared: Any = None) -> list[Any]:
        return list(self._pool.map(_with_shared(fn, shared), items, chunksize))

    def submit_each(self, fn: Callable[..., Any], items: Sequence[Any]) -> list[Any]:
        pending = [self._pool.apply_async(fn, (x,)) for x in items]
        return [result.get() for result in pending]

    def stop(self) -> None:
        if self._pool is not None:
            self._pool.close()
            self._pool.join()
            self._pool = None

    def release(self) -> None:
        self._stored.clear()

    def cold_start_code(self) -> str:
        return (f"import ray\n{_RAY_INIT}\n"
                "from ray.util.multiprocessing import Pool\n"
                "Pool().apply(abs, (-1,))")


class RayRemote(Adapter):
    name = "ray-remote"
    module = "ray"
    family = "ray"
    how = ("ray.remote tasks + ray.get on a local Ray instance started before the clock: one "
           "task per call for the defaults, for one future per task and where chunksize is "
           "1, else one task per batch of chunksize calls (n/(4 workers) by default); big "
           "arrays as task arguments (Ray puts them in its object store) or ray.put once; "
           "per-worker set-up loaded once per process on first use; waiting work: a threaded "
           "actor (max_concurrency), a thread per call")

    def __init__(self, workers: int) -> None:
        super().__init__(workers)
        self._inits: tuple[Init, ...] = ()
        self._remotes: dict[int, tuple[Any, Any]] = {}
        self._stored: list[Any] = []
        self._waiter: Any = None

    def prepare(self) -> None:
        start_ray(self.workers)

    def share(self, array: Any) -> tuple[Any, Init | None]:
        import ray

        self._stored.append(ray.put(array))  # a task given the ref gets the array itself
        return self._stored[-1], None

    def start(self, inits: Sequence[Init] = ()) -> None:
        self._inits = tuple(inits)

    def _remote(self, fn: Callable[..., Any]) -> Any:
        """``ray.remote(fn)``, made once per function (each one is exported to the cluster)."""
        import ray

        made = self._remotes.get(id(fn))
        if made is None or made[0] is not fn:
            made = self._remotes[id(fn)] = (fn, ray.remote(fn))
        return made[1]

    def map(self, fn: Callable[..., Any], items: Sequence[Any], *, chunksize: int | None = None,
            shared: Any = None) -> list[Any]:
        import ray

        kwargs = {} if shared is None else {"shared": shared}
        task = InitOnce(fn, self._inits) if self._inits else fn
        size = self._chunk(len(items), chunksize)
        if size == 1:
            return self._per_item(task, items, kwargs)
        batch = self._remote(run_batch)
        refs = [batch.remote(task, items[i:i + size], **kwargs)
                for i in range(0, len(items), size)]
        return [result for part in ray.get(refs) for result in part]

    def _per_item(self, fn: Callable[..., Any], items: Sequence[Any],
                  kwargs: dict[str, Any]) -> list[Any]:
        """One task per call: ``ray.remote(fn)``, or a function that calls ``fn`` where Ray
        cannot make a remote function of it (a partial, a callable object)."""
        import ray

        if inspect.isfunction(fn):
            remote = self._remote(fn)
            return list(ray.get([remote.remote(x, **kwargs) for x in items]))
        one = self._remote(call_one)
        return list(ray.get([one.remote(fn, x, **kwargs) for x in items]))

    def map_defaults(self, fn: Callable[..., Any], items: Sequence[Any]) -> list[Any]:
        return self._per_item(fn, items, {})

    def submit_each(self, fn: Callable[..., Any], items: Sequence[Any]) -> list[Any]:
        return self._per_item(fn, items, {})  # f.remote per call, one ray.get for all

    def map_arrays(self, fn: Callable[..., Any], arrays: Sequence[Any]) -> list[Any]:
        return self._per_item(fn, arrays, {})

    def map_waiting(self, fn: Callable[..., Any], items: Sequence[Any],
                    coroutine: Callable[..., Any]) -> list[Any]:
        import ray

        if self._waiter is None:
            actor = ray.remote(num_cpus=0, max_concurrency=len(items))(Caller)
            self._waiter = actor.remote()
        return list(ray.get([self._waiter.call.remote(fn, x) for x in items]))

    def stop(self) -> None:
        if self._waiter is not None:
            import ray

            ray.kill(self._waiter)
            self._waiter = None

    def release(self) -> None:
        self._stored.clear()
        self._remotes.clear()

    def cold_start_code(self) -> str:
        return (f"import ray\n{_RAY_INIT}\n"
                "ray.get(ray.remote(lambda x: abs(x)).remote(-1))")


class ManybrainsRay(Adapter):
    name = "manybrains-ray"
    module = "ray"
    kind = "ours"
    family = "ray"
    how = ("Pool(backend=manybrains.Ray()) on the same local Ray instance as the Ray peers "
           "(started before the clock; the pool runs through that connection), chunksize "
           "auto, initializer/initargs; a big shared input handed to the initializer (pickled "
           "once, put in Ray's object store once, unpickled once per worker: an ObjectRef "
           "inside a manybrains task cannot be read in the worker); one future per task: "
           "Pool.submit; waiting work on the Ray workers, chunksize 1")

    def __init__(self, workers: int) -> None:
        super().__init__(workers)
        self._pool: Any = None

    def prepare(self) -> None:
        start_ray(self.workers)

    def start(self, inits: Sequence[Init] = ()) -> None:
        import manybrains as mb

        self._pool = mb.Pool(self.workers, backend=mb.Ray(),
                             initializer=run_inits if inits else None, initargs=tuple(inits))

    def map(self, fn: Callable[..., Any], items: Sequence[Any], *, chunksize: int | None = None,
            shared: Any = None) -> list[Any]:
        return self._pool.map(_with_shared(fn, shared), items, chunksize=chunksize or "auto")

    def map_defaults(self, fn: Callable[..., Any], items: Sequence[Any]) -> list[Any]:
        return self._pool.map(fn, items)

    def submit_each(self, fn: Callable[..., Any], items: Sequence[Any]) -> list[Any]:
        futures = [self._pool.submit(fn, x) for x in items]
        return [future.result() for future in futures]

    def stop(self) -> None:
        if self._pool is not None:
            self._pool.shutdown()
            self._pool = None

    def cold_start_code(self) -> str:
        return "import manybrains as mb\nmb.Pool(backend='ray').submit(abs, -1).result()"


# ---- baselines --------------------------------------------------------------------------------

class Serial(Adapter):
    name = "serial"
    module = "builtins"
    kind = "baseline"
    how = "a plain loop in the calling process; per-worker set-up run once"

    def start(self, inits: Sequence[Init] = ()) -> None:
        run_inits(*inits)

    def map(self, fn: Callable[..., Any], items: Sequence[Any], *, chunksize: int | None = None,
            shared: Any = None) -> list[Any]:
        task = _with_shared(fn, shared)
        return [task(x) for x in items]

    def submit_each(self, fn: Callable[..., Any], items: Sequence[Any]) -> list[Any]:
        return [fn(x) for x in items]

    def fold(self, new_state: Callable[[], Any], step: Callable[[Any, Any], None],
             finish: Callable[[Any], Any], items: Sequence[Any]) -> list[Any]:
        return [fold_chunk(items, new_state=new_state, step=step, finish=finish)]


class Threads(Adapter):
    name = "threads"
    module = "threading"
    kind = "baseline"
    how = "one threading.Thread per call"

    def map_waiting(self, fn: Callable[..., Any], items: Sequence[Any],
                    coroutine: Callable[..., Any]) -> list[Any]:
        results: list[Any] = [None] * len(items)

        def run(i: int) -> None:
            results[i] = fn(items[i])

        threads = [threading.Thread(target=run, args=(i,)) for i in range(len(items))]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        return results


class Asyncio(Adapter):
    name = "asyncio"
    module = "asyncio"
    kind = "baseline"
    how = "asyncio.gather over the coroutine version of the call"

    def map_waiting(self, fn: Callable[..., Any], items: Sequence[Any],
                    coroutine: Callable[..., Any]) -> list[Any]:
        import asyncio

        async def gather() -> list[Any]:
            return list(await asyncio.gather(*(coroutine(x) for x in items)))

        return asyncio.run(gather())


ADAPTERS: dict[str, type[Adapter]] = {a.name: a for a in (
    Manybrains, ManybrainsRay, StdlibPool, StdlibExecutor, Loky, Joblib, Mpire, Pebble, Dask,
    RayPool, RayRemote, Serial, Threads, Asyncio)}
