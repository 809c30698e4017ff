"""Each part of the scheduler (titan/core/parts/) on its own: the part composed with the
shared state (`CoreState`) and stand-ins that record what it asks of the other parts.

The composed Scheduler is tested everywhere else (test_scheduler, test_dag_rules, ...); here
each part's own contract is pinned, so a part can change without reading the whole core.
"""
from __future__ import annotations

import ast
import os
import random
from collections import deque

from twisted.trial.unittest import SynchronousTestCase

from titan.core import events as ev
from titan.core.dag import GATE_TIMEOUT, SubmitError, parse_dag
from titan.core.model import (DagRun, JobRecord, JobSpec, JobState, RunState, Schedule,
                              WorkerRecord, WorkerState)
from titan.core.parts import base
from titan.core.parts.base import STOPPED_WITH_RUN, CoreState, _live, _span
from titan.core.parts.gates import Gates
from titan.core.parts.jobs import Jobs
from titan.core.parts.placement import Placement
from titan.core.parts.retention import Retention
from titan.core.parts.runs import Runs
from titan.core.parts.schedules import Schedules
from titan.core.parts.services import Services
from titan.core.parts.timers import Timers, pending_timers
from titan.core.parts.validation import Validation
from titan.core.parts.views import Queries
from titan.core.parts.workers import Workers

P, R, C = JobState.PENDING, JobState.RUNNING, JobState.COMPLETED
CORE = os.path.dirname(os.path.dirname(os.path.abspath(base.__file__)))  # titan/core


def job(key: str, seq: int, run_id=None, **spec) -> JobRecord:
    node = key.rsplit("/", 1)[-1]
    spec.setdefault("command", ("true",))
    return JobRecord(key, JobSpec(node, **spec), seq, 0.0, run_id=run_id)


def worker(worker_id: str, seq: int, slots: int = 1, tags=frozenset(), last_seen=0.0,
           **kw) -> WorkerRecord:
    return WorkerRecord(worker_id=worker_id, name=worker_id, host="h", tags=frozenset(tags),
                        slots=slots, joined_at=0.0, last_seen=last_seen, seq=seq, **kw)


class Calls:
    """Stand-ins for other parts' methods: each records its call and does nothing else."""

    def _record(self, name, *args):
        self.calls.append((name, *args))

    def _enqueue(self, job):
        job.queued = True
        self._record("enqueue", job.job_id)

    def _dispatch(self, now, out):
        self._record("dispatch")

    def _refresh(self, w):
        self._record("refresh", w.worker_id)

    def _defer(self, job, at, key, out):
        job.ready_at = at
        self._record("defer", job.job_id, at, key)

    def _maybe_forget(self, now, out):
        self._record("maybe_forget")


# -- base ------------------------------------------------------------------------------------


class CoreStateTests(SynchronousTestCase):
    def test_by_seq_is_submission_order_with_unknown_ids_last_by_id(self):
        s = CoreState()
        s._init_core()
        s.jobs = {"b": job("b", 2), "a": job("a", 9), "c": job("c", 1)}
        self.assertEqual(s._by_seq({"zz", "a", "b", "c", "yy"}), ["c", "b", "a", "yy", "zz"])

    def test_live_counts_jobs_not_ended(self):
        run = DagRun("r", "r", 0.0, 1, jobs=["r/a", "r/b", "r/c", "r/d"],
                     counts={P: 1, R: 1, C: 1, JobState.FAILED: 1})
        self.assertEqual(_live(run), 2)

    def test_span_in_words(self):
        self.assertEqual([_span(s) for s in (5, 59.6, 61, 3600, 3725)],
                         ["5s", "1m00s", "1m01s", "1h00m", "1h02m"])


# -- retention -------------------------------------------------------------------------------


class RetentionHost(Retention):
    def __init__(self, keep=2, grace=10.0, log_bytes=None):
        self._init_core()
        self._init_retention(keep, grace, log_bytes)

    def finish(self, key: str, at: float) -> list:
        j = self.jobs[key] = job(key, len(self.jobs) + 1)
        j.state = C
        out: list = []
        self._ended("job", key, 1, at, out)
        return out


class RetentionTests(SynchronousTestCase):
    def test_the_oldest_settled_are_proposed_past_the_bound(self):
        h = RetentionHost(keep=2, grace=10.0)
        for i in range(4):  # more than keep * 1.1 + 1 only at the fourth
            self.assertEqual(h.finish(f"j{i}", float(i)), [])
        out = h.finish("j4", 20.0)
        self.assertEqual(out, [ev.Propose(ev.Forget(("j0", "j1", "j2"), ()))])
        self.assertTrue(h._forgetting)
        self.assertEqual(h.finish("j5", 21.0), [])  # one proposal at a time

    def test_nothing_younger_than_the_grace(self):
        h = RetentionHost(keep=2, grace=10.0)
        for i in range(5):
            h.finish(f"j{i}", 100.0)
        self.assertEqual(h.finish("j5", 105.0), [])
        self.assertEqual(h._finished_jobs, 6)

    def test_forget_drops_jobs_and_says_so(self):
        h = RetentionHost(keep=2, grace=10.0)
        for i in range(3):
            h.finish(f"j{i}", float(i))
        h._log_written(ev.LogWritten("j0", 500), 3.0, [])
        out: list = []
        h._forget(ev.Forget(("j0", "j1"), ()), 30.0, out)
        self.assertEqual(out, [ev.Forgotten(("j0", "j1"))])
        self.assertEqual(sorted(h.jobs), ["j2"])
        self.assertEqual((h._finished_jobs, [i[1] for i in h._finished], h._log_total),
                         (1, ["j2"], 0))
        self.assertFalse(h._forgetting)

    def test_log_bytes_over_the_bound_propose_the_oldest(self):
        h = RetentionHost(keep=100, grace=1.0, log_bytes=1000)
        for i in range(3):
            h.finish(f"j{i}", 0.0)
            h._log_written(ev.LogWritten(f"j{i}", 400), 0.0, [])
        out: list = []
        h._log_written(ev.LogWritten("j2", 1), 5.0, out)  # 1201 bytes: down to 900
        self.assertEqual(out, [ev.Propose(ev.Forget(("j0",), ()))])

    def test_replay_proposes_nothing(self):
        h = RetentionHost(keep=1, grace=0.0)
        h._announce = False
        for i in range(5):
            self.assertEqual(h.finish(f"j{i}", float(i)), [])


# -- placement -------------------------------------------------------------------------------


class PlacementHost(Placement):
    def __init__(self, routers=None):
        self._init_core()
        self._init_placement(routers)

    def add_worker(self, w: WorkerRecord) -> WorkerRecord:
        self.workers[w.worker_id] = w
        self._refresh(w)
        return w

    def add_job(self, j: JobRecord) -> JobRecord:
        self.jobs[j.job_id] = j
        self._enqueue(j)
        return j

    def dispatch(self, now=1.0) -> list:
        out: list = []
        self._now = now
        self._dispatch(now, out)
        return [(d.job_id, d.worker_id) for d in out if isinstance(d, ev.Dispatch)]


class PlacementTests(SynchronousTestCase):
    def test_priority_first_then_submission_order(self):
        h = PlacementHost()
        h.add_worker(worker("w1", 1, slots=3))
        for key, seq, prio in (("a", 1, 0), ("b", 2, 5), ("c", 3, 0), ("d", 4, 5)):
            h.add_job(job(key, seq, priority=prio))
        self.assertEqual(h.dispatch(), [("b", "w1"), ("d", "w1"), ("a", "w1")])
        self.assertEqual(h.jobs["b"].state, R)
        self.assertEqual((h.jobs["b"].attempt, h.jobs["b"].worker_name), (1, "w1"))
        self.assertEqual(h.jobs["c"].state, P)
        self.assertNotIn("w1", h._free)  # full: no longer offered

    def test_least_loaded_worker_first(self):
        h = PlacementHost()
        h.add_worker(worker("w1", 1, slots=2, running={"x"}))
        h.add_worker(worker("w2", 2, slots=2))
        h.add_job(job("a", 1))
        self.assertEqual(h.dispatch(), [("a", "w2")])

    def test_a_job_no_worker_takes_does_not_block_others(self):
        h = PlacementHost()
        h.add_worker(worker("w1", 1, slots=2))
        h.add_job(job("gpu", 1, tags={"GPU"}))
        h.add_job(job("plain", 2))
        self.assertEqual(h.dispatch(), [("plain", "w1")])
        self.assertTrue(h.jobs["gpu"].queued)
        h.add_worker(worker("w2", 2, tags={"GPU"}))
        self.assertEqual(h.dispatch(), [("gpu", "w2")])

    def test_stale_entries_are_dropped(self):
        h = PlacementHost()
        h.add_worker(worker("w1", 1))
        a = h.add_job(job("a", 1))
        h.add_job(job("b", 2))
        a.queued = False  # cancelled while queued
        self.assertEqual(h.dispatch(), [("b", "w1")])

    def test_replay_moves_state_but_announces_no_dispatch(self):
        h = PlacementHost()
        h.add_worker(worker("w1", 1))
        h.add_job(job("a", 1))
        h._announce = False
        self.assertEqual(h.dispatch(), [])
        self.assertEqual((h.jobs["a"].state, h.workers["w1"].running), (R, {"a"}))

    def test_refresh_keeps_only_live_workers_with_room(self):
        h = PlacementHost()
        w = h.add_worker(worker("w1", 1, tags={"GPU"}))
        self.assertEqual((list(h._free), h.tagged_workers), (["w1"], 1))
        w.state = WorkerState.DRAINING
        h._refresh(w)
        self.assertEqual(list(h._free), [])
        del h.workers["w1"]
        h._refresh(w)
        self.assertEqual(h.tagged_workers, 0)

    def test_a_running_job_in_a_run_moves_its_counts(self):
        h = PlacementHost()
        h.runs["r"] = run = DagRun("r", "r", 0.0, 1, jobs=["r/a"], counts={P: 1})
        h.add_worker(worker("w1", 1))
        h.add_job(job("r/a", 1, run_id="r"))
        h.dispatch()
        self.assertEqual((run.counts, h._dirty_runs, [j.job_id for j in h._moved]),
                         ({P: 0, R: 1}, {"r": run}, ["r/a"]))

    def test_parent_workers_name_who_ran_the_parents(self):
        h = PlacementHost()
        for key, name in (("r/a", "w1"), ("r/b", None)):
            h.jobs[key] = j = job(key, 1, run_id="r")
            j.worker_name = name
        child = job("r/c", 3, run_id="r", depends_on=("a", "b"))
        self.assertEqual(h.parent_workers(child), {"w1"})
        self.assertEqual(h.parent_workers(job("solo", 4)), set())


# -- jobs ------------------------------------------------------------------------------------


class JobsHost(Calls, Jobs):
    def __init__(self, retries_rng=None):
        self.calls: list = []
        self._init_core()
        self._init_jobs(1.0, 8.0, retries_rng or random.Random(3))
        # retention's queue, which _set_state feeds inline for standalone jobs
        self.keep_finished, self._finished, self._finished_jobs = 100, deque(), 0
        self._next_forget_check = 0.0

    def _lost(self, job, attempt):
        return False

    def _next(self, job, attempt):
        return False

    def _await_approval(self, job, now, out):
        self._record("await_approval", job.job_id)

    def _cascade(self, job, out):
        self._record("cascade", job.job_id)

    def _release_children(self, job, out):
        self._record("release", job.job_id)

    def _run_ended(self, run, out):
        self._record("run_ended", run.run_id)

    def running(self, key: str, **spec) -> JobRecord:
        j = self.jobs[key] = job(key, len(self.jobs) + 1, **spec)
        j.state, j.attempt, j.worker_id = R, 1, "w1"
        return j

    def finish(self, key: str, code: int, reason=None, attempt=1, now=5.0) -> list:
        out: list = []
        self._now = now
        self._job_finished(ev.JobFinished(key, "w1", attempt, code, reason), now, out)
        return out


class JobsTests(SynchronousTestCase):
    def test_admit_sends_each_kind_its_way(self):
        h = JobsHost()
        for key, spec in (("plain", {}), ("later", {"delay": 3.0}),
                          ("gate", {"kind": "gate", "command": ()})):
            h.jobs[key] = job(key, 1, **spec)
            h._admit(h.jobs[key], 10.0, [])
        self.assertEqual(h.calls, [("enqueue", "plain"), ("defer", "later", 13.0,
                                                          ("ready", "later", 0)),
                                   ("await_approval", "gate")])

    def test_a_completion_ends_the_job_and_is_remembered(self):
        h = JobsHost()
        h.running("a")
        out = h.finish("a", 0)
        self.assertEqual(out, [ev.JobEnded("a", C)])
        self.assertEqual((h.jobs["a"].state, h.jobs["a"].exit_code, h.jobs["a"].finished_at),
                         (C, 0, 5.0))
        self.assertEqual(list(h._finished), [("job", "a", 1, 5.0)])
        self.assertIn(("dispatch",), h.calls)

    def test_a_failure_with_retries_left_waits_a_backoff_with_jitter(self):
        h = JobsHost()
        h.running("a", retries=3)
        for failures, (low, high) in enumerate(((0.5, 1.0), (1.0, 2.0), (2.0, 4.0)), 1):
            h.calls.clear()
            self.assertEqual(h.finish("a", 1, attempt=failures, now=0.0), [])
            a = h.jobs["a"]
            self.assertEqual((a.state, a.failures, a.reason, a.worker_id), (P, failures,
                                                                             "exit 1", None))
            [(_, _, at, key)] = [c for c in h.calls if c[0] == "defer"]
            self.assertTrue(low <= at < high, (failures, at))
            self.assertEqual(key, ("ready", "a", failures))
            a.state, a.attempt, a.worker_id = R, failures + 1, "w1"

    def test_out_of_retries_is_dead_and_without_retries_failed(self):
        h = JobsHost()
        h.running("a", retries=1).failures = 1
        h.running("b")
        self.assertEqual(h.finish("a", 2, attempt=1), [ev.JobEnded("a", JobState.DEAD)])
        self.assertEqual(h.finish("b", 0, reason="timeout after 5s"),
                         [ev.JobEnded("b", JobState.FAILED)])
        self.assertEqual(h.jobs["b"].reason, "timeout after 5s")

    def test_an_old_attempt_changes_nothing(self):
        h = JobsHost()
        h.running("a").attempt = 2
        self.assertEqual(h.finish("a", 0, attempt=1), [])
        self.assertEqual(h.jobs["a"].state, R)

    def test_cancel_kills_a_running_job(self):
        h = JobsHost()
        h.running("a")
        out: list = []
        h._cancel(ev.CancelRequested("a", "cancelled by ann"), 7.0, out)
        self.assertEqual(out, [ev.Kill("w1", "a", 1, "cancelled by ann"),
                               ev.JobEnded("a", JobState.CANCELLED)])
        self.assertEqual((h.jobs["a"].reason, h.jobs["a"].finished_at), ("cancelled by ann", 7.0))

    def test_set_state_in_a_run(self):
        h = JobsHost()
        h.runs["r"] = run = DagRun("r", "r", 0.0, 1, jobs=["r/a", "r/b"], counts={R: 2}, left=2)
        for key in run.jobs:
            h.running(key, run_id="r")
        h.jobs["r/a"].children = ("b",)
        h._set_state(h.jobs["r/a"], JobState.FAILED, [])
        h._set_state(h.jobs["r/b"], C, [])
        self.assertEqual(run.counts, {R: 0, JobState.FAILED: 1, C: 1})
        self.assertEqual(run.left, 0)
        self.assertEqual([c for c in h.calls if c[0] != "dispatch"],
                         [("cascade", "r/a"), ("run_ended", "r")])
        self.assertEqual(list(h._finished), [])  # a run's jobs are remembered with their run


# -- runs ------------------------------------------------------------------------------------


class RunsHost(Calls, Runs, Jobs):
    """Runs with the real _set_state (jobs), placement and retention stood in for."""

    def __init__(self):
        self.calls: list = []
        self._init_core()
        self._init_runs()
        self._init_jobs(1.0, 8.0, random.Random(0))

    def _stop_helpers(self, run, out):
        self._record("stop_helpers", run.run_id)

    def _ended(self, kind, ident, jobs, now, out):
        self._record("ended", kind, ident, jobs)

    def submit(self, name: str, jobs: list) -> DagRun:
        self._dag_submitted(ev.DagSubmitted(name, parse_dag({"name": name, "jobs": jobs})),
                            0.0, [])
        return self.runs[name]

    def end(self, key: str, state: JobState) -> list:
        out: list = []
        j = self.jobs[key]
        j.state = R
        self.runs[j.run_id].counts[P] -= 1
        self.runs[j.run_id].counts[R] = self.runs[j.run_id].counts.get(R, 0) + 1
        self._set_state(j, state, out)
        return out


def chain(n: int) -> list:
    return [{"id": f"j{i}", "command": ["true"], "depends_on": [f"j{i - 1}"] if i else []}
            for i in range(n)]


class RunsTests(SynchronousTestCase):
    def test_only_roots_are_admitted_and_children_follow_their_parents(self):
        h = RunsHost()
        run = h.submit("r", [{"id": "a", "command": ["a"]}, {"id": "b", "command": ["b"]},
                             {"id": "c", "command": ["c"], "depends_on": ["a", "b"]}])
        self.assertEqual((run.left, run.counts, h.jobs["r/c"].parents_left), (3, {P: 3}, 2))
        self.assertEqual([c[1] for c in h.calls if c[0] == "enqueue"], ["r/a", "r/b"])
        h.end("r/a", C)
        self.assertFalse(h.jobs["r/c"].queued)
        h.end("r/b", C)
        self.assertTrue(h.jobs["r/c"].queued)

    def test_a_failure_cancels_every_descendant_naming_the_first_cause(self):
        h = RunsHost()
        h.submit("r", chain(4))
        h.end("r/j0", JobState.FAILED)
        self.assertEqual([(h.jobs[f"r/j{i}"].state, h.jobs[f"r/j{i}"].reason)
                          for i in (1, 2, 3)],
                         [(JobState.CANCELLED, "cancelled: j0 FAILED")] * 3)
        self.assertEqual(h.runs["r"].state, RunState.FAILED)
        self.assertIn(("ended", "run", "r", 4), h.calls)

    def test_a_deep_cascade_needs_no_deep_stack(self):
        h = RunsHost()
        h.submit("r", chain(5000))
        h.end("r/j0", JobState.FAILED)  # recursion would exceed the interpreter's limit
        self.assertEqual(h.jobs["r/j4999"].state, JobState.CANCELLED)

    def test_a_run_cancel_gives_every_job_its_reason(self):
        h = RunsHost()
        h.submit("r", chain(3))
        h._run_cancel(ev.RunCancelRequested("r", "cancelled: enough"), 1.0, [])
        self.assertEqual({h.jobs[k].reason for k in h.runs["r"].jobs}, {"cancelled: enough"})
        self.assertEqual(h.runs["r"].state, RunState.CANCELLED)

    def test_growth_counts_parents_that_have_not_completed(self):
        h = RunsHost()
        h.submit("r", chain(2))
        h.end("r/j0", C)
        h._jobs_added(ev.JobsAdded("r", (JobSpec("x", ("x",), depends_on=("j0", "j1")),)),
                      1.0, [])
        self.assertEqual((h.jobs["r/x"].parents_left, h.jobs["r/j1"].children), (1, ("x",)))
        self.assertEqual(h.runs["r"].left, 2)

    def test_run_end_stops_helpers_and_completes(self):
        h = RunsHost()
        h.submit("r", [{"id": "a", "command": ["a"]}])
        h.end("r/a", C)
        self.assertEqual(h.runs["r"].state, RunState.COMPLETED)
        self.assertEqual(h.runs["r"].finished_at, 0.0)
        self.assertNotIn(("stop_helpers", "r"), h.calls)  # nothing still up


# -- gates -----------------------------------------------------------------------------------


class GatesHost(Calls, Gates):
    def __init__(self):
        self.calls: list = []
        self._init_core()

    def _set_state(self, job, state, out):
        job.state = state
        self._record("set_state", job.job_id, state)

    def gate(self, key="g", **spec) -> JobRecord:
        j = self.jobs[key] = job(key, 1, kind="gate", command=(), **spec)
        return j


class GatesTests(SynchronousTestCase):
    def test_a_gate_waits_for_a_person_until_its_timeout(self):
        h = GatesHost()
        h._await_approval(h.gate(timeout=60.0), 100.0, [])
        h._await_approval(h.gate("h"), 100.0, [])  # built in code, without a timeout
        self.assertEqual(h.calls, [
            ("set_state", "g", JobState.WAITING_APPROVAL), ("defer", "g", 160.0, ("gate", "g", 0)),
            ("set_state", "h", JobState.WAITING_APPROVAL),
            ("defer", "h", 100.0 + GATE_TIMEOUT, ("gate", "h", 0))])
        self.assertEqual(h.jobs["g"].started_at, 100.0)

    def test_approval_completes_and_rejection_cancels(self):
        h = GatesHost()
        for key in ("yes", "no"):
            h.gate(key).state = JobState.WAITING_APPROVAL
        h._gate_decided(ev.GateDecided("yes", True, "ann", "fine", via="token:ops"), 5.0, [])
        h._gate_decided(ev.GateDecided("no", False, "bob", "too risky"), 6.0, [])
        self.assertEqual(h.jobs["yes"].state, C)
        self.assertEqual(h.jobs["yes"].decision, {"approved": True, "by": "ann",
                                                  "comment": "fine", "at": 5.0,
                                                  "via": "token:ops"})
        self.assertEqual((h.jobs["no"].state, h.jobs["no"].reason),
                         (JobState.CANCELLED, "rejected by bob: too risky"))

    def test_a_gate_not_waiting_is_not_decided(self):
        h = GatesHost()
        h.gate()
        h._gate_decided(ev.GateDecided("g", True, "ann"), 5.0, [])
        self.assertEqual((h.jobs["g"].state, h.jobs["g"].decision), (P, None))

    def test_timeout_decides_as_on_timeout_says(self):
        h = GatesHost()
        for key, on_timeout in (("a", "approve"), ("r", "reject")):
            h.gate(key, timeout=90.0, on_timeout=on_timeout).state = JobState.WAITING_APPROVAL
            h._gate_timed_out(h.jobs[key], 9.0, [])
        self.assertEqual((h.jobs["a"].state, h.jobs["r"].state), (C, JobState.CANCELLED))
        self.assertEqual(h.jobs["r"].reason, "rejected by timeout: no decision within 1m30s")


# -- services --------------------------------------------------------------------------------


class ServicesHost(Calls, Services):
    def __init__(self):
        self.calls: list = []
        self._init_core()
        self.runs["r"] = DagRun("r", "r", 0.0, 1, jobs=["r/db", "r/app"], left=2)
        db = self.jobs["r/db"] = job("r/db", 1, run_id="r", kind="service")
        db.state, db.attempt, db.worker_id, db.children = R, 1, "w1", ("app",)
        self.jobs["r/app"] = job("r/app", 2, run_id="r", depends_on=("db",))

    def _set_state(self, job, state, out):
        job.state = state

    def _release_children(self, job, out):
        self._record("release", job.job_id)

    def _run_ended(self, run, out):
        self._record("run_ended", run.run_id)

    def report(self, state: str, attempt=1) -> None:
        self._service_reported(ev.ServiceReported("r/db", "w1", attempt, {"state": state}),
                               1.0, [])


class ServicesTests(SynchronousTestCase):
    def test_up_once_releases_its_dependents_and_its_run_stops_waiting(self):
        h = ServicesHost()
        h.report("STARTING")
        self.assertEqual((h.calls, h.jobs["r/db"].released), ([], False))
        h.report("RUNNING")
        h.report("RUNNING")
        self.assertEqual([c for c in h.calls if c[0] == "release"], [("release", "r/db")])
        self.assertEqual(h.runs["r"].left, 1)
        self.assertEqual(h.jobs["r/db"].service, {"state": "RUNNING"})

    def test_a_report_of_another_attempt_is_ignored(self):
        h = ServicesHost()
        h.report("RUNNING", attempt=2)
        self.assertEqual((h.calls, h.jobs["r/db"].service), ([], None))

    def test_helpers_stop_with_their_run_and_persistent_or_final_ones_go_on(self):
        h = ServicesHost()
        keep = h.jobs["r/keep"] = job("r/keep", 3, run_id="r", kind="service", persist=True)
        keep.state, keep.children = R, ("app",)
        final = h.jobs["r/final"] = job("r/final", 4, run_id="r", kind="service")
        final.state = R
        h.runs["r"].jobs += ["r/keep", "r/final"]
        out: list = []
        h._now = 8.0
        h._stop_helpers(h.runs["r"], out)
        self.assertEqual(out, [ev.Kill("w1", "r/db", 1, STOPPED_WITH_RUN)])
        self.assertEqual((h.jobs["r/db"].state, h.jobs["r/db"].reason), (C, STOPPED_WITH_RUN))
        self.assertEqual((keep.state, final.state), (R, R))


# -- workers ---------------------------------------------------------------------------------


class WorkersHost(Calls, Workers):
    def __init__(self):
        self.calls: list = []
        self._init_core()
        self._init_workers(10.0)

    def _set_state(self, job, state, out):
        job.state = state

    def _job_finished(self, e, now, out, dispatch=True):
        self._record("finished", e.job_id, e.attempt)

    def _attempt_ended(self, job, outcome, exit_code, now):
        self._record("attempt_ended", job.job_id, outcome)

    def _attempt_found(self, job, attempt):
        self._record("attempt_found", job.job_id, attempt)

    def on(self, w: WorkerRecord, *keys: str) -> None:
        self.workers[w.worker_id] = w
        for i, key in enumerate(keys):
            j = self.jobs[key] = job(key, 10 - i)
            j.state, j.attempt, j.worker_id = R, 1, w.worker_id
            w.running.add(key)


class WorkersTests(SynchronousTestCase):
    def test_silent_workers_are_proposed_lost(self):
        h = WorkersHost()
        h.workers = {"w1": worker("w1", 1, last_seen=5.0), "w2": worker("w2", 2, last_seen=1.0)}
        out: list = []
        h._tick(ev.Tick(), 14.0, out)
        self.assertEqual(out, [ev.Propose(ev.WorkerLost("w2", "no heartbeat for 13.0s"))])
        self.assertEqual(h.calls, [("maybe_forget",)])

    def test_a_lost_worker_s_jobs_are_requeued_in_order_without_spending_a_retry(self):
        h = WorkersHost()
        h.on(worker("w1", 1, slots=2), "a", "b")
        out: list = []
        h._worker_lost(ev.WorkerLost("w1", "gone"), 3.0, out)
        self.assertEqual(out, [ev.WorkerChanged("w1", WorkerState.DEAD, "gone")])
        self.assertEqual([c for c in h.calls if c[0] == "enqueue"],
                         [("enqueue", "b"), ("enqueue", "a")])  # b was submitted first
        self.assertEqual([(h.jobs[k].state, h.jobs[k].failures, h.jobs[k].reason)
                          for k in "ab"], [(P, 0, "worker w1 lost: gone")] * 2)
        self.assertEqual([c for c in h.calls if c[0] == "attempt_ended"],
                         [("attempt_ended", "b", "LOST"), ("attempt_ended", "a", "LOST")])
        self.assertNotIn("w1", h.workers)

    def test_a_worker_back_adopts_what_it_runs_and_kills_what_is_unknown(self):
        h = WorkersHost()
        h.on(worker("w1", 1, slots=3), "a", "b")
        out: list = []
        h._worker_joined(ev.WorkerJoined("w1", "w1", "h", frozenset(), 3,
                                         running=(ev.JobReport("a", 1), ev.JobReport("x", 4)),
                                         finished=(ev.JobReport("b", 1, 0),)), 2.0, out)
        self.assertEqual(out, [ev.WorkerChanged("w1", WorkerState.ALIVE, "joined"),
                               ev.Kill("w1", "x", 4, "unknown to the master")])
        self.assertIn(("finished", "b", 1), h.calls)
        self.assertEqual(h.jobs["a"].state, R)

    def test_lost_and_next_attempts(self):
        j = job("a", 1)
        j.attempt, j.queued = 2, True
        self.assertTrue(Workers._lost(j, 2))
        self.assertFalse(Workers._lost(j, 1))
        self.assertTrue(Workers._next(j, 3))
        j.finished_at = 1.0  # its attempt ended: a repeated report is stale
        self.assertFalse(Workers._lost(j, 2))

    def test_a_master_restart_gives_every_worker_a_full_timeout(self):
        h = WorkersHost()
        h.workers = {"w1": worker("w1", 1, last_seen=1.0)}
        h._forgetting = True
        out: list = []
        h._master_restarted(ev.MasterRestarted(), 50.0, out)
        self.assertEqual((h.workers["w1"].state, h.workers["w1"].last_seen, h._forgetting),
                         (WorkerState.DISCONNECTED, 50.0, False))
        self.assertEqual(out, [ev.WorkerChanged("w1", WorkerState.DISCONNECTED,
                                                "master restarted")])


# -- schedules and timers --------------------------------------------------------------------


class SchedulesHost(Calls, Schedules):
    def __init__(self):
        self.calls: list = []
        self._init_core()

    def _dag_submitted(self, e, now, out, schedule_id=None):
        self.runs[e.run_id] = None
        self._record("run", e.run_id, schedule_id)


T0 = 1_700_000_000.0  # 2023-11-14T22:13:20Z


class SchedulesTests(SynchronousTestCase):
    def test_a_schedule_arms_its_next_firing(self):
        h = SchedulesHost()
        out: list = []
        h._schedule_added(ev.ScheduleAdded("s", "*/5 * * * *", parse_dag(
            {"name": "nightly", "jobs": [{"id": "a", "command": ["a"]}]})), T0, out)
        self.assertEqual(out, [ev.SetTimer(("cron", "s", 0), T0 + 100.0)])

    def test_firing_starts_a_run_named_by_its_time_and_arms_the_next(self):
        h = SchedulesHost()
        sched = Schedule("s", "nightly", "*/5 * * * *", None, 0.0, next_at=T0 + 100.0)
        h.runs["nightly-20231114T221500"] = None  # taken: the new run gets an x
        out: list = []
        h._fire(sched, T0 + 1000.0, out)  # late: missed firings are not made up
        self.assertEqual(h.calls, [("run", "nightly-20231114T221500x", "s")])
        self.assertEqual((sched.fired, sched.last_run_id), (1, "nightly-20231114T221500x"))
        self.assertEqual(out, [ev.SetTimer(("cron", "s", 1), T0 + 1300.0)])


class TimersHost(Calls, Timers):
    def __init__(self):
        self.calls: list = []
        self._init_core()

    def _fire(self, sched, now, out):
        self._record("fire", sched.schedule_id)

    def _gate_timed_out(self, job, now, out):
        self._record("gate_timed_out", job.job_id)


class TimersTests(SynchronousTestCase):
    def test_only_the_current_timer_counts(self):
        h = TimersHost()
        a = h.jobs["a"] = job("a", 1)
        a.failures, a.ready_at = 2, 9.0
        for key in (("ready", "a", 1), ("ready", "gone", 0), "junk"):  # an older retry's
            h._timer_fired(ev.TimerFired(key), 9.0, [])
        self.assertEqual((h.calls, a.ready_at), ([], 9.0))
        h._timer_fired(ev.TimerFired(("ready", "a", 2)), 9.0, [])
        self.assertEqual(h.calls, [("enqueue", "a"), ("dispatch",)])
        self.assertIsNone(a.ready_at)

    def test_cron_and_gate_timers_go_to_their_parts(self):
        h = TimersHost()
        h.schedules["s"] = Schedule("s", "n", "* * * * *", None, 0.0, fired=3)
        g = h.jobs["g"] = job("g", 1, kind="gate", command=())
        g.state = JobState.WAITING_APPROVAL
        for key in (("cron", "s", 2), ("cron", "s", 3), ("gate", "g", 0)):
            h._timer_fired(ev.TimerFired(key), 1.0, [])
        self.assertEqual(h.calls, [("fire", "s"), ("gate_timed_out", "g")])

    def test_pending_timers_are_what_the_state_implies(self):
        h = TimersHost()
        g = h.jobs["g"] = job("g", 1, kind="gate", command=())
        g.state, g.ready_at = JobState.WAITING_APPROVAL, 50.0
        r = h.jobs["r"] = job("r", 2)
        r.failures, r.ready_at = 1, 20.0
        q = h.jobs["q"] = job("q", 3)
        q.queued, q.ready_at = True, 5.0  # queued already: no timer
        h.schedules["s"] = Schedule("s", "n", "* * * * *", None, 0.0, fired=4, next_at=60.0)
        self.assertEqual(pending_timers(h), [ev.SetTimer(("gate", "g", 0), 50.0),
                                             ev.SetTimer(("ready", "r", 1), 20.0),
                                             ev.SetTimer(("cron", "s", 4), 60.0)])


# -- validation and views --------------------------------------------------------------------


class ValidationHost(Validation):
    def __init__(self, bound=5):
        self._init_core()
        self._init_validation(bound)


class ValidationTests(SynchronousTestCase):
    def refused(self, h, event, words):
        e = self.assertRaises(SubmitError, h.validate, event)
        self.assertIn(words, str(e))

    def test_bad_jobs_are_refused(self):
        h = ValidationHost()
        h.jobs["a"] = job("a", 1)
        self.refused(h, ev.JobSubmitted(JobSpec("a", ("x",))), "already taken")
        self.refused(h, ev.JobSubmitted(JobSpec("b", ())), "non-empty list")
        self.refused(h, ev.JobSubmitted(JobSpec("b", ("x",), retries=-1)), "0 or more")
        self.refused(h, ev.JobSubmitted(JobSpec("b", ("x",), timeout=0)), "positive")
        h.validate(ev.JobSubmitted(JobSpec("b", ("x",))))

    def test_a_run_may_lower_its_bound_never_raise_it(self):
        h = ValidationHost(bound=5)
        body = {"name": "r", "jobs": [{"id": f"j{i}", "command": ["x"]} for i in range(4)]}
        h.validate(ev.DagSubmitted("r", parse_dag(body)))
        self.refused(h, ev.DagSubmitted("r", parse_dag({**body, "max_jobs": 3})),
                     "over its limit of 3")
        body6 = {"name": "r", "jobs": [{"id": f"j{i}", "command": ["x"]} for i in range(6)],
                 "max_jobs": 100}
        self.refused(h, ev.DagSubmitted("r", parse_dag(body6)), "over its limit of 5")

    def test_growth_of_an_ended_run_a_gate_not_waiting_and_no_cron_are_refused(self):
        h = ValidationHost()
        h.runs["r"] = DagRun("r", "r", 0.0, 1, state=RunState.COMPLETED)
        self.refused(h, ev.JobsAdded("r", (JobSpec("x", ("x",)),)), "takes no more jobs")
        h.jobs["g"] = job("g", 1, kind="gate", command=())
        self.refused(h, ev.GateDecided("g", True, "ann"), "not waiting for approval")
        self.refused(h, ev.ScheduleAdded("s", "every day", None), "not a cron expression")


class QueriesHost(Queries, Placement):
    def __init__(self):
        self._init_core()
        self._init_placement(None)


class QueriesTests(SynchronousTestCase):
    def test_why_a_job_waits(self):
        h = QueriesHost()
        a = h.jobs["a"] = job("a", 1)
        a.queued = True
        self.assertEqual(h.waiting_reason("a", 0.0), "no live worker")
        h.workers["w1"] = worker("w1", 1)
        self.assertEqual(h.waiting_reason("a", 0.0), "waiting for a free slot")
        g = h.jobs["b"] = job("b", 2, tags={"GPU"})
        g.queued = True
        self.assertEqual(h.waiting_reason("b", 0.0), "no live worker has the tags GPU")
        r = h.jobs["r"] = job("r", 3, retries=2)
        r.failures, r.ready_at, r.reason = 1, 4.0, "exit 1"
        self.assertEqual(h.waiting_reason("r", 1.5),
                         "retry 1 of 2 in 2.5s (last attempt: exit 1)")

    def test_a_bare_job_id_names_the_job_of_the_live_run(self):
        h = QueriesHost()
        for run_id, state in (("old", RunState.COMPLETED), ("new", RunState.RUNNING),
                              ("new2", RunState.RUNNING)):
            h.runs[run_id] = DagRun(run_id, run_id, 0.0, 1, state=state)
        h.jobs["old/a"] = job("old/a", 1, run_id="old")
        h.jobs["new/a"] = job("new/a", 2, run_id="new")
        h.nodes["a"] = ("old/a", "new/a")
        self.assertEqual(h.resolve("a"), "new/a")
        self.assertEqual(h.resolve("old/a"), "old/a")
        h.jobs["new2/a"] = job("new2/a", 3, run_id="new2")
        h.nodes["a"] += ("new2/a",)
        e = self.assertRaises(SubmitError, h.resolve, "a")
        self.assertIn("several runs (new, new2)", str(e))
        self.assertRaises(SubmitError, h.resolve, "nope")


# -- layers ----------------------------------------------------------------------------------


def imports(path: str) -> set:
    """Every module a file imports, at any level (function bodies, TYPE_CHECKING included)."""
    with open(path) as f:
        tree = ast.parse(f.read())
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
            found.update(f"{node.module}.{a.name}" for a in node.names)
    return found


class LayerTests(SynchronousTestCase):
    def test_a_part_imports_no_other_part_and_nothing_of_the_shell(self):
        parts = os.path.join(CORE, "parts")
        names = sorted(n for n in os.listdir(parts) if n.endswith(".py") and n != "__init__.py")
        self.assertIn("jobs.py", names)
        for name in names:
            for module in imports(os.path.join(parts, name)):
                self.assertFalse(module.startswith(("twisted", "titan.master", "titan.worker")),
                                 f"{name} imports {module}")
                if module.startswith("titan.core.parts."):
                    self.assertEqual(module.split(".")[3], "base", f"{name} imports {module}")
                if name not in ("views.py", "snapshot.py"):  # they name Scheduler for typing
                    self.assertNotEqual(module, "titan.core.scheduler", f"{name} imports it")

    def test_the_core_is_pure(self):
        for name in sorted(os.listdir(CORE)):
            if name.endswith(".py"):
                for module in imports(os.path.join(CORE, name)):
                    self.assertFalse(module.startswith(("twisted.internet", "titan.master")),
                                     f"{name} imports {module}")

    def test_the_names_others_import_from_the_scheduler_stay(self):
        from titan.core import scheduler
        for name in ("Scheduler", "SubmitError", "JobSpec", "Decisions", "STOPPED_WITH_RUN",
                     "DEFAULT_MAX_JOBS_PER_RUN", "DEFAULT_KEEP_FINISHED", "DEFAULT_FORGET_GRACE",
                     "job_view", "run_view", "run_job_view", "service_view", "worker_view",
                     "snapshot", "restore", "pending_timers", "cron_next", "cron_valid"):
            self.assertIn(name, scheduler.__all__)
            self.assertTrue(hasattr(scheduler, name), name)
