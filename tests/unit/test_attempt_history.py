"""A job's ended attempts and its display phase, on the pure core driven by `task.Clock`.

What the dashboard's job panel lists (attempt, worker, times, exit code, how it ended, why)
and what it colours a node by (`phase`): kept by the core where attempts end, bounded,
rebuilt the same by a snapshot and by a replay of the log.
"""
from __future__ import annotations

import json

from twisted.trial.unittest import SynchronousTestCase

from tests.unit.test_scheduler import Harness
from titan.core import events as ev
from titan.core.dag import parse_dag
from titan.core.model import KEEP_ATTEMPTS, JobState
from titan.core.scheduler import Scheduler, job_view, restore, run_job_view, run_view, \
    snapshot


def view(h: Harness, key: str) -> dict:
    return job_view(h.s, h.job(key), h.clock.seconds())


def ended(h: Harness, key: str) -> list:
    """(attempt, worker, exit_code, state, reason) of each ended attempt the view lists."""
    return [(a["attempt"], a["worker"], a["exit_code"], a["state"], a["reason"])
            for a in view(h, key)["attempts"]]


def retry_now(h: Harness, key: str) -> None:
    """Let the backoff of `key`'s retry pass (the clock fires its timer)."""
    h.clock.advance(h.job(key).ready_at - h.clock.seconds() + 1e-6)  # past float rounding


class AttemptHistoryTests(SynchronousTestCase):
    def test_a_job_retried_twice_then_completing_shows_three_attempts(self):
        h = Harness()
        h.join("w1")
        h.clock.advance(1)
        h.submit("etl", retries=2)
        h.clock.advance(2)
        h.finish("etl", exit_code=3)
        self.assertEqual(view(h, "etl")["exit_code"], 3)
        retry_now(h, "etl")
        started = h.clock.seconds()
        self.assertEqual(h.state("etl"), JobState.RUNNING)
        running = view(h, "etl")
        # The running attempt is not listed, and the last one's exit code is not its own.
        self.assertEqual((running["attempt"], running["exit_code"]), (2, None))
        self.assertEqual([a["attempt"] for a in running["attempts"]], [1])
        h.clock.advance(5)
        h.finish("etl", exit_code=None, reason="timeout after 5s")
        retry_now(h, "etl")
        h.clock.advance(1)
        h.finish("etl", exit_code=0)

        got = view(h, "etl")
        self.assertEqual(got["state"], "COMPLETED")
        self.assertEqual(ended(h, "etl"), [
            (1, "name-w1", 3, "FAILED", "exit 3"),
            (2, "name-w1", None, "TIMED_OUT", "timeout after 5s"),
            (3, "name-w1", 0, "COMPLETED", None)])
        first, second, _ = got["attempts"]
        self.assertEqual((first["started_at"], first["finished_at"]), (1.0, 3.0))
        self.assertEqual((second["started_at"], second["finished_at"]), (started, started + 5))
        self.assertEqual(got["attempts_dropped"], 0)
        json.dumps(got)  # what the web face sends as it is

    def test_a_job_that_runs_once_keeps_nothing_more_than_its_own_fields(self):
        h = Harness()
        h.join("w1")
        h.submit("a")
        self.assertEqual(view(h, "a")["attempts"], [])
        h.finish("a")
        self.assertEqual(h.job("a").attempts, ())
        self.assertEqual(ended(h, "a"), [(1, "name-w1", 0, "COMPLETED", None)])

    def test_the_last_failure_of_a_dead_job_is_its_last_attempt(self):
        h = Harness()
        h.join("w1")
        h.submit("a", retries=1)
        h.finish("a", exit_code=1)
        retry_now(h, "a")
        h.finish("a", exit_code=2, reason="killed by signal KILL")
        self.assertEqual(h.state("a"), JobState.DEAD)
        self.assertEqual(ended(h, "a"), [(1, "name-w1", 1, "FAILED", "exit 1"),
                                         (2, "name-w1", 2, "FAILED", "killed by signal KILL")])

    def test_a_lost_worker_s_attempt_is_listed_as_lost(self):
        h = Harness()
        h.join("w1")
        h.submit("a")
        h.clock.advance(4)
        h.apply(ev.WorkerLost("w1", "no heartbeat for 11.0s"))
        self.assertEqual(ended(h, "a"), [
            (1, "name-w1", None, "LOST", "worker name-w1 lost: no heartbeat for 11.0s")])
        self.assertEqual(view(h, "a")["attempts"][0]["finished_at"], 4.0)
        h.join("w2")
        h.finish("a")
        self.assertEqual([(a, w, s) for a, w, _, s, _ in ended(h, "a")],
                         [(1, "name-w1", "LOST"), (2, "name-w2", "COMPLETED")])

    def test_a_lost_attempt_that_comes_back_finished_is_not_lost(self):
        h = Harness()
        h.join("w1")
        h.submit("a")
        h.apply(ev.WorkerLost("w1", "gone"))
        self.assertEqual([s for _, _, _, s, _ in ended(h, "a")], ["LOST"])
        # No other worker took it: w1 comes back and says attempt 1 ended well.
        h.join("w1", finished=[ev.JobReport("a", 1, 0)])
        self.assertEqual(ended(h, "a"), [(1, "name-w1", 0, "COMPLETED", None)])

    def test_an_attempt_the_log_lost_is_its_reporting_worker_s(self):
        h = Harness(backoff_base=10.0, backoff_cap=10.0)
        h.join("w1")
        h.join("w2")
        h.submit("a", retries=1)
        h.finish("a", exit_code=1)  # on w1; the retry waits
        # A master whose log lost the retry's dispatch sent attempt 2 to w2, which ran it.
        h.join("w2", finished=[ev.JobReport("a", 2, 0)])
        self.assertEqual(ended(h, "a"), [(1, "name-w1", 1, "FAILED", "exit 1"),
                                         (2, "name-w2", 0, "COMPLETED", None)])
        self.assertIsNone(view(h, "a")["attempts"][1]["started_at"])  # not known

    def test_a_lost_attempt_still_running_is_the_running_one_again(self):
        h = Harness()
        h.join("w1")
        h.clock.advance(1)
        h.submit("a")
        h.clock.advance(4)
        h.apply(ev.WorkerLost("w1", "gone"))
        self.assertIsNone(h.job("a").started_at)
        h.join("w1", running=[ev.JobReport("a", 1)])
        self.assertEqual(h.state("a"), JobState.RUNNING)
        got = view(h, "a")
        self.assertEqual((got["attempts"], got["started_at"]), ([], 1.0))  # it never stopped

    def test_a_job_cancelled_while_running_ends_its_attempt_cancelled(self):
        h = Harness()
        h.join("w1")
        h.submit("a", retries=1)
        h.finish("a", exit_code=7)
        retry_now(h, "a")
        h.cancel("a")
        self.assertEqual(ended(h, "a"), [(1, "name-w1", 7, "FAILED", "exit 7"),
                                         (2, "name-w1", None, "CANCELLED",
                                          "cancelled by request")])

    def test_a_job_cancelled_while_waiting_for_its_retry_adds_no_attempt(self):
        h = Harness()
        h.join("w1")
        h.submit("a", retries=1)
        h.finish("a", exit_code=7)
        h.cancel("a")
        self.assertEqual(ended(h, "a"), [(1, "name-w1", 7, "FAILED", "exit 7")])

    def test_the_history_is_bounded_and_says_how_many_it_dropped(self):
        h = Harness(backoff_base=0.01, backoff_cap=0.01)
        h.join("w1")
        h.submit("flaky", retries=1000)
        for n in range(1, 1001):
            h.finish("flaky", exit_code=1 + n % 255)
            retry_now(h, "flaky")
        job = h.job("flaky")
        self.assertEqual(job.attempt, 1001)
        self.assertEqual(len(job.attempts), KEEP_ATTEMPTS)
        got = view(h, "flaky")
        self.assertEqual([a["attempt"] for a in got["attempts"]],
                         list(range(1001 - KEEP_ATTEMPTS, 1001)))
        self.assertEqual(got["attempts_dropped"], 1000 - KEEP_ATTEMPTS)
        self.assertEqual(got["attempts"][-1]["exit_code"], 1 + 1000 % 255)


class SurvivesRestartTests(SynchronousTestCase):
    def scenario(self, h: Harness) -> None:
        h.join("w1", slots=2)
        h.submit("a", retries=3)
        h.submit("b")
        h.finish("a", exit_code=1)
        h.clock.advance(0.2)
        h.apply(ev.WorkerLost("w1", "gone"))  # b's attempt is lost; a waits to retry
        h.join("w2", slots=2)
        retry_now(h, "a")
        h.finish("a", exit_code=None, reason="timeout after 1s")
        retry_now(h, "a")
        h.finish("b")

    def test_a_snapshot_and_a_replay_give_back_the_same_attempts(self):
        h = Harness()
        events = h.recording()
        self.scenario(h)
        now = h.clock.seconds()
        want = {k: job_view(h.s, h.job(k), now) for k in ("a", "b")}
        self.assertEqual([a["state"] for a in want["a"]["attempts"]], ["FAILED", "TIMED_OUT"])
        self.assertEqual([a["state"] for a in want["b"]["attempts"]], ["LOST", "COMPLETED"])

        replayed = Scheduler(heartbeat_timeout=10.0)
        replayed.replay((at, event) for event, at in events)
        self.assertEqual(snapshot(replayed), snapshot(h.s))
        # Through JSON, as compaction writes it.
        restored = Scheduler(heartbeat_timeout=10.0)
        restore(restored, json.loads(json.dumps(snapshot(h.s))))
        for s in (replayed, restored):
            self.assertEqual({k: job_view(s, s.jobs[k], now) for k in ("a", "b")}, want)
        self.assertEqual(snapshot(restored), snapshot(h.s))

    def test_a_snapshot_from_before_attempts_were_kept_still_loads(self):
        h = Harness()
        self.scenario(h)
        data = json.loads(json.dumps(snapshot(h.s)))
        del data["attempts"]
        s = Scheduler(heartbeat_timeout=10.0)
        restore(s, data)
        self.assertEqual(s.jobs["a"].attempts, ())
        self.assertEqual(job_view(s, s.jobs["b"], 0.0)["attempts"][-1]["state"], "COMPLETED")


class PhaseTests(SynchronousTestCase):
    def phases(self, h: Harness, run_id: str = "r") -> dict:
        now = h.clock.seconds()
        run = run_view(h.s, h.s.runs[run_id], now)
        by_run = {j["node"]: j["phase"] for j in run["jobs"]}
        for node, phase in by_run.items():
            self.assertEqual(job_view(h.s, h.job(f"{run_id}/{node}"), now)["phase"], phase)
        return by_run

    def test_each_situation_has_its_phase(self):
        h = Harness(backoff_base=10.0, backoff_cap=10.0)
        h.apply(ev.DagSubmitted("r", parse_dag({"name": "r", "jobs": [
            {"id": "slow", "command": ["x"], "delay": 30},
            {"id": "flaky", "command": ["x"], "retries": 1},
            {"id": "once", "command": ["x"]},
            {"id": "after", "command": ["x"], "depends_on": ["once"]},
            {"id": "gate", "kind": "gate", "depends_on": ["once"], "timeout": 60},
            {"id": "hold", "command": ["x"]},
            {"id": "doomed", "command": ["x"], "retries": 1},
        ]})))
        self.assertEqual(self.phases(h), {
            "slow": "DELAYED", "flaky": "PENDING", "once": "PENDING", "after": "PENDING",
            "gate": "PENDING", "hold": "PENDING", "doomed": "PENDING"})
        h.join("w1", slots=3)  # takes flaky, once, hold
        h.finish("r/flaky", exit_code=1)  # frees a slot: doomed goes
        h.finish("r/once")  # frees a slot: after goes, the gate waits for a person
        got = self.phases(h)
        self.assertEqual(got, {
            "slow": "DELAYED", "flaky": "RETRYING", "once": "COMPLETED", "after": "RUNNING",
            "gate": "WAITING_APPROVAL", "hold": "RUNNING", "doomed": "RUNNING"})
        h.finish("r/doomed", exit_code=1)
        retry_now(h, "r/doomed")
        self.assertEqual(self.phases(h)["doomed"], "RUNNING")
        h.finish("r/doomed", exit_code=1)
        h.finish("r/after", exit_code=2)
        h.cancel("r/hold")
        self.assertEqual(self.phases(h), {
            "slow": "DELAYED", "flaky": "RETRYING", "once": "COMPLETED", "after": "FAILED",
            "gate": "WAITING_APPROVAL", "hold": "CANCELLED", "doomed": "DEAD"})
        # Due: the delayed job and the retry wait for a slot, as plain PENDING jobs do.
        h.apply(ev.WorkerLost("w1", "gone"))
        h.clock.advance(30)
        self.assertEqual((self.phases(h)["slow"], self.phases(h)["flaky"]),
                         ("PENDING", "PENDING"))

    def test_a_run_s_job_says_its_failures_and_when_it_is_due(self):
        h = Harness(backoff_base=10.0, backoff_cap=10.0)
        h.apply(ev.DagSubmitted("r", parse_dag({"name": "r", "jobs": [
            {"id": "flaky", "command": ["x"], "retries": 2}]})))
        h.join("w1")
        h.finish("r/flaky", exit_code=1)
        job = h.job("r/flaky")
        got = run_job_view(h.s, job, h.clock.seconds())
        self.assertEqual((got["phase"], got["failures"], got["ready_at"]),
                         ("RETRYING", 1, job.ready_at))
        self.assertGreater(got["ready_at"], h.clock.seconds())
