"""The scheduler split into parts makes what the one-class scheduler made.

tests/unit/golden_snapshot.json and golden_decisions.txt were written by
tests/unit/scheduler_golden.py from the scheduler before the split (commit a8ab053); the same
events must give byte-identical snapshots and the same decisions, in the same order.
"""
from __future__ import annotations

import json

from twisted.trial import unittest

from tests.unit import scheduler_golden as golden
from titan.core.scheduler import Scheduler, restore, snapshot


class GoldenTests(unittest.TestCase):
    def setUp(self):
        self.snapshots, self.decisions = golden.busy()

    def test_snapshots_are_byte_identical(self):
        with open(golden.SNAPSHOT) as f:
            want = f.read()
        self.assertEqual(self.snapshots, want)

    def test_decisions_are_the_same(self):
        with open(golden.DECISIONS) as f:
            want = f.read().splitlines()
        got = self.decisions.splitlines()
        for i, (g, w) in enumerate(zip(got, want)):
            self.assertEqual(g, w, f"decision {i} differs")
        self.assertEqual(len(got), len(want))

    def test_restore_gives_back_the_same_snapshot(self):
        for text in self.snapshots.split("\n---\n"):
            data = json.loads(text)
            s = Scheduler()
            restore(s, data)
            self.assertEqual(json.dumps(snapshot(s), indent=0), text.strip("\n"))
