"""Retention: finished standalone jobs and finished runs are remembered, oldest first, until
more than `keep_finished` jobs (or `keep_log_bytes` of their output) are kept; then the
oldest that have been finished for `forget_grace` seconds are forgotten.  Forgetting is
proposed (`Propose(Forget)`), recorded, and applied like any event, so a replay forgets
exactly what the live master forgot.

Calls no other part.  (jobs._set_state appends a standalone job's end to `_finished` inline.)
"""
from __future__ import annotations

from collections import deque
from typing import Optional

from titan.core import events as ev
from titan.core.model import RunState
from titan.core.parts.base import _TERMINAL, CoreState, Decisions, _live

DEFAULT_KEEP_FINISHED = 10_000
# A finished job or run is remembered at least this long, however many finish after it: its
# client is still reading its end (a `titan run --wait` table, a wait_run, its last logs).
DEFAULT_FORGET_GRACE = 60.0


class Retention(CoreState):
    def _init_retention(self, keep_finished: int, forget_grace: float,
                        keep_log_bytes: Optional[int]) -> None:
        # ("job"|"run", id, jobs it counts, when it ended), oldest first; past keep_finished
        # jobs the oldest are forgotten, once they have been finished for forget_grace
        # seconds.
        self.keep_finished = keep_finished
        self.forget_grace = forget_grace
        self._finished: deque = deque()
        self._finished_jobs = 0
        self._forgetting = False  # a Forget was proposed and not yet applied
        self._next_forget_check = 0.0
        # ...and past keep_log_bytes of job output kept (LogWritten), the oldest too.
        self.keep_log_bytes = keep_log_bytes
        self._log_bytes: dict[str, int] = {}  # job key -> bytes of output kept
        self._log_total = 0

    def _log_written(self, e: ev.LogWritten, now: float, out: Decisions) -> None:
        if e.job_id in self.jobs:
            self._log_bytes[e.job_id] = self._log_bytes.get(e.job_id, 0) + e.size
            self._log_total += e.size
            if self.keep_log_bytes is not None and self._log_total > self.keep_log_bytes:
                self._maybe_forget(now, out)

    def _item_log_bytes(self, kind: str, ident: str) -> int:
        if kind == "job":
            return self._log_bytes.get(ident, 0)
        run = self.runs.get(ident)
        return sum(self._log_bytes.get(key, 0) for key in run.jobs) if run is not None else 0

    def _ended(self, kind: str, ident: str, jobs: int, now: float, out: Decisions) -> None:
        self._finished.append((kind, ident, jobs, now))
        self._finished_jobs += jobs
        self._maybe_forget(now, out)

    def _maybe_forget(self, now: float, out: Decisions) -> None:
        # Forget in batches, not one job per job that ends: only once more than a tenth over
        # the bound, and looking at most every tenth of forget_grace (a busy master would
        # otherwise find one more settled job to forget at every end).
        over_bytes = self.keep_log_bytes is not None and self._log_total > self.keep_log_bytes
        if self._forgetting or now < self._next_forget_check or (
                self._finished_jobs <= self.keep_finished * 1.1 + 1 and not over_bytes):
            return
        self._next_forget_check = now + self.forget_grace / 10
        if not self._announce:
            # Replaying: what this would propose is in the log already, a little further on
            # (a proposal is dropped like every decision of a replay).
            return
        job_ids, run_ids = [], []
        over = self._finished_jobs - self.keep_finished
        # Bytes too, down to nine tenths of the bound (in batches, as jobs).
        excess = self._log_total - self.keep_log_bytes * 9 // 10 if over_bytes else 0
        settled = now - self.forget_grace
        for kind, ident, jobs, ended_at in self._finished:
            if (over <= 0 and excess <= 0) or ended_at > settled:
                break
            (job_ids if kind == "job" else run_ids).append(ident)
            over -= jobs
            if excess > 0:
                excess -= self._item_log_bytes(kind, ident)
        if job_ids or run_ids:
            self._forgetting = True
            out.append(ev.Propose(ev.Forget(tuple(job_ids), tuple(run_ids))))

    def _forget(self, e: ev.Forget, now: float, out: Decisions) -> None:
        self._forgetting = False
        gone = set(e.job_ids) | set(e.run_ids)
        # What is forgotten is the oldest of what has finished: the head of the queue.
        finished, popleft = self._finished, self._finished.popleft
        popped = count = 0
        while finished and finished[0][1] in gone:
            count += popleft()[2]
            popped += 1
        self._finished_jobs -= count
        if popped < len(gone):  # not the oldest after all: take them out wherever they are
            kept = [item for item in finished if item[1] not in gone]
            self._finished_jobs = sum(item[2] for item in kept)
            self._finished = deque(kept)
        forgotten: list[str] = []
        jobs = self.jobs
        for key in e.job_ids:
            job = jobs.get(key)
            if job is not None and job.run_id is None and job.state in _TERMINAL:
                del jobs[key]
                forgotten.append(key)
        for run_id in e.run_ids:
            run = self.runs.get(run_id)
            if run is None or run.state is RunState.RUNNING:
                continue
            if _live(run):
                # It ended, but a service of it still runs: not yet; look again later.
                self._finished.append(("run", run_id, len(run.jobs), now))
                self._finished_jobs += len(run.jobs)
                continue
            for key in run.jobs:
                job = self.jobs.pop(key, None)
                if job is None:
                    continue
                forgotten.append(key)
                keys = self.nodes.get(job.node, ())
                if len(keys) == 1:
                    self.nodes.pop(job.node, None)
                else:
                    self.nodes[job.node] = tuple(k for k in keys if k != key)
            del self.runs[run_id]
            self._dirty_runs.pop(run_id, None)
            if run.agent_run_id in self.agent_runs:
                kept = [r for r in self.agent_runs[run.agent_run_id] if r != run_id]
                if kept:
                    self.agent_runs[run.agent_run_id] = kept
                else:
                    del self.agent_runs[run.agent_run_id]
        if self._log_bytes:
            for key in forgotten:
                self._log_total -= self._log_bytes.pop(key, 0)
        if forgotten and self._announce:
            out.append(ev.Forgotten(tuple(forgotten)))
