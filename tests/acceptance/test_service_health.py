"""Why a service is not up, where the user looks (issue 13, C16): `titan service deploy`'s
message and `titan service list` name the failing health check; `$PORT` in a service's
command is its port (no shell runs the command)."""
from __future__ import annotations

import json
import sys

from tests.acceptance.helpers import ClusterTestCase


class ServiceHealthTests(ClusterTestCase):
    workers = 1
    cluster_options = {"worker_extra": "  health_interval: 0.2\n  health_grace: 1.0\n"}

    def tearDown(self) -> None:
        for svc in json.loads(self.titan("service", "list", "--json").stdout):
            if svc["state"] not in ("STOPPED", "FAILED", "EXITED"):
                self.titan("service", "stop", svc["name"])

    def listed(self, name: str) -> dict:
        services = json.loads(self.titan("service", "list", "--json").stdout)
        return next(s for s in services if s["name"] == name)

    def test_http_check_answered_404(self) -> None:
        result = self.titan("service", "deploy", "web404", "--port", "auto", "--health",
                            "http:/healthz", "--timeout", "3", "--", sys.executable, "-m",
                            "http.server", "{port}", "--bind", "127.0.0.1")
        self.assertEqual(result.returncode, 1)
        err = result.stderr.decode()
        self.assertIn("titan: web404 STARTING: health: GET /healthz → 404", err)
        self.assertEqual(self.listed("web404")["health_error"], "health: GET /healthz → 404")
        listing = self.titan("service", "list").stdout.decode()
        self.assertIn("web404: health: GET /healthz → 404", listing)

    def test_tcp_check_refused(self) -> None:
        result = self.titan("service", "deploy", "mute", "--port", "auto", "--health", "tcp",
                            "--timeout", "3", "--", "sleep", "600")
        self.assertEqual(result.returncode, 1)
        self.assertIn("titan: mute STARTING: health: connection refused",
                      result.stderr.decode())
        self.assertIn("mute: health: connection refused",
                      self.titan("service", "list").stdout.decode())

    def test_dollar_port_is_the_port(self) -> None:
        # The README's example, as a user types it: '$PORT' quoted from the local shell.
        result = self.titan("service", "deploy", "api", "--port", "auto", "--health", "http:/",
                            "--", sys.executable, "-m", "http.server", "$PORT",
                            "--bind", "127.0.0.1")
        self.assertEqual(result.returncode, 0, result.stderr)
        svc = self.listed("api")
        self.assertEqual((svc["state"], svc["healthy"], svc["health_error"]),
                         ("RUNNING", True, None))
        self.assertIn(" at ", result.stdout.decode())
        self.assertIn(f":{svc['port']} ", result.stdout.decode())
