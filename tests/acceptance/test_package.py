"""`titan package`: the bundles run on a machine that has nothing but a python3.

The worker bundle, copied out of the checkout, is started by its start script with the
plain interpreter this venv was made from (no Twisted, no PYTHONPATH, no VIRTUAL_ENV, a
HOME of its own) against a live master of the checkout, and runs a job; the master
bundle starts the same way and answers `titan status`.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile

from titan.testing.cluster import BIN
from titan.testing.processes import die_with_parent, read_port, tail
from tests.acceptance.helpers import ClusterTestCase

CHECKOUT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
# The interpreter the venv was made from: no Titan, no Twisted (checked below).
PLAIN_PYTHON = getattr(sys, "_base_executable", None) or sys.executable


def plain_env(home: str) -> dict:
    return {"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": home, "LANG": "C.UTF-8",
            "PYTHON": PLAIN_PYTHON}


class PackageTests(ClusterTestCase):
    workers = 0  # the only worker is the bundled one
    out: str = ""

    def setUp(self) -> None:
        super().setUp()
        self.assertNotEqual(subprocess.run([PLAIN_PYTHON, "-c", "import twisted"],
                                           env=plain_env(tempfile.gettempdir()),
                                           capture_output=True).returncode, 0,
                            f"{PLAIN_PYTHON} imports Twisted: it cannot show that a "
                            f"bundle needs nothing else")
        cls = type(self)
        if not cls.out:  # built once per class (and process)
            out = tempfile.mkdtemp(prefix="titan-package-")
            built = subprocess.run([os.path.join(BIN, "titan"), "package", "--out", out],
                                   capture_output=True, timeout=300, cwd=CHECKOUT)
            self.assertEqual(built.returncode, 0, built.stderr.decode())
            cls.out = out
        self.assertEqual(sorted(os.listdir(self.out)),
                         ["master.yaml", "start-master.sh", "start-worker.sh",
                          "titan-master.pyz", "titan-worker.pyz", "worker.yaml"])

    def install(self, kind: str) -> str:
        """The bundle, its start script and config, copied to a directory of their own
        outside the checkout (as onto another machine)."""
        there = tempfile.mkdtemp(prefix=f"titan-{kind}-host-")
        self.assertFalse(there.startswith(CHECKOUT))
        for name in (f"titan-{kind}.pyz", f"start-{kind}.sh", f"{kind}.yaml"):
            shutil.copy2(os.path.join(self.out, name), there)
        os.makedirs(os.path.join(there, "home"))
        return there

    def start(self, there: str, kind: str, *args: str, env: dict) -> subprocess.Popen:
        log = open(os.path.join(there, f"{kind}.log"), "wb")
        self.addCleanup(log.close)
        proc = subprocess.Popen(["sh", f"./start-{kind}.sh", *args], cwd=there, env=env,
                                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                preexec_fn=die_with_parent)

        def stop() -> None:
            if proc.poll() is None:
                proc.terminate()
                proc.wait(15)
        self.addCleanup(stop)
        return proc

    def test_worker_bundle_runs_a_job_with_a_plain_python(self):
        there = self.install("worker")
        token = os.path.join(there, "token")
        with open(token, "w") as f:
            f.write(self.cluster.token + "\n")
        os.chmod(token, 0o600)
        worker = self.start(there, "worker", "--master", self.cluster.address,
                            "--name", "bundled", "--data-dir", os.path.join(there, "data"),
                            env=plain_env(os.path.join(there, "home")))
        log = os.path.join(there, "worker.log")

        def joined():
            self.assertIsNone(worker.poll(), f"the worker bundle exited:\n{tail(log)}")
            with self.cluster.client() as c:
                return [w for w in c.workers() if w["name"] == "bundled" and
                        w["state"] == "ALIVE"]
        self.wait_for(joined, 60, what=lambda: f"the bundled worker to join:\n{tail(log)}")

        # Its jobs' Python finds the titan SDK in the bundle (shiv's PYTHONPATH).
        submitted = self.titan("submit", "--wait", "--", "sh", "-c",
                               'echo from the bundle; "$PYTHON" -c '
                               '"import titan.sdk; print(titan.sdk.__file__)"')
        self.assertEqual(submitted.returncode, 0, submitted.stderr.decode())
        job_id = submitted.stdout.decode().split()[0]
        status = self.titan("status", job_id).stdout.decode()
        self.assertIn("COMPLETED", status)
        self.assertIn("bundled", status)
        output = self.titan("logs", job_id).stdout.decode().splitlines()
        self.assertEqual(output[0], "from the bundle")
        self.assertTrue(output[1].startswith(os.path.join(there, ".shiv", "titan-worker.pyz_")),
                        output)

    def test_master_bundle_starts_with_a_plain_python(self):
        there = self.install("master")
        data = os.path.join(there, "data")
        env = dict(plain_env(os.path.join(there, "home")), TITAN_TOKEN="bundle-test-token-1")
        master = self.start(there, "master", "--listen", "tcp:0:interface=127.0.0.1",
                            "--http", "tcp:0:interface=127.0.0.1", "--data-dir", data, env=env)
        port = read_port(data, master, 60)
        self.assertIsNotNone(port, tail(os.path.join(there, "master.log")))
        # Its own `titan` command, from the bundle too.
        status = subprocess.run(["sh", "-c", '"$PYTHON" titan-master.pyz titan --master '
                                 f'127.0.0.1:{port} status'],
                                cwd=there, env=dict(env, SHIV_ROOT=os.path.join(there, ".shiv")),
                                capture_output=True, timeout=60)
        self.assertEqual(status.returncode, 0, status.stderr.decode())
        self.assertEqual(status.stdout.decode().splitlines()[0], "UP")
        # It starts a local worker from its own bundle (there is no twistd on this path),
        # and a job runs there.
        shiv = dict(env, SHIV_ROOT=os.path.join(there, ".shiv"))

        def titan(*args: str) -> subprocess.CompletedProcess:
            return subprocess.run(["sh", "-c", '"$PYTHON" titan-master.pyz titan "$@"', "titan",
                                   "--master", f"127.0.0.1:{port}", *args],
                                  cwd=there, env=shiv, capture_output=True, timeout=60)
        started = titan("workers", "start", "--name", "local-1")
        self.assertEqual(started.returncode, 0, started.stderr.decode())
        ran = titan("submit", "--wait", "--", "echo", "on the bundled master's worker")
        self.assertEqual(ran.returncode, 0, ran.stderr.decode() + tail(os.path.join(
            there, "master.log")))
        status = titan("status", ran.stdout.decode().split()[0]).stdout.decode()
        self.assertIn("COMPLETED", status)
        self.assertIn("local-1", status)
