"""The job page /jobs/<ref> (webui/src/views/JobPanel.tsx, the run view's side panel too): a
running job's output appears in order while it runs and its state turns COMPLETED live;
"Cancel job" kills a running job; a gate of a run is approved with a comment from the page,
the run goes on and the decision shows."""
from __future__ import annotations

import os
import sys
import time
from urllib.parse import quote

from tests.acceptance.browser import BrowserTestCase
from tests.acceptance.helpers import pid_alive

# Waits for a file the test creates (bounded): the job's progress is the test's to release.
_WAIT_FOR = ("import os, sys, time\n"
             "def wait_for(path):\n"
             "    deadline = time.time() + 60\n"
             "    while not os.path.exists(path):\n"
             "        if time.time() > deadline: sys.exit(9)\n"
             "        time.sleep(0.05)\n")


def page_of(job_id: str) -> str:
    return "/jobs/" + quote(job_id, safe="")


class JobPageTests(BrowserTestCase):
    workers = 1
    timeout = 120

    def state_shown(self) -> str:
        return self.text_of("[data-testid=job-state]")

    def log_lines(self) -> list[str]:
        return [line for line in self.text_of("[data-testid=log]").splitlines()
                if line.startswith("line ")]

    def test_a_running_jobs_lines_show_in_order_while_it_runs_then_completed(self):
        go = os.path.abspath(self.mktemp() + "-go")
        code = _WAIT_FOR + (
            "for i in range(1, 11):\n"
            "    print(f'line {i:02d}', flush=True); time.sleep(0.1)\n"
            f"wait_for({go!r})\n"
            "for i in range(11, 21):\n"
            "    print(f'line {i:02d}', flush=True); time.sleep(0.1)\n")
        with self.cluster.client() as c:
            job_id = c.submit([sys.executable, "-u", "-c", code], name="counter")
        self.open(page_of(job_id))
        self.assertEqual(self.text_of("[data-testid=job-id]"), job_id)
        first = [f"line {i:02d}" for i in range(1, 11)]
        self.until(lambda: self.log_lines() == first, 30, "lines 01-10 in the log")
        # The job is held before line 11: what shows was streamed while it runs.
        self.assertEqual(self.state_shown(), "RUNNING")
        self.assertEqual(self.text_of("[data-testid=job-exit-code]"), "—")
        open(go, "w").close()
        self.until(lambda: self.state_shown() == "COMPLETED", 30, "the state COMPLETED")
        self.until(lambda: self.text_of("[data-testid=job-exit-code]") == "0", 10, "exit code 0")
        self.until(lambda: self.log_lines() == [f"line {i:02d}" for i in range(1, 21)], 10,
                   "lines 01-20 in order")
        self.until(lambda: "ended" in self.text_of("[data-testid=log-status]"), 10,
                   "the log marked ended")
        self.assertFalse(self.find("[data-testid=cancel-job]").is_enabled())

    def test_cancel_job_kills_a_running_job(self):
        pid_file = os.path.abspath(self.mktemp() + "-pid")
        with self.cluster.client() as c:
            job_id = c.submit(["sh", "-c", f"echo $$ > {pid_file}.tmp && "
                               f"mv {pid_file}.tmp {pid_file} && exec sleep 60"],
                              name="sleeper")
        self.open(page_of(job_id))
        self.until(lambda: self.state_shown() == "RUNNING", 30, "the job RUNNING")
        self.until(lambda: os.path.exists(pid_file), 30, "the job's pid file")
        with open(pid_file) as f:
            pid = int(f.read())
        self.find("[data-testid=cancel-job]").click()
        self.find("[data-testid=confirm]").click()
        with self.cluster.client() as c:
            self.until(lambda: c.job(job_id)["state"] == "CANCELLED", 30,
                       "the SDK seeing the job CANCELLED")
        self.until(lambda: self.state_shown() == "CANCELLED", 15, "CANCELLED on the page")
        self.until(lambda: not self.find("[data-testid=cancel-job]").is_enabled(), 10,
                   "Cancel job disabled")
        self.until(lambda: not pid_alive(pid), 15, f"the job's process {pid} gone")

    def test_approving_a_gate_with_a_comment_lets_the_run_go_on(self):
        with self.cluster.client() as c:
            run_id = c.submit_dag({"name": "uigate", "jobs": [
                {"id": "ok", "kind": "gate", "message": "Ship release 4.2?"},
                {"id": "ship", "command": ["true"], "depends_on": ["ok"]}]})["run_id"]
        self.open(page_of(f"{run_id}/ok"))
        self.assertEqual(self.text_of("[data-testid=gate-message]"), "Ship release 4.2?")
        self.until(lambda: self.state_shown() == "WAITING_APPROVAL", 30, "the gate waiting")
        self.find("[data-testid=gate-comment]").send_keys("checked the canary")
        self.find("[data-testid=approve]").click()
        with self.cluster.client() as c:
            self.assertEqual(c.wait(f"{run_id}/ship", timeout=30)["state"], "COMPLETED")
            self.assertEqual(c.wait_run(run_id, timeout=30)["state"], "COMPLETED")
        self.assertIn("approved", self.text_of("[data-testid=decision-verdict]"))
        self.assertEqual(self.text_of("[data-testid=decision-comment]"), "checked the canary")
        self.assertEqual(self.text_of("[data-testid=decision-by]"), "someone on the dashboard")
        self.until(lambda: self.state_shown() == "COMPLETED", 15, "the gate COMPLETED")
        self.assertEqual(self.find_all("[data-testid=approve]"), [])
