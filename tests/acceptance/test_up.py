"""`titan up`: one command starts a working cluster; Ctrl-C stops all of it."""
from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import tempfile
import time

from twisted.trial.unittest import SynchronousTestCase

from titan.testing.cluster import BIN
from tests.acceptance.helpers import pid_alive


def _children(pid: int) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    if int(f.read().split(") ", 1)[1].split()[1]) == pid:
                        found.append(int(entry))
            except (OSError, ValueError, IndexError):
                pass
    return found


class UpTests(SynchronousTestCase):
    def test_up_runs_jobs_and_stops_everything_on_ctrl_c(self):
        home = tempfile.mkdtemp(prefix="titan-up-")
        env = {k: v for k, v in os.environ.items() if not k.startswith("TITAN_")}
        up = subprocess.Popen([os.path.join(BIN, "titan"), "up", "--workers", "2", "--port", "0",
                               "--data-dir", home], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, env=env)
        self.addCleanup(lambda: up.poll() is None and up.kill())
        banner = b""
        deadline = time.monotonic() + 30
        while b"Ctrl-C stops everything." not in banner and time.monotonic() < deadline:
            line = up.stdout.readline()
            if not line:
                break
            banner += line
        text = banner.decode()
        self.assertIn("Titan is up.", text, up.stderr.read1().decode() if up.poll() else text)
        port = int(re.search(r"master\s+127\.0\.0\.1:(\d+)", text).group(1))
        self.assertIn(f"export TITAN_TOKEN=$(cat {home}/master/token)", text)
        children = _children(up.pid)
        self.assertEqual(len(children), 4)  # store, master and two workers
        store_port = int(re.search(r"store\s+127\.0\.0\.1:(\d+)", text).group(1))
        # The dashboard: a one-time login link (never the token) that opens a session once.
        link = re.search(r"dashboard\s+http://127\.0\.0\.1:(\d+)(/login\?code=\S+)", text)
        token = open(f"{home}/master/token").read().strip()
        self.assertNotIn(token, link.group(0))
        import http.client
        for expected in (303, 401):
            conn = http.client.HTTPConnection("127.0.0.1", int(link.group(1)), timeout=10)
            conn.request("GET", link.group(2))
            reply = conn.getresponse()
            self.assertEqual(reply.status, expected)
            self.assertEqual(bool(reply.getheader("set-cookie")), expected == 303)
            conn.close()

        # A client that only knows the data dir finds the token there.
        client_env = dict(env, TITAN_PORT=str(port), TITAN_DATA_DIR=home)
        result = subprocess.run([os.path.join(BIN, "titan"), "submit", "--wait", "--", "sh",
                                 "-c", "echo from-up"], env=client_env, capture_output=True,
                                timeout=60)
        self.assertEqual(result.returncode, 0, result.stderr)
        job_id = result.stdout.decode().strip()
        logs = subprocess.run([os.path.join(BIN, "titan"), "logs", job_id], env=client_env,
                              capture_output=True, timeout=60)
        self.assertEqual(logs.stdout, b"from-up\n")
        workers = subprocess.run([os.path.join(BIN, "titan"), "workers"], env=client_env,
                                 capture_output=True, timeout=60)
        self.assertEqual(workers.stdout.decode().count(" ALIVE "), 2)

        # A job writes to the store through the master; redis-cli reads it from the store.
        from titan.sdk.client import Client
        with Client(master=f"127.0.0.1:{port}", token=open(f"{home}/master/token").read().strip()) as c:
            job = c.submit([sys.executable, "-c",
                            "from titan.sdk import Client; Client().store_put('k', 'from a job')"])
            self.assertEqual(c.wait(job, timeout=60)["state"], "COMPLETED", c.logs(job))
            self.assertEqual(c.store_get("k"), b"from a job")
            # ...but not a gate's key: a job never decides a gate (issue 15, 2).
            job = c.submit([sys.executable, "-c",
                            "from titan.sdk import Client\n"
                            "Client().store_put('titan:hitl:status:g', 'APPROVED')"])
            self.assertEqual(c.wait(job, timeout=60)["state"], "FAILED")
            self.assertIn(b"a job's own token may not KV_SET 'titan:hitl:status:g'", c.logs(job))
            self.assertIsNone(c.store_get("titan:hitl:status:g"))
        # The store has a password (issue 15, 2): generated, kept 0600, given to the store
        # and the master by environment (not on their command lines), not to the workers.
        password_file = os.path.join(home, "store", "password")
        self.assertEqual(os.stat(password_file).st_mode & 0o777, 0o600)
        with open(password_file) as f:
            password = f.read().strip()
        self.assertGreaterEqual(len(password), 24)
        self.assertIn(f"REDISCLI_AUTH=$(cat {password_file}) redis-cli -p {store_port}", text)
        cli = subprocess.run(["redis-cli", "-p", str(store_port), "GET", "k"],
                             capture_output=True, timeout=30)
        self.assertIn(b"NOAUTH", cli.stdout + cli.stderr)
        cli = subprocess.run(["redis-cli", "-p", str(store_port), "GET", "k"],
                             capture_output=True, timeout=30,
                             env=dict(os.environ, REDISCLI_AUTH=password))
        self.assertEqual(cli.stdout, b"from a job\n")
        for pid in children:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                cmdline = f.read()
            with open(f"/proc/{pid}/environ", "rb") as f:
                environ = f.read().split(b"\0")
            self.assertNotIn(password.encode(), cmdline)
            if b"titan-worker" in cmdline:
                self.assertFalse([e for e in environ if e.startswith(b"TITAN_STORE_PASSWORD=")],
                                 cmdline)

        up.send_signal(signal.SIGINT)
        self.assertEqual(up.wait(30), 0)
        for pid in children:
            self.assertFalse(pid_alive(pid), f"child {pid} outlived titan up")
