"""The scheduler: a pure state machine.

`Scheduler.apply(event, now)` changes the state and returns the decisions that follow from
it.  Nothing here touches a socket, a timer or a disk, and time enters only as `now`, so the
same events always give the same decisions: that is what makes it testable with
`task.Clock`, benchmarkable alone, and replayable from a log.

Jobs stand alone or belong to a DAG run.  Readiness is pushed: a job counts its parents that
have not COMPLETED, and each completion decrements its children's counts, so a completion
costs O(children), never O(jobs).
"""
from __future__ import annotations

import random
from typing import Callable, Iterable, Optional

from titan.core import events as ev
from titan.core.dag import (SubmitError, approval_gate_node, check_graph,
                            reference_gate_name)
from titan.core.model import (
    DagRun, JobRecord, JobSpec, JobState, RunState, Schedule, WorkerRecord,
    WorkerState)

from titan.core.parts.validation import DEFAULT_MAX_JOBS_PER_RUN, Validation
from titan.core.parts.jobs import Jobs
from titan.core.parts.runs import Runs
from titan.core.parts.services import STOPPED_WITH_RUN, Services
from titan.core.parts.gates import Gates
from titan.core.parts.workers import Workers
from titan.core.parts.placement import Placement
from titan.core.parts.timers import Timers, pending_timers
from titan.core.cron import cron_next, cron_valid
from titan.core.parts.schedules import Schedules
from titan.core.parts.retention import DEFAULT_FORGET_GRACE, DEFAULT_KEEP_FINISHED, Retention
from titan.core.parts.base import (_ALIVE, _COMPLETED, _PENDING, _RUNNING, _TERMINAL,
                                   CoreState, Decisions, _live, _span)




class Scheduler(Validation, Jobs, Runs, Services, Gates, Workers, Placement, Timers, Schedules, Retention, CoreState):
    def __init__(self, heartbeat_timeout: float = 10.0, backoff_base: float = 1.0,
                 backoff_cap: float = 60.0, rng: Optional[random.Random] = None,
                 max_jobs_per_run: int = DEFAULT_MAX_JOBS_PER_RUN,
                 routers: Optional[Iterable] = None,
                 keep_finished: int = DEFAULT_KEEP_FINISHED,
                 forget_grace: float = DEFAULT_FORGET_GRACE,
                 keep_log_bytes: Optional[int] = None) -> None:
        self._init_workers(heartbeat_timeout)
        self._init_validation(max_jobs_per_run)
        self._init_retention(keep_finished, forget_grace, keep_log_bytes)
        self._init_placement(routers)
        self._init_jobs(backoff_base, backoff_cap, rng or random.Random(0))
        self._init_core()
        self._init_runs()
        self._handlers: dict[type, Callable] = {
            ev.JobSubmitted: self._job_submitted,
            ev.DagSubmitted: self._dag_submitted,
            ev.JobsAdded: self._jobs_added,
            ev.WorkerJoined: self._worker_joined,
            ev.WorkerHeartbeat: self._heartbeat,
            ev.WorkerDisconnected: self._worker_disconnected,
            ev.JobStarted: self._job_started,
            ev.JobFinished: self._job_finished,
            ev.CancelRequested: self._cancel,
            ev.RunCancelRequested: self._run_cancel,
            ev.GateDecided: self._gate_decided,
            ev.ResultSet: self._result_set,
            ev.ScheduleAdded: self._schedule_added,
            ev.ScheduleRemoved: self._schedule_removed,
            ev.TimerFired: self._timer_fired,
            ev.Tick: self._tick,
            ev.LogWritten: self._log_written,
            ev.WorkerLost: self._worker_lost,
            ev.MasterRestarted: self._master_restarted,
            ev.WorkerRetiring: self._worker_retiring,
            ev.ServiceReported: self._service_reported,
            ev.Forget: self._forget,
        }

    # -- entry points --------------------------------------------------------------------

    def apply(self, event: object, now: float) -> Decisions:
        out: Decisions = []
        self._now = now
        self._handlers[type(event)](event, now, out)
        if self._dirty_runs:
            # One RunChanged per run and event, however many of its jobs moved.
            moved = self._moved
            if len(self._dirty_runs) == 1:
                keys = tuple([job.job_id for job in moved])
                for run in self._dirty_runs.values():
                    run.version += 1
                    out.append(ev.RunChanged(run.run_id, run.state, run.version, keys))
            else:
                for run in self._dirty_runs.values():
                    run.version += 1
                    run_id = run.run_id
                    out.append(ev.RunChanged(run_id, run.state, run.version, tuple(
                        [job.job_id for job in moved if job.run_id == run_id])))
            self._dirty_runs.clear()
            moved.clear()
        elif self._moved:
            self._moved.clear()
        return out

    def replay(self, events: Iterable[tuple[float, object]]) -> int:
        """Apply recorded `(at, event)`s, as recovery does: the same handlers as `apply`,
        without announcing what follows (a dispatch, a job's end): those decisions were
        carried out when the events were new.  Every other decision is made and dropped,
        as `apply`'s caller would drop it.  Returns how many were applied (also kept in
        `replayed`, for a caller whose iterable raised)."""
        handlers, dirty, moved = self._handlers, self._dirty_runs, self._moved
        out: Decisions = []
        count = 0
        self._announce = False
        try:
            for at, event in events:
                self._now = at
                handlers[type(event)](event, at, out)
                if dirty:
                    for run in dirty.values():
                        run.version += 1
                    dirty.clear()
                    moved.clear()
                if out:
                    out.clear()
                count += 1
        finally:
            self._announce = True
            self.replayed = count
        return count

    # -- queries -------------------------------------------------------------------------

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

    # -- event handlers: submissions -----------------------------------------------------

    # -- event handlers: workers ---------------------------------------------------------

    # -- event handlers: people ----------------------------------------------------------

    # -- event handlers: time ------------------------------------------------------------

    # -- state changes -------------------------------------------------------------------

    # -- retention -------------------------------------------------------------------------

    # -- helpers -------------------------------------------------------------------------

_STATES = {state.value: state for state in JobState}


def snapshot(s: Scheduler) -> dict:
    """The whole state as plain data (what compaction writes instead of the log so far)."""
    from titan.core.codec import spec_to_record, template_to_wire
    return {
        "v": 2, "seq": s._seq, "worker_seq": s._worker_seq, "run_seq": s._run_seq,
        "rng": [s.rng.getstate()[0], list(s.rng.getstate()[1]), s.rng.getstate()[2]],
        "workers": [[w.worker_id, w.name, w.host, sorted(w.tags), w.slots, w.joined_at,
                     w.last_seen, w.seq, w.state.value, sorted(w.running), w.completed,
                     w.idle_since]
                    for w in s.workers.values()],
        "jobs": [[j.job_id, spec_to_record(j.spec), j.seq, j.submitted_at, j.state.value,
                  j.queued, j.attempt, j.failures, j.worker_id, j.exit_code, j.reason,
                  j.started_at, j.finished_at, j.ready_at, j.parents_left, j.children, j.result,
                  j.decision, j.run_id, j.worker_name, j.queued_at, j.service, j.released]
                 for j in s.jobs.values()],
        "runs": [[r.run_id, r.name, r.created_at, r.seq, r.agent_run_id, r.stage, r.max_jobs,
                  r.schedule_id, r.jobs, {k.value: n for k, n in r.counts.items()}, r.left,
                  r.state.value, r.finished_at, r.version] for r in s.runs.values()],
        "agent_runs": s.agent_runs,
        "finished": [list(item) for item in s._finished],
        "schedules": [[c.schedule_id, c.name, c.cron, template_to_wire(c.template),
                       c.created_at, c.fired, c.next_at, c.last_run_id]
                      for c in s.schedules.values()],
    }


def restore(s: Scheduler, data: dict) -> None:
    """Load a `snapshot` into a fresh scheduler."""
    from titan.core.codec import spec_from_record, template_from_wire
    form = data.get("v")
    if form not in (1, 2):
        raise ValueError(f"unknown snapshot version {form!r}")
    # Version 1 named a job's children by key (RUN/JOB); version 2 by id within the run.
    s._seq, s._worker_seq, s._run_seq = data["seq"], data["worker_seq"], data["run_seq"]
    version, state, gauss = data["rng"]
    s.rng.setstate((version, tuple(state), gauss))
    nodes: dict[str, list[str]] = {}
    for (worker_id, name, host, tags, slots, joined_at, last_seen, seq, wstate, running,
         completed, idle_since) in data["workers"]:
        s.workers[worker_id] = WorkerRecord(
            worker_id=worker_id, name=name, host=host, tags=frozenset(tags), slots=slots,
            joined_at=joined_at, last_seen=last_seen, seq=seq, state=WorkerState(wstate),
            running=set(running), completed=completed, idle_since=idle_since)
        s._refresh(s.workers[worker_id])
    for (job_id, spec, seq, submitted_at, state, queued, attempt, failures, worker_id,
         exit_code, reason, started_at, finished_at, ready_at, parents_left, children,
         result, decision, run_id, worker_name, queued_at, service, released) in data["jobs"]:
        if form == 1:
            children = [c.rsplit("/", 1)[-1] for c in children]
        job = JobRecord(job_id=job_id, spec=spec_from_record(spec), seq=seq,
                        submitted_at=submitted_at, state=_STATES[state], queued=queued,
                        attempt=attempt, failures=failures, worker_id=worker_id,
                        exit_code=exit_code, reason=reason, started_at=started_at,
                        finished_at=finished_at, ready_at=ready_at,
                        parents_left=parents_left, children=tuple(children), result=result,
                        decision=decision, run_id=run_id, worker_name=worker_name,
                        service=service, released=released)
        s.jobs[job_id] = job
        if queued:
            s._enqueue(job)
        job.queued_at = queued_at
    for (run_id, name, created_at, seq, agent_run_id, stage, max_jobs, schedule_id, jobs,
         counts, left, state, finished_at, version) in data["runs"]:
        s.runs[run_id] = DagRun(
            run_id=run_id, name=name, created_at=created_at, seq=seq,
            agent_run_id=agent_run_id, stage=stage, max_jobs=max_jobs,
            schedule_id=schedule_id, jobs=jobs,
            counts={_STATES[k]: n for k, n in counts.items()}, left=left,
            state=RunState(state), finished_at=finished_at, version=version)
        if state == RunState.RUNNING.value:
            # What the run waits for: jobs that have not ended, less services that are up
            # (snapshots from before services let their run end counted those too).
            s.runs[run_id].left = sum(1 for key in jobs if not s.jobs[key].state.terminal
                                      and not s.jobs[key].released)
        for key in jobs:
            nodes.setdefault(s.jobs[key].node, []).append(key)
    s.nodes.update((node, tuple(keys)) for node, keys in nodes.items())
    if "finished" in data:
        s._finished.extend(tuple(item) for item in data["finished"])
    else:  # version 1 kept no retention queue: what has finished, in the order it did
        ended = [(j.finished_at or 0.0, j.seq, "job", j.job_id, 1) for j in s.jobs.values()
                 if j.run_id is None and j.state in _TERMINAL]
        ended += [(r.finished_at or 0.0, r.seq, "run", r.run_id, len(r.jobs))
                  for r in s.runs.values() if r.state is not RunState.RUNNING]
        s._finished.extend((*item[2:], item[0]) for item in sorted(ended))
    s._finished_jobs = sum(item[2] for item in s._finished)
    s.agent_runs.update(data["agent_runs"])
    for (schedule_id, name, cron, template, created_at, fired, next_at,
         last_run_id) in data["schedules"]:
        s.schedules[schedule_id] = Schedule(
            schedule_id=schedule_id, name=name, cron=cron,
            template=template_from_wire(template), created_at=created_at, fired=fired,
            next_at=next_at, last_run_id=last_run_id)


def job_view(s: Scheduler, job: JobRecord, now: float) -> dict:
    """What clients see of a job."""
    w = s.workers.get(job.worker_id) if job.worker_id else None
    spec = job.spec
    return {
        "job_id": job.job_id, "name": spec.name, "state": job.state.value,
        "run_id": job.run_id, "node": job.node if job.run_id else None, "kind": spec.kind,
        "depends_on": list(spec.depends_on),
        "command": ([spec.script_name] if spec.script_name else []) + list(spec.command),
        "priority": spec.priority,
        "tags": sorted(spec.tags), "attempt": job.attempt, "failures": job.failures,
        "retries": spec.retries, "worker_id": job.worker_id,
        "worker": w.name if w else None, "exit_code": job.exit_code, "reason": job.reason,
        "waiting": s.waiting_reason(job.job_id, now), "submitted_at": job.submitted_at,
        "started_at": job.started_at, "finished_at": job.finished_at,
        "ready_at": job.ready_at, "result": job.result, "decision": job.decision,
        "message": spec.message,
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
            "kind": job.spec.kind, "attempt": job.attempt, "worker": w.name if w else None,
            "started_at": job.started_at, "finished_at": job.finished_at,
            "reason": job.reason, "exit_code": job.exit_code}


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
        "healthy": status.get("healthy"), "reason": job.reason,
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


__all__ = ["Scheduler", "SubmitError", "JobSpec", "job_view", "run_view", "worker_view",
           "cron_next", "cron_valid"]
