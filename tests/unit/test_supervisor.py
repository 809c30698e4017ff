"""A service's supervisor: why a health check fails reaches its reports; $PORT in argv."""
from __future__ import annotations

from types import SimpleNamespace

from twisted.internet import error
from twisted.internet.task import Clock
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

from titan.config import WorkerConfig
from titan.worker import supervisor
from titan.worker.supervisor import HealthAnswer, ServiceSupervisor, health_problem, with_port


class HealthProblemTests(SynchronousTestCase):
    def test_http_answer_outside_2xx_3xx(self) -> None:
        self.assertEqual(health_problem("http:/healthz", Failure(HealthAnswer("/healthz", 404))),
                         "health: GET /healthz → 404")

    def test_http_connection_refused(self) -> None:
        self.assertEqual(health_problem("http:/", Failure(error.ConnectionRefusedError())),
                         "health: GET /: connection refused")

    def test_tcp_connection_refused(self) -> None:
        self.assertEqual(health_problem("tcp", Failure(error.ConnectionRefusedError())),
                         "health: connection refused")

    def test_tcp_timeout(self) -> None:
        self.assertEqual(health_problem("tcp", Failure(error.TimeoutError())),
                         "health: no answer in time")

    def test_anything_else_on_one_short_line(self) -> None:
        why = health_problem("tcp", Failure(RuntimeError("odd\n" + "x" * 300)))
        self.assertTrue(why.startswith("health: odd x"))
        self.assertNotIn("\n", why)
        self.assertLessEqual(len(why), 130)


class WithPortTests(SynchronousTestCase):
    def test_port_forms(self) -> None:
        self.assertEqual([with_port(a, 20001) for a in
                          ["$PORT", "${PORT}", "{port}", "--bind=:$PORT", "$PORTS", "PORT"]],
                         ["20001", "20001", "20001", "--bind=:20001", "$PORTS", "PORT"])


class FakeProcess:
    ended = False
    pid = 4242
    killed = None

    def kill(self, reason: str) -> None:
        self.killed = reason


class HealthReportTests(SynchronousTestCase):
    """The supervisor tells the master why its health check fails, once per new reason."""

    def setUp(self) -> None:
        self.clock = Clock()
        self.reports: list[dict] = []
        job = SimpleNamespace(job_id="api.1", spec=SimpleNamespace(health="http:/healthz",
                                                                  restart="on-failure"))
        options = WorkerConfig(health_interval=1.0, health_grace=5.0)
        self.sup = ServiceSupervisor(self.clock, job, ["server", "$PORT"], {}, "/", 20001,
                                     options, report=self.reports.append,
                                     finished=lambda code, why: None,
                                     output=lambda stream, data: None)
        self.sup.proc = FakeProcess()
        self.sup.started_at = 0.0

    def test_the_command_gets_the_port(self) -> None:
        self.assertEqual(self.sup.command, ["server", "20001"])
        self.assertEqual(self.sup.env["PORT"], "20001")

    def test_reason_reported_during_grace(self) -> None:
        self.sup._missed(Failure(error.ConnectionRefusedError()))
        self.assertEqual(self.reports[-1]["health_error"], "health: GET /healthz: "
                                                           "connection refused")
        self.assertIsNone(self.sup.proc.killed)  # in its grace period: not counted

    def test_new_reasons_only(self) -> None:
        self.sup._missed(Failure(HealthAnswer("/healthz", 404)))
        self.sup._missed(Failure(HealthAnswer("/healthz", 404)))
        self.assertEqual([r["health_error"] for r in self.reports],
                         ["health: GET /healthz → 404"])

    def test_restart_says_why(self) -> None:
        self.clock.advance(10)  # past the grace period
        for _ in range(supervisor.FAILURES_BEFORE_RESTART):
            self.sup._missed(Failure(HealthAnswer("/healthz", 503)))
        self.assertEqual(self.sup.proc.killed, "unhealthy (health: GET /healthz → 503)")

    def test_passing_clears_the_reason(self) -> None:
        self.sup._missed(Failure(HealthAnswer("/healthz", 404)))
        self.sup._passed(None)
        self.assertIsNone(self.reports[-1]["health_error"])
        self.assertEqual(self.reports[-1]["state"], "RUNNING")


class ReadinessPaceTests(SynchronousTestCase):
    """While a service comes up, its check runs often (what waits for it starts soon after
    it listens); once it is up, or its grace is over, at the configured pace."""

    def make(self, answers: list) -> tuple:
        from twisted.internet import defer
        clock = Clock()
        reports: list[dict] = []
        job = SimpleNamespace(job_id="r/api", spec=SimpleNamespace(health="tcp",
                                                                  restart="on-failure"))
        options = WorkerConfig(health_interval=2.0, health_grace=1.0)
        sup = ServiceSupervisor(clock, job, ["server"], {}, "/", 20001, options,
                                report=reports.append, finished=lambda code, why: None,
                                output=lambda stream, data: None)
        sup.proc = FakeProcess()
        sup.started_at = 0.0
        probes: list[float] = []

        def probe():
            probes.append(clock.seconds())
            ok = answers.pop(0) if answers else True
            return defer.succeed(None) if ok else defer.fail(error.ConnectionRefusedError())
        sup._probe = probe
        sup._set("STARTING")
        sup._check_every(min(supervisor.READY_POLL, options.health_interval))
        return clock, sup, probes, reports

    def test_quick_checks_until_up_then_the_configured_pace(self) -> None:
        clock, sup, probes, reports = self.make([False, False, True])
        clock.pump([0.2] * 3)
        self.assertEqual(reports[-1]["state"], "RUNNING")
        self.assertEqual([round(t, 1) for t in probes], [0.2, 0.4, 0.6])
        clock.pump([0.5] * 3)
        self.assertEqual(len(probes), 3)  # next one 2 s after it came up
        clock.advance(0.5)
        self.assertEqual([round(t, 1) for t in probes], [0.2, 0.4, 0.6, 2.6])

    def test_past_its_grace_failures_count_at_the_configured_pace(self) -> None:
        clock, sup, probes, reports = self.make([False] * 20)
        clock.pump([0.2] * 6)   # 1.2 s: the grace (1 s) is over at the 5th check
        self.assertEqual(len(probes), 5)
        self.assertIsNone(sup.proc.killed)
        clock.pump([1.0] * 4)   # two more misses, 2 s apart: three in a row
        self.assertEqual(len(probes), 7)
        self.assertIsNotNone(sup.proc.killed)
