"""What clients see: why a job waits, which job a name means, and the views of jobs, runs,
services and workers that status, watch and list answers are made of.  Read-only.

`Queries` is a part (methods of the Scheduler: the routers explain why a job waits); the
views are functions of a composed `Scheduler`.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Optional

from titan.core.dag import SubmitError, approval_gate_node, reference_gate_name
from titan.core.model import DagRun, JobRecord, JobState, RunState, WorkerRecord, \
    WorkerState, failed_outcome
from titan.core.parts.base import _PENDING, STOPPED_WITH_RUN, CoreState, _span

if TYPE_CHECKING:
    from titan.core.scheduler import Scheduler


class Queries(CoreState):
    def waiting_reason(self, job_id: str, now: float) -> Optional[str]:
        """Why a job is not running yet, in words a user understands."""
        job = self.jobs.get(job_id)
        if job is None:
            return None
        if job.state is JobState.WAITING_APPROVAL:
            left = max(0.0, (job.ready_at or now) - now)
            return f"waiting for approval ({job.spec.message}); {_span(left)} left"
        if job.state is not JobState.PENDING:
            return None
        if job.parents_left:
            waiting = []
            for p in job.spec.depends_on:
                parent = self.jobs[f"{job.run_id}/{p}"]
                if parent.state is JobState.COMPLETED or parent.released:
                    continue  # done, or a service that is up
                waiting.append(f"{p} to be up" if parent.spec.kind == "service" else p)
            return "waiting for " + ", ".join(waiting)
        if not job.queued:
            due = max(0.0, (job.ready_at or now) - now)
            if job.failures:
                return (f"retry {job.failures} of {job.spec.retries} in {due:.1f}s "
                        f"(last attempt: {job.reason})")
            return f"delayed; due in {due:.1f}s"
        live = [w for w in self.workers.values() if w.state is WorkerState.ALIVE]
        if not live:
            return "no live worker"
        for router in self.routers:
            why = router.explain(job, live) if hasattr(router, "explain") else None
            if why:
                return why
        return "waiting for a free slot"

    def resolve(self, ref: str) -> str:
        """The key of the job `ref` names: a key, `RUN/JOB`, or a bare job id that is
        unique among live runs (else among all)."""
        if ref in self.jobs:
            return ref
        if "/" not in ref and ref in self.nodes:
            keys = self.nodes[ref]
            live = [k for k in keys if self.runs[self.jobs[k].run_id].state
                    is RunState.RUNNING]
            for candidates in (live, keys):
                if len(candidates) == 1:
                    return candidates[0]
                if len(candidates) > 1:
                    runs = ", ".join(self.jobs[k].run_id for k in candidates[:5])
                    raise SubmitError(f"job {ref} is in several runs ({runs}); "
                                      f"say RUN/{ref}")
        # The reference's name of a `hitl_message` gate: hitl-gate-<id> is <id>.approval.
        run, sep, node = ref.rpartition("/")
        gate = approval_gate_node(node)
        if gate is not None:
            try:
                key = self.resolve(run + sep + gate)
            except SubmitError:
                key = None
            if key is not None and reference_gate_name(self.jobs[key].spec) == node:
                return key
        raise SubmitError(f"no job {ref}")


def phase(job: JobRecord) -> str:
    """What the dashboard colours a job by: its state, with a PENDING job that waits for a
    time told apart: DELAYED (its `delay`) or RETRYING (the backoff after a failure)."""
    state = job.state
    if state is _PENDING and job.ready_at is not None and not job.queued:
        return "RETRYING" if job.failures else "DELAYED"
    return state.value


_ENDED_AS = {JobState.COMPLETED: "COMPLETED", JobState.CANCELLED: "CANCELLED"}


def attempts(job: JobRecord) -> list[tuple]:
    """Every ended attempt the job keeps, oldest first: its history and, once the job has
    ended, the last attempt, which its own fields describe.  The running one is not in it."""
    kept = job.attempts
    if job.state.terminal and job.attempt and (not kept or kept[-1][0] != job.attempt):
        outcome = _ENDED_AS.get(job.state) or failed_outcome(job.reason)
        return [*kept, (job.attempt, job.worker_name, job.started_at, job.finished_at,
                        job.exit_code, outcome, job.reason)]
    return list(kept)


def job_view(s: Scheduler, job: JobRecord, now: float) -> dict:
    """What clients see of a job."""
    w = s.workers.get(job.worker_id) if job.worker_id else None
    spec = job.spec
    ended = attempts(job)
    return {
        "job_id": job.job_id, "name": spec.name, "state": job.state.value,
        "run_id": job.run_id, "node": job.node if job.run_id else None, "kind": spec.kind,
        "depends_on": list(spec.depends_on),
        "command": ([spec.script_name] if spec.script_name else []) + list(spec.command),
        "file": spec.script_name,  # a script shipped with the job: command is [file, *args]
        "priority": spec.priority,
        "tags": sorted(spec.tags), "attempt": job.attempt, "failures": job.failures,
        "retries": spec.retries, "worker_id": job.worker_id,
        "worker": w.name if w else None, "exit_code": job.exit_code, "reason": job.reason,
        "waiting": s.waiting_reason(job.job_id, now), "submitted_at": job.submitted_at,
        "started_at": job.started_at, "finished_at": job.finished_at,
        "ready_at": job.ready_at, "result": job.result, "decision": job.decision,
        "message": spec.message, "phase": phase(job),
        "attempts": [{"attempt": n, "worker": worker, "started_at": started,
                      "finished_at": finished, "exit_code": code, "state": outcome,
                      "reason": why}
                     for n, worker, started, finished, code, outcome, why in ended],
        # Attempts are numbered from 1: those before the oldest kept were dropped.
        "attempts_dropped": ended[0][0] - 1 if ended else 0,
    }


def run_view(s: Scheduler, run: DagRun, now: float, jobs: bool = True) -> dict:
    view = {
        "run_id": run.run_id, "name": run.name, "state": run.state.value,
        "agent_run_id": run.agent_run_id, "stage": run.stage,
        "schedule_id": run.schedule_id, "created_at": run.created_at,
        "finished_at": run.finished_at, "version": run.version, "total": len(run.jobs),
        "counts": {state.value: n for state, n in run.counts.items() if n},
    }
    if jobs:
        view["jobs"] = [run_job_view(s, s.jobs[k], now) for k in run.jobs]
    return view


def run_job_view(s: Scheduler, job: JobRecord, now: float) -> dict:
    """A job as a run's view lists it (and RUN_CHANGED pushes it)."""
    w = s.workers.get(job.worker_id) if job.worker_id else None
    return {"node": job.node, "job_id": job.job_id, "state": job.state.value,
            "phase": phase(job), "kind": job.spec.kind, "attempt": job.attempt,
            "failures": job.failures, "worker": w.name if w else None,
            "started_at": job.started_at, "finished_at": job.finished_at,
            "ready_at": job.ready_at, "reason": job.reason, "exit_code": job.exit_code}


def service_view(s: Scheduler, job: JobRecord, now: float) -> dict:
    """What `titan service list` shows of a service."""
    status = job.service or {}
    w = s.workers.get(job.worker_id) if job.worker_id else None
    if job.state is JobState.RUNNING:
        state = status.get("state") or "STARTING"
    elif job.state is JobState.CANCELLED or job.reason == STOPPED_WITH_RUN:
        state = "STOPPED"
    else:
        state = job.state.value
    since = status.get("since")
    return {
        "name": job.spec.name or job.node, "job_id": job.job_id, "state": state,
        "worker": job.worker_name, "host": w.host if w else None,
        "port": status.get("port"), "pid": status.get("pid") if job.state is JobState.RUNNING
        else None, "restarts": status.get("restarts", 0),
        "uptime": round(now - since, 1) if since and state == "RUNNING" else None,
        # None: no health check to pass (not "unhealthy").
        "healthy": status.get("healthy") if job.spec.health else None, "reason": job.reason,
        "command": list(job.spec.command), "restart": job.spec.restart,
        "health": job.spec.health, "last_lines": status.get("last_lines") or [],
        # Why its health check fails (its worker says), and how its process last ended.
        "health_error": status.get("health_error") if job.state is JobState.RUNNING else None,
        "last_exit": status.get("last_exit"),
    }


def worker_view(w: WorkerRecord, now: float) -> dict:
    return {
        "worker_id": w.worker_id, "name": w.name, "host": w.host, "tags": sorted(w.tags),
        "slots": w.slots, "busy": len(w.running), "state": w.state.value,
        "last_heartbeat_ago": round(now - w.last_seen, 3), "joined_at": w.joined_at,
        "completed": w.completed,
        "idle_for": None if w.running or w.idle_since is None else round(now - w.idle_since, 1),
    }
