"""The master's side of a TITAN_PROTO connection: hello first, then clients' and workers' ops.

Until its hello a connection is held to small limits (docs/security.md, "Limits against
hostile clients"): frames of `master.preauth_frame_bytes` (text frames, where they are
served, `master.text_frame_bytes`), nothing but the hello decoded, `master.hello_timeout`
seconds to say it, and a place among `master.max_pending_connections` (the oldest pending
connection makes room for a new one).  The factory counts connections by kind and keeps
room for workers; every connection is its transport's producer (titan/protocols/rpc.py), so
a peer that does not read its replies is not read either, and is closed once it stalls.

This is a face of the master's operations (titan/master/api.py): each `op_*` decodes its
request's fields, calls `MasterApi` with the connection's `Caller`, and returns the answer
to encode.  Checks, validation, durable replies and errors are the API's.
"""
from __future__ import annotations

from typing import Any, Optional

from twisted.internet import defer
from twisted.internet.protocol import Factory
from twisted.python.failure import Failure
from twisted.internet.task import LoopingCall
from twisted.logger import Logger

from titan import __version__
from titan.limits import (
    ConnectionLimits, EpisodeLog, Refused, connection_cap, raise_fd_limit)
from titan.protocols.opcodes import Op, op_name
from titan.master.api import Caller, MasterApi, TextFrames, WrongToken
from titan.protocols.rpc import RemoteError, RpcProtocol, rid_of

HELLOS = (Op.HELLO, Op.REGISTER)
WORKER_OPS = frozenset({Op.HEARTBEAT, Op.JOB_STARTED, Op.JOB_COMPLETE, Op.LOG_BATCH,
                        Op.SERVICE_STATUS})


def _require(body: dict, key: str, kind: type = str) -> Any:
    value = body.get(key)
    if not isinstance(value, kind) or isinstance(value, bool) and kind is not bool:
        raise RemoteError("bad_request", f"{key!r} is required ({kind.__name__})")
    return value


class TextFramesFace(TextFrames):
    """What this face needs of the text frames' (titan/master/legacy.py), which share its
    port: whether they are served to a peer, and the request itself."""
    def refusal(self, protocol) -> Optional[str]: ...
    def frame_received(self, protocol, frame) -> None: ...


class MasterProtocol(RpcProtocol):
    master: MasterApi  # the master's operations
    text_frames: TextFramesFace
    caller: Caller = Caller()  # who asks, once the hello is accepted
    role: Optional[str] = None  # "client" or "worker", once the hello is accepted
    worker_id: Optional[str] = None
    last_heartbeat: Optional[dict] = None  # a worker's last HEARTBEAT body
    scope: Optional[tuple[str, int]] = None  # (job id, attempt) for a job's own connection
    watching: set  # run ids whose changes are pushed here (WATCH_RUN)
    factory: "MasterFactory"
    backpressure = True
    authenticated = False  # a hello with the cluster token (or a job's) was accepted
    _hello_call = None
    _buffered = 0  # bytes of this connection counted in the factory's pre-auth buffer

    def connectionMade(self) -> None:
        super().connectionMade()
        self.watching = set()
        mc = self.master.config.master
        decoder = self._decoder
        decoder.max_body = min(mc.preauth_frame_bytes, mc.max_frame_bytes)
        decoder.limit_note = " before HELLO (master.preauth_frame_bytes)"
        decoder.max_text_body = mc.text_frame_bytes
        decoder.text_limit_note = " (master.text_frame_bytes)"
        decoder.text_gate = self._text_gate
        if self.factory.admit(self):
            self._hello_call = self._clock().callLater(mc.hello_timeout, self._hello_expired)

    # -- limits before the hello -------------------------------------------------------------

    def host(self) -> str:
        try:
            return str(self.transport.getPeer().host)
        except Exception:
            return "?"

    def note(self, kind: str, format: str, /, **fields: Any) -> bool:
        """Warn about this peer, once per peer and kind per episode (titan/limits.py)."""
        return self.factory.note(self.host(), kind, format, peer=self._peer(), **fields)

    def _text_gate(self, opcode: int, length: int) -> Optional[str]:
        """A text frame over the pre-auth limit may have up to master.text_frame_bytes only
        where text frames are served to this peer."""
        if self.authenticated:
            return None
        return self.text_frames.refusal(self)

    def dataReceived(self, data: bytes) -> None:
        super().dataReceived(data)
        if not self.authenticated and self.connected:
            self._count_buffer()

    def _count_buffer(self) -> None:
        """Keep the bytes buffered by connections not yet authenticated within
        master.preauth_buffer_bytes in all: a large text request that would pass it is
        refused (smaller frames always fit: they are bounded per connection)."""
        now = self._decoder.buffered
        total = self.factory.count_buffer(now - self._buffered)
        self._buffered = now
        limit = self.master.config.master.preauth_buffer_bytes
        if total > limit and now > self._decoder.max_body:
            self.note("busy_buffer", "refused {peer}: unauthenticated requests being read "
                      "hold {total} bytes, over master.preauth_buffer_bytes", total=total)
            self.send_text(Op.ERROR, f"ERROR: the master is reading {total} bytes of "
                                     "unauthenticated requests, over its limit "
                                     "(master.preauth_buffer_bytes): try again later")
            self._uncount_buffer()
            self.abort()

    def _uncount_buffer(self) -> None:
        if self._buffered:
            self.factory.count_buffer(-self._buffered)
            self._buffered = 0

    def _hello_expired(self) -> None:
        self._hello_call = None
        if self.authenticated or not self.connected:
            return
        timeout = self.master.config.master.hello_timeout
        self.note("hello_timeout", "closing {peer}: no HELLO within {timeout:g} s",
                  timeout=timeout)
        self.send_error(None, "hello_timeout", f"no HELLO within {timeout:g} s of connecting "
                                               "(master.hello_timeout)")
        self.close()

    def _cancel_hello_timer(self) -> None:
        if self._hello_call is not None:
            if self._hello_call.active():
                self._hello_call.cancel()
            self._hello_call = None

    def _authenticate(self, kind: str) -> None:
        """The hello is good: count this connection as a `client` or `worker`, lift the
        pre-auth limits (RemoteError "busy" if the clients' share is full)."""
        try:
            self.factory.limits.authenticated(self, kind)
        except Refused as e:
            self.note("busy_clients", "refused {peer}: {why}", why=e.message)
            raise RemoteError(e.code, e.message, close=True) from None
        if self.authenticated:
            return
        self.authenticated = True
        self._cancel_hello_timer()
        self._uncount_buffer()
        mc = self.master.config.master
        self._decoder.max_body = mc.max_frame_bytes
        self._decoder.limit_note = " (master.max_frame_bytes)"

    def admit_frame(self, frame) -> bool:
        # Before the hello nothing else is even decoded (its rid is read to answer it).
        if self.role is None and frame.opcode not in HELLOS:
            self.send_error(rid_of(frame.body), "hello_required",
                            f"{op_name(frame.opcode)} before HELLO: say HELLO with the cluster "
                            "token first")
            self.close()
            return False
        return True

    def log_frame_error(self, problem) -> None:
        self.note(f"bad_frame:{problem.code}", "bad frame from {peer}: {message}",
                  message=problem.message)

    def send_buffer_stalled(self, seconds: float) -> None:
        self.note("stalled", "closing {peer}: its replies went unread for {seconds:g} s "
                  "(master.send_stall_timeout)", seconds=seconds)

    def send_buffer_full(self, size: int) -> None:
        self.note("send_buffer", "closing {peer}: {size} bytes unsent, over "
                  "master.max_send_buffer_bytes", size=size)

    # -- the hello gate --------------------------------------------------------------------

    def request_received(self, opcode: int, rid: Any, body: dict) -> None:
        if self._admitted(opcode, rid):
            super().request_received(opcode, rid, body)

    def push_received(self, opcode: int, body: dict) -> None:
        if self._admitted(opcode, None):
            super().push_received(opcode, body)

    def text_frame_received(self, frame) -> None:
        # The reference implementation's text requests (docs/compat.md): one per connection.
        # It has arrived whole: the hello deadline is over (a reply left unread is closed
        # as any other, after master.send_stall_timeout), and the connection is no longer
        # pending (a flood of new connections must not evict a request being answered).
        self._cancel_hello_timer()
        if not self.authenticated:
            try:
                self.factory.limits.authenticated(self, "client")
            except Refused as e:
                self.note("busy_clients", "refused {peer}: {why}", why=e.message)
                self.send_text(Op.ERROR, f"ERROR: {e.message}")
                self.close()
                return
        self.text_frames.frame_received(self, frame)

    def _admitted(self, opcode: int, rid: Any) -> bool:
        if self.role is None and opcode not in HELLOS:
            self.send_error(rid, "hello_required",
                            f"{op_name(opcode)} before HELLO: say HELLO with the cluster token first")
            self.close()
            return False
        if opcode in WORKER_OPS and self.role != "worker":
            self.send_error(rid, "not_a_worker", f"{op_name(opcode)} is for registered workers")
            return False
        if self.scope is not None:
            try:  # what a job's token may do, while its attempt runs, and no longer
                self.master.admit(self.caller, op_name(opcode))
            except RemoteError as e:
                self.send_error(rid, e.code, e.message)
                if e.close:
                    self.transport.loseConnection()
                return False
        return True

    def _send_reply(self, rid: Any, result: Any) -> defer.Deferred:
        # Whatever a reply reports is as durable as the fsync policy promises first
        # (MasterService.settled; while the log cannot store records, reply_ready says
        # why reads go at once).  Returned, so that a reply that fails to go out is
        # answered as a failure, as RpcProtocol does for one sent at once.
        send = super()._send_reply
        return self.master.reply_ready().addCallback(lambda _: send(rid, result))

    def _send_failure(self, rid: Any, opcode: int, failure) -> None:
        # What the event log or the store could not do is said as such (one log line per
        # outage, by whoever noticed it), not as an "internal" error with a traceback.
        remote = self.master.explain_failure(failure)
        if remote is not None:
            failure = Failure(remote)
        super()._send_failure(rid, opcode, failure)

    def _wrong_token(self) -> None:
        self.note("wrong_token", "refused {peer}: wrong cluster token")

    def op_HELLO(self, body: dict) -> dict:
        try:
            caller = self.master.authenticate(body.get("token"), self._via)
        except WrongToken:
            self._wrong_token()
            raise
        scope = caller.scope
        self.caller = caller
        if scope is not None:
            self.scope = scope
            self.master.job_connected(self)
        if body.get("as") == "worker" and scope is None:
            # A worker whose REGISTER is larger than the pre-auth limit says HELLO first;
            # it counts as a worker (room is kept for workers) and may only REGISTER next.
            self._authenticate("worker")
            return {"server": "titan-master", "version": __version__, "job_id": None}
        self._authenticate("client")
        self.role = "client"
        return {"server": "titan-master", "version": __version__,
                "job_id": scope[0] if scope else None}

    def op_REGISTER(self, body: dict) -> dict:
        try:
            self.master.check_cluster_token(body.get("token"))
        except WrongToken:
            self._wrong_token()
            raise
        self._authenticate("worker")
        self.role = "worker"
        self.caller = Caller(None, self._via)
        self.worker_id = _require(body, "worker_id")
        return self.master.register_worker(self, body)

    # -- workers ---------------------------------------------------------------------------

    def op_HEARTBEAT(self, body: dict) -> None:
        self.last_heartbeat = body  # its figures, read by /metrics (titan/master/metrics.py)
        self.master.heartbeat(self.worker_id)

    def op_JOB_STARTED(self, body: dict) -> None:
        self.master.job_started(self.worker_id, _require(body, "job_id"),
                                _require(body, "attempt", int))

    def op_LOG_BATCH(self, body: dict) -> None:
        attempt = body.get("attempt")
        self.master.job_logs(_require(body, "job_id"), body.get("chunks") or (),
                             attempt if isinstance(attempt, int) else 0)

    def op_SERVICE_STATUS(self, body: dict) -> None:
        status = body.get("status")
        if isinstance(status, dict):
            self.master.service_status(self.worker_id, _require(body, "job_id"),
                                       _require(body, "attempt", int), status)

    def op_RESTART_SERVICE(self, body: dict) -> dict:
        return self.master.restart_service(self.caller, _require(body, "name"))

    def op_LIST_SERVICES(self, body: dict) -> dict:
        return {"services": self.master.list_services(self.caller, bool(body.get("all")))}

    def op_JOB_COMPLETE(self, body: dict):
        return self.master.job_complete(self.worker_id, _require(body, "job_id"),
                                        _require(body, "attempt", int),
                                        body.get("exit_code"), body.get("reason"))

    # -- clients ---------------------------------------------------------------------------

    def op_SUBMIT_JOB(self, body: dict):
        return self.master.submit(self.caller, body)

    def op_SUBMIT_JOBS(self, body: dict):
        return self.master.submit_many(self.caller, body.get("jobs"))

    def op_WAIT_JOBS(self, body: dict):
        return self.master.wait_jobs(self.caller, body.get("job_ids"), body.get("timeout"))

    def op_SUBMIT_DAG(self, body: dict) -> dict:
        return self.master.submit_dag(self.caller, body, self if body.get("watch") else None)

    def op_ADD_JOBS(self, body: dict) -> dict:
        return self.master.add_jobs(self.caller, body.get("run_id"), body.get("jobs"),
                                    body.get("by"))

    def op_RUN_INFO(self, body: dict) -> dict:
        return self.master.run_info(self.caller, _require(body, "run_id"),
                                    bool(body.get("jobs", True)))

    def op_WAIT_RUN(self, body: dict):
        return self.master.wait_run(self.caller, _require(body, "run_id"),
                                    int(body.get("version") or 0), body.get("timeout"),
                                    bool(body.get("jobs", False)))

    def op_WATCH_RUN(self, body: dict) -> dict:
        return self.master.watch_run(self.caller, self, _require(body, "run_id"),
                                     bool(body.get("jobs", True)))

    def op_UNWATCH_RUN(self, body: dict) -> dict:
        run_id = _require(body, "run_id")
        self.master.unwatch_run(self.caller, self, run_id)
        return {"run_id": run_id}

    def op_LIST_RUNS(self, body: dict) -> dict:
        return {"runs": self.master.list_runs(self.caller, body.get("agent_run_id"),
                                              int(body.get("limit") or 100))}

    def op_DECIDE_GATE(self, body: dict) -> dict:
        # `by` is the name the client gives; the caller's `via` is what the master saw.
        return self.master.decide_gate(self.caller, body.get("job_id"), body.get("approved"),
                                       str(body.get("by") or "someone"),
                                       str(body.get("comment") or ""))

    def _via(self) -> str:
        """The credential and the peer of this connection, for the record of a decision."""
        from titan.master.peer import describe_uid, peer_uid
        uid = peer_uid(self.transport)
        return f"cluster token from {self.host()}" + (f", {describe_uid(uid)}"
                                                      if uid is not None else "")

    def op_SET_RESULT(self, body: dict) -> dict:
        return self.master.set_result(self.caller, body.get("job_id"), body.get("value"))

    def op_GET_RESULT(self, body: dict) -> dict:
        return self.master.get_result(self.caller, _require(body, "job_id"))

    def op_LIST_SCHEDULES(self, body: dict) -> dict:
        return {"schedules": self.master.list_schedules(self.caller)}

    def op_REMOVE_SCHEDULE(self, body: dict) -> dict:
        return self.master.remove_schedule(self.caller, _require(body, "schedule_id"))

    # -- the store, through the master -----------------------------------------------------

    def op_KV_SET(self, body: dict):
        return self.master.kv_set(self.caller, body.get("key"), body.get("value"),
                                  ex=body.get("ex")).addCallback(lambda _: {})

    def op_KV_GET(self, body: dict):
        return self.master.kv_get(self.caller, body.get("key")).addCallback(
            lambda v: {"value": v})

    def op_KV_SADD(self, body: dict):
        return self.master.kv_sadd(self.caller, body.get("key"), body.get("member")
                                   ).addCallback(lambda n: {"added": n})

    def op_KV_SMEMBERS(self, body: dict):
        return self.master.kv_smembers(self.caller, body.get("key")).addCallback(
            lambda members: {"members": sorted(members)})

    def op_PUBLISH(self, body: dict):
        return self.master.publish(self.caller, body.get("channel"), body.get("message")
                                   ).addCallback(lambda n: {"receivers": n})

    def op_SUBSCRIBE(self, body: dict):
        channel = _require(body, "channel")
        pattern = bool(body.get("pattern"))
        if not hasattr(self, "_subscriptions"):
            self._subscriptions = {}
        if (channel, pattern) in self._subscriptions:
            return {"channel": channel}

        def deliver(ch, message, _pattern=channel if pattern else None):
            if isinstance(ch, bytes):
                ch = ch.decode("utf-8", "replace")  # a channel is a name; the message is data
            if self.connected:
                self.push(Op.MESSAGE, {"channel": ch, "message": message,
                                       "pattern": _pattern})

        d = self.master.subscribe(self.caller, channel, deliver, pattern)

        def subscribed(subscription):
            self._subscriptions[(channel, pattern)] = subscription
            return {"channel": channel}
        return d.addCallback(subscribed)

    def op_UNSUBSCRIBE(self, body: dict) -> dict:
        key = (_require(body, "channel"), bool(body.get("pattern")))
        subscription = getattr(self, "_subscriptions", {}).pop(key, None)
        if subscription is not None:
            subscription.unsubscribe()
        return {"channel": key[0]}

    def op_JOB_INFO(self, body: dict) -> dict:
        return self.master.job_info(self.caller, _require(body, "job_id"))

    def op_GET_JOB_STATUS(self, body: dict) -> dict:
        return {"state": self.master.job_info(self.caller, _require(body, "job_id"))["state"]}

    def op_WAIT_JOB(self, body: dict):
        return self.master.wait_job(self.caller, _require(body, "job_id"), body.get("timeout"))

    def op_GET_LOGS(self, body: dict):
        return self.master.read_logs(self.caller, _require(body, "job_id"),
                                     body.get("offset") or 0, bool(body.get("wait")))

    def op_CANCEL_JOB(self, body: dict) -> dict:
        return self.master.cancel(self.caller, _require(body, "job_id"))

    def op_LIST_WORKERS(self, body: dict) -> dict:
        # `titan workers` says them every time.
        return {"workers": self.master.list_workers(self.caller),
                "warnings": self.master.warnings(self.caller)}

    def op_START_WORKER(self, body: dict) -> dict:
        return self.master.start_worker(self.caller, body.get("tags"), body.get("slots"),
                                        body.get("name"), by="cli")

    def op_DRAIN_WORKER(self, body: dict):
        return self.master.drain_worker(self.caller, body.get("name"))

    def op_LIST_JOBS(self, body: dict) -> dict:
        limit = body.get("limit")
        return {"jobs": self.master.list_jobs(self.caller, body.get("state"),
                                              100 if limit is None else limit)}

    def op_STATS_JSON(self, body: dict) -> dict:
        return self.master.stats(self.caller)

    def op_RELOAD_CONFIG(self, body: dict) -> dict:
        return self.master.reload_config(self.caller)

    def connectionLost(self, reason=None) -> None:
        super().connectionLost(reason)
        self._cancel_hello_timer()
        self._uncount_buffer()
        self.factory.limits.gone(self)
        if self.watching:
            self.master.unwatch_run(self.caller, self)
        for subscription in getattr(self, "_subscriptions", {}).values():
            subscription.unsubscribe()
        if self.role == "worker":
            self.master.worker_gone(self)
        if self.scope is not None:
            self.master.job_disconnected(self)


class MasterFactory(Factory):
    protocol = MasterProtocol
    noisy = False
    log = Logger()
    fd_limit: tuple[int, int] = (-1, -1)  # (soft, hard) RLIMIT_NOFILE once listening

    def __init__(self, master: MasterApi, text_frames: TextFramesFace) -> None:
        self.master = master
        self.text_frames = text_frames
        self.limits = self._limits(-1)
        self.episodes = EpisodeLog(self.log)
        self.preauth_buffered = 0
        self._sweeper: Optional[LoopingCall] = None

    def _limits(self, fd_soft_limit: int) -> ConnectionLimits:
        mc = self.master.config.master
        return ConnectionLimits(connection_cap(mc.max_connections, fd_soft_limit),
                                mc.max_pending_connections, mc.max_pending_per_host,
                                mc.worker_reserve)

    def startFactory(self) -> None:
        # As many descriptors as the system lets this process have, and connections kept
        # below them: a flood of connections must not leave none for files and workers.
        self.fd_limit = raise_fd_limit()
        self.limits = self._limits(self.fd_limit[0])
        mc = self.master.config.master
        if self.limits.max_connections < mc.max_connections:
            self.log.warn("at most {n} connections (master.max_connections is {configured}, "
                          "but this process may open {soft} files)",
                          n=self.limits.max_connections, configured=mc.max_connections,
                          soft=self.fd_limit[0])
        self._sweeper = LoopingCall(lambda: self.episodes.sweep(self.master.now()))
        self._sweeper.clock = self.master.reactor
        self._sweeper.start(self.episodes.quiet, now=False)

    def stopFactory(self) -> None:
        if self._sweeper is not None and self._sweeper.running:
            self._sweeper.stop()
        self.episodes.sweep(float("inf"))

    def note(self, host: str, kind: str, format: str, /, **fields: Any) -> bool:
        return self.episodes.note(self.master.now(), host, kind, format, **fields)

    def count_buffer(self, delta: int) -> int:
        self.preauth_buffered += delta
        return self.preauth_buffered

    def admit(self, conn: MasterProtocol) -> bool:
        """Count a new connection; close the pending ones it evicts, or itself if there is
        no room.  False if it was refused."""
        host = conn.host()
        try:
            evicted = self.limits.connected(conn, host)
        except Refused as e:
            self.note(host, "refused", "refused a connection from {host}: {why}", host=host,
                      why=e.message)
            conn.send_error(None, e.code, e.message)
            conn.close()
            return False
        for old in evicted:
            old_host = old.host()
            mine = old_host == host
            why = (f"{self.limits.max_pending_per_host} newer connections from {old_host} "
                   "have not said HELLO either (master.max_pending_per_host)" if mine else
                   "the master holds as many connections without a HELLO as it may "
                   "(master.max_pending_connections, master.max_connections)")
            self.note(old_host, "evicted", "closing the oldest connection from {host} that "
                      "has not said HELLO: {why}", host=old_host, why=why)
            old._cancel_hello_timer()
            old.send_error(None, "evicted", f"closed before its HELLO: {why}")
            old.close()
        return True

    def buildProtocol(self, addr):
        p = MasterProtocol()
        p.factory = self
        p.master = self.master
        p.text_frames = self.text_frames
        p.clock = self.master.reactor
        p.max_body = self.master.config.master.max_frame_bytes
        mc = self.master.config.master
        p.stall_timeout = mc.send_stall_timeout
        p.max_send_buffer = mc.max_send_buffer_bytes
        return p
