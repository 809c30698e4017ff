"""Reactive autoscaling with real processes: a burst starts workers, idleness retires them."""
from __future__ import annotations

import os
import signal

from tests.acceptance.helpers import ClusterTestCase, Journal, pid_alive, wait_ended

SCALING = ("  max_workers: 4\n  window: 1\n  idle_timeout: 4\n  interval: 0.3\n"
           "  slots: 2\n")


def most_at_once(jobs: list) -> int:
    """The most jobs that were running at one time (from the master's start and end times)."""
    return max(sum(1 for j in jobs if j["started_at"] <= at < j["finished_at"])
               for at in (j["started_at"] for j in jobs))


class AutoscaleTests(ClusterTestCase):
    workers = 1
    slots = 2
    cluster_options = {"autoscaler": SCALING}

    def spawned(self, c) -> list:
        return [w for w in c.workers() if w.get("spawned_by") == "autoscaler"]

    def test_a_burst_starts_workers_up_to_the_cap_and_idleness_retires_them(self):
        journal = Journal(os.path.join(self.base_dir, "journal"))
        with self.cluster.client() as c:
            # Each job's work is a sleep: long enough for the burst to outlast w1 alone.
            jobs = [c.submit(journal.sh("sleep 3")) for _ in range(40)]
            grown = self.wait_for(lambda: len([w for w in self.spawned(c)
                                               if w["state"] == "ALIVE"]) == 3 and
                                  self.spawned(c), timeout=30, what="three started workers")
            self.assertEqual(len(c.workers()), 4)  # never beyond max_workers
            listing = self.titan("workers").stdout.decode()
            self.assertEqual(listing.count(" autoscaler"), 3, listing)
            pids = [w["pid"] for w in grown]
            ended = wait_ended(self, c, jobs, 120)
            self.assertEqual({j["state"] for j in ended}, {"COMPLETED"})
            # More ran at once than w1's two slots allow: the started workers took some.
            self.assertGreater(most_at_once(ended), self.slots)
            used = {j["worker"] for j in ended}
            self.assertGreaterEqual(len(used), 3)
            # Idle for idle_timeout: retired, reaped, gone from the list.
            self.wait_for(lambda: not self.spawned(c), timeout=30,
                          what=lambda: f"the retirements (workers: {c.workers()})")
            for pid in pids:
                self.wait_for(lambda: not pid_alive(pid), timeout=10, what=f"pid {pid} to end")
            names = [w["name"] for w in c.workers() if w["state"] == "ALIVE"]
            self.assertEqual(names, ["w1"])
        # Retiring workers stopped none of the jobs: each started once and ran to its end.
        journal.check_exactly_once(self, ended)
        self.assertEqual({j: [e.attempt for e in journal.starts(j)] for j in jobs},
                         {j: [1] for j in jobs})
        with open(self.cluster.master.log_file) as f:
            log = f.read()
        self.assertIn("autoscaler: started worker auto-1", log)
        self.assertIn("with every capable slot busy", log)
        self.assertIn("autoscaler: retired worker auto-", log)


class NoOrphansTests(ClusterTestCase):
    workers = 1
    slots = 1
    cluster_options = {"autoscaler": SCALING, "fixed_port": True}

    def test_started_workers_die_with_the_master(self):
        journal = Journal(os.path.join(self.base_dir, "journal"))
        with self.cluster.client() as c:
            jobs = [c.submit(journal.sh("sleep 30")) for _ in range(6)]
            grown = self.wait_for(lambda: len(self.spawned(c)) >= 2 and self.spawned(c),
                                  timeout=30, what="started workers")
            pids = [w["pid"] for w in grown]
            # w1 and the started workers have jobs running (journaled) before the kill.
            self.wait_for(lambda: sum(1 for j in jobs if journal.starts(j)) >= 3,
                          timeout=30, what="three jobs started")
        self.cluster.kill_master(signal.SIGKILL)
        for pid in pids:
            self.wait_for(lambda: not pid_alive(pid), timeout=15,
                          what=f"started worker {pid} to die with the master")
        # None of the jobs started twice (nor ended: each runs for 30 s).
        for job in jobs:
            self.assertIn([e.attempt for e in journal.entries(job)], ([], [1]))

    def spawned(self, c) -> list:
        return [w for w in c.workers() if w.get("spawned_by") == "autoscaler"]
