"""Services in pipelines: a job of kind "service" runs until it is stopped.  Once its worker
reports it up (RUNNING), its dependents may go and its run no longer waits for it; when the
run ends, services that some job of the run needed stop with it (unless `persist`), and the
others (the pipeline's product) go on.

Calls `_release_children`, `_run_ended` (runs), `_set_state` (jobs), `_dispatch` (placement).
"""
from __future__ import annotations

from titan.core import events as ev
from titan.core.model import DagRun, JobState, RunState
from titan.core.parts.base import _COMPLETED, _RUNNING, STOPPED_WITH_RUN, CoreState, \
    Decisions


class Services(CoreState):
    def _service_reported(self, e: ev.ServiceReported, now: float, out: Decisions) -> None:
        job = self.jobs.get(e.job_id)
        if job is None or job.state is not JobState.RUNNING or job.attempt != e.attempt \
                or job.worker_id != e.worker_id:
            return
        job.service = dict(e.status)
        run = self.runs.get(job.run_id) if job.run_id else None
        if e.status.get("state") == "RUNNING" and not job.released:
            # Its dependents wait for the service to be up, not for it to end; and its run
            # no longer waits for it (a service runs until it is stopped).
            job.released = True
            self._release_children(job, out)
            if run is not None and run.state is RunState.RUNNING:
                run.left -= 1
                if run.left == 0:
                    self._run_ended(run, out)
            self._dispatch(now, out)
        if run is not None:
            self._run_changed(run, out)

    def _stop_helpers(self, run: DagRun, out: Decisions) -> None:
        jobs = self.jobs
        for key in run.jobs:
            job = jobs[key]
            if job.state.terminal or not job.children or job.spec.persist:
                continue
            # A service that did its part: COMPLETED, saying it was stopped.
            if job.state is _RUNNING and job.worker_id is not None:
                out.append(ev.Kill(job.worker_id, job.job_id, job.attempt, STOPPED_WITH_RUN))
            job.queued = False
            job.reason = STOPPED_WITH_RUN
            job.finished_at = self._now
            self._set_state(job, _COMPLETED, out)
