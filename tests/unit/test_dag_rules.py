"""The DAG rules of the pure core, driven by `task.Clock` (issue 21, item 1).

Runs are built the way a client's submission is (`parse_dag` / `parse_jobs`), applied through
the `Harness` of test_scheduler (whose clock fires the scheduler's timers), and judged by what
a user sees: each job's state and reason (`run_view`, `job_view`, `waiting_reason`), the run's
state, and which jobs were dispatched or killed.
"""
from __future__ import annotations

from typing import Optional

import attrs
from twisted.trial.unittest import SynchronousTestCase

from titan.core import events as ev
from titan.core.dag import GATE_TIMEOUT, SubmitError, parse_dag, parse_jobs
from titan.core.model import JobState, RunState
from titan.core.scheduler import job_view, run_view
from tests.unit.test_scheduler import Harness, dispatched, kills, timers

PENDING, RUNNING, COMPLETED = JobState.PENDING, JobState.RUNNING, JobState.COMPLETED
FAILED, DEAD, CANCELLED = JobState.FAILED, JobState.DEAD, JobState.CANCELLED
WAITING = JobState.WAITING_APPROVAL


def job(node: str, *parents: str, **kw) -> dict:
    """One job of a DAG, in the wire form a client submits."""
    return {"id": node, "command": ["true"], "depends_on": list(parents), **kw}


def gate(node: str, *parents: str, **kw) -> dict:
    return {"id": node, "kind": "gate", "depends_on": list(parents), **kw}


class DagHarness(Harness):
    """The scheduler harness, with runs: submit, grow, decide, and look at them."""

    def dag(self, run_id: str, jobs: list, **body) -> list:
        event = ev.DagSubmitted(run_id, parse_dag({"name": run_id, "jobs": jobs, **body}))
        self.s.validate(event)
        return self.apply(event)

    def add(self, run_id: str, jobs: list, by: str = "") -> list:
        event = ev.JobsAdded(run_id, tuple(parse_jobs(jobs)), by)
        self.s.validate(event)  # refused growth raises here, before it is applied
        return self.apply(event)

    def decide(self, key: str, approved: bool, by: str = "alice", comment: str = "") -> list:
        event = ev.GateDecided(key, approved, by, comment)
        self.s.validate(event)
        return self.apply(event)

    def run(self, run_id: str) -> dict:
        return run_view(self.s, self.s.runs[run_id], self.clock.seconds())

    def run_state(self, run_id: str) -> str:
        return self.run(run_id)["state"]

    def view(self, key: str) -> dict:
        return job_view(self.s, self.s.jobs[key], self.clock.seconds())

    def states(self, run_id: str) -> dict:
        """node -> (state, reason), as `titan run show` lists them."""
        return {j["node"]: (j["state"], j["reason"]) for j in self.run(run_id)["jobs"]}

    def running(self) -> list:
        return sorted(k for k, j in self.s.jobs.items() if j.state is RUNNING)

    def ran(self) -> set:
        """Every job that was ever dispatched."""
        return {job_id for job_id, _, _ in dispatched(self.log)}

    def ended(self, key: str) -> list:
        return [d.state for d in self.log if isinstance(d, ev.JobEnded) and d.job_id == key]


class DagCase(SynchronousTestCase):
    slots = 8

    def setUp(self) -> None:
        self.h = DagHarness()
        self.h.join("w1", slots=self.slots)

    def assertNothingPending(self, run_id: str) -> None:
        left = {node: state for node, (state, _) in self.h.states(run_id).items()
                if state in ("PENDING", "RUNNING", "WAITING_APPROVAL")}
        self.assertEqual(left, {}, f"jobs of {run_id} left behind")
        self.assertNotIn("PENDING", self.h.run(run_id)["counts"])


class ReadinessTests(DagCase):
    def test_chain_goes_one_job_at_a_time(self):
        self.assertEqual(dispatched(self.h.dag("r", [
            job("a"), job("b", "a"), job("c", "b"), job("d", "c")])), [("r/a", "w1", 1)])
        self.assertEqual(self.h.waiting("r/b"), "waiting for a")
        self.assertEqual(self.h.waiting("r/d"), "waiting for c")
        for node, nxt in [("a", "b"), ("b", "c"), ("c", "d")]:
            self.assertEqual(self.h.state("r/" + nxt), PENDING)
            self.assertEqual(dispatched(self.h.finish("r/" + node)), [(f"r/{nxt}", "w1", 1)])
            self.assertEqual(self.h.run_state("r"), "RUNNING")
        self.h.finish("r/d")
        self.assertEqual(self.h.run_state("r"), "COMPLETED")
        self.assertEqual(self.h.run("r")["counts"], {"COMPLETED": 4})

    def test_diamond_join_waits_for_both_branches(self):
        self.h.dag("r", [job("a"), job("b", "a"), job("c", "a"), job("d", "b", "c")])
        self.assertEqual(self.h.running(), ["r/a"])
        self.assertEqual(sorted(dispatched(self.h.finish("r/a"))),
                         [("r/b", "w1", 1), ("r/c", "w1", 1)])
        self.assertEqual(dispatched(self.h.finish("r/b")), [])
        self.assertEqual(self.h.state("r/d"), PENDING)
        self.assertEqual(self.h.waiting("r/d"), "waiting for c")
        self.assertEqual(dispatched(self.h.finish("r/c")), [("r/d", "w1", 1)])
        self.h.finish("r/d")
        self.assertEqual(self.h.run_state("r"), "COMPLETED")

    def test_fan_in_waits_for_the_last_parent_and_names_those_left(self):
        parents = [f"p{n}" for n in range(5)]
        self.h.dag("r", [job(p) for p in parents] + [job("sink", *parents)])
        self.assertEqual(self.h.running(), [f"r/{p}" for p in parents])
        for n, p in enumerate(parents[:-1]):
            self.assertEqual(dispatched(self.h.finish("r/" + p)), [])
            self.assertEqual(self.h.state("r/sink"), PENDING)
            self.assertEqual(self.h.waiting("r/sink"),
                             "waiting for " + ", ".join(parents[n + 1:]))
        self.assertEqual(dispatched(self.h.finish("r/p4")), [("r/sink", "w1", 1)])

    def test_a_parent_still_running_or_failed_for_now_does_not_release(self):
        # A parent that is RUNNING, or PENDING a retry, is not COMPLETED: the child waits.
        self.h.dag("r", [job("a", retries=1), job("b", "a")])
        self.assertEqual(self.h.state("r/b"), PENDING)
        self.assertEqual(dispatched(self.h.finish("r/a", exit_code=1)), [])
        self.assertEqual(self.h.state("r/a"), PENDING)
        self.assertEqual(self.h.state("r/b"), PENDING)
        self.assertNotIn("r/b", self.h.ran())

    def test_a_delayed_job_waits_for_its_clock_after_its_parents(self):
        self.h.dag("r", [job("a"), job("b", "a", delay=30)])
        out = self.h.finish("r/a")
        self.assertEqual(dispatched(out), [])
        self.assertEqual([t.at for t in timers(out)], [30.0])
        self.assertEqual(self.h.waiting("r/b"), "delayed; due in 30.0s")
        self.h.clock.advance(29.5)
        self.assertEqual(self.h.state("r/b"), PENDING)
        self.assertEqual(self.h.waiting("r/b"), "delayed; due in 0.5s")
        self.assertNotIn("r/b", self.h.ran())
        self.h.clock.advance(0.5)
        self.assertEqual(self.h.state("r/b"), RUNNING)
        self.assertEqual(self.h.job("r/b").started_at, 30.0)

    def test_a_delay_counts_from_when_the_parents_are_done(self):
        # The delay of a job with parents starts once they complete, not at submission.
        self.h.dag("r", [job("a"), job("b", "a", delay=10)])
        self.h.clock.advance(100)
        self.assertEqual(self.h.state("r/b"), PENDING)
        self.h.finish("r/a")
        self.h.clock.advance(9)
        self.assertEqual(self.h.state("r/b"), PENDING)
        self.h.clock.advance(1)
        self.assertEqual(self.h.state("r/b"), RUNNING)


class CascadeTests(DagCase):
    def chain(self, **root) -> list:
        # r -> a -> b -> c -> d -> e (depth 5 below r), and a sibling branch r -> s -> t.
        return self.h.dag("r", [
            job("r"), job("a", "r", **root), job("b", "a"), job("c", "b"), job("d", "c"),
            job("e", "d"), job("s", "r"), job("t", "s")])

    def test_a_failure_cancels_every_descendant_of_a_chain_naming_the_failed_job(self):
        self.chain()
        self.h.finish("r/r")
        self.assertEqual(self.h.running(), ["r/a", "r/s"])
        self.h.finish("r/a", exit_code=3)
        states = self.h.states("r")
        self.assertEqual(states["a"], ("FAILED", "exit 3"))
        for node in "bcde":
            self.assertEqual(states[node], ("CANCELLED", "cancelled: a FAILED"), node)
            self.assertEqual(self.h.ended("r/" + node), [CANCELLED])
        # The sibling branch goes on; the run waits for it, then says FAILED.
        self.assertEqual(states["s"], ("RUNNING", None))
        self.assertEqual(states["t"], ("PENDING", None))
        self.assertEqual(self.h.run_state("r"), "RUNNING")
        self.h.finish("r/s")
        self.assertEqual(self.h.run_state("r"), "RUNNING")
        self.h.finish("r/t")
        self.assertEqual(self.h.states("r")["t"], ("COMPLETED", None))
        self.assertEqual(self.h.run_state("r"), "FAILED")
        self.assertNothingPending("r")
        self.assertEqual(self.h.ran() & {f"r/{n}" for n in "bcde"}, set())

    def test_a_dead_job_cancels_every_descendant_naming_it_dead(self):
        self.chain(retries=1)
        self.h.finish("r/r")
        self.h.finish("r/s")
        self.h.finish("r/t")
        self.h.finish("r/a", exit_code=1)
        # A retry is left: nothing below it is cancelled yet.
        self.assertEqual(self.h.states("r")["b"], ("PENDING", None))
        self.assertEqual(self.h.run_state("r"), "RUNNING")
        self.h.clock.advance(60)
        self.assertEqual(self.h.job("r/a").attempt, 2)
        self.h.finish("r/a", exit_code=1)
        states = self.h.states("r")
        self.assertEqual(states["a"], ("DEAD", "exit 1"))
        for node in "bcde":
            self.assertEqual(states[node], ("CANCELLED", "cancelled: a DEAD"), node)
        self.assertEqual(self.h.run_state("r"), "FAILED")
        self.assertEqual(self.h.run("r")["counts"],
                         {"COMPLETED": 3, "DEAD": 1, "CANCELLED": 4})

    def test_a_failure_at_the_top_of_diamonds_cancels_every_level(self):
        # top -> (l1, r1) -> mid -> (l2, r2) -> bottom -> last: five levels below top.
        self.h.dag("r", [
            job("top"), job("l1", "top"), job("r1", "top"), job("mid", "l1", "r1"),
            job("l2", "mid"), job("r2", "mid"), job("bottom", "l2", "r2"),
            job("last", "bottom"), job("other")])
        self.h.finish("r/top", reason="killed by signal 9", exit_code=None)
        states = self.h.states("r")
        self.assertEqual(states["top"], ("FAILED", "killed by signal 9"))
        for node in ["l1", "r1", "mid", "l2", "r2", "bottom", "last"]:
            self.assertEqual(states[node], ("CANCELLED", "cancelled: top FAILED"), node)
            # Ended once, though two of its parents ended.
            self.assertEqual(self.h.ended("r/" + node), [CANCELLED], node)
        self.assertEqual(states["other"], ("RUNNING", None))
        self.assertEqual(self.h.run_state("r"), "RUNNING")
        self.h.finish("r/other")
        self.assertEqual(self.h.run_state("r"), "FAILED")
        self.assertNothingPending("r")

    def test_a_failed_branch_of_a_diamond_cancels_the_join_and_below_not_the_other_branch(self):
        self.h.dag("r", [job("a"), job("b", "a"), job("c", "a"), job("d", "b", "c"),
                         job("e", "d"), job("f", "e"), job("g", "f")])
        self.h.finish("r/a")
        self.h.finish("r/c")
        self.h.finish("r/b", exit_code=2)
        states = self.h.states("r")
        self.assertEqual(states["c"], ("COMPLETED", None))
        self.assertEqual(states["b"], ("FAILED", "exit 2"))
        for node in "defg":
            self.assertEqual(states[node], ("CANCELLED", "cancelled: b FAILED"), node)
        self.assertEqual(self.h.run_state("r"), "FAILED")

    def test_a_cancelled_job_cancels_its_descendants_naming_it(self):
        self.h.dag("r", [job("a"), job("b", "a"), job("c", "b"), job("d", "c"),
                         job("e", "d")])
        out = self.h.cancel("r/a")
        self.assertEqual(kills(out), [("r/a", "w1", 1)])
        states = self.h.states("r")
        self.assertEqual(states["a"], ("CANCELLED", "cancelled by request"))
        for node in "bcde":
            self.assertEqual(states[node], ("CANCELLED", "cancelled: a CANCELLED"), node)
        self.assertEqual(self.h.run_state("r"), "CANCELLED")


class GateTests(DagCase):
    def test_approval_lets_dependents_run(self):
        self.h.dag("r", [job("build"), gate("ok", "build", message="ship it?"),
                         job("deploy", "ok"), job("check", "deploy")])
        self.assertEqual(self.h.state("r/ok"), PENDING)
        self.h.finish("r/build")
        self.assertEqual(self.h.state("r/ok"), WAITING)
        self.assertEqual(self.h.waiting("r/ok"), "waiting for approval (ship it?); 48h00m left")
        self.assertEqual(self.h.waiting("r/deploy"), "waiting for ok")
        self.h.clock.advance(60)
        out = self.h.decide("r/ok", True, by="alice", comment="go")
        self.assertEqual(dispatched(out), [("r/deploy", "w1", 1)])
        view = self.h.view("r/ok")
        self.assertEqual((view["state"], view["reason"]), ("COMPLETED", None))
        self.assertEqual(view["decision"],
                         {"approved": True, "by": "alice", "comment": "go", "at": 60.0})
        self.assertEqual(dispatched(self.h.finish("r/deploy")), [("r/check", "w1", 1)])
        self.h.finish("r/check")
        self.assertEqual(self.h.run_state("r"), "COMPLETED")

    def test_rejection_cancels_dependents_at_every_depth_naming_the_gate(self):
        self.h.dag("r", [job("build"), gate("ok", "build"), job("a", "ok"),
                         job("b", "a"), job("c", "b"), job("d", "c"), job("e", "b"),
                         job("side", "build")])
        self.h.finish("r/build")
        self.assertEqual(self.h.running(), ["r/side"])
        out = self.h.decide("r/ok", False, by="bob", comment="not today")
        self.assertEqual(dispatched(out), [])
        states = self.h.states("r")
        self.assertEqual(states["ok"], ("CANCELLED", "rejected by bob: not today"))
        for node in "abcde":
            self.assertEqual(states[node],
                             ("CANCELLED", "cancelled: gate ok rejected by bob: not today"),
                             node)
        self.assertEqual(self.h.ran() & {f"r/{n}" for n in "abcde"}, set())
        # A rejection is no failure: once the rest is done, the run is CANCELLED.
        self.assertEqual(self.h.run_state("r"), "RUNNING")
        self.h.finish("r/side")
        self.assertEqual(self.h.run_state("r"), "CANCELLED")
        self.assertNothingPending("r")

    def test_a_gate_built_in_code_without_a_timeout_waits_48_hours(self):
        template = parse_dag({"name": "r", "jobs": [job("build"), gate("ok", "build"),
                                                    job("deploy", "ok")]})
        bare = attrs.evolve(template, specs=tuple(
            attrs.evolve(spec, timeout=None) if spec.kind == "gate" else spec
            for spec in template.specs))
        self.h.apply(ev.DagSubmitted("r", bare))
        out = self.h.finish("r/build")
        self.assertEqual([t.at for t in timers(out)], [GATE_TIMEOUT])
        self.h.clock.advance(GATE_TIMEOUT - 1)
        self.assertEqual(self.h.state("r/ok"), WAITING)

    def test_the_default_timeout_is_48_hours_and_rejects(self):
        self.assertEqual(GATE_TIMEOUT, 48 * 3600)
        self.h.dag("r", [job("build"), gate("ok", "build"), job("deploy", "ok"),
                         job("after", "deploy")])
        self.h.clock.advance(100)
        spec = self.h.job("r/ok").spec
        self.assertEqual((spec.timeout, spec.on_timeout), (GATE_TIMEOUT, "reject"))
        out = self.h.finish("r/build")
        # The clock starts when the gate starts waiting, not when the run was submitted.
        self.assertEqual([t.at for t in timers(out)], [100 + GATE_TIMEOUT])
        self.h.clock.advance(GATE_TIMEOUT - 1)
        self.assertEqual(self.h.state("r/ok"), WAITING)
        self.assertEqual(self.h.waiting("r/ok"), "waiting for approval (approve ok?); 1s left")
        self.h.clock.advance(1)
        states = self.h.states("r")
        self.assertEqual(states["ok"],
                         ("CANCELLED", "rejected by timeout: no decision within 48h00m"))
        self.assertEqual(self.h.view("r/ok")["decision"]["by"], "timeout")
        for node in ["deploy", "after"]:
            self.assertEqual(
                states[node],
                ("CANCELLED", "cancelled: gate ok rejected by timeout: no decision within 48h00m"))
        self.assertEqual(self.h.run_state("r"), "CANCELLED")
        self.assertNotIn("r/deploy", self.h.ran())

    def test_a_timeout_that_approves_lets_dependents_run(self):
        self.h.dag("r", [gate("ok", timeout=60, on_timeout="approve"), job("deploy", "ok")])
        self.assertEqual(self.h.state("r/ok"), WAITING)
        self.h.clock.advance(59)
        self.assertEqual(self.h.state("r/deploy"), PENDING)
        self.h.clock.advance(1)
        self.assertEqual(self.h.state("r/ok"), COMPLETED)
        self.assertEqual(self.h.view("r/ok")["decision"]["approved"], True)
        self.assertEqual(self.h.view("r/ok")["decision"]["by"], "timeout")
        self.assertEqual(self.h.state("r/deploy"), RUNNING)

    def test_a_decision_for_a_gate_not_waiting_is_refused_and_ignored(self):
        self.h.dag("r", [job("build"), gate("ok", "build"), job("deploy", "ok")])
        # Not waiting yet (its parent runs): refused, and applying it changes nothing.
        with self.assertRaisesRegex(SubmitError, "not waiting for approval .it is PENDING"):
            self.h.decide("r/ok", True)
        self.assertEqual(self.h.apply(ev.GateDecided("r/ok", True, "mallory")), [])
        self.assertEqual(self.h.state("r/ok"), PENDING)
        self.assertIsNone(self.h.job("r/ok").decision)
        self.h.finish("r/build")
        self.h.decide("r/ok", False, by="bob")
        # Decided already: a second decision is refused and cannot undo the first.
        with self.assertRaisesRegex(SubmitError, "not waiting for approval .it is CANCELLED"):
            self.h.decide("r/ok", True)
        self.assertEqual(self.h.apply(ev.GateDecided("r/ok", True, "mallory")), [])
        self.assertEqual(self.h.states("r")["ok"], ("CANCELLED", "rejected by bob"))
        self.assertEqual(self.h.view("r/ok")["decision"]["by"], "bob")
        self.assertNotIn("r/deploy", self.h.ran())
        # Nor is its timer, when it fires later.
        self.h.clock.advance(GATE_TIMEOUT)
        self.assertEqual(self.h.view("r/ok")["decision"]["by"], "bob")
        with self.assertRaisesRegex(SubmitError, "is a job, not an approval gate"):
            self.h.decide("r/build", True)
        with self.assertRaisesRegex(SubmitError, "no job r/nope"):
            self.h.decide("r/nope", True)

    def test_the_timer_of_an_approved_gate_changes_nothing(self):
        self.h.dag("r", [gate("ok", timeout=60), job("deploy", "ok")])
        self.h.decide("r/ok", True)
        self.h.finish("r/deploy")
        self.h.clock.advance(60)
        self.assertEqual(self.h.states("r"), {"ok": ("COMPLETED", None),
                                              "deploy": ("COMPLETED", None)})
        self.assertEqual(self.h.run_state("r"), "COMPLETED")


class RetryTests(DagCase):
    def setUp(self) -> None:
        self.h = DagHarness(backoff_base=10.0, backoff_cap=1000.0)
        self.h.join("w1", slots=self.slots)

    def test_a_job_that_fails_then_succeeds_releases_its_dependents(self):
        self.h.dag("r", [job("a", retries=2), job("b", "a"), job("c", "b")])
        out = self.h.finish("r/a", exit_code=1)
        # Backoff on the clock: a delay in [base/2, base) after the first failure.
        (timer,) = timers(out)
        self.assertTrue(5.0 <= timer.at < 10.0, timer.at)
        view = self.h.view("r/a")
        self.assertEqual((view["state"], view["reason"], view["failures"]),
                         ("PENDING", "exit 1", 1))
        self.assertTrue(view["waiting"].startswith("retry 1 of 2 in "), view["waiting"])
        self.assertEqual(self.h.states("r")["b"], ("PENDING", None))
        self.h.clock.advance(timer.at - 0.01)
        self.assertEqual(self.h.state("r/a"), PENDING)
        self.h.clock.advance(0.01)
        self.assertEqual((self.h.state("r/a"), self.h.job("r/a").attempt), (RUNNING, 2))
        self.assertEqual(dispatched(self.h.finish("r/a")), [("r/b", "w1", 1)])
        self.assertEqual(self.h.states("r")["a"], ("COMPLETED", None))
        self.h.finish("r/b")
        self.h.finish("r/c")
        self.assertEqual(self.h.run_state("r"), "COMPLETED")

    def test_a_job_out_of_retries_goes_dead_and_cascades(self):
        self.h.dag("r", [job("a", retries=2), job("b", "a"), job("c", "b"), job("d", "c"),
                         job("e", "d")])
        waits = []
        for attempt in (1, 2):
            self.assertEqual(self.h.job("r/a").attempt, attempt)
            start = self.h.clock.seconds()
            (timer,) = timers(self.h.finish("r/a", exit_code=attempt))
            waits.append(timer.at - start)
            self.assertEqual(self.h.states("r")["e"], ("PENDING", None))
            self.h.clock.advance(timer.at - start)
        # The second wait is drawn from [base, 2 base): the backoff doubles.
        self.assertTrue(5.0 <= waits[0] < 10.0 <= waits[1] < 20.0, waits)
        self.assertEqual(self.h.job("r/a").attempt, 3)
        self.assertEqual(timers(self.h.finish("r/a", exit_code=7)), [])
        states = self.h.states("r")
        self.assertEqual(states["a"], ("DEAD", "exit 7"))
        for node in "bcde":
            self.assertEqual(states[node], ("CANCELLED", "cancelled: a DEAD"), node)
        self.assertEqual(self.h.run_state("r"), "FAILED")
        self.assertEqual(self.h.ended("r/a"), [DEAD])


class GrowthTests(DagCase):
    def test_added_jobs_wait_for_existing_and_new_parents(self):
        self.h.dag("r", [job("a"), job("b", "a")])
        self.assertEqual(self.h.running(), ["r/a"])
        # a adds: c after a, d after c, e after b and d, and x with no parent.
        out = self.h.add("r", [job("c", "a"), job("d", "c"), job("e", "b", "d"), job("x")],
                         by="r/a")
        self.assertEqual(dispatched(out), [("r/x", "w1", 1)])
        run = self.h.run("r")
        self.assertEqual(run["total"], 6)
        self.assertEqual([j["node"] for j in run["jobs"]], ["a", "b", "c", "d", "e", "x"])
        self.assertEqual(self.h.waiting("r/c"), "waiting for a")
        self.assertEqual(self.h.waiting("r/e"), "waiting for b, d")
        self.h.finish("r/x")
        self.assertEqual(sorted(dispatched(self.h.finish("r/a"))),
                         [("r/b", "w1", 1), ("r/c", "w1", 1)])
        self.assertEqual(dispatched(self.h.finish("r/b")), [])
        self.assertEqual(self.h.waiting("r/e"), "waiting for d")
        self.assertEqual(dispatched(self.h.finish("r/c")), [("r/d", "w1", 1)])
        self.assertEqual(self.h.state("r/e"), PENDING)
        self.assertEqual(dispatched(self.h.finish("r/d")), [("r/e", "w1", 1)])
        self.assertEqual(self.h.run_state("r"), "RUNNING")
        self.h.finish("r/e")
        self.assertEqual(self.h.run_state("r"), "COMPLETED")
        self.assertEqual(self.h.run("r")["counts"], {"COMPLETED": 6})

    def test_an_added_job_after_a_completed_parent_is_ready_at_once(self):
        self.h.dag("r", [job("a"), job("b", "a")])
        self.h.finish("r/a")
        out = self.h.add("r", [job("c", "a")], by="r/b")
        self.assertEqual(dispatched(out), [("r/c", "w1", 1)])

    def test_the_run_does_not_end_before_the_added_jobs(self):
        self.h.dag("r", [job("a"), job("b")])
        self.h.add("r", [job("c", "a"), job("d", "c")], by="r/a")
        self.h.finish("r/a")
        self.h.finish("r/b")
        self.assertEqual(self.h.run_state("r"), "RUNNING")
        self.h.finish("r/c")
        self.assertEqual(self.h.run_state("r"), "RUNNING")
        self.assertEqual(self.h.states("r")["d"], ("RUNNING", None))
        self.h.finish("r/d")
        self.assertEqual(self.h.run_state("r"), "COMPLETED")

    def test_a_failure_cascades_into_added_jobs(self):
        self.h.dag("r", [job("a"), job("b")])
        self.h.add("r", [job("c", "a"), job("d", "c"), job("e", "d"), job("f", "e")])
        self.h.finish("r/a", exit_code=1)
        states = self.h.states("r")
        for node in "cdef":
            self.assertEqual(states[node], ("CANCELLED", "cancelled: a FAILED"), node)
        self.h.finish("r/b")
        self.assertEqual(self.h.run_state("r"), "FAILED")

    def assertRefused(self, run_id: str, jobs: list, words: str) -> None:
        before = list(self.h.s.runs[run_id].jobs)
        with self.assertRaisesRegex(SubmitError, words):
            self.h.add(run_id, jobs)
        self.assertEqual(self.h.s.runs[run_id].jobs, before)

    def test_growth_that_would_form_a_cycle_or_break_the_graph_is_refused(self):
        self.h.dag("r", [job("a"), job("b", "a")])
        self.assertRefused("r", [job("x", "y"), job("y", "z"), job("z", "x", "a")],
                           r"^cycle: x -> z -> y -> x$")  # each job before its dependent
        self.assertRefused("r", [job("x", "x")], "job x depends on itself")
        self.assertRefused("r", [job("x", "nope")], "job x depends on unknown job 'nope'")
        self.assertRefused("r", [job("b", "a")], "job id 'b' is used twice")
        self.assertRefused("r", [job("x"), job("x")], "job id 'x' is used twice")

    def test_growth_past_the_run_limit_is_refused(self):
        self.h.dag("r", [job("a"), job("b")], max_jobs=4)
        self.h.add("r", [job("c")])
        self.assertRefused("r", [job("d"), job("e")], "run r would have 5 jobs, over its "
                           "limit of 4 .max_jobs.")
        self.h.add("r", [job("d")])
        # The master's own bound holds for a run that says nothing.
        h = DagHarness(max_jobs_per_run=3)
        h.dag("q", [job("a"), job("b")])
        with self.assertRaisesRegex(SubmitError, "over its limit of 3"):
            h.add("q", [job("c"), job("d")])
        self.assertEqual(h.run("q")["total"], 2)

    def test_growth_after_a_failed_parent_or_an_ended_run_is_refused(self):
        self.h.dag("r", [job("a"), job("b")])
        self.h.finish("r/a", exit_code=1)
        self.assertRefused("r", [job("x", "a")], "cannot depend on a: it is already FAILED")
        self.h.finish("r/b")
        self.assertEqual(self.h.run_state("r"), "FAILED")
        self.assertRefused("r", [job("y")], r"run r has ended \(FAILED\); it takes no more")


class RunCancelTests(DagCase):
    slots = 2

    def test_cancelling_a_run_ends_every_job_not_ended_and_kills_running_ones(self):
        self.h.dag("r", [job("done"), job("long"), job("next", "long"), job("queued"),
                         gate("ok", "done"), job("later", "done", delay=600),
                         job("deep", "next")])
        self.h.finish("r/done")
        self.assertEqual(self.h.running(), ["r/long", "r/queued"])
        self.assertEqual(self.h.state("r/ok"), WAITING)
        self.h.clock.advance(5)
        out = self.h.apply(ev.RunCancelRequested("r", "cancelled by alice"))
        self.assertEqual(sorted(kills(out)), [("r/long", "w1", 1), ("r/queued", "w1", 1)])
        self.assertEqual([d.reason for d in out if isinstance(d, ev.Kill)],
                         ["cancelled by alice"] * 2)
        self.assertEqual(dispatched(out), [])
        states = self.h.states("r")
        self.assertEqual(states.pop("done"), ("COMPLETED", None))
        # Every job the cancel ended gives its reason, whatever the order of the run's
        # jobs (those below a running job used to say "cancelled: long CANCELLED").
        self.assertEqual(states, {"long": ("CANCELLED", "cancelled by alice"),
                                  "queued": ("CANCELLED", "cancelled by alice"),
                                  "ok": ("CANCELLED", "cancelled by alice"),
                                  "later": ("CANCELLED", "cancelled by alice"),
                                  "next": ("CANCELLED", "cancelled by alice"),
                                  "deep": ("CANCELLED", "cancelled by alice")})
        run = self.h.run("r")
        self.assertEqual((run["state"], run["finished_at"]), ("CANCELLED", 5.0))
        # The killed jobs' reports change nothing; the delayed job's timer neither.
        self.h.finish("r/long", exit_code=None, reason="killed by signal 15")
        self.h.finish("r/queued", exit_code=-15)
        self.h.clock.advance(GATE_TIMEOUT)
        self.assertEqual(self.h.states("r")["long"], ("CANCELLED", "cancelled by alice"))
        self.assertEqual(self.h.run_state("r"), "CANCELLED")
        self.assertEqual(self.h.ran(), {"r/done", "r/long", "r/queued"})
        self.assertEqual(self.h.s.workers["w1"].running, set())

    def test_a_cancelled_run_keeps_what_ended_and_says_failed_if_a_job_failed(self):
        self.h.dag("r", [job("bad"), job("good"), job("more", "good")])
        self.h.finish("r/bad", exit_code=1)
        self.h.finish("r/good")
        self.h.apply(ev.RunCancelRequested("r"))
        states = self.h.states("r")
        self.assertEqual(states, {"bad": ("FAILED", "exit 1"), "good": ("COMPLETED", None),
                                  "more": ("CANCELLED", "cancelled by request")})
        self.assertEqual(self.h.run_state("r"), "FAILED")

    def test_cancelling_an_unknown_run_is_refused(self):
        with self.assertRaisesRegex(SubmitError, "no run nope"):
            self.h.s.validate(ev.RunCancelRequested("nope"))


class PriorityAcrossRunsTests(SynchronousTestCase):
    def order(self, h: DagHarness) -> list:
        """Let the one-slot worker run everything, finishing each job as it starts."""
        h.join("w1", slots=1)
        order = []
        while True:
            running = h.running()
            if not running:
                return order
            self.assertEqual(len(running), 1)
            order.append(running[0])
            h.finish(running[0])

    def test_higher_priority_first_then_submission_order_across_runs(self):
        h = DagHarness()
        h.dag("low", [job("l1"), job("l2"), job("l3")])
        h.dag("high", [job("h1", priority=5), job("h2", priority=5)])
        h.dag("low2", [job("m1"), job("m2", priority=5)])
        self.assertEqual(self.order(h), ["high/h1", "high/h2", "low2/m2", "low/l1", "low/l2",
                                         "low/l3", "low2/m1"])

    def test_a_higher_priority_job_that_becomes_ready_later_goes_before_waiting_ones(self):
        h = DagHarness()
        h.join("w1", slots=1)
        h.dag("low", [job("l1"), job("l2"), job("l3")])
        h.dag("high", [job("h1", priority=5), job("h2", "h1", priority=5)])
        self.assertEqual(h.running(), ["low/l1"])  # it had the free slot
        order = []
        for _ in range(5):
            (key,) = h.running()
            order.append(key)
            h.finish(key)
        # h2 became ready only when h1 ended, and still went before low/l2 and low/l3.
        self.assertEqual(order, ["low/l1", "high/h1", "high/h2", "low/l2", "low/l3"])
        self.assertEqual(h.run_state("low"), "COMPLETED")
        self.assertEqual(h.run_state("high"), "COMPLETED")

    def test_equal_priorities_go_in_submission_order_even_when_ready_later(self):
        # FIFO is by submission: a job of an earlier run that becomes ready later still goes
        # before the waiting jobs of a later run.
        h = DagHarness()
        h.join("w1", slots=1)
        h.dag("first", [job("a"), job("b", "a")])
        h.dag("second", [job("x"), job("y")])
        order = []
        for _ in range(4):
            (key,) = h.running()
            order.append(key)
            h.finish(key)
        self.assertEqual(order, ["first/a", "first/b", "second/x", "second/y"])

    def test_priority_holds_across_runs_whose_jobs_wait_in_different_queues(self):
        # Jobs with different tags wait in queues of their own; the slot still goes to the
        # highest priority, then to the earliest submitted, whatever queue holds them.
        h = DagHarness()
        h.dag("plain", [job("p1"), job("p2")])
        h.dag("gpu", [job("g1", tags=["gpu"], priority=5), job("g2", tags=["gpu"])])
        h.dag("cuda", [job("c1", tags=["gpu", "cuda"], priority=5)])
        h.join("w1", slots=1, tags=["gpu", "cuda"])
        order = []
        for _ in range(5):
            (key,) = h.running()
            order.append(key)
            h.finish(key)
        self.assertEqual(order, ["gpu/g1", "cuda/c1", "plain/p1", "plain/p2", "gpu/g2"])
