"""The master's side of a TITAN_PROTO connection: hello first, then clients' and workers' ops."""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, Optional

from twisted.internet.protocol import Factory

from titan import __version__
from titan.auth import token_matches
from titan.core import events as ev
from titan.protocols.opcodes import Op, op_name
from titan.protocols.rpc import RemoteError, RpcProtocol

if TYPE_CHECKING:
    from titan.master.service import MasterService

HELLOS = (Op.HELLO, Op.REGISTER)
WORKER_OPS = frozenset({Op.HEARTBEAT, Op.JOB_STARTED, Op.JOB_COMPLETE, Op.LOG_BATCH})


def _require(body: dict, key: str, kind: type = str) -> Any:
    value = body.get(key)
    if not isinstance(value, kind) or isinstance(value, bool) and kind is not bool:
        raise RemoteError("bad_request", f"{key!r} is required ({kind.__name__})")
    return value


class MasterProtocol(RpcProtocol):
    master: "MasterService"
    role: Optional[str] = None  # "client" or "worker", once the hello is accepted
    worker_id: Optional[str] = None

    # -- the hello gate --------------------------------------------------------------------

    def request_received(self, opcode: int, rid: Any, body: dict) -> None:
        if self._admitted(opcode, rid):
            super().request_received(opcode, rid, body)

    def push_received(self, opcode: int, body: dict) -> None:
        if self._admitted(opcode, None):
            super().push_received(opcode, body)

    def _admitted(self, opcode: int, rid: Any) -> bool:
        if self.role is None and opcode not in HELLOS:
            self.send_error(rid, "hello_required",
                            f"{op_name(opcode)} before HELLO: say HELLO with the cluster token first")
            self.transport.loseConnection()
            return False
        if opcode in WORKER_OPS and self.role != "worker":
            self.send_error(rid, "not_a_worker", f"{op_name(opcode)} is for registered workers")
            return False
        return True

    def _check_token(self, body: dict) -> None:
        if not token_matches(self.master.token, body.get("token")):
            self.master.log.warn("refused {peer}: wrong cluster token", peer=self._peer())
            raise RemoteError("auth", "wrong cluster token", close=True)

    def op_HELLO(self, body: dict) -> dict:
        self._check_token(body)
        self.role = "client"
        return {"server": "titan-master", "version": __version__}

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

    def op_JOB_COMPLETE(self, body: dict) -> dict:
        self.master.handle(ev.JobFinished(
            _require(body, "job_id"), self.worker_id, _require(body, "attempt", int),
            body.get("exit_code"), body.get("reason")))
        return {}

    # -- clients ---------------------------------------------------------------------------

    def op_SUBMIT_JOB(self, body: dict) -> dict:
        return {"job_id": self.master.submit(body)}

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
        return {"workers": self.master.list_workers()}

    def op_LIST_JOBS(self, body: dict) -> dict:
        return {"jobs": self.master.list_jobs(body.get("state"), body.get("limit") or 100)}

    def op_STATS_JSON(self, body: dict) -> dict:
        return self.master.stats()

    def connectionLost(self, reason=None) -> None:
        super().connectionLost(reason)
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
