"""Workers' logging records reach the parent's handlers; their prints reach its sys.stdout."""

from __future__ import annotations

import logging
import os
import pickle
import sys
import threading

import pytest

import manybrains as mb
from manybrains.backends.processes import output

LOGGER = "manybrains_test_app"


def log_and_return_pid(x: int) -> int:
    log = logging.getLogger(LOGGER)
    log.info("info %d", x)
    log.warning("warning %d", x)
    return os.getpid()


def log_an_exception(_: object = None) -> None:
    try:
        raise KeyError("missing")
    except KeyError:
        logging.getLogger(LOGGER).exception("it failed")


def log_from_threads(threads: int, records: int) -> int:
    def emit(t: int) -> None:
        for i in range(records):
            logging.getLogger(LOGGER).warning("thread %d record %d %s", t, i, "x" * 200)

    workers = [threading.Thread(target=emit, args=(t,)) for t in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    return threads * records


def print_lines(first: int, count: int) -> int:
    for i in range(first, first + count):
        print(f"line {i}")
    print(f"to stderr {first}", file=sys.stderr)
    return count


def print_partial(text: str) -> None:
    print(text, end="")


def print_then_crash(_: object = None) -> None:
    print("last words")
    os._exit(3)


@pytest.fixture
def info_logs(caplog):
    caplog.set_level(logging.INFO)  # before the pool starts: workers take the parent's levels
    return caplog


def _from_workers(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == LOGGER]


def test_worker_records_reach_the_parent_with_pid_and_process_name(info_logs, start_method):
    with mb.Pool(2, start_method=start_method) as pool:
        pids = pool.map(log_and_return_pid, range(4), chunksize=1)
    records = _from_workers(info_logs)
    assert sorted(r.getMessage() for r in records) == sorted(
        [f"info {i}" for i in range(4)] + [f"warning {i}" for i in range(4)])
    by_message = {r.getMessage(): r for r in records}
    for i, pid in enumerate(pids):
        assert by_message[f"info {i}"].process == pid != os.getpid()
        # as multiprocessing.Pool names its workers: ForkPoolWorker-3, SpawnPoolWorker-4...
        assert by_message[f"info {i}"].processName.split("-")[0] in (
            "ForkPoolWorker", "SpawnPoolWorker", "ForkServerPoolWorker")


def test_workers_ship_only_the_levels_the_parent_keeps(caplog):
    caplog.set_level(logging.WARNING)
    with mb.Pool(1) as pool:
        pool.map(log_and_return_pid, range(2))
    assert sorted(r.getMessage() for r in _from_workers(caplog)) == ["warning 0", "warning 1"]


def _enabled_levels(_: object = None) -> list[bool]:
    log = logging.getLogger(LOGGER)
    return [log.isEnabledFor(level) for level in (logging.DEBUG, logging.INFO, logging.WARNING)]


def test_a_worker_filters_its_records_before_sending_them(caplog, monkeypatch):
    # The parent would drop an INFO record too: count what crosses the pipe instead.
    caplog.set_level(logging.WARNING)
    crossed = []
    deliver = output.deliver_log

    def counting(payload):
        crossed.append(logging.makeLogRecord(pickle.loads(payload)).getMessage())
        deliver(payload)

    monkeypatch.setattr(output, "deliver_log", counting)
    with mb.Pool(1) as pool:
        pool.map(log_and_return_pid, range(2))
        assert pool.submit(_enabled_levels).result(timeout=10) == [False, False, True]
    assert sorted(crossed) == ["warning 0", "warning 1"]


def test_a_logger_level_of_the_parent_applies_in_the_worker(caplog):
    caplog.set_level(logging.DEBUG)
    logging.getLogger(LOGGER).setLevel(logging.WARNING)
    try:
        with mb.Pool(1) as pool:
            assert pool.submit(_enabled_levels).result(timeout=10) == [False, False, True]
    finally:
        logging.getLogger(LOGGER).setLevel(logging.NOTSET)


def test_exception_tracebacks_arrive_as_text(info_logs):
    with mb.Pool(1) as pool:
        pool.submit(log_an_exception).result(timeout=10)
    (record,) = _from_workers(info_logs)
    assert record.levelno == logging.ERROR
    assert "KeyError: 'missing'" in record.exc_text
    assert "log_an_exception" in record.exc_text


def test_records_from_many_threads_of_a_task_arrive_whole(info_logs):
    with mb.Pool(1) as pool:
        assert pool.submit(log_from_threads, 4, 50).result(timeout=30) == 200
    messages = [r.getMessage() for r in _from_workers(info_logs)]
    assert len(messages) == 200
    for t in range(4):  # each thread's records in the order it wrote them
        mine = [m.split()[3] for m in messages if m.startswith(f"thread {t} ")]
        assert mine == [str(i) for i in range(50)]


def test_prints_reach_the_parents_sys_stdout_in_order_per_worker(capsys, start_method):
    with mb.Pool(1, start_method=start_method) as pool:
        pool.starmap(print_lines, [(0, 5), (5, 5), (10, 5)], chunksize=1)
        out, err = capsys.readouterr()  # before shutdown: each line came before its result
    assert out.splitlines() == [f"line {i}" for i in range(15)]
    assert err.splitlines() == ["to stderr 0", "to stderr 5", "to stderr 10"]


def test_prints_of_several_workers_keep_each_workers_order(capsys):
    with mb.Pool(2) as pool:
        pool.starmap(print_lines, [(0, 200), (1000, 200)], chunksize=1)
    lines = capsys.readouterr().out.splitlines()
    assert sorted(lines) == sorted(f"line {i}" for i in [*range(200), *range(1000, 1200)])
    first = [int(x.split()[1]) for x in lines if int(x.split()[1]) < 1000]
    second = [int(x.split()[1]) for x in lines if int(x.split()[1]) >= 1000]
    assert first == sorted(first) and second == sorted(second)


def test_an_unfinished_line_is_sent_when_the_worker_stops(capsys):
    with mb.Pool(1) as pool:
        pool.submit(print_partial, "no newline").result(timeout=10)
    assert capsys.readouterr().out == "no newline"


def test_a_line_printed_just_before_a_crash_is_not_lost(capsys):
    with mb.Pool(1) as pool, pytest.raises(mb.WorkerCrashed):
        pool.submit(print_then_crash).result(timeout=10)
    assert "last words" in capsys.readouterr().out


LAST_RESORT_SCRIPT = """
    import logging
    import logging.handlers
    import multiprocessing
    import sys

    from manybrains import Pool

    def own_handler(q):  # the logging cookbook: the worker logs to a queue only
        root = logging.getLogger()
        if not root.handlers:
            root.addHandler(logging.handlers.QueueHandler(q))
        logging.getLogger("app").warning("to the queue")

    def no_handler(x):
        logging.getLogger("app").warning("by the last resort")

    def configure():
        logging.basicConfig(level=logging.INFO, format="configured %(levelname)s %(message)s")

    def informs(x):
        logging.getLogger("app").info("an info record")

    if __name__ == "__main__":
        q = multiprocessing.Manager().Queue()
        with Pool(1) as pool:
            pool.map(no_handler, [0])
        with Pool(2) as pool:
            pool.map(own_handler, [q] * 4, 1)
        with Pool(1, configure) as pool:
            pool.map(informs, [0])
        print(q.qsize())
"""


@pytest.mark.parametrize("pool_module", ["multiprocessing", "manybrains"])
def test_a_parent_without_logging_handlers_sees_what_the_stdlib_shows(tmp_path, pool_module):
    # A forked stdlib worker holds copies of the parent's handlers: here none. So a warning
    # goes through logging's last resort, a record that the program's own QueueHandler takes
    # is not printed, and basicConfig() in an initializer configures the worker.
    import usercode

    source = LAST_RESORT_SCRIPT.replace("from manybrains import", f"from {pool_module} import")
    done = usercode.run(source)
    assert done.returncode == 0, done
    assert done.stdout == "4\n"
    assert done.stderr.count("by the last resort") == 1
    assert "to the queue" not in done.stderr
    assert done.stderr.count("configured INFO an info record") == 1
