"""The worker's side of recovery, in-process (issue 21, item 2): it dials the master again
after losing it, with backoff; each REGISTER says which attempts it still runs and which
ended meanwhile (exit codes, reasons, output); a finished report is kept until the master
acknowledges it -- one sent on a connection that drops before the answer is sent again on
the next, and dropped only once an answer came; a DISPATCH repeated for the attempt it runs
starts nothing.

The worker is the real `WorkerService` on a `MemoryReactorClock`: its own ClientService and
HostnameEndpoint dial, the test plays the master on a StringTransport with real frames.
No process runs: `spawn` is replaced (and `signal_group`: a kill is only recorded), and a
job "ends" as its JobProcess is told it did.
"""
from __future__ import annotations

import collections
import itertools
import random
from typing import Optional

from twisted.internet import error
from twisted.internet.address import IPv4Address
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

from titan.config import Config, WorkerConfig
from titan.core.model import JobSpec
from titan.protocols import codec
from titan.protocols.frame import FrameDecoder, encode_frame
from titan.protocols.opcodes import Op
from titan.worker import executor, service, supervisor
from titan.worker.executor import JobProcess
from titan.worker.service import WorkerService


class Link:
    """The master's end of one connection the worker made."""

    def __init__(self, protocol, transport: StringTransport) -> None:
        self.protocol = protocol
        self.transport = transport
        self._decoder = FrameDecoder()
        self._read = 0
        self.frames: list[tuple[int, dict]] = []  # everything the worker sent on it

    def received(self) -> list[tuple[int, dict]]:
        """Frames the worker sent since the last look (and all of them in `frames`)."""
        data = self.transport.value()
        new = [(f.opcode, codec.unpack(f.body)) for f in self._decoder.feed(data[self._read:])]
        self._read = len(data)
        self.frames += new
        return new

    def requests(self, opcode: int) -> list[dict]:
        self.received()
        return [body for op, body in self.frames if op == opcode]

    def answer(self, body: dict, result: Optional[dict] = None) -> None:
        self.protocol.dataReceived(encode_frame(Op.ACK, codec.pack(
            {"rid": body["rid"], "result": result if result is not None else {}})))

    def push(self, opcode: int, body: dict) -> None:
        self.protocol.dataReceived(encode_frame(opcode, codec.pack(body)))

    def drop(self) -> None:
        """The master goes away (or the network between them)."""
        self.received()
        self.protocol.connectionLost(Failure(error.ConnectionLost("master went away")))


def report(body: dict) -> tuple:
    """A finished report as the master reads it."""
    return (body["job_id"], body["attempt"], body["exit_code"], body["reason"])


class WorkerRecoveryTests(SynchronousTestCase):
    def setUp(self) -> None:
        # The reconnection jitter is random.random: the same draws every run.
        self.addCleanup(random.setstate, random.getstate())
        random.seed(21)
        self.reactor = MemoryReactorClock()
        self.spawned: dict[str, JobProcess] = {}
        self._pids = itertools.count(50001)
        self.patch(service, "spawn", self._spawn)
        self.patch(supervisor, "spawn", self._spawn)  # a service's processes
        # The pids are made up: a kill must reach no real process, and is recorded.
        self.signals: list[tuple[int, int]] = []
        self.patch(executor, "signal_group", lambda pid, sig: self.signals.append((pid, sig)))
        config = Config(token="t", worker=WorkerConfig(
            name="w1", data_dir=self.mktemp(), detect_tags=False, master="127.0.0.1:9999",
            log_batch_interval=0.05))
        self.worker = WorkerService(config, "t", reactor=self.reactor)
        self._dialed = 0
        self.worker.client_service.startService()
        self.addCleanup(self._stop, self.worker)

    @staticmethod
    def _stop(worker: WorkerService) -> None:
        worker.client_service.stopService()
        heartbeat = worker._heartbeat
        if heartbeat is not None and heartbeat.running:
            heartbeat.stop()

    def _spawn(self, reactor, proto: JobProcess, command, env, cwd) -> None:
        proto.pid = next(self._pids)  # signals to it go to self.signals
        self.spawned[env["TITAN_JOB_ID"]] = proto
        return None

    # -- the master's side -------------------------------------------------------------------

    def step(self) -> bool:
        """Run the next scheduled call (at its exact time); False if there is none."""
        calls = self.reactor.getDelayedCalls()
        if not calls:
            return False
        self.reactor.rightNow = max(self.reactor.rightNow, min(c.getTime() for c in calls))
        self.reactor.advance(0)
        return True

    def next_dial(self, within: float) -> float:
        """Seconds until the worker's next connection attempt (it must come `within`)."""
        start = self.reactor.seconds()
        while len(self.reactor.tcpClients) == self._dialed:
            self.assertTrue(self.step(), "the worker does not try to reconnect")
            self.assertLessEqual(self.reactor.seconds() - start, within,
                                 f"no connection attempt within {within}s")
        self._dialed += 1
        return self.reactor.seconds() - start

    def accept(self, within: float = 1.2) -> Link:
        """The worker's next attempt connects."""
        self.next_dial(within)
        return self.connect()

    def connect(self) -> Link:
        """The worker's latest attempt connects."""
        host, port, factory, _, _ = self.reactor.tcpClients[self._dialed - 1]
        self.assertEqual((host, port), ("127.0.0.1", 9999))
        protocol = factory.buildProtocol(IPv4Address("TCP", host, port))
        transport = StringTransport(peerAddress=IPv4Address("TCP", host, port))
        protocol.makeConnection(transport)
        return Link(protocol, transport)

    def refuse(self, within: float) -> float:
        """The worker's next attempt is refused; how long it waited before it."""
        waited = self.next_dial(within)
        connector = self.reactor.connectors[self._dialed - 1]
        factory = self.reactor.tcpClients[self._dialed - 1][2]
        factory.clientConnectionFailed(connector, Failure(error.ConnectionRefusedError()))
        return waited

    def register(self, link: Link, answer: bool = True) -> dict:
        """The worker's REGISTER on `link` (answered unless told not to)."""
        [hello] = link.requests(Op.REGISTER)
        if answer:
            link.answer(hello, {"heartbeat_interval": 1.0})
        return hello

    def dispatch(self, link: Link, job_id: str, attempt: int = 1, **spec) -> JobProcess:
        spec = JobSpec(job_id=job_id, command=("work",), **spec)
        link.push(Op.DISPATCH, {"job_id": job_id, "attempt": attempt, "run_id": None,
                                "token": "job-token", "spec": spec.to_wire()})
        return self.spawned[job_id]

    @staticmethod
    def end(proc: JobProcess, exit_code: Optional[int], signal: Optional[int] = None) -> None:
        """The process of a job exits (as the reactor tells a JobProcess)."""
        if exit_code == 0:
            proc.processEnded(Failure(error.ProcessDone(0)))
        else:
            proc.processEnded(Failure(error.ProcessTerminated(exitCode=exit_code,
                                                              signal=signal)))

    # -- reconnection --------------------------------------------------------------------------

    def test_reconnects_after_losing_the_master(self) -> None:
        link = self.accept(within=0)  # it dials as it starts
        self.register(link)
        link.drop()
        # The first retry after a lost connection is quick (0.15 s + jitter under 1 s).
        self.assertGreaterEqual(self.next_dial(within=1.15), 0.15)
        again = self.connect()
        hello = self.register(again)
        self.assertEqual((hello["worker_id"], hello["token"]), (self.worker.worker_id, "t"))
        self.assertTrue(self.worker.registered)

    def test_backoff_grows_to_5s_until_a_master_has_answered(self) -> None:
        self.refuse(within=0)  # no master yet: nothing is at stake, 5 s between tries
        waits = [self.refuse(within=6.3) for _ in range(16)]
        # 0.1 s × 1.5^n up to 5 s, plus under 1 s of jitter (and the 0.3 s HostnameEndpoint
        # takes to give up on its only address): growing, never past 6.3 s.
        for n, waited in enumerate(waits, start=1):
            floor = min(0.1 * 1.5 ** n, 5.0)
            self.assertGreaterEqual(waited, floor - 1e-9, f"retry {n}: {waits}")
            self.assertLess(waited, floor + 1.3, f"retry {n}: {waits}")
        self.assertGreaterEqual(min(waits[10:]), 5.0)  # at the cap
        link = self.accept(within=6.3)
        self.register(link)
        link.drop()
        self.assertLess(self.next_dial(within=1.15), 1.15)  # quick again after a connection

    def test_once_registered_a_retry_never_waits_longer_than_the_heartbeat_interval(self) -> None:
        """The master gives a silent worker heartbeat_timeout: a worker in its backoff is
        alive, and must try again before it is given up for lost (it was seen waiting 6 s
        against a 4 s timeout, and the job it had finished ran again elsewhere)."""
        first = self.accept(within=0)
        self.register(first)  # heartbeat_interval 1.0
        first.drop()
        waits = [self.refuse(within=1.8) for _ in range(16)]
        # 0.1 s × 1.5^n up to the 1 s interval, plus under 0.5 s of jitter (and 0.3 s).
        for n, waited in enumerate(waits, start=1):
            floor = min(0.1 * 1.5 ** n, 1.0)
            self.assertGreaterEqual(waited, floor - 1e-9, f"retry {n}: {waits}")
            self.assertLess(waited, floor + 0.8, f"retry {n}: {waits}")
        self.assertGreaterEqual(min(waits[6:]), 1.0)  # at the cap
        self.register(self.accept(within=1.8))

    def test_connections_closed_before_the_master_answers_back_off_too(self) -> None:
        """Behind `ssh -R` with no master at the far end, every attempt connects (to sshd)
        and is closed before REGISTER is answered: each counts as a failed attempt, and the
        worker says so once (it used to retry every ~0.3 s, logging each)."""
        said = []
        from twisted.logger import globalLogPublisher
        observer = said.append
        globalLogPublisher.addObserver(observer)
        self.addCleanup(globalLogPublisher.removeObserver, observer)
        first = self.accept(within=0)
        self.register(first)  # heartbeat_interval 1.0
        first.drop()
        waits = []
        for _ in range(12):
            waits.append(self.next_dial(within=1.8))
            link = self.connect()
            self.register(link, answer=False)
            link.drop()
        # 0.1 s × 1.5^n as if refused, up to the 1 s interval, plus under 0.5 s of jitter.
        for n, waited in enumerate(waits, start=1):
            floor = min(0.1 * 1.5 ** n, 1.0)
            self.assertGreaterEqual(waited, floor - 1e-9, f"retry {n}: {waits}")
            self.assertLess(waited, floor + 0.5, f"retry {n}: {waits}")
        self.assertGreaterEqual(min(waits[6:]), 1.0)  # at the cap
        closed = [e for e in said if "closed before the master answered"
                  in e.get("log_format", "")]
        self.assertEqual(len(closed), 1, [e.get("log_format") for e in said])
        self.assertFalse([e for e in said if "registration failed" in e.get("log_format", "")])
        # Answered again: the next loss is retried quickly, as after any registration.
        self.register(self.accept(within=1.8))
        self.assertEqual(self.worker._unanswered, 0)

    # -- reports ---------------------------------------------------------------------------

    def test_register_names_running_attempts_and_those_that_ended_meanwhile(self) -> None:
        link = self.accept(within=0)
        self.register(link)
        a, b, c, d = (self.dispatch(link, job, attempt)
                      for job, attempt in (("a", 1), ("b", 2), ("c", 1), ("d", 3)))
        link.drop()
        a.outReceived(b"done\n")
        self.end(a, 0)
        self.end(b, 3)
        self.end(c, None, signal=9)
        link = self.accept()
        hello = self.register(link, answer=False)
        self.assertEqual(hello["running"], [{"job_id": "d", "attempt": 3}])
        self.assertEqual(sorted(report(r) for r in hello["finished"]),
                         [("a", 1, 0, None), ("b", 2, 3, None),
                          ("c", 1, None, "killed by signal SIGKILL")])
        logs = {r["job_id"]: r["logs"] for r in hello["finished"]}
        self.assertEqual(logs["a"], [["out", b"done\n"]])

    def test_a_service_says_how_it_is_once_registered_again(self) -> None:
        """A master that lost the worker (or restarted) learns a service's state anew."""
        link = self.accept(within=0)
        self.register(link)
        self.dispatch(link, "api", kind="service", restart="always")
        [status] = [b["status"] for op, b in link.received() if op == Op.SERVICE_STATUS]
        self.assertEqual((status["state"], status["pid"]), ("RUNNING", 50001))
        link.drop()
        link = self.accept()
        hello = self.register(link, answer=False)
        self.assertEqual(hello["running"], [{"job_id": "api", "attempt": 1}])
        link.received()
        self.assertEqual([op for op, _ in link.frames], [Op.REGISTER])  # nothing before it
        link.answer(hello, {"heartbeat_interval": 1.0})
        [status] = [b for op, b in link.received() if op == Op.SERVICE_STATUS]
        self.assertEqual((status["job_id"], status["attempt"], status["status"]["state"],
                          status["status"]["pid"], status["status"]["restarts"]),
                         ("api", 1, "RUNNING", 50001, 0))

    def test_a_report_is_sent_again_until_the_master_answers(self) -> None:
        link = self.accept(within=0)
        self.register(link)
        self.end(self.dispatch(link, "a"), 4)
        self.assertEqual([report(r) for r in link.requests(Op.JOB_COMPLETE)],
                         [("a", 1, 4, None)])
        link.drop()  # before the master answered it
        link = self.accept()
        hello = self.register(link, answer=False)
        self.assertEqual([report(r) for r in hello["finished"]], [("a", 1, 4, None)])
        link.drop()  # the REGISTER was not answered either
        link = self.accept()
        hello = self.register(link)  # answered this time
        self.assertEqual([report(r) for r in hello["finished"]], [("a", 1, 4, None)])
        self.assertEqual(link.requests(Op.JOB_COMPLETE), [])  # not twice on one connection
        link.drop()
        link = self.accept()
        self.assertEqual(self.register(link)["finished"], [])  # answered: not sent again

    def test_an_answered_report_is_not_sent_again(self) -> None:
        link = self.accept(within=0)
        self.register(link)
        self.end(self.dispatch(link, "a"), 0)
        [sent] = link.requests(Op.JOB_COMPLETE)
        link.answer(sent)
        link.drop()
        link = self.accept()
        hello = self.register(link)
        self.assertEqual((hello["finished"], hello["running"]), ([], []))

    def test_a_refused_report_is_kept(self) -> None:
        link = self.accept(within=0)
        self.register(link)
        self.end(self.dispatch(link, "a"), 0)
        [sent] = link.requests(Op.JOB_COMPLETE)
        link.push(Op.ERROR, {"rid": sent["rid"], "code": "storage_unavailable",
                             "message": "storage unavailable: disk full"})
        link.drop()
        link = self.accept()
        self.assertEqual([report(r) for r in self.register(link)["finished"]],
                         [("a", 1, 0, None)])

    def test_a_repeated_dispatch_of_the_running_attempt_starts_nothing(self) -> None:
        """A DISPATCH of the attempt the worker already runs (the master sent it again: on
        the same connection, or after the worker reconnected) neither restarts nor kills it:
        the one process goes on, and its end is the job's only report."""
        link = self.accept(within=0)
        self.register(link)
        proc = self.dispatch(link, "a")
        again = self.dispatch(link, "a")  # the same attempt, again
        self.assertIs(again, proc, "a second process was started for the same attempt")
        link.drop()
        link = self.accept()
        hello = self.register(link)
        self.assertEqual(hello["running"], [{"job_id": "a", "attempt": 1}])
        self.assertIs(self.dispatch(link, "a"), proc)  # and again after the reconnect
        self.assertEqual((self.signals, self.worker.jobs["a"].proc), ([], proc))
        self.assertEqual(link.requests(Op.JOB_COMPLETE), [])  # still running: no end yet
        proc.outReceived(b"done\n")
        self.end(proc, 3)
        [sent] = link.requests(Op.JOB_COMPLETE)
        self.assertEqual(report(sent), ("a", 1, 3, None))  # its real end, not "superseded"
        self.assertEqual([(b["attempt"], b["chunks"]) for b in link.requests(Op.LOG_BATCH)],
                         [(1, [["out", b"done\n"]])])
        link.answer(sent)
        self.assertEqual((self.worker.jobs, self.worker.unacked), ({}, {}))
        link.drop()
        link = self.accept()
        hello = self.register(link)
        self.assertEqual((hello["running"], hello["finished"]), ([], []))

    def test_every_report_reaches_the_master_once_acknowledged_whatever_drops(self) -> None:
        """Jobs end, answers come or not, connections drop, at random (seeded): every end
        is acknowledged in the end, with its exit code, and nothing acknowledged is sent
        again."""
        seen: collections.Counter = collections.Counter()
        for seed in range(40):
            self.flaky_master(random.Random(seed), f"seed {seed}", seen)
        # The walks went through what they are meant to (so this test can fail).
        self.assertGreater(seen["sent again"], 20, seen)
        self.assertGreater(seen["answered REGISTER"], 20, seen)
        self.assertGreater(seen["answered JOB_COMPLETE"], 20, seen)

    def flaky_master(self, rng: random.Random, label: str, seen: collections.Counter) -> None:
        self.setUp()  # a fresh worker for each seed (cleanups of each are kept)
        link = self.accept(within=0)
        at_hello: list = []  # what ran as the worker's last REGISTER was sent
        acked: set = set()  # (job, attempt) the master answered
        sent: set = set()
        ended: dict = {}  # (job, attempt) -> (exit code, reason), as the worker saw it
        running: dict = {}
        pending: list = []  # requests on `link` not answered yet
        registered = False
        names = itertools.count()

        def look() -> None:
            nonlocal pending
            for op, body in link.received():
                if op in (Op.REGISTER, Op.JOB_COMPLETE):
                    reports = body["finished"] if op == Op.REGISTER else [body]
                    for r in reports:
                        key = (r["job_id"], r["attempt"])
                        self.assertNotIn(key, acked, f"{label}: {key} sent after its answer")
                        self.assertEqual((r["exit_code"], r["reason"]), ended[key], label)
                        seen["sent again"] += key in sent
                        sent.add(key)
                    pending.append((op, body))
                if op == Op.REGISTER:
                    self.assertEqual(sorted((r["job_id"], r["attempt"]) for r in body["running"]),
                                     at_hello, label)

        for _ in range(60):
            look()
            action = rng.choice(["dispatch", "end", "end", "answer", "answer", "drop"])
            if action == "dispatch" and registered:
                job = f"j{next(names)}"
                running[(job, 1)] = self.dispatch(link, job)
            elif action == "end" and running:
                key = rng.choice(sorted(running))
                code = rng.choice([0, 1, 137])
                ended[key] = (code, None)
                self.end(running.pop(key), code)
            elif action == "answer" and pending:
                op, body = pending.pop(rng.randrange(len(pending)))
                if op == Op.REGISTER:
                    registered = True
                    acked.update((r["job_id"], r["attempt"]) for r in body["finished"])
                    seen["answered REGISTER"] += bool(body["finished"])
                    link.answer(body, {"heartbeat_interval": 1.0})
                else:
                    acked.add((body["job_id"], body["attempt"]))
                    seen["answered JOB_COMPLETE"] += 1
                    link.answer(body)
            elif action == "drop":
                link.drop()
                at_hello = sorted(running)
                # Drops before an answer back off like refusals (up to 5 s before the first).
                link, pending, registered = self.accept(within=6.3), [], False
        # The end: the jobs still running end; the master answers everything.
        for key in sorted(running):
            ended[key] = (0, None)
            self.end(running.pop(key), 0)
        for _ in range(2):
            look()
            while pending:
                op, body = pending.pop(0)
                reports = body["finished"] if op == Op.REGISTER else [body]
                acked.update((r["job_id"], r["attempt"]) for r in reports)
                link.answer(body, {"heartbeat_interval": 1.0} if op == Op.REGISTER else None)
                look()
            link.drop()
            at_hello = sorted(running)
            link, pending = self.accept(within=6.3), []
        look()
        self.assertEqual(acked, set(ended), label)
        self.assertEqual(self.worker.unacked, {}, label)
