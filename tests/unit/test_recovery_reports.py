"""Recovery adopts a worker's account of the next attempt of a job its log has waiting.

A master that dispatched a job and then lost the events the dispatch followed from (issue
14, part 3: a machine crash under `fsync: everysec`, or a DISPATCH that outran its commit)
replays to a state where the job is PENDING, one attempt behind what its worker runs.  The
worker's report of that attempt is adopted, so the job does not run again with the same
TITAN_ATTEMPT.  The master's log is simulated by `Harness.recording()`: the events before
the crash are replayed into a fresh scheduler, the lost ones are not.
"""
from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from titan.core import events as ev
from titan.core.dag import parse_dag
from titan.core.model import JobState
from titan.core.scheduler import pending_timers
from tests.unit.test_scheduler import Harness, dispatched, kills


def recovered(h: Harness, log: list) -> Harness:
    """A fresh scheduler that replayed `log` and restarted, as a master does on start."""
    fresh = Harness()
    fresh.clock.advance(h.clock.seconds())
    fresh.s.replay((now, event) for event, now in log)
    fresh.apply(ev.MasterRestarted())
    for timer in pending_timers(fresh.s):  # as the master arms them after its recovery
        fresh.timers[timer.key] = fresh.clock.callLater(
            max(0.0, timer.at - fresh.clock.seconds()), fresh._fire, timer.key)
    return fresh


class NextAttemptTests(SynchronousTestCase):
    def crash_after_the_dispatch_of_b(self) -> tuple[Harness, Harness]:
        """w1 (1 slot) ran a, then b; the log lost a's end (and so b's dispatch)."""
        h = Harness()
        log = h.recording()
        h.join("w1", slots=1)
        h.submit("a")
        h.submit("b")
        kept = len(log)
        self.assertEqual(dispatched(h.finish("a")), [("b", "w1", 1)])
        return h, recovered(h, log[:kept])

    def test_a_running_next_attempt_is_adopted_not_run_again(self):
        h, r = self.crash_after_the_dispatch_of_b()
        self.assertEqual((r.state("b"), r.job("b").attempt), (JobState.PENDING, 0))
        out = r.join("w1", slots=1, running=[ev.JobReport("b", 1)],
                     finished=[ev.JobReport("a", 1, 0)])
        self.assertEqual(r.state("a"), JobState.COMPLETED)
        self.assertEqual((r.state("b"), r.job("b").attempt, r.job("b").worker_id),
                         (JobState.RUNNING, 1, "w1"))
        self.assertEqual((dispatched(out), kills(out)), ([], []))
        self.assertEqual(r.running_on("w1"), {"b"})
        r.finish("b")
        self.assertEqual(r.state("b"), JobState.COMPLETED)

    def test_a_finished_next_attempt_counts(self):
        h, r = self.crash_after_the_dispatch_of_b()
        out = r.join("w1", slots=1, finished=[ev.JobReport("a", 1, 0), ev.JobReport("b", 1, 0)])
        self.assertEqual((r.state("b"), r.job("b").attempt), (JobState.COMPLETED, 1))
        self.assertEqual((dispatched(out), kills(out)), ([], []))
        self.assertEqual(r.running_on("w1"), set())

    def test_the_next_attempt_of_a_job_waiting_to_retry(self):
        h = Harness(backoff_base=1.0, backoff_cap=1.0)
        log = h.recording()
        h.join("w1", slots=1)
        h.submit("a", retries=2)
        h.finish("a", exit_code=1)  # attempt 1 failed: a waits to retry
        kept = len(log)
        h.clock.advance(1.0)  # the retry's timer fires: attempt 2 starts (lost to the log)
        self.assertEqual((h.state("a"), h.job("a").attempt), (JobState.RUNNING, 2))
        r = recovered(h, log[:kept])
        self.assertEqual((r.state("a"), r.job("a").attempt), (JobState.PENDING, 1))
        out = r.join("w1", slots=1, running=[ev.JobReport("a", 2)])
        self.assertEqual((r.state("a"), r.job("a").attempt), (JobState.RUNNING, 2))
        self.assertEqual((dispatched(out), kills(out)), ([], []))
        r.clock.advance(5.0)  # the retry timer armed by the replay finds it running
        self.assertEqual(dispatched(r.log), [])
        r.finish("a")
        self.assertEqual((r.state("a"), r.job("a").failures), (JobState.COMPLETED, 1))

    def test_a_dag_child_whose_parent_end_was_lost(self):
        h = Harness()
        log = h.recording()
        h.join("w1", slots=1)
        spec = {"name": "d", "jobs": [{"id": "p", "command": ["true"]},
                                      {"id": "c", "command": ["true"], "depends_on": ["p"]}]}
        h.apply(ev.DagSubmitted("d-1", parse_dag(spec)))
        kept = len(log)
        self.assertEqual(dispatched(h.finish("d-1/p")), [("d-1/c", "w1", 1)])
        r = recovered(h, log[:kept])
        out = r.join("w1", slots=1, running=[ev.JobReport("d-1/c", 1)],
                     finished=[ev.JobReport("d-1/p", 1, 0)])
        self.assertEqual((r.state("d-1/p"), r.state("d-1/c")),
                         (JobState.COMPLETED, JobState.RUNNING))
        self.assertEqual((dispatched(out), kills(out)), ([], []))
        r.finish("d-1/c")
        self.assertEqual(r.s.runs["d-1"].state.value, "COMPLETED")

    def test_other_attempts_are_still_stopped(self):
        """Only the next attempt: one further on, or the one that already ran, is stale."""
        h, r = self.crash_after_the_dispatch_of_b()
        out = r.join("w1", slots=1, running=[ev.JobReport("b", 2)],
                     finished=[ev.JobReport("a", 1, 0)])
        self.assertEqual(kills(out), [("b", "w1", 2)])
        self.assertEqual((r.state("b"), r.job("b").attempt), (JobState.PENDING, 0))
        h = Harness(backoff_base=1.0, backoff_cap=1.0)
        h.join("w1", slots=1)
        h.submit("a", retries=2)
        h.finish("a", exit_code=1)  # waits to retry; attempt 1 is over
        h.disconnect("w1")
        out = h.join("w1", slots=1, running=[ev.JobReport("a", 1)])
        self.assertEqual(kills(out), [("a", "w1", 1)])
        self.assertEqual((h.state("a"), h.job("a").attempt), (JobState.PENDING, 1))
