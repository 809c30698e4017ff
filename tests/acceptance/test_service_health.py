"""Why a service is not up, where the user looks (issue 13, C16): `titan service deploy`'s
message and `titan service list` name the failing health check; `$PORT` in a service's
command is its port (no shell runs the command)."""
from __future__ import annotations

import json
import os
import sys

from tests.acceptance.helpers import ClusterTestCase, pid_alive

# An HTTP service that answers 200 until the file named by its first argument appears; then
# it takes the file away (so the process that replaces it is well) and answers 503 for good.
SICKENS = """
import http.server, os, sys
flag, port = sys.argv[1], int(sys.argv[2])
sick = False
class Health(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        global sick
        if not sick and os.path.exists(flag):
            os.unlink(flag)
            sick = True
        self.send_response(503 if sick else 200)
        self.end_headers()
    def log_message(self, *args):
        pass
http.server.HTTPServer(("127.0.0.1", port), Health).serve_forever()
"""


class ServiceHealthTests(ClusterTestCase):
    workers = 1
    cluster_options = {"worker_extra": "  health_interval: 0.2\n  health_grace: 1.0\n"}

    def setUp(self) -> None:
        super().setUp()
        # A cleanup, not tearDown: trial runs cleanups first, and the class's cluster may
        # stop in one of them (after its last test); added last, this one runs before it.
        self.addCleanup(self.stop_services)

    def stop_services(self) -> None:
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

    def test_a_service_that_fails_its_health_check_is_restarted(self) -> None:
        folder = os.path.abspath(self.mktemp())
        os.makedirs(folder)
        flag = os.path.join(folder, "sick")
        result = self.titan("service", "deploy", "sickly", "--port", "auto", "--health",
                            "http:/", "--", sys.executable, "-c", SICKENS, flag, "{port}")
        self.assertEqual(result.returncode, 0, result.stderr)
        before = self.listed("sickly")
        self.assertEqual((before["state"], before["healthy"], before["restarts"]),
                         ("RUNNING", True, 0))
        self.assertTrue(pid_alive(before["pid"]))
        open(flag, "w").close()  # from now on its health check gets 503

        def restarted_and_up():
            svc = self.listed("sickly")
            return svc if svc["restarts"] >= 1 and svc["state"] == "RUNNING" \
                and svc["healthy"] else None
        # Three failed checks 0.2 s apart, then a restart after restart_backoff_base (1 s).
        after = self.wait_for(restarted_and_up, 30, "sickly to be restarted and up again")
        self.assertEqual(after["restarts"], 1)
        self.assertEqual(after["last_exit"], "unhealthy (health: GET / → 503)")
        self.assertNotEqual(after["pid"], before["pid"])
        self.assertTrue(pid_alive(after["pid"]))
        self.assertFalse(pid_alive(before["pid"]))
        self.assertEqual(after["port"], before["port"])
        listing = self.titan("service", "list").stdout.decode()
        self.assertRegex(listing, rf"sickly\s.*\sRUNNING\s+1\s+\S+\s+{after['pid']}\n")

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
