"""`titan doctor` against a live cluster (its checks of the cluster all ok) and against a
master that is not running (it fails, saying how to start one)."""
from __future__ import annotations

import json
import os
import subprocess

from twisted.trial.unittest import SynchronousTestCase

from titan.testing.cluster import BIN, free_port

from tests.acceptance.helpers import ClusterTestCase


class LiveClusterTests(ClusterTestCase):
    workers = 1

    def test_every_cluster_check_is_ok(self):
        # The config as this cluster's processes have it (their data dirs are options).
        path = os.path.join(self.cluster.base_dir, "doctor.yaml")
        with open(path, "w") as f:
            f.write(f"master:\n  data_dir: {self.cluster.base_dir}/master\n  listen: tcp:0\n"
                    f"worker:\n  data_dir: {self.cluster.base_dir}/w1\n"
                    "web:\n  listen: tcp:0\n")
        # A worker's clock is only known from its heartbeats.
        with self.cluster.client() as c:
            self.wait_for(lambda: c.workers()[0]["clock_offset"] is not None,
                          what="a heartbeat with the worker's time")
        result = self.titan("doctor", "--config", path, "--json")
        said = json.loads(result.stdout)
        by_name = {c["name"]: c for c in said["checks"]}
        cluster = {c["name"]: c["status"] for c in said["checks"] if c["scope"] == "cluster"}
        self.assertEqual(cluster, {"master": "ok", "version": "ok", "store": "ok", "web": "ok",
                                   "workers": "ok", "clock w1": "ok"}, said)
        self.assertEqual((result.returncode, said["ok"]), (0, True), said)
        self.assertEqual(by_name["master data dir"]["status"], "ok")
        self.assertIn("1 connected", by_name["workers"]["detail"])
        # The same, for a person.
        text = self.titan("doctor", "--config", path).stdout.decode()
        self.assertIn("the cluster\n", text)
        self.assertRegex(text, r"\n  ok    clock w1 +\d+\.\d{3}s (ahead of|behind) the master's")


class StoppedMasterTests(SynchronousTestCase):
    def test_it_fails_and_says_how_to_start_the_master(self):
        port = free_port()  # nothing listens there
        env = dict(os.environ, TITAN_HOST="127.0.0.1", TITAN_PORT=str(port),
                   TITAN_TOKEN="some-token")
        result = subprocess.run([os.path.join(BIN, "titan"), "doctor"], env=env,
                                capture_output=True, timeout=60)
        self.assertEqual(result.returncode, 1, result.stdout)
        text = result.stdout.decode()
        self.assertIn("  fail  master ", text)
        self.assertIn(f"cannot reach the master at 127.0.0.1:{port}: connection refused",
                      text)
        self.assertIn("→ start it: `twistd -n titan-master --config FILE`", text)
        self.assertIn("`titan up`", text)
