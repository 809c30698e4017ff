"""The commands (titan.store.commands.Store): replies and errors worded as Redis words
them, authentication and subscribed-mode gates, pub/sub between sessions, and the journal:
replaying it rebuilds the same data, times included."""
from __future__ import annotations

import msgpack
from hypothesis import given, settings, strategies as st
from twisted.internet.task import Clock
from twisted.trial import unittest

from titan.store.commands import Session, Store
from titan.store.resp import ReplyParser

START = 1_700_000_000.0


def make_store(password=None) -> tuple[Store, Clock]:
    clock = Clock()
    clock.advance(START)
    return Store(password=password, clock=clock.seconds), clock


def decode(raw: bytes):
    replies = ReplyParser().feed(raw)
    return replies[0] if len(replies) == 1 else replies


class StoreCase(unittest.TestCase):
    def setUp(self) -> None:
        self.store, self.clock = make_store()
        self.session = Session()

    def raw(self, *args, session=None) -> bytes:
        args = [a if isinstance(a, bytes) else str(a).encode() for a in args]
        self.store.db.tick()
        return self.store.execute(session or self.session, args)

    def run_(self, *args, session=None):
        return decode(self.raw(*args, session=session))

    def assertError(self, message: str, *args, session=None):
        self.assertEqual(self.raw(*args, session=session), b"-" + message.encode() + b"\r\n")


class BasicCommandTests(StoreCase):
    def test_strings(self):
        self.assertEqual(self.raw("SET", "k", "v"), b"+OK\r\n")
        self.assertEqual(self.raw("GET", "k"), b"$1\r\nv\r\n")
        self.assertEqual(self.raw("get", "nope"), b"$-1\r\n")
        self.assertEqual(self.run_("MSET", "a", "1", "b", "2"), "OK")
        self.assertEqual(self.run_("MGET", "a", "nope", "b"), [b"1", None, b"2"])
        self.assertEqual(self.run_("INCR", "a"), 2)
        self.assertEqual(self.run_("INCRBY", "a", "-5"), -3)
        self.assertEqual(self.run_("DECR", "a"), -4)
        self.assertEqual(self.run_("DECRBY", "a", "6"), -10)
        self.assertEqual(self.run_("APPEND", "a", "x"), 4)
        self.assertEqual(self.run_("STRLEN", "a"), 4)
        self.assertEqual(self.run_("SETNX", "a", "y"), 0)
        self.assertEqual(self.run_("GETSET", "a", "z"), b"-10x")
        self.assertEqual(self.run_("GETDEL", "a"), b"z")
        self.assertEqual(self.run_("EXISTS", "a", "b", "b"), 2)
        self.assertEqual(self.run_("DEL", "a", "b", "k"), 2)
        self.assertEqual(self.run_("DBSIZE"), 0)

    def test_set_options(self):
        self.assertEqual(self.run_("SET", "k", "v", "NX"), "OK")
        self.assertIsNone(self.run_("SET", "k", "w", "NX"))
        self.assertEqual(self.run_("SET", "k", "w", "XX", "GET"), b"v")
        self.assertIsNone(self.run_("SET", "j", "w", "XX"))
        self.assertEqual(self.run_("SET", "k", "x", "EX", "10"), "OK")
        self.assertEqual(self.run_("TTL", "k"), 10)
        self.assertEqual(self.run_("SET", "k", "y", "KEEPTTL"), "OK")
        self.assertEqual(self.run_("PTTL", "k"), 10000)
        self.assertEqual(self.run_("SET", "k", "y", "px", "1500"), "OK")
        self.assertEqual(self.run_("TTL", "k"), 2)  # rounded, as Redis does
        at = int(START) + 100
        self.assertEqual(self.run_("SET", "k", "y", "EXAT", at), "OK")
        self.assertEqual(self.run_("EXPIRETIME", "k"), at)
        self.assertEqual(self.run_("SET", "k", "y", "PXAT", at * 1000 + 1), "OK")
        self.assertEqual(self.run_("PEXPIRETIME", "k"), at * 1000 + 1)

    def test_set_errors(self):
        for bad in (["NX", "XX"], ["EX", "1", "PX", "1"], ["KEEPTTL", "EX", "1"],
                    ["EX", "1", "KEEPTTL"], ["FOO"], ["EX"]):
            self.assertError("ERR syntax error", "SET", "k", "v", *bad)
        self.assertError("ERR value is not an integer or out of range", "SET", "k", "v",
                         "EX", "x")
        for bad in ("0", "-1", "9223372036854775807"):
            self.assertError("ERR invalid expire time in 'set' command", "SET", "k", "v",
                             "EX", bad)
        self.assertError("ERR invalid expire time in 'set' command", "SET", "k", "v",
                         "PX", "9223372036854775807")
        self.assertError("ERR invalid expire time in 'setex' command", "SETEX", "k", "0",
                         "v")
        self.run_("SADD", "s", "a")
        self.assertError("WRONGTYPE Operation against a key holding the wrong kind of "
                         "value", "SET", "s", "x", "GET")
        self.assertEqual(self.run_("TYPE", "s"), "set")  # unchanged

    def test_expire_family(self):
        self.assertEqual(self.run_("EXPIRE", "nope", "10"), 0)
        self.assertEqual(self.run_("TTL", "nope"), -2)
        self.run_("SET", "k", "v")
        self.assertEqual(self.run_("TTL", "k"), -1)
        self.assertEqual(self.run_("EXPIRE", "k", "100"), 1)
        self.assertEqual(self.run_("EXPIRE", "k", "50", "GT"), 0)
        self.assertEqual(self.run_("PEXPIRE", "k", "500000", "gt"), 1)
        self.assertEqual(self.run_("TTL", "k"), 500)
        self.assertEqual(self.run_("EXPIREAT", "k", int(START) + 20), 1)
        self.assertEqual(self.run_("TTL", "k"), 20)
        self.assertEqual(self.run_("PERSIST", "k"), 1)
        self.assertEqual(self.run_("TTL", "k"), -1)
        self.assertError("ERR Unsupported option FOO", "EXPIRE", "k", "1", "FOO")
        self.assertError("ERR NX and XX, GT or LT options at the same time are not "
                         "compatible", "EXPIRE", "k", "1", "NX", "XX")
        self.assertError("ERR GT and LT options at the same time are not compatible",
                         "EXPIRE", "k", "1", "GT", "LT")
        self.assertError("ERR invalid expire time in 'expire' command", "EXPIRE", "k",
                         "99999999999999999")
        self.assertEqual(self.run_("EXPIRE", "k", "-1"), 1)
        self.assertEqual(self.run_("EXISTS", "k"), 0)

    def test_lazy_expiry_through_commands(self):
        self.run_("SET", "k", "v", "PX", "100")
        self.clock.advance(0.1)
        self.assertEqual(self.run_("GET", "k"), b"v")
        self.clock.advance(0.001)
        self.assertIsNone(self.run_("GET", "k"))
        self.assertEqual(self.run_("DBSIZE"), 0)

    def test_sets_hashes_lists(self):
        self.assertEqual(self.run_("SADD", "s", "a", "b", "a"), 2)
        self.assertEqual(sorted(self.run_("SMEMBERS", "s")), [b"a", b"b"])
        self.assertEqual(self.run_("SISMEMBER", "s", "a"), 1)
        self.assertEqual(self.run_("SMISMEMBER", "s", "a", "z"), [1, 0])
        self.assertEqual(self.run_("SCARD", "s"), 2)
        self.assertEqual(self.run_("SREM", "s", "a", "b"), 2)
        self.assertEqual(self.run_("EXISTS", "s"), 0)
        self.assertEqual(self.run_("HSET", "h", "f1", "v1", "f2", "v2"), 2)
        self.assertEqual(self.run_("HMSET", "h", "f3", "v3"), "OK")
        self.assertEqual(self.run_("HGET", "h", "f1"), b"v1")
        self.assertEqual(self.run_("HMGET", "h", "f1", "zz"), [b"v1", None])
        self.assertEqual(self.run_("HGETALL", "h"),
                         [b"f1", b"v1", b"f2", b"v2", b"f3", b"v3"])
        self.assertEqual(self.run_("HLEN", "h"), 3)
        self.assertEqual(self.run_("HEXISTS", "h", "f2"), 1)
        self.assertEqual(self.run_("HSETNX", "h", "f2", "x"), 0)
        self.assertEqual(self.run_("HINCRBY", "h", "n", "5"), 5)
        self.assertEqual(self.run_("HKEYS", "h"), [b"f1", b"f2", b"f3", b"n"])
        self.assertEqual(self.run_("HVALS", "h"), [b"v1", b"v2", b"v3", b"5"])
        self.assertEqual(self.run_("HDEL", "h", "f1", "zz"), 1)
        self.assertEqual(self.run_("RPUSH", "l", "a", "b", "c"), 3)
        self.assertEqual(self.run_("LPUSH", "l", "x", "y"), 5)
        self.assertEqual(self.run_("LRANGE", "l", "0", "-1"), [b"y", b"x", b"a", b"b", b"c"])
        self.assertEqual(self.run_("LINDEX", "l", "1"), b"x")
        self.assertEqual(self.run_("LLEN", "l"), 5)
        self.assertEqual(self.run_("LPOP", "l"), b"y")
        self.assertEqual(self.run_("RPOP", "l", "2"), [b"c", b"b"])
        self.assertEqual(self.raw("LPOP", "l", "0"), b"*0\r\n")
        self.assertEqual(self.raw("LPOP", "nope", "0"), b"*-1\r\n")
        self.assertEqual(self.raw("LPOP", "nope", "2"), b"*-1\r\n")
        self.assertEqual(self.raw("LPOP", "nope"), b"$-1\r\n")
        self.assertError("ERR value is out of range, must be positive", "LPOP", "l", "-1")
        self.assertError("ERR wrong number of arguments for 'lpop' command",
                         "LPOP", "l", "1", "2")

    def test_keys_scan_type(self):
        for k in ("a:1", "a:2", "b:1"):
            self.run_("SET", k, "v")
        self.run_("SADD", "set", "m")
        self.assertEqual(sorted(self.run_("KEYS", "a:*")), [b"a:1", b"a:2"])
        cursor, keys = self.run_("SCAN", "0", "MATCH", "*:1", "COUNT", "100")
        self.assertEqual((cursor, sorted(keys)), (b"0", [b"a:1", b"b:1"]))
        self.assertEqual(self.run_("SCAN", "0", "TYPE", "set"), [b"0", [b"set"]])
        self.assertError("ERR invalid cursor", "SCAN", "x")
        self.assertError("ERR syntax error", "SCAN", "0", "COUNT", "0")
        self.assertError("ERR syntax error", "SCAN", "0", "MATCH")
        self.assertError("ERR syntax error", "SCAN", "0", "BOGUS", "1")
        self.assertEqual(self.run_("TYPE", "a:1"), "string")
        self.assertEqual(self.run_("TYPE", "nope"), "none")

    def test_generic_errors(self):
        self.assertError("ERR unknown command 'FOO', with args beginning with: 'a' 'b' ",
                         "FOO", "a", "b")
        self.assertError("ERR unknown command 'foo', with args beginning with: ", "foo")
        long = "x" * 300
        reply = self.raw("NOPE", long, long)
        self.assertEqual(reply, b"-ERR unknown command 'NOPE', with args beginning with: '"
                         + b"x" * 128 + b"' \r\n")
        self.assertEqual(self.raw(b"FOO\r\nBAR"),
                         b"-ERR unknown command 'FOO  BAR', with args beginning with: \r\n")
        self.assertError("ERR wrong number of arguments for 'get' command", "GET")
        self.assertError("ERR wrong number of arguments for 'get' command", "GeT", "a", "b")
        self.assertError("ERR wrong number of arguments for 'mset' command", "MSET", "a",
                         "1", "b")
        self.assertError("ERR wrong number of arguments for 'hset' command", "HSET", "h",
                         "a", "1", "b")
        self.assertError("ERR wrong number of arguments for 'ping' command", "PING", "a",
                         "b")
        self.run_("SADD", "s", "a")
        self.assertError("WRONGTYPE Operation against a key holding the wrong kind of "
                         "value", "GET", "s")
        self.run_("SET", "n", "9223372036854775807")
        self.assertError("ERR increment or decrement would overflow", "INCR", "n")
        self.assertError("ERR value is not an integer or out of range", "INCRBY", "n",
                         "1.5")
        self.assertError("ERR DB index is out of range", "SELECT", "1")
        self.assertError("ERR value is not an integer or out of range", "SELECT", "x")
        self.assertEqual(self.run_("SELECT", "0"), "OK")
        self.assertError("ERR syntax error", "FLUSHDB", "NOW")

    def test_connection_commands(self):
        self.assertEqual(self.raw("PING"), b"+PONG\r\n")
        self.assertEqual(self.raw("PING", "hi"), b"$2\r\nhi\r\n")
        self.assertEqual(self.raw("ECHO", ""), b"$0\r\n\r\n")
        self.assertEqual(self.run_("CLIENT", "SETNAME", "master"), "OK")
        self.assertEqual(self.run_("CLIENT", "GETNAME"), b"master")
        self.assertEqual(self.run_("CLIENT", "SETINFO", "LIB-NAME", "x"), "OK")
        self.assertError("ERR Client names cannot contain spaces, newlines or special "
                         "characters.", "CLIENT", "SETNAME", "a b")
        self.assertError("ERR wrong number of arguments for 'client|setname' command",
                         "CLIENT", "SETNAME")
        self.assertError("ERR unknown subcommand 'foo'. Try CLIENT HELP.", "CLIENT", "foo")
        self.assertIsInstance(self.run_("COMMAND"), list)
        self.assertEqual(self.run_("COMMAND", "COUNT"), len(self.run_("COMMAND")))
        self.assertEqual(self.run_("COMMAND", "DOCS"), [])
        self.assertEqual(self.run_("COMMAND", "INFO", "get", "nope"),
                         [[b"get", 2, ["readonly"], 1, 1, 1], None])
        info = self.run_("INFO").decode()
        self.assertIn("# Server\r\nredis_version:", info)
        self.assertIn("# Keyspace", info)
        self.assertEqual(self.run_("INFO", "nothing"), b"")
        self.run_("SET", "k", "v")
        self.assertIn("db0:keys=1,expires=0", self.run_("INFO", "keyspace").decode())
        self.assertEqual(self.run_("HELLO", "2")[:4], [b"server", b"redis", b"version",
                                                      b"7.0.0"])
        self.assertError("NOPROTO unsupported protocol version", "HELLO", "4")
        self.assertEqual(self.run_("QUIT"), "OK")
        self.assertTrue(self.session.closing)
        self.assertError("ERR this store keeps no append-only file", "BGREWRITEAOF")


class RESP3Tests(StoreCase):
    """HELLO 3 (redis-py 8 and other current clients ask for it): nulls, maps, sets and
    pushes in RESP3's types."""

    def setUp(self) -> None:
        super().setUp()
        hello = self.run_("HELLO", "3")
        self.assertEqual(hello[b"proto"], 3)
        self.assertEqual(hello[b"version"], b"7.0.0")

    def test_types(self):
        self.assertEqual(self.raw("GET", "nope"), b"_\r\n")
        self.assertEqual(self.raw("LPOP", "nope", "2"), b"_\r\n")
        self.run_("HSET", "h", "f", "v", "g", "w")
        self.assertEqual(self.raw("HGETALL", "h"),
                         b"%2\r\n$1\r\nf\r\n$1\r\nv\r\n$1\r\ng\r\n$1\r\nw\r\n")
        self.assertEqual(self.run_("HGETALL", "h"), {b"f": b"v", b"g": b"w"})
        self.assertEqual(self.raw("HGETALL", "nope"), b"%0\r\n")
        self.run_("SADD", "s", "a")
        self.assertEqual(self.raw("SMEMBERS", "s"), b"~1\r\n$1\r\na\r\n")
        self.assertEqual(self.run_("MGET", "nope", "s"), [None, None])
        self.assertIn(b"_\r\n", self.raw("MGET", "nope"))
        self.assertEqual(self.run_("HELLO", "2")[9], b"standalone")  # back to RESP2
        self.assertEqual(self.raw("GET", "nope"), b"$-1\r\n")

    def test_pubsub_pushes_and_any_command_while_subscribed(self):
        self.assertEqual(self.raw("SUBSCRIBE", "ch"),
                         b">3\r\n$9\r\nsubscribe\r\n$2\r\nch\r\n:1\r\n")
        self.assertEqual(self.run_("SET", "k", "v"), "OK")
        self.assertEqual(self.run_("PING"), "PONG")
        resp2 = Session()
        self.run_("SUBSCRIBE", "ch", session=resp2)
        self.assertEqual(self.run_("PUBLISH", "ch", "hi"), 2)
        self.assertEqual(self.session.pushed,
                         [b">3\r\n$7\r\nmessage\r\n$2\r\nch\r\n$2\r\nhi\r\n"])
        self.assertEqual(resp2.pushed,
                         [b"*3\r\n$7\r\nmessage\r\n$2\r\nch\r\n$2\r\nhi\r\n"])
        self.assertEqual(self.raw("UNSUBSCRIBE"),
                         b">3\r\n$11\r\nunsubscribe\r\n$2\r\nch\r\n:0\r\n")
        self.assertEqual(self.raw("UNSUBSCRIBE"),
                         b">3\r\n$11\r\nunsubscribe\r\n_\r\n:0\r\n")


class AuthTests(StoreCase):
    def setUp(self) -> None:
        self.store, self.clock = make_store(password=b"sekret")
        self.session = Session(authenticated=False)

    def test_noauth_until_auth(self):
        self.assertError("NOAUTH Authentication required.", "GET", "k")
        self.assertError("NOAUTH Authentication required.", "PING")
        self.assertError("ERR wrong number of arguments for 'get' command", "GET")  # first
        self.assertError("ERR unknown command 'nope', with args beginning with: ", "nope")
        self.assertError("WRONGPASS invalid username-password pair or user is disabled.",
                         "AUTH", "wrong")
        self.assertError("NOAUTH Authentication required.", "PING")
        self.assertError("WRONGPASS invalid username-password pair or user is disabled.",
                         "AUTH", "admin", "sekret")
        self.assertError("ERR syntax error", "AUTH", "a", "b", "c")
        self.assertEqual(self.run_("AUTH", "sekret"), "OK")
        self.assertEqual(self.run_("PING"), "PONG")
        self.assertEqual(self.run_("RESET"), "RESET")  # back to unauthenticated
        self.assertError("NOAUTH Authentication required.", "PING")
        self.assertEqual(self.run_("AUTH", "default", "sekret"), "OK")
        self.assertEqual(self.run_("PING"), "PONG")

    def test_hello_auth(self):
        self.assertTrue(str(self.run_("HELLO")).startswith("NOAUTH HELLO must be"))
        self.assertEqual(self.run_("HELLO", "2", "AUTH", "default", "sekret",
                                   "SETNAME", "x")[5], 2)
        self.assertTrue(self.session.authenticated)
        self.assertEqual(self.session.name, b"x")

    def test_auth_without_a_password_configured(self):
        store, _ = make_store()
        self.assertEqual(store.execute(Session(), [b"AUTH", b"x"]),
                         b"-ERR AUTH <password> called without any password configured for "
                         b"the default user. Are you sure your configuration is correct?\r\n")
        self.assertEqual(store.execute(Session(), [b"AUTH", b"default", b"x"]), b"+OK\r\n")


class PubSubTests(StoreCase):
    def test_publish_subscribe(self):
        a, b, c = Session(), Session(), Session()
        self.assertEqual(self.run_("SUBSCRIBE", "news", "jobs", session=a),
                         [[b"subscribe", b"news", 1], [b"subscribe", b"jobs", 2]])
        self.assertEqual(self.run_("PSUBSCRIBE", "j*", session=b),
                         [b"psubscribe", b"j*", 1])
        self.assertEqual(self.run_("PUBLISH", "jobs", "done", session=c), 2)
        self.assertEqual(self.run_("PUBLISH", "news", "hi", session=c), 1)
        self.assertEqual(self.run_("PUBLISH", "other", "x", session=c), 0)
        self.assertEqual([decode(m) for m in a.pushed],
                         [[b"message", b"jobs", b"done"], [b"message", b"news", b"hi"]])
        self.assertEqual([decode(m) for m in b.pushed],
                         [[b"pmessage", b"j*", b"jobs", b"done"]])
        self.assertEqual(self.run_("PUBSUB", "NUMSUB", "jobs", "zz", session=c),
                         [b"jobs", 1, b"zz", 0])
        self.assertEqual(self.run_("PUBSUB", "NUMPAT", session=c), 1)
        self.assertEqual(sorted(self.run_("PUBSUB", "CHANNELS", session=c)),
                         [b"jobs", b"news"])

    def test_subscribed_mode_allows_only_some_commands(self):
        self.run_("SUBSCRIBE", "ch")
        self.assertError("ERR Can't execute 'get': only (P|S)SUBSCRIBE / (P|S)UNSUBSCRIBE / "
                         "PING / QUIT / RESET are allowed in this context", "GET", "k")
        self.assertEqual(self.run_("PING"), [b"pong", b""])
        self.assertEqual(self.run_("PING", "x"), [b"pong", b"x"])
        self.assertEqual(self.run_("UNSUBSCRIBE"), [b"unsubscribe", b"ch", 0])
        self.assertEqual(self.run_("UNSUBSCRIBE"), [b"unsubscribe", None, 0])
        self.assertEqual(self.run_("PUNSUBSCRIBE"), [b"punsubscribe", None, 0])
        self.assertIsNone(self.run_("GET", "k"))  # out of subscribed mode again

    def test_drop_session_forgets_its_subscriptions(self):
        a = Session()
        self.run_("SUBSCRIBE", "ch", session=a)
        self.run_("PSUBSCRIBE", "c*", session=a)
        self.store.drop_session(a)
        self.assertEqual(self.run_("PUBLISH", "ch", "x"), 0)
        self.assertEqual(self.store.hub.channels, {})
        self.assertEqual(self.store.hub.patterns, {})


class JournalTests(StoreCase):
    def test_canonical_forms_with_absolute_times(self):
        self.run_("SET", "a", "1", "EX", "10")
        self.run_("SET", "b", "1", "NX")
        self.run_("SET", "b", "2", "NX")  # no change: not journalled
        self.run_("EXPIRE", "b", "5")
        self.run_("INCR", "b")
        self.run_("DEL", "nope")          # no change
        self.run_("GET", "a")             # a read
        self.clock.advance(1)
        self.run_("SETEX", "c", "3", "v")
        now = int(START * 1000)
        items = msgpack.unpackb(self.store.take_journal())
        self.assertEqual(items, [
            now, [b"SET", b"a", b"1", b"PXAT", b"%d" % (now + 10000)],
            [b"SET", b"b", b"1"], [b"PEXPIREAT", b"b", b"%d" % (now + 5000)],
            [b"SET", b"b", b"2", b"KEEPTTL"],
            now + 1000, [b"SET", b"c", b"v", b"PXAT", b"%d" % (now + 4000)]])
        self.assertIsNone(self.store.take_journal())

    def test_no_time_when_no_key_expires(self):
        store, _ = make_store()
        store.db.stale = True  # as the server leaves it
        store.execute(Session(), [b"SET", b"a", b"1"])
        store.execute(Session(), [b"SADD", b"s", b"x"])
        self.assertEqual(msgpack.unpackb(store.take_journal()),
                         [[b"SET", b"a", b"1"], [b"SADD", b"s", b"x"]])

    def test_on_journal_is_called_once_per_batch(self):
        calls = []
        self.store.on_journal = lambda: calls.append(1)
        self.run_("SET", "a", "1")
        self.run_("SET", "a", "2")
        self.assertEqual(len(calls), 1)
        self.store.take_journal()
        self.run_("SET", "a", "3")
        self.assertEqual(len(calls), 2)

    def test_replay_runs_at_the_recorded_times(self):
        # INCR on a key that is alive when it runs but dead by the time of the replay
        # must give the same result (2, with its expiry) on replay.
        self.run_("SET", "n", "1", "PX", "1000")
        self.clock.advance(0.5)
        self.assertEqual(self.run_("INCR", "n"), 2)
        record = self.store.take_journal()
        copy, copy_clock = make_store()
        copy_clock.advance(3600)
        copy.db.tick()
        self.assertEqual(copy.replay(record), 2)
        self.assertEqual(copy.db.data, {b"n": b"2"})
        self.assertEqual(copy.db.expires, self.store.db.expires)
        self.assertEqual(copy.take_journal(), None)  # replay journals nothing again

    def test_replay_refuses_what_fails(self):
        record = msgpack.packb([[b"INCR", b"k", b"extra"]])
        store, _ = make_store()
        self.assertRaises(ValueError, store.replay, record)


# A random workload: commands (a few kinds and keys, so that they interact) and pauses.
_keys = st.sampled_from([b"a", b"b", b"c"])
_vals = st.sampled_from([b"1", b"2", b"x", b""])
_ops = st.one_of(
    st.tuples(st.just(b"SET"), _keys, _vals),
    st.tuples(st.just(b"SET"), _keys, _vals, st.just(b"PX"), st.sampled_from([b"5", b"50"])),
    st.tuples(st.just(b"SET"), _keys, _vals, st.just(b"KEEPTTL")),
    st.tuples(st.just(b"INCR"), _keys),
    st.tuples(st.just(b"APPEND"), _keys, _vals),
    st.tuples(st.just(b"DEL"), _keys),
    st.tuples(st.just(b"PEXPIRE"), _keys, st.sampled_from([b"5", b"30", b"-1"])),
    st.tuples(st.just(b"PERSIST"), _keys),
    st.tuples(st.just(b"SADD"), _keys, _vals),
    st.tuples(st.just(b"SREM"), _keys, _vals),
    st.tuples(st.just(b"HSET"), _keys, _vals, _vals),
    st.tuples(st.just(b"HDEL"), _keys, _vals),
    st.tuples(st.just(b"HINCRBY"), _keys, _vals, st.just(b"3")),
    st.tuples(st.just(b"RPUSH"), _keys, _vals),
    st.tuples(st.just(b"LPOP"), _keys),
    st.tuples(st.just(b"GETDEL"), _keys),
    st.tuples(st.just(b"FLUSHDB")),
    st.tuples(st.just(b"pause"), st.sampled_from([0.001, 0.004, 0.02])),
)


def _live(db, now: int) -> tuple[dict, dict]:
    """(data, expiry times) of the keys alive at `now` (ms)."""
    alive = {k for k in db.data if db.expires.get(k, now) >= now}
    return ({k: v for k, v in db.data.items() if k in alive},
            {k: w for k, w in db.expires.items() if k in alive})


class ReplayPropertyTests(unittest.TestCase):
    @settings(max_examples=150, deadline=None)
    @given(st.lists(_ops, max_size=40), st.booleans())
    def test_replay_rebuilds_the_same_data(self, ops, stale):
        store, clock = make_store()
        session = Session()
        records = []
        for op in ops:
            if op[0] == b"pause":
                clock.advance(op[1])
                records.append(store.take_journal())
                continue
            if stale and not store.db.expires:
                store.db.stale = True
            else:
                store.db.tick()
            store.execute(session, list(op))
        records.append(store.take_journal())
        copy, copy_clock = make_store()
        copy_clock.advance(1000)
        copy.db.tick()
        for record in records:
            if record is not None:
                copy.replay(record)
        # Compared as a client would see them at the original's last moment: a key that
        # expired there without any journalled command touching it (a DEL of an expired
        # key changes nothing, so records nothing) may still sit in the copy's dict,
        # expired, until something looks at it or the sweep comes by.
        now = store.db.now
        self.assertEqual(_live(copy.db, now), _live(store.db, now))
