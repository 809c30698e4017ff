"""tests/acceptance/helpers.py: class clusters stop when their class is over in a trial
process, not when the process exits (checked with a fake cluster); waits that time out say
which job is stuck; the journal's exactly-once check fails on what it must."""
from __future__ import annotations

import os
import subprocess

from twisted.trial.reporter import TestResult
from twisted.trial.unittest import SynchronousTestCase

from tests.acceptance import helpers


class FakeCluster:
    def __init__(self, base_dir: str, fail: bool = False, **options) -> None:
        self.fail = fail
        self.up = False

    def start(self) -> "FakeCluster":
        if self.fail:
            raise RuntimeError("the master did not start")
        self.up = True
        live.append(self)
        return self

    def stop(self) -> None:
        self.up = False
        if self in live:
            live.remove(self)


live: list[FakeCluster] = []


def make_classes() -> tuple[type, type, type, type]:
    """Fresh classes for each test (defined here, trial does not collect them)."""
    class TwoTests(helpers.ClusterTestCase):
        def test_one(self):
            pass

        def test_two(self):
            pass

    class OneTest(helpers.ClusterTestCase):
        def test_only(self):
            pass

    class Broken(helpers.ClusterTestCase):
        cluster_options = {"fail": True}

        def test_only(self):
            pass

    class Plain(SynchronousTestCase):
        def test_plain(self):
            pass

    return TwoTests, OneTest, Broken, Plain


class ClassClusterTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.patch(helpers, "Cluster", FakeCluster)
        self.patch(helpers.tempfile, "mkdtemp", lambda prefix: "/nonexistent")
        self.TwoTests, self.OneTest, self.Broken, self.Plain = make_classes()
        del live[:]
        self.addCleanup(helpers.release_class_cluster)

    def run_test(self, cls: type, name: str) -> TestResult:
        result = TestResult()
        cls(name).run(result)
        return result

    def test_a_class_shares_one_cluster_and_stops_it_after_its_last_test(self):
        self.run_test(self.TwoTests, "test_one")
        [first] = live
        self.run_test(self.TwoTests, "test_two")
        self.assertEqual(live, [])  # both ran in this process: the class is over
        self.assertFalse(first.up)

    def test_a_test_of_another_class_stops_it(self):
        self.run_test(self.TwoTests, "test_one")  # test_two runs in another process (-j2)
        [first] = live
        self.run_test(self.OneTest, "test_only")
        self.assertFalse(first.up)
        self.assertEqual(live, [])  # and OneTest's stopped after its only test

    def test_a_test_that_is_no_cluster_test_stops_it_too(self):
        self.run_test(self.TwoTests, "test_one")
        [first] = live
        self.run_test(self.Plain, "test_plain")
        self.assertFalse(first.up)

    def test_a_class_that_comes_back_gets_a_new_cluster(self):
        self.run_test(self.TwoTests, "test_one")
        self.run_test(self.Plain, "test_plain")
        self.run_test(self.TwoTests, "test_two")
        self.assertEqual(len(live), 1)
        self.assertTrue(live[0].up)

    def test_a_cluster_that_fails_to_start_is_not_kept(self):
        result = self.run_test(self.Broken, "test_only")
        self.assertEqual(len(result.errors), 1)
        self.assertIsNone(self.Broken.__dict__.get("cluster"))
        self.assertIsNone(helpers._live)


class FakeClient:
    """What wait_ended and wait_run_ended ask of the SDK's client, for a job that waits."""

    stuck = {"job_id": "run-1/b", "state": "PENDING", "attempt": 0, "worker": None,
             "waiting": "waiting for a", "reason": None}

    def wait_many(self, ids, timeout=None):
        return [dict(self.stuck, job_id=i) for i in ids]

    def wait_run(self, run_id, timeout=None):
        return {"run_id": run_id, "state": "RUNNING", "counts": {"PENDING": 1},
                "jobs": [{"job_id": "run-1/b", "state": "PENDING", "attempt": 0,
                          "worker": None}]}

    def job(self, job_id):
        return dict(self.stuck, job_id=job_id)


class WaitMessageTests(SynchronousTestCase):
    def test_wait_for_says_what_and_the_last_value(self):
        with self.assertRaises(self.failureException) as caught:
            helpers.wait_for(self, lambda: [], 0.05, "the jobs",
                             interval=0.01)
        self.assertIn("timed out after 0.05s waiting for the jobs (last value: [])",
                      str(caught.exception))

    def test_wait_ended_names_each_job_not_ended(self):
        with self.assertRaises(self.failureException) as caught:
            helpers.wait_ended(self, FakeClient(), ["run-1/b"], 1)
        self.assertEqual(str(caught.exception), "1 of 1 jobs not ended after 1s:\n"
                         "  run-1/b: PENDING, attempt 0, worker -, waiting: waiting for a")

    def test_wait_run_ended_names_each_job_not_ended(self):
        with self.assertRaises(self.failureException) as caught:
            helpers.wait_run_ended(self, FakeClient(), "run-1", 1)
        self.assertEqual(str(caught.exception),
                         "run run-1 not ended after 1s ({'PENDING': 1}); 1 jobs not ended:\n"
                         "  run-1/b: PENDING, attempt 0, worker -, waiting: waiting for a")


class JournalTests(SynchronousTestCase):
    """check_exactly_once against journals written as a job's shell would."""

    def journal(self, *lines: str) -> helpers.Journal:
        journal = helpers.Journal(self.mktemp())
        os.makedirs(os.path.join(journal.root, "run-1"))
        with open(os.path.join(journal.root, "run-1", "a"), "w") as f:
            f.write("".join(line + "\n" for line in lines))
        return journal

    def check(self, journal: helpers.Journal, state: str, attempt: int, killed=None) -> None:
        job = {"job_id": "run-1/a", "state": state, "attempt": attempt, "finished_at": 100.0}
        journal.check_exactly_once(self, [job], killed)

    def test_the_shell_notes_start_and_end_and_keeps_the_exit_status(self):
        journal = helpers.Journal(self.mktemp())
        env = dict(os.environ, TITAN_JOB_ID="run-1/a", TITAN_ATTEMPT="2",
                   TITAN_WORKER_ID="w1-abc123")
        self.assertEqual(subprocess.run(journal.sh("exit 3"), env=env).returncode, 3)
        self.assertEqual(subprocess.run(journal.sh(["true"]), env=env).returncode, 0)
        self.assertEqual([(e.what, e.attempt, e.worker) for e in journal.entries("run-1/a")],
                         [("start", 2, "w1"), ("start", 2, "w1"), ("end", 2, "w1")])

    def test_once_passes(self):
        self.check(self.journal("start 1 w1-a 10", "end 1 w1-a 11"), "COMPLETED", 1)
        self.check(self.journal("start 1 w1-a 10", "start 2 w2-b 20", "end 2 w2-b 21"),
                   "COMPLETED", 2)  # attempt 1 died unfinished

    def test_completed_twice_fails(self):
        journal = self.journal("start 1 w1-a 10", "end 1 w1-a 11", "start 2 w2-b 20",
                               "end 2 w2-b 21")
        self.assertRaises(self.failureException, self.check, journal, "COMPLETED", 2)

    def test_an_attempt_started_twice_fails(self):
        journal = self.journal("start 1 w1-a 10", "start 1 w1-a 12", "end 1 w1-a 13")
        self.assertRaises(self.failureException, self.check, journal, "COMPLETED", 1)

    def test_an_end_in_another_attempt_than_the_last_fails(self):
        journal = self.journal("start 1 w1-a 10", "end 1 w1-a 11", "start 2 w2-b 20")
        self.assertRaises(self.failureException, self.check, journal, "COMPLETED", 2)

    def test_a_start_after_it_completed_fails(self):
        journal = self.journal("start 1 w1-a 10", "end 1 w1-a 11", "start 2 w1-a 200")
        self.assertRaises(self.failureException, self.check, journal, "COMPLETED", 1)

    def test_a_job_not_completed_that_ran_to_its_end_fails(self):
        journal = self.journal("start 1 w1-a 10", "end 1 w1-a 11")
        self.assertRaises(self.failureException, self.check, journal, "CANCELLED", 1)

    def test_an_end_lost_with_a_killed_worker_is_allowed_only_before_the_kill(self):
        lines = ("start 1 w2-a 10", "end 1 w2-a 11", "start 2 w1-b 20", "end 2 w1-b 21")
        self.check(self.journal(*lines), "COMPLETED", 2, killed={"w2": 12.0})
        self.assertRaises(self.failureException, self.check, self.journal(*lines),
                          "COMPLETED", 2, {"w2": 10.5})
