"""The per-attempt log cap of the master's LogStore (issue 15, part 4)."""
from __future__ import annotations

import os
import stat

from twisted.trial.unittest import SynchronousTestCase

from titan.master.logstore import LogStore


class LogCapTests(SynchronousTestCase):
    def setUp(self):
        self.dir = os.path.abspath(self.mktemp())
        self.logs = LogStore(self.dir, max_bytes=10)

    def read(self, job_id: str) -> bytes:
        with open(os.path.join(self.dir, f"{job_id}.log"), "rb") as f:
            return f.read()

    def test_an_attempt_keeps_the_cap_then_a_line_and_at_its_end_the_tally(self):
        self.assertEqual(self.logs.append("j", b"12345678", 1), 8)
        written = self.logs.append("j", b"abcdef", 1)
        self.assertEqual(self.logs.append("j", b"more", 1), 0)
        self.assertEqual(self.logs.size("j"), 8 + written)
        self.logs.attempt_over("j")
        log = self.read("j").decode()
        self.assertTrue(log.startswith("12345678ab\n[titan: attempt 1 passed the log cap of "
                                       "10 bytes (master.log_max_bytes): the rest of its "
                                       "output is cut]\n"), log)
        self.assertTrue(log.endswith("[titan: 8 bytes of attempt 1's output were cut "
                                     "(over master.log_max_bytes)]\n"), log)

    def test_each_attempt_has_its_own_cap(self):
        self.logs.append("j", b"x" * 15, 1)
        self.logs.append("j", b"y" * 5, 2)  # the tally of attempt 1 first
        log = self.read("j").decode()
        self.assertIn("[titan: 5 bytes of attempt 1's output were cut", log)
        self.assertTrue(log.endswith("yyyyy"), log)
        self.assertEqual(self.logs.attempt_over("j"), 0)  # attempt 2 lost nothing

    def test_no_cap_keeps_everything(self):
        logs = LogStore(self.dir)
        self.assertEqual(logs.append("k", b"z" * 100, 1), 100)

    def test_files_0600_and_folders_0700_whatever_the_umask(self):
        old = os.umask(0o000)
        try:
            logs = LogStore(os.path.abspath(self.mktemp()), max_bytes=100)
            logs.append("run-1/a", b"out", 1)
        finally:
            os.umask(old)
        mode = lambda p: stat.S_IMODE(os.stat(p).st_mode)  # noqa: E731
        self.assertEqual(mode(logs.directory), 0o700)
        self.assertEqual(mode(os.path.join(logs.directory, "run-1")), 0o700)
        self.assertEqual(mode(os.path.join(logs.directory, "run-1", "a.log")), 0o600)
