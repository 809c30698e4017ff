"""titan-master: the service tree around the pure scheduler.

The loop is: a frame becomes an event → the core applies it → the decisions it returns are
carried out here as frames to workers, timers and notifications.
"""
from __future__ import annotations

import gc
import os
import secrets
import time
from collections import deque
from typing import Any, Callable, Optional

import attrs
import msgpack
from twisted.application.service import MultiService
from twisted.internet import defer
from twisted.internet.task import LoopingCall
from twisted.logger import Logger

from titan.auth import job_token, load_or_create_token
from titan.config import Config
from titan.core import events as ev
from titan.core.codec import RecordError, decode_events, encode_event, persisted
from titan.core.dag import NAME, RESULT_LIMIT, parse_dag, parse_jobs, service_options
from titan.core.model import JobSpec, JobState, RunState, WorkerState
from titan.core.scheduler import (
    Scheduler, SubmitError, cron_valid, job_view, pending_timers, restore, run_job_view,
    run_view, service_view, snapshot, worker_view)
from titan.datadir import DataDirInUse, DataDirLock
from titan.errors import TitanError
from titan.interfaces import (
    CorruptLog, IAutoscalerFactory, IPersistenceFactory, IRouterFactory, StorageUnavailable)
from titan.master.autoscale import AutoscalerService
from titan.plugin_registry import find
from titan.protocols import codec
from titan.protocols.frame import encode_frame
from titan.listener import ListenerService
from titan.master.logstore import LogStore
from titan.master.legacy import LegacyFrontend
from titan.master.server import MasterFactory, MasterProtocol
from titan.tap import private_dir
from titan.protocols.opcodes import Op
from titan.protocols.rpc import RemoteError

PORT_FILE = "master.port"
LONG_POLL = 25.0  # seconds a WAIT_JOB or GET_LOGS(wait) may hold its reply
MAX_BATCH = 100_000  # jobs in one SUBMIT_JOBS or WAIT_JOBS request
# RUN_CHANGED pushes of one run go at most this often (the run's end at once): a busy run
# moves hundreds of times a second, and nobody reads a progress line that fast.
WATCH_INTERVAL = 0.01


class _AllEnded:
    """One waiter for many jobs (WAIT_JOBS): it sits in `_done_waiters` like a Deferred,
    and `done` fires once every job it was registered for has ended."""

    def __init__(self, count: int) -> None:
        self.left = count
        self.done: defer.Deferred = defer.Deferred()

    def callback(self, _) -> None:
        self.left -= 1
        if self.left <= 0 and not self.done.called:
            self.done.callback(None)


def build_routers(config: Config) -> list:
    """The routing chain the config names, from the plugins found (SystemExit naming the
    known ones if a name is unknown)."""
    chain = []
    for name in config.router:
        try:
            chain.append(find(IRouterFactory, name, "router").build({}))
        except TitanError as e:
            raise SystemExit(f"titan: {config.source}: router: {e}")
    return chain


def build_autoscaler(config: Config):
    options = attrs.asdict(config.autoscaler)
    try:
        return find(IAutoscalerFactory, config.autoscaler.name, "autoscaler").build(options)
    except TitanError as e:
        raise SystemExit(f"titan: {config.source}: autoscaler.name: {e}")


_ACTIVE = frozenset({JobState.RUNNING, JobState.WAITING_APPROVAL})
# Events that clients (and jobs, through their tokens) ask for: refused while the event log
# cannot store records.  The others (workers' reports, timers, the core's own proposals)
# are recorded as usual and wait, pending, for the log to recover.
CLIENT_CHANGES = frozenset({
    ev.JobSubmitted, ev.DagSubmitted, ev.JobsAdded, ev.CancelRequested,
    ev.RunCancelRequested, ev.GateDecided, ev.ResultSet, ev.ScheduleAdded,
    ev.ScheduleRemoved})


# Errors a store gives when its own disk or memory fails (Redis and TitanStore alike).
STORE_TROUBLE = frozenset({"MISCONF", "OOM", "IOERR", "READONLY", "LOADING", "BUSY"})
STORE_QUIET = 60.0  # seconds without a store failure that end a spell of them


def _stopped_unstored(failure) -> None:
    """A wait for records that were never stored, ended by the log's closing: nothing
    more to tell (the master is stopping)."""
    failure.trap(StorageUnavailable)


def _first_error(failure):
    """The error inside a gatherResults FirstError, so that a client reads what failed."""
    if failure.check(defer.FirstError):
        return failure.value.subFailure
    return failure


class MasterService(MultiService):
    log = Logger()

    def __init__(self, config: Config, reactor=None) -> None:
        super().__init__()
        if reactor is None:
            from twisted.internet import reactor
        self.reactor = reactor
        self.config = config
        mc = config.master
        # Absolute: the autoscaler's workers and job logs must not depend on the cwd.
        self.data_dir = os.path.abspath(os.path.expanduser(mc.data_dir))
        self._lock: Optional[DataDirLock] = None
        self.token: str = config.token or ""
        self.scheduler = Scheduler(heartbeat_timeout=mc.heartbeat_timeout,
                                   backoff_base=mc.retry_backoff_base,
                                   backoff_cap=mc.retry_backoff_cap,
                                   max_jobs_per_run=mc.max_jobs_per_run,
                                   keep_finished=mc.keep_finished,
                                   forget_grace=mc.forget_after,
                                   keep_log_bytes=mc.keep_log_bytes,
                                   routers=build_routers(config))
        self.logs: Optional[LogStore] = None
        self.persistence = None
        # Why the event log cannot store records now (None: it can).  Meanwhile clients'
        # changes are refused; see _storage_changed.
        self.storage_problem: Optional[str] = None
        self._storage_since = 0.0
        self._store_failures: tuple = (None, 0)  # (last one, how many not logged)
        self.store = None  # a titan.store.client.StoreClient once configured
        self.recovery: dict = {}
        self.worker_conns: dict[str, MasterProtocol] = {}
        self._timers: dict[Any, Any] = {}
        self._done_waiters: dict[str, list[defer.Deferred]] = {}
        self._run_waiters: dict[str, list[defer.Deferred]] = {}
        # WATCH_RUN: the connections watching each run, and the keys of its jobs that moved
        # since the last RUN_CHANGED push (sent once per reactor turn, after the records).
        self._watchers: dict[str, set] = {}
        self._watch_moved: dict[str, dict] = {}
        self._watch_calls: dict[str, Any] = {}  # run -> its next push, scheduled
        self._watch_last: dict[str, float] = {}  # run -> when its last push was built
        # Called with a job's key once its end is durable (the legacy frontend mirrors
        # gate outcomes to the store with it).
        self.job_end_listeners: list[Callable[[str], None]] = []
        # Called with each RunChanged as it is applied, before any reply that reports it
        # (the legacy frontend clears a new run's gate keys in the store with it).
        self.run_change_listeners: list[Callable[[Any], None]] = []
        self.listener = ListenerService(reactor, mc.listen, MasterFactory(self),
                                        self._listening)
        self.listener.setServiceParent(self)
        self.autoscaler = AutoscalerService(self, build_autoscaler(config))
        self.autoscaler.setServiceParent(self)
        self.legacy = LegacyFrontend(self)  # text frames: the reference's requests
        # DISPATCH and KILL frames decided in this turn, and the turns' batches waiting for
        # their barrier, oldest first (_to_worker).
        self._outbox: list = []
        self._outbox_call = None
        self._sealed: deque = deque()
        self._outbox_failing = False  # a barrier failed and none has fired since
        self._job_conns: dict[str, set] = {}  # job id -> connections of its token
        self._ticker = LoopingCall(self._tick)
        self._ticker.clock = reactor

    # -- life cycle ------------------------------------------------------------------------

    def _prepare(self) -> None:
        if self.logs is not None:
            return
        private_dir(self.data_dir)
        # One master per data dir, or two would append to one event log: take the dir
        # before reading or writing anything in it.
        try:
            self._lock = DataDirLock.acquire(self.data_dir, "titan-master")
        except DataDirInUse as e:
            raise SystemExit(f"titan-master: cannot start: {e}")
        if not self.token:
            self.token = load_or_create_token(self.data_dir)
        self.logs = LogStore(os.path.join(self.data_dir, "logs"),
                             max_bytes=self.config.master.log_max_bytes)
        if self.config.store.url and self.store is None:
            # Only a store the config names: a master alone should not dial 6379 forever.
            from titan.store.client import StoreClient
            self.store = StoreClient(self.config.store.url, reactor=self.reactor,
                                     name="titan-master", password=self.config.store.password)
        pc = self.config.persistence
        try:
            factory = find(IPersistenceFactory, pc.backend, "persistence backend")
        except TitanError as e:
            raise SystemExit(f"titan: {self.config.source}: persistence.backend: {e}")
        self.persistence = factory.build(os.path.join(self.data_dir, "log"),
                                         {"fsync": pc.fsync, "reactor": self.reactor})
        if hasattr(self.persistence, "watch"):
            self.persistence.watch(self._storage_changed)
        self._recover()

    def _recover(self) -> None:
        """Replay what the log holds through the core (the same code path as live events),
        then tell it the master restarted and arm the timers its state implies."""
        start = time.perf_counter()
        # Recovery builds millions of long-lived objects: the cyclic collector would scan
        # them again and again for nothing.
        gc.disable()
        try:
            try:
                snap, records = self.persistence.load()
            except CorruptLog as e:
                raise SystemExit(f"titan: cannot start: {e}")
            if snap is not None:
                restore(self.scheduler, msgpack.unpackb(snap, raw=False, strict_map_key=False))
            try:
                # What it decided then was carried out then: replay() drops the decisions.
                count = self.scheduler.replay(decode_events(records))
            except RecordError as e:
                raise SystemExit(f"titan: cannot start: event {self.scheduler.replayed + 1} "
                                 f"of the log: {e}")
        finally:
            gc.enable()
        gc.freeze()  # what recovery built is here to stay: keep it out of later collections
        elapsed = time.perf_counter() - start
        self.recovery = {"snapshot": snap is not None, "events": count,
                         "seconds": round(elapsed, 3), "jobs": len(self.scheduler.jobs)}
        if snap is not None or count:
            self.log.info("recovered {jobs} jobs from a snapshot and {events} events in "
                          "{seconds:.3f}s", jobs=len(self.scheduler.jobs), events=count,
                          seconds=elapsed)
            self.handle(ev.MasterRestarted())
        for timer in pending_timers(self.scheduler):
            self._carry_out(timer)
        # The logs kept count towards keep_log_bytes (they are not in the event log).
        for job_id, size in self.logs.sizes():
            if job_id in self.scheduler.jobs:
                self.handle(ev.LogWritten(job_id, size))

    def privilegedStartService(self) -> None:
        self._prepare()
        super().privilegedStartService()

    def startService(self) -> None:
        self._prepare()
        super().startService()
        self._ticker.start(self.config.master.heartbeat_interval, now=False)

    def stopService(self):
        if self._ticker.running:
            self._ticker.stop()
        if self.persistence is not None:
            closing = self.persistence.close()
        else:
            closing = defer.succeed(None)
        if self.store is not None and hasattr(self.store, "close"):
            self.store.close()
        for call in self._timers.values():
            if call.active():
                call.cancel()
        self._timers.clear()
        if self._lock is not None:
            try:
                os.unlink(os.path.join(self.data_dir, PORT_FILE))
            except OSError:
                pass
        done = defer.gatherResults([closing, defer.maybeDeferred(super().stopService)])
        return done.addBoth(self._unlock)

    def _unlock(self, result):
        if self._lock is not None:
            self._lock.release()
            self._lock = None
        return result

    def _listening(self, port) -> None:
        address = port.getHost()
        path = os.path.join(self.data_dir, PORT_FILE)
        fd = os.open(path + ".tmp", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(f"{getattr(address, 'port', address)}\n")
        os.replace(path + ".tmp", path)
        self.log.info("titan-master listening on {address}, data in {data_dir}",
                      address=address, data_dir=self.data_dir)

    # -- the loop --------------------------------------------------------------------------

    def now(self) -> float:
        return self.reactor.seconds()

    def handle(self, event: object) -> defer.Deferred:
        """Record the event (if it is one recovery needs), apply it, carry out what follows.

        The Deferred fires once the record is as durable as the fsync policy promises: an
        answer that reports the change waits for it."""
        now = self.now()
        durable = None
        if persisted(event) and self.persistence is not None:
            if self.storage_problem is not None and type(event) in CLIENT_CHANGES:
                # Not recorded, so not applied: the client is told, and may try again.
                raise RemoteError("storage_unavailable",
                                  f"storage unavailable: {self.storage_problem}")
            durable = self.persistence.append(encode_event(event, now))
        for decision in self.scheduler.apply(event, now):
            self._carry_out(decision)
        if self.persistence is not None and self.storage_problem is None and \
                self.persistence.bytes_since_compaction > self.config.persistence.compact_after_bytes:
            self.compact().addErrback(lambda _: None)  # the backend logs what went wrong
        return durable if durable is not None else defer.succeed(None)

    def _storage_changed(self, reason: Optional[str]) -> None:
        """The event log stopped (a reason) or went back to (None) storing records.

        Records that failed stay pending in the backend, which retries them; nothing that
        waits for them (replies, frames to workers, ends told to waiters) goes out before.
        Meanwhile clients' changes are refused with "storage unavailable: <reason>" and
        reads are answered (see reply_ready).  One line when it starts, one when it ends."""
        if reason is not None and self.storage_problem is None:
            self._storage_since = self.now()
            self.log.error("storage unavailable: {reason}; refusing changes until records "
                           "can be stored again (retrying with backoff)", reason=reason)
        elif reason is None and self.storage_problem is not None:
            self.log.info("storage available again after {seconds:.1f}s: the pending "
                          "records are stored; accepting changes",
                          seconds=self.now() - self._storage_since)
        self.storage_problem = reason

    def reply_ready(self) -> defer.Deferred:
        """When a reply may go out.  Normally once everything recorded so far is durable
        (settled).  While the log cannot store records that would be never, so a reply then
        goes out at once: a change's reply waits for its own records anyway (after), and a
        read answers from memory (docs/semantics.md, "A full or failing disk")."""
        if self.storage_problem is not None:
            return defer.succeed(None)
        return self.settled()

    def explain_failure(self, failure) -> Optional[RemoteError]:
        """The error a client gets for what the event log or the store could not do (None
        for anything else): said as such, and logged once per spell, not as an `internal`
        error with a traceback each time."""
        if failure.check(StorageUnavailable):
            return RemoteError("storage_unavailable", str(failure.value))
        from titan.store.client import StoreError, StoreUnavailable
        if failure.check(StoreUnavailable):
            self._store_trouble(failure.getErrorMessage())
            return RemoteError("store_unavailable",
                               f"store unavailable: {failure.getErrorMessage()}")
        if failure.check(StoreError):
            message = failure.getErrorMessage()
            if failure.value.prefix in STORE_TROUBLE:  # the store's own disk or memory
                self._store_trouble(message)
            return RemoteError("store_error", f"the store refused it: {message}")
        return None

    def _store_trouble(self, message: str) -> None:
        """One warning per spell of store failures: again only after STORE_QUIET seconds
        without one, then saying how many there were meanwhile."""
        now = self.now()
        last, count = self._store_failures
        if last is None or now - last > STORE_QUIET:
            self.log.warn("the store failed: {why}{more}", why=message,
                          more=f" ({count} more failures since the last warning)"
                          if count else "")
            self._store_failures = (now, 0)
        else:
            self._store_failures = (now, count + 1)

    def _when_durable(self, f, *args) -> None:
        """Run `f` once what was recorded so far is durable: a job's end is told (to waiters,
        to the store's mirror) only once a crash cannot take it back."""
        self.settled().addCallbacks(lambda _: f(*args), _stopped_unstored)

    def settled(self) -> defer.Deferred:
        """Fires once every record appended so far is as durable as the policy promises
        (`IPersistence.barrier`).  A record that failed to be stored is retried by the
        backend, and this waits for it; it fails (StorageUnavailable) only if the log is
        closed before it could be stored.

        Every reply waits for it: an answer may only report state that a crash cannot take
        back.  A job ends in memory while its record is still being written, and a status or
        wait that looks then must not answer "COMPLETED" ahead of the log."""
        if self.persistence is None:
            return defer.succeed(None)
        return self.persistence.barrier()

    def compact(self) -> defer.Deferred:
        data = msgpack.packb(snapshot(self.scheduler), use_bin_type=True)
        return self.persistence.compact(data)

    def after(self, durable: defer.Deferred, result: Any) -> defer.Deferred:
        """`result`, once `durable` has fired -- and, while the log cannot store records,
        once everything recorded before it is stored: a change accepted then (a worker's
        report) is not acknowledged before its record is, though reads are answered at
        once (reply_ready; otherwise the reply waits for settled() anyway)."""
        if self.persistence is None or self.storage_problem is None:
            return durable.addCallback(lambda _: result)
        both = defer.gatherResults([durable, self.settled()], consumeErrors=True)
        return both.addCallbacks(lambda _: result, _first_error)

    def _carry_out(self, d: object) -> None:
        if isinstance(d, ev.Propose):
            self.handle(d.event)
        elif isinstance(d, ev.Dispatch):
            conn = self.worker_conns.get(d.worker_id)
            if conn is not None:
                self._to_worker(conn, Op.DISPATCH, {
                    "job_id": d.job_id, "attempt": d.attempt, "run_id": d.run_id,
                    "token": job_token(self.token, d.job_id, d.attempt),
                    "spec": d.spec.to_wire()})
        elif isinstance(d, ev.JobEnded):
            self._when_durable(self._job_ended, d.job_id)
            if d.job_id in self._job_conns:
                self._close_job_connections(d.job_id)
        elif isinstance(d, ev.Kill):
            conn = self.worker_conns.get(d.worker_id)
            if conn is not None:
                self._to_worker(conn, Op.KILL, {"job_id": d.job_id, "attempt": d.attempt,
                                                "reason": d.reason})
        elif isinstance(d, ev.RunChanged):
            self._when_durable(self._wake_run, d.run_id)
            for listener in self.run_change_listeners:
                listener(d)
            if d.run_id in self._watchers:
                run_id = d.run_id
                moved = self._watch_moved.get(run_id)
                ended = d.state is not RunState.RUNNING
                if moved is None:
                    moved = self._watch_moved[run_id] = {}
                    last = self._watch_last.get(run_id)
                    wait = 0.0 if ended or last is None else max(
                        0.0, last + WATCH_INTERVAL - self.now())
                    self._watch_calls[run_id] = self.reactor.callLater(
                        wait, self._push_run_changes, run_id)
                elif ended:
                    call = self._watch_calls.get(run_id)
                    if call is not None and call.active():
                        call.reset(0)
                moved.update(dict.fromkeys(d.jobs))
        elif isinstance(d, ev.Forgotten):
            if self.logs is not None:
                for job_id in d.job_ids:
                    self.logs.remove(job_id)
        elif isinstance(d, ev.SetTimer):
            old = self._timers.pop(d.key, None)
            if old is not None and old.active():
                old.cancel()
            self._timers[d.key] = self.reactor.callLater(
                max(0.0, d.at - self.now()), self._timer_fired, d.key)
        elif isinstance(d, ev.WorkerChanged):
            self.log.info("worker {worker_id} is {state}: {reason}", worker_id=d.worker_id,
                          state=d.state.value, reason=d.reason)
            if d.state is WorkerState.DEAD:
                # A stalled worker whose connection is still open: hang up, so that it
                # reconnects and reports what it runs instead of idling unseen.
                conn = self.worker_conns.pop(d.worker_id, None)
                if conn is not None:
                    conn.transport.loseConnection()

    # -- frames to workers: after the records they follow from --------------------------

    def _to_worker(self, conn: MasterProtocol, opcode: int, body: dict) -> None:
        """Send a decision's frame (DISPATCH, KILL) to a worker once every record appended
        so far is durable: a worker must never run an attempt that a crash of the master
        could take back (docs/semantics.md).  The frames of one turn of the reactor share
        one barrier, taken at the end of the turn (after every record they follow from);
        they go out in the order they were decided, on the connection they were meant for
        (a worker that has reconnected meanwhile reported afresh: it gets none of them)."""
        self._outbox.append((conn, opcode, body))
        if self._outbox_call is None:
            self._outbox_call = self.reactor.callLater(0, self._seal_outbox)

    def _seal_outbox(self) -> None:
        self._outbox_call = None
        batch = [self._outbox, False]  # [frames, durable yet]
        self._outbox = []
        self._sealed.append(batch)
        self._await_durable(batch)

    def _await_durable(self, batch: list) -> None:
        if self.persistence is None:
            self._outbox_durable(None, batch)
            return
        self.persistence.barrier().addCallbacks(
            self._outbox_durable, self._outbox_not_durable,
            callbackArgs=(batch,), errbackArgs=(batch,))

    def _outbox_durable(self, _, batch: list) -> None:
        batch[1] = True
        self._outbox_failing = False
        sealed = self._sealed
        while sealed and sealed[0][1]:
            for conn, opcode, body in sealed.popleft()[0]:
                if conn.connected:
                    conn.push(opcode, body)

    def _outbox_not_durable(self, failure, batch: list) -> None:
        # What they follow from is not stored: they stay held, behind a new barrier, until
        # the backend has stored it -- or never go, if the master is stopping.
        if not self.running:
            return
        if not self._outbox_failing:  # once per outage
            self.log.warn("frames to workers are held: the records they follow from are "
                          "not stored ({why}); trying again every second",
                          why=failure.getErrorMessage())
        self._outbox_failing = True
        self.reactor.callLater(1.0, self._await_durable, batch)

    def _timer_fired(self, key: Any) -> None:
        self._timers.pop(key, None)
        self.handle(ev.TimerFired(key))

    def _wake_run(self, run_id: str) -> None:
        for waiter in self._run_waiters.pop(run_id, ()):
            waiter.callback(None)

    def _push_run_changes(self, run_id: str) -> None:
        """One RUN_CHANGED push to every watcher of the run: the jobs that moved since the
        last one (as they are now), once what it reports is durable."""
        keys = self._watch_moved.pop(run_id, None) or {}
        self._watch_calls.pop(run_id, None)
        self._watch_last[run_id] = self.now()
        conns = self._watchers.get(run_id)
        if not conns:
            self._watch_last.pop(run_id, None)
            return
        run = self.scheduler.runs.get(run_id)
        if run is None:  # forgotten: nothing more will change
            for conn in self._watchers.pop(run_id):
                conn.watching.discard(run_id)
            self._watch_last.pop(run_id, None)
            return
        s, now = self.scheduler, self.now()
        views = []
        for key in keys:
            job = s.jobs.get(key)
            if job is not None and job.run_id == run_id:
                views.append(run_job_view(s, job, now))
        body = run_view(s, run, now, jobs=False)
        body["jobs"] = views
        if run.state is not RunState.RUNNING:
            del self._watchers[run_id]  # the last push: the run has ended
            self._watch_last.pop(run_id, None)
            for conn in conns:
                conn.watching.discard(run_id)
        data = encode_frame(Op.RUN_CHANGED, codec.pack(body))
        conns = list(conns)

        def send(_):
            for conn in conns:
                if conn.connected:
                    conn.write(data)  # (a watcher that reads nothing is cut off there)
        self.settled().addCallbacks(send, _stopped_unstored)

    def watch_run(self, conn: MasterProtocol, run_id: str, jobs: bool) -> dict:
        """The run now (every job with `jobs`, else only those running or waiting for
        approval, as `active`); while it runs, RUN_CHANGED pushes follow on `conn`."""
        run = self._run(run_id)
        s, now = self.scheduler, self.now()
        view = run_view(s, run, now, jobs)
        if not jobs:
            view["active"] = [run_job_view(s, job, now) for job in map(s.jobs.get, run.jobs)
                              if job is not None and job.state in _ACTIVE]
        if run.state is RunState.RUNNING:
            self._watchers.setdefault(run_id, set()).add(conn)
            conn.watching.add(run_id)
        return view

    def unwatch_run(self, conn: MasterProtocol, run_id: Optional[str] = None) -> None:
        """Stop pushing one run's changes to `conn` (every run's, without `run_id`)."""
        for rid in [run_id] if run_id is not None else list(conn.watching):
            conn.watching.discard(rid)
            conns = self._watchers.get(rid)
            if conns is not None:
                conns.discard(conn)
                if not conns:
                    del self._watchers[rid]

    def _job_ended(self, job_id: str) -> None:
        if self.logs is not None and job_id in self.scheduler.jobs:
            tally = self.logs.attempt_over(job_id)  # how much of its output was cut
            if tally:
                self.handle(ev.LogWritten(job_id, tally))
        for d in self._done_waiters.pop(job_id, ()):
            d.callback(None)
        if self.logs is not None:
            self.logs.wake(job_id)
        for listener in self.job_end_listeners:
            listener(job_id)

    # -- workers ---------------------------------------------------------------------------

    def worker_registered(self, conn: MasterProtocol, body: dict) -> defer.Deferred:
        """Apply a worker's REGISTER; fires once its record (with the finished reports it
        carries) is stored."""
        worker_id = conn.worker_id
        old = self.worker_conns.get(worker_id)
        if old is not None and old is not conn:
            old.transport.loseConnection()
        self.worker_conns[worker_id] = conn
        finished = []
        for r in body.get("finished") or ():
            self.logs_received(r["job_id"], r.get("logs") or (), r.get("attempt") or 0)
            finished.append(ev.JobReport(r["job_id"], r["attempt"], r.get("exit_code"),
                                         r.get("reason")))
        running = tuple(ev.JobReport(r["job_id"], r["attempt"]) for r in body.get("running") or ())
        return self.handle(ev.WorkerJoined(
            worker_id=worker_id, name=str(body.get("name") or worker_id),
            host=str(body.get("host") or conn.transport.getPeer().host),
            tags=body.get("tags") or (),
            slots=int(body.get("slots") or 1), running=running, finished=tuple(finished)))

    def worker_gone(self, conn: MasterProtocol) -> None:
        if self.worker_conns.get(conn.worker_id) is conn:
            del self.worker_conns[conn.worker_id]
            self.handle(ev.WorkerDisconnected(conn.worker_id))

    def logs_received(self, job_id: str, chunks, attempt: int = 0) -> None:
        data = b"".join(c[1] if isinstance(c[1], bytes) else str(c[1]).encode() for c in chunks)
        if data and job_id in self.scheduler.jobs:
            kept = self.logs.append(job_id, data, attempt)
            if kept:
                self.handle(ev.LogWritten(job_id, kept))

    # -- clients ---------------------------------------------------------------------------

    def submit(self, body: dict) -> defer.Deferred:
        event = self._submission(body)
        return self.after(self.handle(event), event.spec.job_id)

    def submit_many(self, bodies: Any) -> defer.Deferred:
        """SUBMIT_JOBS: every job is checked before any is queued (all or nothing); they
        are recorded together and answered once, with their ids in order."""
        if not isinstance(bodies, list) or not bodies:
            raise RemoteError("bad_request", "'jobs' is required: a list of job submissions")
        if len(bodies) > MAX_BATCH:
            raise RemoteError("bad_request", f"{len(bodies)} jobs in one request, over the "
                                             f"limit of {MAX_BATCH}: split the batch")
        events, taken = [], set()
        for i, body in enumerate(bodies):
            if not isinstance(body, dict):
                raise RemoteError("bad_job", f"jobs[{i}]: expected a map of job options, not "
                                             f"{type(body).__name__}")
            if (body.get("kind") or "job") != "job":
                raise RemoteError("bad_job", f"jobs[{i}]: a batch takes jobs only; deploy "
                                             "services one at a time")
            try:
                event = self._submission(body, taken)
            except RemoteError as e:
                raise RemoteError(e.code, f"jobs[{i}]: {e.message}") from None
            if event.spec.job_id in taken:
                raise RemoteError("bad_job", f"jobs[{i}]: job id {event.spec.job_id!r} "
                                             "appears twice in the batch")
            taken.add(event.spec.job_id)
            events.append(event)
        durable = None
        for event in events:
            durable = self.handle(event)
        return self.after(durable, {"job_ids": [e.spec.job_id for e in events]})

    def _submission(self, body: dict, taken=()) -> ev.JobSubmitted:
        """The JobSubmitted event a SUBMIT_JOB body asks for, checked."""
        command = body.get("command")
        if isinstance(command, str):
            command = ["sh", "-c", command]
        kind = body.get("kind") or "job"
        service: dict = {}
        if kind == "service":
            name = body.get("name")
            if not isinstance(name, str) or not NAME.match(name):
                raise RemoteError("bad_job", "a service needs a name: letters, digits, "
                                             "'_', '.' or '-'")
            live = self._service(name, live_only=True)
            if live is not None:
                raise RemoteError("bad_job", f"service {name} is already deployed "
                                             f"({live.state.value} as {live.job_id}); stop it "
                                             "first or restart it")
            try:
                service = service_options(name, body)
            except SubmitError as e:
                raise RemoteError("bad_job", str(e)) from None
            body = dict(body, job_id=self._new_service_id(name), retries=0, timeout=None)
        elif kind != "job":
            raise RemoteError("bad_job", f"kind must be job or service, not {kind!r}")
        job_id = body.get("job_id") or self._new_job_id(taken)
        try:
            spec = JobSpec(kind=kind, **service,
                job_id=str(job_id), command=command or (),
                env=tuple(sorted((body.get("env") or {}).items())), cwd=body.get("cwd"),
                priority=int(body.get("priority") or 0), tags=body.get("tags") or (),
                timeout=body.get("timeout"), retries=int(body.get("retries") or 0),
                delay=float(body.get("delay") or 0), name=body.get("name"))
            event = ev.JobSubmitted(spec)
            self.scheduler.validate(event)
        except (SubmitError, TypeError, ValueError) as e:
            raise RemoteError("bad_job", str(e))
        return event

    def _new_service_id(self, name: str) -> str:
        n = 1
        while f"{name}.{n}" in self.scheduler.jobs:
            n += 1
        return f"{name}.{n}"

    def _service(self, name: str, live_only: bool = False):
        """The latest deployment of service `name` (standalone services only)."""
        found = None
        for job in self.scheduler.jobs.values():
            if job.spec.kind == "service" and job.spec.name == name and job.run_id is None:
                if found is None or job.seq > found.seq:
                    found = job
        if live_only and found is not None and found.state.terminal:
            return None
        return found

    def restart_service(self, name: str) -> dict:
        job = self._service(name)
        if job is None:
            raise RemoteError("not_found", f"no service {name}")
        if job.state is not JobState.RUNNING:
            raise RemoteError("not_running", f"service {name} is {job.state.value}, not running")
        conn = self.worker_conns.get(job.worker_id)
        if conn is None:
            raise RemoteError("unreachable", f"the worker of service {name} is not connected")
        # Behind the service's DISPATCH, if that is still held (_to_worker).
        self._to_worker(conn, Op.RESTART_SERVICE,
                        {"job_id": job.job_id, "attempt": job.attempt})
        return {"name": name, "job_id": job.job_id}

    def list_services(self, everything: bool = False) -> list:
        latest: dict = {}
        for job in self.scheduler.jobs.values():
            if job.spec.kind != "service":
                continue
            name = job.spec.name or job.job_id
            if name not in latest or job.seq > latest[name].seq:
                latest[name] = job
        now = self.now()
        out = []
        for name, job in sorted(latest.items()):
            if job.state.terminal and not everything and job.finished_at is not None \
                    and now - job.finished_at > 3600:
                continue
            out.append(service_view(self.scheduler, job, now))
        return out

    def _new_job_id(self, taken=()) -> str:
        while True:
            job_id = secrets.token_hex(4)
            if job_id not in self.scheduler.jobs and job_id not in taken:
                return job_id

    def _job(self, ref: str):
        try:
            return self.scheduler.jobs[self.scheduler.resolve(ref)]
        except SubmitError as e:
            raise RemoteError("not_found", str(e)) from None

    def _run(self, run_id: str):
        run = self.scheduler.runs.get(run_id)
        if run is None:
            raise RemoteError("not_found", f"no run {run_id}")
        return run

    def job_connected(self, conn: MasterProtocol) -> None:
        """A connection opened with a job's token: closed once that attempt is over."""
        self._job_conns.setdefault(conn.scope[0], set()).add(conn)

    def job_disconnected(self, conn: MasterProtocol) -> None:
        conns = self._job_conns.get(conn.scope[0])
        if conns is not None:
            conns.discard(conn)
            if not conns:
                del self._job_conns[conn.scope[0]]

    def _close_job_connections(self, job_id: Optional[str] = None) -> None:
        """Hang up the connections of job tokens whose attempt no longer runs (of `job_id`
        only, or of every job): a job's token opens nothing once its attempt is over, and
        a connection it opened then is closed, pushes and all."""
        for key in [job_id] if job_id is not None else list(self._job_conns):
            for conn in list(self._job_conns.get(key, ())):
                try:
                    self.check_scope(conn.scope)
                except RemoteError:
                    self.job_disconnected(conn)
                    if conn.transport is not None:
                        conn.transport.loseConnection()

    def _tick(self) -> defer.Deferred:
        d = self.handle(ev.Tick())
        if self._job_conns:  # attempts ended by a lost worker or a retry: not by JobEnded
            self._close_job_connections()
        return d

    def check_scope(self, scope: tuple[str, int]) -> None:
        """A job's token is good while that attempt of the job runs, and no longer."""
        job = self.scheduler.jobs.get(scope[0])
        if job is None or job.attempt != scope[1] or job.state is not JobState.RUNNING:
            raise RemoteError("auth", f"the token of job {scope[0]} (attempt {scope[1]}) "
                                      "is no longer valid: that attempt is not running",
                              close=True)

    def job_info(self, ref: str) -> dict:
        return self.autoscaler.annotate(job_view(self.scheduler, self._job(ref), self.now()))

    async def wait_job(self, ref: str, timeout: Optional[float]) -> dict:
        """The job once it has ended, or as it is when `timeout` (at most LONG_POLL) passes."""
        job = self._job(ref)
        if not job.state.terminal:
            await self._long_poll(self._done_waiters, job.job_id, timeout)
        return self.job_info(job.job_id)

    async def wait_jobs(self, refs: Any, timeout: Optional[float]) -> dict:
        """WAIT_JOBS: once every job of `refs` has ended, or when `timeout` (at most
        LONG_POLL) passes: the ended ones as `jobs`, the ids of the others as `pending`."""
        if not isinstance(refs, list) or not all(isinstance(r, str) for r in refs):
            raise RemoteError("bad_request", "'job_ids' is required: a list of job ids")
        if len(refs) > MAX_BATCH:
            raise RemoteError("bad_request", f"{len(refs)} jobs in one request, over the "
                                             f"limit of {MAX_BATCH}")
        jobs = [self._job(ref) for ref in refs]
        waiting = [job.job_id for job in jobs if not job.state.terminal]
        if waiting:
            waiter = _AllEnded(len(waiting))
            for job_id in waiting:
                self._done_waiters.setdefault(job_id, []).append(waiter)
            limit = LONG_POLL if timeout is None else max(0.0, min(float(timeout), LONG_POLL))
            call = self.reactor.callLater(limit, lambda: waiter.done.called
                                          or waiter.done.callback(None))
            await waiter.done
            if call.active():
                call.cancel()
            for job_id in waiting:
                waiters = self._done_waiters.get(job_id)
                if waiters and waiter in waiters:
                    waiters.remove(waiter)
                    if not waiters:
                        del self._done_waiters[job_id]
        s, now = self.scheduler, self.now()
        ended, pending = [], []
        for job in jobs:
            if job.state.terminal:
                ended.append(job_view(s, job, now))
            else:
                pending.append(job.job_id)
        return {"jobs": ended, "pending": pending}

    async def _long_poll(self, waiters_by_key: dict, key: str, timeout: Optional[float]) -> None:
        """Until `waiters_by_key[key]` is woken, or `timeout` (at most LONG_POLL) passes."""
        d: defer.Deferred = defer.Deferred()
        waiters = waiters_by_key.setdefault(key, [])
        waiters.append(d)
        limit = LONG_POLL if timeout is None else max(0.0, min(float(timeout), LONG_POLL))
        call = self.reactor.callLater(limit, lambda: d.called or d.callback(None))
        await d
        if call.active():
            call.cancel()
        if d in waiters:
            waiters.remove(d)

    async def read_logs(self, ref: str, offset: int, wait: bool) -> dict:
        job = self._job(ref)
        job_id = job.job_id
        if wait and not job.state.terminal and offset >= self.logs.size(job_id):
            d = self.logs.changed(job_id)
            call = self.reactor.callLater(LONG_POLL, lambda: d.called or d.callback(None))
            await d
            if call.active():
                call.cancel()
            self.logs.forget_waiter(job_id, d)
        data = self.logs.read(job_id, offset)
        end = offset + len(data)
        return {"data": data, "offset": end,
                "done": job.state.terminal and end >= self.logs.size(job_id),
                "state": job.state.value}

    def cancel(self, ref: str) -> dict:
        """Cancel a job, or every unfinished job of a run, or a schedule."""
        if ref in self.scheduler.runs and ref not in self.scheduler.jobs:
            run = self.scheduler.runs[ref]
            live = any(not self.scheduler.jobs[k].state.terminal for k in run.jobs) \
                if run.state is not RunState.RUNNING else True
            if not live:  # (an ended run may still have a service it delivered running)
                return {"run_id": ref, "state": run.state.value, "cancelled": False}
            durable = self.handle(ev.RunCancelRequested(ref))
            return self.after(durable, {"run_id": ref, "state": run.state.value,
                                        "cancelled": True})
        if ref in self.scheduler.schedules and ref not in self.scheduler.jobs:
            return self.remove_schedule(ref)
        job = self._job(ref)
        before = job.state
        durable = self.handle(ev.CancelRequested(job.job_id))
        return self.after(durable, {
            "job_id": job.job_id, "state": job.state.value,
            "cancelled": job.state is JobState.CANCELLED and before is not JobState.CANCELLED})

    # -- DAG runs --------------------------------------------------------------------------

    def _apply_checked(self, event: object) -> defer.Deferred:
        try:
            self.scheduler.validate(event)
        except SubmitError as e:
            raise RemoteError("bad_dag", str(e)) from None
        return self.handle(event)

    def submit_dag(self, body: dict, watcher: Optional[MasterProtocol] = None) -> dict:
        """SUBMIT_DAG; with `watcher` (the request had `watch: true`), the reply has the run
        as WATCH_RUN gives it (`run`) and its changes are pushed to the watcher."""
        try:
            template = parse_dag(body)
        except SubmitError as e:
            raise RemoteError("bad_dag", str(e)) from None
        cron = body.get("schedule")
        if cron:
            schedule_id = template.name
            n = 1
            while schedule_id in self.scheduler.schedules:
                n += 1
                schedule_id = f"{template.name}.{n}"
            if not cron_valid(cron):
                raise RemoteError("bad_dag", f"schedule {cron!r} is not a cron expression "
                                             "(5 fields, or 6 with seconds last)")
            durable = self._apply_checked(ev.ScheduleAdded(schedule_id, cron, template))
            sched = self.scheduler.schedules[schedule_id]
            return self.after(durable, {"schedule_id": schedule_id, "next_at": sched.next_at})
        run_id = self._new_run_id(template.name)
        durable = self._apply_checked(ev.DagSubmitted(run_id, template))
        reply = {"run_id": run_id, "jobs": list(self.scheduler.runs[run_id].jobs)}
        if watcher is not None:
            reply["run"] = self.watch_run(watcher, run_id, True)
        return self.after(durable, reply)

    def _new_run_id(self, name: str) -> str:
        while True:
            run_id = f"{name}-{secrets.token_hex(3)}"
            if run_id not in self.scheduler.runs:
                return run_id

    def add_jobs(self, run_id: str, jobs: Any, by: str) -> dict:
        try:
            specs = parse_jobs(jobs)
        except SubmitError as e:
            raise RemoteError("bad_dag", str(e)) from None
        durable = self._apply_checked(ev.JobsAdded(run_id, tuple(specs), by))
        return self.after(durable, {"run_id": run_id,
                                    "added": [f"{run_id}/{s.job_id}" for s in specs]})

    def run_info(self, run_id: str, jobs: bool = True) -> dict:
        return run_view(self.scheduler, self._run(run_id), self.now(), jobs)

    async def wait_run(self, run_id: str, version: int, timeout: Optional[float],
                       jobs: bool) -> dict:
        """The run once it has changed since `version` (or ended), or at the timeout."""
        run = self._run(run_id)
        if run.version <= version and run.state is RunState.RUNNING:
            await self._long_poll(self._run_waiters, run_id, timeout)
        return run_view(self.scheduler, run, self.now(), jobs)

    def list_runs(self, agent_run_id: Optional[str], limit: int) -> list:
        s = self.scheduler
        if agent_run_id:
            if agent_run_id not in s.agent_runs:
                raise RemoteError("not_found", f"no agent run {agent_run_id}")
            runs = [s.runs[r] for r in s.agent_runs[agent_run_id]]
        else:
            runs = list(s.runs.values())[-int(limit):]
        now = self.now()
        return [run_view(s, r, now, jobs=False) for r in runs]

    def decide_gate(self, ref: str, approved: bool, by: str, comment: str,
                    via: str = "") -> dict:
        job = self._job(ref)
        durable = self._apply_checked(ev.GateDecided(job.job_id, approved, by, comment, via))
        return self.after(durable, job_view(self.scheduler, job, self.now()))

    def set_result(self, ref: str, value: Any) -> dict:
        job = self._job(ref)
        try:
            size = len(codec.pack({"v": value}))
        except Exception as e:
            raise RemoteError("bad_result", f"the result cannot be stored: {e}") from None
        if size > RESULT_LIMIT:
            raise RemoteError("bad_result", f"the result is {size} bytes, over the "
                                            f"{RESULT_LIMIT}-byte limit; write a file instead")
        return self.after(self._apply_checked(ev.ResultSet(job.job_id, value)),
                          {"job_id": job.job_id})

    def get_result(self, ref: str) -> dict:
        job = self._job(ref)
        return {"job_id": job.job_id, "state": job.state.value, "result": job.result}

    def list_schedules(self) -> list:
        return [{"schedule_id": sc.schedule_id, "name": sc.name, "cron": sc.cron,
                 "fired": sc.fired, "next_at": sc.next_at, "last_run_id": sc.last_run_id}
                for sc in self.scheduler.schedules.values()]

    def remove_schedule(self, schedule_id: str) -> dict:
        if schedule_id not in self.scheduler.schedules:
            raise RemoteError("not_found", f"no schedule {schedule_id}")
        return self.after(self.handle(ev.ScheduleRemoved(schedule_id)),
                          {"schedule_id": schedule_id, "cancelled": True, "state": "REMOVED"})

    def list_workers(self) -> list:
        now = self.now()
        views = []
        for w in self.scheduler.workers.values():
            view = worker_view(w, now)
            view.update(self.autoscaler.describe(w.name) or {"spawned_by": None})
            views.append(view)
        return views

    def list_jobs(self, state: Optional[str], limit: Any) -> list:
        """The latest `limit` jobs, of one state if `state` names one."""
        if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
            raise RemoteError("bad_request", f"limit must be a whole number of at least 1, "
                                             f"not {limit!r}")
        jobs = self.scheduler.jobs.values()
        if state:
            wanted = state.upper() if isinstance(state, str) else None
            if wanted not in JobState.__members__:
                raise RemoteError("bad_request", f"no job state {state!r}; the states are "
                                                 f"{', '.join(JobState.__members__)}")
            jobs = [j for j in jobs if j.state.value == wanted]
        now = self.now()
        return [job_view(self.scheduler, j, now) for j in list(jobs)[-limit:]]

    def stats(self) -> dict:
        counts: dict[str, int] = {s.value: 0 for s in JobState}
        for job in self.scheduler.jobs.values():
            counts[job.state.value] += 1
        workers = self.scheduler.workers.values()
        return {"jobs": counts, "workers": len(workers),
                "slots": sum(w.slots for w in workers),
                "busy": sum(len(w.running) for w in workers),
                "persistence": self.persistence.describe() if self.persistence else None,
                "recovery": self.recovery, "text_frames": self.legacy.policy(),
                "storage": self.storage_problem, "warnings": self.warnings()}

    def warnings(self) -> list[str]:
        """What every face should say about this master while it holds (`titan status`,
        `titan workers`): text frames on, a log that cannot be written."""
        out = []
        if self.storage_problem is not None:
            out.append(f"storage unavailable: {self.storage_problem}; changes are refused "
                       "until the event log can be written again (reads are answered)")
        warning = self.legacy.warning()
        if warning:
            out.append(warning)
        return out
