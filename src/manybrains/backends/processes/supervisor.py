"""The engine room: one thread in the parent that owns every worker process.

A task's journey::

    caller thread                      supervisor thread                    worker process
    -------------                      -----------------                    --------------
    Pool.submit(fn, *args)
      pickle once: a CALL (fn's     ──┐
      cached reference + plain        │
      arguments) or a whole TASK      │
      -> SerializationError           │
         raised right here            │
      Record(id, frame, future)       │
      inbox.append; the first post    │
      since the supervisor looked     │
      writes the wake byte ───────────┴► wait_ready() wakes (wake pipe)
                                      pending.extend(every record posted)
                                      dispatch: an idle worker gets one; a
                                      worker whose tasks are short gets more
                                      queued behind its running one (about
                                      2 ms of its pace), record -> inflight;
                                      one write per worker ───────────────► one read: every task
                                                                             sent so far; for each:
                                                                             mark it, unpickle, run,
                                      wait_ready(): its connection ◄─────── send its reply
                                      one read: every reply sent so far;
                                      each is inflight.popleft()
      future.result() ◄───────────── future.set_result / set_exception

    Batching is what makes small tasks cheap: a burst of submits wakes the supervisor once,
    its tasks reach each worker in one write, and their replies come back in one read. In
    the parent every system call also hands the GIL to the caller's thread, so fewer of them
    is most of the gain. A worker sends each reply as soon as its task ends, never held
    back: a crash then loses only the task it was running. Writes never block this thread:
    what a worker's pipe cannot take now stays in its channel (:mod:`.channel`) and goes
    when the pipe has room, so one worker that reads slowly holds up no other. The price of
    queueing: a task queued behind one that turns out long waits for it, while another
    worker may idle. The queue is kept to what the worker's recent tasks would finish in
    2 ms, and a worker whose current task has run longer than that gets nothing more
    (:mod:`.dispatch`).

    and when things go wrong:
      worker dies      wait_ready() wakes on its sentinel: its task mark (shared memory the worker
                       writes as it takes a task) names the record it was running ->
                       WorkerCrashed (or resubmitted while retries remain); the others, and
                       the oldest too if the worker never took it (it died between tasks),
                       were never started and go back to pending; a new worker replaces it.
      timeout          wait_ready() has a deadline: the worker and its children are killed, its
                       record fails with TimeoutError, and the sentinel path above follows.
      init fails       INIT_FAILED (or deaths before READY, judged by :mod:`.startup`): the
                       pool breaks once, every future fails with InitializerFailed, no
                       respawn storm.
      limit reached    (max_tasks_per_worker, max_memory_per_worker) STOP follows its last
                       task; it is replaced once its sentinel says it exited, so that, as
                       in multiprocessing.Pool, no more workers live than the pool's width.

Workers are started (:mod:`.startup`) by the pool's :class:`~.context.Launch`: by default
forked from a template, a copy of the parent made while it ran one thread (:mod:`.template`),
so a worker holds the parent's modules, ``__main__`` and the pool's initializer and initargs
without unpickling them. Functions of ``__main__`` travel by reference when the worker holds
them, else by value onto the worker's own ``__main__`` (:mod:`manybrains._mainspace`): one
module namespace per worker, as under the stdlib.

Only this thread touches worker state, so there are no locks around it: other threads talk to
it through its :class:`~.inbox.Inbox` (a deque, and a byte on a pipe). It never polls or sleeps:
:func:`.channel.wait_ready` returns when a worker answers, when one dies (its sentinel), when
a pipe that was full has room, when a deadline passes or when the caller has news.

It never imports a module either, nor runs the pickler over the pool's initializer: another
thread of the program may be importing that module at that moment, and a module read while
its body runs is missing names. The pool's caller imports what this thread needs and pickles
the workers' setup (:class:`~.startup.Startup`), and makes (so numbers) the first workers,
before this thread starts.
"""

from __future__ import annotations

import itertools
import logging
import signal
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable
from concurrent.futures import CancelledError, Future
from typing import Any

from ..._errors import (
    BrokenPool,
    WorkerCrashed,
    check_open,
    describe_exit,
    rebuild_error,
)
from ..._future import TaskFuture, set_exception, set_result
from ..._timings import TaskTimings
from .. import _wire
from .._base import Counters, WorkerStats

# inner_threads: a worker's first step; imported here, template workers find it loaded.
from . import inner_threads, output, protocol  # noqa: F401
from .channel import wait_ready
from .dispatch import next_deadline, outgrown, overdue, pick_worker
from .inbox import Inbox
from .kill import kill_tree
from .startup import STARTUP_ATTEMPTS, Prepared, Startup
from .state import EngineOptions, Record, WorkerSlot

LOGGER = logging.getLogger("manybrains")



def _unlinked(record: Record) -> Future[Any]:
    """``record``'s future, which no longer leads back to it: a settled task needs no record,
    and the pair would otherwise be a reference cycle, freed only by the garbage collector,
    whose passes over a program's 100,000 pending futures cost more than the tasks."""
    future = record.future
    if isinstance(future, TaskFuture):
        future.handle = None
    return future


class Supervisor:
    """Owns the worker processes of one pool; see the module docstring."""

    _names = itertools.count(1)

    def __init__(self, options: EngineOptions) -> None:
        self._options = options
        self._startup = Startup(options)  # raises if the initializer cannot reach a worker
        # Numbered now, in the caller, as multiprocessing.Pool() numbers its first workers.
        self._prepared = self._prepare(options.workers)
        self._fresh_deaths = 0  # in a row: workers that died ready before their first task
        self._inbox = Inbox()
        self._lock = threading.Lock()  # orders submit against shutdown in caller threads
        self._closed = False
        self._broken: BaseException | None = None
        self._closing = False
        self._workers: dict[int, WorkerSlot] = {}
        self._pending: deque[Record] = deque()
        self._open: dict[int, Record] = {}  # every record whose future we still owe
        self.counters = Counters()
        self.timings = TaskTimings()  # run time of every task, for Pool.insights()
        self._thread = threading.Thread(target=self._main, daemon=True,
                                        name=f"manybrains-supervisor-{next(self._names)}")
        self._thread.start()

    # ---- called from any thread -------------------------------------------------------

    def submit(self, record: Record) -> None:
        """Queue ``record``; raises if the pool is closed or broken."""
        with self._lock:
            check_open(self._closed, self._broken)
            self.counters.add("submitted")
            self._inbox.post("submit", record)

    def cancel(self, record: Record, *, kill: bool) -> None:
        """Forget ``record`` if queued; if running and ``kill``, kill its worker."""
        self._inbox.post("cancel", (record, kill))

    def shutdown(self, *, wait: bool, cancel_futures: bool, kill: bool = False) -> None:
        """Stop accepting tasks; finish (or cancel, or kill) the rest; stop the workers."""
        with self._lock:
            self._closed = True
            self._inbox.post("shutdown", (cancel_futures, kill))
        if wait and threading.current_thread() is not self._thread:
            self._thread.join()

    @property
    def queued(self) -> int:
        """Tasks submitted and not yet sent to a worker."""
        return len(self._pending) + self._inbox.count("submit")

    def worker_pids(self) -> list[int]:
        """Process ids of the current workers."""
        return [w.process.pid for w in list(self._workers.values()) if w.process.pid]

    def worker_table(self) -> tuple[WorkerStats, ...]:
        """Per-worker counters, for statistics."""
        now = time.monotonic()
        return tuple(WorkerStats(f"pid {w.process.pid}", tasks=w.tasks_done, busy_s=w.busy,
                                 idle_s=max(0.0, now - w.started_at - w.busy),
                                 in_flight=len(w.inflight), pid=w.process.pid,
                                 serialize_s=w.pickling)
                     for w in list(self._workers.values()))

    # ---- the supervisor thread ----------------------------------------------------------

    def _main(self) -> None:
        # Processes inherit the signal mask of the thread that starts them, across exec too:
        # with SIGINT blocked here, a Ctrl-C that lands while a worker (or the forkserver)
        # is still starting waits until the worker has chosen to ignore it.
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
        try:
            self._ensure_workers()
            while self._workers or not self._finished():
                self._step()
        except BaseException as exc:
            LOGGER.exception("the manybrains supervisor failed")
            self._break(BrokenPool(f"the pool's supervisor thread failed: {exc!r}"))
            self._kill_all()
        finally:
            self._release()

    def _finished(self) -> bool:
        if self._broken is not None:
            return True
        return self._closing and not self._pending and not self._inflight_count()

    def _step(self) -> None:
        self._read_inbox()
        self._dispatch()
        if self._finished():
            self._stop_idle_workers()
        timeout = next_deadline(self._workers.values(), time.monotonic())
        sources = self._sources()
        writers = [w.channel.fileno() for w in self._workers.values()
                   if w.channel.unsent and not w.conn.closed]
        readable, writable = wait_ready(sources, writers, timeout)
        for fd in writable:
            self._on_writable(sources[fd])
        for fd in readable:
            self._on_ready(fd, sources[fd])
        self._expire_deadlines()

    def _sources(self) -> dict[int, WorkerSlot | None]:
        """What to wait on, by descriptor: the inbox's wake pipe (None), and each worker's
        sentinel and connection."""
        sources: dict[int, WorkerSlot | None] = {self._inbox.wake_fd: None}
        for w in self._workers.values():
            sources[w.process.sentinel] = w
            if not w.conn.closed:
                sources[w.channel.fileno()] = w
        return sources

    def _on_ready(self, fd: int, w: WorkerSlot | None) -> None:
        if w is None:
            return self._inbox.woken()
        if id(w) not in self._workers:  # reaped while this step handled an earlier event
            return
        if not w.conn.closed and fd == w.channel.fileno():
            self._receive(w)
        elif fd == w.process.sentinel:
            self._reap(w)

    def _on_writable(self, w: WorkerSlot | None) -> None:
        if w is None or id(w) not in self._workers or w.conn.closed:
            return
        try:
            w.channel.flush()
        except OSError:  # the worker died; its sentinel will tell
            w.conn.close()

    # ---- commands from callers ------------------------------------------------------------

    def _read_inbox(self) -> None:
        for command, payload in self._inbox.drain():
            if command == "submit":
                self._open[payload.id] = payload
                self._pending.append(payload)
            elif command == "cancel":
                self._cancel(*payload)
            elif command == "shutdown":
                self._shutdown(*payload)

    def _cancel(self, record: Record, kill: bool) -> None:
        if record in self._pending:
            self._pending.remove(record)
            self._open.pop(record.id, None)
            return
        for w in self._workers.values():
            if record in w.inflight and kill:
                if w.inflight[0] is record:
                    self._kill(w, CancelledError(), record)
                else:  # queued behind another task: killed when it starts
                    record.kill_requested = True

    def _shutdown(self, cancel_futures: bool, kill: bool) -> None:
        self._closing = True
        if not kill:  # as in the stdlib, tasks a worker can take now are under way already:
            self._dispatch()  # cancel_futures cancels only the ones still waiting
        if cancel_futures or kill:
            while self._pending:
                record = self._pending.popleft()
                self._open.pop(record.id, None)
                self._cancel_future(record.future)
        if kill:
            for w in list(self._workers.values()):
                for record in w.inflight:
                    self._cancel_future(record.future)
                self._kill(w, CancelledError())

    def _cancel_future(self, future: Future[Any]) -> None:
        if not future.cancel():  # already running, in the concurrent.futures sense
            set_exception(future, CancelledError())
        elif self._options.mark_running:  # else the backend's done-callback does this
            future.set_running_or_notify_cancel()  # wakes concurrent.futures.wait() waiters

    # ---- sending ------------------------------------------------------------------------------

    def _dispatch(self) -> None:
        try:
            self._assign()
        finally:  # every task assigned to a worker goes in one write per worker
            for w in list(self._workers.values()):
                self._flush(w)

    def _assign(self) -> None:
        limit = self._options.max_tasks_per_worker
        while self._pending and self._broken is None:
            target = pick_worker(self._workers.values(), self._pending[0], limit)
            if target is None:
                if limit is not None:
                    self._retire_outgrown(limit)
                return
            record = self._pending.popleft()
            if self._claim(record):
                self._send(target, record)
            else:
                self._open.pop(record.id, None)

    def _claim(self, record: Record) -> bool:
        """False when the caller cancelled the task before it could start."""
        if self._options.mark_running:
            # A task sent again (its worker died before starting it) is already RUNNING.
            future = record.future
            return future.running() or future.set_running_or_notify_cancel()
        return not record.future.cancelled()

    def _send(self, w: WorkerSlot, record: Record) -> None:
        w.outbox.append(record.frame)
        w.inflight.append(record)
        w.inflight_bytes += len(record.frame)
        if len(w.inflight) == 1 and w.ready:
            record.started = time.monotonic()
        w.calls += record.size
        limit = self._options.max_tasks_per_worker
        if limit is not None and w.calls >= limit:
            self._retire(w)

    def _flush(self, w: WorkerSlot) -> None:
        """Write what :meth:`_send` queued for ``w``. If it died, the tasks stay in its
        ``inflight``: its sentinel's path sends again those it never started."""
        if not w.outbox:
            return
        frames, w.outbox = w.outbox, []
        if w.conn.closed:
            return
        try:
            w.channel.write(frames)
        except OSError:  # the worker died; its sentinel will tell
            w.conn.close()

    def _retire(self, w: WorkerSlot) -> None:
        """Let ``w`` finish what it holds, then exit. Its replacement starts once it has
        exited (:meth:`_reap`), not now: as in ``multiprocessing.Pool``, a pool never has
        more live workers than its width, where starting it now made a chain of them (each
        replacement, sent its one task before it was ready, retired and replaced at once)."""
        w.retiring = True
        w.outbox.append(protocol.request(protocol.STOP))  # after the tasks it was sent
        self._flush(w)

    def _retire_outgrown(self, limit: int) -> None:
        # The next task does not fit in what these workers have left of their limit (a
        # chunk after a smaller one): they make way for fresh ones instead of idling.
        for w in list(outgrown(self._workers.values(), self._pending[0], limit)):
            self._retire(w)

    def _stop_idle_workers(self) -> None:
        for w in self._workers.values():
            if not w.retiring and not w.inflight:
                self._retire(w)

    # ---- receiving ------------------------------------------------------------------------

    def _receive(self, w: WorkerSlot, *, drain: bool = False) -> None:
        """Handle the messages ``w`` sent: those one read brings (its connection was
        readable), or with ``drain`` every one until its pipe is empty."""
        while not w.conn.closed:
            try:
                if drain and not w.conn.poll():
                    return
                frames = w.channel.read()
            except (EOFError, OSError):  # it died; the sentinel path handles its tasks
                w.conn.close()
                return
            for frame in frames:
                self._on_message(w, frame)
            if not drain:
                return

    def _on_message(self, w: WorkerSlot, frame: bytes | bytearray) -> None:
        kind, outcome, task_id, elapsed, rss, pickling = protocol.read_reply(frame)
        body = memoryview(frame)[protocol.REPLY_SIZE:]
        if kind == protocol.READY:
            self._on_ready_worker(w)
        elif kind in (protocol.INIT_FAILED, protocol.START_FAILED):
            self._break(Startup.failed(kind, body))
        elif kind == protocol.OUTPUT:
            output.deliver_output(task_id, body)
        elif kind == protocol.LOG:
            output.deliver_log(body)
        elif kind == protocol.DONE and w.inflight and w.inflight[0].id == task_id:
            self._fresh_deaths = 0
            record = w.inflight.popleft()
            w.inflight_bytes -= len(record.frame)
            self._account(w, elapsed)
            if not w.inflight and self._pending:  # its next task first: a big result can
                self._dispatch()  # take milliseconds to unpickle, while the worker idles
            label = record.make_label  # the label is made only for an error or a slow task
            self._observe(w, record, elapsed, pickling, label)
            value, error = _wire.decode(outcome, body, label, record.chunk, elapsed)
            self._settle(record, value, error)
            self._after_task(w, rss)

    def _on_ready_worker(self, w: WorkerSlot) -> None:
        w.ready = True
        self._startup.ready()
        if w.inflight:
            w.inflight[0].started = time.monotonic()

    def _account(self, w: WorkerSlot, elapsed: float) -> None:
        w.tasks_done += 1
        w.busy += elapsed
        w.last_elapsed = elapsed
        if w.inflight:
            w.inflight[0].started = time.monotonic()

    def _observe(self, w: WorkerSlot, record: Record, elapsed: float, pickling: float,
                 label: Callable[[], str]) -> None:
        w.pickling += pickling
        self.timings.record(elapsed, label, record)
        record.forget_arguments()

    def _after_task(self, w: WorkerSlot, rss: int) -> None:
        limit = self._options.max_memory_per_worker
        if limit is not None and rss > limit and not w.retiring:
            self._retire(w)
        if w.inflight and w.inflight[0].kill_requested:
            self._kill(w, CancelledError(), w.inflight[0])

    def _settle(self, record: Record, value: Any, error: BaseException | None) -> None:
        if error is not None:
            return self._fail(record, error)
        self.counters.add("done")
        self._open.pop(record.id, None)
        set_result(_unlinked(record), value)

    def _fail(self, record: Record, error: BaseException) -> None:
        self.counters.add("failed")
        self._open.pop(record.id, None)
        set_exception(_unlinked(record), error)

    # ---- faults ---------------------------------------------------------------------------

    def _reap(self, w: WorkerSlot) -> None:
        """``w`` exited: settle what it held and replace it."""
        self._receive(w, drain=True)  # results it sent before dying are still in the pipe
        w.process.join()
        w.conn.close()
        del self._workers[id(w)]
        if not w.ready and w.fate is None and self._broken is None:
            self._on_startup_death(w)
        elif w.inflight:
            self._on_death(w)
        w.mark.close()
        self._ensure_workers()

    def _on_startup_death(self, w: WorkerSlot) -> None:
        # Its tasks never started (a worker reads them only after its initializer).
        self._requeue(w.inflight)
        w.inflight.clear()
        error = self._startup.died(w)
        if error is not None:
            self._break(error)

    def _on_death(self, w: WorkerSlot) -> None:
        running = self._running_at_death(w)
        self._requeue(w.inflight)  # never started: they go first again, on other workers
        w.inflight.clear()
        if running is None:  # it died between tasks (killed from outside, say)
            return
        if w.fate is not None:
            return self._on_killed(w, running, w.fate)
        self.counters.add("crashed")
        if running.retries > 0 and not running.future.done():
            running.retries -= 1
            self.counters.add("retried")
            return self._requeue([running])
        how = describe_exit(w.process.exitcode)
        self._fail(running, WorkerCrashed(
            f"the worker (pid {w.process.pid}) running {running.label} died with {how}",
            pid=w.process.pid, exitcode=w.process.exitcode))

    def _running_at_death(self, w: WorkerSlot) -> Record | None:
        """The record ``w`` was running when it died, taken off its queue; None if it had
        not taken the oldest one it was sent (its mark still names a finished task)."""
        if not w.inflight:
            return None
        taken = w.mark.last_started()
        if taken == w.inflight[0].id:
            return w.inflight.popleft()
        if taken == 0:  # it died ready, before its first task
            self._fresh_deaths += 1
            if self._fresh_deaths >= STARTUP_ATTEMPTS:
                # Not an accident: workers die before they can take a task (a thread of the
                # initializer's ending the process?). The task fails, as a crash, so that
                # the pool gets through its tasks instead of starting workers forever.
                return w.inflight.popleft()
        return None

    def _on_killed(self, w: WorkerSlot, running: Record, fate: BaseException) -> None:
        if w.doomed is not None and w.doomed is not running:
            # Killed for a task that finished first: this one did nothing wrong.
            return self._requeue([running])
        if isinstance(fate, TimeoutError):
            self.counters.add("timed_out")
        self._fail(running, fate)

    def _requeue(self, records: Iterable[Record]) -> None:
        """Put ``records`` (in order) at the front of the queue; a settled one is dropped."""
        for record in reversed(list(records)):
            if record.future.done():  # cancelled, or failed by a kill of its pool
                self._open.pop(record.id, None)
                continue
            record.started = None  # its clock starts again on the worker that takes it
            self._pending.appendleft(record)

    def _expire_deadlines(self) -> None:
        for w, head in list(overdue(self._workers.values(), time.monotonic())):
            self._kill(w, TimeoutError(f"{head.label} ran longer than its timeout of "
                                       f"{head.timeout:g} s; its worker was killed and "
                                       "replaced"), head)

    def _kill(self, w: WorkerSlot, fate: BaseException, doomed: Record | None = None) -> None:
        """Kill ``w`` and the processes it started, for ``doomed`` (None: for whatever it
        runs); its sentinel then settles its tasks."""
        w.fate = fate
        w.doomed = doomed
        kill_tree(w.process.pid)

    def _kill_all(self) -> None:
        for w in list(self._workers.values()):
            self._kill(w, CancelledError())
        for w in list(self._workers.values()):
            w.process.join()
            w.conn.close()
            w.mark.close()
        self._workers.clear()

    def _break(self, error: BaseException) -> None:
        """The pool cannot go on: fail every task once and stop every worker."""
        if self._broken is not None:
            return
        with self._lock:
            self._broken = error  # from now on submit() raises instead of queueing
        self._read_inbox()  # tasks submitted before that and not yet read fail below too
        for w in list(self._workers.values()):
            w.inflight.clear()
            self._kill(w, error)
        self._pending.clear()
        for record in self._open.values():
            set_exception(record.future, rebuild_error(error))
        self._open.clear()

    # ---- workers --------------------------------------------------------------------------

    def _ensure_workers(self) -> None:
        if self._broken is not None or (self._closing and not self._has_work()):
            return
        # A retiring (or killed) worker counts until its process is gone and reaped.
        for _ in range(self._options.workers - len(self._workers)):
            self._start_worker()

    def _has_work(self) -> bool:
        return bool(self._pending) or self._inflight_count() > 0

    def _prepare(self, count: int) -> deque[Prepared]:
        prepared: deque[Prepared] = deque()
        try:
            for _ in range(count):
                prepared.append(self._startup.prepare())
        except BaseException:  # out of file descriptors, say: Pool() raises, leaking nothing
            for made in prepared:
                made.discard()
            raise
        return prepared

    def _start_worker(self) -> None:
        prepared = self._prepared.popleft() if self._prepared else None
        try:
            w = self._startup.start_worker(prepared)
        except BrokenPool as exc:
            self._break(exc)
            return
        self.counters.add("workers_started")
        self._workers[id(w)] = w

    def _inflight_count(self) -> int:
        return sum(len(w.inflight) for w in self._workers.values())

    def _release(self) -> None:
        self._inbox.close()
        for w in self._workers.values():
            w.conn.close()
        while self._prepared:  # made and never started: the pool broke or closed first
            self._prepared.popleft().discard()
        self._options.launch.release()  # no worker will start any more
