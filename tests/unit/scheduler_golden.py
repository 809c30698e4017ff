"""A busy, deterministic scenario for the scheduler, and what it produced before the split.

`busy()` drives one Scheduler through every kind of event (workers with tags joining, lost
and coming back with reports, standalone jobs with priorities, delays and retries, DAG runs
with gates, services, affinity and growth, cancels, cron firings, results, log bytes and
retention) and returns the JSON text of its snapshot (at three points) and the decisions it
made, one per line.  tests/unit/golden_snapshot.json and golden_decisions.txt hold what the one-class
scheduler (before it was split into parts) produced; test_core_golden compares.

    python -m tests.unit.scheduler_golden   # rewrite the golden files (only on purpose)
"""
from __future__ import annotations

import json
import os
import random

from titan.core import events as ev
from titan.core.dag import parse_dag
from titan.core.model import JobSpec
from titan.core.scheduler import Scheduler, pending_timers, snapshot

HERE = os.path.dirname(os.path.abspath(__file__))
SNAPSHOT = os.path.join(HERE, "golden_snapshot.json")
DECISIONS = os.path.join(HERE, "golden_decisions.txt")
START = 1_700_000_000.0


def _template(name: str, jobs: list, **extra) -> ev.RunTemplate:
    return parse_dag({"name": name, "jobs": jobs, **extra})


def busy() -> tuple[str, str]:
    s = Scheduler(heartbeat_timeout=10.0, rng=random.Random(7), keep_finished=12,
                  forget_grace=5.0, keep_log_bytes=50_000)
    lines: list[str] = []
    snaps: list[str] = []  # the snapshot at three points: busy, settled, all workers lost
    now = START
    running: list[tuple[str, str, int]] = []  # (job, worker, attempt) dispatched, not ended

    def apply(event: object) -> list:
        out = s.apply(event, now)
        for d in out:
            lines.append(f"{now:.1f} {d!r}")
            if isinstance(d, ev.Dispatch):
                running.append((d.job_id, d.worker_id, d.attempt))
            elif isinstance(d, ev.Propose):
                apply(d.event)
        for t in pending_timers(s):
            lines.append(f"  timer {t!r}")
        return out

    def finish(count: int, fail_every: int = 0) -> None:
        for i in range(min(count, len(running))):
            job_id, worker_id, attempt = running.pop(0)
            job = s.jobs.get(job_id)
            if job is not None and job.spec.kind == "service":
                running.append((job_id, worker_id, attempt))  # services stay up
                continue
            code = 1 if fail_every and i % fail_every == 0 else 0
            apply(ev.JobStarted(job_id, worker_id, attempt))
            apply(ev.LogWritten(job_id, 3000 + 100 * i))
            apply(ev.JobFinished(job_id, worker_id, attempt, code,
                                 None if code == 0 else None))

    apply(ev.WorkerJoined("w1", "alpha", "h1", frozenset(), 2))
    apply(ev.WorkerJoined("w2", "beta", "h2", frozenset({"GPU"}), 1))
    apply(ev.WorkerJoined("w3", "gamma", "h3", frozenset({"GENERAL"}), 3))
    for i in range(8):
        apply(ev.JobSubmitted(JobSpec(f"s{i}", ("echo", str(i)), priority=i % 3,
                                      retries=1 if i % 2 else 0,
                                      delay=2.0 if i == 5 else 0.0,
                                      tags={"GPU"} if i == 3 else frozenset())))
    apply(ev.DagSubmitted("etl", _template("etl", [
        {"id": "fetch", "command": ["fetch"]},
        {"id": "db", "type": "service", "command": ["db"], "port": "auto"},
        {"id": "clean", "command": ["clean"], "depends_on": ["fetch", "db"],
         "affinity": "parent"},
        {"id": "review", "kind": "gate", "depends_on": ["clean"], "message": "ok?",
         "timeout": 30},
        {"id": "ship", "command": ["ship"], "depends_on": ["review"], "retries": 2},
        {"id": "web", "type": "service", "command": ["web"]},
    ], agent_run_id="agent-1", stage="PLAN")))
    now += 1
    finish(4, fail_every=2)
    db = s.jobs["etl/db"]
    if db.state.value == "RUNNING":
        apply(ev.ServiceReported("etl/db", db.worker_id, db.attempt,
                                 {"state": "RUNNING", "port": 4100, "pid": 77,
                                  "since": now}))
    apply(ev.WorkerHeartbeat("w1"))
    now += 3
    apply(ev.Tick())
    apply(ev.TimerFired(("ready", "s5", 0)))
    for key in sorted(s.jobs):
        job = s.jobs[key]
        if job.ready_at is not None and job.state.value == "PENDING" and not job.queued:
            apply(ev.TimerFired(("ready", key, job.failures)))
    finish(6)
    apply(ev.JobsAdded("etl", (JobSpec("extra", ("x",), depends_on=("fetch",)),
                               JobSpec("extra2", ("y",), depends_on=("extra", "clean"))),
                       by="fetch"))
    apply(ev.ResultSet("etl/fetch", {"rows": 12}))
    apply(ev.ScheduleAdded("nightly", "*/5 * * * *", _template("nightly", [
        {"id": "a", "command": ["a"]}, {"id": "b", "command": ["b"], "depends_on": ["a"]}])))
    now += 2
    finish(5, fail_every=3)
    apply(ev.WorkerDisconnected("w3"))
    apply(ev.WorkerRetiring("w2", "idle"))
    now += 11
    apply(ev.Tick())  # w3 (and the others without heartbeats) proposed lost
    apply(ev.WorkerJoined("w4", "delta", "h4", frozenset({"GPU", "HIGH_MEM"}), 2))
    apply(ev.WorkerJoined("w1", "alpha", "h1", frozenset(), 2,
                          running=tuple(ev.JobReport(j, a) for j, w, a in running
                                        if w == "w1"),
                          finished=()))
    running[:] = [r for r in running if r[1] in ("w1", "w4")]
    for key in sorted(s.jobs):
        if s.jobs[key].state.value == "WAITING_APPROVAL":
            apply(ev.GateDecided(key, True, "ann", "fine", via="token:ops"))
    snaps.append(json.dumps(snapshot(s), indent=0))
    now += 1
    finish(10)
    apply(ev.TimerFired(("cron", "nightly", 0)))
    apply(ev.CancelRequested("s7", "cancelled by request"))
    apply(ev.DagSubmitted("doomed", _template("doomed", [
        {"id": "a", "command": ["a"]}, {"id": "b", "command": ["b"], "depends_on": ["a"]},
        {"id": "g", "kind": "gate", "depends_on": ["a"], "message": "go?"}])))
    apply(ev.RunCancelRequested("doomed", "cancelled: not today"))
    for round_ in range(4):
        now += 3
        finish(10, fail_every=4 if round_ == 0 else 0)
        for key in sorted(s.jobs):
            job = s.jobs[key]
            if job.ready_at is not None and job.state.value == "PENDING" and not job.queued \
                    and not job.parents_left:
                apply(ev.TimerFired(("ready", key, job.failures)))
        apply(ev.WorkerHeartbeat("w1"))
        apply(ev.WorkerHeartbeat("w4"))
        apply(ev.Tick())
    for i in range(20):
        apply(ev.JobSubmitted(JobSpec(f"late{i}", ("true",))))
        finish(2)
        now += 0.5
    snaps.append(json.dumps(snapshot(s), indent=0))
    now += 10
    apply(ev.Tick())
    apply(ev.MasterRestarted())
    apply(ev.ScheduleRemoved("nightly"))
    snaps.append(json.dumps(snapshot(s), indent=0))
    return "\n---\n".join(snaps) + "\n", "\n".join(lines) + "\n"


def write() -> None:
    text, decisions = busy()
    with open(SNAPSHOT, "w") as f:
        f.write(text)
    with open(DECISIONS, "w") as f:
        f.write(decisions)


if __name__ == "__main__":
    write()
