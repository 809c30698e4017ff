"""No DISPATCH (or KILL) leaves the master before the records it follows from are durable.

Issue 14, part 3: with SQLite, a job's end freed a slot, the master dispatched the next job
at once, and the DISPATCH reached the worker before the commit of that end; a kill -9 then
replayed the job as PENDING and it ran twice with one TITAN_ATTEMPT.  Here the backend is a
fake IPersistence whose commits are held until the test releases them, and the worker's
connection a StringTransport: nothing may be written to it before the release.
"""
from __future__ import annotations

from twisted.internet import defer
from zope.interface import implementer
from zope.interface.verify import verifyObject

from titan.interfaces import IPersistence
from titan.protocols import codec
from titan.protocols.frame import encode_frame
from titan.protocols.opcodes import Op
from titan.master.api import OPERATOR
from tests.unit.test_master import TOKEN, MasterCase, Peer


@implementer(IPersistence)
class HeldBackend:
    """Records kept in memory; each append and barrier is durable only once the test
    releases it (`release()` all, or `release(n)` the oldest n), or fails it."""

    def __init__(self) -> None:
        self.records: list[bytes] = []
        self.held: list[defer.Deferred] = []
        self.bytes_since_compaction = 0

    def load(self):
        return None, []

    def append(self, record: bytes) -> defer.Deferred:
        self.records.append(record)
        d: defer.Deferred = defer.Deferred()
        self.held.append(d)
        return d

    def barrier(self) -> defer.Deferred:
        d: defer.Deferred = defer.Deferred()
        self.held.append(d)
        return d

    def release(self, n: int = -1) -> None:
        n = len(self.held) if n < 0 else n
        held, self.held = self.held[:n], self.held[n:]
        for d in held:
            d.callback(None)

    def fail(self) -> None:
        held, self.held = self.held, []
        for d in held:
            d.errback(OSError(28, "No space left on device"))

    unavailable = None

    def watch(self, callback) -> None:
        pass

    def compact(self, snapshot):
        return defer.succeed(None)

    def sync(self):
        return defer.succeed(None)

    def close(self):
        return defer.succeed(None)

    def describe(self):
        return {"backend": "held"}


class DispatchAfterDurableTests(MasterCase):
    def setUp(self) -> None:
        super().setUp()
        self.backend = HeldBackend()
        verifyObject(IPersistence, self.backend)
        self.addCleanup(self.master.persistence.close)  # the real one it replaces
        self.master.persistence = self.backend

    def settle(self) -> None:
        """Release every record and barrier until nothing waits (a reply takes its own
        barrier once the record it reports is durable)."""
        for _ in range(10):
            self.reactor.advance(0)
            if not self.backend.held:
                return
            self.backend.release()
        raise AssertionError("still waiting after 10 releases")

    def registered(self, worker_id: str, slots: int = 1) -> Peer:
        peer = Peer(self.master)
        rid = peer.send(Op.REGISTER, {"token": TOKEN, "worker_id": worker_id,
                                      "name": worker_id, "slots": slots})
        self.settle()
        self.assertEqual(peer.reply(rid)[0], Op.ACK)
        return peer

    def connected_client(self) -> Peer:
        peer = Peer(self.master)
        rid = peer.send(Op.HELLO, {"token": TOKEN})
        self.settle()
        self.assertEqual(peer.reply(rid)[0], Op.ACK)
        return peer

    def test_the_next_job_waits_for_the_end_that_freed_its_slot(self):
        """The issue's case: a job's end frees a slot; the next job's DISPATCH waits for
        the commit of that end."""
        w = self.registered("w1")
        c = self.connected_client()
        rid = c.send(Op.SUBMIT_JOBS, {"jobs": [{"command": ["true"]}] * 2})
        self.settle()
        a, b = c.reply(rid)[1]["result"]["job_ids"]
        self.assertEqual([d["job_id"] for d in self.dispatched(w)], [a])
        w.send(Op.JOB_COMPLETE, {"job_id": a, "attempt": 1, "exit_code": 0})
        self.assertEqual(self.master.scheduler.jobs[b].state.value, "RUNNING")  # in memory
        self.reactor.advance(0)
        self.assertEqual(w.transport.value(), b"")  # not a byte before the commit
        self.backend.release()
        self.assertEqual([(body["job_id"], body["attempt"]) for body in self.dispatched(w)],
                         [(b, 1)])
        self.settle()
        self.assertEqual([op for op, _ in w.frames()], [Op.ACK])  # the JOB_COMPLETE's

    def test_a_submitted_job_waits_for_its_submission(self):
        w = self.registered("w1")
        c = self.connected_client()
        c.send(Op.SUBMIT_JOB, {"command": ["true"]})
        self.reactor.advance(0)
        self.assertEqual(w.transport.value(), b"")
        self.backend.release()
        self.assertEqual(len(self.dispatched(w)), 1)

    def test_one_barrier_per_turn_and_frames_in_order(self):
        """Dispatches and kills of one turn share one barrier and go in the order decided:
        a job cancelled while its DISPATCH is held gets its KILL after it."""
        w = self.registered("w1", slots=8)
        c = self.connected_client()
        c.rid += 1  # sent by hand: the submission and the cancel are one turn
        rid = c.rid
        c.proto.dataReceived(encode_frame(Op.SUBMIT_JOBS, codec.pack(
            {"rid": rid, "jobs": [{"command": ["true"]}] * 8})))
        first = next(iter(self.master.scheduler.jobs))
        self.master.api.cancel(OPERATOR, first)
        self.reactor.advance(0)
        [(frames, durable)] = self.master._sealed  # one batch: 8 DISPATCH and a KILL
        self.assertEqual((len(frames), durable), (9, False))
        self.assertEqual(w.transport.value(), b"")
        self.backend.release()
        ops = [(op, body["job_id"]) for op, body in w.frames()]
        self.assertEqual(len([op for op, _ in ops if op == Op.DISPATCH]), 8)
        self.assertLess(ops.index((Op.DISPATCH, first)), ops.index((Op.KILL, first)))
        self.settle()
        self.assertEqual(len(c.reply(rid)[1]["result"]["job_ids"]), 8)

    def test_a_later_turn_waits_for_an_earlier_one(self):
        """Barriers that fire out of order do not reorder the frames."""
        w = self.registered("w1", slots=2)
        c = self.connected_client()
        outbox = []  # the barriers the frames of each turn wait for
        seal = self.master._seal_outbox

        def sealing() -> None:
            before = len(self.backend.held)
            seal()
            outbox.extend(self.backend.held[before:])
        self.patch(self.master, "_seal_outbox", sealing)
        c.send(Op.SUBMIT_JOB, {"command": ["first"]})
        c.send(Op.SUBMIT_JOB, {"command": ["second"]})
        self.assertEqual(len(outbox), 2)
        self.backend.held.remove(outbox[1])
        outbox[1].callback(None)  # the second turn's barrier, first
        self.reactor.advance(0)
        self.assertEqual(self.dispatched(w), [])
        self.backend.release()
        self.assertEqual([d["spec"]["command"] for d in self.dispatched(w)],
                         [["first"], ["second"]])

    def test_frames_wait_through_a_failed_barrier(self):
        """A barrier that fails (what came before was not stored) holds the frames; they go
        once a later barrier says the log holds what they follow from."""
        w = self.registered("w1")
        c = self.connected_client()
        c.send(Op.SUBMIT_JOB, {"command": ["true"]})
        self.backend.fail()
        self.flushLoggedErrors(OSError)
        self.reactor.advance(0.5)
        self.assertEqual(self.dispatched(w), [])
        self.reactor.advance(0.5)  # tried again: a new barrier, held
        self.assertEqual(self.dispatched(w), [])
        self.backend.release()
        self.assertEqual(len(self.dispatched(w)), 1)

    def test_no_frame_for_a_connection_that_has_gone(self):
        """A worker that reconnects while its DISPATCH is held reported afresh: the frame
        meant for the old connection goes nowhere (the job is requeued, and dispatched on
        the new connection once that is durable)."""
        w = self.registered("w1")
        c = self.connected_client()
        c.send(Op.SUBMIT_JOB, {"command": ["true"]})
        w.proto.connectionLost(None)
        again = Peer(self.master)
        again.send(Op.REGISTER, {"token": TOKEN, "worker_id": "w1", "name": "w1",
                                 "slots": 1})
        self.settle()
        self.assertEqual(w.transport.value(), b"")
        [dispatch] = self.dispatched(again)
        self.assertEqual(dispatch["attempt"], 2)
