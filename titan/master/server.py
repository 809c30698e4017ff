"""The master's side of a TITAN_PROTO connection: hello first, then clients' and workers' ops."""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, Optional

from twisted.internet import defer
from twisted.internet.protocol import Factory

from titan import __version__
from titan.auth import parse_job_token, token_matches
from titan.core import events as ev
from titan.protocols.opcodes import Op, op_name
from titan.protocols.rpc import RemoteError, RpcProtocol

if TYPE_CHECKING:
    from titan.master.service import MasterService

HELLOS = (Op.HELLO, Op.REGISTER)
WORKER_OPS = frozenset({Op.HEARTBEAT, Op.JOB_STARTED, Op.JOB_COMPLETE, Op.LOG_BATCH,
                        Op.SERVICE_STATUS})
# What a job, holding its own job-scoped token, may not do: decide gates (a job approving
# its own gate would defeat the point), cancel work, or drop schedules.
NOT_FOR_JOBS = frozenset({Op.DECIDE_GATE, Op.CANCEL_JOB, Op.REMOVE_SCHEDULE})


def _require(body: dict, key: str, kind: type = str) -> Any:
    value = body.get(key)
    if not isinstance(value, kind) or isinstance(value, bool) and kind is not bool:
        raise RemoteError("bad_request", f"{key!r} is required ({kind.__name__})")
    return value


# The reference's gate keys in the store (docs/compat.md): a job's token may not write them.
HITL_PREFIX = "titan:hitl:"


class MasterProtocol(RpcProtocol):
    master: "MasterService"
    role: Optional[str] = None  # "client" or "worker", once the hello is accepted
    worker_id: Optional[str] = None
    scope: Optional[tuple[str, int]] = None  # (job id, attempt) for a job's own connection
    watching: set  # run ids whose changes are pushed here (WATCH_RUN)

    def connectionMade(self) -> None:
        super().connectionMade()
        self.watching = set()

    # -- the hello gate --------------------------------------------------------------------

    def request_received(self, opcode: int, rid: Any, body: dict) -> None:
        if self._admitted(opcode, rid):
            super().request_received(opcode, rid, body)

    def push_received(self, opcode: int, body: dict) -> None:
        if self._admitted(opcode, None):
            super().push_received(opcode, body)

    def text_frame_received(self, frame) -> None:
        # The reference implementation's text requests (docs/compat.md): one per connection.
        self.master.legacy.frame_received(self, frame)

    def _admitted(self, opcode: int, rid: Any) -> bool:
        if self.role is None and opcode not in HELLOS:
            self.send_error(rid, "hello_required",
                            f"{op_name(opcode)} before HELLO: say HELLO with the cluster token first")
            self.transport.loseConnection()
            return False
        if opcode in WORKER_OPS and self.role != "worker":
            self.send_error(rid, "not_a_worker", f"{op_name(opcode)} is for registered workers")
            return False
        if self.scope is not None and opcode in NOT_FOR_JOBS:
            self.send_error(rid, "forbidden", f"a job's own token may not {op_name(opcode)}")
            return False
        return True

    def _send_reply(self, rid: Any, result: Any) -> defer.Deferred:
        # Whatever a reply reports is as durable as the fsync policy promises first
        # (MasterService.settled).  Returned, so that a reply that fails to go out is
        # answered as a failure, as RpcProtocol does for one sent at once.
        send = super()._send_reply
        return self.master.settled().addCallback(lambda _: send(rid, result))

    def _check_token(self, body: dict) -> None:
        if not token_matches(self.master.token, body.get("token")):
            self.master.log.warn("refused {peer}: wrong cluster token", peer=self._peer())
            raise RemoteError("auth", "wrong cluster token", close=True)

    def op_HELLO(self, body: dict) -> dict:
        scope = parse_job_token(self.master.token, body.get("token"))
        if scope is not None:
            self.master.check_scope(scope)
            self.scope = scope
        else:
            self._check_token(body)
        self.role = "client"
        return {"server": "titan-master", "version": __version__,
                "job_id": scope[0] if scope else None}

    def op_REGISTER(self, body: dict) -> dict:
        self._check_token(body)
        self.role = "worker"
        self.worker_id = _require(body, "worker_id")
        self.master.worker_registered(self, body)
        return {"heartbeat_interval": self.master.config.master.heartbeat_interval}

    # -- workers ---------------------------------------------------------------------------

    def op_HEARTBEAT(self, body: dict) -> None:
        self.master.handle(ev.WorkerHeartbeat(self.worker_id))

    def op_JOB_STARTED(self, body: dict) -> None:
        self.master.handle(ev.JobStarted(_require(body, "job_id"), self.worker_id,
                                         _require(body, "attempt", int)))

    def op_LOG_BATCH(self, body: dict) -> None:
        self.master.logs_received(_require(body, "job_id"), body.get("chunks") or ())

    def op_SERVICE_STATUS(self, body: dict) -> None:
        status = body.get("status")
        if isinstance(status, dict):
            self.master.handle(ev.ServiceReported(_require(body, "job_id"), self.worker_id,
                                                  _require(body, "attempt", int), status))

    def op_RESTART_SERVICE(self, body: dict) -> dict:
        return self.master.restart_service(_require(body, "name"))

    def op_LIST_SERVICES(self, body: dict) -> dict:
        return {"services": self.master.list_services(bool(body.get("all")))}

    def op_JOB_COMPLETE(self, body: dict):
        # The worker keeps its report until this answer, which waits until it is recorded.
        durable = self.master.handle(ev.JobFinished(
            _require(body, "job_id"), self.worker_id, _require(body, "attempt", int),
            body.get("exit_code"), body.get("reason")))
        return self.master.after(durable, {})

    # -- clients ---------------------------------------------------------------------------

    def op_SUBMIT_JOB(self, body: dict):
        return self.master.submit(body).addCallback(lambda job_id: {"job_id": job_id})

    def op_SUBMIT_JOBS(self, body: dict):
        return self.master.submit_many(body.get("jobs"))

    def op_WAIT_JOBS(self, body: dict):
        return self.master.wait_jobs(body.get("job_ids"), body.get("timeout"))

    def op_SUBMIT_DAG(self, body: dict) -> dict:
        return self.master.submit_dag(body, self if body.get("watch") else None)

    def op_ADD_JOBS(self, body: dict) -> dict:
        run_id = body.get("run_id")
        if self.scope is not None:
            self.master.check_scope(self.scope)
            own = self.master.scheduler.jobs[self.scope[0]].run_id
            if run_id not in (None, own):
                raise RemoteError("forbidden", f"a job may add jobs to its own run ({own}) only")
            run_id = own
            by = self.scope[0]
        else:
            by = str(body.get("by") or "client")
        if not isinstance(run_id, str):
            raise RemoteError("bad_request", "'run_id' is required (str)")
        return self.master.add_jobs(run_id, body.get("jobs"), by)

    def op_RUN_INFO(self, body: dict) -> dict:
        return self.master.run_info(_require(body, "run_id"), bool(body.get("jobs", True)))

    def op_WAIT_RUN(self, body: dict):
        return self.master.wait_run(_require(body, "run_id"), int(body.get("version") or 0),
                                    body.get("timeout"), bool(body.get("jobs", False)))

    def op_WATCH_RUN(self, body: dict) -> dict:
        return self.master.watch_run(self, _require(body, "run_id"), bool(body.get("jobs", True)))

    def op_UNWATCH_RUN(self, body: dict) -> dict:
        run_id = _require(body, "run_id")
        self.master.unwatch_run(self, run_id)
        return {"run_id": run_id}

    def op_LIST_RUNS(self, body: dict) -> dict:
        return {"runs": self.master.list_runs(body.get("agent_run_id"),
                                              int(body.get("limit") or 100))}

    def op_DECIDE_GATE(self, body: dict) -> dict:
        approved = body.get("approved")
        if not isinstance(approved, bool):
            raise RemoteError("bad_request", "'approved' is required (true or false)")
        # `by` is the name the client gives; `via` is what the master saw (jobs' tokens
        # never get here: NOT_FOR_JOBS).
        return self.master.decide_gate(_require(body, "job_id"), approved,
                                       str(body.get("by") or "someone"),
                                       str(body.get("comment") or ""), via=self._via())

    def _via(self) -> str:
        """The credential and the peer of this connection, for the record of a decision."""
        from titan.master.peer import describe_uid, peer_uid
        try:
            host = self.transport.getPeer().host
        except Exception:
            host = "?"
        uid = peer_uid(self.transport)
        return f"cluster token from {host}" + (f", {describe_uid(uid)}" if uid is not None
                                               else "")

    def op_SET_RESULT(self, body: dict) -> dict:
        job_id = body.get("job_id")
        if self.scope is not None:
            self.master.check_scope(self.scope)
            if job_id not in (None, self.scope[0]):
                raise RemoteError("forbidden", "a job may set its own result only")
            job_id = self.scope[0]
        if not isinstance(job_id, str):
            raise RemoteError("bad_request", "'job_id' is required (str)")
        return self.master.set_result(job_id, body.get("value"))

    def op_GET_RESULT(self, body: dict) -> dict:
        return self.master.get_result(_require(body, "job_id"))

    def op_LIST_SCHEDULES(self, body: dict) -> dict:
        return {"schedules": self.master.list_schedules()}

    def op_REMOVE_SCHEDULE(self, body: dict) -> dict:
        return self.master.remove_schedule(_require(body, "schedule_id"))

    # -- the store, through the master -----------------------------------------------------

    def _store(self):
        if self.master.store is None:
            raise RemoteError("no_store", "the store is not configured on this master")
        return self.master.store

    def _writable(self, op: str, key: str) -> str:
        """A job's token may not write the gate keys (`titan:hitl:*`): a job must not decide
        a gate by any path (docs/security.md)."""
        if self.scope is not None and key.startswith(HITL_PREFIX):
            raise RemoteError("forbidden", f"a job's own token may not {op} {key!r}: keys "
                                           f"under {HITL_PREFIX} belong to approval gates")
        return key

    def op_KV_SET(self, body: dict):
        value = body.get("value")
        if not isinstance(value, (bytes, str)):
            raise RemoteError("bad_request", "'value' is required (bytes or str)")
        ex = body.get("ex")
        key = self._writable("KV_SET", _require(body, "key"))
        if key.startswith(HITL_PREFIX):
            self.master.legacy.note_writer(key, value, f"a KV_SET with the {self._via()}")
        return self._store().set(key, value, ex=ex).addCallback(lambda _: {})

    def op_KV_GET(self, body: dict):
        return self._store().get(_require(body, "key")).addCallback(lambda v: {"value": v})

    def op_KV_SADD(self, body: dict):
        member = body.get("member")
        if not isinstance(member, (bytes, str)):
            raise RemoteError("bad_request", "'member' is required (bytes or str)")
        return self._store().sadd(self._writable("KV_SADD", _require(body, "key")),
                                  member).addCallback(
            lambda n: {"added": n})

    def op_KV_SMEMBERS(self, body: dict):
        return self._store().smembers(_require(body, "key")).addCallback(
            lambda members: {"members": sorted(members)})

    def op_PUBLISH(self, body: dict):
        message = body.get("message")
        if not isinstance(message, (bytes, str)):
            raise RemoteError("bad_request", "'message' is required (bytes or str)")
        return self._store().publish(_require(body, "channel"), message).addCallback(
            lambda n: {"receivers": n})

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

        d = self._store().subscribe(channel, deliver, pattern=pattern)

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
        return self.master.job_info(_require(body, "job_id"))

    def op_GET_JOB_STATUS(self, body: dict) -> dict:
        return {"state": self.master.job_info(_require(body, "job_id"))["state"]}

    def op_WAIT_JOB(self, body: dict):
        return self.master.wait_job(_require(body, "job_id"), body.get("timeout"))

    def op_GET_LOGS(self, body: dict):
        return self.master.read_logs(_require(body, "job_id"), body.get("offset") or 0,
                                     bool(body.get("wait")))

    def op_CANCEL_JOB(self, body: dict) -> dict:
        return self.master.cancel(_require(body, "job_id"))

    def op_LIST_WORKERS(self, body: dict) -> dict:
        warning = self.master.legacy.warning()  # `titan workers` shows it
        return {"workers": self.master.list_workers(), "warnings": [warning] if warning else []}

    def op_LIST_JOBS(self, body: dict) -> dict:
        return {"jobs": self.master.list_jobs(body.get("state"), body.get("limit") or 100)}

    def op_STATS_JSON(self, body: dict) -> dict:
        return self.master.stats()

    def connectionLost(self, reason=None) -> None:
        super().connectionLost(reason)
        if self.watching:
            self.master.unwatch_run(self)
        for subscription in getattr(self, "_subscriptions", {}).values():
            subscription.unsubscribe()
        if self.role == "worker":
            self.master.worker_gone(self)


class MasterFactory(Factory):
    protocol = MasterProtocol

    def __init__(self, master: "MasterService") -> None:
        self.master = master

    def buildProtocol(self, addr):
        p = MasterProtocol()
        p.factory = self
        p.master = self.master
        p.max_body = self.master.config.master.max_frame_bytes
        return p
