"""titan-worker: dials the master, runs what it is sent, reports back.

The worker keeps one connection (ClientService, with backoff).  Reports of finished jobs are
kept until the master acknowledges them, and a worker that reconnects tells the master what
it still runs and what ended meanwhile, so nothing runs twice and no result is lost.
"""
from __future__ import annotations

import os
import random
import secrets
import socket
import sys
import time
from typing import Optional

import attrs
from twisted.application.internet import ClientService
from twisted.application.service import MultiService
from twisted.internet import defer, error
from twisted.internet.abstract import isIPAddress, isIPv6Address
from twisted.internet.endpoints import (HostnameEndpoint, TCP4ClientEndpoint,
                                        TCP6ClientEndpoint)
from twisted.internet.protocol import Factory
from twisted.internet.task import LoopingCall
from twisted.logger import Logger

from titan.auth import without_secrets
from titan.config import Config
from titan.core.model import JobSpec
from titan.datadir import DataDirInUse, DataDirLock
from titan.errors import RemoteError
from titan.protocols import codec
from titan.protocols.frame import DEFAULT_PREAUTH_MAX_BODY
from titan.protocols.opcodes import Op
from titan.protocols.rpc import RpcProtocol
from titan import tap
from titan.tap import exit_after_stop, private_dir
from titan.worker import executor
from titan.worker.executor import (JobProcess, containment, guard, job_workdir, spawn,
                                   workdirs)
from titan.worker.detect import detected_tags
from titan.worker.figures import heartbeat_figures
from titan.worker.supervisor import PortBusy, ServiceSupervisor, pick_port

MAX_BUFFERED_OUTPUT = 4 * 1024 * 1024  # per job, while the master is unreachable
FLUSH_AT = 256 * 1024
# A REGISTER larger than this goes after a HELLO (a master's pre-auth frame limit is 64 KiB
# unless configured otherwise; the margin is for a smaller one).
PREAUTH_REGISTER_BYTES = DEFAULT_PREAUTH_MAX_BODY // 2


def parse_hostport(value: str, default_port: int = 9090) -> tuple[str, int]:
    host, sep, port = value.rpartition(":")
    if not sep:
        return value, default_port
    if not port.isdigit():
        raise ValueError(f"{value!r} is not HOST:PORT")
    return host.strip("[]") or "127.0.0.1", int(port)


@attrs.define(eq=False)
class RunningJob:
    job_id: str
    spec: JobSpec
    attempt: int
    workdir: str
    own_workdir: bool
    run_id: Optional[str] = None
    proc: Optional[JobProcess] = None
    service: Optional[ServiceSupervisor] = None
    chunks: list = attrs.Factory(list)
    buffered: int = 0
    dropped: int = 0


class WorkerProtocol(RpcProtocol):
    worker: "WorkerService"

    def connectionMade(self) -> None:
        super().connectionMade()
        self.worker.connected(self)

    def connectionLost(self, reason=None) -> None:
        super().connectionLost(reason)
        self.worker.disconnected(self)

    def op_DISPATCH(self, body: dict) -> None:
        self.worker.start_job(body["job_id"], JobSpec.from_wire(body["spec"]),
                              int(body["attempt"]), body.get("run_id"), body.get("token"),
                              agent_run_id=body.get("agent_run_id"), stage=body.get("stage"))

    def op_KILL(self, body: dict) -> None:
        self.worker.kill_job(body["job_id"], int(body["attempt"]), body.get("reason") or "killed")

    def op_RESTART_SERVICE(self, body: dict) -> None:
        job = self.worker.jobs.get(body.get("job_id"))
        if job is not None and job.service is not None:
            job.service.restart()

    def op_DRAIN_WORKER(self, body: dict) -> None:
        self.worker.leave_when_idle()

    def error_pushed(self, body: dict) -> None:
        self.worker.log.error("master refused a frame: {message}", message=body.get("message"))


class WorkerService(MultiService):
    log = Logger()

    def __init__(self, config: Config, token: str, reactor=None) -> None:
        super().__init__()
        if reactor is None:
            from twisted.internet import reactor
        self.reactor = reactor
        wc = config.worker
        self.config = config
        self.token = token
        self.name = wc.name or socket.gethostname()
        self.worker_id = f"{self.name}-{secrets.token_hex(3)}"
        tags = {t.upper() for t in wc.tags}
        if wc.detect_tags:
            tags |= detected_tags(wc.high_mem_gb)
        self.tags = tuple(sorted(tags))
        self.slots = wc.slots
        self.data_dir = os.path.abspath(os.path.expanduser(wc.data_dir))
        self._lock: Optional[DataDirLock] = None
        self.master_host, self.master_port = parse_hostport(wc.master)
        self.jobs: dict[str, RunningJob] = {}
        self.unacked: dict[tuple[str, int], dict] = {}  # finished, not yet acknowledged
        self.conn: Optional[WorkerProtocol] = None
        self.registered = False
        self.refused = False  # the master refused our token: the worker is stopping
        self.leaving = False  # drained by the master: stop once nothing runs or is unsaid
        self._flush_call = None
        self._heartbeat: Optional[LoopingCall] = None
        # What jobs inherit: never the cluster token or another secret (a job gets a token
        # of its own, scoped to its attempt: start_job).
        env = without_secrets(os.environ)
        env.update(TITAN_HOST=self.master_host, TITAN_PORT=str(self.master_port),
                   TITAN_WORKER_ID=self.worker_id)
        env.update(llm_env(config.llm, env))
        self._base_env = env
        endpoint = master_endpoint(reactor, self.master_host, self.master_port)
        factory = Factory.forProtocol(WorkerProtocol)
        factory.noisy = False  # no "Starting factory" lines at every retry
        factory.buildProtocol = self._build_protocol
        self.client_service = ClientService(
            endpoint, factory, retryPolicy=self._retry_delay, clock=reactor)
        self.client_service.setServiceParent(self)

    # Until a master has said how often to beat, retries back off to 5 s.  After that they
    # never wait longer than that interval (plus jitter under half of it): the master gives
    # a silent worker `heartbeat_timeout`, and a live worker in its backoff must not be
    # given up for lost (its finished jobs would run again elsewhere).
    _retry_cap = 5.0
    # Connections in a row that closed before the master answered the REGISTER.  ClientService
    # counts only failures to connect, and starts again from 0 at each connection: behind an
    # `ssh -R` tunnel whose master is down, sshd accepts every attempt and closes it, and
    # the worker retried every ~0.3 s forever (docs/remote-workers.md).
    _unanswered = 0

    def _retry_delay(self, attempt: int) -> float:
        cap = self._retry_cap
        jitter = random.random() * min(1.0, cap / 2)
        attempt += self._unanswered
        return min(0.1 * 1.5 ** min(attempt, 64), cap) + jitter

    def _build_protocol(self, addr) -> WorkerProtocol:
        p = WorkerProtocol()
        p.worker = self
        p.clock = self.reactor
        return p

    def privilegedStartService(self) -> None:
        self._take_data_dir()
        super().privilegedStartService()

    def _take_data_dir(self) -> None:
        # Two workers on one dir would run jobs in each other's folders and scripts.
        if self._lock is None:
            try:
                self._lock = DataDirLock.acquire(self.data_dir, "titan-worker")
            except DataDirInUse as e:
                raise SystemExit(f"titan-worker: cannot start: {e}")

    def startService(self) -> None:
        self._take_data_dir()
        private_dir(self.data_dir)
        os.makedirs(os.path.join(self.data_dir, "work"), exist_ok=True)
        workdirs.start(self.data_dir)
        if tap.started_umask is not None:  # jobs get the umask the worker was given
            executor.job_umask = tap.started_umask
        try:
            held = containment(self.config.worker.contain)
        except OSError as e:
            raise SystemExit(f"titan-worker: cannot start: worker.contain is cgroup, but no "
                             f"cgroup can be made for jobs here: {e.strerror or e}")
        self.log.info("jobs are contained by {how}", how=held.kind)
        _not_dumpable()
        self.log.info("titan-worker {worker_id} ({slots} slots, tags {tags}) dialing "
                      "{host}:{port}", worker_id=self.worker_id, slots=self.slots,
                      tags=",".join(self.tags) or "-", host=self.master_host,
                      port=self.master_port)
        super().startService()

    async def _stop(self) -> None:
        if self._heartbeat is not None and self._heartbeat.running:
            self._heartbeat.stop()
        waiting = []
        for job in list(self.jobs.values()):
            if job.service is not None:
                job.service.stop("worker stopping")
                waiting.append(job)
            elif job.proc is not None and not job.proc.ended:
                job.proc.kill("worker stopping")
                waiting.append(job)

        def ended(j: RunningJob) -> bool:
            return j.service.ended if j.service is not None else j.proc.ended

        # Give the processes their grace period; each ends with a report we then drop.
        deadline = self.reactor.seconds() + self.config.worker.kill_grace + 1
        while any(not ended(j) for j in waiting) and self.reactor.seconds() < deadline:
            await _sleep(self.reactor, 0.05)
        guard.close()  # whatever outlived its grace period goes now
        await super().stopService()
        if self._lock is not None:
            self._lock.release()
            self._lock = None

    def stopService(self):
        return defer.Deferred.fromCoroutine(self._stop())

    # -- connection ------------------------------------------------------------------------

    def connected(self, conn: WorkerProtocol) -> None:
        self.conn = conn
        self.registered = False
        finished = []
        for report in self.unacked.values():
            finished.append(report)
        body = {
            "token": self.token, "worker_id": self.worker_id, "name": self.name,
            "host": socket.gethostname(), "tags": list(self.tags), "slots": self.slots,
            "pid": os.getpid(),
            "running": [{"job_id": j.job_id, "attempt": j.attempt}
                        for j in self.jobs.values()],
            "finished": finished,
        }
        if len(codec.pack(body)) > PREAUTH_REGISTER_BYTES:
            # Finished jobs' output makes it larger than a master reads before a hello
            # (master.preauth_frame_bytes): authenticate first, as a worker, then REGISTER.
            d = conn.call(Op.HELLO, {"token": self.token, "as": "worker"}, timeout=30)
            d.addCallback(lambda _: conn.call(Op.REGISTER, body, timeout=30))
        else:
            d = conn.call(Op.REGISTER, body, timeout=30)
        d.addCallbacks(lambda result: self._registered(conn, result, finished),
                       lambda f: self._register_failed(conn, f))

    def _registered(self, conn: WorkerProtocol, result: dict, delivered: list) -> None:
        if conn is not self.conn:
            return
        self.registered = True
        self._unanswered = 0
        for report in delivered:
            self.unacked.pop((report["job_id"], report["attempt"]), None)
        # Jobs that ended while the hello was on its way (one the master told to stop, say):
        # their reports go now, or the master would keep their slots taken until the next
        # reconnect.
        for report in list(self.unacked.values()):
            logs = report.pop("logs", None)
            if logs:
                conn.push(Op.LOG_BATCH, {"job_id": report["job_id"],
                                         "attempt": report["attempt"], "chunks": logs})
            self._send_report(report)
        interval = float(result.get("heartbeat_interval") or 2.0)
        self._retry_cap = min(5.0, interval)
        if self._heartbeat is not None and self._heartbeat.running:
            self._heartbeat.stop()
        self._heartbeat = LoopingCall(self._beat)
        self._heartbeat.clock = self.reactor
        self._heartbeat.start(interval, now=True)
        self.log.info("registered with the master as {worker_id}", worker_id=self.worker_id,
                      worker=self.name)
        self._flush()
        for job in self.jobs.values():  # a new master knows nothing of their health yet
            if job.service is not None and not job.service.ended:
                self._service_report(job, job.service.status())

    def _register_failed(self, conn: WorkerProtocol, failure) -> None:
        if failure.check(RemoteError) and failure.value.code == "auth":
            self.log.error("the master refused this worker: {message}; stopping",
                           message=failure.value.message)
            print(f"titan-worker: the master at {self.master_host}:{self.master_port} refused "
                  f"the cluster token ({failure.value.message}); stopping", file=sys.stderr,
                  flush=True)
            self.refused = True  # for good: no "reconnecting"
            exit_after_stop(self.reactor, 2)
            return
        if failure.check(error.ConnectionLost):
            return  # closed before the answer: disconnected() says so
        self.log.warn("registration failed: {why}", why=failure.getErrorMessage())
        if conn.transport is not None:
            conn.transport.loseConnection()

    def disconnected(self, conn: WorkerProtocol) -> None:
        if conn is self.conn:
            answered, self.registered = self.registered, False
            self.conn = None
            if self._heartbeat is not None and self._heartbeat.running:
                self._heartbeat.stop()
            if self.refused:
                return
            if answered:
                self.log.warn("lost the master; reconnecting")
                return
            # Each one counts as a failed attempt: the retries back off (_retry_delay).
            self._unanswered += 1
            if self._unanswered == 1:  # said once, not at every retry
                self.log.warn("the connection to {host}:{port} closed before the master "
                              "answered (a tunnel whose far end has no master behind it?); "
                              "retrying with backoff", host=self.master_host,
                              port=self.master_port)

    def leave_when_idle(self) -> None:
        """The master drained this worker (DRAIN_WORKER): it sends no more jobs, and once
        what runs here has ended and the master has its reports, the worker stops (exit
        status 0: a supervisor should not start it again)."""
        if not self.leaving:
            self.log.info("drained by the master: stopping once idle")
        self.leaving = True
        self._leave_if_idle()

    def _leave_if_idle(self) -> None:
        if self.leaving and not self.jobs and not self.unacked and not self.refused:
            self.refused = True  # stopping for good: no "reconnecting"
            exit_after_stop(self.reactor, 0)

    def _beat(self) -> None:
        if self.conn is not None and self.registered:
            # `time`: this machine's clock, for the master's view of the skew (titan doctor).
            self.conn.push(Op.HEARTBEAT, {"worker_id": self.worker_id,
                                          "running": len(self.jobs), "time": time.time(),
                                          **heartbeat_figures()})

    # -- jobs ------------------------------------------------------------------------------

    def start_job(self, job_id: str, spec: JobSpec, attempt: int,
                  run_id: Optional[str] = None, token: Optional[str] = None,
                  agent_run_id: Optional[str] = None, stage: Optional[str] = None) -> None:
        existing = self.jobs.get(job_id)
        if existing is not None:
            if existing.attempt == attempt:
                return  # a repeated dispatch
            existing.proc and existing.proc.kill("superseded by a newer attempt")
        workdir, own = job_workdir(self.data_dir, job_id, spec, run_id)
        job = RunningJob(job_id=job_id, spec=spec, attempt=attempt, workdir=workdir,
                         own_workdir=own, run_id=run_id)
        self.jobs[job_id] = job
        if self.config.log_jobs:  # the fields every line about a job has (jsonlog.py)
            self.log.info("job {job_id} attempt {attempt} starting", job_id=job_id,
                          run_id=run_id, attempt=attempt, worker=self.name,
                          worker_id=self.worker_id)
        env = dict(self._base_env)
        env.update(spec.env)
        env["TITAN_JOB_ID"] = job_id
        env["TITAN_ATTEMPT"] = str(attempt)
        if run_id:
            env["TITAN_RUN_ID"] = run_id
        if token:
            env["TITAN_TOKEN"] = token  # scoped to this attempt of this job
        if agent_run_id:
            env["TITAN_AGENT_RUN_ID"] = agent_run_id
            if stage:
                env["TITAN_STAGE"] = stage
        proto = JobProcess(self.reactor,
                           on_output=lambda stream, data: self._output(job, stream, data),
                           on_exit=lambda code, why: self._exited(job, code, why),
                           timeout=spec.timeout, kill_grace=self.config.worker.kill_grace)
        job.proc = proto
        if not own and not os.path.isdir(workdir):
            # A `cwd` someone gave is used as it is, never made: a typo must not run the job
            # in a fresh, empty directory.
            why = f"cwd {spec.cwd}: no such directory on worker {self.name}"
            self._output(job, "err", f"titan: {why}\n".encode())
            self._exited(job, None, why)
            return
        try:
            if own:
                workdirs.make(workdir)
            command = self._command(job)
        except OSError as e:
            self._exited(job, None, f"cannot prepare {workdir}: {e.strerror}")
            return
        if spec.kind == "service":
            self._start_service(job, command, env, workdir)
            return
        problem = spawn(self.reactor, proto, command, env, workdir)
        if problem is not None:
            self._output(job, "err", f"titan: {problem}\n".encode())
            self._exited(job, 127, problem)

    def _script_path(self, job: RunningJob) -> str:
        # Beside the job's files but never among them: a job with a `cwd` of its own must
        # not find a file of its overwritten.
        return os.path.join(self.data_dir, "scripts", f"{job.job_id}.{job.attempt}",
                            job.spec.script_name)

    def _command(self, job: RunningJob) -> list[str]:
        """The argv to run: the command, or a shipped script under its interpreter."""
        spec = job.spec
        if spec.script_name is None:
            return list(spec.command)
        path = self._script_path(job)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "wb") as f:
            f.write(spec.script or b"")
        os.chmod(path, 0o755)
        if spec.script_name.endswith(".py"):
            # This worker's own Python: the titan SDK is importable from the script.
            return [sys.executable, path, *spec.command]
        if spec.script_name.endswith(".sh"):
            return ["bash", path, *spec.command]
        return [path, *spec.command]

    def _start_service(self, job: RunningJob, command: list, env: dict, workdir: str) -> None:
        taken = {j.service.port for j in self.jobs.values()
                 if j.service is not None and j.service.port}
        try:
            port = pick_port(job.spec.port, self.config.worker.port_range, taken)
        except PortBusy as e:
            why = f"{e} ({self.name})"
            self._output(job, "err", f"titan: {why}\n".encode())
            self._exited(job, None, why)
            return
        supervisor = ServiceSupervisor(
            self.reactor, job, command, env, workdir, port, self.config.worker,
            report=lambda status: self._service_report(job, status),
            finished=lambda code, why: self._exited(job, code, why),
            output=lambda stream, data: self._output(job, stream, data))
        job.service = supervisor
        problem = supervisor.start()
        if problem is not None:
            self._output(job, "err", f"titan: {problem}\n".encode())
            supervisor.ended = True
            self._exited(job, 127, problem)

    def _service_report(self, job: RunningJob, status: dict) -> None:
        if self.conn is not None and self.registered:
            self._flush_job(job)
            self.conn.push(Op.SERVICE_STATUS, {"job_id": job.job_id, "attempt": job.attempt,
                                               "status": status})

    def kill_job(self, job_id: str, attempt: int, reason: str) -> None:
        job = self.jobs.get(job_id)
        if job is None or job.attempt != attempt:
            return
        self.log.info("stopping job {job_id}: {reason}", job_id=job_id, reason=reason,
                      run_id=job.run_id, attempt=attempt, worker=self.name)
        if job.service is not None:
            job.service.stop(reason)
        elif job.proc is not None:
            job.proc.kill(reason)

    def _output(self, job: RunningJob, stream: str, data: bytes) -> None:
        job.chunks.append([stream, data])
        job.buffered += len(data)
        if job.buffered > MAX_BUFFERED_OUTPUT and not self.registered:
            while job.buffered > MAX_BUFFERED_OUTPUT // 2 and job.chunks:
                _, old = job.chunks.pop(0)
                job.buffered -= len(old)
                job.dropped += len(old)
        if job.buffered >= FLUSH_AT:
            self._flush_job(job)
        elif self._flush_call is None:
            self._flush_call = self.reactor.callLater(
                self.config.worker.log_batch_interval, self._flush)

    def _flush(self) -> None:
        self._flush_call = None
        for job in self.jobs.values():
            if job.chunks:
                self._flush_job(job)

    def _take_chunks(self, job: RunningJob) -> list:
        chunks = job.chunks
        if job.dropped:
            note = f"\n[titan: {job.dropped} bytes of output dropped while the master " \
                   f"was unreachable]\n"
            chunks.insert(0, ["err", note.encode()])
            job.dropped = 0
        job.chunks = []
        job.buffered = 0
        return chunks

    def _flush_job(self, job: RunningJob) -> None:
        if self.conn is None or not self.registered:
            return
        self.conn.push(Op.LOG_BATCH, {"job_id": job.job_id, "attempt": job.attempt,
                                      "chunks": self._take_chunks(job)})

    def _exited(self, job: RunningJob, exit_code: Optional[int], reason: Optional[str]) -> None:
        job_id = job.job_id
        if self.jobs.get(job_id) is job:
            del self.jobs[job_id]
        if exit_code != 0 or reason or self.config.log_jobs:  # failures always
            self.log.info("job {job_id} attempt {attempt} exited: {outcome}", job_id=job_id,
                          run_id=job.run_id, attempt=job.attempt, worker=self.name,
                          worker_id=self.worker_id, exit_code=exit_code, reason=reason,
                          outcome=reason or f"exit status {exit_code}")
        if job.spec.script_name:
            path = self._script_path(job)
            try:
                os.unlink(path)
                os.rmdir(os.path.dirname(path))
                os.rmdir(os.path.dirname(os.path.dirname(path)))  # RUN/ of RUN/JOB, if empty
            except OSError:
                pass
        if job.own_workdir:  # removed only when left empty (and not in use: `shared`)
            contained = job.proc.contained if job.proc is not None else None
            workdirs.release(job.workdir, job_id,
                             any(j.workdir == job.workdir for j in self.jobs.values()),
                             vacated=contained is not None and contained.vacated)
        report = {"job_id": job_id, "attempt": job.attempt, "exit_code": exit_code,
                  "reason": reason}
        if self.conn is not None and self.registered:
            if job.chunks or job.dropped:  # no empty batch for a job that said nothing
                self._flush_job(job)
            self._send_report(report)
        else:
            report["logs"] = self._take_chunks(job)
            self.unacked[(job_id, job.attempt)] = report

    def _send_report(self, report: dict) -> None:
        key = (report["job_id"], report["attempt"])
        self.unacked[key] = report
        d = self.conn.call(Op.JOB_COMPLETE, report, timeout=None)
        d.addCallbacks(lambda _: self._acked(key), lambda _: None)

    def _acked(self, key: tuple) -> None:
        self.unacked.pop(key, None)
        self._leave_if_idle()


def llm_env(llm, env: dict) -> dict:
    """The config's `llm:` section as the TITAN_LLM_* variables titan.agents reads in a job,
    each unless `env` (the worker's own environment) already sets it.  The key is read from
    its file now: a file that cannot be read is said once, and the jobs go without it."""
    given = {"TITAN_LLM_PROVIDER": llm.provider, "TITAN_LLM_BASE_URL": llm.base_url,
             "TITAN_LLM_MODEL": llm.model}
    out = {k: v for k, v in given.items() if v and k not in env}
    if llm.api_key_file and "TITAN_LLM_API_KEY" not in env:
        path = os.path.expanduser(llm.api_key_file)
        try:
            with open(path, encoding="utf-8") as f:
                key = f.readline().strip()
        except (OSError, UnicodeDecodeError) as e:
            Logger().warn("llm.api_key_file {path}: cannot read it ({why}); jobs get no "
                          "TITAN_LLM_API_KEY", path=path, why=getattr(e, "strerror", None) or e)
        else:
            if key:
                out["TITAN_LLM_API_KEY"] = key
    return out


def master_endpoint(reactor, host: str, port: int):
    """How to dial the master.  An address is dialled as it is: HostnameEndpoint would
    resolve even that in a thread of the reactor's pool, and the thread stays, so each
    of the two cgroup moves a job costs (executor.Cgroup) moves two threads, ~10 us more."""
    if isIPAddress(host):
        return TCP4ClientEndpoint(reactor, host, port)
    if isIPv6Address(host):
        return TCP6ClientEndpoint(reactor, host, port)
    return HostnameEndpoint(reactor, host, port)


def _not_dumpable() -> None:
    """Jobs run as the worker's user: PR_SET_DUMPABLE 0 keeps them (unless root) out of the
    worker's memory and environment (/proc/PID/mem, environ; ptrace).  Linux only."""
    if sys.platform.startswith("linux"):
        import ctypes
        try:
            ctypes.CDLL(None, use_errno=True).prctl(4, 0, 0, 0, 0)  # PR_SET_DUMPABLE
        except (OSError, AttributeError):
            pass


def _sleep(clock, seconds: float) -> defer.Deferred:
    d: defer.Deferred = defer.Deferred()
    clock.callLater(seconds, d.callback, None)
    return d
