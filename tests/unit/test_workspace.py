"""B11: a run's shared workspace: the DAG spec, the pipeline builder and YAML, the worker's
choice of directory, and the project launcher that leaves its files for the next job."""
from __future__ import annotations

import os
import subprocess
import sys

from twisted.trial.unittest import SynchronousTestCase

from titan.core import dag
from titan.core.codec import spec_from_record, spec_to_record
from titan.core.model import JobSpec
from titan.protocols import legacy as L
from titan.sdk.pipeline import Pipeline, PipelineError
from titan.worker.executor import job_workdir, release_workdir

from tests.unit.test_legacy import project_zip


class SpecTests(SynchronousTestCase):
    def test_the_dag_default_and_a_job_of_its_own(self):
        t = dag.parse_dag({"name": "p", "workspace": "shared", "jobs": [
            {"id": "a", "command": ["true"]},
            {"id": "b", "command": ["true"], "workspace": "job", "depends_on": ["a"]},
            {"id": "g", "kind": "gate", "depends_on": ["b"]}]})
        self.assertEqual([s.workspace for s in t.specs], ["shared", None, None])
        t = dag.parse_dag({"name": "p", "jobs": [
            {"id": "a", "command": ["true"]},
            {"id": "b", "command": ["true"], "workspace": "shared"}]})
        self.assertEqual([s.workspace for s in t.specs], [None, "shared"])

    def test_a_bad_value_says_where(self):
        with self.assertRaises(dag.SubmitError) as caught:
            dag.parse_dag({"name": "p", "workspace": "common",
                           "jobs": [{"id": "a", "command": ["true"]}]})
        self.assertEqual(str(caught.exception),
                         "the DAG: workspace must be job or shared, not 'common'")
        with self.assertRaises(dag.SubmitError) as caught:
            dag.parse_dag({"name": "p", "jobs": [
                {"id": "a", "command": ["true"], "workspace": 1}]})
        self.assertEqual(str(caught.exception),
                         "job a: workspace must be job or shared, not 1")

    def test_it_travels_and_is_recorded(self):
        spec = JobSpec(job_id="a", command=["true"], workspace="shared")
        self.assertEqual(JobSpec.from_wire(spec.to_wire()).workspace, "shared")
        self.assertEqual(spec_from_record(spec_to_record(spec)).workspace, "shared")
        self.assertEqual(spec_from_record(spec.to_wire()).workspace, "shared")
        plain = JobSpec(job_id="a", command=["true"])
        self.assertEqual(spec_to_record(plain), ["a", ["true"]])
        self.assertIsNone(spec_from_record(spec_to_record(plain)).workspace)


class PipelineTests(SynchronousTestCase):
    def test_builder(self):
        p = Pipeline("etl", workspace="shared")
        p.job("a", "true")
        self.assertEqual(p.to_spec()["workspace"], "shared")
        self.assertIn("workspace: shared", p.to_yaml())
        self.assertNotIn("workspace", _plain_spec())  # each job its own, as before
        with self.assertRaises(PipelineError) as caught:
            Pipeline("etl", workspace="everything")
        self.assertIn("workspace", str(caught.exception))
        self.assertIn("must be job or shared, not 'everything'", str(caught.exception))

    def test_yaml(self):
        path = self.mktemp()
        os.makedirs(path)
        f = os.path.join(path, "p.yaml")
        with open(f, "w") as out:
            out.write("name: etl\nworkspace: shared\njobs:\n  - id: a\n    command: 'true'\n")
        from titan.sdk.pipeline import load_pipeline
        self.assertEqual(load_pipeline(f).to_spec()["workspace"], "shared")
        with open(f, "w") as out:
            out.write("name: etl\nworkspace: nope\njobs:\n  - id: a\n    command: 'true'\n")
        with self.assertRaises(PipelineError) as caught:
            load_pipeline(f)
        self.assertIn(f"{f}:2", str(caught.exception))
        self.assertIn("workspace", str(caught.exception))


def _plain_spec() -> dict:
    p = Pipeline("etl")
    p.job("a", "true")
    return p.to_spec()


class WorkerDirTests(SynchronousTestCase):
    def test_which_directory(self):
        d = "/data"
        own = JobSpec(job_id="b", command=["true"])
        shared = JobSpec(job_id="b", command=["true"], workspace="shared")
        fixed = JobSpec(job_id="b", command=["true"], cwd="/srv/x", workspace="shared")
        self.assertEqual(job_workdir(d, "r-1/b", own, "r-1"), ("/data/work/r-1/b", True))
        self.assertEqual(job_workdir(d, "r-1/b", shared, "r-1"), ("/data/shared/r-1", True))
        self.assertEqual(job_workdir(d, "r-1/b", fixed, "r-1"), ("/srv/x", False))
        # A job of no run has only its own.
        self.assertEqual(job_workdir(d, "b", shared, None), ("/data/work/b", True))

    def test_released_when_empty_and_unused(self):
        root = self.mktemp()
        shared = os.path.join(root, "shared", "r-1")
        os.makedirs(shared)
        release_workdir(shared, "r-1/a", in_use=True)  # another job of the run runs there
        self.assertTrue(os.path.isdir(shared))
        with open(os.path.join(shared, "out.csv"), "w") as f:
            f.write("1")
        release_workdir(shared, "r-1/a", in_use=False)  # what the jobs wrote stays
        self.assertTrue(os.path.exists(os.path.join(shared, "out.csv")))
        os.unlink(os.path.join(shared, "out.csv"))
        release_workdir(shared, "r-1/a", in_use=False)
        self.assertFalse(os.path.exists(shared))


class LauncherTests(SynchronousTestCase):
    def run_launcher(self, keep: bool) -> list:
        cwd = os.path.abspath(self.mktemp())
        os.makedirs(cwd)
        data = project_zip({"main.py": "open('out.txt', 'w').write('x')\n",
                            "lib/helper.py": "X = 1\n"})
        script = os.path.join(cwd, "..", "launcher.py")
        with open(script, "wb") as f:
            f.write(L.archive_launcher("j", "p.zip", "main.py", data, keep=keep))
        subprocess.run([sys.executable, script], cwd=cwd, check=True)
        return sorted(os.path.relpath(os.path.join(d, n), cwd)
                      for d, _, names in os.walk(cwd) for n in names)

    def test_a_shared_workspace_keeps_the_project_files(self):
        self.assertEqual(self.run_launcher(keep=False), ["out.txt"])
        self.assertEqual(self.run_launcher(keep=True),
                         ["lib/helper.py", "main.py", "out.txt"])
