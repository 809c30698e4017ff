"""Workers die; jobs do not."""
from __future__ import annotations

import os
import signal

from tests.acceptance.helpers import ClusterTestCase, pid_alive, read_pid


class WorkerLossTests(ClusterTestCase):
    workers = 1
    cluster_options = {"heartbeat_interval": 0.3, "heartbeat_timeout": 2.0}

    def test_kill_9_of_a_worker_moves_its_job_to_another(self):
        """A long job on a worker that is kill -9'd finishes on the other worker."""
        pidfile = os.path.join(self.base_dir, "first-attempt.pid")
        grandchild = os.path.join(self.base_dir, "grandchild.pid")
        script = (f'if [ "$TITAN_ATTEMPT" = 1 ]; then echo $$ > {pidfile}; '
                  f'sleep 300 & echo $! > {grandchild}; fi; '
                  'sleep 2; echo "done on attempt $TITAN_ATTEMPT"')
        with self.cluster.client() as c:
            job_id = c.submit(["sh", "-c", script])
            first_pid = read_pid(pidfile)
            left_behind = read_pid(grandchild)
            self.assertEqual(c.job(job_id)["worker"], "w1")
            self.cluster.start_worker("w2")
            self.cluster.wait_for_workers(2)
            self.cluster.kill_worker("w1", signal.SIGKILL)
            # The job's processes die with their worker, grandchildren too: no orphans.
            self.wait_for(lambda: not pid_alive(first_pid), what="the orphaned job to die")
            self.wait_for(lambda: not pid_alive(left_behind), what="its grandchild to die")
            job = c.wait(job_id, timeout=30)
            self.assertEqual(job["state"], "COMPLETED", job)
            self.assertEqual(job["worker"], "w2")
            self.assertEqual(job["attempt"], 2)
            self.assertIn(b"done on attempt 2\n", c.logs(job_id))
            states = {w["worker_id"].rsplit("-", 1)[0]: w["state"] for w in c.workers()}
            self.assertEqual(states, {"w2": "ALIVE"})
