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

from twisted.trial.unittest import SynchronousTestCase

from titan.testing.cluster import Cluster
from tests.acceptance.helpers import Journal, retrying, wait_ended, wait_for

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



class KilledAfterDispatchTests(SynchronousTestCase):
    def setUp(self) -> None:
        base = tempfile.mkdtemp(prefix="titan-dispatch-durable-")
        plugins = os.path.join(base, "dist", "titan", "plugins")
        os.makedirs(plugins)
        with open(os.path.join(plugins, "slow_sqlite.py"), "w") as f:
            f.write(SLOW_SQLITE)
        # Each execution journals its start and its end (with its attempt: two runs of
        # one attempt leave two lines).
        self.journal = Journal(os.path.join(base, "journal"))
        self.cluster = Cluster(base, workers=1, slots=1, heartbeat_interval=0.3,
                               heartbeat_timeout=10.0, fixed_port=True,
                               # The plugin's folder first, then whatever the tests run
                               # with (a private copy of the tree, say).
                               env={"PYTHONPATH": os.pathsep.join(
                                   [os.path.join(base, "dist")]
                                   + [p for p in [os.environ.get("PYTHONPATH")] if p])},
                               config_extra="persistence:\n  backend: slow-sqlite\n"
                                            "  fsync: everysec\n")
        self.addCleanup(self.cluster.stop)
        self.cluster.start()

    def test_the_next_job_runs_once(self):
        with self.cluster.client() as c:
            a, b = c.submit_many([self.journal.sh("sleep 0.3"), self.journal.sh("sleep 3")])
        # Polled often: the kill must come within the second A's end takes to commit.
        wait_for(self, lambda: self.journal.starts(b), 30, "B to start once A ended",
                 interval=0.005)
        self.cluster.kill_master(signal.SIGKILL)  # within a second of A's end
        self.cluster.start_master()
        ended = retrying(self.cluster, lambda c: wait_ended(self, c, [a, b], 30), 60)
        self.assertEqual([j["state"] for j in ended], ["COMPLETED", "COMPLETED"])
        self.assertEqual([j["attempt"] for j in ended], [1, 1])
        self.assertEqual([[e.attempt for e in self.journal.starts(j)] for j in (a, b)],
                         [[1], [1]])
        self.journal.check_exactly_once(self, ended)
