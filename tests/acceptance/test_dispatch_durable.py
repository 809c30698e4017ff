"""A master killed right after a DISPATCH does not run that job twice (issue 14, part 3).

The backend is SQLite with its commits held back one second (a persistence plugin of a
"third party", found through titan.plugins like any other, whose insert sleeps on the
database thread before it commits).  One worker, one slot: job A ends, which frees the slot
for job B; the test kills the master with SIGKILL the moment B has started (B's marker file
appears) and starts it again.  Before the fix, B's DISPATCH left the master before the
commit of A's end: the log replayed B as PENDING at attempt 0, the worker's report of
attempt 1 was refused, and B ran a second time as attempt 1.
"""
from __future__ import annotations

import os
import signal
import tempfile
import time

from twisted.trial.unittest import SynchronousTestCase

from titan.errors import RemoteError, TitanError
from titan.testing.cluster import Cluster

SLOW_SQLITE = '''\
import time

from twisted.plugin import IPlugin
from zope.interface import implementer

from titan.interfaces import IPersistenceFactory
from titan.persistence.sqlite import SQLitePersistence


class SlowCommits(SQLitePersistence):
    def _insert(self, rows):
        time.sleep(1.0)  # on the database thread: the reactor goes on meanwhile
        return super()._insert(rows)


@implementer(IPlugin, IPersistenceFactory)
class _Factory:
    name = "slow-sqlite"
    description = "SQLite whose commits land a second late (a test plugin)."

    def build(self, data_dir, options):
        return SlowCommits(data_dir, fsync=options.get("fsync", "everysec"),
                           reactor=options.get("reactor"))


slow_sqlite = _Factory()
'''

# Each execution leaves a file named after its attempt (and its pid: two runs of one
# attempt leave two files).
JOB = ('mkdir -p "{marks}/$TITAN_JOB_ID" && '
       ': > "{marks}/$TITAN_JOB_ID/$TITAN_ATTEMPT.$$"; sleep {s}')


class KilledAfterDispatchTests(SynchronousTestCase):
    def setUp(self) -> None:
        base = tempfile.mkdtemp(prefix="titan-dispatch-durable-")
        plugins = os.path.join(base, "dist", "titan", "plugins")
        os.makedirs(plugins)
        with open(os.path.join(plugins, "slow_sqlite.py"), "w") as f:
            f.write(SLOW_SQLITE)
        self.marks = os.path.join(base, "marks")
        os.makedirs(self.marks)
        self.cluster = Cluster(base, workers=1, slots=1, heartbeat_interval=0.3,
                               heartbeat_timeout=10.0, fixed_port=True,
                               env={"PYTHONPATH": os.path.join(base, "dist")},
                               config_extra="persistence:\n  backend: slow-sqlite\n"
                                            "  fsync: everysec\n")
        self.addCleanup(self.cluster.stop)
        self.cluster.start()

    def runs(self, job_id: str) -> list[str]:
        try:
            return sorted(name.split(".")[0] for name in
                          os.listdir(os.path.join(self.marks, job_id)))
        except FileNotFoundError:
            return []

    def wait_for(self, predicate, timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while not predicate():
            if time.monotonic() > deadline:
                self.fail(f"timed out waiting for {what}")
            time.sleep(0.005)

    def test_the_next_job_runs_once(self):
        with self.cluster.client() as c:
            a, b = c.submit_many([["sh", "-c", JOB.format(marks=self.marks, s="0.3")],
                                  ["sh", "-c", JOB.format(marks=self.marks, s="3")]])
        self.wait_for(lambda: self.runs(b), 30, "B to start once A ended")
        self.cluster.kill_master(signal.SIGKILL)  # within a second of A's end
        self.cluster.start_master()
        deadline = time.monotonic() + 60
        while True:
            try:
                with self.cluster.client() as c:
                    ended = c.wait_many([a, b], timeout=30)
                break
            except RemoteError:
                raise
            except TitanError:
                self.assertLess(time.monotonic(), deadline, "the master did not come back")
                time.sleep(0.2)
        self.assertEqual([j["state"] for j in ended], ["COMPLETED", "COMPLETED"])
        self.assertEqual((self.runs(a), self.runs(b)), (["1"], ["1"]))
        self.assertEqual([j["attempt"] for j in ended], [1, 1])
