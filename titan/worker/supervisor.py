"""T2: a service kept alive by its worker — ports, restarts with backoff, health, crash loops.

A `ServiceSupervisor` runs one service (one dispatch of a `kind: service` job).  It restarts
the process per its policy after a growing delay; a crash loop (too many restarts in a
window) ends it FAILED with its last lines of output; a health check (tcp or http:/path)
decides when it counts as RUNNING and restarts it when it stops answering.  Every change is
reported to the master; the final exit is reported like any job's.
"""
from __future__ import annotations

import collections
import errno
import os
import random
import re
import socket
from typing import Callable, Optional

from twisted.internet import defer
from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol
from twisted.internet.protocol import Protocol
from twisted.internet.task import LoopingCall
from twisted.logger import Logger

from titan.worker.executor import JobProcess, spawn

FAILURES_BEFORE_RESTART = 3  # failed health checks in a row, once the grace is over
# While a service comes up (its grace period), its health is checked this often (at most).
READY_POLL = 0.2


class PortBusy(Exception):
    pass


def port_free(port: int) -> bool:
    """Whether nothing listens on `port` (any interface) right now."""
    for family, host in ((socket.AF_INET, "0.0.0.0"), (socket.AF_INET6, "::")):
        try:
            s = socket.socket(family, socket.SOCK_STREAM)
        except OSError:
            continue
        try:
            s.bind((host, port))
        except OSError as e:
            if e.errno in (errno.EADDRINUSE, errno.EACCES):
                return False
        finally:
            s.close()
    return True


def pick_port(wanted: Optional[str], port_range: str, taken: set) -> Optional[int]:
    """The port a service gets: `wanted` if free (PortBusy if not), or a free one of the range."""
    if wanted is None:
        return None
    if wanted != "auto":
        port = int(wanted)
        if port in taken or not port_free(port):
            raise PortBusy(f"port {port} is busy on this worker")
        return port
    low, _, high = port_range.partition("-")
    ports = list(range(int(low), int(high or low) + 1))
    random.shuffle(ports)
    for port in ports:
        if port not in taken and port_free(port):
            return port
    raise PortBusy(f"no free port left in {port_range}")


_PORT_VARIABLE = re.compile(r"\$(?:PORT\b|\{PORT\})")


def with_port(arg: str, port: int) -> str:
    """`{port}`, `$PORT` and `${PORT}` in an argument become the service's port: no shell
    runs the command, so `'$PORT'` as a user types it would otherwise stay as it is."""
    return _PORT_VARIABLE.sub(str(port), arg.replace("{port}", str(port)))


class HealthAnswer(Exception):
    """An HTTP health check got an answer outside 2xx-3xx."""

    def __init__(self, path: str, code: int) -> None:
        super().__init__(f"GET {path} \u2192 {code}")


def health_problem(health: str, failure) -> str:
    """Why a health check failed, in a few words a person reads in `titan service list`:
    "health: GET / → 404", "health: connection refused", "health: no answer within 2s"."""
    from twisted.internet import error
    from twisted.web._newclient import ResponseNeverReceived
    value = getattr(failure, "value", failure)
    if isinstance(value, HealthAnswer):
        what = str(value)
    elif isinstance(value, error.ConnectionRefusedError):
        what = "connection refused"
    elif isinstance(value, (error.TimeoutError, defer.CancelledError, defer.TimeoutError)):
        what = "no answer in time"
    elif isinstance(value, ResponseNeverReceived):
        what = "the connection closed without an HTTP answer"
    elif isinstance(value, error.ConnectionLost) or isinstance(value, error.ConnectionDone):
        what = "the connection closed without an answer"
    else:
        what = (failure.getErrorMessage() if hasattr(failure, "getErrorMessage")
                else str(value)) or type(value).__name__
        what = " ".join(what.split())[:120]
    kind = "GET" if health.startswith("http:") else "tcp"
    if kind == "tcp" or isinstance(value, HealthAnswer):
        return f"health: {what}"
    return f"health: GET {health[len('http:'):] or '/'}: {what}"


class _Probe(Protocol):
    def connectionMade(self):
        self.transport.loseConnection()


class ServiceSupervisor:
    log = Logger()

    def __init__(self, reactor, job, command: list, env: dict, cwd: str, port: Optional[int],
                 options, report: Callable[[dict], None],
                 finished: Callable[[Optional[int], Optional[str]], None],
                 output: Callable[[str, bytes], None]) -> None:
        self.reactor = reactor
        self.job = job
        self.spec = job.spec
        self.port = port
        self.command = [with_port(a, port) for a in command] if port else list(command)
        self.env = dict(env, PORT=str(port)) if port else env
        self.cwd = cwd
        self.options = options  # the worker config: backoff, crash loop, health timings
        self.report = report
        self.finished = finished
        self.output = output
        self.proc: Optional[JobProcess] = None
        self.state = "STARTING"
        self.restarts = 0
        self.restart_times: collections.deque = collections.deque()
        self.last_lines: collections.deque = collections.deque(maxlen=20)
        self._partial = b""
        self.started_at: Optional[float] = None
        self.stopping = False
        self.manual_restart = False
        self.healthy = False
        self._failures = 0
        self.health_error: Optional[str] = None  # why the last health check failed
        self.last_exit: Optional[str] = None  # how the process last ended, before a restart
        self._health: Optional[LoopingCall] = None
        self._pending_start = None
        self.ended = False

    # -- life --------------------------------------------------------------------------

    def start(self) -> Optional[str]:
        """Start the process; None, or why it could not start."""
        self._pending_start = None
        self.proc = JobProcess(self.reactor, on_output=self._output, on_exit=self._exited,
                               kill_grace=self.options.kill_grace)
        problem = spawn(self.reactor, self.proc, self.command, self.env, self.cwd)
        if problem is not None:
            return problem
        self.started_at = self.reactor.seconds()
        self.healthy = False
        self._failures = 0
        if self.spec.health:
            self._set("STARTING")
            # Quick checks while it comes up (what waits for it starts sooner), the
            # configured pace once it is up or its grace is over.
            self._check_every(min(READY_POLL, self.options.health_interval))
        else:
            self._set("RUNNING")
        return None

    def stop(self, reason: str) -> None:
        self.stopping = True
        self._stop_health()
        if self._pending_start is not None and self._pending_start.active():
            self._pending_start.cancel()
            self._end(None, reason)
        elif self.proc is not None and not self.proc.ended:
            self.proc.kill(reason)
        else:
            self._end(None, reason)

    def restart(self) -> None:
        """A restart someone asked for: not a crash, not counted against the crash loop."""
        if self.proc is not None and not self.proc.ended:
            self.manual_restart = True
            self.proc.kill("restart requested")

    def _exited(self, exit_code: Optional[int], reason: Optional[str]) -> None:
        self._stop_health()
        if self.stopping:
            self._end(exit_code, reason)
            return
        if self.manual_restart:
            self.manual_restart = False
            self.restarts += 1
            self._set("RESTARTING")
            self._schedule_start(0.0)
            return
        what = reason or f"exit {exit_code}"
        policy = self.spec.restart
        if policy == "never" or (policy == "on-failure" and exit_code == 0 and reason is None):
            self._end(exit_code, reason)
            return
        now = self.reactor.seconds()
        self.restart_times.append(now)
        while self.restart_times and self.restart_times[0] < now - self.options.crash_loop_window:
            self.restart_times.popleft()
        if len(self.restart_times) > self.options.crash_loop_restarts:
            tail = " | ".join(self.last_lines) or "(no output)"
            self._end(exit_code, f"crash loop: {len(self.restart_times) - 1} restarts in "
                                 f"{self.options.crash_loop_window:g}s (last: {what}); "
                                 f"last lines: {tail}")
            return
        self.restarts += 1
        delay = min(self.options.restart_backoff_cap,
                    self.options.restart_backoff_base * 2 ** (len(self.restart_times) - 1))
        self.log.info("service {job_id} exited ({what}); restart {n} in {delay:.1f}s",
                      job_id=self.job.job_id, what=what, n=self.restarts, delay=delay)
        self.last_exit = what
        self._set("RESTARTING")
        self._schedule_start(delay)

    def _schedule_start(self, delay: float) -> None:
        def go():
            problem = self.start()
            if problem is not None:
                self._end(127, problem)
        self._pending_start = self.reactor.callLater(delay, go)

    def _end(self, exit_code: Optional[int], reason: Optional[str]) -> None:
        if self.ended:
            return
        self.ended = True
        self._stop_health()
        self._set("STOPPED" if self.stopping else "FAILED" if (exit_code or reason) else "EXITED")
        self.finished(exit_code, reason)

    # -- health ------------------------------------------------------------------------

    def _stop_health(self) -> None:
        if self._health is not None and self._health.running:
            self._health.stop()
        self._health = None

    def _check_every(self, interval: float) -> None:
        if self._health is not None:
            if self._health.interval == interval:
                return
            self._stop_health()
        self._health = LoopingCall(self._check)
        self._health.clock = self.reactor
        self._health.start(interval, now=False)

    def _check(self) -> defer.Deferred:
        d = self._probe()
        d.addCallbacks(self._passed, self._missed)
        return d

    def _probe(self) -> defer.Deferred:
        health = self.spec.health or ""
        if health.startswith("http:"):
            import treq
            url = f"http://127.0.0.1:{self.port}{health[len('http:'):]}"
            d = treq.get(url, timeout=max(1.0, self.options.health_interval))

            def status(response):
                if not 200 <= response.code < 400:
                    raise HealthAnswer(health[len("http:"):] or "/", response.code)
                return treq.content(response)
            return d.addCallback(status)
        endpoint = TCP4ClientEndpoint(self.reactor, "127.0.0.1", self.port,
                                      timeout=max(1, int(self.options.health_interval)))
        return connectProtocol(endpoint, _Probe())

    def _passed(self, _) -> None:
        self._failures = 0
        cleared = self.health_error is not None
        self.health_error = None
        if not self.healthy and not self.ended:
            self.healthy = True
            self._check_every(self.options.health_interval)
            self._set("RUNNING")
        elif cleared and not self.ended:
            self.report(self.status())

    def _missed(self, failure) -> None:
        if self.ended or self.proc is None or self.proc.ended:
            return
        why = health_problem(self.spec.health or "", failure)
        if why != self.health_error:
            self.health_error = why  # the master keeps it: `titan service list` shows it
            self.report(self.status())
        in_grace = self.reactor.seconds() - (self.started_at or 0) < self.options.health_grace
        if not in_grace:
            self._check_every(self.options.health_interval)  # failures count at its pace
        if self.healthy or not in_grace:
            self._failures += 1
            if self._failures >= FAILURES_BEFORE_RESTART:
                self.log.warn("service {job_id} is unhealthy ({why}); restarting it",
                              job_id=self.job.job_id, why=why)
                self._failures = 0
                self._stop_health()
                self.proc.kill(f"unhealthy ({why})")

    # -- reports -----------------------------------------------------------------------

    def _output(self, stream: str, data: bytes) -> None:
        self.output(stream, data)
        lines = (self._partial + data).split(b"\n")
        self._partial = lines.pop()[-500:]
        for line in lines[-20:]:
            self.last_lines.append(line.decode("utf-8", "replace")[:200])

    def status(self) -> dict:
        return {"state": self.state, "port": self.port,
                "pid": self.proc.pid if self.proc and not self.proc.ended else None,
                "restarts": self.restarts, "healthy": self.healthy,
                "health_error": self.health_error, "last_exit": self.last_exit,
                "since": self.started_at, "last_lines": list(self.last_lines)[-5:]}

    def _set(self, state: str, **extra) -> None:
        self.state = state
        status = self.status()
        status.update(extra)
        self.report(status)
