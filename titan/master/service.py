"""titan-master: the service tree around the pure scheduler.

The loop is: a frame becomes an event → the core applies it → the decisions it returns are
carried out here as frames to workers, timers and notifications.
"""
from __future__ import annotations

import gc
import os
import time
from collections import deque
from typing import Any, Callable, Coroutine, Optional

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
from titan.core.model import RunState, WorkerState
from titan.core.scheduler import (
    Scheduler, pending_timers, restore, run_job_view, run_view, snapshot)
from titan.datadir import DataDirInUse, DataDirLock, write_file
from titan.errors import TitanError
from titan.interfaces import (
    CorruptLog, IAutoscalerFactory, IPersistenceFactory, IRouterFactory, StorageUnavailable)
from titan.master.api import LONG_POLL, MAX_BATCH, MasterApi, check_scope
from titan.master.autoscale import AutoscalerService
from titan.master.eventlog import LifecycleLog
from titan.master.reload import Reloader
from titan.plugin_registry import find
from titan.protocols import codec
from titan.protocols.frame import encode_frame
from titan.listener import ListenerService
from titan.master.logstore import LogStore
from titan.master.metrics import MasterMetrics
from titan.master.legacy import LegacyFrontend
from titan.master.server import MasterFactory, MasterProtocol
from titan.tap import private_dir
from titan.protocols.opcodes import Op
from titan.protocols.rpc import RemoteError

__all__ = ["MasterService", "LONG_POLL", "MAX_BATCH", "WATCH_INTERVAL", "build_routers"]

PORT_FILE = "master.port"
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


# Events that clients (and jobs, through their tokens) ask for: refused while the event log
# cannot store records.  The others (workers' reports, timers, the core's own proposals)
# are recorded as usual and wait, pending, for the log to recover.
CLIENT_CHANGES = frozenset({
    ev.JobSubmitted, ev.DagSubmitted, ev.JobsAdded, ev.CancelRequested,
    ev.RunCancelRequested, ev.GateDecided, ev.ResultSet, ev.ScheduleAdded,
    ev.ScheduleRemoved})


# Events that change the job they name (the change feed, _note_changes), and the worker.
_JOB_EVENTS = frozenset({ev.CancelRequested, ev.GateDecided, ev.ResultSet,
                         ev.ServiceReported})
_WORKER_EVENTS = frozenset({ev.WorkerJoined, ev.WorkerDisconnected, ev.WorkerLost,
                            ev.WorkerRetiring})


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
        # Called with the (kind, key) of each job, run, worker and schedule that changed,
        # once per reactor turn and after the records are durable (add_change_listener).
        # Nothing is noted while the list is empty: the hot path pays one test per event.
        self._change_listeners: list[Callable[[list], None]] = []
        self._changes: dict = {}  # (kind, key) -> None, noted in this turn
        self._changes_call = None
        # What GET /metrics shows (titan/master/metrics.py): read at each scrape, and hooks
        # here (handle, the log's fsyncs, the store's commands).
        self.metrics = MasterMetrics(self)
        # The operations every face calls (titan/master/api.py), and the faces on them:
        # TITAN_PROTO RPC (server.py) and the reference's text frames (legacy.py).
        self.api = MasterApi(self)
        self.legacy = LegacyFrontend(self.api)  # text frames: the reference's requests
        self.api.text_frames = self.legacy
        self.api.gate_key_writers.append(self.legacy.note_writer)
        self.listener = ListenerService(reactor, mc.listen,
                                        MasterFactory(self.api, self.legacy), self._listening)
        self.listener.setServiceParent(self)
        self.autoscaler = AutoscalerService(self, build_autoscaler(config))
        self.autoscaler.setServiceParent(self)
        self.legacy.setServiceParent(self)
        LifecycleLog(self)  # job and run ends in the log, with their fields
        # `kill -HUP`, `titan reload` (titan/master/reload.py): the config file read again
        # by `config_loader` (twistd's options set it: titan/master/tap.py).
        self.config_loader: Optional[Callable[[], Config]] = None
        self.reloader = Reloader(self)
        # The HTTP face (titan/web/, docs/web.md): the dashboard's API on its own listener.
        self.web = None
        if config.web.enabled:
            from titan.web.face import WebFace
            self.web = WebFace(self.api, self.data_dir, reactor)
            self.web.setServiceParent(self)
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
            self.store.on_command = self.metrics.store_command
        pc = self.config.persistence
        try:
            factory = find(IPersistenceFactory, pc.backend, "persistence backend")
        except TitanError as e:
            raise SystemExit(f"titan: {self.config.source}: persistence.backend: {e}")
        self.persistence = factory.build(os.path.join(self.data_dir, "log"),
                                         {"fsync": pc.fsync, "reactor": self.reactor})
        if hasattr(self.persistence, "watch"):
            self.persistence.watch(self._storage_changed)
        if hasattr(self.persistence, "on_fsync"):
            self.persistence.on_fsync = self.metrics.fsync_took
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
        write_file(self.data_dir, PORT_FILE, f"{getattr(address, 'port', address)}\n")
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
        decisions = self.scheduler.apply(event, now)
        self.metrics.applied(event, decisions, now)
        if self._change_listeners:
            self._note_changes(event, decisions)
        for decision in decisions:
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
                body = {"job_id": d.job_id, "attempt": d.attempt, "run_id": d.run_id,
                        "token": job_token(self.token, d.job_id, d.attempt),
                        "spec": d.spec.to_wire()}
                run = self.scheduler.runs.get(d.run_id) if d.run_id else None
                if run is not None and run.agent_run_id:
                    # the job's environment names its agent run and stage (model usage)
                    body["agent_run_id"] = run.agent_run_id
                    body["stage"] = run.stage
                self._to_worker(conn, Op.DISPATCH, body)
            if self.config.log_jobs:  # the fields every line about a job has (eventlog.py)
                self.log.info("job {job_id} attempt {attempt} dispatched to {worker}",
                              job_id=d.job_id, run_id=d.run_id, attempt=d.attempt,
                              worker=self._worker_name(d.worker_id), worker_id=d.worker_id)
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
            self.log.info("worker {worker} is {state}: {reason}", worker_id=d.worker_id,
                          worker=self._worker_name(d.worker_id), state=d.state.value,
                          reason=d.reason)
            if d.state is WorkerState.DEAD:
                # A stalled worker whose connection is still open: hang up, so that it
                # reconnects and reports what it runs instead of idling unseen.
                conn = self.worker_conns.pop(d.worker_id, None)
                if conn is not None:
                    conn.transport.loseConnection()

    def reload_config(self, via: str) -> dict:
        """Read the config file again and apply what can change live (titan/master/reload.py)."""
        return self.reloader.reload(via)

    def config_status(self) -> dict:
        return self.reloader.status()

    def _worker_name(self, worker_id: str) -> str:
        w = self.scheduler.workers.get(worker_id)
        return w.name if w is not None else worker_id

    # -- the change feed: what faces showing live state (titan/web/events.py) follow ------

    def add_change_listener(self, listener: Callable[[list], None]) -> None:
        """`listener(changes)`: a list of `(kind, key)` -- kind "job" (gates and services
        too: a job's key), "run", "worker" or "schedule" -- each once per turn of the
        reactor in which it changed, called once those records are durable (as replies
        are).  What the thing is now is for the listener to read: it may have changed
        again since, or be gone."""
        self._change_listeners.append(listener)

    def remove_change_listener(self, listener: Callable[[list], None]) -> None:
        if listener in self._change_listeners:
            self._change_listeners.remove(listener)

    def _note_changes(self, event: object, decisions: list) -> None:
        """What `event` and its decisions changed, noted for this turn's delivery."""
        changes = self._changes
        kind = type(event)
        if kind is ev.JobFinished or kind is ev.JobStarted:
            # A standalone job's retry (RUNNING -> PENDING) is announced by no decision.
            changes[("job", event.job_id)] = None
            changes[("worker", event.worker_id)] = None
        elif kind is ev.JobSubmitted:
            changes[("job", event.spec.job_id)] = None
        elif kind in _JOB_EVENTS:
            changes[("job", event.job_id)] = None
        elif kind in _WORKER_EVENTS:
            changes[("worker", event.worker_id)] = None
        elif kind is ev.ScheduleAdded or kind is ev.ScheduleRemoved:
            changes[("schedule", event.schedule_id)] = None
        elif kind is ev.TimerFired and type(event.key) is tuple and event.key[0] == "cron":
            # A firing moves the schedule's count, next time and last run (even one whose
            # run was skipped).
            changes[("schedule", event.key[1])] = None
        for d in decisions:
            kind = type(d)
            if kind is ev.RunChanged:
                changes[("run", d.run_id)] = None
                for key in d.jobs:
                    changes[("job", key)] = None
            elif kind is ev.Dispatch:
                changes[("job", d.job_id)] = None
                changes[("worker", d.worker_id)] = None
            elif kind is ev.JobEnded:
                changes[("job", d.job_id)] = None
            elif kind is ev.WorkerChanged:
                changes[("worker", d.worker_id)] = None
            elif kind is ev.Forgotten:
                for key in d.job_ids:
                    changes[("job", key)] = None
        if changes and self._changes_call is None:
            self._changes_call = self.reactor.callLater(0, self._seal_changes)

    def _seal_changes(self) -> None:
        self._changes_call = None
        changes, self._changes = list(self._changes), {}
        if changes:
            self.settled().addCallbacks(self._deliver_changes, _stopped_unstored,
                                        callbackArgs=(changes,))

    def _deliver_changes(self, _, changes: list) -> None:
        for listener in list(self._change_listeners):
            try:
                listener(changes)
            except Exception:
                self.log.failure("a change listener failed")

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

    def watch(self, conn, run_id: str) -> None:
        """RUN_CHANGED pushes of a running run follow on `conn` (MasterApi.watch_run)."""
        self._watchers.setdefault(run_id, set()).add(conn)
        conn.watching.add(run_id)

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

    def worker_link(self, worker_id: str) -> Optional[MasterProtocol]:
        return self.worker_conns.get(worker_id)

    def to_worker(self, worker_id: str, opcode: int, body: dict) -> bool:
        """A frame to a worker, behind the DISPATCH and KILL frames decided before it
        (_to_worker); False if the worker is not connected."""
        conn = self.worker_conns.get(worker_id)
        if conn is None:
            return False
        self._to_worker(conn, opcode, body)
        return True

    # -- connections of jobs' tokens --------------------------------------------------------

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
                    check_scope(self.scheduler, conn.scope)
                except RemoteError:
                    self.job_disconnected(conn)
                    if conn.transport is not None:
                        conn.transport.loseConnection()

    def _tick(self) -> defer.Deferred:
        d = self.handle(ev.Tick())
        if self._job_conns:  # attempts ended by a lost worker or a retry: not by JobEnded
            self._close_job_connections()
        return d

    # -- long polls: what the operations' waits wait for --------------------------------------

    # (Coroutines, awaited by the operations' own: a long poll adds no Deferred.)
    def until_ended(self, job_id: str, timeout: float) -> Coroutine:
        """Until the job's end is durable, or `timeout` seconds pass."""
        return self._long_poll(self._done_waiters, job_id, timeout)

    def until_run_changed(self, run_id: str, timeout: float) -> Coroutine:
        """Until a change of the run is durable, or `timeout` seconds pass."""
        return self._long_poll(self._run_waiters, run_id, timeout)

    async def until_all_ended(self, job_ids: list, timeout: float) -> None:
        """Until every job of `job_ids` has ended (durably), or `timeout` seconds pass."""
        waiter = _AllEnded(len(job_ids))
        for job_id in job_ids:
            self._done_waiters.setdefault(job_id, []).append(waiter)
        call = self.reactor.callLater(timeout, lambda: waiter.done.called
                                      or waiter.done.callback(None))
        await waiter.done
        if call.active():
            call.cancel()
        for job_id in job_ids:
            waiters = self._done_waiters.get(job_id)
            if waiters and waiter in waiters:
                waiters.remove(waiter)
                if not waiters:
                    del self._done_waiters[job_id]

    async def until_log_grows(self, job_id: str, timeout: float) -> None:
        """Until the job's log grows (or it ends), or `timeout` seconds pass."""
        d = self.logs.changed(job_id)
        call = self.reactor.callLater(timeout, lambda: d.called or d.callback(None))
        await d
        if call.active():
            call.cancel()
        self.logs.forget_waiter(job_id, d)

    async def _long_poll(self, waiters_by_key: dict, key: str, timeout: float) -> None:
        """Until `waiters_by_key[key]` is woken, or `timeout` seconds pass."""
        d: defer.Deferred = defer.Deferred()
        waiters = waiters_by_key.setdefault(key, [])
        waiters.append(d)
        call = self.reactor.callLater(timeout, lambda: d.called or d.callback(None))
        await d
        if call.active():
            call.cancel()
        if d in waiters:
            waiters.remove(d)

