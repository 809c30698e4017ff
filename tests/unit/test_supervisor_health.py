"""A service's supervisor end to end, in-process: health failures → restart with backoff →
crash loop, and restarts per policy when the process exits (issue 21, item 2).

No process runs: `spawn` and `JobProcess` are replaced by a fake that hands out pids and
ends when it is killed, the health probe answers as the test says, and time is a `Clock`
advanced from one scheduled call to the next (so every time below is exact).
"""
from __future__ import annotations

import itertools
from types import SimpleNamespace
from typing import Optional

from twisted.internet import defer, error
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from titan.config import WorkerConfig
from titan.core.model import JobSpec
from titan.worker import supervisor
from titan.worker.supervisor import ServiceSupervisor

TERM_TAKES = 0.05  # how long a fake process takes to end once signalled


class FakeProcess:
    """Stands in for `JobProcess`: same constructor, `pid`, `ended`, `kill`."""

    def __init__(self, clock, on_output, on_exit, timeout=None, kill_grace=5.0) -> None:
        self.clock = clock
        self.on_exit = on_exit
        self.pid: Optional[int] = None
        self.ended = False
        self.kill_reason: Optional[str] = None

    def kill(self, reason: str) -> None:
        if self.ended or self.pid is None:
            return
        if self.kill_reason is None:
            self.kill_reason = reason
            # Ended by the signal, as JobProcess reports it: no exit code, the kill's reason.
            self.clock.callLater(TERM_TAKES, self.exit, None, reason)

    def exit(self, code: Optional[int], reason: Optional[str] = None) -> None:
        if not self.ended:
            self.ended = True
            self.on_exit(code, reason)


class Supervised:
    """One supervised service, its fake processes, health answers and reports."""

    def __init__(self, case: SynchronousTestCase, restart: str = "on-failure",
                 health: Optional[str] = "tcp", **options) -> None:
        self.clock = Clock()
        self.procs: list[tuple[float, FakeProcess]] = []  # (start time, process)
        self.exits: list[float] = []  # when each process ended
        self.reports: list[dict] = []
        self.ends: list[tuple] = []  # finished(exit_code, reason): the job's end
        self.healthy_answer = True
        self.probes: list[float] = []
        self._pids = itertools.count(1001)
        case.patch(supervisor, "JobProcess", FakeProcess)
        case.patch(supervisor, "spawn", self._spawn)
        config = dict(health_interval=1.0, health_grace=2.0, restart_backoff_base=1.0,
                      restart_backoff_cap=8.0, crash_loop_restarts=5,
                      crash_loop_window=1000.0, kill_grace=1.0)
        config.update(options)
        spec = JobSpec(job_id="api", command=("server", "$PORT"), kind="service",
                       port="auto", restart=restart, health=health)
        self.sup = ServiceSupervisor(
            self.clock, SimpleNamespace(job_id="api", spec=spec), list(spec.command), {},
            "/", 20001, WorkerConfig(**config), report=self.reports.append,
            finished=lambda code, why: self.ends.append((code, why)),
            output=lambda stream, data: None)
        self.sup._probe = self._probe

    def _spawn(self, reactor, proto, command, env, cwd) -> None:
        assert command == ["server", "20001"], command
        proto.pid = next(self._pids)
        wrapped = proto.on_exit

        def on_exit(code, reason):
            self.exits.append(self.clock.seconds())
            wrapped(code, reason)
        proto.on_exit = on_exit
        self.procs.append((self.clock.seconds(), proto))
        return None

    def _probe(self) -> defer.Deferred:
        self.probes.append(self.clock.seconds())
        if self.healthy_answer:
            return defer.succeed(None)
        return defer.fail(error.ConnectionRefusedError())

    @property
    def proc(self) -> FakeProcess:
        return self.procs[-1][1]

    def start(self) -> None:
        assert self.sup.start() is None

    def run(self, seconds: float) -> None:
        """Advance `seconds`, stopping at every scheduled call on the way."""
        end = self.clock.seconds() + seconds
        while True:
            due = min((c.getTime() for c in self.clock.getDelayedCalls()), default=None)
            if due is None or due > end:
                self.clock.rightNow = max(self.clock.rightNow, end)
                return
            # Set the time rather than add to it: `now + (due - now)` may fall a hair
            # short of `due` in floating point, and the call would never run.
            self.clock.rightNow = max(self.clock.rightNow, due)
            self.clock.advance(0)

    def restart_delays(self) -> list[float]:
        """Between each process's end and the start of the next one."""
        return [round(start - ended, 6) for ended, (start, _) in zip(self.exits, self.procs[1:])]

    def status(self) -> dict:
        return self.reports[-1]


class HealthRestartTests(SynchronousTestCase):
    def test_a_healthy_service_is_not_restarted(self) -> None:
        s = Supervised(self)
        s.start()
        s.run(600)
        self.assertGreater(len(s.probes), 590)  # it was checked all along
        self.assertEqual(len(s.procs), 1)
        self.assertIsNone(s.proc.kill_reason)
        self.assertEqual((s.status()["state"], s.status()["healthy"], s.status()["restarts"],
                          s.status()["pid"]), ("RUNNING", True, 0, 1001))
        self.assertEqual(s.ends, [])

    def test_failing_health_checks_restart_it(self) -> None:
        s = Supervised(self)
        s.start()
        s.run(10)  # up at 0.2 s, then checked every second: 1.2, 2.2, ... 10.2
        self.assertEqual(s.status()["state"], "RUNNING")
        s.healthy_answer = False
        s.run(2.1)  # 10.2 and 11.2 missed: two failures are not enough
        self.assertIsNone(s.proc.kill_reason)
        self.assertEqual(s.status()["health_error"], "health: connection refused")
        s.run(0.5)  # the third miss, at 12.2: killed, ended at 12.25
        self.assertEqual(s.proc.kill_reason, "unhealthy (health: connection refused)")
        s.healthy_answer = True  # the next process will be fine
        self.assertEqual((s.status()["state"], s.status()["restarts"], s.status()["pid"],
                          s.status()["last_exit"]),
                         ("RESTARTING", 1, None, "unhealthy (health: connection refused)"))
        self.assertEqual(len(s.procs), 1)
        s.run(1.0)  # the first restart waits restart_backoff_base; up 0.2 s later
        self.assertEqual(len(s.procs), 2)
        self.assertEqual(s.restart_delays(), [1.0])
        self.assertEqual((s.status()["state"], s.status()["healthy"], s.status()["restarts"],
                          s.status()["pid"]), ("RUNNING", True, 1, 1002))
        self.assertEqual(s.ends, [])  # the job goes on

    def test_a_passing_check_starts_the_count_again(self) -> None:
        s = Supervised(self)
        s.start()
        s.run(5)
        for answer in (False, False, True, False, False):
            s.healthy_answer = answer
            s.run(1.0)
        self.assertIsNone(s.proc.kill_reason)
        s.run(1.0)  # a third miss in a row
        self.assertIsNotNone(s.proc.kill_reason)

    def test_misses_in_the_grace_period_do_not_count(self) -> None:
        s = Supervised(self)
        s.healthy_answer = False
        s.start()
        s.run(2.0)  # grace: checked every 0.2 s, none counts
        self.assertGreaterEqual(len(s.probes), 9)
        self.assertIsNone(s.proc.kill_reason)
        self.assertEqual(s.status()["state"], "STARTING")
        s.run(3.0)  # then three misses, a second apart
        self.assertEqual(s.proc.kill_reason, "unhealthy (health: connection refused)")

    def test_unhealthy_restarts_back_off_to_the_cap_then_a_crash_loop(self) -> None:
        s = Supervised(self, crash_loop_restarts=5)
        s.healthy_answer = False  # never comes up: each process is killed after its grace
        s.start()
        s.run(200)
        self.assertEqual(len(s.procs), 6)  # the first one and five restarts
        self.assertEqual(s.restart_delays(), [1.0, 2.0, 4.0, 8.0, 8.0])
        self.assertTrue(all(p.kill_reason == "unhealthy (health: connection refused)"
                            for _, p in s.procs))
        self.assertEqual(s.status()["state"], "FAILED")
        self.assertEqual(s.status()["restarts"], 5)
        [(code, why)] = s.ends
        self.assertIsNone(code)
        self.assertTrue(why.startswith("crash loop: 5 restarts in 1000s (last: unhealthy "
                                       "(health: connection refused))"), why)
        s.run(600)
        self.assertEqual(len(s.procs), 6)  # no more restarts
        self.assertEqual(len(s.ends), 1)

    def test_unhealthy_with_restart_never_ends_the_service(self) -> None:
        s = Supervised(self, restart="never")
        s.start()
        s.run(3)
        s.healthy_answer = False
        s.run(3.1)
        self.assertEqual(s.ends, [(None, "unhealthy (health: connection refused)")])
        self.assertEqual(s.status()["state"], "FAILED")
        s.run(60)
        self.assertEqual(len(s.procs), 1)


class ExitPolicyTests(SynchronousTestCase):
    """A service whose process exits: restarted or ended per `restart`."""

    def exited(self, restart: str, code: Optional[int], reason: Optional[str] = None,
               **options) -> Supervised:
        s = Supervised(self, restart=restart, health=None, **options)
        s.start()
        self.assertEqual(s.status()["state"], "RUNNING")  # no health check: running at once
        s.run(5)
        s.proc.exit(code, reason)
        s.run(60)
        return s

    def test_always_restarts_a_clean_exit(self) -> None:
        s = self.exited("always", 0)
        self.assertEqual(len(s.procs), 2)
        self.assertEqual((s.status()["state"], s.status()["restarts"], s.status()["pid"]),
                         ("RUNNING", 1, 1002))
        self.assertEqual(s.sup.last_exit, "exit 0")
        self.assertEqual(s.ends, [])

    def test_on_failure_restarts_a_failure(self) -> None:
        s = self.exited("on-failure", 3)
        self.assertEqual(len(s.procs), 2)
        self.assertEqual(s.restart_delays(), [1.0])
        self.assertEqual((s.status()["state"], s.status()["restarts"]), ("RUNNING", 1))
        self.assertEqual(s.ends, [])

    def test_on_failure_restarts_a_process_killed_by_a_signal(self) -> None:
        s = self.exited("on-failure", None, "killed by signal SIGKILL")
        self.assertEqual(len(s.procs), 2)
        self.assertEqual(s.sup.last_exit, "killed by signal SIGKILL")

    def test_on_failure_ends_with_a_clean_exit(self) -> None:
        s = self.exited("on-failure", 0)
        self.assertEqual(len(s.procs), 1)
        self.assertEqual(s.ends, [(0, None)])
        self.assertEqual(s.status()["state"], "EXITED")

    def test_never_ends_with_a_failure(self) -> None:
        s = self.exited("never", 3)
        self.assertEqual(len(s.procs), 1)
        self.assertEqual(s.ends, [(3, None)])
        self.assertEqual((s.status()["state"], s.status()["restarts"]), ("FAILED", 0))

    def test_restarts_spread_beyond_the_window_are_no_crash_loop(self) -> None:
        s = Supervised(self, restart="always", health=None, crash_loop_restarts=2,
                       crash_loop_window=10.0)
        s.start()
        for _ in range(6):
            s.run(20)
            s.proc.exit(1)
        s.run(20)
        self.assertEqual(len(s.procs), 7)
        self.assertEqual(s.ends, [])
        # Each exit is the only one in its window: the first delay every time.
        self.assertEqual(s.restart_delays(), [1.0] * 6)

    def test_crash_loop_by_exits(self) -> None:
        s = Supervised(self, restart="always", health=None, crash_loop_restarts=3,
                       crash_loop_window=60.0)
        s.start()
        for _ in range(4):
            s.proc.exit(2)
            s.run(20)
        self.assertEqual(len(s.procs), 4)
        self.assertEqual(s.restart_delays(), [1.0, 2.0, 4.0])
        [(code, why)] = s.ends
        self.assertEqual(code, 2)
        self.assertTrue(why.startswith("crash loop: 3 restarts in 60s (last: exit 2)"), why)
        self.assertEqual(s.status()["state"], "FAILED")

    def test_a_requested_restart_is_at_once_and_not_a_crash(self) -> None:
        s = Supervised(self, restart="always", health=None, crash_loop_restarts=1)
        s.start()
        for _ in range(3):
            s.sup.restart()
            s.run(TERM_TAKES)
        self.assertEqual(len(s.procs), 4)
        self.assertEqual(s.restart_delays(), [0.0, 0.0, 0.0])
        self.assertEqual((s.status()["state"], s.status()["restarts"]), ("RUNNING", 3))
        self.assertEqual(s.ends, [])

    def test_stop_while_waiting_to_restart(self) -> None:
        s = Supervised(self, restart="always", health=None)
        s.start()
        s.proc.exit(1)
        self.assertEqual(s.status()["state"], "RESTARTING")
        s.sup.stop("stopped by a user")
        s.run(60)
        self.assertEqual(len(s.procs), 1)
        self.assertEqual(s.ends, [(None, "stopped by a user")])
        self.assertEqual(s.status()["state"], "STOPPED")
