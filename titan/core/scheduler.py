"""The scheduler: a pure state machine.

`Scheduler.apply(event, now)` changes the state and returns the decisions that follow from
it.  Nothing here touches a socket, a timer or a disk, and time enters only as `now`, so the
same events always give the same decisions: that is what makes it testable with
`task.Clock`, benchmarkable alone, and replayable from a log.

Jobs stand alone or belong to a DAG run.  Readiness is pushed: a job counts its parents that
have not COMPLETED, and each completion decrements its children's counts, so a completion
costs O(children), never O(jobs).

`Scheduler` is thin: it composes the parts in titan/core/parts/ (one concern each: see
parts/__init__.py), routes each event to its part, and turns the runs an event moved into
RunChanged decisions.  The names other modules import from here stay here.
"""
from __future__ import annotations

import random
from typing import Any, Callable, Iterable, Optional

from titan.core import events as ev
from titan.core.cron import cron_next, cron_valid
from titan.core.dag import SubmitError
from titan.core.model import JobSpec
from titan.core.parts.base import STOPPED_WITH_RUN, CoreState, Decisions
from titan.core.parts.gates import Gates
from titan.core.parts.jobs import Jobs
from titan.core.parts.placement import Placement
from titan.core.parts.retention import DEFAULT_FORGET_GRACE, DEFAULT_KEEP_FINISHED, Retention
from titan.core.parts.runs import Runs
from titan.core.parts.schedules import Schedules
from titan.core.parts.services import Services
from titan.core.parts.snapshot import restore, snapshot
from titan.core.parts.timers import Timers, pending_timers
from titan.core.parts.validation import DEFAULT_MAX_JOBS_PER_RUN, Validation
from titan.core.parts.views import (Queries, job_view, run_job_view, run_view, service_view,
                                    worker_view)
from titan.core.parts.workers import Workers


_SETTINGS = frozenset({"routers", "heartbeat_timeout", "backoff_base", "backoff_cap",
                       "max_jobs_per_run", "keep_finished", "forget_grace", "keep_log_bytes"})


class Scheduler(Jobs, Runs, Gates, Services, Workers, Placement, Retention, Schedules, Timers,
                Validation, Queries, CoreState):
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

    def reconfigure(self, **settings: Any) -> None:
        """New settings from a config reload, from the next event on (titan/master/reload.py):
        `routers`, `heartbeat_timeout`, `backoff_base`, `backoff_cap`, `max_jobs_per_run`,
        `keep_finished`, `forget_grace`, `keep_log_bytes`.  Not recorded: like the config,
        they are the master's, and a restart takes them from its file."""
        unknown = set(settings) - _SETTINGS
        if unknown:
            raise TypeError(f"no scheduler setting {', '.join(sorted(unknown))}")
        if "routers" in settings:
            self.use_routers(settings.pop("routers"))
        for name, value in settings.items():
            setattr(self, name, value)
        self._next_forget_check = 0.0  # retention looks again at the next tick

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


__all__ = ["Scheduler", "SubmitError", "JobSpec", "Decisions", "DEFAULT_MAX_JOBS_PER_RUN",
           "DEFAULT_KEEP_FINISHED", "DEFAULT_FORGET_GRACE", "STOPPED_WITH_RUN", "job_view",
           "run_view", "run_job_view", "service_view", "worker_view", "snapshot", "restore",
           "pending_timers", "cron_next", "cron_valid"]
