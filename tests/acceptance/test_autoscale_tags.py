"""The autoscaler starts workers with tags this machine offers, never invented ones
(issue 13, A1)."""
from __future__ import annotations

from tests.acceptance.helpers import ClusterTestCase

# The cluster's config has worker.detect_tags: false, so this machine offers no detected
# tag whatever it has: only what autoscaler.tags lists.
SCALING = ("  max_workers: 3\n  window: 1\n  idle_timeout: 60\n  interval: 0.3\n"
           "  slots: 1\n  tags: [python]\n")


class SpawnedTagsTests(ClusterTestCase):
    workers = 1
    slots = 1
    cluster_options = {"autoscaler": SCALING}

    def master_log(self) -> str:
        with open(self.cluster.master.log_file) as f:
            return f.read()

    def test_a_gpu_job_waits_with_its_reason_and_gets_no_invented_worker(self):
        result = self.titan("submit", "--tags", "GPU", "--", "true")
        self.assertEqual(result.returncode, 0, result.stderr)
        gpu_job = result.stdout.decode().strip()
        # A job whose needs a started worker can meet gets one, tagged with exactly that;
        # by then the GPU job has waited past the window too.
        result = self.titan("submit", "--tags", "python", "--wait", "--", "echo", "py",
                            timeout=60)
        self.assertEqual(result.returncode, 0, result.stderr)
        with self.cluster.client() as c:
            job = c.job(result.stdout.decode().strip())
            self.assertTrue(job["worker"].startswith("auto-"), job)
            self.assertEqual(c.job(gpu_job)["state"], "PENDING")
            workers = c.workers()
            spawned = [w for w in workers if w.get("spawned_by") == "autoscaler"]
            self.assertEqual([w["tags"] for w in spawned], [["PYTHON"]])
            self.assertFalse([w for w in workers if "GPU" in w["tags"]], workers)
        log = self.master_log()
        self.assertNotIn("needing GPU waited", log)  # no worker was started for it
        self.assertIn("autoscaler: workers it starts may carry PYTHON (detected: no tags; "
                      "autoscaler.tags: PYTHON)", log)
        self.assertIn("autoscaler: no worker started for jobs needing GPU: this machine "
                      "offers PYTHON, not GPU", log)
        # It keeps waiting, and says why.
        status = self.titan("status", gpu_job).stdout.decode()
        self.assertEqual(status.splitlines()[0], "PENDING", status)
        self.assertIn("waiting:   no live worker has the tags GPU; the autoscaler will not "
                      "start one: this machine offers PYTHON, not GPU (detected: no tags; "
                      "autoscaler.tags: PYTHON)", status)
