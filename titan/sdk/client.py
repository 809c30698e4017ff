"""The blocking client: plain sockets, no reactor, so any script (a job's own, too) can use it.

    from titan.sdk import Client
    with Client() as titan:
        job = titan.submit(["python3", "-c", "print('hi')"])
        print(titan.wait(job)["state"], titan.logs(job).decode())
"""
from __future__ import annotations

import itertools
import socket
import time
from typing import Any, Iterable, Iterator, Optional, Sequence, Union

from titan.errors import RemoteError, TitanError
from titan.protocols import codec
from titan.protocols.frame import DEFAULT_MAX_BODY, Frame, FrameDecoder, FrameError, encode_frame
from titan.protocols.opcodes import Op, op_name
from titan.sdk.connection import cluster_token, master_address
from titan.sdk.watch import RunFollower, batch_bodies, check_ids, chunks, expand

TERMINAL = frozenset({"COMPLETED", "FAILED", "DEAD", "CANCELLED"})
# A master answers a connection and a HELLO at once: waiting longer only hides a wrong
# address (a port nobody answers on, or a server that is not a Titan master).
CONNECT_TIMEOUT = 5.0


class ConnectError(TitanError):
    """The master could not be reached, or the connection to it failed; `detail` says how."""

    def __init__(self, message: str, detail: Optional[str] = None) -> None:
        super().__init__(message)
        self.detail = detail or message


def _whoami() -> str:
    import getpass
    try:
        return f"{getpass.getuser()}@{socket.gethostname()}"
    except Exception:
        return "someone"


def _check_number(name: str, value: Any, kind: type, low: Optional[float] = None,
                  low_open: bool = False) -> None:
    ok_types = (int,) if kind is int else (int, float)
    if isinstance(value, bool) or not isinstance(value, ok_types):
        noun = "a whole number" if kind is int else "a number"
        raise TitanError(f"{name}={value!r}: expected {noun}")
    if value != value or value in (float("inf"), float("-inf")):
        raise TitanError(f"{name}={value!r}: expected a finite number")
    if low is not None and (value <= low if low_open else value < low):
        raise TitanError(f"{name}={value!r}: must be {'more than' if low_open else 'at least'} "
                         f"{low:g}")


def submit_body(command: Union[str, Sequence[str]], *, priority: int = 0,
                tags: Sequence[str] = (), timeout: Optional[float] = None, retries: int = 0,
                delay: float = 0.0, env: Optional[dict] = None, cwd: Optional[str] = None,
                name: Optional[str] = None) -> dict:
    """The SUBMIT_JOB request for one job (shared by the blocking and the async client).
    Numbers out of range are refused here, before anything is sent (TitanError)."""
    _check_number("priority", priority, int)
    _check_number("retries", retries, int, low=0)
    _check_number("delay", delay, float, low=0)
    if timeout is not None:
        _check_number("timeout", timeout, float, low=0, low_open=True)
    return {"command": command if isinstance(command, str) else list(command),
            "priority": priority, "tags": list(tags), "timeout": timeout,
            "retries": retries, "delay": delay, "env": env or {}, "cwd": cwd, "name": name}


class Client:
    def __init__(self, master: Optional[str] = None, token: Optional[str] = None,
                 timeout: float = 60.0, name: str = "titan-sdk") -> None:
        self.host, self.port = master_address(master)
        self.token = cluster_token(token)
        self.timeout = timeout
        self.name = name
        self._sock: Optional[socket.socket] = None
        self._decoder = FrameDecoder()
        self._frames: list[Frame] = []
        self._rids = itertools.count(1)
        self._run_pushes: list[dict] = []  # RUN_CHANGED pushes read while awaiting a reply
        self.hello: Optional[dict] = None

    # -- connection ------------------------------------------------------------------------

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None

    def _connect(self) -> None:
        where = f"{self.host}:{self.port}"
        wait = min(self.timeout, CONNECT_TIMEOUT)
        try:
            # An ASCII host (an address, a plain name) goes as bytes: a str is encoded with
            # the idna codec, whose import (stringprep, unicodedata) is ~1 ms of a command.
            host = self.host.encode("ascii") if self.host.isascii() else self.host
            sock = socket.create_connection((host, self.port), timeout=wait)
        except socket.timeout:
            raise ConnectError(f"cannot reach the master at {where}: no answer within "
                               f"{wait:g}s") from None
        except ConnectionRefusedError:
            raise ConnectError(f"cannot reach the master at {where}: connection refused "
                               f"(nothing listens there: is the master running?)") from None
        except OSError as e:
            raise ConnectError(f"cannot reach the master at {where}: "
                               f"{e.strerror or e}") from None
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._sock = sock
        self._decoder = FrameDecoder()
        self._frames = []
        self._run_pushes = []
        if not self.token:
            self.close()
            raise TitanError("no cluster token: pass --token, set TITAN_TOKEN, or run where "
                             "the master keeps it (~/.titan/master/token)")
        try:
            hello = self._call(Op.HELLO, {"token": self.token, "client": self.name},
                               timeout=wait)
        except RemoteError as e:
            self.close()
            raise TitanError(f"the master at {where} refused this client: {e.message}") from None
        except ConnectError as e:
            raise ConnectError(f"{where} is not a Titan master (or not a working one): "
                               f"{e.detail}") from None
        if not isinstance(hello, dict) or hello.get("server") != "titan-master":
            self.close()
            raise ConnectError(f"{where} is not a Titan master: it answered the HELLO as "
                               f"{hello!r:.80}")
        self.hello = hello  # the master's answer: its `version` (titan doctor says it)

    def call(self, opcode: int, body: Optional[dict] = None, timeout: Optional[float] = None) -> Any:
        if self._sock is None:
            self._connect()
        return self._call(opcode, body or {}, timeout)

    def _call(self, opcode: int, body: dict, timeout: Optional[float] = None) -> Any:
        rid = next(self._rids)
        message = dict(body)
        message["rid"] = rid
        assert self._sock is not None
        payload = codec.pack(message)
        if len(payload) > DEFAULT_MAX_BODY:
            raise TitanError(f"this {op_name(opcode)} request is {len(payload)} bytes, over "
                             f"the protocol's frame limit of {DEFAULT_MAX_BODY} bytes: send "
                             f"less in one request")
        self._sock.settimeout(timeout or self.timeout)
        try:
            try:
                self._sock.sendall(encode_frame(opcode, payload))
            except OSError:
                # The master may have refused the request (a frame over its limit) and closed
                # the connection: what it answered says why, where "Broken pipe" would not.
                refusal = self._refusal()
                if refusal is not None:
                    self.close()
                    raise RemoteError(str(refusal.get("code")), str(refusal.get("message")))
                raise
            while True:
                frame = self._next_frame()
                reply = codec.unpack(frame.body)
                if frame.opcode == Op.ERROR and reply.get("rid") is None:
                    # The master could not read a request of ours: say so, do not hang.
                    raise RemoteError(str(reply.get("code")), str(reply.get("message")))
                if reply.get("rid") != rid:
                    if frame.opcode == Op.RUN_CHANGED:
                        self._run_pushes.append(reply)  # for watch_run
                    continue  # a push, or an old reply: not ours
                if frame.opcode == Op.ERROR:
                    raise RemoteError(str(reply.get("code")), str(reply.get("message")))
                return reply.get("result")
        except socket.timeout:
            self.close()
            raise ConnectError(f"connection to the master at {self.host}:{self.port} "
                               f"failed: no answer within {timeout or self.timeout:g}s",
                               detail=f"no answer within {timeout or self.timeout:g}s") from None
        except (OSError, codec.BodyError) as e:
            self.close()
            detail = (e.strerror if isinstance(e, OSError) else None) or str(e)
            raise ConnectError(f"connection to the master at {self.host}:{self.port} "
                               f"failed: {detail}", detail=detail) from None

    def _refusal(self) -> Optional[dict]:
        """The ERROR the master sent before it closed the connection, if it sent one."""
        try:
            self._sock.settimeout(1.0)
            while True:
                data = self._sock.recv(65536)
                if not data:
                    return None
                for item in self._decoder.feed(data):
                    if isinstance(item, Frame) and item.opcode == Op.ERROR:
                        return codec.unpack(item.body)
        except (OSError, codec.BodyError):
            return None

    def _next_frame(self) -> Frame:
        while not self._frames:
            data = self._sock.recv(65536)
            if not data:
                raise ConnectionError("the connection was closed at the other end")
            for item in self._decoder.feed(data):
                if isinstance(item, FrameError):
                    raise ConnectionError(f"it sent {bytes(data[:40])!r}, which is not a "
                                          f"TITAN_PROTO frame ({item.message})")
                self._frames.append(item)
        return self._frames.pop(0)

    # -- jobs ------------------------------------------------------------------------------

    def submit(self, command: Any, *, priority: int = 0,
               tags: Sequence[str] = (), timeout: Optional[float] = None, retries: int = 0,
               delay: float = 0.0, env: Optional[dict] = None, cwd: Optional[str] = None,
               name: Optional[str] = None) -> str:
        """Queue one job (returns its id; a string command runs under `sh -c`), or a whole
        pipeline (a `Pipeline` or its spec: returns the run id)."""
        if hasattr(command, "to_spec") or isinstance(command, dict):
            submitted = self.submit_dag(command)
            return submitted.get("run_id") or submitted["schedule_id"]
        body = submit_body(command, priority=priority, tags=tags, timeout=timeout,
                           retries=retries, delay=delay, env=env, cwd=cwd, name=name)
        return self.call(Op.SUBMIT_JOB, body)["job_id"]

    def submit_many(self, jobs: Iterable[Any], **defaults: Any) -> list[str]:
        """Queue many jobs in one request (per 5,000); returns their ids, in order.

        Each item is a command (a list, or a string run by `sh -c`) or a dict of `submit`
        options with a `command` (and, if you like, a `job_id`); `defaults` (priority=,
        tags=, timeout=, retries=, delay=, env=, cwd=, name=) apply to every job an item
        does not say otherwise for.  The master checks every job of a request before it
        queues any: a bad one is named by its place (`jobs[3]: ...`).

            ids = titan.submit_many([["gzip", f] for f in files], tags=["CPU"])
            done = titan.wait_many(ids)"""
        bodies = batch_bodies(jobs, defaults)
        ids: list[str] = []
        for part in chunks(bodies):
            ids += self.call(Op.SUBMIT_JOBS, {"jobs": part})["job_ids"]
        return ids

    def map(self, template: Any, items: Iterable[Any], **defaults: Any) -> list[str]:
        """One job per item, in one request: returns their ids in the items' order.

        `template` is a string (a shell command; `{}` becomes the item, shell-quoted, or
        the item is added last, as xargs does), a list of arguments (`{}` in any becomes
        the item as it is; no shell), or a function of the item returning a command or a
        dict of `submit` options.  `defaults` as for `submit_many`.

            ids = titan.map("gzip -9 {}", files)
            ids = titan.map(["python3", "train.py", "--seed={}"], range(8), tags=["GPU"])
            jobs = titan.wait_many(ids)       # each job as `wait` returns it"""
        return self.submit_many([expand(template, item) for item in items], **defaults)

    def wait_many(self, job_ids: Iterable[str], timeout: Optional[float] = None) -> list:
        """Block until every job has ended (or `timeout` seconds pass); returns the jobs,
        in the order given (ones not ended by the timeout as they are then)."""
        ids = check_ids(job_ids)
        deadline = None if timeout is None else time.monotonic() + timeout
        ended: dict[str, dict] = {}
        for part in chunks(ids):
            pending = part
            while pending:
                left = 25.0 if deadline is None else max(0.0, deadline - time.monotonic())
                reply = self.call(Op.WAIT_JOBS, {"job_ids": pending,
                                                 "timeout": min(left, 25.0)},
                                  timeout=min(left, 25.0) + 30)
                for job in reply["jobs"]:
                    ended[job["job_id"]] = job
                pending = reply["pending"]
                if pending and deadline is not None and time.monotonic() >= deadline:
                    for job_id in pending:
                        ended[job_id] = self.job(job_id)
                    break
        return [ended.get(job_id) or ended[self.job(job_id)["job_id"]] for job_id in ids]

    # -- DAG runs --------------------------------------------------------------------------

    def submit_dag(self, pipeline: Any, watch: bool = False) -> dict:
        """Start a DAG run (or register a schedule, if the spec has one); returns
        {"run_id", "jobs"} or {"schedule_id", "next_at"}.  With `watch`, the run's changes
        are pushed from the start and the reply has the run as `run`: pass it to
        `watch_run(run_id, snapshot=...)`, which then needs no request of its own."""
        spec = pipeline.to_spec() if hasattr(pipeline, "to_spec") else pipeline
        if watch:
            spec = dict(spec, watch=True)
        return self.call(Op.SUBMIT_DAG, spec)

    def add_jobs(self, run_id: str, jobs: Any) -> list:
        """Grow a running DAG run; `jobs` as in a pipeline spec. Returns the new job ids."""
        if hasattr(jobs, "to_spec"):
            # Their parents may be jobs already in the run: the master checks those.
            jobs = [node.to_spec() for node in jobs.jobs]
        return self.call(Op.ADD_JOBS, {"run_id": run_id, "jobs": list(jobs)})["added"]

    def run(self, run_id: str, jobs: bool = True) -> dict:
        return self.call(Op.RUN_INFO, {"run_id": run_id, "jobs": jobs})

    def watch_run(self, run_id: str, jobs: bool = True, tick: Optional[float] = None,
                  snapshot: Optional[dict] = None) -> Iterator[dict]:
        """The run as it is, then again after each change, until it has ended (the last
        one yielded).  The master sends the run once, then only the jobs that moved
        (WATCH_RUN, RUN_CHANGED pushes); each run yielded has `changed` (those jobs) and
        `active` (the jobs running or waiting for approval), and with `jobs` every job,
        kept current.  With `tick` (seconds), the run is also yielded, unchanged
        (`changed` empty), after `tick` seconds without news: for a clock on screen.

        A lost connection raises ConnectError; call again to pick up where the run is.
        `snapshot`: the `run` of `submit_dag(..., watch=True)` on this connection."""
        if snapshot is None:
            snapshot = self.call(Op.WATCH_RUN, {"run_id": run_id, "jobs": jobs})
        follower = RunFollower(snapshot, jobs)
        try:
            yield follower.run
            quiet = 0.0
            while not follower.ended:
                push = self._next_run_push(run_id, tick or 30.0)
                if push is None:
                    quiet += tick or 30.0
                    if quiet >= 30.0:
                        # Nothing for a while: make sure the master is still there.
                        self.call(Op.RUN_INFO, {"run_id": run_id, "jobs": False})
                        quiet = 0.0
                    if tick:
                        follower.run["changed"] = []
                        yield follower.run
                    continue
                quiet = 0.0
                if follower.apply(push):
                    yield follower.run
        finally:
            if not follower.ended and self._sock is not None:
                # Left before the end (a break, a timeout): stop the pushes.
                try:
                    self.unwatch_run(run_id)
                except TitanError:
                    pass

    def _next_run_push(self, run_id: str, timeout: float) -> Optional[dict]:
        """The next RUN_CHANGED push about `run_id`, or None after `timeout` seconds."""
        while True:
            for i, push in enumerate(self._run_pushes):
                if push.get("run_id") == run_id:
                    return self._run_pushes.pop(i)
            if self._sock is None:
                raise ConnectError(f"not connected to the master at {self.host}:{self.port}")
            self._sock.settimeout(timeout)
            try:
                frame = self._next_frame()
            except socket.timeout:
                return None
            except OSError as e:
                self.close()
                raise ConnectError(f"connection to the master at {self.host}:{self.port} "
                                   f"failed: {e}") from None
            finally:
                if self._sock is not None:
                    self._sock.settimeout(self.timeout)
            if frame.opcode == Op.RUN_CHANGED:
                try:
                    self._run_pushes.append(codec.unpack(frame.body))
                except codec.BodyError:
                    continue

    def unwatch_run(self, run_id: str) -> None:
        """Stop the pushes of a run that `watch_run` was following."""
        self.call(Op.UNWATCH_RUN, {"run_id": run_id})
        self._run_pushes = [p for p in self._run_pushes if p.get("run_id") != run_id]

    def wait_run(self, run_id: str, timeout: Optional[float] = None) -> dict:
        """Block until the run has ended (or `timeout` passes); returns it with its jobs."""
        deadline = None if timeout is None else time.monotonic() + timeout
        # Followed by its changes (pushed, without the jobs), then read whole once.
        changes = self.watch_run(run_id, jobs=False, tick=None if deadline is None else 0.25)
        for run in changes:
            if run["state"] == "RUNNING" and deadline is not None \
                    and time.monotonic() >= deadline:
                changes.close()  # which stops the pushes
                break
        return self.run(run_id)

    def runs(self, agent_run_id: Optional[str] = None, limit: int = 100) -> list:
        return self.call(Op.LIST_RUNS, {"agent_run_id": agent_run_id, "limit": limit})["runs"]

    def approve(self, gate: str, comment: str = "", by: Optional[str] = None) -> dict:
        return self._decide(gate, True, comment, by)

    def reject(self, gate: str, comment: str = "", by: Optional[str] = None) -> dict:
        return self._decide(gate, False, comment, by)

    def _decide(self, gate: str, approved: bool, comment: str, by: Optional[str]) -> dict:
        return self.call(Op.DECIDE_GATE, {"job_id": gate, "approved": approved,
                                          "comment": comment, "by": by or _whoami()})

    def result(self, job_id: str) -> Any:
        return self.call(Op.GET_RESULT, {"job_id": job_id})["result"]

    def set_result(self, job_id: str, value: Any) -> None:
        self.call(Op.SET_RESULT, {"job_id": job_id, "value": value})

    def schedules(self) -> list:
        return self.call(Op.LIST_SCHEDULES)["schedules"]

    def unschedule(self, schedule_id: str) -> dict:
        return self.call(Op.REMOVE_SCHEDULE, {"schedule_id": schedule_id})

    # -- the store (through the master) ----------------------------------------------------

    def store_put(self, key: str, value: Union[bytes, str], ex: Optional[float] = None) -> None:
        self.call(Op.KV_SET, {"key": key, "value": value, "ex": ex})

    def store_get(self, key: str) -> Optional[bytes]:
        return self.call(Op.KV_GET, {"key": key})["value"]

    def store_sadd(self, key: str, member: Union[bytes, str]) -> int:
        return self.call(Op.KV_SADD, {"key": key, "member": member})["added"]

    def store_smembers(self, key: str) -> set:
        return set(self.call(Op.KV_SMEMBERS, {"key": key})["members"])

    def publish(self, channel: str, message: Union[bytes, str]) -> int:
        return self.call(Op.PUBLISH, {"channel": channel, "message": message})["receivers"]

    def subscribe(self, channel: str, pattern: bool = False,
                  timeout: Optional[float] = None) -> Iterator[tuple]:
        """(channel, message) for each message published on `channel` (a glob with
        `pattern=True`) from now on; stops after `timeout` seconds without one. Use a Client
        of its own for it."""
        self.call(Op.SUBSCRIBE, {"channel": channel, "pattern": pattern})
        self._sock.settimeout(timeout)
        try:
            while True:
                try:
                    frame = self._next_frame()
                except socket.timeout:
                    return
                if frame.opcode == Op.MESSAGE:
                    body = codec.unpack(frame.body)
                    yield body["channel"], body["message"]
        finally:
            if self._sock is not None:
                self._sock.settimeout(self.timeout)

    # -- services --------------------------------------------------------------------------

    def deploy(self, name: str, command: Union[str, Sequence[str]], *,
               port: Union[None, int, str] = None, restart: str = "on-failure",
               health: Optional[str] = None, tags: Sequence[str] = (),
               env: Optional[dict] = None, cwd: Optional[str] = None,
               affinity: Optional[str] = None) -> str:
        """Start a long-running service; returns its job id (NAME.N). `port`: a number, or
        "auto" for a free one of the worker's range (it gets $PORT and {port})."""
        body = submit_body(command, tags=tags, env=env, cwd=cwd, name=name)
        body.update(kind="service", port=None if port is None else str(port),
                    restart=restart, health=health, affinity=affinity)
        return self.call(Op.SUBMIT_JOB, body)["job_id"]

    def services(self, everything: bool = False) -> list:
        return self.call(Op.LIST_SERVICES, {"all": everything})["services"]

    def service(self, name: str) -> dict:
        for svc in self.services(everything=True):
            if svc["name"] == name:
                return svc
        raise RemoteError("not_found", f"no service {name}")

    def wait_service(self, name: str, timeout: float = 60.0) -> dict:
        """Until the service is RUNNING (healthy, if it has a check) or has ended."""
        deadline = time.monotonic() + timeout
        while True:
            svc = self.service(name)
            if svc["state"] not in ("STARTING", "RESTARTING") or time.monotonic() > deadline:
                return svc
            time.sleep(0.1)

    def restart_service(self, name: str) -> dict:
        return self.call(Op.RESTART_SERVICE, {"name": name})

    def stop_service(self, name: str) -> dict:
        return self.cancel(self.service(name)["job_id"])

    # -- jobs ------------------------------------------------------------------------------

    def job(self, job_id: str) -> dict:
        return self.call(Op.JOB_INFO, {"job_id": job_id})

    def status(self, job_id: str) -> str:
        return self.call(Op.GET_JOB_STATUS, {"job_id": job_id})["state"]

    def wait(self, job_id: str, timeout: Optional[float] = None) -> dict:
        """Block until the job — or the DAG run, given a run id — has ended (or `timeout`
        seconds pass); returns it."""
        try:
            return self._wait_job(job_id, timeout)
        except RemoteError as e:
            if e.code != "not_found" or "/" in job_id:
                raise
            try:
                self.run(job_id, jobs=False)
            except RemoteError:
                raise e from None
            return self.wait_run(job_id, timeout)

    def _wait_job(self, job_id: str, timeout: Optional[float] = None) -> dict:
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            left = 25.0 if deadline is None else max(0.0, deadline - time.monotonic())
            job = self.call(Op.WAIT_JOB, {"job_id": job_id, "timeout": min(left, 25.0)},
                            timeout=min(left, 25.0) + 30)
            if job["state"] in TERMINAL or (deadline is not None and time.monotonic() >= deadline):
                return job

    def logs(self, job_id: str) -> bytes:
        """Everything the job has written so far, stdout and stderr as they came."""
        out, offset = [], 0
        while True:
            part = self.call(Op.GET_LOGS, {"job_id": job_id, "offset": offset})
            out.append(part["data"])
            if not part["data"]:
                return b"".join(out)
            offset = part["offset"]

    def follow_logs(self, job_id: str, offset: int = 0) -> Iterator[bytes]:
        """Output as it comes, until the job has ended and all of it was read."""
        while True:
            part = self.call(Op.GET_LOGS, {"job_id": job_id, "offset": offset, "wait": True},
                             timeout=60)
            if part["data"]:
                yield part["data"]
            offset = part["offset"]
            if part["done"]:
                return

    def cancel(self, job_id: str) -> dict:
        return self.call(Op.CANCEL_JOB, {"job_id": job_id})

    def jobs(self, state: Optional[str] = None, limit: int = 100) -> list:
        return self.call(Op.LIST_JOBS, {"state": state, "limit": limit})["jobs"]

    def workers(self) -> list:
        return self.call(Op.LIST_WORKERS)["workers"]

    def stats(self) -> dict:
        return self.call(Op.STATS_JSON)

    def reload_config(self) -> dict:
        """The master reads its config file again (as `kill -HUP` does): {"applied",
        "restart", "elsewhere": [keys], "source"}; RemoteError `bad_config` if the file is
        bad (the config in use stays)."""
        return self.call(Op.RELOAD_CONFIG)
