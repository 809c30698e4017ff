"""Events into the core and decisions out of it.

Every event is plain data (what a persistence backend stores and replays); every decision is
plain data (what the master service carries out as frames, timers and notifications).
"""
from __future__ import annotations

from typing import Any, Hashable, Iterable, Optional

import attrs

from titan.core.model import JobSpec, JobState, RunState, WorkerState


# Events and decisions are values: frozen attrs classes.  The few made once or more per job
# (a finish, a dispatch, an end, a run change) are built by `hot` instead: the same slotted
# attrs class with equality but without the frozen guard, whose object.__setattr__ per field
# makes construction two to three times slower.  Nothing mutates them either way.
hot = attrs.define(eq=True, unsafe_hash=True)


# -- events ------------------------------------------------------------------------------

@hot
class JobSubmitted:
    spec: JobSpec


@attrs.frozen
class JobReport:
    """A worker's account of one job: still running (`exit_code` unset) or ended."""

    job_id: str
    attempt: int
    exit_code: Optional[int] = None
    reason: Optional[str] = None


@attrs.frozen
class WorkerJoined:
    """A worker said hello: first time, or again after a lost connection."""

    worker_id: str
    name: str
    host: str
    tags: frozenset[str]
    slots: int
    running: tuple[JobReport, ...] = ()
    finished: tuple[JobReport, ...] = ()  # ended while it had no master


@attrs.frozen
class WorkerHeartbeat:
    worker_id: str


@attrs.frozen
class WorkerDisconnected:
    worker_id: str


@attrs.frozen
class WorkerLost:
    """A worker is given up for dead (no heartbeat in time): its jobs run elsewhere."""

    worker_id: str
    reason: str


@attrs.frozen
class WorkerRetiring:
    """A worker is drained (by the autoscaler, or an operator): it takes no new jobs from
    now on, keeps what it runs, and is told to leave once it runs nothing."""

    worker_id: str
    reason: str = ""


@attrs.frozen
class MasterRestarted:
    """The master came back from its log: every worker must say hello again in time."""


@attrs.frozen
class JobStarted:
    job_id: str
    worker_id: str
    attempt: int


@hot
class JobFinished:
    job_id: str
    worker_id: str
    attempt: int
    exit_code: Optional[int]  # None when the process did not exit by itself
    reason: Optional[str] = None  # "timeout after 5s", "killed by signal 9", "spawn failed: …"


@attrs.frozen
class CancelRequested:
    job_id: str
    reason: str = "cancelled by request"


@attrs.frozen
class RunTemplate:
    """What a DAG run is made of, before it has a run id."""

    name: str
    specs: tuple[JobSpec, ...]  # job ids and depends_on are ids within the run
    agent_run_id: Optional[str] = None
    stage: Optional[str] = None
    max_jobs: Optional[int] = None
    # Derived, not part of the value: each job's children, worked out once per template
    # (see `children_of`) and shared by every run made from it.
    _children: Optional[dict] = attrs.field(default=None, init=False, eq=False, repr=False)


def children_of(specs: Iterable[JobSpec]) -> dict[str, tuple[str, ...]]:
    """Node id -> the ids of the jobs among `specs` that depend on it."""
    children: dict[str, list[str]] = {}
    for spec in specs:
        for parent in spec.depends_on:
            children.setdefault(parent, []).append(spec.job_id)
    return {node: tuple(kids) for node, kids in children.items()}


def template_children(t: RunTemplate, known: Optional[dict] = None
                      ) -> dict[str, tuple[str, ...]]:
    """`children_of(t.specs)`, cached on the template (frozen, so set past attrs); `known`:
    that map, if the caller has worked it out already."""
    if t._children is None:
        object.__setattr__(t, "_children", known if known is not None else children_of(t.specs))
    return t._children


@attrs.frozen
class DagSubmitted:
    run_id: str
    template: RunTemplate


@attrs.frozen
class JobsAdded:
    """A DAG run grows while it runs (`by`: the job or client that added them)."""

    run_id: str
    specs: tuple[JobSpec, ...]  # ids within the run, as in a RunTemplate
    by: str = ""


@attrs.frozen
class RunCancelRequested:
    run_id: str
    reason: str = "cancelled by request"


@attrs.frozen
class GateDecided:
    job_id: str
    approved: bool
    by: str  # the name the decider gave (or "timeout", "store")
    comment: str = ""
    via: str = ""  # how it came: the credential and path the master saw (docs/security.md)


@attrs.frozen
class ResultSet:
    job_id: str
    value: Any


@attrs.frozen
class ScheduleAdded:
    schedule_id: str
    cron: str
    template: RunTemplate


@attrs.frozen
class ScheduleRemoved:
    schedule_id: str


@attrs.frozen
class ServiceReported:
    """A worker's news of a service it keeps: up, restarting, unhealthy..."""

    job_id: str
    worker_id: str
    attempt: int
    status: dict


@attrs.frozen
class Forget:
    """Retention: the master forgets these finished standalone jobs and finished runs (with
    their jobs).  Proposed by the core when more than `keep_finished` finished jobs are
    remembered; recorded, so a replay forgets exactly what the live master forgot."""

    job_ids: tuple[str, ...] = ()
    run_ids: tuple[str, ...] = ()


@attrs.frozen
class TimerFired:
    key: Hashable


@attrs.frozen
class Tick:
    """Time passes: check heartbeats."""


@attrs.define
class LogWritten:
    """The master kept `size` more bytes of a job's output.  Not recorded: the log files are
    their own record, and a master that restarts tells the core what they hold.  Retention
    counts these bytes (`keep_log_bytes`) as well as jobs."""

    job_id: str
    size: int


# -- decisions ---------------------------------------------------------------------------

@attrs.frozen
class Propose:
    """The core saw something happen with time (a heartbeat missed): the service records
    `event` and applies it, so that a replay sees it happen at the same point."""

    event: object


@hot
class Dispatch:
    worker_id: str
    job_id: str
    attempt: int
    spec: JobSpec
    run_id: Optional[str] = None


@attrs.frozen
class Kill:
    worker_id: str
    job_id: str
    attempt: int
    reason: str


@attrs.frozen
class SetTimer:
    key: Hashable
    at: float


@hot
class JobEnded:
    """A job reached a terminal state (waiters and watchers wake on it).  Moves between
    non-terminal states are not announced: nothing outside the core acts on them, and a
    100,000-job run would pay for 200,000 decisions nobody reads."""

    job_id: str
    state: JobState


@hot
class RunChanged:
    run_id: str
    state: RunState
    version: int
    jobs: tuple = ()  # keys of the run's jobs that moved (or joined it) in this event


@attrs.frozen
class Forgotten:
    """Jobs the core no longer knows (their logs can go)."""

    job_ids: tuple[str, ...]


@attrs.frozen
class WorkerChanged:
    worker_id: str
    state: WorkerState
    reason: str = ""
