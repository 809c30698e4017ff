"""Approval gates: a job of kind "gate" runs nothing; once its parents have completed it
waits for a person (WAITING_APPROVAL) until someone approves it (COMPLETED: its dependents
go) or rejects it (CANCELLED: they are cancelled), or its timeout decides as `on_timeout`
says.

Calls `_set_state` (jobs), `_defer` (timers), `_dispatch` (placement).
"""
from __future__ import annotations

from titan.core import events as ev
from titan.core.dag import GATE_TIMEOUT
from titan.core.model import JobRecord, JobState
from titan.core.parts.base import CoreState, Decisions, _span


class Gates(CoreState):
    def _await_approval(self, job: JobRecord, now: float, out: Decisions) -> None:
        """The gate's parents have completed: it waits for a person, until its timeout."""
        self._set_state(job, JobState.WAITING_APPROVAL, out)
        job.started_at = now
        # parse_job gives every gate its timeout; a spec built in code may not have one,
        # and then gets the same 48 h rather than timing out at once.
        self._defer(job, now + (job.spec.timeout or GATE_TIMEOUT), ("gate", job.job_id, 0), out)

    def _gate_timed_out(self, job: JobRecord, now: float, out: Decisions) -> None:
        approve = job.spec.on_timeout == "approve"
        self._gate_decided(ev.GateDecided(
            job.job_id, approve, "timeout",
            f"no decision within {_span(job.spec.timeout or 0)}"), now, out)

    def _gate_decided(self, e: ev.GateDecided, now: float, out: Decisions) -> None:
        job = self.jobs.get(e.job_id)
        if job is None or job.state is not JobState.WAITING_APPROVAL:
            return
        job.decision = {"approved": e.approved, "by": e.by, "comment": e.comment, "at": now}
        if e.via:
            job.decision["via"] = e.via
        job.finished_at = now
        job.ready_at = None
        if e.approved:
            job.reason = None
            self._set_state(job, JobState.COMPLETED, out)
        else:
            job.reason = f"rejected by {e.by}" + (f": {e.comment}" if e.comment else "")
            self._set_state(job, JobState.CANCELLED, out)
        self._dispatch(now, out)
