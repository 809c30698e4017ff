"""Reloading a running master's config (`titan reload`, `kill -HUP`): applied without
dropping the worker's connection or the job it runs; a bad file is refused, said, and the
config in use stays."""
from __future__ import annotations

import os
import signal
import urllib.error
import urllib.request

from tests.acceptance.helpers import ClusterTestCase, wait_ended


class ReloadTests(ClusterTestCase):
    workers = 1

    def setUp(self) -> None:
        super().setUp()
        path = self.cluster.config_path
        with open(path) as f:
            self.original = f.read()
        self.addCleanup(self.restore)

    def restore(self) -> None:
        """The cluster's own config again, for the class's next test."""
        self.write("")
        self.assertEqual(self.titan("reload").returncode, 0)

    def write(self, extra: str) -> None:
        with open(self.cluster.config_path, "w") as f:
            f.write(self.original + extra)

    def line_of(self, text: str) -> int:
        """The line of the config file (as written now) that starts with `text`."""
        with open(self.cluster.config_path) as f:
            for number, line in enumerate(f, 1):
                if line.startswith(text):
                    return number
        raise AssertionError(f"no line {text!r} in the config")

    def web_status(self, token: str) -> int:
        request = urllib.request.Request(self.cluster.web_url + "/api/v1/cluster",
                                         headers={"Authorization": f"Bearer {token}"})
        try:
            with urllib.request.urlopen(request, timeout=10) as answer:
                return answer.status
        except urllib.error.HTTPError as e:
            return e.code

    def master_log(self) -> str:
        with open(self.cluster.master.log_file, errors="replace") as f:
            return f.read()

    def worker_log(self) -> str:
        with open(self.cluster.workers["w1"].log_file, errors="replace") as f:
            return f.read()

    def test_a_reload_applies_without_dropping_the_worker_or_its_job(self):
        with self.cluster.client() as c:
            [before] = c.workers()
            reloads = c.stats()["config"]["reloads"]
            job = c.submit(["sh", "-c", "sleep 2; echo done"])
            self.wait_for(lambda: c.job(job)["state"] == "RUNNING", what=f"{job} to run")
            self.assertEqual(self.web_status("peek"), 401)
            self.write("router: [capability, least-loaded]\n"
                       "web:\n  viewer_tokens: [peek]\n"
                       "persistence:\n  fsync: always\n")
            result = self.titan("reload")
            self.assertEqual(result.returncode, 0, result.stderr)
            self.assertEqual(result.stdout.decode().splitlines(), [
                f"reloaded {self.cluster.config_path}",
                "  applied: router, web.viewer_tokens",
                "  needs a restart: persistence.fsync"])
            # Applied: the viewer token opens the web API now; status says what waits.
            self.assertEqual(self.web_status("peek"), 200)
            config = c.stats()["config"]
            self.assertEqual((config["reloads"], config["restart"]),
                             (reloads + 1, ["persistence.fsync"]))
            self.assertIn(f"  config:      {self.cluster.config_path}, reloaded {reloads + 1} "
                          "times; needs a restart for persistence.fsync\n",
                          self.titan("status").stdout.decode())
            # The job ran once, to its end, on the worker that was connected all along.
            [ended] = wait_ended(self, c, job, 30)
            self.assertEqual((ended["state"], ended["attempt"]), ("COMPLETED", 1))
            self.assertEqual(c.logs(job), b"done\n")
            [after] = c.workers()
            self.assertEqual((after["worker_id"], after["joined_at"], after["state"]),
                             (before["worker_id"], before["joined_at"], "ALIVE"))
        worker_log = self.worker_log()
        self.assertEqual(worker_log.count("registered with the master as"), 1)
        self.assertNotIn("lost the master", worker_log)
        self.assertIn("config reloaded from", self.master_log())

    def test_a_bad_config_is_refused_and_the_old_one_stays(self):
        self.write("web:\n  viewer_tokens: [peek]\n")
        self.assertEqual(self.titan("reload").returncode, 0)
        self.assertEqual(self.web_status("peek"), 200)
        # kill -HUP with a file that is not YAML: logged with file and line, nothing changes.
        self.write("web:\n  viewer_tokens: [peek, other\n")
        os.kill(self.cluster.master.pid, signal.SIGHUP)
        path = self.cluster.config_path
        said = self.wait_for(lambda: [line for line in self.master_log().splitlines()
                                      if "config reload (SIGHUP) refused" in line],
                             what="the refusal in the master's log")
        self.assertIn(f"the config in use stays: {path}:", said[-1])
        self.assertIn("not valid YAML", said[-1])
        self.assertTrue(self.cluster.master.alive())
        self.assertEqual(self.web_status("peek"), 200)
        self.assertEqual(self.web_status("other"), 401)
        # titan reload says it, and fails; an unknown router is named with its line.
        result = self.titan("reload")
        self.assertEqual(result.returncode, 1)
        self.assertIn(f"titan: config not reloaded (the one in use stays): {path}:",
                      result.stderr.decode())
        self.write("router: [capability, nearest]\nweb:\n  viewer_tokens: [other]\n")
        result = self.titan("reload")
        self.assertEqual(result.returncode, 1)
        self.assertIn(f"{path}:{self.line_of('router:')}: router: ", result.stderr.decode())
        self.assertIn("nearest", result.stderr.decode())
        # The master serves as before, with the settings it had.
        self.assertEqual(self.web_status("other"), 401)
        with self.cluster.client() as c:
            [done] = wait_ended(self, c, c.submit(["true"]), 30)
            self.assertEqual(done["state"], "COMPLETED")
            last = c.stats()["config"]["last"]
            self.assertEqual(last["ok"], False)
            self.assertIn("router", last["error"])
        self.assertIn(f"; the last reload was refused: {path}:{self.line_of('router:')}: "
                      "router: unknown router 'nearest'", self.titan("status").stdout.decode())
