"""One cluster, the user's commands: submit, wait, status, logs, cancel, workers."""
from __future__ import annotations

import os
import sys
import time

from titan.errors import TitanError
from tests.acceptance.helpers import ClusterTestCase, pid_alive, read_pid

PY = sys.executable


class SpineTests(ClusterTestCase):
    def test_hundred_jobs_through_cli_and_sdk(self):
        """100 jobs, 20 through the CLI and 80 through the SDK: right exit codes and logs."""
        expected = {}
        for i in range(20):
            result = self.titan("submit", "--", "sh", "-c", f"echo job {i}; exit {i % 4}")
            self.assertEqual(result.returncode, 0, result.stderr)
            expected[result.stdout.decode().strip()] = i
        with self.cluster.client() as c:
            for i in range(20, 100):
                job_id = c.submit([PY, "-c", f"import sys; print('job {i}'); "
                                             f"print('err {i}', file=sys.stderr); sys.exit({i % 4})"])
                expected[job_id] = i
            self.assertEqual(len(expected), 100)
            for job_id, i in expected.items():
                job = c.wait(job_id, timeout=60)
                code = i % 4
                self.assertEqual(job["state"], "COMPLETED" if code == 0 else "FAILED", job)
                self.assertEqual(job["exit_code"], code)
                logs = c.logs(job_id).decode()
                self.assertIn(f"job {i}\n", logs)
                if i >= 20:
                    self.assertIn(f"err {i}\n", logs)
            used = {c.job(j)["worker"] for j in expected}
        self.assertEqual(used, {"w1", "w2"})

    def test_submit_wait_reports_failure_and_exit_code(self):
        result = self.titan("submit", "--wait", "--", "sh", "-c", "exit 3")
        self.assertEqual(result.returncode, 3)
        job_id = result.stdout.decode().strip()
        self.assertEqual(result.stderr.decode().strip(), f"{job_id} FAILED, exit 3")
        status = self.titan("status", job_id)
        self.assertEqual(status.stdout.decode().splitlines()[0], "FAILED")

    def test_submit_wait_success(self):
        result = self.titan("submit", "--wait", "--", PY, "-c", "print('hi')")
        self.assertEqual(result.returncode, 0, result.stderr)
        job_id = result.stdout.decode().strip()
        self.assertEqual(self.titan("logs", job_id).stdout, b"hi\n")
        self.assertEqual(self.titan("status", job_id).stdout.decode().splitlines()[0], "COMPLETED")

    def test_logs_in_order_and_follow(self):
        script = ("import sys, time\n"
                  "for i in range(5):\n"
                  "    print(f'line {i}', flush=True)\n"
                  "    time.sleep(0.05)  # two pipes: order them in time\n"
                  "    print(f'err {i}', file=sys.stderr, flush=True)\n"
                  "    time.sleep(0.15)\n")
        job_id = self.titan("submit", "--", PY, "-c", script).stdout.decode().strip()
        followed = self.titan("logs", "--follow", job_id)
        self.assertEqual(followed.returncode, 0, followed.stderr)
        lines = followed.stdout.decode().splitlines()
        self.assertEqual(lines, [x for i in range(5) for x in (f"line {i}", f"err {i}")])
        self.assertEqual(self.titan("logs", job_id).stdout, followed.stdout)

    def test_cancel_kills_the_process_group(self):
        pidfile = os.path.join(self.base_dir, "cancel.pid")
        job_id = self.titan("submit", "--", "sh", "-c",
                            f"sleep 300 & echo $! > {pidfile}; wait").stdout.decode().strip()
        child = read_pid(pidfile)
        self.assertTrue(pid_alive(child))
        self.assertEqual(self.titan("status", job_id).stdout.decode().splitlines()[0], "RUNNING")
        result = self.titan("cancel", job_id)
        self.assertEqual(result.returncode, 0, result.stderr)
        self.assertEqual(result.stdout.decode().strip(), f"{job_id} CANCELLED")
        self.wait_for(lambda: not pid_alive(child), what="the job's child to die")
        again = self.titan("cancel", job_id)
        self.assertEqual(again.returncode, 1)
        self.assertIn("already CANCELLED", again.stderr.decode())
        # The slot comes back: the cluster still runs work.
        self.assertEqual(self.titan("submit", "--wait", "--", "true").returncode, 0)

    def test_timeout_kills_the_job_and_its_children(self):
        pidfile = os.path.join(self.base_dir, "timeout.pid")
        start = time.monotonic()
        result = self.titan("submit", "--wait", "--timeout", "1", "--", "sh", "-c",
                            f"sleep 300 & echo $! > {pidfile}; sleep 300")
        # Its sleep is 300 s: ending long before is the 1 s timeout at work (45 s leaves room
        # for a loaded machine; the message below says which timeout it was).
        self.assertLess(time.monotonic() - start, 45)
        self.assertEqual(result.returncode, 1)
        self.assertIn("FAILED, timeout after 1s", result.stderr.decode())
        self.wait_for(lambda: not pid_alive(read_pid(pidfile)), what="the grandchild to die")

    def test_workers_lists_both(self):
        result = self.titan("workers")
        self.assertEqual(result.returncode, 0, result.stderr)
        lines = result.stdout.decode().splitlines()
        self.assertEqual(lines[0].split(), ["ID", "HOST", "TAGS", "SLOTS", "STATE", "HEARTBEAT",
                                            "IDLE", "SPAWNED", "BY"])
        names = sorted(line.split()[0].rsplit("-", 1)[0] for line in lines[1:])
        self.assertEqual(names, ["w1", "w2"])
        for line in lines[1:]:
            self.assertRegex(line, r"\s\d+/4\s+ALIVE\s+\d+\.\d+s ago\s+(-|\d+s)\s+-$")

    def test_command_not_found(self):
        result = self.titan("submit", "--wait", "--", "no-such-program-xyz")
        self.assertEqual(result.returncode, 127)
        self.assertIn("command not found: no-such-program-xyz", result.stderr.decode())

    def test_wrong_token_is_refused_and_master_keeps_serving(self):
        env = dict(self.cluster.env(), TITAN_TOKEN="wrong")
        result = self.titan("workers", env=env)
        self.assertEqual(result.returncode, 1)
        self.assertEqual(result.stderr.decode().strip(),
                         f"titan: the master at {self.cluster.address} refused this client: "
                         "wrong cluster token")
        with self.assertRaises(TitanError):
            self.cluster.client(token="wrong").workers()
        self.assertEqual(self.titan("workers").returncode, 0)

    def test_unknown_job(self):
        result = self.titan("status", "nope")
        self.assertEqual(result.returncode, 1)
        self.assertEqual(result.stderr.decode().strip(), "titan: no job nope")

    def test_unreachable_master(self):
        result = self.titan("--master", "127.0.0.1:1", "workers")
        self.assertEqual(result.returncode, 1)
        self.assertIn("cannot reach the master at 127.0.0.1:1", result.stderr.decode())

    def test_every_command_has_help(self):
        for command in ([], ["submit"], ["status"], ["logs"], ["cancel"], ["workers"],
                        ["jobs"], ["up"], ["run"], ["approve"], ["reject"], ["result"],
                        ["runs"], ["schedules"]):
            result = self.titan(*command, "--help")
            self.assertEqual(result.returncode, 0, command)
            self.assertIn(b"usage: titan", result.stdout)
