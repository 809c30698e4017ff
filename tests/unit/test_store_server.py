"""TitanStore's Twisted side: the protocol on a StringTransport (pipelining, protocol
errors, QUIT, AUTH, holds for fsync always, slow subscribers), then the service on the real
reactor with StoreClient: persistence across restarts, compaction, torn tails, the data-dir
lock, reconnection, resubscription, and failures the client reports."""
from __future__ import annotations

import os
import tempfile

import attrs
from twisted.internet import defer, reactor
from twisted.internet.task import Clock, deferLater
from twisted.internet.testing import StringTransport
from twisted.trial import unittest

from titan.store.client import StoreClient, StoreError, StoreUnavailable, parse_url
from titan.store.commands import Store
from titan.store.config import StoreConfig
from titan.store.resp import ReplyParser, command
from titan.store.server import StoreFactory
from titan.store.service import PORT_FILE, StoreService


def connect(factory: StoreFactory):
    proto = factory.buildProtocol(None)
    transport = StringTransport()
    proto.makeConnection(transport)
    return proto, transport


def replies(transport: StringTransport) -> list:
    data = transport.value()
    transport.clear()
    return ReplyParser().feed(data)


class ProtocolTests(unittest.TestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.store = Store(clock=self.clock.seconds)
        self.factory = StoreFactory(self.store)
        self.proto, self.transport = connect(self.factory)

    def test_pipelined_requests_get_replies_in_order(self):
        self.proto.dataReceived(command("SET", "k", "v") + command("GET", "k")
                                + b"PING\r\n" + command("DEL", "k"))
        self.assertEqual(replies(self.transport), ["OK", b"v", "PONG", 1])

    def test_request_split_anywhere(self):
        data = command("SET", "k", "a\r\nb") + b'ECHO "x y"\r\n'
        for i in range(len(data)):
            self.proto.dataReceived(data[i:i + 1])
        self.assertEqual(replies(self.transport), ["OK", b"x y"])

    def test_protocol_error_closes_after_earlier_replies(self):
        self.proto.dataReceived(b"PING\r\n*1\r\n$x\r\nPING\r\n")
        self.assertEqual(self.transport.value(),
                         b"+PONG\r\n-ERR Protocol error: invalid bulk length\r\n")
        self.assertTrue(self.transport.disconnecting)
        self.proto.dataReceived(b"PING\r\n")
        self.assertEqual(self.transport.value(),
                         b"+PONG\r\n-ERR Protocol error: invalid bulk length\r\n")

    def test_quit(self):
        self.proto.dataReceived(b"SET a 1\r\nQUIT\r\nSET b 2\r\n")
        self.assertEqual(self.transport.value(), b"+OK\r\n+OK\r\n")
        self.assertTrue(self.transport.disconnecting)
        self.assertEqual(self.store.db.dbsize(), 1)

    def test_bulk_limit(self):
        factory = StoreFactory(self.store, max_bulk=10)
        proto, transport = connect(factory)
        proto.dataReceived(command("SET", "k", "x" * 11))
        self.assertEqual(transport.value(), b"-ERR Protocol error: invalid bulk length\r\n")
        self.assertTrue(transport.disconnecting)

    def test_max_clients(self):
        factory = StoreFactory(self.store, max_clients=1)
        connect(factory)
        _, transport = connect(factory)
        self.assertEqual(transport.value(), b"-ERR max number of clients reached\r\n")
        self.assertTrue(transport.disconnecting)

    def test_auth_in_the_same_read_as_what_follows(self):
        store = Store(password=b"pw", clock=self.clock.seconds)
        proto, transport = connect(StoreFactory(store))
        # Before AUTH a request may have 10 arguments at most; after it, any number.
        big = command("MSET", *(["k", "v"] * 8))
        proto.dataReceived(command("AUTH", "pw") + big + command("GET", "k"))
        self.assertEqual(replies(transport), ["OK", "OK", b"v"])
        proto, transport = connect(StoreFactory(store))
        proto.dataReceived(command("GET", "k") + big)
        self.assertEqual(transport.value(),
                         b"-NOAUTH Authentication required.\r\n"
                         b"-ERR Protocol error: unauthenticated multibulk length\r\n")
        self.assertTrue(transport.disconnecting)

    def test_subscriber_gets_messages(self):
        sub, sub_transport = connect(self.factory)
        sub.dataReceived(command("SUBSCRIBE", "ch"))
        self.proto.dataReceived(command("PUBLISH", "ch", "hello"))
        self.assertEqual(replies(self.transport), [1])
        self.assertEqual(replies(sub_transport), [[b"subscribe", b"ch", 1],
                                                  [b"message", b"ch", b"hello"]])
        sub.connectionLost(None)
        self.proto.dataReceived(command("PUBLISH", "ch", "hello"))
        self.assertEqual(replies(self.transport), [0])

    def test_slow_subscriber_is_cut_off(self):
        factory = StoreFactory(self.store, pubsub_buffer_bytes=1000)
        sub, transport = connect(factory)
        transport._tempDataLen = 0  # what Twisted's TCP transport counts
        sub.dataReceived(command("SUBSCRIBE", "ch"))
        aborted = []
        transport.abortConnection = lambda: aborted.append(True)
        transport._tempDataLen = 2000  # as if 2000 bytes were waiting to be sent
        self.proto.dataReceived(command("PUBLISH", "ch", "x"))
        self.assertEqual(aborted, [True])
        self.assertEqual(self.store.hub.channels, {})

    def test_fsync_always_holds_replies_until_synced(self):
        self.factory.hold_writes = True
        self.proto.dataReceived(command("SET", "k", "v"))
        self.proto.dataReceived(command("GET", "k"))  # after a held reply: held too
        self.assertEqual(self.transport.value(), b"")
        seq, waiters = self.factory.take_waiters()
        self.assertEqual(waiters, [self.proto])
        self.proto.dataReceived(command("SET", "k", "w"))  # waits for the next flush
        self.proto.release(seq)
        self.assertEqual(replies(self.transport), ["OK", b"v"])
        seq2, _ = self.factory.take_waiters()
        self.proto.release(seq2)
        self.assertEqual(replies(self.transport), ["OK"])
        other, transport = connect(self.factory)
        other.dataReceived(command("GET", "k"))  # reads alone are not held
        self.assertEqual(replies(transport), [b"w"])


class Harness:
    """A StoreService on 127.0.0.1:<ephemeral> in-process, and clients of it."""

    def __init__(self, test: unittest.TestCase, data_dir: str, **config) -> None:
        self.test = test
        self.data_dir = data_dir
        self.config = StoreConfig(listen="tcp:0:interface=127.0.0.1", data_dir=data_dir,
                                  **config)
        self.service = None

    def start(self, port: int = 0) -> StoreService:
        config = attrs.evolve(self.config, listen=f"tcp:{port}:interface=127.0.0.1")
        self.service = StoreService(config)
        self.service.startService()
        return self.service

    def stop(self) -> defer.Deferred:
        service, self.service = self.service, None
        return service.stopService() if service is not None and service.running \
            else defer.succeed(None)

    def client(self, password=None, **kw) -> StoreClient:
        auth = f":{password}@" if password else ""
        client = StoreClient(f"redis://{auth}127.0.0.1:{self.service.port}/0", **kw)
        self.test.addCleanup(client.close)
        return client


async def until(test: unittest.TestCase, predicate, what: str, timeout: float = 10.0):
    """The first true value of `predicate()` (a value or a Deferred), the reactor running
    meanwhile; `test` fails after `timeout` seconds saying what never came."""
    deadline = reactor.seconds() + timeout
    while True:
        value = await defer.maybeDeferred(predicate)
        if value:
            return value
        if reactor.seconds() > deadline:
            test.fail(f"timed out after {timeout:g}s waiting for {what}")
        await deferLater(reactor, 0.01, lambda: None)


class ServiceTests(unittest.TestCase):
    timeout = 60

    def setUp(self) -> None:
        self.dir = tempfile.mkdtemp(prefix="titan-store-test-")
        self.harness = Harness(self, os.path.join(self.dir, "store"))
        self.harness.start()
        self.addCleanup(self.harness.stop)

    @defer.inlineCallbacks
    def fill(self, client: StoreClient):
        yield client.set("s", b"\x00\xffbytes")
        yield client.set("t", "v", ex=100)
        yield client.sadd("set", "a", "b")
        yield client.hset("h", mapping={"f": "v", "g": "w"})
        yield client.rpush("l", "1", "2", "3")
        yield client.incr("n", 5)
        yield client.set("gone", "x", px=1)
        yield client.set("p", "v", ex=100)
        yield client.persist("p")

    @defer.inlineCallbacks
    def check(self, client: StoreClient):
        self.assertEqual((yield client.get("s")), b"\x00\xffbytes")
        ttl = yield client.ttl("t")
        self.assertTrue(90 <= ttl <= 100, ttl)
        self.assertEqual((yield client.smembers("set")), {b"a", b"b"})
        self.assertEqual((yield client.hgetall("h")), {b"f": b"v", b"g": b"w"})
        self.assertEqual((yield client.lrange("l")), [b"1", b"2", b"3"])
        self.assertEqual((yield client.get("n")), b"5")
        self.assertIsNone((yield client.get("gone")))
        self.assertEqual((yield client.ttl("p")), -1)

    def test_port_file(self):
        with open(os.path.join(self.harness.data_dir, PORT_FILE)) as f:
            self.assertEqual(int(f.read()), self.harness.service.port)

    @defer.inlineCallbacks
    def test_data_survives_a_restart(self):
        client = self.harness.client()
        yield self.fill(client)
        yield self.harness.stop()
        self.assertFalse(os.path.exists(os.path.join(self.harness.data_dir, PORT_FILE)))
        self.harness.start()
        yield self.check(self.harness.client())

    @defer.inlineCallbacks
    def test_compaction_then_restart(self):
        client = self.harness.client()
        yield self.fill(client)
        self.assertEqual((yield client.execute("BGREWRITEAOF")),
                         "Background append only file rewriting started")
        yield self.harness.service._compacting
        yield client.set("after", "compaction")
        info = yield client.info("persistence")
        self.assertEqual(info["aof_rewrites"], "1")
        yield self.harness.stop()
        self.harness.start()
        client = self.harness.client()
        yield self.check(client)
        self.assertEqual((yield client.get("after")), b"compaction")

    @defer.inlineCallbacks
    def test_compaction_by_size(self):
        yield self.harness.stop()
        self.harness.config = attrs.evolve(self.harness.config, compact_after_bytes=20_000)
        self.harness.start()
        client = self.harness.client()
        for i in range(100):
            yield client.set(f"k{i % 10}", "x" * 500)
        # 50 kB went to the log: a compaction started on the way; wait for it to end.
        if self.harness.service._compacting is not None:
            yield self.harness.service._compacting
        self.assertGreaterEqual(self.harness.service.compactions, 1)
        yield self.harness.stop()
        self.harness.start()
        client = self.harness.client()
        self.assertEqual(len((yield client.keys())), 10)

    @defer.inlineCallbacks
    def test_torn_tail_is_repaired(self):
        client = self.harness.client()
        yield self.fill(client)
        yield self.harness.stop()
        log = os.path.join(self.harness.data_dir, "aof", "events.0.aof")
        with open(log, "ab") as f:
            f.write(b"\x00\x00\x01\x00garbage")  # half a record: a crash mid-write
        self.harness.start()
        yield self.check(self.harness.client())

    @defer.inlineCallbacks
    def test_fsync_always(self):
        yield self.harness.stop()
        self.harness.config = attrs.evolve(self.harness.config, fsync="always")
        self.harness.start()
        client = self.harness.client()
        yield self.fill(client)
        # Not synchronisation: `gone`'s 1 ms must run out before check() looks at it.
        yield deferLater(reactor, 0.02, lambda: None)
        yield self.check(client)
        yield self.harness.stop()
        self.harness.start()
        yield self.check(self.harness.client())

    def test_data_dir_is_locked(self):
        other = StoreService(self.harness.config)
        self.assertRaises(SystemExit, other.startService)

    @defer.inlineCallbacks
    def test_expiry_is_swept(self):
        client = self.harness.client()
        db = self.harness.service.store.db
        for i in range(50):
            yield client.set(f"k{i}", "v", px=20)
        # dbsize counts keys not swept yet, expired or not: nobody reads them here.
        yield defer.ensureDeferred(until(self, lambda: db.dbsize() == 0,
                                         "the sweep to take the 50 expired keys"))
        self.assertEqual(db.expired_keys, 50)

    @defer.inlineCallbacks
    def test_client_reconnects_and_resubscribes(self):
        port = self.harness.service.port
        client = self.harness.client()
        got = []
        yield client.subscribe("ch", lambda ch, m: got.append(m))
        yield client.psubscribe("c*", lambda ch, m: got.append(b"p:" + m))
        yield client.set("k", "v")
        yield self.harness.stop()
        # The client has seen both connections go: the GET below waits for a new one.
        yield defer.ensureDeferred(until(
            self, lambda: client._proto is None and client._sub_proto is None,
            "the client to see the store go"))
        pending = client.get("k")  # waits for the store to come back
        self.harness.start(port)
        self.assertEqual((yield pending), b"v")
        # The subscriber connection comes back too, with both subscriptions.
        yield defer.ensureDeferred(until(
            self, lambda: client.publish("ch", "again").addCallback(lambda n: n == 2),
            "the channel and the pattern to be subscribed again"))
        yield defer.ensureDeferred(until(self, lambda: len(got) >= 2,
                                         "both messages"))
        self.assertEqual(sorted(got), [b"again", b"p:again"])

    @defer.inlineCallbacks
    def test_errors(self):
        client = self.harness.client()
        yield client.sadd("s", "a")
        with self.assertRaises(StoreError) as e:
            yield client.get("s")
        self.assertEqual(e.exception.prefix, "WRONGTYPE")
        self.assertEqual((yield client.set("s", "x", nx=True)), False)
        self.assertEqual((yield client.set("new", "x", nx=True)), True)

    @defer.inlineCallbacks
    def test_wrong_password_is_reported(self):
        yield self.harness.stop()
        self.harness.config = attrs.evolve(self.harness.config, password="sekret")
        self.harness.start()
        good = self.harness.client(password="sekret")
        self.assertEqual((yield good.ping()), b"PONG")
        bad = self.harness.client(password="nope", connect_timeout=0.5)
        with self.assertRaises(StoreUnavailable) as e:
            yield bad.get("k")
        self.assertIn("WRONGPASS", str(e.exception))
        none = self.harness.client(connect_timeout=5)
        with self.assertRaises(StoreError) as e:
            yield none.get("k")
        self.assertEqual(e.exception.prefix, "NOAUTH")

    @defer.inlineCallbacks
    def test_unreachable(self):
        port = self.harness.service.port
        yield self.harness.stop()
        client = StoreClient(f"redis://127.0.0.1:{port}", connect_timeout=0.3)
        self.addCleanup(client.close)
        with self.assertRaises(StoreUnavailable):
            yield client.get("k")
        with self.assertRaises(StoreUnavailable):
            yield client.subscribe("ch", lambda c, m: None)
        self.assertEqual(client._subs, {})


class URLTests(unittest.TestCase):
    def test_parse(self):
        self.assertEqual(parse_url("redis://127.0.0.1:6380/0"),
                         {"host": "127.0.0.1", "port": 6380, "username": None,
                          "password": None, "db": 0})
        self.assertEqual(parse_url("redis://:p%40ss@localhost")["password"], "p@ss")
        self.assertEqual(parse_url("redis://user:pw@h:1/2")["username"], "user")
        self.assertEqual(parse_url("redis://h/3")["db"], 3)
        for bad in ("http://h", "redis://h:x", "redis://h/x", "rediss://h"):
            self.assertRaises(ValueError, parse_url, bad)
