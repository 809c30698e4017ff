"""Workers: joining (and coming back with reports of what ran while it had no master),
heartbeats, disconnection, retirement, loss, and what becomes of a lost worker's jobs.

A retiring (draining) worker takes no new jobs -- `_refresh` keeps only ALIVE ones free --
and stays DRAINING through reconnects; once it has nothing running, its leaving is its
end (the master's shell tells it to go: titan/master/autoscale.py).

A worker that comes back says which jobs it still runs and which ended: the ones the master
gave up for lost are adopted rather than run twice (`_lost`, `_next`), ones it does not know
are killed, and ones it no longer has are requeued without spending a retry.

Calls `_job_finished`, `_set_state`, `_attempt_ended`, `_attempt_found` (jobs), `_refresh`,
`_enqueue`, `_dispatch` (placement), `_maybe_forget` (retention).
"""
from __future__ import annotations

from typing import Optional

from titan.core import events as ev
from titan.core.model import JobRecord, JobState, WorkerRecord, WorkerState, _tags
from titan.core.parts.base import _RUNNING, CoreState, Decisions


class Workers(CoreState):
    def _init_workers(self, heartbeat_timeout: float) -> None:
        self.heartbeat_timeout = heartbeat_timeout

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
        # A drain outlives a reconnect (and a master restart): it still takes nothing new.
        if w.state is not WorkerState.DRAINING:
            w.state = WorkerState.ALIVE
        w.last_seen = now
        out.append(ev.WorkerChanged(w.worker_id, w.state, "joined"))

        for report in e.finished:
            job = self.jobs.get(report.job_id)
            if job is not None and (job.state is _RUNNING or self._lost(job, report.attempt)
                                    or self._next(job, report.attempt)):
                # An end the master has not heard yet frees a slot here and counts as this
                # worker's; one said again (its acknowledgement was lost) does neither.
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
        self._refresh(w)
        self._dispatch(now, out)

    def _adopt(self, w: WorkerRecord, report: ev.JobReport, out: Decisions) -> None:
        job = self.jobs.get(report.job_id)
        w.running.add(report.job_id)
        if job is not None and job.state is JobState.RUNNING and job.worker_id == w.worker_id \
                and job.attempt == report.attempt:
            return
        if self._lost(job, report.attempt) or self._next(job, report.attempt):
            # It was given up for lost, or its dispatch followed events the log does not
            # hold, but it runs: take it back rather than run it twice.
            self._attempt_found(job, report.attempt)
            job.queued = False
            job.worker_id = w.worker_id
            job.worker_name = w.name
            job.attempt = report.attempt
            self._set_state(job, JobState.RUNNING, out)
            return
        why = "unknown to the master" if job is None else f"already {job.state.value}"
        out.append(ev.Kill(w.worker_id, report.job_id, report.attempt, why))

    @staticmethod
    def _next(job: Optional[JobRecord], attempt: int) -> bool:
        """Is `attempt` the next attempt of a job that waits (PENDING)?

        Only a master can have started it: one that dispatched it and then lost the events
        it followed from (a machine crash under `fsync: everysec`; docs/semantics.md).  Its
        worker's account is adopted, so the job does not run again with the same number."""
        return job is not None and job.state is JobState.PENDING and attempt == job.attempt + 1

    @staticmethod
    def _lost(job: Optional[JobRecord], attempt: int) -> bool:
        """Is `attempt` the run of `job` that was given up for lost with its worker?

        A requeued job waits (PENDING, queued) and keeps the number of the attempt that was
        lost, unfinished (`_requeue`); a report about any other attempt is stale, and so is
        a repeated report of an attempt that ended (a job queued for its retry keeps the
        failed attempt's number: it must not fail twice for it)."""
        return (job is not None and job.state is JobState.PENDING and job.queued
                and job.attempt > 0 and attempt == job.attempt and job.finished_at is None)

    def _heartbeat(self, e: ev.WorkerHeartbeat, now: float, out: Decisions) -> None:
        w = self.workers.get(e.worker_id)
        if w is not None:
            w.last_seen = now

    def _worker_disconnected(self, e: ev.WorkerDisconnected, now: float, out: Decisions) -> None:
        w = self.workers.get(e.worker_id)
        if w is not None and w.state is WorkerState.DRAINING and not w.running:
            # Drained: it left once its last job ended, as it was asked to.
            self._worker_dead(w, "drained: left after its last job", out)
            return
        if w is not None and w.state is WorkerState.ALIVE:
            w.state = WorkerState.DISCONNECTED
            self._refresh(w)
            out.append(ev.WorkerChanged(w.worker_id, w.state, "connection lost"))

    def _tick(self, e: ev.Tick, now: float, out: Decisions) -> None:
        # Heartbeats are not recorded, so a missed one is proposed as an event of its own:
        # recorded, it replays at the same point.
        deadline = now - self.heartbeat_timeout
        for w in self.workers.values():
            if w.last_seen < deadline:
                out.append(ev.Propose(ev.WorkerLost(
                    w.worker_id, f"no heartbeat for {now - w.last_seen:.1f}s")))
        self._maybe_forget(now, out)  # what was too fresh to forget when it ended

    def _worker_lost(self, e: ev.WorkerLost, now: float, out: Decisions) -> None:
        w = self.workers.get(e.worker_id)
        if w is not None:
            self._worker_dead(w, e.reason, out)
            self._dispatch(now, out)

    def _worker_retiring(self, e: ev.WorkerRetiring, now: float, out: Decisions) -> None:
        w = self.workers.get(e.worker_id)
        if w is not None and w.state is not WorkerState.DRAINING:
            w.state = WorkerState.DRAINING
            self._refresh(w)
            out.append(ev.WorkerChanged(w.worker_id, w.state, e.reason or "retiring"))

    def _master_restarted(self, e: ev.MasterRestarted, now: float, out: Decisions) -> None:
        """Every worker's connection died with the old master; each gets a full heartbeat
        timeout from now to come back and report, or its jobs run elsewhere."""
        self._forgetting = False  # a Forget proposed before the crash was never recorded
        for w in self.workers.values():
            w.last_seen = now
            if w.state is WorkerState.ALIVE:
                w.state = WorkerState.DISCONNECTED
                self._refresh(w)
                out.append(ev.WorkerChanged(w.worker_id, w.state, "master restarted"))

    def _worker_dead(self, w: WorkerRecord, reason: str, out: Decisions) -> None:
        del self.workers[w.worker_id]
        w.state = WorkerState.DEAD
        self._refresh(w)
        out.append(ev.WorkerChanged(w.worker_id, WorkerState.DEAD, reason))
        for job_id in self._by_seq(w.running):
            job = self.jobs.get(job_id)
            if job is not None and job.state is JobState.RUNNING and job.worker_id == w.worker_id:
                self._requeue(job, f"worker {w.name} lost: {reason}", out)
        w.running.clear()

    def _requeue(self, job: JobRecord, reason: str, out: Decisions) -> None:
        # Not the job's fault: no retry is spent.
        job.reason = reason
        self._attempt_ended(job, "LOST", None, self._now)
        job.worker_id = None
        job.started_at = None
        job.finished_at = None  # its attempt did not end: a late report of it counts (_lost)
        self._set_state(job, JobState.PENDING, out)
        self._enqueue(job)
