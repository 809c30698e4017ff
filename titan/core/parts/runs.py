"""DAG runs: a run is made from a template (or grows by JobsAdded while it runs); a job
counts its parents that have not completed, and each completion lets its children go
(`_release_children`, O(children)); a job that will never complete cancels its descendants
(`_cascade`); the run ends once every job has ended or is a service that is up.

Calls `_admit`, `_set_state`, `_cancel_job` (jobs), `_dispatch` (placement), `_stop_helpers`
(services), `_ended` (retention).
"""
from __future__ import annotations

from typing import Iterable, Optional

from titan.core import events as ev
from titan.core.model import DagRun, JobRecord, JobSpec, JobState, RunState
from titan.core.parts.base import _COMPLETED, _PENDING, _RUNNING, CoreState, Decisions, _live


class Runs(CoreState):
    def _init_runs(self) -> None:
        self._cascading: Optional[list[JobRecord]] = None
        self._run_cancel_reason: Optional[str] = None  # while a run's cancel cascades

    def _dag_submitted(self, e: ev.DagSubmitted, now: float, out: Decisions,
                       schedule_id: Optional[str] = None) -> None:
        t = e.template
        self._run_seq += 1
        run = DagRun(run_id=e.run_id, name=t.name, created_at=now, seq=self._run_seq,
                     agent_run_id=t.agent_run_id, stage=t.stage, max_jobs=t.max_jobs,
                     schedule_id=schedule_id)
        self.runs[run.run_id] = run
        if t.agent_run_id:
            self.agent_runs.setdefault(t.agent_run_id, []).append(run.run_id)
        self._add_jobs(run, t.specs, now, out, ev.template_children(t))
        self._dispatch(now, out)

    def _jobs_added(self, e: ev.JobsAdded, now: float, out: Decisions) -> None:
        self._add_jobs(self.runs[e.run_id], e.specs, now, out)
        self._dispatch(now, out)

    def _add_jobs(self, run: DagRun, specs: Iterable[JobSpec], now: float,
                  out: Decisions, children: Optional[dict] = None) -> None:
        """Add `specs` to `run` (`children`: `children_of(specs)`, if known already)."""
        if children is None:
            children = ev.children_of(specs)
        run_id = run.run_id
        prefix = run_id + "/"
        jobs, nodes, keys = self.jobs, self.nodes, run.jobs
        seq = self._seq
        added: list[JobRecord] = []
        for spec in specs:
            seq += 1
            key = prefix + spec.job_id
            job = JobRecord(key, spec, seq, now, run_id=run_id)
            jobs[key] = job
            keys.append(key)
            nodes[spec.job_id] = nodes.get(spec.job_id, ()) + (key,)
            added.append(job)
        self._seq = seq
        if not added:
            return
        run.counts[_PENDING] = run.counts.get(_PENDING, 0) + len(added)
        run.left += len(added)
        no_children = ()
        for job in added:
            job.children = children.get(job.spec.job_id, no_children)
        if len(added) == len(keys):
            # A new run: every parent is among the new jobs, none has completed (and no
            # one watches it yet: its jobs are not announced as moved).
            for job in added:
                job.parents_left = len(job.spec.depends_on)
        else:
            for job in added:
                left = 0
                for node in job.spec.depends_on:
                    if jobs[prefix + node].state is not _COMPLETED:
                        left += 1
                job.parents_left = left
            self._moved.extend(added)  # a watcher of the run learns of its new jobs
            # Jobs already in the run that gained children.
            for node, kids in children.items():
                parent = jobs[prefix + node]
                if parent.seq < added[0].seq:
                    parent.children = parent.children + kids
        for job in added:
            if job.parents_left == 0 and job.state is _PENDING:
                self._admit(job, now, out)
        self._run_changed(run, out)

    def _run_cancel(self, e: ev.RunCancelRequested, now: float, out: Decisions) -> None:
        run = self.runs.get(e.run_id)
        if run is None:
            return
        # Services that are up first: once the last job is cancelled the run ends, and would
        # stop them as done (COMPLETED) rather than cancelled.
        keys = list(run.jobs)
        self._run_cancel_reason = e.reason
        try:
            for key in [k for k in keys if self.jobs[k].released] + keys:
                job = self.jobs[key]
                if not job.state.terminal:
                    self._cancel_job(job, e.reason, now, out)
        finally:
            self._run_cancel_reason = None
        self._dispatch(now, out)

    def _release_children(self, job: JobRecord, out: Decisions) -> None:
        if not job.children:
            return
        jobs = self.jobs
        prefix = job.run_id + "/"
        for node in job.children:
            child = jobs[prefix + node]
            child.parents_left -= 1
            if child.parents_left == 0 and child.state is _PENDING:
                self._admit(child, self._now, out)

    def _cascade(self, failed: JobRecord, out: Decisions) -> None:
        """Descendants of a job that will never complete are CANCELLED, saying why.

        Iterative (a worklist), not recursive: a failure at the top of a 10,000-deep chain
        must not exhaust the stack."""
        if self._cascading is not None:
            self._cascading.append(failed)
            return
        self._cascading = [failed]
        try:
            while self._cascading:
                parent = self._cascading.pop()
                node = parent.node
                if self._run_cancel_reason is not None:
                    why = self._run_cancel_reason  # the whole run goes, for one reason
                elif parent.reason and parent.reason.startswith("cancelled: "):
                    why = parent.reason  # pass the first cause down, not the last link
                elif parent.spec.kind == "gate":
                    why = f"cancelled: gate {node} {parent.reason}"
                else:
                    why = f"cancelled: {node} {parent.state.value}"
                prefix = parent.run_id + "/"
                for child_node in parent.children:
                    child = self.jobs[prefix + child_node]
                    # A child already running was let go by a service that was up then:
                    # it goes on, and ends as it ends.
                    if not child.state.terminal and child.state is not _RUNNING:
                        child.queued = False
                        child.reason = why
                        child.finished_at = self._now
                        self._set_state(child, JobState.CANCELLED, out)
        finally:
            self._cascading = None

    def _run_ended(self, run: DagRun, out: Decisions) -> None:
        """Every job of the run has ended, and every service is up or has ended."""
        counts = run.counts
        total = len(run.jobs)
        live = _live(run)
        if live:
            # Services still running (or waiting for a worker again): those some job of
            # the run depends on were there for the run and stop with it, unless marked
            # `persist`; the others (no job needs them: the pipeline's product, a reference
            # deploy) go on.
            self._stop_helpers(run, out)
            live = _live(run)
        if counts.get(JobState.FAILED, 0) or counts.get(JobState.DEAD, 0):
            run.state = RunState.FAILED
        elif counts.get(JobState.COMPLETED, 0) + live == total:
            run.state = RunState.COMPLETED
        else:
            run.state = RunState.CANCELLED
        run.finished_at = self._now
        self._run_changed(run, out)
        self._ended("run", run.run_id, total, self._now, out)
