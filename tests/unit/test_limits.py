"""Limits against hostile clients (issue 15, part 3; docs/security.md): the frame limit
before the hello, the hello deadline, connection caps, the descriptor limit, backpressure
on unread replies, streamed log reads, and warnings said once per peer."""
from __future__ import annotations

import io
import resource
import sys

from twisted.internet.address import IPv4Address
from twisted.internet.task import Clock
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.trial.unittest import SynchronousTestCase

from titan.config import Config, MasterConfig
from titan.limits import (
    ConnectionLimits, EpisodeLog, Refused, connection_cap, raise_fd_limit)
from titan.master.service import MasterService
from titan.protocols import codec, rpc
from titan.protocols.frame import Frame, FrameDecoder, FrameError, HEADER, encode_frame
from titan.protocols.opcodes import Op
from titan.store.commands import Store
from titan.store.server import StoreFactory
from titan.master.api import OPERATOR

TOKEN = "sesame"
MiB = 1024 * 1024


class BufferingTransport(StringTransport):
    """A StringTransport that behaves like a TCP one towards its producer: paused once more
    than `bufferSize` bytes wait unsent, resumed when `drain()` takes them."""

    bufferSize = 4096

    def __init__(self, peer: str = "192.168.1.1", port: int = 54321) -> None:
        super().__init__(peerAddress=IPv4Address("TCP", peer, port), lenient=True)
        self.producer_paused = False
        self.dataBuffer = b""
        self.offset = 0

    @property
    def _tempDataLen(self) -> int:
        return len(self.value())

    def write(self, data: bytes) -> None:
        super().write(data)
        if self.producer is not None and self.streaming and not self.producer_paused \
                and len(self.value()) > self.bufferSize:
            self.producer_paused = True
            self.producer.pauseProducing()

    def drain(self) -> bytes:
        data = self.value()
        self.clear()
        if self.producer is not None and self.producer_paused:
            self.producer_paused = False
            self.producer.resumeProducing()
        return data


class Conn:
    """One connection to the master over a BufferingTransport."""

    def __init__(self, case: "LimitsCase", peer: str = "192.168.1.1", port: int = 54321):
        self.reactor = case.reactor
        self.proto = case.master.listener.factory.buildProtocol(None)
        self.transport = BufferingTransport(peer, port)
        self.proto.makeConnection(self.transport)
        self.rid = 0

    def send_raw(self, data: bytes) -> None:
        self.proto.dataReceived(data)
        self.reactor.advance(0)

    def send(self, op: int, body: dict) -> int:
        self.rid += 1
        self.send_raw(encode_frame(op, codec.pack(dict(body, rid=self.rid))))
        return self.rid

    def frames(self) -> list:
        return FrameDecoder(64 * MiB).feed(self.transport.drain())

    def replies(self) -> list[tuple[int, dict]]:
        return [(f.opcode, codec.unpack(f.body)) for f in self.frames()
                if isinstance(f, Frame) and f.structured]

    def hello(self, **extra) -> dict:
        rid = self.send(Op.HELLO, {"token": TOKEN, **extra})
        (op, body), = [r for r in self.replies() if r[1].get("rid") == rid]
        assert op == Op.ACK, body
        return body["result"]

    @property
    def closed(self) -> bool:
        return bool(self.transport.disconnecting)


class Warnings:
    def __init__(self) -> None:
        self.lines: list[tuple[str, dict]] = []

    def warn(self, format: str, **fields) -> None:
        self.lines.append((format, fields))


class LimitsCase(SynchronousTestCase):
    options: dict = {}

    def setUp(self) -> None:
        self.reactor = MemoryReactorClock()
        config = Config(token=TOKEN, master=MasterConfig(
            listen="tcp:0:interface=127.0.0.1", data_dir=self.mktemp(),
            heartbeat_interval=1.0, heartbeat_timeout=5.0, **self.options))
        self.master = MasterService(config, reactor=self.reactor)
        self.patch(sys, "__stderr__", io.StringIO())  # text frames on: the loud warning
        self.master.privilegedStartService()
        self.master.startService()
        self.addCleanup(self.master.stopService)
        self.factory = self.master.listener.factory
        self.warnings = Warnings()
        self.factory.episodes.log = self.warnings


class PreauthFrameTests(LimitsCase):
    def test_a_large_frame_before_hello_is_refused_at_its_header(self):
        c = Conn(self)
        c.send_raw(HEADER.pack(1, Op.HELLO, 1, 0, 16 * MiB) + b"\0" * 100_000)
        (op, body), = c.replies()
        self.assertEqual((op, body["code"]), (Op.ERROR, "too_large"))
        self.assertIn("over the 65536-byte limit before HELLO (master.preauth_frame_bytes)",
                      body["message"])
        self.assertTrue(c.closed)
        self.assertEqual(c.proto._decoder.buffered, 0)  # none of the body was kept

    def test_after_the_hello_the_full_limit_applies(self):
        c = Conn(self)
        c.hello()
        rid = c.send(Op.SUBMIT_JOB, {"command": ["true"], "env": {"BIG": "x" * MiB}})
        (op, body), = c.replies()
        self.assertEqual((op, body["rid"]), (Op.ACK, rid))
        self.assertFalse(c.closed)

    def test_nothing_but_the_hello_is_decoded_before_it(self):
        unpacked = []
        real = rpc.codec.unpack
        self.patch(rpc.codec, "unpack", lambda data: unpacked.append(len(data)) or real(data))
        c = Conn(self)
        c.send_raw(encode_frame(Op.SUBMIT_JOB, codec.pack(
            {"rid": 7, "command": ["true"], "env": {"A": "x" * 60_000}})))
        self.assertEqual(unpacked, [])
        (_, body), = [(f.opcode, real(f.body)) for f in c.frames()]
        self.assertEqual((body["rid"], body["code"]), (7, "hello_required"))
        self.assertTrue(c.closed)
        self.assertEqual(self.master.scheduler.jobs, {})

    def test_a_large_register_goes_after_a_hello_as_worker(self):
        big = {"token": TOKEN, "worker_id": "w1", "name": "w1", "slots": 1,
               "finished": [{"job_id": "gone", "attempt": 1, "exit_code": 0,
                             "logs": [["out", b"x" * 200_000]]}]}
        c = Conn(self)
        c.send(Op.REGISTER, big)
        self.assertEqual([b["code"] for _, b in c.replies()], ["too_large"])
        w = Conn(self)
        self.assertIsNone(w.hello(**{"as": "worker"})["job_id"])
        self.assertIsNone(w.proto.role)  # nothing but REGISTER yet
        rid = w.send(Op.REGISTER, big)
        self.assertEqual([(op, b["rid"]) for op, b in w.replies()], [(Op.ACK, rid)])
        self.assertEqual(w.proto.role, "worker")
        self.assertEqual(self.factory.limits.describe()["workers"], 1)


class TextFrameLimitTests(LimitsCase):
    options = {"text_frames": "on", "text_frame_bytes": 4 * MiB}

    def setUp(self) -> None:
        super().setUp()
        self.served = True
        self.patch(self.master.legacy, "refusal",
                   lambda protocol: None if self.served else "not for you")

    def test_text_frames_where_served_have_their_own_limit(self):
        c = Conn(self)
        c.send_raw(HEADER.pack(1, Op.UPLOAD_ASSET, 0, 0, 3 * MiB) + b"a" * MiB)
        self.assertFalse(c.closed)
        self.assertEqual(c.proto._decoder.buffered, MiB + 8)
        c = Conn(self)
        c.send_raw(HEADER.pack(1, Op.UPLOAD_ASSET, 0, 0, 4 * MiB + 1))
        self.assertEqual(c.transport.value()[8:], b"ERROR: UPLOAD_ASSET text frame of "
                         b"4194305 bytes is over the 4194304-byte limit "
                         b"(master.text_frame_bytes)")
        self.assertTrue(c.closed)

    def test_where_they_are_not_served_the_preauth_limit_holds(self):
        self.served = False
        c = Conn(self)
        c.send_raw(HEADER.pack(1, Op.UPLOAD_ASSET, 0, 0, 3 * MiB))
        self.assertIn(b"over the 65536-byte limit (not for you)", c.transport.value())
        self.assertTrue(c.closed)

    def test_large_text_requests_share_one_budget(self):
        self.factory.master.config = self.master.config.override(
            "master", preauth_buffer_bytes=5 * MiB)
        first, second = Conn(self), Conn(self)
        first.send_raw(HEADER.pack(1, Op.UPLOAD_ASSET, 0, 0, 3 * MiB) + b"a" * (3 * MiB - 8))
        self.assertFalse(first.closed)
        second.send_raw(HEADER.pack(1, Op.UPLOAD_ASSET, 0, 0, 3 * MiB) + b"a" * (3 * MiB - 8))
        self.assertTrue(second.closed)
        self.assertIn(b"(master.preauth_buffer_bytes)", second.transport.value())
        self.assertEqual(self.factory.preauth_buffered, 3 * MiB)
        first.proto.connectionLost(None)
        self.assertEqual(self.factory.preauth_buffered, 0)


class HelloDeadlineTests(LimitsCase):
    def test_a_connection_without_hello_is_closed_at_the_deadline(self):
        c = Conn(self)
        c.send_raw(b"\x01")  # a slowloris' byte
        self.reactor.advance(9.9)
        self.assertFalse(c.closed)
        self.reactor.advance(0.2)
        (op, body), = c.replies()
        self.assertEqual((op, body["code"]), (Op.ERROR, "hello_timeout"))
        self.assertIn("no HELLO within 10 s of connecting (master.hello_timeout)",
                      body["message"])
        self.assertTrue(c.closed)

    def test_a_hello_in_time_stops_the_clock(self):
        c = Conn(self)
        c.hello()
        self.reactor.advance(60)
        self.assertFalse(c.closed)


class ConnectionCapTests(LimitsCase):
    options = {"max_connections": 6, "max_pending_connections": 4, "max_pending_per_host": 2,
               "worker_reserve": 2}

    def test_the_oldest_pending_connection_of_a_peer_makes_room(self):
        a1, a2 = Conn(self, "10.0.0.9", 1), Conn(self, "10.0.0.9", 2)
        a3 = Conn(self, "10.0.0.9", 3)
        self.assertTrue(a1.closed)
        (op, body), = a1.replies()
        self.assertEqual(body["code"], "evicted")
        self.assertIn("2 newer connections from 10.0.0.9 have not said HELLO either "
                      "(master.max_pending_per_host)", body["message"])
        self.assertFalse(a2.closed or a3.closed)
        a3.hello()  # a client that says its hello is no longer pending
        self.assertEqual(self.factory.limits.describe(),
                         {"pending": 1, "clients": 1, "workers": 0, "max_connections": 6})

    def test_room_is_kept_for_workers(self):
        clients = []
        for i in range(4):
            c = Conn(self, f"10.0.1.{i}")
            c.hello()
            clients.append(c)
        late = Conn(self, "10.0.2.1")
        rid = late.send(Op.HELLO, {"token": TOKEN})
        (op, body), = late.replies()
        self.assertEqual((op, body["rid"], body["code"]), (Op.ERROR, rid, "busy"))
        self.assertIn("(master.max_connections less master.worker_reserve)", body["message"])
        self.assertTrue(late.closed)
        late.proto.connectionLost(None)
        for i in range(2):
            w = Conn(self, "10.0.3.1", i)
            w.send(Op.REGISTER, {"token": TOKEN, "worker_id": f"w{i}", "slots": 1})
            self.assertEqual([op for op, _ in w.replies()], [Op.ACK])
        self.assertEqual(sorted(self.master.worker_conns), ["w0", "w1"])

    def test_full_of_authenticated_connections_a_new_one_is_refused(self):
        for i in range(4):
            Conn(self, f"10.0.1.{i}").hello()
        for i in range(2):
            Conn(self, "10.0.3.1", i).send(Op.REGISTER, {"token": TOKEN, "worker_id": f"w{i}"})
        extra = Conn(self, "10.0.4.1")
        (op, body), = extra.replies()
        self.assertEqual(body["code"], "busy")
        self.assertIn("6 connections, its limit (master.max_connections)", body["message"])
        self.assertTrue(extra.closed)


class ConnectionLimitsTests(SynchronousTestCase):
    def test_past_max_pending_the_oldest_of_any_peer_goes(self):
        limits = ConnectionLimits(100, max_pending=3, max_pending_per_host=10, worker_reserve=0)
        for name in "abc":
            self.assertEqual(limits.connected(name, name), [])
        self.assertEqual(limits.connected("d", "d"), ["a"])
        self.assertEqual(list(limits.pending), ["b", "c", "d"])

    def test_full_evicts_pending_before_refusing(self):
        limits = ConnectionLimits(2, max_pending=2, max_pending_per_host=2, worker_reserve=1)
        limits.connected("w", "h")
        limits.authenticated("w", "worker")
        limits.connected("p", "h")
        self.assertEqual(limits.connected("q", "h"), ["p"])
        limits.authenticated("q", "client")
        self.assertRaises(Refused, limits.connected, "r", "h")
        limits.gone("q")
        self.assertEqual(limits.connected("r", "h"), [])

    def test_cap_below_the_descriptor_limit(self):
        self.assertEqual(connection_cap(4096, 1024), 960)
        self.assertEqual(connection_cap(100, 1024), 100)
        self.assertEqual(connection_cap(100, -1), 100)


class DescriptorLimitTests(SynchronousTestCase):
    def test_the_soft_limit_is_raised_to_the_hard_one(self):
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        self.addCleanup(resource.setrlimit, resource.RLIMIT_NOFILE, (soft, hard))
        if hard == resource.RLIM_INFINITY or hard <= 256:
            self.skipTest(f"a hard limit of {hard} leaves nothing to test")
        resource.setrlimit(resource.RLIMIT_NOFILE, (256, hard))
        self.assertEqual(raise_fd_limit(), (hard, hard))
        self.assertEqual(resource.getrlimit(resource.RLIMIT_NOFILE), (hard, hard))

    def test_the_master_raises_it_when_it_listens_and_caps_connections_below_it(self):
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        self.addCleanup(resource.setrlimit, resource.RLIMIT_NOFILE, (soft, hard))
        if hard == resource.RLIM_INFINITY or hard <= 256:
            self.skipTest(f"a hard limit of {hard} leaves nothing to test")
        resource.setrlimit(resource.RLIMIT_NOFILE, (256, hard))
        reactor = MemoryReactorClock()
        master = MasterService(Config(token=TOKEN, master=MasterConfig(
            listen="tcp:0", data_dir=self.mktemp(), max_connections=10 ** 7)),
            reactor=reactor)
        master.listener.factory.doStart()
        self.addCleanup(master.listener.factory.doStop)
        self.assertEqual(resource.getrlimit(resource.RLIMIT_NOFILE)[0], hard)
        self.assertEqual(master.listener.factory.limits.max_connections, hard - 64)


class BackpressureTests(LimitsCase):
    def setUp(self) -> None:
        super().setUp()
        c = Conn(self)
        c.hello()
        c.send(Op.SUBMIT_JOBS, {"jobs": [{"command": ["true"], "delay": 3600}] * 200})
        c.replies()

    def test_unread_replies_stop_the_reading_of_requests(self):
        c = Conn(self)
        c.hello()
        c.send_raw(b"".join(encode_frame(Op.LIST_JOBS, codec.pack({"rid": 10 + i,
                                                                   "limit": 1000}))
                            for i in range(50)))
        self.assertTrue(c.proto.paused)
        self.assertEqual(c.transport.producerState, "paused")  # the socket is not read
        self.assertEqual(len(c.proto._held), 49)  # one reply was made; 49 wait
        got = [body["rid"] for _, body in c.replies()]  # the peer reads: one more
        self.assertEqual(got, [10])
        while c.proto._held or c.transport.value():
            got += [body["rid"] for _, body in c.replies()]
            self.reactor.advance(0)
        self.assertEqual(got, list(range(10, 60)))
        self.assertFalse(c.proto.paused)
        self.assertEqual(c.transport.producerState, "producing")

    def test_a_connection_that_stays_full_is_closed(self):
        c = Conn(self, "10.9.9.9")
        c.hello()
        c.send(Op.LIST_JOBS, {"limit": 1000})
        self.assertTrue(c.proto.paused)
        self.reactor.advance(29)
        self.assertFalse(c.closed)
        self.reactor.advance(1.1)
        self.assertTrue(c.closed)
        self.assertTrue(c.transport.disconnected)  # aborted: what was unsent is dropped
        self.assertEqual([f[1]["peer"] for f in self.warnings.lines], ["10.9.9.9:54321"])
        self.assertIn("master.send_stall_timeout", self.warnings.lines[0][0])

    def test_a_draining_connection_stays(self):
        c = Conn(self)
        c.hello()
        c.send(Op.LIST_JOBS, {"limit": 1000})
        self.reactor.advance(20)
        c.replies()
        self.reactor.advance(20)
        self.assertFalse(c.closed)

    def test_too_much_unsent_closes_at_once(self):
        c = Conn(self)
        c.hello()
        c.proto.max_send_buffer = 100_000
        for _ in range(100):
            c.proto.push(Op.MESSAGE, {"channel": "c", "message": b"m" * 2000})
            if c.closed:
                break
        self.assertTrue(c.transport.disconnected)
        self.assertLess(len(c.transport.value()), 110_000)


class StreamedLogTests(LimitsCase):
    options = {"text_frames": "on"}

    def test_a_text_get_logs_is_streamed_as_it_is_read(self):
        self.patch(self.master.legacy, "refusal", lambda protocol: None)
        c = Conn(self)
        c.hello()
        c.send(Op.SUBMIT_DAG, {"name": "p", "jobs": [{"id": "talk", "command": ["true"]}]})
        key, = [k for k in self.master.scheduler.jobs]
        text = ("ünïcode line\n" * 40_000).encode() + b"\xff"
        self.master.logs_received(key, [["out", text]])
        reader = Conn(self)
        reader.send_raw(encode_frame(Op.GET_LOGS, key.encode(), flags=0))
        first = reader.transport.value()
        self.assertLess(len(first), 2 * 64 * 1024 + 100)  # a chunk or so, not the log
        data = b""
        while not reader.closed:
            data += reader.transport.drain()
            self.assertLess(len(reader.transport.value()), 2 * 64 * 1024 + 100)
        data += reader.transport.value()
        self.assertEqual(self.factory.limits.describe()["pending"], 0)  # (not evictable)
        frame, = FrameDecoder(64 * MiB).feed(data)
        self.assertEqual((frame.opcode, frame.flags), (Op.ACK, 0))
        self.assertEqual(frame.body, text[:-1] + "\ufffd".encode())
        self.assertIsNone(reader.transport.producer)  # closing is not held by it


class RunWatcherTests(LimitsCase):
    def test_a_watcher_that_reads_nothing_is_cut_off_at_the_send_buffer_limit(self):
        c = Conn(self)
        c.hello()
        c.proto.max_send_buffer = 20_000
        c.send(Op.SUBMIT_DAG, {"name": "p", "watch": True, "jobs": [
            {"id": f"j{i}", "command": ["true"], "delay": 3600} for i in range(300)]})
        (op, reply), = c.replies()
        run_id = reply["result"]["run_id"]
        for i in range(300):  # each cancel is a RUN_CHANGED push the peer never reads
            self.master.api.cancel(OPERATOR, f"{run_id}/j{i}")
            self.reactor.advance(0.02)
            if c.transport.disconnected:
                break
        self.assertTrue(c.transport.disconnected)
        self.assertLess(len(c.transport.value()), 25_000)


class OncePerPeerTests(LimitsCase):
    def test_a_bad_peer_is_logged_once_per_episode(self):
        for port in range(500):
            c = Conn(self, "10.6.6.6", port)
            c.send(Op.HELLO, {"token": "guess"})
            c.proto.connectionLost(None)
        Conn(self, "10.7.7.7").send(Op.HELLO, {"token": "guess"})
        self.assertEqual([(f, w["peer"]) for f, w in self.warnings.lines
                          if "wrong cluster token" in f],
                         [("refused {peer}: wrong cluster token (logged once per peer: "
                           "repeats within {quiet:g} s are counted)", "10.6.6.6:0"),
                          ("refused {peer}: wrong cluster token (logged once per peer: "
                           "repeats within {quiet:g} s are counted)", "10.7.7.7:54321")])
        self.reactor.advance(61)  # the episode is over: one line counts the rest
        self.factory.episodes.sweep(self.master.now())  # (the factory's LoopingCall does)
        summary = [w for f, w in self.warnings.lines if "more of" in f]
        self.assertEqual([(w["count"], w["host"]) for w in summary], [(499, "10.6.6.6")])


class BadFramesLoggedOnceTests(LimitsCase):
    def test_frames_over_the_limit_from_one_peer_make_one_line(self):
        own = Warnings()
        self.patch(type(Conn(self).proto), "log", own)  # the protocol's own logger
        for port in range(200):
            c = Conn(self, "10.8.8.8", port)
            c.send_raw(HEADER.pack(1, Op.HELLO, 1, 0, 16 * MiB))
            self.assertTrue(c.closed)
        self.assertEqual(own.lines, [])
        self.assertEqual(len([f for f, _ in self.warnings.lines if "bad frame" in f]), 1)


class EpisodeLogTests(SynchronousTestCase):
    def test_a_new_episode_after_quiet(self):
        w = Warnings()
        log = EpisodeLog(w, quiet=10)
        self.assertTrue(log.note(0, "h", "k", "x"))
        self.assertFalse(log.note(5, "h", "k", "x"))
        self.assertFalse(log.note(14, "h", "k", "x"))  # quiet counts from the last one
        self.assertTrue(log.note(30, "h", "k", "x"))
        self.assertEqual([f[1].get("count") for f in w.lines], [None, 2, None])

    def test_episodes_are_bounded(self):
        w = Warnings()
        log = EpisodeLog(w, quiet=10, max_keys=3)
        for i in range(10):
            log.note(0, f"h{i}", "k", "x")
        self.assertEqual(log.active(), 3)


class FrameDecoderLimitTests(SynchronousTestCase):
    def test_the_text_limit_is_asked_only_past_the_structured_one(self):
        asked = []
        d = FrameDecoder(100, max_text_body=1000)
        d.text_gate = lambda op, length: asked.append(length)
        self.assertEqual(d.feed(encode_frame(Op.STATS, b"x" * 50, flags=0)),
                         [Frame(Op.STATS, b"x" * 50, 0)])
        self.assertEqual(d.feed(encode_frame(Op.STATS, b"x" * 500, flags=0)),
                         [Frame(Op.STATS, b"x" * 500, 0)])
        self.assertEqual(asked, [500])
        error, = d.feed(encode_frame(Op.STATS, b"x" * 500))  # structured: 100
        self.assertIsInstance(error, FrameError)
        self.assertEqual(error.code, "too_large")


class StoreLimitTests(SynchronousTestCase):
    def connect(self, factory):
        proto = factory.buildProtocol(None)
        transport = StringTransport()
        proto.makeConnection(transport)
        return proto, transport

    def test_a_client_that_does_not_auth_is_disconnected(self):
        clock = Clock()
        factory = StoreFactory(Store(password=b"pw", clock=clock.seconds), auth_timeout=10,
                               reactor=clock)
        silent, silent_t = self.connect(factory)
        good, good_t = self.connect(factory)
        good.dataReceived(b"*2\r\n$4\r\nAUTH\r\n$2\r\npw\r\n")
        clock.advance(10)
        self.assertEqual(silent_t.value(),
                         b"-ERR AUTH required within 10 s of connecting (store.auth_timeout)\r\n")
        self.assertTrue(silent_t.disconnecting)
        self.assertFalse(good_t.disconnecting)
        self.assertEqual(clock.getDelayedCalls(), [])

    def test_without_a_password_there_is_no_deadline(self):
        clock = Clock()
        factory = StoreFactory(Store(clock=clock.seconds), auth_timeout=10, reactor=clock)
        self.connect(factory)
        self.assertEqual(clock.getDelayedCalls(), [])

    def test_clients_are_kept_below_the_descriptor_limit(self):
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        self.addCleanup(resource.setrlimit, resource.RLIMIT_NOFILE, (soft, hard))
        if hard == resource.RLIM_INFINITY or hard <= 256:
            self.skipTest(f"a hard limit of {hard} leaves nothing to test")
        resource.setrlimit(resource.RLIMIT_NOFILE, (256, hard))
        factory = StoreFactory(Store(), max_clients=10 ** 7)
        factory.doStart()
        self.addCleanup(factory.doStop)
        self.assertEqual(resource.getrlimit(resource.RLIMIT_NOFILE)[0], hard)
        self.assertEqual(factory.max_clients, hard - 64)
