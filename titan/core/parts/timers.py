"""Timers: what waits for a time (a delayed job, a retry's backoff, a gate's timeout, a cron
firing) is a `SetTimer(key, at)` decision; the master's clock answers with `TimerFired(key)`.
A key is (kind, id, n): n tells a stale timer (an older retry, an earlier firing) from the
current one, so a timer that fires late changes nothing.

Calls `_enqueue`, `_dispatch` (placement), `_fire` (schedules), `_gate_timed_out` (gates).
"""
from __future__ import annotations

from titan.core import events as ev
from titan.core.model import JobRecord, JobState
from titan.core.parts.base import CoreState, Decisions


def pending_timers(s: CoreState) -> list:
    """The timers the state implies (after a recovery, nothing else remembers them)."""
    timers = []
    for job in s.jobs.values():
        if job.ready_at is None:
            continue
        if job.state is JobState.WAITING_APPROVAL:
            timers.append(ev.SetTimer(("gate", job.job_id, 0), job.ready_at))
        elif job.state is JobState.PENDING and not job.queued and not job.parents_left:
            timers.append(ev.SetTimer(("ready", job.job_id, job.failures), job.ready_at))
    for sched in s.schedules.values():
        if sched.next_at is not None:
            timers.append(ev.SetTimer(("cron", sched.schedule_id, sched.fired), sched.next_at))
    return timers


class Timers(CoreState):
    def _timer_fired(self, e: ev.TimerFired, now: float, out: Decisions) -> None:
        if not (isinstance(e.key, tuple) and len(e.key) == 3):
            return
        kind, ident, n = e.key
        if kind == "cron":
            sched = self.schedules.get(ident)
            if sched is not None and sched.fired == n:
                self._fire(sched, now, out)
            return
        job = self.jobs.get(ident)
        if job is None:
            return
        if kind == "ready" and job.state is JobState.PENDING and not job.queued \
                and job.failures == n and not job.parents_left:
            job.ready_at = None
            self._enqueue(job)
            self._dispatch(now, out)
        elif kind == "gate" and job.state is JobState.WAITING_APPROVAL:
            self._gate_timed_out(job, now, out)

    def _defer(self, job: JobRecord, at: float, key: tuple, out: Decisions) -> None:
        job.ready_at = at
        out.append(ev.SetTimer(key, at))
