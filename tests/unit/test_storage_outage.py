"""The master while its event log cannot store records (issue 14): a full or read-only disk.

A record that failed is never acknowledged and what follows from it waits; clients' changes
are refused with "storage unavailable: <reason>" (structured and text-frame clients alike)
and not applied; reads are answered; once the disk recovers the master goes on by itself.
Fault injection in-process (tests/unit/test_persistence.py's FaultyOps and FaultyConnection),
a fake clock, StringTransport.
"""
from __future__ import annotations

import sqlite3
import sys
import io

from twisted.internet import defer
from twisted.internet.address import IPv4Address
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.logger import LogLevel, formatEvent
from twisted.trial.unittest import SynchronousTestCase

from titan.config import Config, MasterConfig, PersistenceConfig
from titan.interfaces import StorageUnavailable
from titan.master.service import MasterService
from titan.persistence.sqlite import SQLitePersistence
from titan.protocols.frame import FrameDecoder, encode_frame
from titan.protocols.opcodes import Op
from titan.store.client import StoreError, StoreUnavailable
from twisted.python.failure import Failure
from tests.unit.test_master import TOKEN, MasterCase, Peer
from tests.unit.test_persistence import Faults, FaultyConnection, FaultyOps, capture_log


def inline(f, *args) -> defer.Deferred:
    """AOFPersistence's `blocking` hook run at once (no threads under a fake clock)."""
    return defer.maybeDeferred(f, *args)


class OutageCase(MasterCase):
    def setUp(self) -> None:
        super().setUp()
        self.seen = capture_log(self)
        self.faults = Faults()
        backend = self.master.persistence
        backend.ops = FaultyOps(self.faults)
        backend._blocking = inline

    def lines(self, level) -> list[str]:
        return [formatEvent(e) for e in self.seen if e.get("log_level") == level]

    def errors(self, peer: Peer) -> list[dict]:
        return [body for op, body in peer.frames() if op == Op.ERROR]


class StorageOutageTests(OutageCase):
    def test_a_failed_write_is_not_answered_then_changes_are_refused_and_reads_answered(self):
        client = self.client()
        self.faults.set("full")
        pending = client.send(Op.SUBMIT_JOB, {"command": ["true"]})
        # Its record failed: no job id goes out (nothing acknowledged that a crash loses).
        self.assertEqual(client.frames(), [])
        self.assertIn("No space left on device", self.master.storage_problem)
        jobs = dict(self.master.scheduler.jobs)

        code, reply = client.reply(client.send(Op.SUBMIT_JOB, {"command": ["true"]}))
        self.assertEqual(code, Op.ERROR)
        self.assertEqual(reply["code"], "storage_unavailable")
        self.assertTrue(reply["message"].startswith(
            "storage unavailable: cannot write "), reply)
        self.assertIn("events.0.aof: No space left on device", reply["message"])
        self.assertEqual(self.master.scheduler.jobs, jobs)  # not applied

        dag = {"name": "d", "jobs": [{"id": "a", "command": ["true"]}]}
        code, reply = client.reply(client.send(Op.SUBMIT_DAG, dag))
        self.assertEqual((code, reply["code"]), (Op.ERROR, "storage_unavailable"))
        self.assertEqual(self.master.scheduler.runs, {})

        # Reads are answered meanwhile.
        self.assertIn("jobs", client.result(Op.STATS_JSON, {}))
        self.assertEqual(len(client.result(Op.LIST_JOBS, {})["jobs"]), len(jobs))

        # The disk recovers: the probe stores the pending record, its reply goes out, and
        # changes are taken again -- without anyone asking.
        self.faults.set(None)
        self.reactor.advance(5.0)
        code, reply = client.reply(pending)
        self.assertEqual(code, Op.ACK)
        job_id = reply["result"]["job_id"]
        self.assertIn(job_id, self.master.scheduler.jobs)
        self.assertIsNone(self.master.storage_problem)
        client.result(Op.SUBMIT_JOB, {"command": ["true"]})

        # One line when it started, one when it ended; no traceback.
        errors = [line for line in self.lines(LogLevel.error) if "storage" in line]
        self.assertEqual(len(errors), 1, errors)
        self.assertTrue(errors[0].startswith("storage unavailable: cannot write "))
        self.assertEqual(len([line for line in self.lines(LogLevel.info)
                              if line.startswith("storage available again")]), 1)
        self.assertEqual(self.lines(LogLevel.critical), [])

    def test_a_change_refused_is_not_recorded_and_a_restart_keeps_what_was_answered(self):
        client = self.client()
        answered = client.result(Op.SUBMIT_JOB, {"command": ["true"]})["job_id"]
        self.faults.set("denied")
        client.send(Op.SUBMIT_JOB, {"command": ["true"]})  # pending, never answered
        code, reply = client.reply(client.send(Op.SUBMIT_JOB, {"command": ["true"]}))
        self.assertIn("Operation not permitted", reply["message"])
        # The master stops with the disk still refusing: the pending change's client is
        # told it was not stored (the log is closing), and a restart has exactly what
        # was answered.
        self.successResultOf(self.master.stopService())
        told = self.errors(client)
        self.assertEqual([e["code"] for e in told], ["storage_unavailable"])
        again = MasterService(self.master.config, reactor=self.reactor)
        again.privilegedStartService()
        again.startService()
        self.addCleanup(again.stopService)
        self.assertEqual(list(again.scheduler.jobs), [answered])

    def test_a_workers_report_is_acknowledged_once_it_is_stored(self):
        # A worker's report is recorded as usual (not refused); the worker keeps it until
        # the acknowledgement, which waits for the disk.
        worker = self.worker("w1")
        worker.frames()
        client = self.client()
        job_id = client.result(Op.SUBMIT_JOB, {"command": ["true"]})["job_id"]
        dispatched = [b for op, b in worker.frames() if op == Op.DISPATCH]
        self.assertEqual([b["job_id"] for b in dispatched], [job_id])
        self.faults.set("full")
        client.send(Op.SUBMIT_JOB, {"command": ["true"]})  # the outage begins
        self.assertIsNotNone(self.master.storage_problem)
        worker.send(Op.JOB_COMPLETE, {"job_id": job_id, "attempt": 1, "exit_code": 0})
        self.assertEqual([op for op, _ in worker.frames() if op == Op.ACK], [])
        self.assertEqual(self.master.scheduler.jobs[job_id].state.value, "COMPLETED")
        self.faults.set(None)
        self.reactor.advance(5.0)
        self.assertEqual([op for op, _ in worker.frames() if op == Op.ACK], [Op.ACK])

    def test_a_reconnecting_workers_finished_reports_are_acknowledged_once_stored(self):
        # The worker forgets the ends it reports in REGISTER once that is answered, so the
        # answer waits for their record, as JOB_COMPLETE's does: a master that dies before
        # the disk recovers must not have told the worker to drop them.
        worker = self.worker("w1")
        client = self.client()
        job_id = client.result(Op.SUBMIT_JOB, {"command": ["true"]})["job_id"]
        self.assertEqual([b["job_id"] for b in self.dispatched(worker)], [job_id])
        worker.proto.connectionLost(Failure(ConnectionError("the link dropped")))
        self.faults.set("full")
        client.send(Op.SUBMIT_JOB, {"command": ["true"]})  # the outage begins
        self.assertIsNotNone(self.master.storage_problem)

        back = Peer(self.master)
        rid = back.send(Op.REGISTER, {
            "token": TOKEN, "worker_id": "w1", "name": "w1", "slots": 1,
            "finished": [{"job_id": job_id, "attempt": 1, "exit_code": 0}]})
        self.assertEqual([body for op, body in back.frames() if body.get("rid") == rid], [])
        self.assertEqual(self.master.scheduler.jobs[job_id].state.value, "COMPLETED")

        self.faults.set(None)
        self.reactor.advance(5.0)
        code, reply = back.reply(rid)
        self.assertEqual(code, Op.ACK)
        self.assertEqual(reply["result"], {"heartbeat_interval": 1.0})

    def test_settled_waits_for_a_failed_record_and_fails_only_when_the_log_closes(self):
        self.faults.set("full")
        self.master.persistence.append(b"x")
        self.reactor.advance(0)
        waiting = self.master.settled()
        self.assertNoResult(waiting)
        self.reactor.advance(1.0)
        self.assertNoResult(waiting)  # not swallowed, not fired: it was not stored
        self.master.persistence.close()
        self.failureResultOf(waiting, StorageUnavailable)


class SQLiteOutageTests(MasterCase):
    """The same rule with the SQLite backend: no `database or disk is full` reply for a job
    that was applied and ran anyway."""

    def setUp(self) -> None:
        self.reactor = MemoryReactorClock()
        self.data_dir = self.mktemp()
        self.config = Config(token=TOKEN, master=MasterConfig(
            listen="tcp:0:interface=127.0.0.1", data_dir=self.data_dir,
            heartbeat_interval=1.0, heartbeat_timeout=5.0),
            persistence=PersistenceConfig(backend="sqlite", fsync="always"))
        self.faults = Faults()
        # The database work runs at once, on this thread (a fake clock has no threads).
        self.patch(SQLitePersistence, "_run", lambda backend, f, *a: defer.maybeDeferred(
            f, *a))
        connect = sqlite3.connect
        self.patch(sqlite3, "connect", lambda *a, **k: FaultyConnection(connect(*a, **k),
                                                                         self.faults))
        self.master = MasterService(self.config, reactor=self.reactor)
        self.master.privilegedStartService()
        self.master.startService()
        self.addCleanup(self.master.stopService)

    def test_a_failed_commit_is_neither_answered_nor_applied_twice(self):
        client = self.client()
        self.faults.set("full")
        pending = client.send(Op.SUBMIT_JOB, {"command": ["true"]})
        self.assertEqual(client.frames(), [])  # no "database or disk is full", no job id
        self.assertIn("database or disk is full", self.master.storage_problem)
        code, reply = client.reply(client.send(Op.SUBMIT_JOB, {"command": ["true"]}))
        self.assertEqual(reply["code"], "storage_unavailable")
        self.faults.set(None)
        self.reactor.advance(5.0)
        code, reply = client.reply(pending)
        self.assertEqual(code, Op.ACK)
        self.assertIsNone(self.master.storage_problem)
        self.assertEqual(list(self.master.scheduler.jobs), [reply["result"]["job_id"]])


class TextFrameOutageTests(SynchronousTestCase):
    """The reference's text-frame clients read the same error."""

    def setUp(self) -> None:
        self.reactor = MemoryReactorClock()
        config = Config(token=TOKEN, master=MasterConfig(
            listen="tcp:0:interface=127.0.0.1", data_dir=self.mktemp(), text_frames="on"))
        self.master = MasterService(config, reactor=self.reactor)
        self.patch(self.master.legacy, "peer_uid", lambda transport: self.master.legacy.own_uid)
        self.patch(sys, "__stderr__", io.StringIO())
        self.master.privilegedStartService()
        self.master.startService()
        self.addCleanup(self.master.stopService)
        self.faults = Faults()
        self.master.persistence.ops = FaultyOps(self.faults)
        self.master.persistence._blocking = inline

    def ask(self, op: int, text: str) -> tuple[int, str]:
        proto = self.master.listener.factory.buildProtocol(None)
        transport = StringTransport(peerAddress=IPv4Address("TCP", "127.0.0.1", 40000))
        proto.makeConnection(transport)
        proto.dataReceived(encode_frame(op, text.encode(), flags=0))
        self.reactor.advance(0)
        frames = FrameDecoder().feed(transport.value())
        return (frames[0].opcode, frames[0].body.decode()) if frames else (None, "")

    def test_a_text_frame_change_is_refused_with_the_reason(self):
        from titan.protocols import legacy as L
        body = L.dag_body([L.run_payload("a", "a.py", b"1")])
        self.assertEqual(self.ask(Op.SUBMIT_DAG, body), (Op.ACK, "DAG_ACCEPTED"))
        self.faults.set("full")
        self.assertEqual(self.ask(Op.SUBMIT_DAG, body), (None, ""))  # pending: no reply
        op, text = self.ask(Op.SUBMIT_DAG, body)
        self.assertEqual(op, Op.ERROR)
        self.assertTrue(text.startswith("ERROR: storage unavailable: cannot write "), text)
        self.assertIn("No space left on device", text)

    def test_a_text_reply_waiting_for_a_record_never_stored_says_so(self):
        from titan.protocols import legacy as L
        proto = self.master.listener.factory.buildProtocol(None)
        transport = StringTransport(peerAddress=IPv4Address("TCP", "127.0.0.1", 40000))
        proto.makeConnection(transport)
        self.faults.set("full")
        proto.dataReceived(encode_frame(Op.SUBMIT_DAG, L.dag_body(
            [L.run_payload("a", "a.py", b"1")]).encode(), flags=0))
        self.reactor.advance(0)
        self.assertEqual(transport.value(), b"")  # held: its record is not stored
        self.successResultOf(self.master.stopService())  # the disk never recovered
        frames = FrameDecoder().feed(transport.value())
        self.assertEqual([f.opcode for f in frames], [Op.ERROR])
        self.assertTrue(frames[0].body.decode().startswith("ERROR: storage unavailable: "))


class StoreFailureTests(MasterCase):
    """What the store could not do is told to the job or client as such, and logged as
    one line per spell of failures, not a CRITICAL traceback per request."""

    def test_store_failures_are_named_and_logged_once(self):
        seen = capture_log(self)

        class Down:
            def set(self, *a, **k):
                return defer.fail(StoreUnavailable("no connection to 127.0.0.1:6379"))

            def get(self, key):
                return defer.fail(StoreError("MISCONF the store cannot write its AOF"))

        self.master.store = Down()
        client = self.client()
        for _ in range(3):
            code, reply = client.reply(client.send(Op.KV_SET, {"key": "k", "value": "v"}))
            self.assertEqual((code, reply["code"]), (Op.ERROR, "store_unavailable"))
            self.assertEqual(reply["message"],
                             "store unavailable: no connection to 127.0.0.1:6379")
        code, reply = client.reply(client.send(Op.KV_GET, {"key": "k"}))
        self.assertEqual(reply["code"], "store_error")
        self.assertIn("MISCONF", reply["message"])
        warned = [formatEvent(e) for e in seen if e.get("log_level") == LogLevel.warn
                  and "store failed" in formatEvent(e)]
        self.assertEqual(warned, ["the store failed: no connection to 127.0.0.1:6379"])
        self.assertEqual([e for e in seen if e.get("log_level") == LogLevel.critical], [])
        self.assertEqual(self.flushLoggedErrors(), [])

    def test_an_unexplained_failure_is_still_internal(self):
        self.assertIsNone(self.master.explain_failure(Failure(ValueError("x"))))
