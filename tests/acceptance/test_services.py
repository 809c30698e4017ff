"""Long-running services with real processes: ports, health, restarts, crash loops, stops."""
from __future__ import annotations

import json
import os
import signal
import socket
import sys
import textwrap
import time
import urllib.request

from tests.acceptance.helpers import (ClusterTestCase, pid_alive, read_pid, wait_ended,
                                      wait_run_ended)

PY = sys.executable
SERVICE_CONFIG = ("  restart_backoff_base: 0.2\n  restart_backoff_cap: 1\n"
                  "  crash_loop_restarts: 3\n  crash_loop_window: 30\n"
                  "  health_interval: 0.3\n  health_grace: 5\n")


def listening(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


class ServiceTests(ClusterTestCase):
    workers = 1
    slots = 4
    cluster_options = {"fixed_port": True, "worker_extra": SERVICE_CONFIG}

    def services(self) -> dict:
        out = self.titan("service", "list", "--json")
        self.assertEqual(out.returncode, 0, out.stderr)
        return {s["name"]: s for s in json.loads(out.stdout)}

    def starts(self, name: str) -> int:
        """How many times the service's command has started (it counts itself)."""
        try:
            with open(os.path.join(self.base_dir, f"{name}.starts")) as f:
                return len(f.read().splitlines())
        except FileNotFoundError:
            return 0

    def counted(self, name: str, script: str) -> list[str]:
        """`script` run by a shell that first notes one more start of the service."""
        return ["sh", "-c", f"echo started >> {os.path.join(self.base_dir, name)}.starts; "
                            + script]

    def get(self, port: int, path: str = "/") -> int:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as r:
            return r.status

    def test_http_service_on_an_auto_port_restarts_after_kill_9_and_stops_clean(self):
        marker = os.path.join(self.base_dir, "web-child.pid")
        result = self.titan("service", "deploy", "web", "--port", "auto", "--health", "http:/",
                            "--", *self.counted("web", f"sleep 300 & echo $! > {marker}; "
                                                      f"exec {PY} -m http.server $PORT"))
        self.assertEqual(result.returncode, 0, result.stderr)
        svc = self.services()["web"]
        self.assertRegex(result.stdout.decode().strip(),
                         rf"^web RUNNING on w1 at \S+:{svc['port']} \(pid {svc['pid']}\)$")
        self.assertTrue(20000 <= svc["port"] <= 29999)
        self.assertEqual(self.get(svc["port"]), 200)
        listing = self.titan("service", "list").stdout.decode().splitlines()
        self.assertEqual(listing[0].split(), ["NAME", "WORKER", "ADDRESS", "STATE", "RESTARTS",
                                              "UPTIME", "PID"])
        [line] = [l for l in listing if l.startswith("web ")]
        self.assertRegex(line, rf"^web\s+w1\s+\S+:{svc['port']}\s+RUNNING\s+0\s+\d+s\s+"
                                     rf"{svc['pid']}$")

        os.kill(svc["pid"], signal.SIGKILL)
        again = self.wait_for(lambda: (s := self.services()["web"])["restarts"] >= 1
                              and s["state"] == "RUNNING" and s, what="the restart")
        self.assertNotEqual(again["pid"], svc["pid"])
        # Killed once, started again once.
        self.assertEqual((again["restarts"], self.starts("web")), (1, 2))
        self.assertEqual(again["port"], svc["port"])
        self.assertEqual(self.get(again["port"]), 200)

        child = read_pid(marker)
        stop = self.titan("service", "stop", "web")
        self.assertEqual(stop.stdout.decode().strip(), "web STOPPED")
        self.wait_for(lambda: not listening(svc["port"]), what="the port to close")
        self.wait_for(lambda: not pid_alive(child), what="the service's child to die")
        self.assertFalse(pid_alive(again["pid"]))
        self.assertEqual(self.services()["web"]["state"], "STOPPED")
        logs = self.titan("service", "logs", "web").stdout.decode()
        self.assertIn('"GET / HTTP/1.1" 200', logs)

    def test_a_crash_loop_ends_failed_with_its_last_lines(self):
        result = self.titan("service", "deploy", "crashy", "--restart", "always", "--", "sh",
                            "-c", "echo booting; echo 'fatal: no config' >&2; exit 2")
        self.wait_for(lambda: self.services()["crashy"]["state"] == "FAILED", timeout=30,
                      what="the crash loop to be called")
        svc = self.services()["crashy"]
        self.assertEqual(svc["restarts"], 3)
        self.assertIn("crash loop: 3 restarts in 30s (last: exit 2)", svc["reason"])
        self.assertIn("fatal: no config", svc["reason"])
        listing = self.titan("service", "list").stdout.decode()
        self.assertIn("crashy: crash loop", listing)
        del result

    def test_a_busy_fixed_port_fails_fast(self):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            s.listen()
            port = s.getsockname()[1]
            start = time.monotonic()
            result = self.titan("service", "deploy", "clash", "--port", str(port), "--",
                                "sleep", "100")
            self.assertLess(time.monotonic() - start, 10)
        self.assertEqual(result.returncode, 1)
        self.assertEqual(result.stderr.decode().strip(),
                         f"titan: clash FAILED: port {port} is busy on this worker (w1)")
        job = self.services()["clash"]
        self.assertEqual(job["restarts"], 0)

    def test_a_master_restart_leaves_the_service_alone(self):
        result = self.titan("service", "deploy", "steady", "--port", "auto", "--health", "tcp",
                            "--", *self.counted("steady", f"exec {PY} -m http.server $PORT"))
        self.assertEqual(result.returncode, 0, result.stderr)
        before = self.services()["steady"]
        self.cluster.kill_master(signal.SIGKILL)
        self.cluster.start_master()
        self.cluster.wait_for_workers(1)
        after = self.wait_for(lambda: (s := self.services()["steady"])["state"] == "RUNNING"
                              and s["pid"] and s, what="the worker to report the service")
        self.assertEqual(after["pid"], before["pid"])
        self.assertEqual((after["restarts"], self.starts("steady")), (0, 1))  # not again
        self.assertEqual(self.get(after["port"]), 200)
        restart = self.titan("service", "restart", "steady")
        self.assertEqual(restart.returncode, 0, restart.stderr)
        moved = self.wait_for(lambda: (s := self.services()["steady"])["pid"] not in
                              (None, before["pid"]) and s["state"] == "RUNNING" and s,
                              what="the requested restart")
        self.assertEqual((moved["restarts"], self.starts("steady")), (1, 2))
        self.titan("service", "stop", "steady")

    def test_a_service_from_yaml_and_a_job_after_it(self):
        path = os.path.join(self.base_dir, "svc.yaml")
        with open(path, "w") as f:
            f.write(textwrap.dedent(f"""\
                name: with-service
                jobs:
                  - id: api
                    type: service
                    port: auto
                    health: tcp
                    command: [{PY}, -m, http.server, "{{port}}"]
                  - id: client
                    depends_on: api
                    command: "echo the api is up"
                """))
        run_id = self.titan("run", path).stdout.decode().strip()
        with self.cluster.client() as c:
            [job] = wait_ended(self, c, f"{run_id}/client", 30)
            self.assertEqual(job["state"], "COMPLETED")
            # The run ends with its jobs; the service its job needed stops with it.
            self.assertEqual(wait_run_ended(self, c, run_id, 30)["state"], "COMPLETED")
            api = c.job(f"{run_id}/api")
            self.assertEqual((api["state"], api["reason"]),
                             ("COMPLETED", "stopped: its run ended"))
