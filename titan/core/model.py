"""What the scheduler knows: job specs, job and worker records, states."""
from __future__ import annotations

import enum
from typing import Any, Optional

import attrs


class JobState(str, enum.Enum):
    PENDING = "PENDING"
    RUNNING = "RUNNING"
    COMPLETED = "COMPLETED"
    FAILED = "FAILED"  # the process failed and the job had no retries
    DEAD = "DEAD"  # the process failed and every retry failed too (dead-letter)
    CANCELLED = "CANCELLED"
    WAITING_APPROVAL = "WAITING_APPROVAL"  # a gate whose parents are done, awaiting a person

    # The string's own hash (C), not Enum's Python-level one: states key the counters of
    # every run, touched on every state change.  Equal, since each value is its name.
    __hash__ = str.__hash__

    @property
    def terminal(self) -> bool:
        return self in TERMINAL_STATES


TERMINAL_STATES = frozenset(
    {JobState.COMPLETED, JobState.FAILED, JobState.DEAD, JobState.CANCELLED})


class WorkerState(str, enum.Enum):
    ALIVE = "ALIVE"
    DISCONNECTED = "DISCONNECTED"  # connection lost; its jobs wait for it until the heartbeat timeout
    DRAINING = "DRAINING"  # being retired: takes no new jobs
    DEAD = "DEAD"


def _tags(value: Any) -> frozenset[str]:
    """Tags, case-insensitive (kept upper-case).  A plain string is one comma-separated
    list ("gpu,cuda"), never a sequence of one-letter tags."""
    if not value:
        return NO_TAGS
    if type(value) is frozenset and all(t == t.upper() for t in value):
        return value  # already normalised (the common case: evolve, templates)
    if isinstance(value, str):
        value = value.split(",")
    return frozenset(str(t).strip().upper() for t in value if str(t).strip()) or NO_TAGS


# One shared empty set: most jobs need no tags, and 100,000 of them need not each carry an
# object of their own for the garbage collector to walk.
NO_TAGS: frozenset[str] = frozenset()


# Immutable by convention, not by a frozen guard: a frozen attrs class stores each field
# through object.__setattr__ (and without NO_OP, attrs would run the converters on every
# store), and recovery builds a spec per submitted job -- 20 such calls cost it more than
# everything else a submission's record does.  Nothing assigns to a spec; a changed one is
# a new one (attrs.evolve).
@attrs.define(eq=True, unsafe_hash=True, on_setattr=attrs.setters.NO_OP)
class JobSpec:
    """What a client asked for.  Immutable: it is what gets persisted and sent to workers."""

    job_id: str
    command: tuple[str, ...] = attrs.field(converter=tuple)
    env: tuple[tuple[str, str], ...] = attrs.field(default=(), converter=tuple)
    cwd: Optional[str] = None
    priority: int = 0
    tags: frozenset[str] = attrs.field(default=frozenset(), converter=_tags)
    timeout: Optional[float] = None
    retries: int = 0
    delay: float = 0.0
    name: Optional[str] = None
    # In a DAG run, job_id is the job's id within the run and depends_on names its parents
    # there; one spec serves every run of a pipeline (the run's key is on the JobRecord).
    depends_on: tuple[str, ...] = attrs.field(default=(), converter=tuple)
    kind: str = "job"  # "job" runs a process; "gate" waits for a person
    message: Optional[str] = None  # a gate's question
    on_timeout: str = "reject"  # what a gate decides when its `timeout` passes
    script_name: Optional[str] = None  # a script shipped with the job: run as
    script: Optional[bytes] = None  # [interpreter, script_name, *command]
    affinity: Optional[str] = None
    # kind "service": kept running by its worker (T2)
    port: Optional[str] = None  # "auto", a number, or None
    restart: str = "on-failure"  # always | on-failure | never
    health: Optional[str] = None  # "tcp" or "http:/path"
    # "shared": the job runs in its run's directory on the worker (docs/pipelines.md), not
    # in one of its own; None: its own (or `cwd`).
    workspace: Optional[str] = None
    # A service of a DAG run that stays up after its run ends although a job of the run
    # needed it (docs/pipelines.md, services in a pipeline).
    persist: bool = False

    def to_wire(self) -> dict[str, Any]:
        return {
            "job_id": self.job_id, "command": list(self.command),
            "env": dict(self.env), "cwd": self.cwd, "priority": self.priority,
            "tags": sorted(self.tags), "timeout": self.timeout, "retries": self.retries,
            "delay": self.delay, "name": self.name,
            "depends_on": list(self.depends_on), "kind": self.kind, "message": self.message,
            "on_timeout": self.on_timeout, "script_name": self.script_name,
            "script": self.script, "affinity": self.affinity, "port": self.port,
            "restart": self.restart, "health": self.health, "workspace": self.workspace,
            "persist": self.persist,
        }

    @classmethod
    def from_wire(cls, body: dict[str, Any]) -> "JobSpec":
        return cls(
            job_id=body["job_id"], command=body["command"],
            env=tuple(sorted((body.get("env") or {}).items())), cwd=body.get("cwd"),
            priority=body.get("priority") or 0, tags=body.get("tags") or (),
            timeout=body.get("timeout"), retries=body.get("retries") or 0,
            delay=body.get("delay") or 0.0, name=body.get("name"),
            depends_on=body.get("depends_on") or (), kind=body.get("kind") or "job",
            message=body.get("message"), on_timeout=body.get("on_timeout") or "reject",
            script_name=body.get("script_name"), script=body.get("script"),
            affinity=body.get("affinity"), port=body.get("port"),
            restart=body.get("restart") or "on-failure", health=body.get("health"),
            workspace=body.get("workspace"), persist=bool(body.get("persist")))


@attrs.define(eq=False)
class JobRecord:
    """The scheduler's live view of one job (mutable, owned by the core)."""

    job_id: str  # the key: a standalone job's id, or RUN_ID/JOB_ID in a DAG run
    spec: JobSpec
    seq: int  # submission order: FIFO among equal priorities
    submitted_at: float
    state: JobState = JobState.PENDING
    queued: bool = False  # in a ready queue (PENDING and due)
    attempt: int = 0  # dispatches so far; the current one when RUNNING
    failures: int = 0
    worker_id: Optional[str] = None
    exit_code: Optional[int] = None
    reason: Optional[str] = None  # why it ended, or why it waits for a retry
    started_at: Optional[float] = None
    finished_at: Optional[float] = None
    ready_at: Optional[float] = None  # when a delayed or retried job becomes due
    parents_left: int = 0  # parents not yet COMPLETED
    # Keys of the jobs that depend on this one.  A tuple, not a list: a tuple of strings is
    # not tracked by the garbage collector, and a large run holds one per job.
    children: tuple = ()
    result: Any = None  # what the job published (small, JSON-like)
    decision: Optional[dict] = None  # a gate's: approved, by, comment, at
    run_id: Optional[str] = None
    worker_name: Optional[str] = None  # who ran it last (affinity to a parent's worker)
    service: Optional[dict] = None  # a service's last report: state, port, pid, restarts, ...
    released: bool = False  # a service whose dependents were let go (it came up once)
    queued_at: Optional[float] = None  # when it last joined a ready queue
    # Attempts that ended with another to follow (a retried failure, a lost worker's),
    # oldest first, the latest KEEP_ATTEMPTS of them: tuples of
    # (attempt, worker_name, started_at, finished_at, exit_code, outcome, reason).  Once the
    # job has ended, its last attempt is read from its own fields (views.attempts): a job
    # that runs once, as most do, carries nothing more.
    attempts: tuple = ()

    @property
    def node(self) -> str:
        """The job's id within its run (its key when it stands alone)."""
        return self.spec.job_id


# How many ended attempts a job keeps (the latest): a job retried 1,000 times stays small.
KEEP_ATTEMPTS = 20


def failed_outcome(reason: Optional[str]) -> str:
    """How a failed attempt ended: TIMED_OUT when its worker killed it at its timeout (the
    executor says "timeout after Ns"), else FAILED."""
    return "TIMED_OUT" if reason is not None and reason.startswith("timeout") else "FAILED"


class RunState(str, enum.Enum):
    RUNNING = "RUNNING"
    COMPLETED = "COMPLETED"  # every job COMPLETED
    FAILED = "FAILED"  # some job FAILED or DEAD
    CANCELLED = "CANCELLED"  # cancelled, or a gate rejected, and nothing failed


@attrs.define(eq=False)
class DagRun:
    run_id: str
    name: str
    created_at: float
    seq: int
    agent_run_id: Optional[str] = None
    stage: Optional[str] = None
    max_jobs: Optional[int] = None
    schedule_id: Optional[str] = None
    jobs: list = attrs.Factory(list)  # keys, in the order they were added
    counts: dict = attrs.Factory(dict)  # JobState -> how many jobs are in it
    left: int = 0  # jobs not yet in a terminal state
    state: RunState = RunState.RUNNING
    finished_at: Optional[float] = None
    version: int = 0  # bumped on every change, for watchers


@attrs.define(eq=False)
class Schedule:
    schedule_id: str
    name: str
    cron: str
    template: Any  # the events.RunTemplate each firing instantiates
    created_at: float
    fired: int = 0
    next_at: Optional[float] = None
    last_run_id: Optional[str] = None


@attrs.define(eq=False)
class WorkerRecord:
    worker_id: str
    name: str
    host: str
    tags: frozenset[str]
    slots: int
    joined_at: float
    last_seen: float
    seq: int  # join order, the last tie-breaker when choosing a worker
    state: WorkerState = WorkerState.ALIVE
    running: set[str] = attrs.Factory(set)  # job ids holding a slot, cancelled ones included
    completed: int = 0
    idle_since: Optional[float] = None  # when its last job ended (None while busy)
    # (load, completed, seq) as of the last change, kept by the scheduler while the worker
    # has a free slot: what least-loaded routing compares.
    rank: tuple = ()

    @property
    def free_slots(self) -> int:
        return self.slots - len(self.running)

    @property
    def load(self) -> float:
        return len(self.running) / self.slots if self.slots else 1.0
