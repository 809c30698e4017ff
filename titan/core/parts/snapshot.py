"""The whole state of a scheduler as plain data (what compaction writes instead of the log
so far), and back.  Version 2; version 1 (children by key, no retention queue) still loads,
and so does a version 2 from before jobs kept their ended attempts ("attempts" absent).

Functions of a composed `Scheduler`: `restore` rebuilds the ready queues and the index of
free workers through `_enqueue` and `_refresh` (placement).
"""
from __future__ import annotations

from typing import TYPE_CHECKING

from titan.core.model import DagRun, JobRecord, JobState, RunState, Schedule, WorkerRecord, \
    WorkerState
from titan.core.parts.base import _TERMINAL

if TYPE_CHECKING:
    from titan.core.scheduler import Scheduler


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
        # Apart from the jobs' rows, and only for jobs that have any: most have none.
        "attempts": {j.job_id: [list(a) for a in j.attempts]
                     for j in s.jobs.values() if j.attempts},
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
    for job_id, kept in (data.get("attempts") or {}).items():
        s.jobs[job_id].attempts = tuple(tuple(a) for a in kept)
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
