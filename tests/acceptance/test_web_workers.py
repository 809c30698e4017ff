"""Starting and draining workers over the web API (issue 17, Cluster), against a live master
and real worker processes: what the dashboard's Cluster page does, checked as an operator
would, through `titan workers` and jobs."""
from __future__ import annotations

import json
import os
import time
import urllib.error
import urllib.request

from tests.acceptance.helpers import ClusterTestCase


def _gone(pid: int) -> bool:
    """The process has ended and been reaped (a zombie still has its /proc entry)."""
    return not os.path.exists(f"/proc/{pid}")


class WebWorkersTests(ClusterTestCase):
    workers = 2
    slots = 2
    timeout = 120

    def http(self, method: str, path: str, body=None) -> tuple[int, dict]:
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(
            self.cluster.web_url + path, data=data, method=method,
            headers={"Authorization": f"Bearer {self.cluster.token}",
                     "Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                return response.status, json.loads(response.read())
        except urllib.error.HTTPError as e:
            return e.code, json.loads(e.read())

    def worker(self, name: str):
        """The worker named so as GET /api/v1/workers shows it, or None."""
        status, body = self.http("GET", "/api/v1/workers")
        self.assertEqual(status, 200, body)
        return next((w for w in body["workers"] if w["name"] == name), None)

    def start(self, **body) -> dict:
        status, started = self.http("POST", "/api/v1/workers", body)
        self.assertEqual(status, 200, started)
        self.wait_for(lambda: (self.worker(started["name"]) or {}).get("state") == "ALIVE",
                      30, f"worker {started['name']} to register")
        return started

    def test_a_worker_started_with_tags_is_listed_and_runs_jobs_tagged_so(self):
        status, body = self.http("POST", "/api/v1/workers", {"tags": ["bad tag"]})
        self.assertEqual((status, body["error"]["code"]), (400, "bad_request"))
        self.assertIn("'tags'", body["error"]["message"])
        status, body = self.http("POST", "/api/v1/workers", {"slots": 0})
        self.assertEqual(status, 400)
        self.assertIn("'slots'", body["error"]["message"])

        events = urllib.request.urlopen(urllib.request.Request(
            self.cluster.web_url + "/api/v1/events?kind=worker",
            headers={"Authorization": f"Bearer {self.cluster.token}"}), timeout=30)
        self.addCleanup(events.close)
        started = self.start(tags=["gpu", "Cuda12"], slots=1, name="gpu-box")
        self.assertEqual((started["name"], started["tags"], started["slots"],
                          started["spawned_by"]), ("gpu-box", ["CUDA12", "GPU"], 1, "dashboard"))
        view = self.worker("gpu-box")
        self.assertEqual((view["tags"], view["slots"], view["spawned_by"], view["pid"]),
                         (["CUDA12", "GPU"], 1, "dashboard", started["pid"]))
        # The live events say so too: the Cluster page follows them.
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            line = events.readline().decode()
            if not line.startswith("data: "):
                continue
            changed = [c["data"] for c in json.loads(line[6:]).get("changes", ())
                       if c["data"] and c["data"]["name"] == "gpu-box"]
            if changed:
                self.assertEqual(changed[-1]["spawned_by"], "dashboard")
                break
        else:
            self.fail("no live worker change for gpu-box")
        # The operator's view from the terminal.
        listed = self.titan("workers").stdout.decode()
        [row] = [line for line in listed.splitlines() if line.startswith(view["worker_id"])]
        self.assertEqual(row.split()[2:4] + row.split()[-1:], ["CUDA12,GPU", "0/1",
                                                               "dashboard"])
        # A job needing GPU runs there (the cluster's own workers have no tags).
        with self.cluster.client() as c:
            job = c.submit(["true"], tags=["GPU"])
            done = c.wait(job, timeout=30)
        self.assertEqual((done["state"], done["worker"]), ("COMPLETED", "gpu-box"))
        self.http("POST", "/api/v1/workers/gpu-box/drain")

    def test_a_busy_worker_drained_finishes_its_job_takes_no_other_and_leaves(self):
        started = self.start(tags=["DRAINME"], slots=2, name="busy-1")
        worker_id = self.worker("busy-1")["worker_id"]
        flag = os.path.join(self.base_dir, "let-it-end")
        with self.cluster.client() as c:
            running = c.submit(["sh", "-c", f"while [ ! -e {flag} ]; do sleep 0.05; done"],
                               tags=["DRAINME"])
            self.wait_for(lambda: c.job(running)["state"] == "RUNNING", 30,
                          "the job to run")
            status, body = self.http("POST", "/api/v1/workers/busy-1/drain")
            self.assertEqual(status, 200, body)
            self.assertEqual((body["name"], body["state"], body["running"]),
                             ("busy-1", "DRAINING", [running]))
            status, body = self.http("POST", "/api/v1/workers/busy-1/drain")
            self.assertEqual((status, body["error"]["code"]), (409, "not_running"))
            status, body = self.http("POST", "/api/v1/workers/nobody/drain")
            self.assertEqual(status, 404)
            # A free slot, and a job only it could take: the job waits.
            waiting = c.submit(["true"], tags=["DRAINME"])
            view = self.worker("busy-1")
            self.assertEqual((view["state"], view["jobs"]), ("DRAINING", [running]))
            open(flag, "w").close()
            self.assertEqual(c.wait(running, timeout=30)["state"], "COMPLETED")
            # It leaves: gone from the list, its process ended and reaped by the master.
            self.wait_for(lambda: self.worker("busy-1") is None, 30, "busy-1 to leave")
            self.wait_for(lambda: _gone(started["pid"]), 30, "its process to end")
            job = c.job(waiting)
            self.assertEqual((job["state"], job["attempt"]), ("PENDING", 0))
            self.assertNotIn(worker_id, [w["worker_id"] for w in c.workers()])
            c.cancel(waiting)

    def test_a_worker_the_master_did_not_start_is_told_to_stop(self):
        child = self.cluster.workers["w2"]
        status, body = self.http("POST", "/api/v1/workers/w2/drain")
        self.assertEqual((status, body["state"], body["running"]), (200, "DRAINING", []))
        self.wait_for(lambda: child.proc.poll() is not None, 30, "worker w2 to exit")
        self.assertEqual(child.proc.returncode, 0)
        self.wait_for(lambda: self.worker("w2") is None, 10, "w2 to leave the list")
        self.assertEqual(self.titan("workers", "drain", "w1", "--wait").returncode, 0)
        self.wait_for(lambda: self.cluster.workers["w1"].proc.poll() is not None, 30,
                      "worker w1 to exit")
