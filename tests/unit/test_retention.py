"""Retention: a master remembers `keep_finished` finished jobs; older ones are forgotten
through a recorded Forget event, so memory, snapshots and recovery stay bounded."""
from __future__ import annotations

import msgpack
from twisted.trial.unittest import SynchronousTestCase

from titan.core import events as ev
from titan.core.dag import parse_dag
from titan.core.model import JobState
from titan.core.scheduler import Scheduler, restore, snapshot
from tests.unit.test_scheduler import Harness


def forgets(log: list) -> list:
    return [d.event for d in log if isinstance(d, ev.Propose) and isinstance(d.event, ev.Forget)]


def forgotten(log: list) -> list:
    return [key for d in log if isinstance(d, ev.Forgotten) for key in d.job_ids]


def chain(name: str, n: int, **extra) -> ev.RunTemplate:
    return parse_dag({"name": name, **extra, "jobs": [
        {"id": f"s{i}", "command": ["true"], **({"depends_on": [f"s{i - 1}"]} if i else {})}
        for i in range(n)]})


def run_jobs(h: Harness, names) -> None:
    """Each job submitted, run and finished in turn."""
    for name in names:
        h.submit(name)
        h.finish(name)


class RetentionTests(SynchronousTestCase):
    def finish_all(self, h: Harness) -> None:
        while True:
            running = [j for j in h.s.jobs.values() if j.state is JobState.RUNNING]
            if not running:
                return
            for job in running:
                h.finish(job.job_id)

    def test_the_oldest_finished_jobs_are_forgotten_in_batches(self):
        h = Harness(keep_finished=10, forget_grace=0)
        h.join("w1", slots=1)
        run_jobs(h, (f"j{i:02d}" for i in range(30)))
        kept = sorted(h.s.jobs)
        # Forgotten down to 10 whenever more than 12 (10% slack, plus one) had finished.
        self.assertLessEqual(len(kept), 12)
        self.assertGreaterEqual(len(kept), 10)
        self.assertEqual(kept, [f"j{i:02d}" for i in range(30 - len(kept), 30)])
        self.assertEqual(sorted(forgotten(h.log)), [f"j{i:02d}" for i in range(30 - len(kept))])
        self.assertTrue(all(len(f.job_ids) >= 2 for f in forgets(h.log)))  # batches
        with self.assertRaises(ValueError) as caught:
            h.s.resolve("j00")
        self.assertEqual(str(caught.exception), "no job j00")

    def test_waiting_and_running_jobs_are_never_forgotten(self):
        h = Harness(keep_finished=2, forget_grace=0)
        h.join("w1", slots=1)
        h.submit("long")  # runs throughout
        for i in range(5):
            h.submit(f"p{i}")  # wait behind it
        h.join("w2", slots=1)
        for i in range(10):
            h.submit(f"x{i}", tags=["gpu"])  # no GPU worker: pending forever
        for i in range(8):
            h.submit(f"c{i}")
            h.cancel(f"c{i}")
        self.assertEqual(h.state("long"), JobState.RUNNING)
        for job_id in ["long", *(f"p{i}" for i in range(5)), *(f"x{i}" for i in range(10))]:
            self.assertIn(job_id, h.s.jobs)
        self.assertLessEqual(sum(1 for j in h.s.jobs.values() if j.state.terminal), 3)

    def test_a_finished_run_counts_all_its_jobs_and_goes_whole(self):
        h = Harness(keep_finished=5, forget_grace=0)
        h.join("w1", slots=4)
        h.apply(ev.DagSubmitted("old-1", chain("old", 4, agent_run_id="agent-7", stage="PLAN")))
        self.finish_all(h)
        h.apply(ev.DagSubmitted("live-1", chain("live", 3)))
        self.assertEqual(h.s.runs["old-1"].state.value, "COMPLETED")
        self.assertEqual(h.s.agent_runs, {"agent-7": ["old-1"]})
        run_jobs(h, ("j0", "j1", "j2"))  # 4 + 3 finished: over 5 * 1.1 + 1
        self.assertNotIn("old-1", h.s.runs)
        self.assertFalse([k for k in h.s.jobs if k.startswith("old-1/")])
        self.assertEqual(sorted(forgotten(h.log)), [f"old-1/s{i}" for i in range(4)])
        self.assertEqual(h.s.agent_runs, {})
        # Node ids of the forgotten run no longer resolve to it; the live run's still do.
        self.assertEqual(h.s.resolve("s0"), "live-1/s0")
        self.assertIn("live-1", h.s.runs)  # running: never forgotten
        self.assertEqual(h.s.runs["live-1"].state.value, "RUNNING")

    def test_replay_forgets_what_was_recorded_whatever_the_bound_is_now(self):
        h = Harness(keep_finished=4, forget_grace=0)
        recorded = h.recording()
        h.join("w1", slots=2)
        run_jobs(h, (f"j{i}" for i in range(20)))
        self.assertTrue(forgets(h.log))
        for keep in (4, 1000, 1):
            fresh = Scheduler(heartbeat_timeout=10.0, keep_finished=keep, forget_grace=0)
            for event, now in recorded:  # decisions are not carried out on replay
                fresh.apply(event, now)
            self.assertEqual(sorted(fresh.jobs), sorted(h.s.jobs), keep)

    def test_the_retention_queue_survives_a_snapshot(self):
        h = Harness(keep_finished=5, forget_grace=0)
        h.join("w1", slots=1)
        run_jobs(h, (f"j{i}" for i in range(6)))
        data = msgpack.unpackb(msgpack.packb(snapshot(h.s), use_bin_type=True), raw=False,
                               strict_map_key=False)
        again = Scheduler(heartbeat_timeout=10.0, keep_finished=5, forget_grace=0)
        restore(again, data)
        out = []
        for i in range(6, 9):
            out += again.apply(ev.JobSubmitted(h.s.jobs["j0"].spec.__class__(
                job_id=f"j{i}", command=("true",))), 10.0)
            job = again.jobs[f"j{i}"]
            out += again.apply(ev.JobFinished(job.job_id, job.worker_id, job.attempt, 0), 10.0)
        [proposal] = forgets(out)
        self.assertEqual(proposal.job_ids, ("j0", "j1"))  # 7 finished > 5 * 1.1 + 1

    def test_what_just_finished_is_kept_for_the_grace_period(self):
        h = Harness(keep_finished=3, forget_grace=60.0)
        h.start_ticking()
        h.join("w1", slots=4)
        h.apply(ev.DagSubmitted("big-1", chain("big", 10)))
        while h.s.runs["big-1"].state.value == "RUNNING":
            self.finish_all(h)
            h.advance(1, beating=["w1"])
        # Over the bound at once, but its client is still reading its end.
        self.assertIn("big-1", h.s.runs)
        h.submit("j1")
        h.finish("j1")
        h.advance(30, beating=["w1"])
        self.assertIn("big-1", h.s.runs)
        h.advance(40, beating=["w1"])  # a tick after a minute forgets it
        self.assertNotIn("big-1", h.s.runs)
        self.assertIn("j1", h.s.jobs)  # newer, and within the bound
        [proposal] = forgets(h.log)
        self.assertEqual(proposal.run_ids, ("big-1",))

    def test_a_busy_master_forgets_in_batches_not_one_job_per_end(self):
        h = Harness(keep_finished=100, forget_grace=10.0)
        h.join("w1", slots=1)
        for i in range(2000):  # one job ending every 10 ms for 20 s
            run_jobs(h, [f"j{i}"])
            h.clock.advance(0.01)
        proposals = forgets(h.log)
        self.assertLessEqual(len(proposals), 20)  # at most one look per second (grace / 10)
        self.assertGreaterEqual(min(len(p.job_ids) for p in proposals), 10)
        self.assertLessEqual(len(h.s.jobs), 100 + 10 + 1 + 1000 + 100)  # bound, slack, grace


class LogBytesRetentionTests(SynchronousTestCase):
    """keep_log_bytes: past that much job output kept, the oldest finished jobs go (logs and
    all) even when fewer than keep_finished have finished (issue 15)."""

    def test_the_oldest_finished_jobs_go_once_their_logs_pass_the_bound(self):
        h = Harness(keep_finished=1000, forget_grace=0, keep_log_bytes=10_000)
        h.join("w1", slots=1)
        for i in range(8):
            name = f"j{i}"
            h.submit(name)
            h.apply(ev.LogWritten(name, 3_000))  # 24,000 bytes in all, 8 jobs of 1,000
            h.finish(name)
        kept = sorted(h.s.jobs)
        # Down to nine tenths of the bound whenever it is passed: the newest ones stay.
        self.assertEqual(kept, [f"j{i}" for i in range(8 - len(kept), 8)])
        self.assertLessEqual(3_000 * len(kept), 10_000)
        self.assertEqual(sorted(forgotten(h.log)), [f"j{i}" for i in range(8 - len(kept))])
        self.assertEqual(h.s._log_total, 3_000 * len(kept))

    def test_a_running_job_is_not_forgotten_for_its_log(self):
        h = Harness(keep_finished=1000, forget_grace=0, keep_log_bytes=1_000)
        h.join("w1", slots=1)
        h.submit("big")
        h.apply(ev.LogWritten("big", 5_000))
        self.assertIn("big", h.s.jobs)
        self.assertEqual(forgets(h.log), [])
        h.finish("big")
        h.apply(ev.Tick())
        self.assertNotIn("big", h.s.jobs)
        self.assertEqual(forgotten(h.log), ["big"])

    def test_without_a_byte_bound_only_jobs_count(self):
        h = Harness(keep_finished=1000, forget_grace=0)
        h.join("w1", slots=1)
        h.submit("big")
        h.apply(ev.LogWritten("big", 10 ** 12))
        h.finish("big")
        h.apply(ev.Tick())
        self.assertIn("big", h.s.jobs)

    def test_a_run_counts_the_bytes_of_its_jobs(self):
        h = Harness(keep_finished=1000, forget_grace=0, keep_log_bytes=10_000)
        h.join("w1", slots=4)
        h.apply(ev.DagSubmitted("r1", chain("r", 2)))
        h.apply(ev.LogWritten("r1/s0", 6_000))
        h.finish("r1/s0")
        h.apply(ev.LogWritten("r1/s1", 6_000))
        h.finish("r1/s1")
        h.apply(ev.Tick())
        self.assertNotIn("r1", h.s.runs)
        self.assertEqual(sorted(forgotten(h.log)), ["r1/s0", "r1/s1"])
        self.assertEqual(h.s._log_total, 0)
