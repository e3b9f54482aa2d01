"""Run CPython's own pool tests against manybrains' drop-in classes.

``python cpython_conformance.py executor|pool START_METHOD REPORT.json`` (under an interpreter whose
standard library has the ``test`` package, with manybrains importable) runs

- ``executor``: the process-pool classes of ``test.test_concurrent_futures`` (ExecutorTest
  through ProcessPoolExecutorTest, ExecutorDeadlockTest, ExecutorShutdownTest, the
  initializer tests, WaitTests, AsCompletedTests) with ``manybrains.ProcessPoolExecutor``
  as their executor type;
- ``pool``: ``_TestPool``, ``_TestPoolWorkerErrors`` and ``_TestPoolWorkerLifetime`` of
  ``test._test_multiprocessing`` with ``manybrains.Pool`` as ``multiprocessing.Pool``.

It writes one JSON object to REPORT.json (the tests print on stdout): how many tests ran,
passed, failed and were skipped, with the name and reason of every skip and the traceback of
every failure. The tests skipped here are listed in ``SKIPS`` with why; the stdlib's own
skips keep their own reasons.
"""

from __future__ import annotations

import faulthandler
import functools
import importlib
import json
import multiprocessing
import signal
import sys
import unittest

import manybrains as mb

_PRIVATE = "reads the stdlib pool's private attribute {}, which manybrains has no reason to copy"
_ISOLATED = ("runs the stdlib's own class in an isolated child interpreter (-I ignores "
             "PYTHONPATH), so manybrains cannot be substituted there")

# test name ("Class.test" where the name is shared: Class is part of the class's name)
# -> why it does not apply to manybrains' class
SKIPS: dict[str, dict[str, str]] = {
    "executor": {
        "test_killed_child": _PRIVATE.format("_processes") + "; it also expects one dead "
        "worker to break the whole pool, where manybrains fails only that worker's task",
        "test_saturation": _PRIVATE.format("_processes"),
        "test_idle_process_reuse_one": _PRIVATE.format("_processes"),
        "test_idle_process_reuse_multiple": _PRIVATE.format("_processes"),
        "test_max_tasks_per_child": _PRIVATE.format("_processes"),
        "test_max_tasks_per_child_defaults_to_spawn_context": _PRIVATE.format("_mp_context"),
        "test_python_finalization_error": "patches the stdlib's private "
        "threading._start_joinable_thread to break the stdlib's own manager thread",
        "test_processes_terminate": _PRIVATE.format("_processes"),
        "test_context_manager_shutdown": _PRIVATE.format("_processes"),
        "test_del_shutdown": _PRIVATE.format("_executor_manager_thread"),
        "test_shutdown_no_wait": _PRIVATE.format("_call_queue"),
        "test_shutdown_deadlock_pickle": _PRIVATE.format("_executor_manager_thread"),
        "test_gh105829_should_not_deadlock_if_wakeup_pipe_full": "patches the stdlib's "
        "private _ExecutorManagerThread and _ThreadWakeup",
        "test_traceback": "asserts type(exc.__cause__) is the stdlib's private "
        "concurrent.futures.process._RemoteTraceback; manybrains chains its own "
        "RemoteTraceback with the same .tb text (tests/dropin/test_executor.py checks it)",
        "FailingInitializer.test_initializer": _PRIVATE.format("_broken") + ", and expects "
        "the worker to log the failure on the stdlib's 'concurrent.futures' logger; "
        "manybrains fails every task with InitializerFailed, the cause chained "
        "(tests/dropin/test_executor.py)",
        "test_interpreter_shutdown": _ISOLATED,
        "test_submit_after_interpreter_shutdown": _ISOLATED,
        "test_hang_gh83386": _ISOLATED,
    },
    "pool": {
        "test_make_pool": _PRIVATE.format("_pool"),
        "test_pool_worker_lifetime": _PRIVATE.format("_pool") + " and calls "
        "_repopulate_pool()",
        "test_resource_warning": _PRIVATE.format("_state"),
        "test_traceback": "asserts type(exc.__cause__) is multiprocessing.pool.RemoteTraceback "
        "(not in the module's __all__); manybrains chains its own RemoteTraceback with the "
        "same .tb text (tests/dropin/test_mp_pool_dropin.py checks it)",
        "test_unpickleable_result": "expects a lambda result to be unpicklable; manybrains "
        "pickles results with cloudpickle, so the lambda comes back (an unpicklable result "
        "is MaybeEncodingError: tests/dropin/test_mp_pool_dropin.py)",
        "test_worker_finalization_via_atexit_handler_of_multiprocessing": _ISOLATED,
    },
}

_FUTURES_MODULES = ("test_process_pool", "test_deadlock", "test_shutdown", "test_init",
                    "test_wait", "test_as_completed")
_POOL_CLASSES = ("WithProcessesTestPool", "WithProcessesTestPoolWorkerErrors",
                 "WithProcessesTestPoolWorkerLifetime")


def executor_suite(start_method: str) -> unittest.TestSuite:
    """The stdlib's process-pool executor tests for ``start_method``, on manybrains."""
    prefix = f"ProcessPool{start_method.capitalize()}"
    suite = unittest.TestSuite()
    for name in _FUTURES_MODULES:
        module = importlib.import_module(f"test.test_concurrent_futures.{name}")
        for attr, cls in sorted(vars(module).items()):
            if attr.startswith(prefix) and isinstance(cls, type):
                cls.executor_type = mb.ProcessPoolExecutor
                suite.addTests(_load(cls, SKIPS["executor"]))
    return suite


def pool_suite(start_method: str) -> unittest.TestSuite:
    """The stdlib's ``multiprocessing.Pool`` tests for ``start_method``, on manybrains."""
    # The stdlib's own module for this start method: workers import it to find the tests'
    # task functions (some are classmethods of the test classes).
    module = importlib.import_module(f"test.test_multiprocessing_{start_method}.test_processes")
    # The stdlib's tests choose the start method with set_start_method(), which mb.Pool
    # does not read (its default is its own): the pools get it as their context instead.
    pool = functools.partial(mb.Pool, context=multiprocessing.get_context(start_method))
    multiprocessing.Pool = pool  # type: ignore[assignment]  # some tests call it directly
    suite = unittest.TestSuite()
    for name in _POOL_CLASSES:
        cls = getattr(module, name)
        cls.Pool = staticmethod(pool)
        suite.addTests(_load(cls, SKIPS["pool"]))
    return suite


def _load(cls: type, skips: dict[str, str]) -> unittest.TestSuite:
    for key, reason in skips.items():
        owner, _, name = key.rpartition(".")
        if owner in cls.__name__ and hasattr(cls, name):
            setattr(cls, name, unittest.skip(f"manybrains: {reason}")(getattr(cls, name)))
    return unittest.defaultTestLoader.loadTestsFromTestCase(cls)


def _stop_leftover_pools_first() -> None:
    # A test that fails half-way can leave its pool running; the workers of a spawn pool hold
    # the resource tracker's pipe, and the stdlib's module cleanup waits for the tracker to
    # exit: without this, one failure would hang the run instead of being reported.
    from multiprocessing import util

    from manybrains.backends import processes

    cleanup = util._cleanup_tests  # type: ignore[attr-defined]

    def cleanup_tests() -> None:
        processes._stop_all_pools()
        cleanup()

    util._cleanup_tests = cleanup_tests  # type: ignore[attr-defined]


def main(argv: list[str]) -> int:
    suite_name, start_method, report_path = argv
    faulthandler.register(signal.SIGUSR1, all_threads=True)  # kill -USR1: where it hangs
    _stop_leftover_pools_first()
    suite = (executor_suite if suite_name == "executor" else pool_suite)(start_method)
    # Each test's name and outcome go to stderr, so a hang shows where it is.
    result = unittest.TextTestRunner(stream=sys.stderr, verbosity=2).run(suite)
    failed = [(str(test), trace) for test, trace in result.failures + result.errors]
    # a class or module fixture that fails is reported too, though it is not a test that ran
    failed_tests = {id(test) for test, _ in result.failures + result.errors
                    if isinstance(test, unittest.TestCase)}
    report = {
        "suite": suite_name, "start_method": start_method, "python": sys.version.split()[0],
        "ran": result.testsRun, "skipped": len(result.skipped), "failed": len(failed),
        "passed": result.testsRun - len(result.skipped) - len(failed_tests),
        "skips": {str(test): reason for test, reason in result.skipped},
        "failures": dict(failed),
    }
    with open(report_path, "w", encoding="utf-8") as out:
        json.dump(report, out, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
