"""The Twisted client: the same operations as `Client`, on one persistent connection with
many requests in flight.

    client = await AsyncClient.connect(reactor)
    job_id = await client.submit(["/bin/true"])
    job = await client.wait(job_id)
"""
from __future__ import annotations

from typing import Any, Callable, Iterable, Optional, Sequence, Union

from twisted.internet import defer
from twisted.internet.endpoints import HostnameEndpoint, connectProtocol

from titan.errors import RemoteError, TitanError
from titan.protocols.opcodes import Op
from titan.protocols.rpc import RpcProtocol
from titan.sdk.client import CONNECT_TIMEOUT, TERMINAL, submit_body
from titan.sdk.connection import cluster_token, master_address
from titan.sdk.watch import RunFollower, batch_bodies, check_ids, chunks, expand


class ClientProtocol(RpcProtocol):
    """A client's connection: requests, and the RUN_CHANGED pushes of watched runs."""

    def connectionMade(self) -> None:
        super().connectionMade()
        self.run_watchers: dict[str, Callable[[dict], None]] = {}

    def op_RUN_CHANGED(self, body: dict) -> None:
        watcher = self.run_watchers.get(body.get("run_id"))
        if watcher is not None:
            watcher(body)

    def connectionLost(self, reason=None) -> None:
        super().connectionLost(reason)
        watchers, self.run_watchers = self.run_watchers, {}
        for watcher in watchers.values():
            watcher(None)


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
        proto = ClientProtocol()
        proto.clock = reactor
        where = f"{host}:{port}"
        try:
            await connectProtocol(HostnameEndpoint(reactor, host, port,
                                                   timeout=CONNECT_TIMEOUT), proto)
        except Exception as e:
            raise TitanError(f"cannot reach the master at {where}: {e}") from None
        client = cls(proto)
        try:
            # A master answers the HELLO at once; waiting longer only hides a wrong address.
            hello = await client.call(Op.HELLO, {"token": token, "client": "titan-async"},
                                      timeout=CONNECT_TIMEOUT)
        except RemoteError as e:
            proto.transport.loseConnection()
            raise TitanError(f"the master at {where} refused this client: "
                             f"{e.message}") from None
        except defer.TimeoutError:
            proto.transport.abortConnection()
            raise TitanError(f"{where} is not a Titan master: no answer to the HELLO within "
                             f"{CONNECT_TIMEOUT:g} s") from None
        except Exception as e:  # the connection closed, or the answer was not a frame
            proto.transport.abortConnection()
            raise TitanError(f"{where} is not a Titan master (or not a working one): "
                             f"{e}") from None
        if not isinstance(hello, dict) or hello.get("server") != "titan-master":
            proto.transport.loseConnection()
            raise TitanError(f"{where} is not a Titan master: it answered the HELLO as "
                             f"{hello!r:.80}")
        return client

    def call(self, opcode: int, body: Optional[dict] = None,
             timeout: Optional[float] = -1) -> defer.Deferred:
        return self.protocol.call(opcode, body or {}, timeout)

    def close(self) -> None:
        self.protocol.transport.loseConnection()

    async def submit(self, command: Union[str, Sequence[str]], **options: Any) -> str:
        return (await self.call(Op.SUBMIT_JOB, submit_body(command, **options)))["job_id"]

    async def submit_many(self, jobs: Iterable[Any], **defaults: Any) -> list:
        """Many jobs in one request (per 5,000); their ids in order.  Items and `defaults`
        as for `Client.submit_many`."""
        ids: list = []
        for part in chunks(batch_bodies(jobs, defaults)):
            ids += (await self.call(Op.SUBMIT_JOBS, {"jobs": part}))["job_ids"]
        return ids

    async def map(self, template: Any, items: Iterable[Any], **defaults: Any) -> list:
        """One job per item (see `Client.map` for the template); their ids in order."""
        return await self.submit_many([expand(template, item) for item in items], **defaults)

    async def wait_many(self, job_ids: Iterable[str]) -> list:
        """Every job once it has ended, in the order given."""
        ids = check_ids(job_ids)
        ended: dict = {}
        for part in chunks(ids):
            pending = part
            while pending:
                reply = await self.call(Op.WAIT_JOBS, {"job_ids": pending}, timeout=None)
                ended.update((job["job_id"], job) for job in reply["jobs"])
                pending = reply["pending"]
        return [ended[job_id] if job_id in ended else await self.job(job_id)
                for job_id in ids]

    def watch_run(self, run_id: str, on_change: Optional[Callable[[dict], Any]] = None,
                  jobs: bool = True) -> defer.Deferred:
        """Follow a run by its changes: `on_change(run)` with the run as it is, then after
        every change (the master pushes only the jobs that moved; `run` as
        `Client.watch_run` yields it); the Deferred fires with the run once it has ended,
        or fails if the connection is lost first."""
        proto = self.protocol
        done: defer.Deferred = defer.Deferred()
        follower: list = []
        early: list = []

        def pushed(body):
            if done.called:
                return
            if body is None:
                done.errback(TitanError(f"lost the master while watching run {run_id}"))
                return
            if not follower:
                early.append(body)
                return
            if follower[0].apply(body):
                changed(follower[0])

        def changed(f):
            if on_change is not None:
                try:
                    on_change(f.run)
                except Exception:
                    proto.run_watchers.pop(run_id, None)
                    done.errback()
                    return
            if f.ended:
                proto.run_watchers.pop(run_id, None)
                done.callback(f.run)

        def snapshot(view):
            f = RunFollower(view, jobs)
            follower.append(f)
            changed(f)
            for body in early:
                if not done.called and f.apply(body):
                    changed(f)
            return done

        proto.run_watchers[run_id] = pushed
        d = self.call(Op.WATCH_RUN, {"run_id": run_id, "jobs": jobs})

        def failed(f):
            proto.run_watchers.pop(run_id, None)
            return f
        return d.addCallback(snapshot).addErrback(failed)

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
