"""Events into the core and decisions out of it.

Every event is plain data (what a persistence backend stores and replays); every decision is
plain data (what the master service carries out as frames, timers and notifications).
"""
from __future__ import annotations

from typing import Hashable, Optional

import attrs

from titan.core.model import JobSpec, JobState, WorkerState


# -- events ------------------------------------------------------------------------------

@attrs.frozen
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
class JobStarted:
    job_id: str
    worker_id: str
    attempt: int


@attrs.frozen
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
class TimerFired:
    key: Hashable


@attrs.frozen
class Tick:
    """Time passes: check heartbeats."""


# -- decisions ---------------------------------------------------------------------------

@attrs.frozen
class Dispatch:
    worker_id: str
    job_id: str
    attempt: int
    spec: JobSpec


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


@attrs.frozen
class JobChanged:
    job_id: str
    state: JobState


@attrs.frozen
class WorkerChanged:
    worker_id: str
    state: WorkerState
    reason: str = ""
