"""The acceptance tests' class clusters (tests/acceptance/helpers.py) stop when their class is
over in a trial process, not when the process exits: checked with a fake cluster."""
from __future__ import annotations

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
