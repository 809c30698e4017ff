"""Issue 15, 1: the reference's token-less text frames, against a live master.

Off by default; turned on, loudly (master's stderr and log, `titan workers`), and served only
to processes of the master's own user on this machine: a client run as another user
(`setpriv --reuid=nobody`, which needs root) is refused, naming its user.
"""
from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import sys

from titan.master.peer import describe_uid
from titan.protocols import legacy as L
from titan.sdk.legacy_client import LegacyClient, LegacyError

from tests.acceptance.helpers import ClusterTestCase

# What a client of another user runs: one text frame, the reply's opcode and text printed.
ASK = """\
import sys
from titan.sdk.legacy_client import LegacyClient
print(*LegacyClient("127.0.0.1", int(sys.argv[1])).request(0x08, ""), sep="\\n")
"""


class TextFramesOffTests(ClusterTestCase):
    workers = 0

    def test_refused_by_default_with_the_reason(self):
        c = LegacyClient("127.0.0.1", self.cluster.port)
        for ask in (c.stats_json, lambda: c.submit_dag([L.run_payload("x", "x.sh", b"id")]),
                    lambda: c.kv_set("titan:hitl:status:x", "APPROVED")):
            with self.assertRaises(LegacyError) as caught:
                ask()
            self.assertEqual(caught.exception.text,
                             "ERROR: text frames are turned off on this master "
                             "(master.text_frames: off); Titan's own clients need none, and "
                             "docs/compat.md says how to turn them on for the reference's")
        with self.cluster.client() as client:
            self.assertEqual([j for j in client.jobs() if j.get("node") == "x"], [])
        shown = self.titan("workers")
        self.assertNotIn("text frames", shown.stderr.decode())
        shown = self.titan("status")
        self.assertEqual(shown.stderr.decode(), "")
        self.assertIn("  text frames: off\n", shown.stdout.decode())
        self.assertIn("\n  workers:     0, 0/0 slots busy\n", shown.stdout.decode())
        self.assertRegex(shown.stdout.decode(),
                         r"^UP\n  master:      127\.0\.0\.1:\d+\n"
                         r"  event log:   aof, fsync \w+, [\d.]+ MB in \S+ \(ok\)\n")

    def test_a_decision_shows_who_made_it(self):
        # Issue 15, 2: `by` is the name the decider gives; `via` what the master saw.
        with self.cluster.client() as client:
            run = client.submit_dag({"name": "via", "jobs": [{"id": "g", "kind": "gate"}]})
        gate = f"{run['run_id']}/g"
        self.wait_for(lambda: self.titan("status", gate).stdout.startswith(b"WAITING_APPROVAL"),
                      20, "the gate to wait")
        approved = self.titan("approve", gate, "--by", "carol", "-m", "fine")
        self.assertEqual(approved.stdout.decode(), f"{gate} APPROVED by carol\n")
        shown = self.titan("status", gate).stdout.decode()
        self.assertIn("  decision:  approved by carol: fine\n", shown)
        self.assertIn(f"  via:       cluster token from 127.0.0.1, "
                      f"{describe_uid(os.geteuid())}\n", shown)


class TextFramesOnTests(ClusterTestCase):
    workers = 1
    cluster_options = {"master_extra": "  text_frames: on\n"}

    def test_served_to_the_masters_user(self):
        c = LegacyClient("127.0.0.1", self.cluster.port)
        self.assertEqual(c.submit_dag([L.run_payload("tf-hi", "hi.sh", b"echo hi")]),
                         "DAG_ACCEPTED")
        self.wait_for(lambda: c.get_job_status("DAG-tf-hi") == "COMPLETED", 30,
                      "DAG-tf-hi to complete")
        self.assertEqual(c.get_logs("DAG-tf-hi"), "hi\n")

    def test_turning_them_on_is_loud(self):
        warning = ("text frames are on (master.text_frames: on): processes of "
                   f"{describe_uid(os.geteuid())} on this machine may submit jobs, read logs, "
                   "cancel jobs and use the store without the cluster token "
                   "(docs/security.md)")
        with open(self.cluster.master.log_file + ".err") as f:
            self.assertIn(f"titan-master: WARNING: {warning}\n", f.read())
        with open(self.cluster.master.log_file) as f:
            self.assertIn(f"WARNING: {warning}", f.read())
        shown = self.titan("workers")
        self.assertIn(f"titan: WARNING: {warning}\n", shown.stderr.decode())
        self.assertIn("w1", shown.stdout.decode())
        shown = self.titan("status")  # the cluster's status says it too
        self.assertIn(f"titan: WARNING: {warning}\n", shown.stderr.decode())
        self.assertIn("  text frames: on\n", shown.stdout.decode())

    def test_a_client_of_another_user_is_refused(self):
        if os.geteuid() != 0 or shutil.which("setpriv") is None:
            self.skipTest("running a client as another user needs root and setpriv; the "
                          "unit test FrontendTests.test_on_serves_the_masters_own_user_only "
                          "covers the rule with the uid lookup injected")
        nobody = pwd.getpwnam("nobody")
        out = subprocess.run(
            ["setpriv", f"--reuid={nobody.pw_uid}", f"--regid={nobody.pw_gid}",
             "--clear-groups", sys.executable, "-c", ASK, str(self.cluster.port)],
            capture_output=True, timeout=30, cwd="/")
        self.assertEqual(out.returncode, 0, out.stderr.decode())
        opcode, text = out.stdout.decode().rstrip("\n").split("\n", 1)
        self.assertEqual(int(opcode), 0x51)  # ERROR
        self.assertEqual(text, "ERROR: text frames are served only to processes of the "
                               f"master's user ({describe_uid(os.geteuid())}) on this "
                               f"machine, not to 127.0.0.1, run by "
                               f"{describe_uid(nobody.pw_uid)} (master.text_frames: on)")
