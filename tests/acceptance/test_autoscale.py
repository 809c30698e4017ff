"""Reactive autoscaling with real processes: a burst starts workers, idleness retires them."""
from __future__ import annotations

import signal
import time

from tests.acceptance.helpers import ClusterTestCase, pid_alive

SCALING = ("  max_workers: 4\n  window: 1\n  idle_timeout: 4\n  interval: 0.3\n"
           "  slots: 2\n")


class AutoscaleTests(ClusterTestCase):
    workers = 1
    slots = 2
    cluster_options = {"autoscaler": SCALING}

    def spawned(self, c) -> list:
        return [w for w in c.workers() if w.get("spawned_by") == "autoscaler"]

    def test_a_burst_starts_workers_up_to_the_cap_and_idleness_retires_them(self):
        with self.cluster.client() as c:
            start = time.monotonic()
            jobs = [c.submit(["sleep", "3"]) for _ in range(40)]
            grown = self.wait_for(lambda: len([w for w in self.spawned(c)
                                               if w["state"] == "ALIVE"]) == 3 and
                                  self.spawned(c), timeout=30, what="three started workers")
            self.assertEqual(len(c.workers()), 4)  # never beyond max_workers
            listing = self.titan("workers").stdout.decode()
            self.assertEqual(listing.count(" autoscaler"), 3, listing)
            pids = [w["pid"] for w in grown]
            for j in jobs:
                self.assertEqual(c.wait(j, timeout=120)["state"], "COMPLETED")
            took = time.monotonic() - start
            self.assertLess(took, 40)  # one 2-slot worker alone needs 60 s
            used = {c.job(j)["worker"] for j in jobs}
            self.assertGreaterEqual(len(used), 3)
            # Idle for idle_timeout: retired, reaped, gone from the list.
            self.wait_for(lambda: not self.spawned(c), timeout=30, what="the retirements")
            for pid in pids:
                self.wait_for(lambda: not pid_alive(pid), timeout=10, what=f"pid {pid} to end")
            names = [w["name"] for w in c.workers() if w["state"] == "ALIVE"]
            self.assertEqual(names, ["w1"])
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
        with self.cluster.client() as c:
            for _ in range(6):
                c.submit(["sleep", "30"])
            grown = self.wait_for(lambda: len(self.spawned(c)) >= 2 and self.spawned(c),
                                  timeout=30, what="started workers")
            pids = [w["pid"] for w in grown]
        self.cluster.kill_master(signal.SIGKILL)
        for pid in pids:
            self.wait_for(lambda: not pid_alive(pid), timeout=15,
                          what=f"started worker {pid} to die with the master")

    def spawned(self, c) -> list:
        return [w for w in c.workers() if w.get("spawned_by") == "autoscaler"]
