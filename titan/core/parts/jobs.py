"""One job's life: admitted once its parents have completed (queued, delayed, or a gate
waiting), started, ended by its worker's report (completed, or failed: retried after an
exponential backoff with jitter until its retries are spent), or cancelled.  `_set_state`
is the one place a job changes state: its run's counts, its children and its run's end
follow from it.

Calls `_enqueue`, `_refresh`, `_dispatch` (placement), `_await_approval` (gates), `_defer`
(timers), `_cascade`, `_release_children`, `_run_ended` (runs), `_lost`, `_next` (workers),
`_maybe_forget` (retention; a standalone job's end is appended to its queue inline).
"""
from __future__ import annotations

import random

from titan.core import events as ev
from titan.core.model import KEEP_ATTEMPTS, JobRecord, JobState, failed_outcome
from titan.core.parts.base import _COMPLETED, _RUNNING, _TERMINAL, CoreState, Decisions


class Jobs(CoreState):
    def _init_jobs(self, backoff_base: float, backoff_cap: float,
                   rng: random.Random) -> None:
        self.backoff_base = backoff_base
        self.backoff_cap = backoff_cap
        self.rng = rng

    def _job_submitted(self, e: ev.JobSubmitted, now: float, out: Decisions) -> None:
        # A job that stands alone (DAG runs add theirs in `_add_jobs`).
        spec = e.spec
        self._seq += 1
        job = JobRecord(spec.job_id, spec, self._seq, now)
        self.jobs[spec.job_id] = job
        self._admit(job, now, out)
        if self._free:
            self._dispatch(now, out)

    def _admit(self, job: JobRecord, now: float, out: Decisions) -> None:
        """Every parent has COMPLETED: the job may go (a gate starts waiting for a person)."""
        spec = job.spec
        if spec.kind == "job" and not spec.delay:
            self._enqueue(job)
        elif spec.kind == "gate":
            self._await_approval(job, now, out)
        elif spec.delay > 0:
            self._defer(job, now + spec.delay, ("ready", job.job_id, 0), out)
        else:
            self._enqueue(job)

    def _job_started(self, e: ev.JobStarted, now: float, out: Decisions) -> None:
        job = self.jobs.get(e.job_id)
        if job is not None and job.state is JobState.RUNNING and job.attempt == e.attempt \
                and job.worker_id == e.worker_id:
            job.started_at = now

    def _job_finished(self, e: ev.JobFinished, now: float, out: Decisions,
                      dispatch: bool = True) -> None:
        w = self.workers.get(e.worker_id)
        job = self.jobs.get(e.job_id)
        # Is this the attempt now running?  If an older attempt of a job whose current
        # attempt runs on this same worker reports, the slot belongs to the current attempt
        # and stays taken.
        current = on_worker = (job is not None and job.state is _RUNNING
                               and job.worker_id == e.worker_id)
        if on_worker and job.attempt != e.attempt:
            current = False
        if w is not None and (current or not on_worker) and e.job_id in w.running:
            w.running.discard(e.job_id)
            w.completed += 1
            self._refresh(w)
        if job is not None:
            # A job given up for lost that finished after all, or the next attempt of a job
            # the log has waiting (its dispatch outran the log): its result counts.
            lost_and_found = not current and (self._lost(job, e.attempt)
                                              or self._next(job, e.attempt))
            if current or lost_and_found:
                if lost_and_found:
                    self._attempt_found(job, e.attempt)
                    job.queued = False
                    job.worker_id = e.worker_id
                    if w is not None:
                        job.worker_name = w.name
                    job.attempt = e.attempt
                # (Current: the job already names this worker and attempt.)
                job.exit_code = e.exit_code
                job.finished_at = now
                if e.exit_code == 0 and e.reason is None:
                    job.reason = None
                    self._set_state(job, _COMPLETED, out)
                else:
                    self._failed(job, e, now, out)
        if dispatch:
            self._dispatch(now, out)

    def _failed(self, job: JobRecord, e: ev.JobFinished, now: float, out: Decisions) -> None:
        job.failures += 1
        what = e.reason or f"exit {e.exit_code}"
        job.reason = what
        if job.failures <= job.spec.retries:
            self._attempt_ended(job, failed_outcome(e.reason), job.exit_code, now)
            # Exponential backoff with "equal jitter", so failing jobs do not retry in lock
            # step: a delay in [d/2, d) where d doubles each failure up to the cap.  It
            # never exceeds the cap and each retry waits longer than the one before
            # (until the cap is reached).
            delay = min(self.backoff_cap, self.backoff_base * 2 ** (job.failures - 1))
            delay *= 0.5 + 0.5 * self.rng.random()
            job.worker_id = None
            self._set_state(job, JobState.PENDING, out)
            self._defer(job, now + delay, ("ready", job.job_id, job.failures), out)
            return
        # Out of retries: dead-lettered (its logs stay).
        self._set_state(job, JobState.DEAD if job.spec.retries else JobState.FAILED, out)

    def _attempt_ended(self, job: JobRecord, outcome: str, exit_code, now: float) -> None:
        """Keep the attempt that just ended, since another may follow (a retry, a requeue):
        with `job.reason`, as it says why."""
        kept = job.attempts
        if len(kept) >= KEEP_ATTEMPTS:
            kept = kept[len(kept) - KEEP_ATTEMPTS + 1:]
        job.attempts = kept + ((job.attempt, job.worker_name, job.started_at, now, exit_code,
                                outcome, job.reason),)

    @staticmethod
    def _attempt_found(job: JobRecord, attempt: int) -> None:
        """`attempt`, given up for lost or unknown to the log, runs or ran after all: it is
        the job's current attempt again, not an ended one."""
        kept = job.attempts
        if kept and kept[-1][0] == attempt:
            job.started_at = kept[-1][2]  # it never stopped
            job.attempts = kept[:-1]
        else:
            job.started_at = None  # started by a master whose log lost it: when, unknown
        job.exit_code = None

    def _cancel(self, e: ev.CancelRequested, now: float, out: Decisions) -> None:
        job = self.jobs.get(e.job_id)
        if job is None or job.state.terminal:
            return
        self._cancel_job(job, e.reason, now, out)
        self._dispatch(now, out)

    def _cancel_job(self, job: JobRecord, reason: str, now: float, out: Decisions) -> None:
        if job.state is JobState.RUNNING and job.worker_id is not None:
            out.append(ev.Kill(job.worker_id, job.job_id, job.attempt, reason))
        job.queued = False
        job.reason = reason
        job.finished_at = now
        self._set_state(job, JobState.CANCELLED, out)

    def _result_set(self, e: ev.ResultSet, now: float, out: Decisions) -> None:
        job = self.jobs.get(e.job_id)
        if job is not None:
            job.result = e.value
            run = self.runs.get(job.run_id) if job.run_id else None
            if run is not None:
                self._run_changed(run, out)

    def _set_state(self, job: JobRecord, state: JobState, out: Decisions) -> None:
        """The one place a job changes state: run counts, readiness and cascades follow."""
        old = job.state
        if old is state:
            return
        job.state = state
        run = self.runs.get(job.run_id) if job.run_id else None
        if run is not None:
            counts = run.counts
            counts[old] -= 1
            counts[state] = counts.get(state, 0) + 1
            self._dirty_runs[run.run_id] = run
            self._moved.append(job)
        if state in _TERMINAL:
            if self._announce:
                out.append(ev.JobEnded(job.job_id, state))
            if job.children:
                if state is not _COMPLETED:
                    self._cascade(job, out)
                elif not job.released:
                    self._release_children(job, out)
            if run is not None and not job.released:  # a service that came up left `left`
                run.left -= 1
                if run.left == 0:
                    self._run_ended(run, out)
            elif not job.run_id:
                # _ended("job", ...), inline: a standalone job ends once per job.
                now = self._now
                self._finished.append(("job", job.job_id, 1, now))
                self._finished_jobs += 1
                if self._finished_jobs > self.keep_finished * 1.1 + 1 \
                        and now >= self._next_forget_check:
                    self._maybe_forget(now, out)
