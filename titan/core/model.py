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

    @property
    def terminal(self) -> bool:
        return self in TERMINAL_STATES


TERMINAL_STATES = frozenset(
    {JobState.COMPLETED, JobState.FAILED, JobState.DEAD, JobState.CANCELLED})


class WorkerState(str, enum.Enum):
    ALIVE = "ALIVE"
    DISCONNECTED = "DISCONNECTED"  # connection lost; its jobs wait for it until the heartbeat timeout
    DEAD = "DEAD"


def _tags(value: Any) -> frozenset[str]:
    """Tags, case-insensitive (kept upper-case).  A plain string is one comma-separated
    list ("gpu,cuda"), never a sequence of one-letter tags."""
    if isinstance(value, str):
        value = value.split(",")
    return frozenset(str(t).strip().upper() for t in (value or ()) if str(t).strip())


@attrs.frozen
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

    def to_wire(self) -> dict[str, Any]:
        return {
            "job_id": self.job_id, "command": list(self.command),
            "env": dict(self.env), "cwd": self.cwd, "priority": self.priority,
            "tags": sorted(self.tags), "timeout": self.timeout, "retries": self.retries,
            "delay": self.delay, "name": self.name,
        }

    @classmethod
    def from_wire(cls, body: dict[str, Any]) -> "JobSpec":
        return cls(
            job_id=body["job_id"], command=body["command"],
            env=tuple(sorted((body.get("env") or {}).items())), cwd=body.get("cwd"),
            priority=body.get("priority") or 0, tags=body.get("tags") or (),
            timeout=body.get("timeout"), retries=body.get("retries") or 0,
            delay=body.get("delay") or 0.0, name=body.get("name"))


@attrs.define(eq=False)
class JobRecord:
    """The scheduler's live view of one job (mutable, owned by the core)."""

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

    @property
    def job_id(self) -> str:
        return self.spec.job_id


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

    @property
    def free_slots(self) -> int:
        return self.slots - len(self.running)

    @property
    def load(self) -> float:
        return len(self.running) / self.slots if self.slots else 1.0
