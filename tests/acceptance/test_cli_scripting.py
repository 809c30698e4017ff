"""Scripting with the real `titan` command (issue 13, C14): --json on every listing, tables
one line per row, --version, bad arguments refused before anything is created, a worker with
a wrong token ends non-zero, a client at a port that is no master fails fast and says so,
--cwd on a missing directory, a request over the frame limit."""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time

from twisted.trial.unittest import SynchronousTestCase

from tests.acceptance.helpers import ClusterTestCase, wait_for
from titan.testing.cluster import BIN, free_port


def titan_at(address: str, *args: str, timeout: float = 30) -> subprocess.CompletedProcess:
    env = dict(os.environ, TITAN_TOKEN="whatever")
    return subprocess.run([os.path.join(BIN, "titan"), "--master", address, *args], env=env,
                          capture_output=True, text=True, timeout=timeout)


class ListingTests(ClusterTestCase):
    workers = 1

    def test_json_on_every_listing(self) -> None:
        job = self.titan("submit", "--wait", "--", "true").stdout.decode().split()[0]
        run = self.titan("run", os.path.join(os.path.dirname(__file__), "..", "..", "etc",
                                             "pipelines", "etl.yaml"), "--wait")
        self.assertEqual(run.returncode, 0, run.stderr)
        run_id = run.stdout.decode().split()[0]
        expected = {
            ("jobs",): {"job_id", "state", "command", "worker", "exit_code", "reason"},
            ("workers",): {"worker_id", "name", "host", "tags", "slots", "busy", "state"},
            ("runs",): {"run_id", "name", "state", "counts", "total"},
            ("plugins",): {"kind", "name", "origin", "description"},
            ("service", "list"): set(),
            ("schedules",): set(),
        }
        for argv, keys in expected.items():
            result = self.titan(*argv, "--json")
            self.assertEqual(result.returncode, 0, (argv, result.stderr))
            listing = json.loads(result.stdout)
            self.assertIsInstance(listing, list, argv)
            if keys:
                self.assertTrue(listing, argv)
                self.assertLessEqual(keys, set(listing[0]), argv)
        status = json.loads(self.titan("status", job, "--json").stdout)
        self.assertEqual((status["job_id"], status["state"]), (job, "COMPLETED"))
        run_status = json.loads(self.titan("status", run_id, "--json").stdout)
        self.assertEqual(run_status["run_id"], run_id)

    def test_table_rows_stay_on_one_line(self) -> None:
        multi = self.titan("submit", "--", "python3", "-c", "import sys\nprint('two lines')")
        long = self.titan("submit", "--", "echo", "y" * 200)
        ids = [multi.stdout.decode().split()[0], long.stdout.decode().split()[0]]
        table = self.titan("jobs", "--limit", "500").stdout.decode("utf-8").splitlines()
        rows = {line.split()[0]: line for line in table[1:]}
        self.assertIn("import sys⏎print('two lines')", rows[ids[0]])
        self.assertTrue(rows[ids[1]].endswith("…"), rows[ids[1]])
        self.assertLess(len(rows[ids[1]].split("echo ", 1)[1]), 60)
        self.assertEqual(len(table), len(rows) + 1)  # no row spilled onto a second line

    def test_version(self) -> None:
        from titan import __version__
        result = self.titan("--version")
        self.assertEqual((result.returncode, result.stdout.decode().strip()),
                         (0, f"titan {__version__}"))

    def test_bogus_state(self) -> None:
        result = self.titan("jobs", "--state", "BOGUS")
        self.assertNotEqual(result.returncode, 0)
        self.assertIn(b"no job state 'BOGUS': the states are PENDING, RUNNING", result.stderr)

    def test_invalid_numbers_create_nothing(self) -> None:
        before = len(json.loads(self.titan("jobs", "--json", "--limit", "100000").stdout))
        for argv in (["--timeout", "-5"], ["--timeout", "nan"], ["--retries", "-1"],
                     ["--delay", "-1"]):
            result = self.titan("submit", *argv, "--", "true")
            self.assertEqual(result.returncode, 2, argv)
            self.assertIn(f"argument {argv[0]}".encode(), result.stderr)
        after = len(json.loads(self.titan("jobs", "--json", "--limit", "100000").stdout))
        self.assertEqual(before, after)

    def test_cwd_missing_is_an_error_not_a_mkdir(self) -> None:
        missing = os.path.join(self.base_dir, "no", "such", "dir")
        result = self.titan("submit", "--wait", "--cwd", missing, "--", "pwd")
        self.assertEqual(result.returncode, 1)
        self.assertIn(f"cwd {missing}: no such directory on worker w1".encode(), result.stderr)
        self.assertFalse(os.path.exists(os.path.join(self.base_dir, "no")))

    def test_cwd_that_exists(self) -> None:
        result = self.titan("submit", "--wait", "--cwd", self.base_dir, "--", "pwd")
        self.assertEqual(result.returncode, 0, result.stderr)
        job = result.stdout.decode().split()[0]
        self.assertEqual(self.titan("logs", job).stdout.decode().strip(), self.base_dir)


class WrongTokenWorkerTests(ClusterTestCase):
    workers = 0

    def test_worker_refused_exits_non_zero_and_says_why(self) -> None:
        child = self.cluster._spawn("intruder", [
            "titan-worker", "--config", self.cluster.config_path,
            "--master", self.cluster.address, "--token", "not-the-token",
            "--data-dir", os.path.join(self.base_dir, "intruder")])
        status = child.proc.wait(30)
        self.assertNotEqual(status, 0)
        with open(child.log_file) as f:
            log = f.read()
        self.assertIn("refused the cluster token (wrong cluster token); stopping", log)
        self.assertNotIn("reconnecting", log.split("refused the cluster token", 1)[1])


class FrameLimitTests(ClusterTestCase):
    workers = 0
    cluster_options = {"master_extra": "  max_frame_bytes: 65536\n"}

    def test_request_over_the_limit_says_so(self) -> None:
        result = self.titan("submit", "--env", "BIG=" + "x" * 100_000, "--", "true")
        self.assertEqual(result.returncode, 1)
        err = result.stderr.decode()
        self.assertIn("is over the 65536-byte limit", err)
        self.assertNotIn("Broken pipe", err)

    def test_over_the_protocol_limit_is_refused_before_sending(self) -> None:
        from titan.errors import TitanError
        with self.cluster.client() as client:
            with self.assertRaises(TitanError) as caught:
                client.store_put("big", b"x" * (16 * 1024 * 1024 + 1))
            self.assertIn("over the protocol's frame limit of 16777216 bytes",
                          str(caught.exception))
            self.assertEqual(client.workers(), [])  # the connection is still good


class NotAMasterTests(SynchronousTestCase):
    """A client pointed at the wrong port fails within seconds and says what it found."""

    def wait_for(self, predicate, timeout: float, what: str):
        return wait_for(self, predicate, timeout, what)

    def check_fast_failure(self, port: int, *expected: str) -> None:
        started = time.monotonic()
        result = titan_at(f"127.0.0.1:{port}", "jobs", timeout=90)
        took = time.monotonic() - started
        self.assertEqual(result.returncode, 1, result.stderr)
        # The client gives up within 5 s; the bound leaves room for the CLI's start on a
        # loaded machine, and is half the 60 s request timeout it must not wait out.
        self.assertLess(took, 30.0)
        for text in expected:
            self.assertIn(text, result.stderr)

    def test_nobody_listens(self) -> None:
        self.check_fast_failure(free_port(), "connection refused", "nothing listens there")

    def test_an_http_server(self) -> None:
        port = free_port()
        server = subprocess.Popen([sys.executable, "-m", "http.server", str(port),
                                   "--bind", "127.0.0.1"], stdout=subprocess.DEVNULL,
                                  stderr=subprocess.DEVNULL)
        self.addCleanup(server.wait)
        self.addCleanup(server.terminate)
        self.wait_for(lambda: _accepts(port), 20, "the HTTP server to listen")
        self.check_fast_failure(port, f"127.0.0.1:{port} is not a Titan master")

    def test_a_server_that_answers_in_another_protocol(self) -> None:
        listener = socket.create_server(("127.0.0.1", 0))
        self.addCleanup(listener.close)

        def answer():
            conn, _ = listener.accept()
            with conn:
                conn.recv(1024)
                conn.sendall(b"HTTP/1.0 400 Bad Request\r\n\r\n")
        threading.Thread(target=answer, daemon=True).start()
        self.check_fast_failure(listener.getsockname()[1], "is not a Titan master",
                                "HTTP/1.0 400 Bad Request", "not a TITAN_PROTO frame")


def _accepts(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
        return True
    except OSError:
        return False
