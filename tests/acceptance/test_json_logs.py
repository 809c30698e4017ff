"""`log_format: json` (and `log_jobs: true`): a real master and worker write one JSON object
per line, and a job's lines carry its job_id, run_id and the worker's name as keys."""
from __future__ import annotations

import json

from tests.acceptance.helpers import ClusterTestCase, wait_run_ended


def lines(path: str) -> list[dict]:
    """Every line of a log, parsed (a line that is not one JSON object fails the test)."""
    with open(path, encoding="utf-8") as f:
        text = f.read()
    out = []
    for number, line in enumerate(text.splitlines(), 1):
        try:
            event = json.loads(line)
        except ValueError as e:
            raise AssertionError(f"{path}:{number} is not JSON ({e}): {line!r}") from None
        if not isinstance(event, dict):
            raise AssertionError(f"{path}:{number} is not a JSON object: {line!r}")
        out.append(event)
    return out


class JsonLogTests(ClusterTestCase):
    workers = 1
    cluster_options = {"config_top": "log_format: json\nlog_jobs: true\n"}

    def test_a_jobs_lines_carry_its_ids_and_the_workers_name(self):
        with self.cluster.client() as c:
            run_id = c.submit_dag({"name": "logged", "jobs": [
                {"id": "hello", "command": ["sh", "-c", "echo hi"]}]})["run_id"]
            self.assertEqual(wait_run_ended(self, c, run_id, 30)["state"], "COMPLETED")
        job_id = f"{run_id}/hello"
        master_log = self.cluster.master.log_file
        worker_log = self.cluster.workers["w1"].log_file

        def about_the_job(path: str) -> list[dict]:
            return [e for e in lines(path) if e.get("job_id") == job_id]

        # The master: dispatched, then ended (logged once durable), then the run's end.
        seen = self.wait_for(lambda: len(about_the_job(master_log)) >= 2
                             and about_the_job(master_log),
                             what=lambda: f"the job's lines in {master_log}")
        self.assertEqual([(e["message"], e["run_id"], e["worker"], e["attempt"], e["level"])
                          for e in seen],
                         [(f"job {job_id} attempt 1 dispatched to w1", run_id, "w1", 1, "info"),
                          (f"job {job_id} ended COMPLETED", run_id, "w1", 1, "info")])
        self.assertEqual(seen[1]["exit_code"], 0)
        run_end = self.wait_for(lambda: [e for e in lines(master_log)
                                         if e.get("run_id") == run_id and "job_id" not in e])
        self.assertEqual([(e["message"], e["state"]) for e in run_end],
                         [(f"run {run_id} ended COMPLETED", "COMPLETED")])
        joined = [e for e in lines(master_log) if e.get("worker") == "w1"
                  and e.get("state") == "ALIVE"]
        self.assertTrue(joined and joined[0]["worker_id"].startswith("w1-"), joined)
        # The worker: its start and its exit, with the same keys.
        on_worker = about_the_job(worker_log)
        self.assertEqual([(e["message"], e["run_id"], e["worker"]) for e in on_worker],
                         [(f"job {job_id} attempt 1 starting", run_id, "w1"),
                          (f"job {job_id} attempt 1 exited: exit status 0", run_id, "w1")])
        # Every line has the base keys; none has Twisted's record separator.
        for path in (master_log, worker_log):
            for event in lines(path):
                self.assertLessEqual({"time", "level", "namespace", "message"}, set(event))
            with open(path, "rb") as f:
                self.assertNotIn(b"\x1e", f.read())
