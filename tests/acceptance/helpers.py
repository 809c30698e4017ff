"""Shared set-up for acceptance tests: one real cluster per test class."""
from __future__ import annotations

import atexit
import os
import tempfile
import time

from twisted.trial.unittest import SynchronousTestCase

from titan.testing.cluster import Cluster


class ClusterTestCase(SynchronousTestCase):
    """Tests of a class share one cluster, started by the first of them to run.

    trial has no class fixtures, so the cluster stops when the test process exits (and its
    processes die with it in any case: they get SIGTERM when their parent goes).
    """

    workers = 2
    slots = 4
    cluster_options: dict = {}
    cluster: Cluster

    def setUp(self) -> None:
        cls = type(self)
        if cls.__dict__.get("cluster") is None:
            cls.base_dir = tempfile.mkdtemp(prefix="titan-acceptance-")
            cluster = Cluster(cls.base_dir, workers=cls.workers, slots=cls.slots,
                              **cls.cluster_options)
            atexit.register(cluster.stop)
            cluster.start()
            cls.cluster = cluster

    def titan(self, *args: str, **kwargs):
        return self.cluster.cli(*args, **kwargs)

    def wait_for(self, predicate, timeout: float = 20.0, what: str = "condition"):
        return wait_for(self, predicate, timeout, what)


def wait_for(case, predicate, timeout: float = 20.0, what: str = "condition"):
    """predicate()'s value once it is true; `case` fails after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            case.fail(f"timed out waiting for {what}")
        time.sleep(0.05)


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie is dead for our purposes.
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(") ", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def read_pid(path: str, timeout: float = 10.0) -> int:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with open(path) as f:
                text = f.read().strip()
            if text:
                return int(text)
        except (OSError, ValueError):
            pass
        time.sleep(0.02)
    raise AssertionError(f"no pid in {path}")


ENDED = {"COMPLETED", "FAILED", "DEAD", "CANCELLED"}


class LegacyChecks:
    """For tests that talk to the master as the reference SDK does (`self.c`, a
    LegacyClient) and look at the result the Titan way."""

    def wait_ended(self, *refs: str, timeout: float = 60.0) -> dict:
        states: dict = {}

        def ended():
            for ref in refs:
                if states.get(ref) not in ENDED:
                    states[ref] = self.c.get_job_status(ref)
            return all(states[r] in ENDED for r in refs)
        self.wait_for(ended, timeout, f"{', '.join(refs)} to end (now {states})")
        return states

    def structured(self, ref: str) -> dict:
        """The job as Titan's own client sees it (its bare id: unique in these tests)."""
        from titan.protocols import legacy
        with self.cluster.client() as client:
            return client.job(legacy.node_of(ref))
