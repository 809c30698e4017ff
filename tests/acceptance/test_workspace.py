"""B11: `workspace: shared` through the CLI: the jobs of a run read the files their parents
wrote, in the run's directory on the worker; without it each job has its own."""
from __future__ import annotations

import os
import textwrap

from tests.acceptance.helpers import ClusterTestCase

PIPELINE = """\
    name: {name}
    {workspace}
    jobs:
      - id: extract
        command: [sh, -c, 'echo "a,b" > rows.csv && pwd']
      - id: transform
        command: [sh, -c, 'cat rows.csv && sort rows.csv > sorted.csv']
        depends_on: extract
      - id: load
        command: [cat, sorted.csv]
        depends_on: transform
    """


class SharedWorkspaceTests(ClusterTestCase):
    workers = 1  # every job of a run on the one worker: w1

    def pipeline(self, name: str, workspace: str) -> str:
        folder = os.path.abspath(self.mktemp())
        os.makedirs(folder)
        path = os.path.join(folder, f"{name}.yaml")
        with open(path, "w") as f:
            f.write(textwrap.dedent(PIPELINE).format(name=name, workspace=workspace))
        return path

    def test_a_shared_run_reads_what_its_parents_wrote(self):
        result = self.titan("run", self.pipeline("shared-etl", "workspace: shared"), "--wait")
        self.assertEqual(result.returncode, 0, result.stderr.decode())
        run_id = result.stdout.decode().splitlines()[0]
        self.assertTrue(run_id.startswith("shared-etl-"), run_id)
        worker_dir = os.path.join(self.cluster.base_dir, "w1")
        shared = os.path.join(worker_dir, "shared", run_id)
        self.assertEqual(self.titan("logs", f"{run_id}/extract").stdout.decode(),
                         os.path.realpath(shared) + "\n")
        self.assertEqual(self.titan("logs", f"{run_id}/load").stdout, b"a,b\n")
        # What the jobs wrote stays, for whoever collects it.
        self.assertEqual(sorted(os.listdir(shared)), ["rows.csv", "sorted.csv"])
        self.assertFalse(os.path.exists(os.path.join(worker_dir, "work", run_id)))

    def test_without_it_each_job_has_its_own_directory(self):
        result = self.titan("run", self.pipeline("own-etl", ""), "--wait")
        self.assertNotEqual(result.returncode, 0)
        run_id = result.stdout.decode().splitlines()[0]
        with self.cluster.client() as c:
            jobs = {j["node"]: j["state"] for j in c.run(run_id)["jobs"]}
        self.assertEqual(jobs, {"extract": "COMPLETED", "transform": "FAILED",
                                "load": "CANCELLED"})
        self.assertIn(b"rows.csv", self.titan("logs", f"{run_id}/transform").stdout)
