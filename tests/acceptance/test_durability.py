"""A master's log on disk: restarts keep everything, damage is reported and repairable."""
from __future__ import annotations

import os
import signal
import subprocess
import tempfile
import time

from twisted.trial.unittest import SynchronousTestCase

from titan.testing.cluster import BIN, Cluster
from tests.acceptance.helpers import Journal, wait_ended, wait_for


class DurabilityTests(SynchronousTestCase):
    def cluster(self, config_extra: str = "", workers: int = 1,
                master_extra: str = "") -> Cluster:
        c = Cluster(tempfile.mkdtemp(prefix="titan-durable-"), workers=workers,
                    fixed_port=True, config_extra=config_extra, master_extra=master_extra)
        self.addCleanup(c.stop)
        self.journal = Journal(os.path.join(c.base_dir, "journal"))
        return c.start()

    def titan(self, c: Cluster, *args: str) -> subprocess.CompletedProcess:
        return c.cli(*args)

    def finished_jobs(self, c: Cluster, n: int) -> list[str]:
        with c.client() as t:
            jobs = [t.submit(self.journal.sh(f"echo job {i}")) for i in range(n)]
            self.assertEqual([j["state"] for j in wait_ended(self, t, jobs, 30)],
                             ["COMPLETED"] * n)
        return jobs

    def test_restart_keeps_jobs_and_logs(self):
        c = self.cluster()
        jobs = self.finished_jobs(c, 5)
        c.kill_master(signal.SIGKILL)
        c.start_master()
        with c.client() as t:
            for i, j in enumerate(jobs):
                self.assertEqual(t.job(j)["state"], "COMPLETED")
                self.assertEqual(t.logs(j), f"job {i}\n".encode())
            recovery = t.stats()["recovery"]
            self.assertEqual(recovery["jobs"], 5)
            self.assertGreaterEqual(recovery["events"], 10)
        self.journal.check_after_restart(self, c, jobs)

    def test_the_oldest_finished_jobs_are_forgotten_with_their_logs(self):
        c = self.cluster(master_extra="  keep_finished: 5\n  forget_after: 1\n")
        old = self.finished_jobs(c, 6)
        with c.client() as t:
            old_done = max(t.job(j)["finished_at"] for j in old)
        # Past forget_after (1 s): the first batch may go once others finish.
        wait_for(self, lambda: time.time() > old_done + 1.0, 10, "forget_after to pass")
        new = self.finished_jobs(c, 6)
        logs_dir = os.path.join(c.base_dir, "master", "logs")
        # Forgotten a tick (heartbeat_interval) after forget_after has passed.
        wait_for(self, lambda: self.titan(c, "status", old[-1]).returncode != 0, 10,
                 "the oldest jobs to be forgotten", interval=0.2)

        def check() -> None:
            for j in old:
                status = self.titan(c, "status", j)
                self.assertNotEqual(status.returncode, 0)
                self.assertIn(f"no job {j}", status.stderr.decode())
                self.assertFalse(os.path.exists(os.path.join(logs_dir, f"{j}.log")), j)
            with c.client() as t:
                listed = {row["job_id"] for row in t.jobs()}
                kept = [j for j in new if j in listed]
                self.assertGreaterEqual(len(kept), 5)  # the newest 5 (or 6) to finish
                for j in kept:
                    self.assertEqual(t.job(j)["state"], "COMPLETED")
                    self.assertEqual(t.logs(j), f"job {new.index(j)}\n".encode())
            self.assertFalse(listed & set(old))
            self.assertLessEqual(len(listed), 6)
        check()
        c.kill_master(signal.SIGKILL)
        c.start_master()
        check()
        with c.client() as t:
            self.assertLessEqual(t.stats()["recovery"]["jobs"], 6)
            kept = [j for j in new if j in {row["job_id"] for row in t.jobs()}]
        self.journal.check_after_restart(self, c, kept)

    def test_sqlite_backend(self):
        c = self.cluster("persistence:\n  backend: sqlite\n  fsync: always\n")
        jobs = self.finished_jobs(c, 3)
        c.kill_master(signal.SIGKILL)
        c.start_master()
        with c.client() as t:
            self.assertEqual([t.job(j)["state"] for j in jobs], ["COMPLETED"] * 3)
            self.assertEqual(t.stats()["persistence"]["backend"], "sqlite")
        self.journal.check_after_restart(self, c, jobs)
        self.assertTrue(os.path.exists(os.path.join(c.base_dir, "master", "log",
                                                    "events.sqlite")))

    def test_damage_stops_start_up_and_aof_check_repairs_it(self):
        c = self.cluster(workers=0)
        with c.client() as t:
            first = t.submit(["true"])
        c.kill_master(signal.SIGTERM)
        log = os.path.join(c.base_dir, "master", "log", "events.0.aof")
        with open(log, "rb") as f:
            data = bytearray(f.read())
        good = len(data)
        c.start_master()
        with c.client() as t:
            later = [t.submit(["true"]) for _ in range(3)]
        c.kill_master(signal.SIGTERM)
        with open(log, "rb") as f:
            data = bytearray(f.read())
        data[good + 9] ^= 0x40  # a bit flip in the first frame after `first`'s (past its header)
        with open(log, "wb") as f:
            f.write(data)
        with self.assertRaises(RuntimeError) as caught:
            c.start_master()
        self.assertIn(f"{log} is damaged at byte {good}: checksum mismatch",
                      str(caught.exception))
        self.assertIn("titan aof check", str(caught.exception))
        data_dir = os.path.join(c.base_dir, "master")
        check = self.titan(c, "aof", "check", data_dir)
        self.assertEqual(check.returncode, 1)
        self.assertIn(f"checksum mismatch at byte {good}", check.stdout.decode())
        fix = self.titan(c, "aof", "check", "--fix", data_dir)
        self.assertEqual(fix.returncode, 0, fix.stderr)
        self.assertIn("truncated", fix.stdout.decode())
        c.start_master()
        with c.client() as t:
            self.assertEqual(t.job(first)["state"], "PENDING")
            for j in later:
                self.assertEqual(self.titan(c, "status", j).returncode, 1)

    def test_torn_tail_is_cut_with_a_warning(self):
        c = self.cluster(workers=0)
        with c.client() as t:
            job = t.submit(["true"])
        c.kill_master(signal.SIGKILL)
        log = os.path.join(c.base_dir, "master", "log", "events.0.aof")
        with open(log, "ab") as f:
            f.write(b"\x00\x00\x01\x00\xde\xad")  # half a record: a crash mid-write
        c.start_master()
        with c.client() as t:
            self.assertEqual(t.job(job)["state"], "PENDING")
        with open(c.master.log_file) as f:
            self.assertIn("the last 6 bytes are an incomplete record", f.read())

    def test_unknown_backend_is_refused_with_the_known_ones(self):
        base = tempfile.mkdtemp(prefix="titan-durable-")
        path = os.path.join(base, "t.yaml")
        with open(path, "w") as f:
            f.write("persistence:\n  backend: mongo\n")
        result = subprocess.run([os.path.join(BIN, "twistd"), "-n", "--pidfile=",
                                 "titan-master", "--config", path, "--listen", "tcp:0",
                                 "--data-dir", os.path.join(base, "m")],
                                capture_output=True, timeout=60, cwd=base)
        self.assertNotEqual(result.returncode, 0)
        self.assertIn(f"titan: {path}: persistence.backend: unknown persistence backend "
                      "'mongo' (known: aof, sqlite)", result.stderr.decode())
