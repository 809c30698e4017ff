"""The master's operations: everything a client may ask for, each once, for every face.

A face (an adapter) turns its wire into calls of `MasterApi` and its answers back into its
wire; it does nothing else.  Today there are two: TITAN_PROTO RPC (titan/master/server.py)
and the reference's text frames (titan/master/legacy.py).  A new face -- HTTP, MCP -- is
built the same way:

1. Take a `MasterApi` (the service tree hands it over: `MasterService.api`); never import
   titan/master/service.py.
2. Know who asks: build one `Caller` per authenticated principal -- `api.authenticate(token)`
   for a TITAN_PROTO-style token (a job's own token gives a scoped caller) -- and pass it to
   every operation.  Before each request of a scoped caller, call `api.admit(caller, op)`:
   it refuses what a job's token may not do and a token whose attempt is over.
3. Call the operation.  It answers a value (a dict, ready to encode) or a Deferred of one;
   the value reports only what the event log already holds as durable as its fsync policy
   promises, if the face sends it after `api.reply_ready()` (every face must: a read
   answered ahead of the log could report an end a crash takes back).
4. Say its errors: every refusal is a `RemoteError` (titan/errors.py) with a stable `code`
   and a message for a person -- the subclasses below name the common ones; a failure of
   the event log or the store is turned into one by `api.explain_failure(failure)`.

The operations do not know their wire: no opcodes, frames or sockets here.  What must reach
a connection later (RUN_CHANGED pushes, store messages) is given as a small object of the
face's (`Watcher`, a `deliver` callable).  The engine under this layer -- recording events,
the persistence barrier, timers, frames to workers -- is `Engine` (MasterService implements
it); this module does not import it, so nothing here imports back up.
"""
from __future__ import annotations

import json
import re
import secrets
from typing import Any, Awaitable, Callable, Optional, Protocol, Union

import attrs
from twisted.internet import defer

from titan.auth import parse_job_token, token_matches
from titan.core import events as ev
from titan.core.dag import NAME, RESULT_LIMIT, SubmitError, parse_dag, parse_jobs, service_options
from titan.core.model import JobSpec, JobState, RunState, WorkerState
from titan.core.scheduler import (
    Scheduler, cron_valid, job_view, run_view, service_view, worker_view)
from titan.errors import RemoteError
from titan.protocols import codec

LONG_POLL = 25.0  # seconds a wait (WAIT_JOB, WAIT_RUN, GET_LOGS with wait) may hold its reply
MAX_BATCH = 100_000  # jobs in one submission of many, or one wait for many
# The reference's gate keys in the store (docs/compat.md): a job's token may not write them.
HITL_PREFIX = "titan:hitl:"
# What a job, holding its own job-scoped token, may not do: decide gates (a job approving
# its own gate would defeat the point), cancel work, drop schedules, or restart services
# (the service it would name by its name is some other job), or start and drain workers.
NOT_FOR_JOBS = frozenset({"DECIDE_GATE", "CANCEL_JOB", "REMOVE_SCHEDULE", "RESTART_SERVICE",
                          "START_WORKER", "DRAIN_WORKER", "RELOAD_CONFIG"})
# A worker's tag as an operator may name it (a worker takes a comma-separated list).
TAG = re.compile(r"^[A-Za-z0-9_.:-]{1,64}$")


# -- errors: the wire's codes, as types ------------------------------------------------------

class ApiError(RemoteError):
    """A refusal with a fixed code; faces encode any RemoteError the same way."""
    code = "internal"

    def __init__(self, message: str, close: bool = False) -> None:
        super().__init__(type(self).code, message, close)


class BadRequest(ApiError):
    code = "bad_request"


class BadJob(ApiError):
    code = "bad_job"


class BadDag(ApiError):
    code = "bad_dag"


class BadResult(ApiError):
    code = "bad_result"


class NotFound(ApiError):
    code = "not_found"


class Forbidden(ApiError):
    code = "forbidden"


class Unauthorized(ApiError):
    """A wrong token, or a job's token whose attempt is over: the connection closes."""
    code = "auth"

    def __init__(self, message: str, close: bool = True) -> None:
        super().__init__(message, close)


class WrongToken(Unauthorized):
    """Not the cluster's token (nor a job's)."""


class NoStore(ApiError):
    code = "no_store"


class NotRunning(ApiError):
    code = "not_running"


class Unreachable(ApiError):
    code = "unreachable"


class BadPipeline(ApiError):
    """A pipeline `titan run` would refuse: `problems` [{step, key, message}], the first
    one's message being the one `titan run` prints."""
    code = "bad_pipeline"

    def __init__(self, problems: list) -> None:
        super().__init__(problems[0]["message"] if problems else "bad pipeline")
        self.problems = problems


class DraftLimit(ApiError):
    """As many drafts as the master keeps (titan/drafts.py LIMIT)."""
    code = "draft_limit"


class WorkerLimit(ApiError):
    """As many workers started by hand run as this master starts (the autoscaler service's
    `max_started`)."""
    code = "worker_limit"


# -- who asks ------------------------------------------------------------------------------

@attrs.frozen
class Caller:
    """Who asks: the cluster token's holder (`scope` None), or one attempt of a job holding
    its own token (`scope` = (job id, attempt)).  `describe` says, for the record of a
    decision, which credential from where (called only when needed: it may read sockets)."""
    scope: Optional[tuple[str, int]] = None
    describe: Union[str, Callable[[], str]] = ""

    @property
    def via(self) -> str:
        return self.describe() if callable(self.describe) else self.describe

    @property
    def job_id(self) -> Optional[str]:
        return self.scope[0] if self.scope is not None else None


OPERATOR = Caller()  # in-process calls (tests, tools): the cluster's rights, no via


class Watcher(Protocol):
    """A face's connection that receives RUN_CHANGED pushes (MasterService sends them)."""
    watching: set
    connected: Any

    def write(self, data: bytes) -> None: ...


class Engine(Protocol):
    """What the operations need of the master service (titan/master/service.py)."""
    scheduler: Scheduler
    config: Any
    store: Any
    logs: Any
    token: str
    data_dir: str
    reactor: Any
    recovery: dict
    persistence: Any
    storage_problem: Optional[str]
    autoscaler: Any
    metrics: Any  # titan/master/metrics.py's MasterMetrics
    job_end_listeners: list
    run_change_listeners: list

    def now(self) -> float: ...
    def handle(self, event: object) -> defer.Deferred: ...
    def after(self, durable: defer.Deferred, result: Any) -> defer.Deferred: ...
    def reply_ready(self) -> defer.Deferred: ...
    def explain_failure(self, failure) -> Optional[RemoteError]: ...
    def job_connected(self, conn: Any) -> None: ...
    def job_disconnected(self, conn: Any) -> None: ...
    def worker_registered(self, conn: Any, body: dict) -> defer.Deferred: ...
    def worker_gone(self, conn: Any) -> None: ...
    def worker_link(self, worker_id: str) -> Any: ...
    def logs_received(self, job_id: str, chunks, attempt: int = 0) -> None: ...
    def until_ended(self, job_id: str, timeout: float) -> Awaitable: ...
    def until_all_ended(self, job_ids: list, timeout: float) -> Awaitable: ...
    def until_run_changed(self, run_id: str, timeout: float) -> Awaitable: ...
    def until_log_grows(self, job_id: str, timeout: float) -> Awaitable: ...
    def watch(self, conn: Watcher, run_id: str) -> None: ...
    def unwatch_run(self, conn: Watcher, run_id: Optional[str] = None) -> None: ...
    def to_worker(self, worker_id: str, opcode: int, body: dict) -> bool: ...
    def add_change_listener(self, listener: Callable[[list], None]) -> None: ...
    def remove_change_listener(self, listener: Callable[[list], None]) -> None: ...
    def reload_config(self, via: str) -> dict: ...
    def config_status(self) -> dict: ...


class TextFrames(Protocol):
    """The text frames' face says whether it is on, and warns while it is."""
    def policy(self) -> str: ...
    def warning(self) -> Optional[str]: ...


def check_scope(scheduler: Scheduler, scope: tuple[str, int]) -> None:
    """A job's token is good while that attempt of the job runs, and no longer."""
    job = scheduler.jobs.get(scope[0])
    if job is None or job.attempt != scope[1] or job.state is not JobState.RUNNING:
        raise Unauthorized(f"the token of job {scope[0]} (attempt {scope[1]}) is no longer "
                           "valid: that attempt is not running")


_NO_EXPIRY = object()  # kv_set without `ex` (the text frames' KV_SET sets none)


def _required(value: Any, name: str, kind: type = str) -> Any:
    """`value`, if it is of `kind` (a bool is no int), else BadRequest naming the field."""
    if not isinstance(value, kind) or isinstance(value, bool) and kind is not bool:
        raise BadRequest(f"{name!r} is required ({kind.__name__})")
    return value


def _limit(timeout: Optional[float]) -> float:
    return LONG_POLL if timeout is None else max(0.0, min(float(timeout), LONG_POLL))


class MasterApi:
    """Every operation a face may call (see the module's docstring for how a face uses it)."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.text_frames: Optional[TextFrames] = None  # set by the service tree
        # Told who wrote a value into a gate's status key through the master (key, value,
        # who): the text frames' face records it as the decision's author.
        self.gate_key_writers: list[Callable[[str, Any, str], None]] = []
        # Attempts running when a config reload changed the cluster token keep the tokens
        # they were given (signed with the old one) until they end: [(old token, {(job id,
        # attempt)})], newest last.
        self._earlier_job_tokens: list[tuple[str, frozenset]] = []

    # -- what faces read of the master (not operations) --------------------------------------

    @property
    def config(self):
        return self.engine.config

    @config.setter
    def config(self, value) -> None:
        self.engine.config = value

    @property
    def scheduler(self) -> Scheduler:
        """The core's state, to read (a face never changes it but through an operation)."""
        return self.engine.scheduler

    @property
    def reactor(self):
        return self.engine.reactor

    @property
    def store(self):
        return self.engine.store

    @property
    def logs(self):
        return self.engine.logs

    @property
    def data_dir(self) -> str:
        return self.engine.data_dir

    @property
    def job_end_listeners(self) -> list:
        return self.engine.job_end_listeners

    @property
    def run_change_listeners(self) -> list:
        return self.engine.run_change_listeners

    def now(self) -> float:
        return self.engine.now()

    def reply_ready(self) -> defer.Deferred:
        """When a reply may go out (MasterService.reply_ready): every face waits for it."""
        return self.engine.reply_ready()

    def explain_failure(self, failure) -> Optional[RemoteError]:
        return self.engine.explain_failure(failure)

    def worker_link(self, worker_id: str):
        """The connection a worker keeps to the master, or None."""
        return self.engine.worker_link(worker_id)

    def add_change_listener(self, listener: Callable[[list], None]) -> None:
        """`listener([(kind, key), ...])` once per turn with what changed, after it is
        durable: kind "job" (gates, services), "run", "worker" or "schedule"
        (MasterService.add_change_listener).  Remove it when nobody follows any more:
        while one listens, the master notes every change."""
        self.engine.add_change_listener(listener)

    def remove_change_listener(self, listener: Callable[[list], None]) -> None:
        self.engine.remove_change_listener(listener)

    # -- who asks ----------------------------------------------------------------------------

    def authenticate(self, token: Any, describe: Union[str, Callable[[], str]] = ""
                     ) -> Caller:
        """The caller a token makes: the cluster token's holder, or a running job's attempt
        (its token works while that attempt runs).  Unauthorized for anything else."""
        scope = parse_job_token(self.engine.token, token)
        if scope is None and self._earlier_job_tokens:
            scope = self._earlier_job_scope(token)
        if scope is not None:
            check_scope(self.engine.scheduler, scope)
            return Caller(scope, describe)
        self.check_cluster_token(token)
        return Caller(None, describe)

    def _earlier_job_scope(self, token: Any) -> Optional[tuple[str, int]]:
        for old, attempts in self._earlier_job_tokens:
            scope = parse_job_token(old, token)
            if scope is not None and scope in attempts:
                return scope
        return None

    def token_changed(self, old: str) -> None:
        """A config reload changed the cluster token (titan/master/reload.py): the job
        tokens made with `old` keep working for the attempts running now, and for no other;
        earlier tokens are dropped once none of theirs runs."""
        running = frozenset((j.job_id, j.attempt) for j in self.engine.scheduler.jobs.values()
                            if j.state is JobState.RUNNING)
        kept = [(t, attempts) for t, attempts in self._earlier_job_tokens
                if attempts & running]
        self._earlier_job_tokens = kept + ([(old, running)] if running else [])

    def check_cluster_token(self, token: Any) -> None:
        if not token_matches(self.engine.token, token):
            raise WrongToken("wrong cluster token")

    def token_derived_key(self, purpose: bytes) -> bytes:
        """A key derived from the cluster token for `purpose` (the web face keys its saved
        sessions with it: a new token ends every session made under the old one)."""
        import hashlib
        import hmac
        return hmac.new(str(self.engine.token).encode(), purpose, hashlib.sha256).digest()

    def admit(self, caller: Caller, operation: str) -> None:
        """Before each request of a job's token: what it may not do (Forbidden), and whether
        its attempt still runs (Unauthorized, closing)."""
        if caller.scope is None:
            return
        if operation in NOT_FOR_JOBS:
            raise Forbidden(f"a job's own token may not {operation}")
        check_scope(self.engine.scheduler, caller.scope)

    def job_connected(self, conn) -> None:
        """A connection of a job's token (conn.scope): closed once that attempt is over."""
        self.engine.job_connected(conn)

    def job_disconnected(self, conn) -> None:
        self.engine.job_disconnected(conn)

    # -- workers -----------------------------------------------------------------------------

    def register_worker(self, conn, body: dict) -> defer.Deferred:
        """A worker's REGISTER, answered once its record (with the finished reports it
        carries, which the worker then drops) is stored -- also during an outage."""
        durable = self.engine.worker_registered(conn, body)
        return self.engine.after(
            durable, {"heartbeat_interval": self.engine.config.master.heartbeat_interval})

    def worker_gone(self, conn) -> None:
        self.engine.worker_gone(conn)

    def heartbeat(self, worker_id: str) -> None:
        self.engine.handle(ev.WorkerHeartbeat(worker_id))

    def job_started(self, worker_id: str, job_id: str, attempt: int) -> None:
        self.engine.handle(ev.JobStarted(job_id, worker_id, attempt))

    def job_complete(self, worker_id: str, job_id: str, attempt: int, exit_code: Any,
                     reason: Any) -> defer.Deferred:
        # The worker keeps its report until this answer, which waits until it is recorded.
        durable = self.engine.handle(ev.JobFinished(job_id, worker_id, attempt, exit_code,
                                                    reason))
        return self.engine.after(durable, {})

    def job_logs(self, job_id: str, chunks, attempt: int = 0) -> None:
        self.engine.logs_received(job_id, chunks, attempt)

    def service_status(self, worker_id: str, job_id: str, attempt: int, status: dict) -> None:
        self.engine.handle(ev.ServiceReported(job_id, worker_id, attempt, status))

    # -- jobs --------------------------------------------------------------------------------

    def submit(self, caller: Caller, body: dict) -> defer.Deferred:
        """One job or service: {"job_id": ...} once its record is durable."""
        event = self._submission(body)
        return self.engine.after(self.engine.handle(event), {"job_id": event.spec.job_id})

    def submit_many(self, caller: Caller, bodies: Any) -> defer.Deferred:
        """Many jobs: every job is checked before any is queued (all or nothing); they are
        recorded together and answered once, with their ids in order."""
        if not isinstance(bodies, list) or not bodies:
            raise BadRequest("'jobs' is required: a list of job submissions")
        if len(bodies) > MAX_BATCH:
            raise BadRequest(f"{len(bodies)} jobs in one request, over the limit of "
                             f"{MAX_BATCH}: split the batch")
        events, taken = [], set()
        for i, body in enumerate(bodies):
            if not isinstance(body, dict):
                raise BadJob(f"jobs[{i}]: expected a map of job options, not "
                             f"{type(body).__name__}")
            if (body.get("kind") or "job") != "job":
                raise BadJob(f"jobs[{i}]: a batch takes jobs only; deploy services one at "
                             "a time")
            try:
                event = self._submission(body, taken)
            except RemoteError as e:
                raise RemoteError(e.code, f"jobs[{i}]: {e.message}") from None
            if event.spec.job_id in taken:
                raise BadJob(f"jobs[{i}]: job id {event.spec.job_id!r} appears twice in the "
                             "batch")
            taken.add(event.spec.job_id)
            events.append(event)
        handle = self.engine.handle
        durable = None
        for event in events:
            durable = handle(event)
        return self.engine.after(durable, {"job_ids": [e.spec.job_id for e in events]})

    def _submission(self, body: dict, taken=()) -> ev.JobSubmitted:
        """The JobSubmitted event a submission asks for, checked."""
        command = body.get("command")
        if isinstance(command, str):
            command = ["sh", "-c", command]
        kind = body.get("kind") or "job"
        service: dict = {}
        if kind == "service":
            name = body.get("name")
            if not isinstance(name, str) or not NAME.match(name):
                raise BadJob("a service needs a name: letters, digits, '_', '.' or '-'")
            live = self._service(name, live_only=True)
            if live is not None:
                raise BadJob(f"service {name} is already deployed ({live.state.value} as "
                             f"{live.job_id}); stop it first or restart it")
            try:
                service = service_options(name, body)
            except SubmitError as e:
                raise BadJob(str(e)) from None
            body = dict(body, job_id=self._new_service_id(name), retries=0, timeout=None)
        elif kind != "job":
            raise BadJob(f"kind must be job or service, not {kind!r}")
        job_id = body.get("job_id") or self._new_job_id(taken)
        try:
            spec = JobSpec(kind=kind, **service,
                job_id=str(job_id), command=command or (),
                env=tuple(sorted((body.get("env") or {}).items())), cwd=body.get("cwd"),
                priority=int(body.get("priority") or 0), tags=body.get("tags") or (),
                timeout=body.get("timeout"), retries=int(body.get("retries") or 0),
                delay=float(body.get("delay") or 0), name=body.get("name"))
            event = ev.JobSubmitted(spec)
            self.engine.scheduler.validate(event)
        except (SubmitError, TypeError, ValueError) as e:
            raise BadJob(str(e))
        return event

    def _new_job_id(self, taken=()) -> str:
        jobs = self.engine.scheduler.jobs
        while True:
            job_id = secrets.token_hex(4)
            if job_id not in jobs and job_id not in taken:
                return job_id

    def _job(self, ref: str):
        s = self.engine.scheduler
        try:
            return s.jobs[s.resolve(ref)]
        except SubmitError as e:
            raise NotFound(str(e)) from None

    def _run(self, run_id: str):
        run = self.engine.scheduler.runs.get(run_id)
        if run is None:
            raise NotFound(f"no run {run_id}")
        return run

    def job_info(self, caller: Caller, ref: str) -> dict:
        engine = self.engine
        return engine.autoscaler.annotate(
            job_view(engine.scheduler, self._job(ref), engine.now()))

    async def wait_job(self, caller: Caller, ref: str, timeout: Optional[float]) -> dict:
        """The job once it has ended, or as it is when `timeout` (at most LONG_POLL) passes."""
        job = self._job(ref)
        if not job.state.terminal:
            await self.engine.until_ended(job.job_id, _limit(timeout))
        return self.job_info(caller, job.job_id)

    async def wait_jobs(self, caller: Caller, refs: Any, timeout: Optional[float]) -> dict:
        """Once every job of `refs` has ended, or when `timeout` (at most LONG_POLL) passes:
        the ended ones as `jobs`, the ids of the others as `pending`."""
        if not isinstance(refs, list) or not all(isinstance(r, str) for r in refs):
            raise BadRequest("'job_ids' is required: a list of job ids")
        if len(refs) > MAX_BATCH:
            raise BadRequest(f"{len(refs)} jobs in one request, over the limit of {MAX_BATCH}")
        jobs = [self._job(ref) for ref in refs]
        waiting = [job.job_id for job in jobs if not job.state.terminal]
        if waiting:
            await self.engine.until_all_ended(waiting, _limit(timeout))
        s, now = self.engine.scheduler, self.engine.now()
        ended, pending = [], []
        for job in jobs:
            if job.state.terminal:
                ended.append(job_view(s, job, now))
            else:
                pending.append(job.job_id)
        return {"jobs": ended, "pending": pending}

    async def read_logs(self, caller: Caller, ref: str, offset: int, wait: bool) -> dict:
        """The job's output from `offset`; with `wait`, once there is more (or it ended, or
        LONG_POLL passed)."""
        job = self._job(ref)
        job_id = job.job_id
        logs = self.engine.logs
        if wait and not job.state.terminal and offset >= logs.size(job_id):
            await self.engine.until_log_grows(job_id, LONG_POLL)
        data = logs.read(job_id, offset)
        end = offset + len(data)
        return {"data": data, "offset": end,
                "done": job.state.terminal and end >= logs.size(job_id),
                "state": job.state.value}

    def cancel(self, caller: Caller, ref: str) -> Union[dict, defer.Deferred]:
        """Cancel a job, or every unfinished job of a run, or a schedule."""
        s, engine = self.engine.scheduler, self.engine
        if ref in s.runs and ref not in s.jobs:
            run = s.runs[ref]
            live = any(not s.jobs[k].state.terminal for k in run.jobs) \
                if run.state is not RunState.RUNNING else True
            if not live:  # (an ended run may still have a service it delivered running)
                return {"run_id": ref, "state": run.state.value, "cancelled": False}
            durable = engine.handle(ev.RunCancelRequested(ref))
            return engine.after(durable, {"run_id": ref, "state": run.state.value,
                                          "cancelled": True})
        if ref in s.schedules and ref not in s.jobs:
            return self.remove_schedule(caller, ref)
        job = self._job(ref)
        before = job.state
        durable = engine.handle(ev.CancelRequested(job.job_id))
        return engine.after(durable, {
            "job_id": job.job_id, "state": job.state.value,
            "cancelled": job.state is JobState.CANCELLED and before is not JobState.CANCELLED})

    def list_jobs(self, caller: Caller, state: Optional[str], limit: Any) -> list:
        """The latest `limit` jobs, of one state if `state` names one."""
        if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
            raise BadRequest(f"limit must be a whole number of at least 1, not {limit!r}")
        s = self.engine.scheduler
        jobs = s.jobs.values()
        if state:
            wanted = state.upper() if isinstance(state, str) else None
            if wanted not in JobState.__members__:
                raise BadRequest(f"no job state {state!r}; the states are "
                                 f"{', '.join(JobState.__members__)}")
            jobs = [j for j in jobs if j.state.value == wanted]
        now = self.engine.now()
        return [job_view(s, j, now) for j in list(jobs)[-limit:]]

    def set_result(self, caller: Caller, ref: Optional[str], value: Any) -> defer.Deferred:
        """A job's result; a job's token sets its own only (`ref` None: its own)."""
        if caller.scope is not None:
            check_scope(self.engine.scheduler, caller.scope)
            if ref not in (None, caller.scope[0]):
                raise Forbidden("a job may set its own result only")
            ref = caller.scope[0]
        if not isinstance(ref, str):
            raise BadRequest("'job_id' is required (str)")
        job = self._job(ref)
        try:
            size = len(codec.pack({"v": value}))
        except Exception as e:
            raise BadResult(f"the result cannot be stored: {e}") from None
        if size > RESULT_LIMIT:
            raise BadResult(f"the result is {size} bytes, over the {RESULT_LIMIT}-byte "
                            "limit; write a file instead")
        return self.engine.after(self._apply_checked(ev.ResultSet(job.job_id, value)),
                                 {"job_id": job.job_id})

    def get_result(self, caller: Caller, ref: str) -> dict:
        job = self._job(ref)
        return {"job_id": job.job_id, "state": job.state.value, "result": job.result}

    # -- DAG runs ----------------------------------------------------------------------------

    def _apply_checked(self, event: object) -> defer.Deferred:
        try:
            self.engine.scheduler.validate(event)
        except SubmitError as e:
            raise BadDag(str(e)) from None
        return self.engine.handle(event)

    def submit_dag(self, caller: Caller, body: dict, watcher: Optional[Watcher] = None
                   ) -> defer.Deferred:
        """A DAG run, or a schedule of one (`schedule`: cron).  With `watcher`, the reply
        has the run as watch_run gives it (`run`) and its changes are pushed to it."""
        try:
            template = parse_dag(body)
        except SubmitError as e:
            raise BadDag(str(e)) from None
        s, engine = self.engine.scheduler, self.engine
        cron = body.get("schedule")
        if cron:
            schedule_id = template.name
            n = 1
            while schedule_id in s.schedules:
                n += 1
                schedule_id = f"{template.name}.{n}"
            if not cron_valid(cron):
                raise BadDag(f"schedule {cron!r} is not a cron expression (5 fields, or 6 "
                             "with seconds last)")
            durable = self._apply_checked(ev.ScheduleAdded(schedule_id, cron, template))
            sched = s.schedules[schedule_id]
            return engine.after(durable, {"schedule_id": schedule_id, "next_at": sched.next_at})
        run_id = self._new_run_id(template.name)
        durable = self._apply_checked(ev.DagSubmitted(run_id, template))
        reply = {"run_id": run_id, "jobs": list(s.runs[run_id].jobs)}
        if watcher is not None:
            reply["run"] = self.watch_run(caller, watcher, run_id, True)
        return engine.after(durable, reply)

    def _new_run_id(self, name: str) -> str:
        runs = self.engine.scheduler.runs
        while True:
            run_id = f"{name}-{secrets.token_hex(3)}"
            if run_id not in runs:
                return run_id

    def add_jobs(self, caller: Caller, run_id: Any, jobs: Any, by: Any = None
                 ) -> defer.Deferred:
        """Jobs added to a running DAG; a job's token adds to its own run only, as itself."""
        if caller.scope is not None:
            check_scope(self.engine.scheduler, caller.scope)
            own = self.engine.scheduler.jobs[caller.scope[0]].run_id
            if run_id not in (None, own):
                raise Forbidden(f"a job may add jobs to its own run ({own}) only")
            run_id = own
            by = caller.scope[0]
        else:
            by = str(by or "client")
        if not isinstance(run_id, str):
            raise BadRequest("'run_id' is required (str)")
        try:
            specs = parse_jobs(jobs)
        except SubmitError as e:
            raise BadDag(str(e)) from None
        durable = self._apply_checked(ev.JobsAdded(run_id, tuple(specs), by))
        return self.engine.after(durable, {"run_id": run_id,
                                           "added": [f"{run_id}/{s.job_id}" for s in specs]})

    def run_info(self, caller: Caller, run_id: str, jobs: bool = True) -> dict:
        return run_view(self.engine.scheduler, self._run(run_id), self.engine.now(), jobs)

    async def wait_run(self, caller: Caller, run_id: str, version: int,
                       timeout: Optional[float], jobs: bool) -> dict:
        """The run once it has changed since `version` (or ended), or at the timeout."""
        run = self._run(run_id)
        if run.version <= version and run.state is RunState.RUNNING:
            await self.engine.until_run_changed(run_id, _limit(timeout))
        return run_view(self.engine.scheduler, run, self.engine.now(), jobs)

    def watch_run(self, caller: Caller, conn: Watcher, run_id: str, jobs: bool) -> dict:
        """The run now (every job with `jobs`, else only those running or waiting for
        approval, as `active`); while it runs, its changes are pushed to `conn`."""
        from titan.core.scheduler import run_job_view
        run = self._run(run_id)
        s, now = self.engine.scheduler, self.engine.now()
        view = run_view(s, run, now, jobs)
        if not jobs:
            active = (JobState.RUNNING, JobState.WAITING_APPROVAL)
            view["active"] = [run_job_view(s, job, now) for job in map(s.jobs.get, run.jobs)
                              if job is not None and job.state in active]
        if run.state is RunState.RUNNING:
            self.engine.watch(conn, run_id)
        return view

    def unwatch_run(self, caller: Caller, conn: Watcher, run_id: Optional[str] = None
                    ) -> None:
        """Stop pushing one run's changes to `conn` (every run's, without `run_id`)."""
        self.engine.unwatch_run(conn, run_id)

    def list_runs(self, caller: Caller, agent_run_id: Optional[str], limit: int) -> list:
        s = self.engine.scheduler
        if agent_run_id:
            if agent_run_id not in s.agent_runs:
                raise NotFound(f"no agent run {agent_run_id}")
            runs = [s.runs[r] for r in s.agent_runs[agent_run_id]]
        else:
            runs = list(s.runs.values())[-int(limit):]
        now = self.engine.now()
        return [run_view(s, r, now, jobs=False) for r in runs]

    def list_agent_runs(self, caller: Caller, limit: int = 100) -> list:
        """Agent runs, the one that moved last first: each with its number of runs, its
        latest stages (run, name, label, state), its state (RUNNING while a stage runs),
        when it started, ended (None while running) and last moved."""
        if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= 1000:
            raise BadRequest(f"limit must be a whole number from 1 to 1000, not {limit!r}")
        s = self.engine.scheduler
        summaries = []
        for agent_run_id, run_ids in s.agent_runs.items():
            runs = [s.runs[r] for r in run_ids if r in s.runs]
            if not runs:
                continue
            last = runs[-1]
            running = any(r.state is RunState.RUNNING for r in runs)
            summaries.append({
                "agent_run_id": agent_run_id, "runs": len(runs),
                # The latest 20 stages (a long loop's first ones are in its timeline).
                "stages": [{"run_id": r.run_id, "name": r.name, "stage": r.stage,
                            "state": r.state.value} for r in runs[-20:]],
                "state": "RUNNING" if running else last.state.value,
                "started_at": runs[0].created_at,
                "finished_at": None if running else
                max(r.finished_at or r.created_at for r in runs),
                "last_at": max(r.finished_at or r.created_at for r in runs)})
        summaries.sort(key=lambda a: a["last_at"], reverse=True)
        return summaries[:limit]

    def decide_gate(self, caller: Caller, ref: Any, approved: Any, by: str,
                    comment: str) -> defer.Deferred:
        """Approve or reject a gate.  `by` is the name the client gives; the caller's `via`
        is what the master saw.  Never for a job's token (admit refuses it)."""
        if caller.scope is not None:
            raise Forbidden("a job's own token may not DECIDE_GATE")
        if not isinstance(approved, bool):
            raise BadRequest("'approved' is required (true or false)")
        if not isinstance(ref, str):
            raise BadRequest("'job_id' is required (str)")
        job = self._job(ref)
        durable = self._apply_checked(ev.GateDecided(job.job_id, approved, by, comment,
                                                     caller.via))
        return self.engine.after(durable, job_view(self.engine.scheduler, job,
                                                   self.engine.now()))

    # -- schedules -----------------------------------------------------------------------------

    def list_schedules(self, caller: Caller) -> list:
        return [{"schedule_id": sc.schedule_id, "name": sc.name, "cron": sc.cron,
                 "fired": sc.fired, "next_at": sc.next_at, "last_run_id": sc.last_run_id}
                for sc in self.engine.scheduler.schedules.values()]

    def remove_schedule(self, caller: Caller, schedule_id: str) -> defer.Deferred:
        if schedule_id not in self.engine.scheduler.schedules:
            raise NotFound(f"no schedule {schedule_id}")
        return self.engine.after(self.engine.handle(ev.ScheduleRemoved(schedule_id)),
                                 {"schedule_id": schedule_id, "cancelled": True,
                                  "state": "REMOVED"})

    # -- services ----------------------------------------------------------------------------

    def _new_service_id(self, name: str) -> str:
        jobs = self.engine.scheduler.jobs
        n = 1
        while f"{name}.{n}" in jobs:
            n += 1
        return f"{name}.{n}"

    def _service(self, name: str, live_only: bool = False):
        """The latest deployment of service `name` (standalone services only)."""
        found = None
        for job in self.engine.scheduler.jobs.values():
            if job.spec.kind == "service" and job.spec.name == name and job.run_id is None:
                if found is None or job.seq > found.seq:
                    found = job
        if live_only and found is not None and found.state.terminal:
            return None
        return found

    def restart_service(self, caller: Caller, name: str) -> dict:
        from titan.protocols.opcodes import Op
        job = self._service(name)
        if job is None:
            raise NotFound(f"no service {name}")
        if job.state is not JobState.RUNNING:
            raise NotRunning(f"service {name} is {job.state.value}, not running")
        # Behind the service's DISPATCH, if that is still held (MasterService._to_worker).
        if not self.engine.to_worker(job.worker_id, Op.RESTART_SERVICE,
                                     {"job_id": job.job_id, "attempt": job.attempt}):
            raise Unreachable(f"the worker of service {name} is not connected")
        return {"name": name, "job_id": job.job_id}

    def list_services(self, caller: Caller, everything: bool = False) -> list:
        latest: dict = {}
        for job in self.engine.scheduler.jobs.values():
            if job.spec.kind != "service":
                continue
            name = job.spec.name or job.job_id
            if name not in latest or job.seq > latest[name].seq:
                latest[name] = job
        now = self.engine.now()
        out = []
        for name, job in sorted(latest.items()):
            if job.state.terminal and not everything and job.finished_at is not None \
                    and now - job.finished_at > 3600:
                continue
            out.append(service_view(self.engine.scheduler, job, now))
        return out

    # -- the cluster ---------------------------------------------------------------------------

    def list_workers(self, caller: Caller) -> list:
        now = self.engine.now()
        return [self.worker_view(w, now) for w in self.engine.scheduler.workers.values()]

    def worker_view(self, w, now: float) -> dict:
        """A worker as list_workers shows it (the live events' worker changes too)."""
        view = worker_view(w, now)
        view["jobs"] = sorted(w.running)  # what it runs (the dashboard lists them)
        view["clock_offset"] = self._clock_offset(w)
        view.update(self.engine.autoscaler.describe(w.name) or {"spawned_by": None})
        return view

    def _clock_offset(self, w) -> Optional[float]:
        """Seconds the worker's clock is ahead of the master's (behind: negative), from its
        last heartbeat's `time` against when the master got it (plus the one-way delay);
        None when it sent none (an older worker) or is not connected."""
        heartbeat = getattr(self.engine.worker_link(w.worker_id), "last_heartbeat", None)
        sent = heartbeat.get("time") if isinstance(heartbeat, dict) else None
        if not isinstance(sent, (int, float)) or isinstance(sent, bool):
            return None
        return round(sent - w.last_seen, 3)

    def start_worker(self, caller: Caller, tags: Any = None, slots: Any = None,
                     name: Any = None, by: str = "dashboard") -> dict:
        """Start a local titan-worker with the tags and slots the operator asks for (the
        autoscaler's spawning, not bound to what this machine was seen to have: they ask
        for them).  Answers once the process is started; it shows in list_workers once it
        registers, `spawned_by` saying who started it."""
        self.admit(caller, "START_WORKER")
        if tags is None:
            tags = []
        if not isinstance(tags, list) or not all(isinstance(t, str) for t in tags):
            raise BadRequest("'tags' must be a list of strings")
        for t in tags:
            if not TAG.match(t.strip()):
                raise BadRequest(f"'tags': {t!r} is not a tag (1-64 letters, digits, "
                                 "'_', '.', ':' or '-')")
        tagset = frozenset(t.strip().upper() for t in tags)
        scaler = self.engine.autoscaler
        most = scaler.max_slots
        if slots is None:
            slots = self.engine.config.autoscaler.slots
        if isinstance(slots, bool) or not isinstance(slots, int) \
                or not 1 <= slots <= most:
            raise BadRequest(f"'slots' must be a whole number from 1 to {most}, not "
                             f"{slots!r}")
        if name is not None:
            if not isinstance(name, str) or not NAME.match(name) or len(name) > 64:
                raise BadRequest(f"'name' must be 1-64 letters, digits, '_', '.' or '-', "
                                 f"not {name!r}")
            taken = scaler.name_taken(name, by)
            if taken:
                raise BadRequest(f"'name': {taken}")
        if scaler.started_by_hand() >= scaler.max_started:
            raise WorkerLimit(f"{scaler.max_started} workers started by hand already run on this "
                              "master, the most it starts: drain one first")
        child = scaler.spawn(tagset, f"started by {caller.via or by}", slots=slots,
                             name=name, by=by)
        return {"name": child.name, "pid": child.proc.pid, "tags": sorted(child.tags),
                "slots": child.slots, "spawned_by": by}

    def _worker(self, ref: Any):
        """A worker by its id, or by its name when one worker has it."""
        if not isinstance(ref, str) or not ref:
            raise BadRequest("'name' is required (a worker's name or id)")
        workers = self.engine.scheduler.workers
        if ref in workers:
            return workers[ref]
        named = [w for w in workers.values() if w.name == ref]
        if not named:
            raise NotFound(f"no worker {ref}")
        if len(named) > 1:
            raise BadRequest(f"{len(named)} workers are named {ref}: name one by its id ("
                             f"{', '.join(sorted(w.worker_id for w in named))})")
        return named[0]

    def drain_worker(self, caller: Caller, ref: Any) -> defer.Deferred:
        """Drain a worker (by name or id): it takes no new jobs from now on (a recorded
        event: a master restart keeps it), finishes what it runs, then leaves -- one this
        master started is stopped, any other is told to stop once idle."""
        self.admit(caller, "DRAIN_WORKER")
        w = self._worker(ref)
        if w.state is not WorkerState.ALIVE and w.state is not WorkerState.DISCONNECTED:
            raise NotRunning(f"worker {w.name} is already {w.state.value}")
        who = caller.via or "an operator"
        durable = self.engine.handle(ev.WorkerRetiring(w.worker_id, f"drained by {who}"))
        self.engine.autoscaler.finish_drains()  # an idle one leaves at once
        return self.engine.after(durable, {"name": w.name, "worker_id": w.worker_id,
                                           "state": w.state.value, "running": sorted(w.running)})

    def stats(self, caller: Caller) -> dict:
        engine = self.engine
        counts: dict[str, int] = {s.value: 0 for s in JobState}
        for job in engine.scheduler.jobs.values():
            counts[job.state.value] += 1
        workers = engine.scheduler.workers.values()
        return {"jobs": counts, "workers": len(workers),
                "slots": sum(w.slots for w in workers),
                "busy": sum(len(w.running) for w in workers),
                "persistence": engine.persistence.describe() if engine.persistence else None,
                "recovery": engine.recovery,
                "text_frames": self.text_frames.policy() if self.text_frames else "off",
                "storage": engine.storage_problem, "warnings": self.warnings(caller),
                "config": engine.config_status(), "web_port": self._web_port()}

    def _web_port(self) -> Optional[int]:
        """The port the web API listens on (None: off, or not listening yet)."""
        web = getattr(self.engine, "web", None)
        port = getattr(getattr(web, "listener", None), "port", None)
        return getattr(port.getHost(), "port", None) if port is not None else None

    def reload_config(self, caller: Caller) -> dict:
        """Read the master's config file again and apply what can change without a restart
        (titan/master/reload.py): `applied`, `restart` (changed, for the next start) and
        `elsewhere` (keys the master does not read); `bad_config`, the config in use kept,
        if the file is bad."""
        self.admit(caller, "RELOAD_CONFIG")
        return self.engine.reload_config(f"titan reload by {caller.via}" if caller.via
                                         else "titan reload")

    def metrics(self, caller: Caller, accept: Optional[str] = None) -> tuple[bytes, str]:
        """The master's metrics (docs/metrics.md) in the format the scraper's Accept header
        asks for: (body, content type)."""
        return self.engine.metrics.exposition(accept)

    def warnings(self, caller: Caller) -> list[str]:
        """What every face should say about this master while it holds (`titan status`,
        `titan workers`): text frames on, a log that cannot be written."""
        out = []
        problem = self.engine.storage_problem
        if problem is not None:
            out.append(f"storage unavailable: {problem}; changes are refused until the "
                       "event log can be written again (reads are answered)")
        warning = self.text_frames.warning() if self.text_frames else None
        if warning:
            out.append(warning)
        return out

    # -- the store, through the master ---------------------------------------------------------

    def _writable(self, caller: Caller, op: str, key: str) -> str:
        """A job's token may not write the gate keys (`titan:hitl:*`): a job must not decide
        a gate by any path (docs/security.md)."""
        if caller.scope is not None and key.startswith(HITL_PREFIX):
            raise Forbidden(f"a job's own token may not {op} {key!r}: keys under "
                            f"{HITL_PREFIX} belong to approval gates")
        return key

    def store_client(self):
        """The store the master reaches (NoStore if none is configured)."""
        store = self.engine.store
        if store is None:
            raise NoStore("the store is not configured on this master")
        return store

    def kv_set(self, caller: Caller, key: Any, value: Any, ex: Any = _NO_EXPIRY,
               who: Optional[str] = None) -> defer.Deferred:
        """Set a key; one under titan:hitl: records who wrote it (`who`, else the caller):
        a decision it brings to a gate names them."""
        if not isinstance(value, (bytes, str)):
            raise BadRequest("'value' is required (bytes or str)")
        key = self._writable(caller, "KV_SET", _required(key, "key"))
        if key.startswith(HITL_PREFIX):
            who = who or f"a KV_SET with the {caller.via}"
            for writer in self.gate_key_writers:
                writer(key, value, who)
        store = self.store_client()
        return store.set(key, value) if ex is _NO_EXPIRY else store.set(key, value, ex=ex)

    def kv_get(self, caller: Caller, key: Any) -> defer.Deferred:
        return self.store_client().get(_required(key, "key"))

    def kv_sadd(self, caller: Caller, key: Any, member: Any) -> defer.Deferred:
        if not isinstance(member, (bytes, str)):
            raise BadRequest("'member' is required (bytes or str)")
        store = self.store_client()
        return store.sadd(self._writable(caller, "KV_SADD", _required(key, "key")), member)

    def kv_smembers(self, caller: Caller, key: Any) -> defer.Deferred:
        return self.store_client().smembers(_required(key, "key"))

    def publish(self, caller: Caller, channel: Any, message: Any) -> defer.Deferred:
        if not isinstance(message, (bytes, str)):
            raise BadRequest("'message' is required (bytes or str)")
        return self.store_client().publish(_required(channel, "channel"), message)

    def subscribe(self, caller: Caller, channel: str, deliver: Callable, pattern: bool
                  ) -> defer.Deferred:
        """A subscription (its `unsubscribe()` ends it); `deliver(channel, message)`."""
        return self.store_client().subscribe(channel, deliver, pattern=pattern)

    # -- pipelines as documents: the dashboard's constructor (titan/documents.py) -----

    def _files(self, files: Any) -> dict:
        from titan.documents import check_files
        try:
            return check_files(files)
        except ValueError as e:
            raise BadRequest(str(e)) from None

    def parse_pipeline(self, caller: Caller, text: Any, files: Any = None,
                       name: Any = None) -> dict:
        """YAML text (Titan's format or the reference's) as a document in Titan's keys:
        {"document", "files", "missing"}; BadPipeline with what `titan run` would print."""
        from titan.documents import PipelineProblems, parse_yaml
        if not isinstance(text, str):
            raise BadRequest("'yaml' is required (the pipeline's YAML text)")
        if name is not None and (not isinstance(name, str) or not name.strip()
                                 or len(name) > 200):
            raise BadRequest(f"'name' must be a file name, not {name!r}")
        try:
            return parse_yaml(text, self._files(files), name or "pipeline.yaml")
        except PipelineProblems as e:
            raise BadPipeline(e.problems) from None

    def validate_pipeline(self, caller: Caller, document: Any, files: Any = None) -> dict:
        """{"ok", "problems"}: what `titan run` (its reader, then the master's DAG checks)
        refuses in the document, each problem naming its step and key where it has one."""
        from titan.documents import problems_of
        if not isinstance(document, dict):
            raise BadRequest("'document' is required (an object: the pipeline)")
        problems = problems_of(document, self._files(files))
        return {"ok": not problems, "problems": problems}

    def submit_pipeline(self, caller: Caller, document: Any, files: Any = None
                        ) -> defer.Deferred:
        """Submit a document as `titan run` does: a run ({"run_id"}), or with a schedule
        its registration ({"schedule_id", "next_at"}); BadPipeline if it would refuse it."""
        from titan.documents import problems_of, read_document
        if not isinstance(document, dict):
            raise BadRequest("'document' is required (an object: the pipeline)")
        files = self._files(files)
        problems = problems_of(document, files)
        if problems:
            raise BadPipeline(problems)
        _, spec = read_document(document, files)
        submitted = self.submit_dag(caller, spec)

        def answer(reply: dict) -> dict:
            if "schedule_id" in reply:
                return {"schedule_id": reply["schedule_id"], "next_at": reply["next_at"]}
            return {"run_id": reply["run_id"]}
        return submitted.addCallback(answer)

    def run_pipeline_document(self, caller: Caller, run_id: str) -> dict:
        """A run's pipeline as a document ({"document", "files"}): every job as it is now,
        jobs added while it ran included; submitting it gives the same DAG."""
        from titan.documents import document_of
        run = self._run(run_id)
        s = self.engine.scheduler
        specs = [job.spec for job in map(s.jobs.get, run.jobs) if job is not None]
        return document_of(run.name, specs, agent_run_id=run.agent_run_id, stage=run.stage,
                           max_jobs=run.max_jobs)

    # -- the constructor's drafts (titan/drafts.py) -----------------------------------

    def _drafts(self):
        import os
        from titan.drafts import Drafts
        drafts = getattr(self, "_draft_store", None)
        if drafts is None:
            drafts = self._draft_store = Drafts(os.path.join(self.engine.data_dir, "drafts"))
        return drafts

    def _draft_call(self, f, *args):
        from titan.drafts import DraftError
        try:
            return f(*args)
        except DraftError as e:
            raise (DraftLimit if e.full else BadRequest)(str(e)) from None

    def list_drafts(self, caller: Caller) -> list:
        """{"name", "updated_at", "steps"} of each draft, the latest saved first."""
        return self._drafts().list()

    def get_draft(self, caller: Caller, name: str) -> dict:
        found = self._draft_call(self._drafts().get, name)
        if found is None:
            raise NotFound(f"no draft {name!r}")
        return found

    def put_draft(self, caller: Caller, name: str, draft: Any) -> dict:
        return self._draft_call(self._drafts().put, name, draft, self.engine.now())

    def delete_draft(self, caller: Caller, name: str) -> dict:
        if not self._draft_call(self._drafts().delete, name):
            raise NotFound(f"no draft {name!r}")
        return {"name": name, "deleted": True}

    # -- what the dashboard reads (titan/web/) -------------------------------------------------

    def runs_page(self, caller: Caller, limit: int = 50, cursor: Optional[int] = None,
                  state: Optional[str] = None, name: Optional[str] = None,
                  agent_run_id: Optional[str] = None) -> dict:
        """Runs newest first, `limit` at a time: `cursor` is the `next_cursor` of the page
        before (a run's submission order, so a page holds still while runs come and go)."""
        if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= 1000:
            raise BadRequest(f"limit must be a whole number from 1 to 1000, not {limit!r}")
        if state is not None and state.upper() not in RunState.__members__:
            raise BadRequest(f"no run state {state!r}; the states are "
                             f"{', '.join(RunState.__members__)}")
        s, now = self.engine.scheduler, self.engine.now()
        wanted = state.upper() if state else None
        page, more = [], False
        # Newest first without copying every run: s.runs is in submission order, and an
        # agent run's stages have their own list (s.agent_runs).
        if agent_run_id:
            candidates = (s.runs[r] for r in reversed(s.agent_runs.get(agent_run_id, ()))
                          if r in s.runs)
        else:
            candidates = reversed(s.runs.values())
        for run in candidates:
            if cursor is not None and run.seq >= cursor:
                continue
            if wanted and run.state.value != wanted or name and name not in run.name \
                    or agent_run_id and run.agent_run_id != agent_run_id:
                continue
            if len(page) == limit:
                more = True
                break
            page.append(run)
        return {"runs": [run_view(s, r, now, jobs=False) for r in page],
                "next_cursor": page[-1].seq if more else None}

    def run_graph(self, caller: Caller, run_id: str, offset: int = 0, limit: int = 2000
                  ) -> dict:
        """A run with `limit` of its jobs from `offset` (in the run's order), each with what
        it depends on, and the edges among them: a large run is read a page at a time."""
        if isinstance(offset, bool) or not isinstance(offset, int) or offset < 0:
            raise BadRequest(f"offset must be a whole number of 0 or more, not {offset!r}")
        if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= 10_000:
            raise BadRequest(f"limit must be a whole number from 1 to 10000, not {limit!r}")
        from titan.core.scheduler import run_job_view
        run = self._run(run_id)
        s, now = self.engine.scheduler, self.engine.now()
        view = run_view(s, run, now, jobs=False)
        keys = list(run.jobs)[offset:offset + limit]
        jobs, edges = [], []
        for key in keys:
            job = s.jobs[key]
            item = run_job_view(s, job, now)
            item["depends_on"] = list(job.spec.depends_on)
            item["name"] = job.spec.name
            jobs.append(item)
            edges.extend([parent, job.node] for parent in job.spec.depends_on)
        view.update(jobs=jobs, edges=edges, offset=offset,
                    next_offset=offset + len(keys) if offset + len(keys) < len(run.jobs)
                    else None)
        return view

    def list_gates(self, caller: Caller, decided: bool = False, limit: int = 200) -> list:
        """Approval gates: those waiting for a person (oldest first, with the time left), or
        the latest decided ones (who, when, why)."""
        s, now = self.engine.scheduler, self.engine.now()
        out = []
        if decided:
            jobs = s.jobs.values()
        else:
            # Gates are only in runs, and a run counts its jobs by state: only the jobs of
            # runs with a waiting gate are read, in submission order.
            wait = JobState.WAITING_APPROVAL
            jobs = sorted((job for run in s.runs.values() if run.counts.get(wait)
                           for job in map(s.jobs.__getitem__, run.jobs)
                           if job.state is wait), key=lambda job: job.seq)
        for job in jobs:
            if job.spec.kind != "gate":
                continue
            waiting = job.state is JobState.WAITING_APPROVAL
            if waiting == decided or decided and job.decision is None:
                continue
            out.append({"job_id": job.job_id, "run_id": job.run_id, "node": job.node,
                        "question": job.spec.message, "state": job.state.value,
                        "waiting_since": job.started_at,
                        "deadline": job.ready_at if waiting else None,
                        "time_left": max(0.0, job.ready_at - now)
                        if waiting and job.ready_at is not None else None,
                        "on_timeout": job.spec.on_timeout, "decision": job.decision})
        if decided:
            out.sort(key=lambda g: g["decision"].get("at") or 0)
            return out[-limit:][::-1]
        return out[:limit]

    def stop_service(self, caller: Caller, name: str) -> Union[dict, defer.Deferred]:
        """Stop the latest deployment of service `name` (cancel its job)."""
        job = self._service(name)
        if job is None:
            raise NotFound(f"no service {name}")
        if job.state.terminal:
            raise NotRunning(f"service {name} is already {job.state.value}")
        return self.cancel(caller, job.job_id)

    def store_scan(self, caller: Caller, pattern: str = "*", cursor: int = 0,
                   count: int = 100) -> defer.Deferred:
        """One SCAN step over the store's keys (never KEYS): {"cursor", "keys"}, each key
        with its type and TTL; cursor 0 in the answer ends the walk."""
        store = self.store_client()

        @defer.inlineCallbacks
        def walk():
            nxt, keys = yield store.scan(cursor, pattern, count)
            out = []
            for key in keys:
                kind = yield store.execute("TYPE", key)
                ttl = yield store.ttl(key)
                out.append({"key": _text(key), "type": _text(kind), "ttl": ttl})
            return {"cursor": nxt, "keys": out}
        return walk()

    def store_read(self, caller: Caller, key: str, limit: int = 1000) -> defer.Deferred:
        """A key's type, TTL and value (a string; a hash's fields; a set's members, sorted;
        a list's first `limit` items): read only."""
        store = self.store_client()

        @defer.inlineCallbacks
        def read():
            kind = _text((yield store.execute("TYPE", key)))
            if kind == "none":
                raise NotFound(f"no key {key!r} in the store")
            ttl = yield store.ttl(key)
            if kind == "string":
                value = _text((yield store.get(key)))
            elif kind == "hash":
                raw = yield store.hgetall(key)
                value = {_text(k): _text(v) for k, v in raw.items()}
            elif kind == "set":
                value = sorted(_text(m) for m in (yield store.smembers(key)))[:limit]
            elif kind == "list":
                value = [_text(v) for v in (yield store.lrange(key, 0, limit - 1))]
            else:
                value = None
            return {"key": key, "type": kind, "ttl": ttl, "value": value}
        return read()

    USAGE_KEYS = 2000  # the most per-process usage records an agent run's sum reads

    def agent_run_usage(self, caller: Caller, agent_run_id: str) -> defer.Deferred:
        """The model usage recorded for an agent run (titan/agents/usage.py's keys): a
        Deferred of `{"stages": {stage: totals}, "runs": {run_id: totals}, "total": totals,
        "truncated": bool}`, each totals `{calls, tokens_in, tokens_out, latency, cost}`
        (a job without a stage counts under ''); None without a store.  At
        most USAGE_KEYS records are read (MGET in chunks), `truncated` says if there were
        more; a record that is gone or not JSON is skipped."""
        from titan.agents.usage import PREFIX, Totals
        store = self.engine.store
        if store is None:
            return defer.succeed(None)

        def fields(t: Totals) -> dict:
            d = t.as_dict()
            d.pop("models", None)
            return d

        @defer.inlineCallbacks
        def read():
            members = yield store.smembers(f"{PREFIX}agent:{agent_run_id}")
            keys = sorted(_text(m) for m in members)
            truncated = len(keys) > self.USAGE_KEYS
            keys = keys[:self.USAGE_KEYS]
            total, stages, runs = Totals(), {}, {}
            for i in range(0, len(keys), 200):
                values = yield store.mget(*keys[i:i + 200])
                for raw in values:
                    if raw is None:
                        continue
                    try:
                        data = json.loads(raw)
                        stage = str(data.get("stage") or "")
                        run_id = str(data.get("run_id") or "")
                        one = Totals()
                        one.merge(data)
                    except (ValueError, TypeError, AttributeError):
                        continue
                    total.merge(attrs.asdict(one))
                    stages.setdefault(stage, Totals()).merge(attrs.asdict(one))
                    runs.setdefault(run_id, Totals()).merge(attrs.asdict(one))
            return {"stages": {s: fields(t) for s, t in sorted(stages.items())},
                    "runs": {r: fields(t) for r, t in sorted(runs.items())},
                    "total": fields(total), "truncated": truncated}
        return read()


def _text(value: Any) -> Any:
    """Bytes from the store as text (what is not UTF-8 shows as replacement characters)."""
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else value
