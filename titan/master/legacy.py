"""The reference implementation's text requests, served by the master.

A text frame (flags 0) is one request on a connection of its own: the master answers it with
one ACK or ERROR text frame, then closes the connection (docs/compat.md).  They carry no
token, so they are served only when the operator turns them on (`master.text_frames: on`;
the default is `off`), loudly (a warning at start-up, and in `titan workers`), and then only
to processes of the master's own user on this machine (titan/master/peer.py finds the
peer's uid) and only for the operations in `master.text_frame_ops` (docs/security.md).

Jobs submitted this way run as DAG runs named `legacy`; the reference's `DAG-<id>` (or plain
`<id>`) names the latest job submitted with that id.  The map from ids to jobs is kept in
memory; after a restart an id still finds its job through the scheduler as long as it is not
ambiguous (the newest job of that id wins).

With a store configured (`store.url`) and text frames on, approval gates are mirrored the
reference's way (with text frames off, the keys decide nothing and are not written):
a waiting gate sets `titan:hitl:status:<gate>` to WAITING, setting that key to APPROVED or
REJECTED decides the gate, and a gate decided otherwise writes its outcome there.  A
decision is never written over: a new run clears its gates' keys as it is submitted (what
an earlier gate of that name left there is not this one's), WAITING goes in only where the
key is absent (SET NX) or holds no decision, and a decision found when the gate starts
waiting decides it at once.  A `hitl_message` gate answers to the reference's name,
`hitl-gate-<id>`, too (titan/core/dag.py).

This is a face of the master's operations (titan/master/api.py): it parses the reference's
text, calls `MasterApi`, and says the answer (or the error) the reference's way.
"""
from __future__ import annotations

import base64
import binascii
import itertools
import json
import os
import sys
import time
from typing import Any, Optional

from twisted.application.service import Service
from twisted.internet import defer
from twisted.internet.task import LoopingCall
from twisted.logger import Logger

from titan.core.dag import approval_gate_node, reference_gate_name
from titan.core.model import JobState, RunState
from titan.errors import RemoteError
from titan.master.api import Caller, MasterApi
from titan.protocols import legacy
from titan.master.peer import describe_uid, peer_uid
from titan.master.logstore import TextSlice
from titan.protocols.frame import HEADER, VERSION
from titan.protocols.opcodes import Op, op_name
from titan.store.client import StoreError, StoreUnavailable

HITL_INTERVAL = 0.5
HITL_QUEUE_KEY = "titan:hitl:queue"
HITL_MESSAGE_PREFIX = "titan:hitl:message:"
HITL_TS_PREFIX = "titan:hitl:ts:"
DECISIONS = ("APPROVED", "REJECTED")
HISTORY = 10  # finished jobs per worker in STATS_JSON, as the reference keeps
NO_STORE = "ERROR: the store is not configured"
SCRIPT_MARGIN = 64 * 1024  # room, in a DISPATCH frame, for what goes with a job's script
# Who asks, for the operations: text frames carry no token, and are served only to the
# master's own user (refusal), who holds the cluster's rights.
TEXT_FRAME = Caller(describe="a text frame of the master's user")


class Refused(Exception):
    """An ERROR reply, with its exact text."""

    def __init__(self, text: str) -> None:
        super().__init__(text)
        self.text = text


class LegacyFrontend(Service):
    log = Logger()
    name = "legacy"

    def __init__(self, master: MasterApi) -> None:
        self.master = master
        self.nodes: dict[str, str] = {}  # a reference id -> the key of its latest job
        self._gates: dict[str, list] = {}  # key of a gate seen waiting -> its store names
        self._ended_gates: dict[str, list] = {}  # gates ended since the last mirroring
        self._started_at = float("inf")  # runs created from then on are new (not recovered)
        self._run_sizes: dict[str, int] = {}  # live run -> its jobs whose gates are cleared
        master.job_end_listeners.append(self._job_ended)
        master.run_change_listeners.append(self._run_changed)
        # Who runs the other end of a connection (injected by tests), and who we are.
        self.peer_uid = peer_uid
        self.own_uid = os.geteuid()
        # Which text-frame KV write set a gate's status key last (key -> who), so that the
        # decision it brings names who made it.
        self._key_writers: dict[str, str] = {}
        self._hitl = LoopingCall(self._hitl_tick)
        self._hitl.clock = master.reactor
        self._handlers = {
            Op.SUBMIT_JOB: self.submit_job, Op.SUBMIT_DAG: self.submit_dag, Op.STOP: self.stop,
            Op.STATS: self.stats, Op.STATS_JSON: self.stats_json, Op.GET_LOGS: self.get_logs,
            Op.UPLOAD_ASSET: self.upload_asset, Op.FETCH_ASSET: self.fetch_asset,
            Op.GET_JOB_STATUS: self.get_job_status, Op.CANCEL_JOB: self.cancel_job,
            Op.DEPLOY_SCRIPT: self.deploy_script, Op.KV_SET: self.kv_set,
            Op.KV_GET: self.kv_get, Op.KV_SADD: self.kv_sadd, Op.KV_SMEMBERS: self.kv_smembers,
        }

    def startService(self) -> None:
        super().startService()
        self._started_at = self.master.now()
        # Recovered runs: their gates' keys may hold decisions for them; only gates they
        # grow from now on are new.
        self._run_sizes = {run_id: len(run.jobs) for run_id, run in
                           self.master.scheduler.runs.items() if run.state is RunState.RUNNING}
        warning = self.warning()
        if warning is not None:
            # Loud: in the log, and on the terminal that started the master.
            self.log.warn("WARNING: {what}", what=warning)
            print(f"titan-master: WARNING: {warning}", file=sys.__stderr__, flush=True)
        if not self._hitl.running:
            self._hitl.start(HITL_INTERVAL, now=False)

    def stopService(self):
        if self._hitl.running:
            self._hitl.stop()
        return super().stopService()

    # -- the connection ---------------------------------------------------------------------

    def policy(self) -> str:
        """`on` or `off` (anything but an explicit `on` is off)."""
        value = getattr(self.master.config.master, "text_frames", "off")
        if value is True:
            return "on"
        return "on" if str(value).strip().lower() == "on" else "off"

    def enabled(self) -> bool:
        return self.policy() == "on"

    def ops(self) -> frozenset:
        """The opcodes served as text frames (`master.text_frame_ops`)."""
        names = getattr(self.master.config.master, "text_frame_ops", None)
        if names is None:
            return frozenset(self._handlers)
        return frozenset(op for op in self._handlers if op_name(op) in set(names))

    def warning(self) -> Optional[str]:
        """What `titan workers` and the start-up log say while text frames are on."""
        if not self.enabled():
            return None
        return (f"text frames are on (master.text_frames: on): processes of "
                f"{describe_uid(self.own_uid)} on this machine may submit jobs, read logs, "
                "cancel jobs and use the store without the cluster token (docs/security.md)")

    def refusal(self, protocol) -> Optional[str]:
        """Why text frames from this connection are not served (None: they are)."""
        if not self.enabled():
            return ("text frames are turned off on this master (master.text_frames: off); "
                    "Titan's own clients need none, and docs/compat.md says how to turn them "
                    "on for the reference's")
        uid = self.peer_uid(protocol.transport)
        if uid is not None and uid == self.own_uid:
            return None
        try:
            peer = protocol.transport.getPeer()
        except Exception:
            peer = None
        host = str(getattr(peer, "host", "") or "") or "this peer"
        who = (f"{host}, whose user cannot be told (another machine, or a socket already "
               "closed)" if uid is None else f"{host}, run by {describe_uid(uid)}")
        return (f"text frames are served only to processes of the master's user "
                f"({describe_uid(self.own_uid)}) on this machine, not to {who} "
                "(master.text_frames: on)")

    def frame_received(self, protocol, frame) -> None:
        """One text request: answer it, then close the connection."""
        if getattr(protocol, "legacy_request", None) is not None:
            return  # one request per connection; the rest are not read
        protocol.legacy_request = frame.opcode
        refusal = self.refusal(protocol)
        if refusal is not None:
            self.log.warn("refused a text {op} from {peer}: {why}", op=op_name(frame.opcode),
                          peer=protocol._peer(), why=refusal)
            self._reply(protocol, Op.ERROR, f"ERROR: {refusal}")
            return
        try:
            text = frame.body.decode("utf-8")
        except UnicodeDecodeError as e:
            self._reply(protocol, Op.ERROR, f"ERROR: the body is not UTF-8 text ({e.reason} "
                                            f"at byte {e.start})")
            return
        d = self.handle(frame.opcode, text, f"a text frame KV_SET from {protocol._peer()} "
                                            f"({describe_uid(self.own_uid)})")
        d.addCallbacks(lambda reply: self._reply(protocol, Op.ACK, reply),
                       lambda f: self._failed(protocol, frame.opcode, f))
        d.addErrback(lambda f: self.log.failure("answering a text {op} failed", f,
                                                op=op_name(frame.opcode)))

    def handle(self, opcode: int, text: str, peer: str = "") -> defer.Deferred:
        """The reply text to a request (fails with Refused for an ERROR reply)."""
        handler = self._handlers.get(opcode)
        if handler is None:
            return defer.fail(Refused(f"ERROR: {op_name(opcode)} is not served as a text "
                                      "frame"))
        if opcode not in self.ops():
            return defer.fail(Refused(f"ERROR: {op_name(opcode)} is not served as a text "
                                      "frame on this master (master.text_frame_ops)"))
        if opcode == Op.KV_SET:
            return defer.maybeDeferred(self.kv_set, text, peer)
        return defer.maybeDeferred(handler, text)

    def _reply(self, protocol, opcode: int, text: str) -> defer.Deferred:
        # Whatever a reply reports is as durable as the fsync policy promises first
        # (MasterService.settled, or reply_ready while the log cannot store records).
        return self.master.reply_ready().addCallbacks(
            lambda _: self._send(protocol, opcode, text),
            lambda failure: self._unstored(protocol, failure))

    def _unstored(self, protocol, failure) -> None:
        """The log closed before what the reply reports was stored: say so instead."""
        explained = self.master.explain_failure(failure)
        if explained is None:
            return failure
        self._send(protocol, Op.ERROR, f"ERROR: {explained.message}")

    @staticmethod
    def _send(protocol, opcode: int, text) -> None:
        if not protocol.connected:
            if isinstance(text, TextSlice):
                text.close()
            return
        if isinstance(text, TextSlice):
            # A log is streamed as the peer reads it (titan/master/logstore.py): a reply
            # nobody reads holds a chunk, not the log.
            protocol.send_stream(_text_frame_chunks(opcode, text), done=protocol.close)
            return
        protocol.send_text(opcode, text)
        protocol.close()

    def _failed(self, protocol, opcode: int, failure) -> None:
        explained = self.master.explain_failure(failure)
        if explained is not None and explained.code == "storage_unavailable":
            self._reply(protocol, Op.ERROR, f"ERROR: {explained.message}")
            return
        if failure.check(Refused):
            text = failure.value.text
        elif failure.check(legacy.ParseError):
            text = f"ERROR: {failure.getErrorMessage()}"
        elif failure.check(RemoteError):
            text = f"ERROR: {failure.value.message}"
        elif failure.check(StoreError):  # the store refused it (WRONGTYPE, ...)
            text = f"ERROR: {failure.getErrorMessage()}"
        elif failure.check(StoreUnavailable):
            self.log.warn("text {op}: {why}", op=op_name(opcode), why=failure.getErrorMessage())
            text = f"ERROR: the store is unavailable: {failure.getErrorMessage()}"
        else:
            self.log.failure("text {op} failed", failure, op=op_name(opcode))
            text = f"ERROR: {op_name(opcode)} failed: {failure.getErrorMessage()}"
        self._reply(protocol, Op.ERROR, text)

    # -- jobs -------------------------------------------------------------------------------

    def _limit(self) -> int:
        return max(1024, self.master.config.master.max_frame_bytes - SCRIPT_MARGIN)

    async def submit_dag(self, text: str) -> str:
        spec = legacy.parse_dag(text, self.asset, self._limit())
        await self._submit(spec)
        return "DAG_ACCEPTED"

    async def submit_job(self, text: str) -> str:
        spec = legacy.parse_submit_job(text, self.asset, self._limit(), new_id=self._new_id)
        await self._submit(spec)
        return "JOB_ACCEPTED"

    def _new_id(self) -> str:
        while True:
            node = f"job-{os.urandom(4).hex()}"
            if node not in self.nodes and node not in self.master.scheduler.nodes:
                return node

    async def _submit(self, spec: dict) -> None:
        result = await defer.maybeDeferred(self.master.submit_dag, TEXT_FRAME, spec)
        for key in result["jobs"]:
            self.nodes[key.rsplit("/", 1)[-1]] = key

    def job_key(self, ref: str) -> Optional[str]:
        """The key of the job a reference id names, or None."""
        s = self.master.scheduler
        ref = ref.strip()
        if not ref:
            return None
        if ref in s.jobs:
            return ref
        node = legacy.node_of(ref)
        key = self.nodes.get(node)
        if key is not None and key in s.jobs:
            return key
        keys = s.nodes.get(node) if node in s.nodes else None
        if keys:
            return max(keys, key=lambda k: s.jobs[k].seq)
        if node in s.jobs:
            return node
        if "/" in ref:
            try:
                return s.resolve(ref)
            except ValueError:
                return None
        gate = approval_gate_node(node)  # hitl-gate-<id>: the gate of <id>'s hitl_message
        if gate is not None:
            key = self.job_key(gate)
            if key is not None and reference_gate_name(s.jobs[key].spec) == node:
                return key
        return None

    def get_job_status(self, text: str) -> str:
        key = self.job_key(text)
        if key is None:
            return "NULL"
        return legacy.STATUS.get(self.master.scheduler.jobs[key].state.value, "NULL")

    async def cancel_job(self, text: str) -> str:
        key = self.job_key(text)
        if key is None:
            raise Refused("NOT_FOUND")
        job = self.master.scheduler.jobs[key]
        if job.state.terminal:
            if job.state is JobState.CANCELLED:
                return "CANCELLED"
            raise Refused(f"ERROR: {text.strip()} already ended {job.state.value}; "
                          "there is nothing to cancel")
        await defer.maybeDeferred(self.master.cancel, TEXT_FRAME, key)
        return "CANCELLED"

    async def stop(self, text: str) -> str:
        ref = text.strip()
        if not ref:
            raise Refused("ERROR: Missing Service ID")
        key = self.job_key(ref)
        if key is None:
            raise Refused(f"ERROR: Service {ref} not found")
        job = self.master.scheduler.jobs[key]
        if job.state.terminal:
            raise Refused(f"ERROR: Service {ref} is not running ({job.state.value})")
        await defer.maybeDeferred(self.master.cancel, TEXT_FRAME, key)
        return f"STOPPED: {ref}"

    def get_logs(self, text: str) -> TextSlice:
        """The job's output, as a TextSlice: streamed, never held whole."""
        key = self.job_key(text)
        if key is None:
            raise Refused(f"ERROR: no job {text.strip()}")
        logs = self.master.logs
        limit = self._limit()
        size = logs.size(key)
        start = max(0, size - limit)
        note = f"[titan: the first {start} bytes of this log are not shown]\n" if start else ""
        return logs.text_slice(key, start, size, note.encode())

    # -- assets -----------------------------------------------------------------------------

    @property
    def assets_dir(self) -> str:
        return os.path.join(self.master.data_dir, "assets")

    def asset(self, name: str) -> Optional[bytes]:
        """An uploaded (or deployed) file's bytes, or None."""
        if not legacy.valid_asset_name(name):
            return None
        try:
            with open(os.path.join(self.assets_dir, name), "rb") as f:
                return f.read()
        except OSError:
            return None

    def _store_asset(self, text: str, what: str) -> None:
        name, sep, data = text.partition("|")
        name = name.strip()
        if not sep:
            raise Refused(f"ERROR: {what} takes NAME|BASE64")
        if not legacy.valid_asset_name(name):
            raise Refused(f"ERROR: {name!r} is not a plain file name")
        try:
            content = base64.b64decode(data.strip(), validate=True)
        except (binascii.Error, ValueError):
            raise Refused(f"ERROR: the content of {name} is not valid base64") from None
        os.makedirs(self.assets_dir, mode=0o700, exist_ok=True)
        path = os.path.join(self.assets_dir, name)
        tmp = os.path.join(self.assets_dir, f".{name[:200]}.{os.getpid()}.tmp")
        try:
            with open(tmp, "wb") as f:
                f.write(content)
            os.replace(tmp, path)
        except OSError as e:
            raise Refused(f"ERROR: cannot store {name}: {e.strerror}") from None

    def upload_asset(self, text: str) -> str:
        self._store_asset(text, "UPLOAD_ASSET")
        return "UPLOAD_SUCCESS"

    def deploy_script(self, text: str) -> str:
        self._store_asset(text, "DEPLOY_SCRIPT")
        return "DEPLOY_SUCCESS"

    def fetch_asset(self, text: str) -> str:
        data = self.asset(text.strip())
        if data is None:
            raise Refused("ERROR_NOT_FOUND")
        return base64.b64encode(data).decode()

    # -- the store --------------------------------------------------------------------------

    def _store(self):
        store = getattr(self.master, "store", None)
        if store is None:
            raise Refused(NO_STORE)
        return store

    @staticmethod
    def _pair(text: str, what: str) -> tuple[str, str]:
        key, sep, value = text.partition("|")
        if not sep or not key:
            raise Refused(f"ERROR: {what} takes KEY|{'VALUE' if what == 'KV_SET' else 'MEMBER'}")
        return key, value

    @staticmethod
    def _key(text: str) -> str:
        if not text:
            raise Refused("ERROR: a key is required")
        return text

    async def kv_set(self, text: str, who: str = "a text frame KV_SET") -> str:
        self._store()
        key, value = self._pair(text, "KV_SET")
        # (The API tells note_writer who wrote a gate's key.)
        await self.master.kv_set(TEXT_FRAME, key, value, who=who)
        return "OK"

    def note_writer(self, key: str, value: Any, who: str) -> None:
        """`who` writes `value` to `key` through the master: if that is a decision in a
        gate's status key, the decision it brings is recorded as theirs."""
        if not key.startswith(legacy.HITL_KEY_PREFIX) or _decision(value) is None:
            return
        if len(self._key_writers) >= 10_000:
            self._key_writers.pop(next(iter(self._key_writers)))
        self._key_writers[key] = who

    async def kv_get(self, text: str) -> str:
        self._store()
        value = await self.master.kv_get(TEXT_FRAME, self._key(text))
        return "NULL" if value is None else _text(value)

    async def kv_sadd(self, text: str) -> str:
        self._store()
        key, member = self._pair(text, "KV_SADD")
        added = await self.master.kv_sadd(TEXT_FRAME, key, member)
        return "1" if added else "0"

    async def kv_smembers(self, text: str) -> str:
        self._store()
        members = await self.master.kv_smembers(TEXT_FRAME, self._key(text))
        return ",".join(sorted(_text(m) for m in members or ()))

    # -- stats ------------------------------------------------------------------------------

    def _worker_rows(self) -> list[dict]:
        s = self.master.scheduler
        now = self.master.now()
        history = self._history()
        rows = []
        for view in self.master.list_workers(TEXT_FRAME):
            worker_id = view["worker_id"]
            w = s.workers.get(worker_id)
            running = sorted(w.running, key=lambda k: s.jobs[k].seq) if w else []
            rows.append({
                "worker_id": worker_id, "name": view["name"], "host": view["host"],
                "port": self._port(worker_id), "state": view["state"],
                "capabilities": ",".join(view["tags"]) or legacy.GENERAL,
                "load": f"{view['busy']}/{view['slots']}",
                "active_job": self._ref(running[0]) if running else None,
                "running": [self._ref(k) for k in running],
                # As the reference's: what runs now, then the last jobs it ran, oldest first.
                "history": [self._history_entry(s.jobs[k], now) for k in running
                            if k in s.jobs] + history.get(worker_id, []),
                "services": [self._ref(k) for k in running
                             if k in s.jobs and s.jobs[k].spec.kind == "service"],
            })
        return rows

    def _port(self, worker_id: str) -> Optional[int]:
        """The worker's port: its end of the connection it keeps to the master (a Titan
        worker listens on none), or None while it is not connected."""
        conn = self.master.worker_link(worker_id)
        try:
            return int(conn.transport.getPeer().port)
        except (AttributeError, TypeError, ValueError):
            return None

    def _history(self) -> dict[str, list]:
        """Worker id -> its last HISTORY finished jobs, oldest first."""
        s = self.master.scheduler
        ended: dict[str, list] = {}
        for job in s.jobs.values():
            if job.worker_id is not None and job.state.terminal and \
                    job.finished_at is not None:
                ended.setdefault(job.worker_id, []).append(job)
        now = self.master.now()
        out = {}
        for worker_id, jobs in ended.items():
            jobs.sort(key=lambda j: (j.finished_at, j.seq))
            out[worker_id] = [self._history_entry(j, now) for j in jobs[-HISTORY:]]
        return out

    def _history_entry(self, job, now: float) -> dict:
        status = legacy.STATUS.get(job.state.value, job.state.value)
        start = job.started_at
        if not job.state.terminal:
            ms = int(((now - start) if start is not None else 0) * 1000)
            return {"id": self._ref(job.job_id), "status": status, "time": f"{ms}ms"}
        ms = int(((job.finished_at - start) if start is not None else 0) * 1000)
        return {"id": self._ref(job.job_id), "status": status, "time": f"{ms}ms",
                "completed_at": int(job.finished_at * 1000)}

    def _queued(self) -> int:
        """Jobs ready to run and waiting for a slot (not those waiting for parents, a delay,
        a retry's backoff or a person)."""
        pending = JobState.PENDING
        return sum(1 for job in self.master.scheduler.jobs.values()
                   if job.queued and job.state is pending)

    def _ref(self, key: str) -> str:
        """How the reference names a job: `DAG-<id>` for a job of a run."""
        job = self.master.scheduler.jobs.get(key)
        if job is not None and job.run_id is not None:
            return legacy.DAG_PREFIX + job.node
        return key

    def stats_json(self, text: str = "") -> str:
        stats = self.master.stats(TEXT_FRAME)
        counts = stats["jobs"]
        workers = self._worker_rows()
        alive = [w for w in workers if w["state"] == "ALIVE"]
        body = {"active_workers": len(alive), "queue_size": self._queued(),
                "workers": workers, "jobs": counts, "slots": stats["slots"],
                "busy": stats["busy"]}
        return json.dumps(body, default=str)

    def stats(self, text: str = "") -> str:
        counts = self.master.stats(TEXT_FRAME)["jobs"]
        workers = self._worker_rows()
        lines = ["", "--- TITAN SYSTEM MONITOR ---",
                 f"Active Workers:    {sum(1 for w in workers if w['state'] == 'ALIVE')}",
                 f"Execution Queue:   {self._queued()} jobs",
                 f"Pending:           {counts.get('PENDING', 0)} jobs",
                 f"Running:           {counts.get('RUNNING', 0)} jobs",
                 f"Awaiting approval: {counts.get('WAITING_APPROVAL', 0)} jobs",
                 f"Completed:         {counts.get('COMPLETED', 0)} jobs",
                 f"Failed:            {counts.get('FAILED', 0)} jobs",
                 f"Dead Letter (DLQ): {counts.get('DEAD', 0)} jobs",
                 f"Cancelled:         {counts.get('CANCELLED', 0)} jobs",
                 "-------------------------------"]
        if workers:
            lines.append("Worker Status:")
            for w in workers:
                busy, slots = (int(n) for n in w["load"].split("/"))
                pct = busy * 100 // slots if slots else 100
                lines.append(f" • [{w['name']}] Load: {w['load'] + f' ({pct}%)':<12} | "
                             f"Skills: {w['capabilities']} | {w['state']}")
                lines.extend(f"    └── [SVC] Service ID: {svc}" for svc in w["services"])
        else:
            lines.append("[INFO] No workers currently connected.")
        return "\n".join(lines) + "\n"

    # -- approval gates through the store ---------------------------------------------------

    def _hitl_tick(self):
        store = getattr(self.master, "store", None)
        if store is None or not self.enabled():  # the keys are the reference's path only
            self._gates.clear()
            return None
        d = defer.Deferred.fromCoroutine(self._hitl_poll(store))
        d.addErrback(lambda f: self.log.failure("mirroring gates to the store failed", f))
        return d

    @staticmethod
    def _names(job) -> list:
        """The gate's names in the store: its id, and the reference's `hitl-gate-<id>` for a
        `hitl_message` gate (the last is the one listed in the queue)."""
        alias = reference_gate_name(job.spec)
        return [job.node, alias] if alias else [job.node]

    def _job_ended(self, key: str) -> None:
        # A gate can be decided between two mirrorings (approved the moment it waits, or
        # before the store was reachable): its outcome is written all the same.
        job = self.master.scheduler.jobs.get(key)
        if job is not None and job.spec.kind == "gate" and self.master.store is not None \
                and self.enabled():
            self._ended_gates[key] = self._names(job)

    def _run_changed(self, change) -> None:
        """A new run, or a run that grew: clear its new gates' keys, as the reference's SDK
        does when it submits (`CLEARED`).  What is there was left by an earlier gate of the
        same name; a decision written from now on is this run's.  The DEL goes out before
        the submission's (or ADD_JOBS') reply, which waits for the log, so whoever learns of
        the gate writes after it."""
        store = self.master.store
        if store is None or not self.enabled():
            return
        s = self.master.scheduler
        run = s.runs.get(change.run_id)
        if run is None or change.state is not RunState.RUNNING:
            self._run_sizes.pop(change.run_id, None)
            return
        seen = self._run_sizes.get(change.run_id)
        if seen is None:
            if change.version != 1 or run.created_at < self._started_at:
                return  # recovered, not new: what its keys hold may be decisions for it
            seen = 0
        if len(run.jobs) == seen:
            return
        self._run_sizes[change.run_id] = len(run.jobs)
        # The jobs it gained are the last ones (a run's jobs keep their order).
        keys = [legacy.hitl_key(name) for k in itertools.islice(run.jobs, seen, None)
                if s.jobs[k].spec.kind == "gate" for name in self._names(s.jobs[k])]
        if keys:
            d = store.delete(*keys)
            d.addErrback(lambda f: self.log.warn(
                "run {run}: cannot clear its gates' keys in the store: {why}",
                run=change.run_id, why=f.getErrorMessage()))

    def _waiting_gates(self) -> dict:
        s = self.master.scheduler
        waiting = {}
        for run in s.runs.values():
            if run.state is RunState.RUNNING and run.counts.get(JobState.WAITING_APPROVAL):
                for key in run.jobs:
                    job = s.jobs[key]
                    if job.state is JobState.WAITING_APPROVAL:
                        waiting[key] = job
        return waiting

    async def _hitl_poll(self, store) -> None:
        s = self.master.scheduler
        waiting = self._waiting_gates()
        for key in [k for k in self._gates if k not in waiting]:
            del self._gates[key]  # ended: `_job_ended` has it
        ended, self._ended_gates = self._ended_gates, {}
        for key, names in ended.items():
            job = s.jobs.get(key)
            if job is not None and job.state.terminal:
                for name in names:
                    await store.set(legacy.hitl_key(name), _outcome(job))
        for key, job in waiting.items():
            names = self._gates.get(key)
            if names is None:
                names = self._names(job)
                found = await self._mirror(store, job, names)
                self._gates[key] = names
            else:
                found = None
                for name in names:
                    value = _decision(await store.get(legacy.hitl_key(name)))
                    if value is not None:
                        found = (name, value)
                        break
            if found is not None:
                name, decision = found
                status_key = legacy.hitl_key(name)
                who = self._key_writers.pop(status_key, None) or \
                    "a write straight to the store (not through the master)"
                try:
                    await defer.maybeDeferred(
                        self.master.decide_gate,
                        Caller(describe=f"store key {status_key}, set by {who}"), key,
                        decision == "APPROVED", "store", f"{status_key} set to {decision}")
                except RemoteError as e:  # decided meanwhile
                    self.log.info("gate {key}: {why}", key=key, why=e.message)

    async def _mirror(self, store, job, names: list) -> Optional[tuple]:
        """A gate that started waiting: list it the reference's way and say WAITING in its
        keys, writing over no decision.  Returns (name, decision) if one was already there
        (written before the gate started, or the moment it did)."""
        for name in names:
            await store.set(HITL_MESSAGE_PREFIX + name, job.spec.message or "")
            await store.set(HITL_TS_PREFIX + name, str(int(time.time() * 1000)))
        await store.sadd(HITL_QUEUE_KEY, names[-1])
        found = None
        for name in names:
            key = legacy.hitl_key(name)
            if await store.set(key, "WAITING", nx=True):
                continue
            value = await store.get(key)
            decision = _decision(value)
            if decision is None and _text(value).strip().upper() != "WAITING":
                # CLEARED (the reference's SDK writes it), or anything else that decides
                # nothing: the reference's dashboard lists the gate only if it says WAITING.
                # GETSET: a decision written since the GET is not lost, it decides the gate
                # (whose outcome is then written back).
                decision = _decision(await store.execute("GETSET", key, "WAITING"))
            if decision is not None and found is None:
                found = (name, decision)
        return found


def _text_frame_chunks(opcode: int, text: TextSlice):
    """A text frame of `text`, a chunk at a time: the header, then the text."""
    yield HEADER.pack(VERSION, opcode, 0, 0, text.length())
    yield from text.chunks()


def _decision(value: Any) -> Optional[str]:
    """APPROVED or REJECTED if that is what a status key holds, else None."""
    if value is None:
        return None
    text = _text(value).strip().upper()
    return text if text in DECISIONS else None


def _outcome(job) -> str:
    if job.state is JobState.COMPLETED:
        return "APPROVED"
    if (job.decision or {}).get("by") == "timeout":
        return "TIMEOUT"
    return "REJECTED"


def _text(value: Any) -> str:
    if isinstance(value, (bytes, bytearray)):
        return bytes(value).decode("utf-8", errors="replace")
    return str(value)
