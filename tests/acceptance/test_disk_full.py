"""A master whose data dir fills up (issue 14): nothing acknowledged is lost, clients are told
"storage unavailable: <reason>", reads go on, and the master recovers by itself.

The data dir is a small tmpfs this test mounts (it needs root); nothing touches the
machine's own disks.  Where mounting is impossible the tests are skipped, saying why; the
same rule is then covered in-process by tests/unit/test_storage_outage.py.
"""
from __future__ import annotations

import os
import shutil
import signal
import subprocess
import tempfile
import threading
import time

from twisted.trial.unittest import SkipTest, SynchronousTestCase

from titan.errors import RemoteError
from titan.testing.cluster import Cluster
from titan.testing.disk import fill
from tests.acceptance.helpers import Journal, wait_ended, wait_for


def mount_tmpfs(path: str, size_mb: int) -> None:
    """A tmpfs of `size_mb` MB at `path`, or SkipTest saying why there cannot be one."""
    if os.geteuid() != 0:
        raise SkipTest("mounting a small tmpfs for the master's data dir needs root; "
                       "tests/unit/test_storage_outage.py covers the same in-process")
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size_mb}m,mode=0700",
                           "tmpfs", path], capture_output=True, text=True)
    if done.returncode != 0:
        raise SkipTest(f"cannot mount a tmpfs here ({done.stderr.strip()}); "
                       "tests/unit/test_storage_outage.py covers the same in-process")


class DiskFullTests(SynchronousTestCase):
    def cluster(self, backend: str, fsync: str) -> Cluster:
        base = tempfile.mkdtemp(prefix="titan-diskfull-")
        self.addCleanup(shutil.rmtree, base, True)  # last: after the unmount
        data_dir = os.path.join(base, "master")
        os.makedirs(data_dir)
        mount_tmpfs(data_dir, 16)
        self.addCleanup(subprocess.run, ["umount", "-l", data_dir], check=False)
        # Outside the small tmpfs: what ran is journaled on the machine's own disk.
        self.journal = Journal(os.path.join(base, "journal"))
        c = Cluster(base, workers=1, fixed_port=True,
                    config_extra=f"persistence:\n  backend: {backend}\n  fsync: {fsync}\n")
        self.addCleanup(c.stop)
        c.start()
        self.data_dir = data_dir
        return c

    def held_submit(self, c: Cluster) -> dict:
        """A submission in the background (its answer may be held): {'job_id' | 'error'}."""
        outcome: dict = {}

        def submit():
            try:
                with c.client(timeout=60) as t:
                    outcome["job_id"] = t.submit(self.journal.sh("true"))
            except Exception as e:  # reported by the test
                outcome["error"] = e

        thread = threading.Thread(target=submit, daemon=True)
        thread.start()
        self.addCleanup(thread.join, 60)
        return outcome

    def until_held(self, c: Cluster, acked: list) -> dict:
        """Submit, one at a time, until a submission gets no answer: its record is the first
        that did not fit (the ones before may still fit in the log's last page, and are
        answered: added to `acked`).  That one's outcome, filled in once answered."""
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            outcome = self.held_submit(c)
            # "No answer" means none within 2 s: a span this test chooses, not a wait for
            # something known to come.
            end = time.monotonic() + 2.0
            while not outcome and time.monotonic() < end:
                time.sleep(0.05)
            if not outcome:
                return outcome
            self.assertIn("job_id", outcome, outcome)
            acked.append(outcome["job_id"])
        self.fail("every submission was answered on a full disk")

    def refused(self, c: Cluster) -> subprocess.CompletedProcess:
        """`titan submit` while the master cannot store records: refused, saying why."""
        done = c.cli("submit", "--", "true", timeout=30)
        self.assertNotEqual(done.returncode, 0, done.stdout)
        return done

    def master_log(self, c: Cluster) -> str:
        with open(os.path.join(c.base_dir, "master.log"), errors="replace") as f:
            return f.read()

    def test_a_full_disk_refuses_changes_answers_reads_and_recovers_by_itself(self):
        c = self.cluster("aof", "everysec")
        with c.client() as t:
            before = t.submit(self.journal.sh("true"))
            self.assertEqual(wait_ended(self, t, before, 30)[0]["state"], "COMPLETED")
        filler = fill(self.data_dir)
        acked = [before]
        held = self.until_held(c, acked)  # its record failed: its answer waits for the disk
        done = self.refused(c)
        self.assertIn("titan: storage unavailable: cannot write ", done.stderr.decode())
        self.assertIn("events.0.aof: No space left on device", done.stderr.decode())
        self.assertEqual(held, {})  # not acknowledged
        # Reads are answered meanwhile.
        status = c.cli("status", before)
        self.assertEqual(status.returncode, 0, status.stderr)
        self.assertIn("COMPLETED", status.stdout.decode())
        cluster_status = c.cli("status")  # the cluster's status says what is wrong
        self.assertTrue(cluster_status.stdout.startswith(b"STORAGE UNAVAILABLE\n"),
                        cluster_status.stdout)
        self.assertIn("titan: WARNING: storage unavailable: cannot write ",
                      cluster_status.stderr.decode())
        with c.client() as t:
            with self.assertRaises(RemoteError) as caught:
                t.submit(["true"])
            self.assertEqual(caught.exception.code, "storage_unavailable")
        os.unlink(filler)
        # The master goes on by itself: the held submission is answered, new ones taken.
        wait_for(self, lambda: held, 30.0, "the held submission's answer")
        self.assertIn("job_id", held, held)
        self.assertTrue(c.cli("status").stdout.startswith(b"UP\n"))
        with c.client() as t:
            self.assertEqual(wait_ended(self, t, held["job_id"], 30)[0]["state"], "COMPLETED")
            after = t.submit(self.journal.sh("true"))
            self.assertEqual(wait_ended(self, t, after, 30)[0]["state"], "COMPLETED")
        # One line when it began, one when it ended; no traceback.
        log = self.master_log(c)
        self.assertEqual(log.count("storage unavailable: cannot write"), 1, log)
        self.assertEqual(log.count("storage available again"), 1, log)
        self.assertNotIn("Traceback", log)
        # What was answered survives a kill -9.
        c.kill_master(signal.SIGKILL)
        c.start_master()
        done = acked + [held["job_id"], after]
        with c.client() as t:
            self.assertEqual({j["state"] for j in wait_ended(self, t, done, 30)}, {"COMPLETED"})
        self.journal.check_after_restart(self, c, done)  # and none of them ran again

    def test_sqlite_killed_while_the_disk_is_full_keeps_what_it_answered(self):
        c = self.cluster("sqlite", "always")
        with c.client() as t:
            answered = [t.submit(self.journal.sh("true")) for _ in range(3)]
            self.assertEqual({j["state"] for j in wait_ended(self, t, answered, 30)},
                             {"COMPLETED"})
        filler = fill(self.data_dir)
        held = self.until_held(c, answered)
        done = self.refused(c)
        self.assertIn("storage unavailable: cannot write ", done.stderr.decode())
        self.assertIn("database or disk is full", done.stderr.decode())
        self.assertNotIn("job_id", held)  # no answer, and no "database or disk is full" either
        c.kill_master(signal.SIGKILL)
        os.unlink(filler)
        c.start_master()
        with c.client() as t:
            self.assertEqual({j["state"] for j in wait_ended(self, t, answered, 30)},
                             {"COMPLETED"})
            # the unanswered one never happened
            self.assertEqual(len(t.jobs(limit=100)), len(answered))
        self.journal.check_after_restart(self, c, answered)  # and none of them ran again
        self.assertNotIn("Traceback", self.master_log(c))
