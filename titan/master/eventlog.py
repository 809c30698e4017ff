"""The master's log lines about jobs and runs, with the fields a log search needs.

Every line about a job carries `job_id`, `run_id`, `attempt` and `worker` (the worker's
name) as fields of the event, not only in its text: `twistd --logger
titan.jsonlog.json_logger` (or `log_format: json`) writes them as JSON keys.  A job's
dispatch is logged by the service as it sends it; its end and its run's end here, once they
are durable (the listeners the service calls then).  A job that did not complete and a
run's end are always logged; dispatches and completions with `log_jobs: true` only (their
lines are ~0.06 ms of the master's CPU per job: a fifth more for a flood of tiny jobs).
"""
from __future__ import annotations

from typing import Any

from twisted.logger import Logger

from titan.core.model import JobState, RunState


class LifecycleLog:
    log = Logger(namespace="titan.master")

    def __init__(self, master: Any) -> None:
        self.master = master
        self.scheduler = master.scheduler
        # Runs whose end was logged: a run with services changes again when they stop.
        self._ended: set[str] = set()
        master.job_end_listeners.append(self.job_ended)
        master.run_change_listeners.append(self.run_changed)

    def job_ended(self, job_id: str) -> None:
        job = self.scheduler.jobs.get(job_id)
        if job is None:
            return
        completed = job.state is JobState.COMPLETED
        if completed and not self.master.config.log_jobs:
            return
        emit = self.log.info if completed or job.state is JobState.CANCELLED else self.log.warn
        emit("job {job_id} ended {state}", job_id=job_id, state=job.state.value,
             run_id=job.run_id, attempt=job.attempt, worker=job.worker_name,
             exit_code=job.exit_code, reason=job.reason)

    def run_changed(self, change: Any) -> None:
        if change.state is RunState.RUNNING or change.run_id in self._ended:
            return
        ended = self._ended
        ended.add(change.run_id)
        runs = self.scheduler.runs
        if len(ended) > 2 * len(runs) + 1024:  # forget the forgotten
            self._ended = {r for r in ended if r in runs}
        run = runs.get(change.run_id)
        self.log.info("run {run_id} ended {state}", run_id=change.run_id,
                      state=change.state.value, name=run.name if run is not None else None,
                      agent_run_id=run.agent_run_id if run is not None else None)
