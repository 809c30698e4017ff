"""The scheduler: a pure state machine.

`Scheduler.apply(event, now)` changes the state and returns the decisions that follow from
it.  Nothing here touches a socket, a timer or a disk, and time enters only as `now`, so the
same events always give the same decisions: that is what makes it testable with
`task.Clock`, benchmarkable alone, and replayable from a log.
"""
from __future__ import annotations

import heapq
import random
from typing import Callable, Iterable, Optional

from titan.core import events as ev
from titan.core.model import (
    JobRecord, JobSpec, JobState, WorkerRecord, WorkerState, _tags)

Decisions = list


class SubmitError(ValueError):
    """A submission the scheduler refuses; nothing of it was accepted."""


class Scheduler:
    def __init__(self, heartbeat_timeout: float = 10.0, backoff_base: float = 1.0,
                 backoff_cap: float = 60.0, rng: Optional[random.Random] = None) -> None:
        self.heartbeat_timeout = heartbeat_timeout
        self.backoff_base = backoff_base
        self.backoff_cap = backoff_cap
        self.rng = rng or random.Random(0)
        self.jobs: dict[str, JobRecord] = {}
        self.workers: dict[str, WorkerRecord] = {}
        # Ready jobs, one heap per set of required tags: a job that no worker can take
        # never blocks jobs with other needs.  Entries are (-priority, seq, job_id).
        self._queues: dict[frozenset[str], list[tuple[int, int, str]]] = {}
        self._seq = 0
        self._worker_seq = 0
        self._handlers: dict[type, Callable] = {
            ev.JobSubmitted: self._job_submitted,
            ev.WorkerJoined: self._worker_joined,
            ev.WorkerHeartbeat: self._heartbeat,
            ev.WorkerDisconnected: self._worker_disconnected,
            ev.JobStarted: self._job_started,
            ev.JobFinished: self._job_finished,
            ev.CancelRequested: self._cancel,
            ev.TimerFired: self._timer_fired,
            ev.Tick: self._tick,
        }

    # -- entry points --------------------------------------------------------------------

    def validate(self, event: object) -> None:
        """Raise SubmitError if `event` must be refused (before it is persisted)."""
        if isinstance(event, ev.JobSubmitted):
            spec = event.spec
            if spec.job_id in self.jobs:
                raise SubmitError(f"job id {spec.job_id!r} is already taken")
            if not spec.command or not all(isinstance(a, str) for a in spec.command):
                raise SubmitError(f"job {spec.job_id}: command must be a non-empty list of strings")
            if not spec.command[0]:
                raise SubmitError(f"job {spec.job_id}: command is empty")
            if spec.timeout is not None and spec.timeout <= 0:
                raise SubmitError(f"job {spec.job_id}: timeout must be positive")
            if spec.retries < 0:
                raise SubmitError(f"job {spec.job_id}: retries must be 0 or more")
            if spec.delay < 0:
                raise SubmitError(f"job {spec.job_id}: delay must be 0 or more")

    def apply(self, event: object, now: float) -> Decisions:
        out: Decisions = []
        self._handlers[type(event)](event, now, out)
        return out

    # -- queries -------------------------------------------------------------------------

    def waiting_reason(self, job_id: str, now: float) -> Optional[str]:
        """Why a PENDING job is not running, in words a user understands."""
        job = self.jobs.get(job_id)
        if job is None or job.state is not JobState.PENDING:
            return None
        if not job.queued:
            due = max(0.0, (job.ready_at or now) - now)
            if job.failures:
                return (f"retry {job.failures} of {job.spec.retries} in {due:.1f}s "
                        f"(last attempt: {job.reason})")
            return f"delayed; due in {due:.1f}s"
        need = job.spec.tags
        capable = [w for w in self.workers.values()
                   if w.state is WorkerState.ALIVE and need <= w.tags]
        if not capable:
            if need:
                return f"no live worker has the tags {','.join(sorted(need))}"
            return "no live worker"
        return "waiting for a free slot"

    # -- event handlers ------------------------------------------------------------------

    def _job_submitted(self, e: ev.JobSubmitted, now: float, out: Decisions) -> None:
        spec = e.spec
        self._seq += 1
        job = JobRecord(spec=spec, seq=self._seq, submitted_at=now)
        self.jobs[spec.job_id] = job
        out.append(ev.JobChanged(spec.job_id, JobState.PENDING))
        if spec.delay > 0:
            self._defer(job, now + spec.delay, ("ready", spec.job_id, 0), out)
        else:
            self._enqueue(job)
            self._dispatch(now, out)

    def _worker_joined(self, e: ev.WorkerJoined, now: float, out: Decisions) -> None:
        w = self.workers.get(e.worker_id)
        if w is None or w.state is WorkerState.DEAD:
            self._worker_seq += 1
            w = WorkerRecord(worker_id=e.worker_id, name=e.name, host=e.host,
                             tags=_tags(e.tags), slots=e.slots, joined_at=now,
                             last_seen=now, seq=self._worker_seq)
            self.workers[e.worker_id] = w
        else:
            w.name, w.host, w.tags, w.slots = e.name, e.host, _tags(e.tags), e.slots
        w.state = WorkerState.ALIVE
        w.last_seen = now
        out.append(ev.WorkerChanged(w.worker_id, WorkerState.ALIVE, "joined"))

        for report in e.finished:
            w.running.add(report.job_id)
            self._job_finished(ev.JobFinished(report.job_id, w.worker_id, report.attempt,
                                              report.exit_code, report.reason),
                               now, out, dispatch=False)
        reported = set()
        for report in e.running:
            reported.add(report.job_id)
            self._adopt(w, report, out)
        # Jobs we thought ran there and that it no longer has: lost with a worker restart.
        for job_id in self._by_seq(w.running):
            if job_id not in reported:
                w.running.discard(job_id)
                job = self.jobs.get(job_id)
                if job and job.state is JobState.RUNNING and job.worker_id == w.worker_id:
                    self._requeue(job, "its worker no longer had it", out)
        self._dispatch(now, out)

    def _adopt(self, w: WorkerRecord, report: ev.JobReport, out: Decisions) -> None:
        job = self.jobs.get(report.job_id)
        w.running.add(report.job_id)
        if job is not None and job.state is JobState.RUNNING and job.worker_id == w.worker_id \
                and job.attempt == report.attempt:
            return
        if self._lost(job, report.attempt):
            # It was given up for lost, but runs: take it back rather than run it twice.
            job.queued = False
            job.state = JobState.RUNNING
            job.worker_id = w.worker_id
            job.attempt = report.attempt
            out.append(ev.JobChanged(job.job_id, JobState.RUNNING))
            return
        why = "unknown to the master" if job is None else f"already {job.state.value}"
        out.append(ev.Kill(w.worker_id, report.job_id, report.attempt, why))

    @staticmethod
    def _lost(job: Optional[JobRecord], attempt: int) -> bool:
        """Is `attempt` the run of `job` that was given up for lost with its worker?

        A requeued job waits (PENDING, queued) and keeps the number of the attempt that was
        lost; a report about any other attempt (say a repeated report of an earlier failure)
        is stale."""
        return (job is not None and job.state is JobState.PENDING and job.queued
                and job.attempt > 0 and attempt == job.attempt)

    def _heartbeat(self, e: ev.WorkerHeartbeat, now: float, out: Decisions) -> None:
        w = self.workers.get(e.worker_id)
        if w is not None:
            w.last_seen = now

    def _worker_disconnected(self, e: ev.WorkerDisconnected, now: float, out: Decisions) -> None:
        w = self.workers.get(e.worker_id)
        if w is not None and w.state is WorkerState.ALIVE:
            w.state = WorkerState.DISCONNECTED
            out.append(ev.WorkerChanged(w.worker_id, w.state, "connection lost"))

    def _job_started(self, e: ev.JobStarted, now: float, out: Decisions) -> None:
        job = self.jobs.get(e.job_id)
        if job is not None and job.state is JobState.RUNNING and job.attempt == e.attempt \
                and job.worker_id == e.worker_id:
            job.started_at = now

    def _job_finished(self, e: ev.JobFinished, now: float, out: Decisions,
                      dispatch: bool = True) -> None:
        w = self.workers.get(e.worker_id)
        job = self.jobs.get(e.job_id)
        # An older attempt of a job whose current attempt runs on this same worker: the
        # slot belongs to the current attempt and stays taken.
        superseded = (job is not None and job.state is JobState.RUNNING
                      and job.worker_id == e.worker_id and job.attempt != e.attempt)
        if w is not None and e.job_id in w.running and not superseded:
            w.running.discard(e.job_id)
            w.completed += 1
        if job is not None:
            current = (job.state is JobState.RUNNING and job.worker_id == e.worker_id
                       and job.attempt == e.attempt)
            # A job given up for lost that finished after all: its result counts.
            lost_and_found = self._lost(job, e.attempt)
            if current or lost_and_found:
                if lost_and_found:
                    job.queued = False
                job.worker_id = e.worker_id
                job.attempt = e.attempt
                job.exit_code = e.exit_code
                job.finished_at = now
                if e.exit_code == 0 and e.reason is None:
                    job.state = JobState.COMPLETED
                    job.reason = None
                    out.append(ev.JobChanged(job.job_id, job.state))
                else:
                    self._failed(job, e, now, out)
        if dispatch:
            self._dispatch(now, out)

    def _failed(self, job: JobRecord, e: ev.JobFinished, now: float, out: Decisions) -> None:
        job.failures += 1
        what = e.reason or f"exit {e.exit_code}"
        if job.failures <= job.spec.retries:
            # Exponential backoff with "equal jitter", so failing jobs do not retry in lock
            # step: a delay in [d/2, d) where d doubles each failure up to the cap.  It
            # never exceeds the cap and each retry waits longer than the one before
            # (until the cap is reached).
            delay = min(self.backoff_cap, self.backoff_base * 2 ** (job.failures - 1))
            delay *= 0.5 + 0.5 * self.rng.random()
            job.state = JobState.PENDING
            job.reason = what
            job.worker_id = None
            out.append(ev.JobChanged(job.job_id, job.state))
            self._defer(job, now + delay, ("ready", job.job_id, job.failures), out)
            return
        job.state = JobState.DEAD if job.spec.retries else JobState.FAILED
        job.reason = what
        out.append(ev.JobChanged(job.job_id, job.state))

    def _cancel(self, e: ev.CancelRequested, now: float, out: Decisions) -> None:
        job = self.jobs.get(e.job_id)
        if job is None or job.state.terminal:
            return
        if job.state is JobState.RUNNING and job.worker_id is not None:
            out.append(ev.Kill(job.worker_id, job.job_id, job.attempt, e.reason))
        job.state = JobState.CANCELLED
        job.queued = False
        job.reason = e.reason
        job.finished_at = now
        out.append(ev.JobChanged(job.job_id, job.state))

    def _timer_fired(self, e: ev.TimerFired, now: float, out: Decisions) -> None:
        if not (isinstance(e.key, tuple) and len(e.key) == 3):
            return
        kind, job_id, failures = e.key
        job = self.jobs.get(job_id)
        if kind == "ready" and job is not None and job.state is JobState.PENDING \
                and not job.queued and job.failures == failures:
            job.ready_at = None
            self._enqueue(job)
            self._dispatch(now, out)

    def _tick(self, e: ev.Tick, now: float, out: Decisions) -> None:
        deadline = now - self.heartbeat_timeout
        for w in [w for w in self.workers.values() if w.last_seen < deadline]:
            self._worker_dead(w, f"no heartbeat for {now - w.last_seen:.1f}s", out)
        self._dispatch(now, out)

    # -- helpers -------------------------------------------------------------------------

    def _worker_dead(self, w: WorkerRecord, reason: str, out: Decisions) -> None:
        del self.workers[w.worker_id]
        w.state = WorkerState.DEAD
        out.append(ev.WorkerChanged(w.worker_id, WorkerState.DEAD, reason))
        for job_id in self._by_seq(w.running):
            job = self.jobs.get(job_id)
            if job is not None and job.state is JobState.RUNNING and job.worker_id == w.worker_id:
                self._requeue(job, f"worker {w.name} lost: {reason}", out)
        w.running.clear()

    def _by_seq(self, job_ids: Iterable[str]) -> list[str]:
        """Job ids in submission order (unknown ones last, by id): never a set's hash order,
        so the decisions do not depend on PYTHONHASHSEED."""
        return sorted(job_ids, key=lambda j: (0, self.jobs[j].seq, j) if j in self.jobs
                      else (1, 0, j))

    def _requeue(self, job: JobRecord, reason: str, out: Decisions) -> None:
        # Not the job's fault: no retry is spent.
        job.state = JobState.PENDING
        job.worker_id = None
        job.reason = reason
        job.started_at = None
        out.append(ev.JobChanged(job.job_id, job.state))
        self._enqueue(job)

    def _defer(self, job: JobRecord, at: float, key: tuple, out: Decisions) -> None:
        job.ready_at = at
        out.append(ev.SetTimer(key, at))

    def _enqueue(self, job: JobRecord) -> None:
        job.queued = True
        heapq.heappush(self._queues.setdefault(job.spec.tags, []),
                       (-job.spec.priority, job.seq, job.job_id))

    def _head(self, heap: list) -> Optional[JobRecord]:
        """The first job of a queue that is still waiting, dropping stale entries."""
        while heap:
            job = self.jobs.get(heap[0][2])
            if job is not None and job.queued and job.state is JobState.PENDING:
                return job
            heapq.heappop(heap)
        return None

    def _dispatch(self, now: float, out: Decisions) -> None:
        alive = [w for w in self.workers.values()
                 if w.state is WorkerState.ALIVE and w.free_slots > 0]
        while alive and self._queues:
            best: Optional[tuple] = None
            for need, heap in list(self._queues.items()):
                job = self._head(heap)
                if job is None:
                    del self._queues[need]
                    continue
                entry = heap[0]
                if best is not None and entry >= best[0]:
                    continue
                worker = self._choose(need, alive)
                if worker is not None:
                    best = (entry, heap, job, worker)
            if best is None:
                return
            _, heap, job, worker = best
            heapq.heappop(heap)
            self._start(job, worker, now, out)
            if worker.free_slots <= 0:
                alive.remove(worker)

    @staticmethod
    def _choose(need: frozenset[str], candidates: Iterable[WorkerRecord]) -> Optional[WorkerRecord]:
        best = None
        for w in candidates:
            if need <= w.tags and (best is None or (w.load, w.seq) < (best.load, best.seq)):
                best = w
        return best

    def _start(self, job: JobRecord, worker: WorkerRecord, now: float, out: Decisions) -> None:
        job.queued = False
        job.state = JobState.RUNNING
        job.attempt += 1
        job.worker_id = worker.worker_id
        job.started_at = now
        worker.running.add(job.job_id)
        out.append(ev.Dispatch(worker.worker_id, job.job_id, job.attempt, job.spec))
        out.append(ev.JobChanged(job.job_id, JobState.RUNNING))


def job_view(s: Scheduler, job: JobRecord, now: float) -> dict:
    """What clients see of a job."""
    w = s.workers.get(job.worker_id) if job.worker_id else None
    return {
        "job_id": job.job_id, "name": job.spec.name, "state": job.state.value,
        "command": list(job.spec.command), "priority": job.spec.priority,
        "tags": sorted(job.spec.tags), "attempt": job.attempt, "failures": job.failures,
        "retries": job.spec.retries, "worker_id": job.worker_id,
        "worker": w.name if w else None, "exit_code": job.exit_code, "reason": job.reason,
        "waiting": s.waiting_reason(job.job_id, now), "submitted_at": job.submitted_at,
        "started_at": job.started_at, "finished_at": job.finished_at,
        "ready_at": job.ready_at,
    }


def worker_view(w: WorkerRecord, now: float) -> dict:
    return {
        "worker_id": w.worker_id, "name": w.name, "host": w.host, "tags": sorted(w.tags),
        "slots": w.slots, "busy": len(w.running), "state": w.state.value,
        "last_heartbeat_ago": round(now - w.last_seen, 3), "joined_at": w.joined_at,
        "completed": w.completed,
    }


__all__ = ["Scheduler", "SubmitError", "JobSpec", "job_view", "worker_view"]
