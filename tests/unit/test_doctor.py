"""`titan doctor`'s checks (titan/doctor.py), each with fakes for what it looks at."""
from __future__ import annotations

import io
import json
import os
import socket
import sys

from twisted.trial.unittest import SynchronousTestCase

from titan import __version__, doctor
from titan.doctor import FAIL, OK, WARN, Check
from titan.errors import RemoteError, TitanError
from titan.protocols.opcodes import Op
from titan.sdk.client import ConnectError

from tests.unit.test_master import MasterCase


class MachineTests(SynchronousTestCase):
    def test_python(self):
        self.assertEqual(doctor.check_python((3, 11, 7)).status, OK)
        old = doctor.check_python((3, 9, 1))
        self.assertEqual((old.status, old.detail), (FAIL, "3.9.1: titan needs 3.10 or later"))

    def test_pinned_dependencies(self):
        requires = ["twisted==26.10.0", "attrs==26.1.0", "msgpack==1.2.4",
                    'hypothesis==6.1; extra == "test"']
        self.assertEqual(doctor.pinned(requires),
                         {"twisted": "26.10.0", "attrs": "26.1.0", "msgpack": "1.2.4"})
        versions = {"twisted": "26.10.0", "attrs": "26.1.0", "msgpack": "1.2.4"}
        twisted, titan = doctor.check_packages(requires, versions.get)
        self.assertEqual((twisted.status, titan.status), (OK, OK))
        self.assertEqual(titan.detail, f"{__version__}, 3 pinned dependencies as pinned")
        versions.update(twisted="25.5.0", msgpack=None)
        twisted, titan = doctor.check_packages(requires, versions.get)
        self.assertEqual((twisted.status, twisted.detail), (WARN, "25.5.0, titan pins 26.10.0"))
        self.assertEqual(titan.status, WARN)
        self.assertIn("msgpack missing (pinned 1.2.4)", titan.detail)
        self.assertIn("reinstall", titan.fix)

    def test_data_dir_and_token_file_modes(self):
        path = self.mktemp()
        [missing] = doctor.check_data_dir(path, "master data dir", token=True)
        self.assertEqual(missing.status, OK)
        self.assertIn("not made yet", missing.detail)
        os.mkdir(path, 0o700)
        os.chmod(path, 0o755)
        wide, token = doctor.check_data_dir(path, "master data dir", token=True)
        self.assertEqual((wide.status, wide.fix), (WARN, f"chmod 700 {os.path.abspath(path)}"))
        self.assertEqual(token.status, OK)  # none yet
        os.chmod(path, 0o700)
        with open(os.path.join(path, "token"), "w") as f:
            f.write("t\n")
        os.chmod(os.path.join(path, "token"), 0o644)
        good, token = doctor.check_data_dir(path, "master data dir", token=True)
        self.assertEqual((good.status, token.status), (OK, FAIL))
        self.assertIn("chmod 600", token.fix)
        os.chmod(os.path.join(path, "token"), 0o600)
        self.assertEqual(doctor.check_data_dir(path, "x", token=True)[1].status, OK)
        with open(os.path.join(path, "file"), "w"):
            pass
        [not_dir] = doctor.check_data_dir(os.path.join(path, "file"), "worker data dir")
        self.assertEqual(not_dir.status, FAIL)

    def test_endpoints(self):
        self.assertEqual(doctor.parse_endpoint("tcp:9090:interface=127.0.0.1"),
                         ("127.0.0.1", 9090))
        self.assertEqual(doctor.parse_endpoint("tcp:port=8080"), ("", 8080))
        self.assertEqual(doctor.parse_endpoint("ssl:443:privateKey=k.pem"), ("", 443))
        self.assertIsNone(doctor.parse_endpoint("unix:/tmp/sock"))
        self.assertIsNone(doctor.parse_endpoint("tcp:http"))

    def test_ports(self):
        free = doctor.check_port("master port", "master.listen", "tcp:9090", False,
                                 lambda host, port: None)
        self.assertEqual((free.status, free.detail), (OK, "*:9090 free"))
        busy = doctor.check_port("master port", "master.listen", "tcp:9090:interface=127.0.0.1",
                                 False, lambda host, port: "in use")
        self.assertEqual(busy.status, FAIL)
        self.assertIn("set master.listen to another port", busy.fix)
        ours = doctor.check_port("master port", "master.listen", "tcp:9090", True,
                                 lambda host, port: "in use")
        self.assertEqual((ours.status, ours.detail), (OK, "*:9090 in use by the master"))
        self.assertEqual(doctor.check_port("web port", "web.listen", "tcp:0", False).status, OK)

    def test_a_port_someone_listens_on_is_in_use(self):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            s.listen()
            port = s.getsockname()[1]
            self.assertEqual(doctor.port_in_use("127.0.0.1", port), "in use")
        self.assertIsNone(doctor.port_in_use("127.0.0.1", port))

    def test_cgroups(self):
        if not sys.platform.startswith("linux"):
            self.skipTest("cgroups are Linux's")

        def none():
            raise OSError("not in a cgroup v2 hierarchy")
        self.assertEqual(doctor.check_cgroups(none).status, WARN)
        path = self.mktemp()
        os.mkdir(path)
        # A folder made under a plain directory has no cgroup.kill: an old kernel's, say.
        old = doctor.check_cgroups(lambda: ("/", path))
        self.assertEqual(old.status, WARN)
        self.assertIn("cgroup.kill", old.detail)
        self.assertEqual(os.listdir(path), [])  # the probe is removed

        def refused(where):
            raise PermissionError(13, "Permission denied")
        denied = doctor.check_cgroups(lambda: ("/", path), refused)
        self.assertEqual(denied.status, WARN)
        self.assertIn("Delegate=yes", denied.fix)
        ok = doctor.check_cgroups(lambda: ("/", path), lambda where: True)
        self.assertEqual(ok.status, OK)
        self.assertIn(path, ok.detail)


class FakeClient:
    def __init__(self, fail=None, stats=None, workers=(), store=None, version=__version__):
        self.fail, self._stats, self._workers, self.store = fail, stats or {}, workers, store
        self.hello = {"server": "titan-master", "version": version}

    def stats(self):
        if self.fail is not None:
            raise self.fail
        return self._stats

    def workers(self):
        return list(self._workers)

    def store_get(self, key):
        if self.store is not None:
            raise self.store
        return None


def worker(name, offset=0.1, state="ALIVE"):
    return {"name": name, "state": state, "slots": 4, "clock_offset": offset}


class ClusterTests(SynchronousTestCase):
    def by_name(self, checks):
        return {c.name: c for c in checks}

    def test_a_master_that_does_not_answer_says_how_to_start_it(self):
        [check] = doctor.check_cluster(FakeClient(ConnectError(
            "cannot reach", "connection refused")), "127.0.0.1:9090", False)
        self.assertEqual((check.name, check.status), ("master", FAIL))
        self.assertEqual(check.detail, "127.0.0.1:9090: connection refused")
        self.assertIn("twistd -n titan-master", check.fix)

    def test_a_wrong_token(self):
        [check] = doctor.check_cluster(FakeClient(TitanError(
            "the master at 127.0.0.1:9090 refused this client: wrong cluster token")),
            "127.0.0.1:9090", False)
        self.assertEqual(check.status, FAIL)
        self.assertIn("token", check.fix)

    def test_all_well(self):
        checks = self.by_name(doctor.check_cluster(
            FakeClient(workers=[worker("w1"), worker("w2", -0.4)]), "h:1", False,
            web=lambda stats: Check("cluster", "web", OK, "up")))
        self.assertEqual({n: c.status for n, c in checks.items()},
                         {"master": OK, "version": OK, "store": OK, "web": OK, "workers": OK,
                          "clock w1": OK, "clock w2": OK})
        self.assertEqual(checks["workers"].detail, "2 connected, 8 slots")
        self.assertEqual(checks["clock w2"].detail, "0.400s behind the master's")

    def test_what_the_master_warns_of_and_a_config_waiting_for_a_restart(self):
        stats = {"warnings": ["storage unavailable: disk full"],
                 "config": {"source": "/etc/titan.yaml", "restart": ["master.listen"],
                            "last": {"ok": False, "error": "/etc/titan.yaml:3: bad"}}}
        checks = doctor.check_cluster(FakeClient(stats=stats, version="0.0.1"), "h:1", False)
        said = [(c.name, c.status, c.detail) for c in checks if c.status != OK]
        self.assertIn(("version", WARN, f"master 0.0.1, this titan {__version__}"), said)
        self.assertIn(("master says", WARN, "storage unavailable: disk full"), said)
        self.assertIn(("config", WARN, "/etc/titan.yaml: changed, applied at the next start: "
                                       "master.listen"), said)
        self.assertIn(("config", WARN, "the last reload was refused: /etc/titan.yaml:3: bad"),
                      said)
        self.assertIn(("workers", WARN, "no worker is connected: jobs wait"), said)

    def test_the_store(self):
        def store(error, configured=False):
            checks = doctor.check_cluster(FakeClient(store=error), "h:1", configured)
            return self.by_name(checks)["store"]
        self.assertEqual(store(RemoteError("no_store", "not configured")).status, OK)
        self.assertEqual(store(RemoteError("no_store", "not configured"), True).status, WARN)
        down = store(RemoteError("store_unavailable", "store unavailable: refused"))
        self.assertEqual(down.status, FAIL)
        self.assertIn("titan-store", down.fix)

    def test_clock_skew(self):
        self.assertEqual(doctor.check_skew(worker("w", 0.9)).status, OK)
        ahead = doctor.check_skew(worker("w", 5))
        self.assertEqual((ahead.status, ahead.detail), (WARN, "5.000s ahead of the master's"))
        self.assertIn("ntp", ahead.fix)
        self.assertEqual(doctor.check_skew(worker("w", -120)).status, FAIL)
        self.assertEqual(doctor.check_skew(worker("w", None)).status, WARN)

    def test_lost_workers_are_named(self):
        checks = self.by_name(doctor.check_workers([worker("w1"), worker("w2", state="DEAD")]))
        self.assertEqual((checks["workers lost"].status, checks["workers lost"].detail),
                         (WARN, "w2 (DEAD)"))
        self.assertNotIn("clock w2", checks)


class ReportTests(SynchronousTestCase):
    checks = [Check("machine", "python", OK, "3.11"),
              Check("machine", "cgroups", WARN, "none", "use systemd"),
              Check("cluster", "master", FAIL, "h:1: refused", "start it")]

    def run_with(self, checks, json_out=False):
        self.patch(doctor, "gather", lambda args: checks)
        out = io.StringIO()
        self.patch(sys, "stdout", out)

        class Args:
            json = json_out
        return doctor.run_doctor(Args()), out.getvalue()

    def test_text(self):
        status, text = self.run_with(self.checks)
        self.assertEqual(status, 1)
        self.assertEqual(text.splitlines(), [
            "this machine",
            "  ok    python   3.11",
            "  warn  cgroups  none",
            "                 → use systemd",
            "the cluster",
            "  fail  master   h:1: refused",
            "                 → start it",
            "1 failed, 1 warnings, 1 ok"])

    def test_json_and_the_exit_status(self):
        status, text = self.run_with(self.checks[:2], json_out=True)
        self.assertEqual(status, 0)
        said = json.loads(text)
        self.assertEqual(said["ok"], True)
        self.assertEqual(said["checks"][1], {"scope": "machine", "name": "cgroups",
                                             "status": "warn", "detail": "none",
                                             "fix": "use systemd"})


class ClockOffsetTests(MasterCase):
    """The master's view of a worker's clock: its heartbeat's `time` against its own."""

    def test_from_the_heartbeats_time(self):
        w = self.worker("w1")
        c = self.client()
        [view] = c.result(Op.LIST_WORKERS, {})["workers"]
        self.assertIsNone(view["clock_offset"])  # no heartbeat yet
        self.reactor.advance(1)
        w.send(Op.HEARTBEAT, {"worker_id": "w1", "running": 0,
                              "time": self.reactor.seconds() + 2.5}, rid=False)
        [view] = c.result(Op.LIST_WORKERS, {})["workers"]
        self.assertEqual(view["clock_offset"], 2.5)
        w.send(Op.HEARTBEAT, {"worker_id": "w1", "running": 0}, rid=False)  # an older worker
        [view] = c.result(Op.LIST_WORKERS, {})["workers"]
        self.assertIsNone(view["clock_offset"])
