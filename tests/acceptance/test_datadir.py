"""A data dir belongs to one process (issue 13, A2), and a relative one works (A4)."""
from __future__ import annotations

import os
import re
import subprocess
import tempfile
import textwrap
import time

from twisted.trial.unittest import SynchronousTestCase

from titan.testing.cluster import BIN
from tests.acceptance.helpers import ClusterTestCase


def _exit_and_log(child, timeout: float = 30) -> tuple[int, str]:
    """Its exit status and its log (twistd with --logfile writes its stderr there)."""
    code = child.proc.wait(timeout)
    with open(child.log_file, errors="replace") as f:
        return code, f.read()


class SharedDataDirTests(ClusterTestCase):
    workers = 1

    def files(self, folder: str) -> dict:
        """Every file under `folder` with its size and modification time."""
        found = {}
        for root, _, names in os.walk(folder):
            for name in names:
                st = os.stat(os.path.join(root, name))
                found[os.path.join(root, name)] = (st.st_size, st.st_mtime_ns)
        return found

    def test_a_second_master_on_the_same_data_dir_is_refused(self):
        master_dir = os.path.join(self.base_dir, "master")
        first = self.cluster.master
        with open(os.path.join(master_dir, "master.port")) as f:
            port_file = f.read()
        event_log = self.files(os.path.join(master_dir, "log"))
        second = self.cluster._spawn("master-2", [
            "titan-master", "--config", self.cluster.config_path,
            "--listen", "tcp:0:interface=127.0.0.1", "--data-dir", master_dir])
        code, log = _exit_and_log(second)
        self.assertNotEqual(code, 0)
        self.assertIn(f"[stderr#error] titan-master: cannot start: {master_dir} is in use by "
                      f"titan-master (pid {first.pid})", log)
        # It touched nothing: the event log, the port file.
        self.assertEqual(self.files(os.path.join(master_dir, "log")), event_log)
        with open(os.path.join(master_dir, "master.port")) as f:
            self.assertEqual(f.read(), port_file)
        # The first one still serves.
        self.assertTrue(first.alive())
        result = self.titan("submit", "--wait", "--", "echo", "still here")
        self.assertEqual(result.returncode, 0, result.stderr)
        self.assertEqual(self.titan("logs", result.stdout.decode().strip()).stdout,
                         b"still here\n")

    def test_a_second_worker_on_the_same_data_dir_is_refused(self):
        first = self.cluster.workers["w1"]
        second = self.cluster._spawn("w1-again", [
            "titan-worker", "--config", self.cluster.config_path,
            "--master", self.cluster.address, "--name", "w1-again",
            "--data-dir", os.path.join(self.base_dir, "w1")])
        code, log = _exit_and_log(second)
        self.assertNotEqual(code, 0)
        self.assertIn(f"[stderr#error] titan-worker: cannot start: {self.base_dir}/w1 is in "
                      f"use by titan-worker (pid {first.pid})", log)
        with self.cluster.client() as c:
            self.assertEqual([w["name"] for w in c.workers() if w["state"] == "ALIVE"], ["w1"])
        result = self.titan("submit", "--wait", "--", "true")
        self.assertEqual(result.returncode, 0, result.stderr)

    def test_titan_up_on_a_running_masters_dir_is_refused(self):
        master_dir = os.path.join(self.base_dir, "master")
        before = self.files(master_dir)
        env = {k: v for k, v in os.environ.items() if not k.startswith("TITAN_")}
        up = subprocess.run([os.path.join(BIN, "titan"), "up", "--port", "0", "--data-dir",
                             self.base_dir], env=env, capture_output=True, timeout=30)
        self.assertEqual(up.returncode, 1)
        self.assertIn(f"titan: up: {master_dir} is in use by titan-master "
                      f"(pid {self.cluster.master.pid})", up.stderr.decode())
        self.assertIn(os.path.join(master_dir, "master.port"), before)
        self.assertEqual(self.files(master_dir), before)
        self.assertFalse(os.path.exists(os.path.join(self.base_dir, "logs")))
        self.assertEqual(self.titan("submit", "--wait", "--", "true").returncode, 0)


class SecondUpTests(SynchronousTestCase):
    def test_a_second_titan_up_on_the_same_dir_is_refused_and_touches_nothing(self):
        home = tempfile.mkdtemp(prefix="titan-up-twice-")
        env = {k: v for k, v in os.environ.items() if not k.startswith("TITAN_")}
        titan = os.path.join(BIN, "titan")
        first = subprocess.Popen([titan, "up", "--port", "0", "--workers", "1",
                                  "--data-dir", home], env=env, stdout=subprocess.PIPE,
                                 stderr=subprocess.PIPE)
        self.addCleanup(lambda: first.poll() is None and (first.terminate(), first.wait(30)))
        banner = b""
        deadline = time.monotonic() + 30
        while b"Ctrl-C stops everything." not in banner and time.monotonic() < deadline:
            line = first.stdout.readline()
            if not line:
                break
            banner += line
        text = banner.decode()
        self.assertIn("Titan is up.", text)
        port = int(re.search(r"master\s+127\.0\.0\.1:(\d+)", text).group(1))
        port_files = [os.path.join(home, "master", "master.port"),
                      os.path.join(home, "store", "store.port")]
        before = {}
        for path in port_files:
            with open(path) as f:
                before[path] = f.read()

        second = subprocess.run([titan, "up", "--port", "0", "--workers", "1",
                                 "--data-dir", home], env=env, capture_output=True,
                                timeout=30)
        self.assertEqual(second.returncode, 1)
        self.assertIn(f"titan: up: {home} is in use by titan-up (pid {first.pid})",
                      second.stderr.decode())
        for path in port_files:
            with open(path) as f:
                self.assertEqual(f.read(), before[path], path)
        client_env = dict(env, TITAN_PORT=str(port), TITAN_DATA_DIR=home)
        result = subprocess.run([titan, "submit", "--wait", "--", "echo", "first cluster"],
                                env=client_env, capture_output=True, timeout=60)
        self.assertEqual(result.returncode, 0, result.stderr)
        self.assertIsNone(first.poll())


class RelativeDataDirTests(ClusterTestCase):
    workers = 0

    def test_a_worker_with_a_relative_data_dir_runs_script_jobs(self):
        # cwd is the cluster's base dir (Cluster._spawn); the data dir is relative to it.
        worker = self.cluster._spawn("rel", [
            "titan-worker", "--config", self.cluster.config_path,
            "--master", self.cluster.address, "--name", "rel", "--data-dir", "rel-data"])
        self.cluster.workers["rel"] = worker
        self.cluster.wait_for_workers(1)
        folder = os.path.join(self.base_dir, "scripts-pipeline")
        os.makedirs(folder)
        files = {"hello.py": "import sys\nprint('py', *sys.argv[1:])\n",
                 "hello.sh": "echo sh \"$@\"\n",
                 "pipeline.yaml": textwrap.dedent("""\
                     name: relative
                     jobs:
                       - id: py
                         file: hello.py
                         args: one two
                       - id: sh
                         file: hello.sh
                         args: three
                         depends_on: [py]
                     """)}
        for name, text in files.items():
            with open(os.path.join(folder, name), "w") as f:
                f.write(text)
        result = self.titan("run", os.path.join(folder, "pipeline.yaml"), "--wait")
        self.assertEqual(result.returncode, 0, result.stdout + result.stderr)
        run_id = result.stdout.decode().splitlines()[0]
        self.assertEqual(self.titan("logs", f"{run_id}/py").stdout, b"py one two\n")
        self.assertEqual(self.titan("logs", f"{run_id}/sh").stdout, b"sh three\n")
        # Its files are where the relative path pointed when it started.
        self.assertTrue(os.path.exists(os.path.join(self.base_dir, "rel-data", "LOCK")))
