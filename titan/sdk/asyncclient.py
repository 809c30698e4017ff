"""The Twisted client: the same operations as `Client`, on one persistent connection with
many requests in flight.

    client = await AsyncClient.connect(reactor)
    job_id = await client.submit(["/bin/true"])
    job = await client.wait(job_id)
"""
from __future__ import annotations

from typing import Any, Optional, Sequence, Union

from twisted.internet import defer
from twisted.internet.endpoints import HostnameEndpoint, connectProtocol

from titan.errors import RemoteError, TitanError
from titan.protocols.opcodes import Op
from titan.protocols.rpc import RpcProtocol
from titan.sdk.client import TERMINAL, submit_body
from titan.sdk.connection import cluster_token, master_address


class AsyncClient:
    def __init__(self, protocol: RpcProtocol) -> None:
        self.protocol = protocol

    @classmethod
    async def connect(cls, reactor, master: Optional[str] = None,
                      token: Optional[str] = None) -> "AsyncClient":
        host, port = master_address(master)
        token = cluster_token(token)
        if not token:
            raise TitanError("no cluster token: pass token=, or set TITAN_TOKEN")
        proto = RpcProtocol()
        proto.clock = reactor
        try:
            await connectProtocol(HostnameEndpoint(reactor, host, port), proto)
        except Exception as e:
            raise TitanError(f"cannot reach the master at {host}:{port}: {e}") from None
        client = cls(proto)
        try:
            await client.call(Op.HELLO, {"token": token, "client": "titan-async"})
        except RemoteError as e:
            raise TitanError(f"the master at {host}:{port} refused this client: "
                             f"{e.message}") from None
        return client

    def call(self, opcode: int, body: Optional[dict] = None,
             timeout: Optional[float] = -1) -> defer.Deferred:
        return self.protocol.call(opcode, body or {}, timeout)

    def close(self) -> None:
        self.protocol.transport.loseConnection()

    async def submit(self, command: Union[str, Sequence[str]], **options: Any) -> str:
        return (await self.call(Op.SUBMIT_JOB, submit_body(command, **options)))["job_id"]

    async def job(self, job_id: str) -> dict:
        return await self.call(Op.JOB_INFO, {"job_id": job_id})

    async def wait(self, job_id: str) -> dict:
        while True:
            job = await self.call(Op.WAIT_JOB, {"job_id": job_id}, timeout=None)
            if job["state"] in TERMINAL:
                return job

    async def cancel(self, job_id: str) -> dict:
        return await self.call(Op.CANCEL_JOB, {"job_id": job_id})

    async def workers(self) -> list:
        return (await self.call(Op.LIST_WORKERS))["workers"]
