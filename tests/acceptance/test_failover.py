"""Workers die; jobs do not."""
from __future__ import annotations

import os
import signal

from tests.acceptance.helpers import ClusterTestCase, Journal, pid_alive, read_pid, wait_ended


class WorkerLossTests(ClusterTestCase):
    workers = 1
    cluster_options = {"heartbeat_interval": 0.3, "heartbeat_timeout": 2.0}

    def test_kill_9_of_a_worker_moves_its_job_to_another(self):
        """A long job on a worker that is kill -9'd finishes on the other worker, once."""
        pidfile = os.path.join(self.base_dir, "first-attempt.pid")
        grandchild = os.path.join(self.base_dir, "grandchild.pid")
        journal = Journal(os.path.join(self.base_dir, "journal"))
        # The first attempt runs until its worker is killed, whatever the time it takes
        # to start w2; the second ends at once.
        script = (f'if [ "$TITAN_ATTEMPT" = 1 ]; then echo $$ > {pidfile}; '
                  f'sleep 300 & echo $! > {grandchild}; sleep 300; fi; '
                  'echo "done on attempt $TITAN_ATTEMPT"')
        with self.cluster.client() as c:
            job_id = c.submit(journal.sh(script))
            first_pid = read_pid(pidfile)
            left_behind = read_pid(grandchild)
            self.assertEqual(c.job(job_id)["worker"], "w1")
            self.cluster.start_worker("w2")
            self.cluster.wait_for_workers(2)
            self.cluster.kill_worker("w1", signal.SIGKILL)
            # The job's processes die with their worker, grandchildren too: no orphans.
            self.wait_for(lambda: not pid_alive(first_pid), what="the orphaned job to die")
            self.wait_for(lambda: not pid_alive(left_behind), what="its grandchild to die")
            [job] = wait_ended(self, c, job_id, 30)
            self.assertEqual(job["state"], "COMPLETED", job)
            self.assertEqual(job["worker"], "w2")
            self.assertEqual(job["attempt"], 2)
            self.assertIn(b"done on attempt 2\n", c.logs(job_id))
            states = {w["worker_id"].rsplit("-", 1)[0]: w["state"] for w in c.workers()}
            self.assertEqual(states, {"w2": "ALIVE"})
        # Attempt 1 started on w1 and died with it; attempt 2 ran to its end once, on w2.
        self.assertEqual([(e.attempt, e.worker) for e in journal.starts(job_id)],
                         [(1, "w1"), (2, "w2")])
        journal.check_exactly_once(self, [job])
