"""Refusing an event before it is recorded: a job id taken, a command that is no command, a
run over its size limit, growth of a run that has ended, a gate not waiting, a cron
expression that is none.  Raises SubmitError with words for the user; changes nothing.

Calls no other part.
"""
from __future__ import annotations

from typing import Optional

from titan.core import events as ev
from titan.core.cron import cron_valid
from titan.core.dag import SubmitError, check_graph
from titan.core.model import JobState, RunState
from titan.core.parts.base import CoreState

DEFAULT_MAX_JOBS_PER_RUN = 10_000


class Validation(CoreState):
    def _init_validation(self, max_jobs_per_run: int) -> None:
        self.max_jobs_per_run = max_jobs_per_run

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
        elif isinstance(event, ev.DagSubmitted):
            if event.run_id in self.runs:
                raise SubmitError(f"run id {event.run_id!r} is already taken")
            self._check_size(event.template.max_jobs, 0, len(event.template.specs),
                             event.run_id)
        elif isinstance(event, ev.JobsAdded):
            self._validate_growth(event)
        elif isinstance(event, ev.GateDecided):
            job = self.jobs.get(event.job_id)
            if job is None:
                raise SubmitError(f"no job {event.job_id}")
            if job.spec.kind != "gate":
                raise SubmitError(f"{event.job_id} is a job, not an approval gate")
            if job.state is not JobState.WAITING_APPROVAL:
                raise SubmitError(f"gate {event.job_id} is not waiting for approval "
                                  f"(it is {job.state.value})")
        elif isinstance(event, ev.ResultSet):
            if event.job_id not in self.jobs:
                raise SubmitError(f"no job {event.job_id}")
        elif isinstance(event, ev.RunCancelRequested):
            if event.run_id not in self.runs:
                raise SubmitError(f"no run {event.run_id}")
        elif isinstance(event, ev.ScheduleAdded):
            if event.schedule_id in self.schedules:
                raise SubmitError(f"schedule {event.schedule_id!r} exists already")
            if not cron_valid(event.cron):
                raise SubmitError(f"schedule {event.cron!r} is not a cron expression "
                                  "(5 fields, or 6 with seconds last)")

    def _check_size(self, max_jobs: Optional[int], have: int, adding: int, run_id: str) -> None:
        # A run may lower the master's bound for itself, never raise it.
        limit = min(max_jobs or self.max_jobs_per_run, self.max_jobs_per_run)
        if have + adding > limit:
            raise SubmitError(f"run {run_id} would have {have + adding} jobs, over its limit "
                              f"of {limit} (max_jobs)")

    def _validate_growth(self, e: ev.JobsAdded) -> None:
        run = self.runs.get(e.run_id)
        if run is None:
            raise SubmitError(f"no run {e.run_id}")
        if run.state is not RunState.RUNNING:
            raise SubmitError(f"run {e.run_id} has ended ({run.state.value}); "
                              "it takes no more jobs")
        if not e.specs:
            raise SubmitError("no jobs to add")
        known = {self.jobs[k].node for k in run.jobs}
        check_graph(e.specs, known)
        self._check_size(run.max_jobs, len(run.jobs), len(e.specs), run.run_id)
        for spec in e.specs:
            for parent in spec.depends_on:
                job = self.jobs.get(f"{run.run_id}/{parent}")
                if job is not None and job.state.terminal and job.state is not JobState.COMPLETED:
                    raise SubmitError(f"job {spec.job_id} cannot depend on {parent}: it is "
                                      f"already {job.state.value}")
