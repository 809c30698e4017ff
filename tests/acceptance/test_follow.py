"""`titan run --wait` / `titan wait` as a user sees them, through the real CLI, and the SDK's
batch submit, against a real cluster (issue 13, C15 and D)."""
from __future__ import annotations

import json
import os
import pty
import re
import signal
import subprocess
import textwrap
import threading
import time

from tests.acceptance.helpers import (ClusterTestCase, Journal, jobs_not_ended, wait_ended,
                                      wait_run_ended)
from titan.testing.cluster import BIN


def _interruptible() -> None:
    """preexec_fn: Ctrl-C (SIGINT) does to `titan` what it does at a terminal, even when the
    tests run in the background of a shell, whose children ignore SIGINT (and Python then
    installs no handler of its own)."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


class Watched:
    """A `titan` process whose stderr (or terminal) is read as it comes."""

    def __init__(self, case, *args: str, tty: bool = False) -> None:
        self.case = case
        self.args = args
        self.text = ""
        cmd = [os.path.join(BIN, "titan"), *args]
        env = case.cluster.env()
        if tty:
            leader, follower = pty.openpty()
            self.proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=follower,
                                         stdin=subprocess.DEVNULL, cwd=case.base_dir,
                                         preexec_fn=_interruptible)
            os.close(follower)
            self._fd = leader
        else:
            self.proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE,
                                         stderr=subprocess.PIPE, stdin=subprocess.DEVNULL,
                                         cwd=case.base_dir, preexec_fn=_interruptible)
            self._fd = self.proc.stderr.fileno()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        case.addCleanup(self.kill)

    def _read(self) -> None:
        while True:
            try:
                data = os.read(self._fd, 65536)
            except OSError:
                return
            if not data:
                return
            self.text += data.decode("utf-8", "replace")

    def wait_for(self, pattern: str, timeout: float = 30.0) -> re.Match:
        found = self.case.wait_for(lambda: re.search(pattern, self.text), timeout,
                                   f"{pattern!r} in the output of titan (so far: {self.text!r})")
        return found

    def finish(self, timeout: float = 60.0) -> tuple[int, str, str]:
        """Its exit code, stdout and stderr once it has ended; after `timeout` seconds the
        test fails with what it said and the cluster's jobs not ended."""
        try:
            code = self.proc.wait(timeout)  # its stdout (a table at the end) fits a pipe
        except subprocess.TimeoutExpired:
            with self.case.cluster.client() as c:
                stuck = jobs_not_ended(c)
            self.case.fail(f"titan {' '.join(self.args)} still running after {timeout:g}s; "
                           f"it said:\n{self.text}\njobs not ended:\n{stuck}")
        out = self.proc.stdout.read().decode()
        self._reader.join(5)
        return code, out, self.text

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        if self.proc.stdout:
            self.proc.stdout.close()


class FollowCase(ClusterTestCase):
    @property
    def journal(self) -> Journal:
        return Journal(os.path.join(self.base_dir, "journal"))

    def write(self, name: str, text: str) -> str:
        path = os.path.join(self.base_dir, name)
        with open(path, "w") as f:
            f.write(textwrap.dedent(text))
        return path

    def held(self, name: str) -> tuple[str, str]:
        """A pipeline whose job `slow` runs until the test creates its file (both jobs
        journaled)."""
        go = os.path.join(self.base_dir, f"{name}.go")
        first = json.dumps(self.journal.sh("echo first"))
        slow = json.dumps(self.journal.sh(f"while [ ! -e {go} ]; do sleep 0.05; done; "
                                          "echo slow done"))
        path = self.write(f"{name}.yaml", f"""\
            name: {name}
            jobs:
              - id: first
                command: {first}
              - id: slow
                command: {slow}
                depends_on: [first]
            """)
        return path, go

    def release(self, go: str) -> None:
        open(go, "w").close()


class FollowTests(FollowCase):
    def test_ctrl_c_leaves_the_run_going_and_says_how_to_follow_it_again(self):
        path, go = self.held("interrupted")
        w = Watched(self, "run", path, "--wait")
        w.wait_for(r"slow RUNNING")
        run_id = re.search(r"(interrupted-\w+)", self.cluster.cli("runs").stdout.decode())[1]
        w.proc.send_signal(signal.SIGINT)
        code, out, err = w.finish()
        self.assertEqual(code, 130, err)
        self.assertIn(f"stopped following {run_id}; the run goes on", err)
        self.assertIn(f"titan wait {run_id}", err)
        self.assertNotIn("Traceback", err)
        status = self.titan("status", run_id)
        self.assertEqual(status.stdout.decode().splitlines()[0], "RUNNING")
        # Following it again, as the message says, until it ends.
        again = Watched(self, "wait", run_id)
        again.wait_for(r"slow RUNNING")
        self.release(go)
        code, out, err = again.finish()
        self.assertEqual(code, 0, err)
        self.assertIn(f"{run_id} COMPLETED: COMPLETED 2", err)
        self.assertEqual([line.split()[:2] for line in out.splitlines()[1:]],
                         [["first", "COMPLETED"], ["slow", "COMPLETED"]])

    def test_a_failed_run_ends_with_the_failed_jobs_last_lines_and_the_time(self):
        path = self.write("failing.yaml", """\
            name: failing
            jobs:
              - id: ok
                command: echo fine
              - id: bad
                command: sh -c 'for i in $(seq 1 25); do echo "line $i"; done; exit 3'
              - id: after
                command: echo never
                depends_on: [bad]
            """)
        result = self.titan("run", path, "--wait")
        err = result.stderr.decode()
        self.assertEqual(result.returncode, 1, err)
        tail = err[err.index("--- "):]
        self.assertRegex(tail, r"--- failing-\w+/bad FAILED \(exit 3\); last 10 lines")
        self.assertEqual(re.findall(r"line (\d+)", tail), [str(i) for i in range(16, 26)])
        self.assertRegex(err, r"failing-\w+ FAILED: CANCELLED 1  COMPLETED 1  FAILED 1; "
                              r"took \d+\.\d\ds\n$")

    def test_a_gate_says_how_to_approve_it(self):
        path = self.write("gated.yaml", """\
            name: gated
            jobs:
              - id: build
                command: echo built
              - id: ship
                gate: true
                depends_on: [build]
              - id: deploy
                command: echo deployed
                depends_on: [ship]
            """)
        w = Watched(self, "run", path, "--wait")
        ref = w.wait_for(r"titan approve (gated-\w+/ship)")[1]
        approve = self.titan("approve", ref, "-m", "ok")
        self.assertEqual(approve.returncode, 0, approve.stderr)
        code, out, err = w.finish()
        self.assertEqual(code, 0, err)
        self.assertIn("deploy COMPLETED", err)

    def test_on_a_terminal_one_line_with_elapsed_time_and_running_jobs(self):
        path, go = self.held("onatty")
        w = Watched(self, "run", path, "--wait", tty=True)
        line = w.wait_for(r"\[#+-+\] 1/2  (\d+:\d\d)  running: slow")
        # The clock moves while nothing else does.
        w.wait_for(rf"\d+:\d\d(?<!{line[1]})  running: slow", timeout=5)
        self.release(go)
        code, out, err = w.finish()
        self.assertEqual(code, 0, err)
        self.assertRegex(err, r"onatty-\w+ COMPLETED: COMPLETED 2; took")
        self.assertNotIn("slow RUNNING", err)  # no line per job on a terminal


class MasterRestartTests(FollowCase):
    cluster_options = {"fixed_port": True}

    def test_a_lost_master_is_retried_and_the_wait_goes_on(self):
        path, go = self.held("restarted")
        w = Watched(self, "run", path, "--wait")
        w.wait_for(r"slow RUNNING")
        self.cluster.kill_master()
        w.wait_for(r"lost the master .*; the run goes on without us. Retrying in")
        self.assertIsNone(w.proc.poll())  # still there
        self.cluster.start_master()
        w.wait_for(r"reconnected to the master after \d+\.\ds")
        self.release(go)
        code, out, err = w.finish()
        self.assertEqual(code, 0, err)
        run_id = re.search(r"(restarted-\w+) COMPLETED: COMPLETED 2", err)[1]
        # The master's restart ran neither job again, nor `slow` twice meanwhile.
        with self.cluster.client() as c:
            run = wait_run_ended(self, c, run_id, 20)
        self.journal.check_exactly_once(self, run["jobs"])
        self.assertEqual([[e.attempt for e in self.journal.starts(j["job_id"])]
                          for j in run["jobs"]], [[1], [1]])


class BatchSubmitTests(FollowCase):
    def test_submit_many_map_and_wait_many(self):
        with self.cluster.client() as c:
            ids = c.submit_many([["echo", "one"], "echo two | tr a-z A-Z",
                                 {"command": ["sh", "-c", "exit 4"], "name": "four"}],
                                retries=0)
            jobs = wait_ended(self, c, ids, 30)
            self.assertEqual([j["state"] for j in jobs], ["COMPLETED", "COMPLETED", "FAILED"])
            self.assertEqual((jobs[2]["exit_code"], jobs[2]["name"]), (4, "four"))
            self.assertEqual(c.logs(ids[1]), b"TWO\n")
            files = ["a b.txt", "it's;rm -rf x", "c"]
            mapped = c.map("printf '%s\\n' {}", files)
            self.assertEqual([j["state"] for j in wait_ended(self, c, mapped, 30)],
                             ["COMPLETED"] * 3)
            self.assertEqual([c.logs(i).decode() for i in mapped], [f + "\n" for f in files])
            seeds = c.map(["sh", "-c", "echo seed=$0", "{}"], range(3))
            wait_ended(self, c, seeds, 30)
            self.assertEqual([c.logs(i) for i in seeds], [b"seed=0\n", b"seed=1\n", b"seed=2\n"])

    def test_a_bad_job_in_a_batch_is_named_and_nothing_runs(self):
        with self.cluster.client() as c:
            before = len(c.jobs(limit=10000))
            with self.assertRaises(Exception) as caught:
                c.submit_many([["true"], {"command": ["true"], "timeout": -5}])
            self.assertIn("jobs[1]: ", str(caught.exception))
            self.assertEqual(len(c.jobs(limit=10000)), before)


class WaitRunTests(FollowCase):
    def test_wait_run_follows_pushes_and_keeps_its_timeout(self):
        path, go = self.held("waited")
        with self.cluster.client() as c:
            from titan.sdk.pipeline import load_pipeline
            run_id = c.submit_dag(load_pipeline(path))["run_id"]
            t0 = time.monotonic()
            run = c.wait_run(run_id, timeout=0.5)
            self.assertLess(time.monotonic() - t0, 5)
            self.assertEqual(run["state"], "RUNNING")
            self.assertEqual(len(run["jobs"]), 2)
            # The connection is still good for requests, and no stale push gets in the way.
            self.assertEqual(c.run(run_id, jobs=False)["state"], "RUNNING")
            self.release(go)
            run = wait_run_ended(self, c, run_id, 30)
            self.assertEqual(run["state"], "COMPLETED")
            self.assertEqual([j["state"] for j in run["jobs"]], ["COMPLETED", "COMPLETED"])

    def test_leaving_watch_run_early_stops_the_pushes(self):
        path, go = self.held("left")
        with self.cluster.client() as c:
            from titan.sdk.pipeline import load_pipeline
            run_id = c.submit_dag(load_pipeline(path))["run_id"]
            for run in c.watch_run(run_id):
                if run["active"] and run["active"][0]["node"] == "slow":
                    break
            self.release(go)
            # Polled on `c` itself (not wait_run_ended, which would watch the run again and
            # clear what piled up): any push still coming arrives meanwhile.
            self.wait_for(lambda: c.run(run_id, jobs=False)["state"] == "COMPLETED",
                          what=lambda: "the run to end; jobs not ended:\n"
                                       + jobs_not_ended(c))
            # The master stopped pushing when the loop was left: nothing piled up meanwhile.
            self.assertEqual(c._run_pushes, [])
