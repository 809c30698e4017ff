"""The master service, driven through its protocol with StringTransport and a fake clock."""
from __future__ import annotations

import os
import stat

from twisted.internet import defer
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.trial.unittest import SynchronousTestCase

from titan.config import Config, MasterConfig
from titan.core import events as ev
from titan.core.codec import decode_event
from titan.master.service import LONG_POLL, MasterService
from titan.persistence.aof import LogFile
from titan.protocols import codec
from titan.protocols.frame import FrameDecoder, encode_frame
from titan.protocols.opcodes import Op

TOKEN = "sesame"


class Peer:
    """One connection to the master, as a client or worker would hold it."""

    def __init__(self, master: MasterService) -> None:
        self.reactor = master.reactor
        factory = master.listener.factory
        self.proto = factory.buildProtocol(None)
        self.transport = StringTransport()
        self.proto.makeConnection(self.transport)
        self.decoder = FrameDecoder()
        self.rid = 0

    def send(self, op: int, body: dict, rid: bool = True) -> int:
        if rid:
            self.rid += 1
            body = dict(body, rid=self.rid)
        self.proto.dataReceived(encode_frame(op, codec.pack(body)))
        self.reactor.advance(0)  # the turn's records are written; replies go out
        return self.rid

    def frames(self) -> list[tuple[int, dict]]:
        data = self.transport.value()
        self.transport.clear()
        return [(f.opcode, codec.unpack(f.body)) for f in self.decoder.feed(data)]

    def reply(self, rid: int) -> tuple[int, dict]:
        for op, body in self.frames():
            if body.get("rid") == rid:
                return op, body
        raise AssertionError(f"no reply to request {rid}")

    def result(self, op: int, body: dict):
        code, reply = self.reply(self.send(op, body))
        assert code == Op.ACK, reply
        return reply["result"]


class MasterCase(SynchronousTestCase):
    def setUp(self) -> None:
        self.reactor = MemoryReactorClock()
        self.data_dir = self.mktemp()
        config = Config(token=TOKEN, master=MasterConfig(
            listen="tcp:0:interface=127.0.0.1", data_dir=self.data_dir,
            heartbeat_interval=1.0, heartbeat_timeout=5.0))
        self.master = MasterService(config, reactor=self.reactor)
        self.master.privilegedStartService()
        self.master.startService()
        self.addCleanup(self.master.stopService)

    def client(self) -> Peer:
        peer = Peer(self.master)
        peer.result(Op.HELLO, {"token": TOKEN})
        return peer

    def worker(self, worker_id: str, slots: int = 1, **extra) -> Peer:
        peer = Peer(self.master)
        result = peer.result(Op.REGISTER, {"token": TOKEN, "worker_id": worker_id,
                                           "name": worker_id, "slots": slots, **extra})
        self.assertEqual(result["heartbeat_interval"], 1.0)
        return peer

    def dispatched(self, peer: Peer) -> list[dict]:
        return [body for op, body in peer.frames() if op == Op.DISPATCH]


class MasterTests(MasterCase):
    def test_listens_and_writes_its_port(self):
        # The master's listener and the web API's (web.enabled by default).
        self.assertEqual(len(self.reactor.tcpServers), 2)
        with open(os.path.join(self.data_dir, "master.port")) as f:
            self.assertTrue(f.read().strip().isdigit())

    def test_nothing_is_served_before_hello(self):
        peer = Peer(self.master)
        op, body = peer.reply(peer.send(Op.SUBMIT_JOB, {"command": ["true"]}))
        self.assertEqual(op, Op.ERROR)
        self.assertEqual(body["code"], "hello_required")
        self.assertTrue(peer.transport.disconnecting)
        self.assertEqual(self.master.scheduler.jobs, {})

    def test_wrong_token_is_refused(self):
        peer = Peer(self.master)
        op, body = peer.reply(peer.send(Op.HELLO, {"token": "guess"}))
        self.assertEqual((op, body["code"], body["message"]),
                         (Op.ERROR, "auth", "wrong cluster token"))
        self.assertTrue(peer.transport.disconnecting)

    def test_worker_ops_need_a_registered_worker(self):
        peer = self.client()
        op, body = peer.reply(peer.send(Op.JOB_COMPLETE, {"job_id": "x", "attempt": 1}))
        self.assertEqual((op, body["code"]), (Op.ERROR, "not_a_worker"))
        self.assertFalse(peer.transport.disconnecting)

    def test_job_round_trip(self):
        """Submit → dispatch → logs → complete; a waiting client hears of it."""
        w = self.worker("w1")
        c = self.client()
        job_id = c.result(Op.SUBMIT_JOB, {"command": ["echo", "hi"]})["job_id"]
        [dispatch] = self.dispatched(w)
        self.assertEqual((dispatch["job_id"], dispatch["attempt"]), (job_id, 1))
        self.assertEqual(dispatch["spec"]["command"], ["echo", "hi"])
        wait_rid = c.send(Op.WAIT_JOB, {"job_id": job_id})
        self.assertEqual(c.frames(), [])  # held until the job ends
        w.send(Op.LOG_BATCH, {"job_id": job_id, "attempt": 1,
                              "chunks": [["out", b"hi\n"], ["err", b"oops\n"]]}, rid=False)
        w.result(Op.JOB_COMPLETE, {"job_id": job_id, "attempt": 1, "exit_code": 0})
        op, body = c.reply(wait_rid)
        self.assertEqual(body["result"]["state"], "COMPLETED")
        logs = c.result(Op.GET_LOGS, {"job_id": job_id})
        self.assertEqual((logs["data"], logs["offset"], logs["done"]), (b"hi\noops\n", 8, True))

    def test_list_jobs_names_a_bad_state_or_limit(self):
        # An SDK user's jobs(state="bogus") used to get [] as if no job had that state.
        c = self.client()
        c.result(Op.SUBMIT_JOB, {"command": ["true"]})
        self.assertEqual(len(c.result(Op.LIST_JOBS, {"state": "pending", "limit": 5})["jobs"]),
                         1)
        for body, says in (({"state": "bogus"}, "no job state 'bogus'; the states are PENDING"),
                           ({"limit": 0}, "limit must be a whole number of at least 1, not 0"),
                           ({"limit": "9"}, "not '9'")):
            op, reply = c.reply(c.send(Op.LIST_JOBS, body))
            self.assertEqual((op, reply["code"]), (Op.ERROR, "bad_request"))
            self.assertIn(says, reply["message"])

    def test_wait_is_a_bounded_long_poll(self):
        w = self.worker("w1")
        c = self.client()
        job_id = c.result(Op.SUBMIT_JOB, {"command": ["sleep", "100"]})["job_id"]
        rid = c.send(Op.WAIT_JOB, {"job_id": job_id})
        for _ in range(int(LONG_POLL) - 1):
            self.reactor.advance(1)
            w.send(Op.HEARTBEAT, {}, rid=False)
        self.reactor.advance(0.5)
        self.assertEqual(c.frames(), [])
        self.reactor.advance(1)
        self.assertEqual(c.reply(rid)[1]["result"]["state"], "RUNNING")

    def test_follow_logs_wakes_on_output(self):
        w = self.worker("w1")
        c = self.client()
        job_id = c.result(Op.SUBMIT_JOB, {"command": ["x"]})["job_id"]
        rid = c.send(Op.GET_LOGS, {"job_id": job_id, "offset": 0, "wait": True})
        self.assertEqual(c.frames(), [])
        w.send(Op.LOG_BATCH, {"job_id": job_id, "attempt": 1, "chunks": [["out", b"a"]]},
               rid=False)
        result = c.reply(rid)[1]["result"]
        self.assertEqual((result["data"], result["offset"], result["done"]), (b"a", 1, False))

    def test_silent_worker_loses_its_job_to_another(self):
        w1 = self.worker("w1")
        c = self.client()
        job_id = c.result(Op.SUBMIT_JOB, {"command": ["sleep", "9"]})["job_id"]
        self.assertEqual(len(self.dispatched(w1)), 1)
        w2 = self.worker("w2")
        for _ in range(4):
            self.reactor.advance(1)
            w2.send(Op.HEARTBEAT, {}, rid=False)
        self.assertEqual(self.dispatched(w2), [])
        self.reactor.advance(2)
        w2.send(Op.HEARTBEAT, {}, rid=False)
        [again] = self.dispatched(w2)
        self.assertEqual((again["job_id"], again["attempt"]), (job_id, 2))
        workers = c.result(Op.LIST_WORKERS, {})["workers"]
        self.assertEqual([w["worker_id"] for w in workers], ["w2"])

    def test_reconnecting_worker_keeps_its_job(self):
        w1 = self.worker("w1")
        c = self.client()
        job_id = c.result(Op.SUBMIT_JOB, {"command": ["sleep", "9"]})["job_id"]
        w1.proto.connectionLost(None)
        self.assertEqual(c.result(Op.JOB_INFO, {"job_id": job_id})["state"], "RUNNING")
        again = self.worker("w1", running=[{"job_id": job_id, "attempt": 1}])
        self.assertEqual(self.dispatched(again), [])
        self.reactor.advance(10)  # heartbeats are not what this test is about
        self.assertEqual(c.result(Op.JOB_INFO, {"job_id": job_id})["attempt"], 1)

    def test_bad_submission_names_the_problem(self):
        c = self.client()
        op, body = c.reply(c.send(Op.SUBMIT_JOB, {"command": []}))
        self.assertEqual(op, Op.ERROR)
        self.assertEqual(body["code"], "bad_job")
        self.assertIn("command", body["message"])
        op, body = c.reply(c.send(Op.JOB_INFO, {"job_id": "nope"}))
        self.assertEqual((body["code"], body["message"]), ("not_found", "no job nope"))

    def test_cancel(self):
        w = self.worker("w1")
        c = self.client()
        job_id = c.result(Op.SUBMIT_JOB, {"command": ["sleep", "9"]})["job_id"]
        w.frames()
        result = c.result(Op.CANCEL_JOB, {"job_id": job_id})
        self.assertEqual((result["state"], result["cancelled"]), ("CANCELLED", True))
        [(op, kill)] = w.frames()
        self.assertEqual((op, kill["job_id"], kill["attempt"]), (Op.KILL, job_id, 1))
        self.assertFalse(c.result(Op.CANCEL_JOB, {"job_id": job_id})["cancelled"])


class HeldPersistence:
    """The master's backend, with every append's durability held until the test says so."""

    def __init__(self, backend) -> None:
        self.backend = backend
        self.held: list = []

    def append(self, record: bytes):
        self.backend.append(record)
        d = defer.Deferred()
        self.held.append(d)
        return d

    def barrier(self):
        if not self.held:
            return self.backend.barrier()
        d = defer.Deferred()
        self.held.append(d)
        return d

    def release(self) -> None:
        held, self.held = self.held, []
        for d in held:
            d.callback(None)

    def __getattr__(self, name: str):
        return getattr(self.backend, name)


class DurableRepliesTests(MasterCase):
    """A reply reports nothing a crash could take back (fsync: always, group commit)."""

    def setUp(self) -> None:
        super().setUp()
        self.held = HeldPersistence(self.master.persistence)
        self.master.persistence = self.held

    def worker(self, worker_id: str, slots: int = 1, **extra) -> Peer:
        peer = Peer(self.master)
        rid = peer.send(Op.REGISTER, {"token": TOKEN, "worker_id": worker_id,
                                      "name": worker_id, "slots": slots, **extra})
        self.released(peer, rid)  # a worker's joining is recorded too
        return peer

    def released(self, peer: Peer, rid: int) -> dict:
        self.assertEqual(peer.frames(), [])  # nothing until the record is durable
        self.held.release()
        op, body = peer.reply(rid)
        self.assertEqual(op, Op.ACK, body)
        return body["result"]

    def test_a_status_waits_for_the_end_to_be_durable(self):
        w = self.worker("w1")
        c = self.client()
        job_id = self.released(c, c.send(Op.SUBMIT_JOB, {"command": ["true"]}))["job_id"]
        self.assertEqual(c.result(Op.JOB_INFO, {"job_id": job_id})["state"], "RUNNING")
        w.frames()
        done = w.send(Op.JOB_COMPLETE, {"job_id": job_id, "attempt": 1, "exit_code": 0})
        info = c.send(Op.JOB_INFO, {"job_id": job_id})
        wait = c.send(Op.WAIT_JOB, {"job_id": job_id})  # already ended in memory
        self.assertEqual(c.frames(), [])
        self.assertEqual(w.frames(), [])
        self.held.release()
        replies = {body["rid"]: body["result"]["state"] for _, body in c.frames()}
        self.assertEqual(replies, {info: "COMPLETED", wait: "COMPLETED"})
        self.assertEqual(w.reply(done)[0], Op.ACK)

    def test_everysec_answers_once_the_record_is_written(self):
        """The default policy's promise: a crash of the process loses nothing answered."""
        self.master.persistence = self.held.backend
        c = self.client()
        c.proto.dataReceived(encode_frame(Op.SUBMIT_JOB, codec.pack(
            {"rid": 7, "command": ["true"]})))
        log = os.path.join(self.data_dir, "log", "events.0.aof")
        self.assertEqual(c.frames(), [])  # the record is not written yet (end of the turn)
        self.assertEqual(LogFile(log).records(), [])
        self.reactor.advance(0)
        [(op, body)] = c.frames()
        [record] = LogFile(log).records()
        self.assertEqual(decode_event(record)[1].spec.job_id, body["result"]["job_id"])

    def test_a_held_reply_that_cannot_be_sent_is_answered_as_a_failure(self):
        c = self.client()
        job_id = self.released(c, c.send(Op.SUBMIT_JOB, {"command": ["true"]}))["job_id"]
        self.master.handle(ev.CancelRequested(job_id))  # a record to wait for
        self.patch(self.master.api, "job_info", lambda caller, ref: {"unpackable": object()})
        rid = c.send(Op.JOB_INFO, {"job_id": job_id})
        self.assertEqual(c.frames(), [])
        self.held.release()
        op, body = c.reply(rid)
        self.assertEqual((op, body["code"]), (Op.ERROR, "internal"))
        self.assertEqual(len(self.flushLoggedErrors(TypeError)), 1)  # and it is logged

    def test_a_reply_with_nothing_pending_goes_at_once(self):
        c = self.client()
        self.assertEqual(c.result(Op.LIST_WORKERS, {})["workers"], [])


class TokenTests(SynchronousTestCase):
    def test_generated_into_the_data_dir_once(self):
        data_dir = self.mktemp()
        config = Config(master=MasterConfig(listen="tcp:0", data_dir=data_dir))
        first = MasterService(config, reactor=MemoryReactorClock())
        first.startService()
        first.stopService()
        path = os.path.join(data_dir, "token")
        self.assertEqual(stat.S_IMODE(os.stat(path).st_mode), 0o600)
        second = MasterService(config, reactor=MemoryReactorClock())
        second.startService()
        second.stopService()
        self.assertEqual(first.token, second.token)
        self.assertGreater(len(first.token), 20)
