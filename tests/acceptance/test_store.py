"""TitanStore against the real thing.

One conformance suite (ConformanceMixin, AuthMixin, ClientMixin) is written once and runs
twice: against `twistd -n titan-store` and against a real `redis-server`, each started here
on an ephemeral loopback port.  The same assertions must hold for both: exact replies and
error texts over raw sockets, redis-py, the redis-cli binary, and Titan's own StoreClient.
TitanStore-only tests follow: restarts (clean and kill -9) with strings, sets, hashes,
lists and TTLs intact, a torn tail in the append-only file, compaction.

redis-server and redis-cli come from the Debian package redis-server (the Makefile
installs it); without them these tests fail, saying so — they are never skipped.
"""
from __future__ import annotations

import atexit
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from typing import Optional

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry
from twisted.internet import defer, reactor
from twisted.trial.unittest import SynchronousTestCase, TestCase

from tests.acceptance.helpers import wait_for
from titan.store.client import StoreClient, StoreError, StoreUnavailable
from titan.store.resp import ReplyError, ReplyParser, Simple, command
from titan.testing.processes import die_with_parent, tail

BIN = os.path.dirname(sys.executable)
PASSWORD = "s3cret pass"
MISSING = ("{0} is not installed: these tests compare TitanStore with a real Redis. "
           "Install the Debian package redis-server (`apt-get install -y redis-server`, "
           "which `make test` does).")


def need(binary: str) -> str:
    path = shutil.which(binary)
    if path is None:
        raise AssertionError(MISSING.format(binary))
    return path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """A store process on 127.0.0.1: kind 'titan' (twistd titan-store) or 'redis'."""

    def __init__(self, kind: str, password: Optional[str] = None,
                 data_dir: Optional[str] = None, extra: tuple = ()) -> None:
        self.kind = kind
        self.password = password
        self.data_dir = data_dir or tempfile.mkdtemp(prefix=f"titan-store-{kind}-")
        self.extra = extra
        self.proc: Optional[subprocess.Popen] = None
        self.port: Optional[int] = None
        self.log_file = os.path.join(self.data_dir, f"{kind}.log")

    def start(self, port: int = 0) -> "Server":
        os.makedirs(self.data_dir, exist_ok=True)
        err = open(self.log_file + ".err", "ab")
        if self.kind == "titan":
            port_file = os.path.join(self.data_dir, "store.port")
            if os.path.exists(port_file):
                os.unlink(port_file)
            cmd = [os.path.join(BIN, "twistd"), "-n", f"--logfile={self.log_file}",
                   "--pidfile=", "titan-store", "--listen", f"tcp:{port}:interface=127.0.0.1",
                   "--data-dir", self.data_dir, *self.extra]
            if self.password:
                cmd += ["--password", self.password]
            self.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL,
                                         stdout=subprocess.DEVNULL, stderr=err,
                                         preexec_fn=die_with_parent, cwd=self.data_dir)
            self.port = self._read_port(port_file)
        else:
            self.port = port or free_port()
            cmd = [need("redis-server"), "--port", str(self.port), "--bind", "127.0.0.1",
                   "--save", "", "--appendonly", "no", "--dir", self.data_dir,
                   "--logfile", self.log_file, *self.extra]
            if self.password:
                cmd += ["--requirepass", self.password]
            self.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL,
                                         stdout=subprocess.DEVNULL, stderr=err,
                                         preexec_fn=die_with_parent, cwd=self.data_dir)
            self._wait_ready()
        return self

    def _read_port(self, path: str) -> int:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                with open(path) as f:
                    text = f.read().strip()
                if text:
                    return int(text)
            except (OSError, ValueError):
                pass
            if self.proc.poll() is not None:
                break
            time.sleep(0.02)
        raise AssertionError(f"titan-store did not start:\n{tail(self.log_file)}"
                             f"{tail(self.log_file + '.err')}")

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1) as s:
                    s.sendall(b"PING\r\n")
                    if s.recv(100):
                        return
            except OSError:
                pass
            if self.proc.poll() is not None:
                break
            time.sleep(0.02)
        raise AssertionError(f"redis-server did not start:\n{tail(self.log_file)}"
                             f"{tail(self.log_file + '.err')}")

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    @property
    def url(self) -> str:
        auth = f":{self.password}@" if self.password else ""
        return f"redis://{auth}127.0.0.1:{self.port}/0"


class Conn:
    """A blocking RESP connection that reads exactly the replies it waits for."""

    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        self.parser = ReplyParser()
        self.ready: list = []

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def read(self, n: int = 1) -> list:
        while len(self.ready) < n:
            data = self.sock.recv(1 << 16)
            if not data:
                raise ConnectionError(f"closed after {self.ready!r}")
            self.ready.extend(self.parser.feed(data))
        out, self.ready = self.ready[:n], self.ready[n:]
        return out

    def call(self, *args):
        self.send(command(*args))
        return self.read()[0]

    def closed(self, timeout: float = 5.0) -> bool:
        """True once the server has closed the connection (after anything still sent)."""
        self.sock.settimeout(timeout)
        try:
            while True:
                data = self.sock.recv(1 << 16)
                if not data:
                    return True
                self.ready.extend(self.parser.feed(data))
        except socket.timeout:
            return False
        except ConnectionResetError:
            return True

    def close(self) -> None:
        self.sock.close()


def err(message: str) -> ReplyError:
    return ReplyError(message)


class ServerCase:
    """The server a test class runs against: started by the first test, shared by the
    class, stopped when the test process exits."""

    kind = "titan"
    password: Optional[str] = None
    server: Server

    def setUp(self) -> None:
        cls = type(self)
        if cls.__dict__.get("server") is None:
            server = Server(cls.kind, password=cls.password)
            atexit.register(server.stop)
            cls.server = server.start()
        self.conns: list[Conn] = []
        self.addCleanup(self._close_conns)

    def _close_conns(self) -> None:
        for c in self.conns:
            c.close()

    def conn(self, auth: bool = True) -> Conn:
        c = Conn(self.server.port)
        self.conns.append(c)
        if auth and self.password:
            self.assertEqual(c.call("AUTH", self.password), "OK")
        return c

    def assertReply(self, reply, expected):
        """Equal, and of the same kind (status vs bulk, error text exactly)."""
        if isinstance(expected, ReplyError):
            self.assertIsInstance(reply, ReplyError, reply)
            self.assertEqual(str(reply), str(expected))
        else:
            self.assertEqual(type(reply), type(expected), (reply, expected))
            self.assertEqual(reply, expected)


class ConformanceMixin(ServerCase):
    def setUp(self) -> None:
        super().setUp()
        self.c = self.conn()
        self.assertEqual(self.c.call("FLUSHDB"), "OK")

    # -- exact replies ---------------------------------------------------------------------

    def test_strings(self):
        c = self.c
        for args, expected in [
            (("SET", "k", "v"), Simple("OK")), (("GET", "k"), b"v"), (("GET", "nope"), None),
            (("SET", "k", "w", "NX"), None), (("SET", "k", "w", "XX", "GET"), b"v"),
            (("SET", "j", "w", "XX"), None), (("EXISTS", "k", "k", "j"), 2),
            (("MSET", "a", "1", "b", "2"), Simple("OK")),
            (("MGET", "a", "nope", "b"), [b"1", None, b"2"]),
            (("INCR", "a"), 2), (("INCRBY", "a", "-10"), -8), (("DECR", "a"), -9),
            (("GET", "a"), b"-9"), (("INCR", "newcounter"), 1),
            (("DEL", "a", "b", "nope"), 2), (("DBSIZE",), 2), (("TYPE", "k"), Simple("string")),
            (("TYPE", "nope"), Simple("none")), (("ECHO", "hi"), b"hi"), (("PING",), Simple("PONG")),
            (("PING", "x"), b"x"), (("SELECT", "0"), Simple("OK")),
            (("CLIENT", "SETNAME", "conformance"), Simple("OK")),
            (("CLIENT", "GETNAME"), b"conformance"),
        ]:
            self.assertReply(c.call(*args), expected)

    def test_binary_safe(self):
        key = bytes(range(256))
        value = b"\r\n\x00*3\r\n$3\r\n" * 1000 + bytes(range(256))
        self.assertReply(self.c.call("SET", key, value), Simple("OK"))
        self.assertEqual(self.c.call("GET", key), value)
        self.assertEqual(self.c.call("SADD", b"s\x00", b"\xff\r\n"), 1)
        self.assertEqual(self.c.call("SMEMBERS", b"s\x00"), [b"\xff\r\n"])

    def test_errors_are_worded_as_redis_words_them(self):
        c = self.c
        c.call("SADD", "set", "m")
        c.call("SET", "big", "9223372036854775807")
        wrongtype = err("WRONGTYPE Operation against a key holding the wrong kind of value")
        for args, expected in [
            (("FOO", "a", "b"), err("ERR unknown command 'FOO', with args beginning with: "
                                    "'a' 'b' ")),
            (("foo",), err("ERR unknown command 'foo', with args beginning with: ")),
            (("GET",), err("ERR wrong number of arguments for 'get' command")),
            (("get", "a", "b"), err("ERR wrong number of arguments for 'get' command")),
            (("SET", "k"), err("ERR wrong number of arguments for 'set' command")),
            (("MSET", "a", "1", "b"), err("ERR wrong number of arguments for 'mset' command")),
            (("HSET", "h", "f"), err("ERR wrong number of arguments for 'hset' command")),
            (("LPOP", "l", "1", "2"), err("ERR wrong number of arguments for 'lpop' command")),
            (("PING", "a", "b"), err("ERR wrong number of arguments for 'ping' command")),
            (("CLIENT", "SETNAME"), err("ERR wrong number of arguments for 'client|setname' "
                                        "command")),
            (("CLIENT", "NOPE"), err("ERR unknown subcommand 'NOPE'. Try CLIENT HELP.")),
            (("GET", "set"), wrongtype), (("INCR", "set"), wrongtype),
            (("LPUSH", "set", "x"), wrongtype), (("HGET", "set", "f"), wrongtype),
            (("SET", "set", "x", "GET"), wrongtype),
            (("INCR", "big"), err("ERR increment or decrement would overflow")),
            (("INCRBY", "k", "1.5"), err("ERR value is not an integer or out of range")),
            (("SET", "k", "v", "EX", "0"), err("ERR invalid expire time in 'set' command")),
            (("SET", "k", "v", "EX", "x"), err("ERR value is not an integer or out of range")),
            (("SET", "k", "v", "NX", "XX"), err("ERR syntax error")),
            (("SET", "k", "v", "BOGUS"), err("ERR syntax error")),
            (("EXPIRE", "k", "1", "BOGUS"), err("ERR Unsupported option BOGUS")),
            (("EXPIRE", "k", "1", "NX", "GT"), err("ERR NX and XX, GT or LT options at the "
                                                   "same time are not compatible")),
            (("LPOP", "l", "-1"), err("ERR value is out of range, must be positive")),
            (("SCAN", "x"), err("ERR invalid cursor")),
            (("SCAN", "0", "COUNT", "0"), err("ERR syntax error")),
            (("SELECT", "16"), err("ERR DB index is out of range")),
            (("AUTH", "x"), err("ERR AUTH <password> called without any password "
                                "configured for the default user. Are you sure your "
                                "configuration is correct?")),
            (("FLUSHDB", "NOW"), err("ERR syntax error")),
        ]:
            self.assertReply(c.call(*args), expected)
        self.assertEqual(c.call("TYPE", "set"), "set")  # the failed SET ... GET changed nothing

    def test_expiry(self):
        c = self.c
        self.assertReply(c.call("SET", "k", "v", "EX", "100"), Simple("OK"))
        self.assertEqual(c.call("TTL", "k"), 100)
        self.assertTrue(99000 < c.call("PTTL", "k") <= 100000)
        self.assertEqual(c.call("TTL", "nope"), -2)
        c.call("SET", "p", "v")
        self.assertEqual(c.call("TTL", "p"), -1)
        self.assertEqual(c.call("EXPIRE", "p", "50"), 1)
        self.assertEqual(c.call("EXPIRE", "p", "10", "GT"), 0)
        self.assertEqual(c.call("EXPIRE", "p", "10", "LT"), 1)
        self.assertEqual(c.call("TTL", "p"), 10)
        self.assertEqual(c.call("PERSIST", "p"), 1)
        self.assertEqual(c.call("TTL", "p"), -1)
        self.assertEqual(c.call("SET", "k", "w", "KEEPTTL"), "OK")
        self.assertEqual(c.call("TTL", "k"), 100)
        self.assertEqual(c.call("SET", "k", "w"), "OK")
        self.assertEqual(c.call("TTL", "k"), -1)
        self.assertEqual(c.call("EXPIRE", "nope", "10"), 0)
        self.assertEqual(c.call("EXPIRE", "p", "-1"), 1)  # in the past: deleted
        self.assertEqual(c.call("EXISTS", "p"), 0)
        # Real time: gone after its time, whether looked at or not.
        for i in range(20):
            c.call("SET", f"short:{i}", "v", "PX", "400")
        c.call("SADD", "sset", "m")
        c.call("PEXPIRE", "sset", "400")
        self.assertEqual(c.call("GET", "short:0"), b"v")
        # DBSIZE counts keys whose time has passed until they are removed: it falls to 1
        # (only k) once the sweep has taken the others, which nobody looked at.
        wait_for(self, lambda: c.call("DBSIZE") == 1, 10,
                 "the sweep to remove the 21 expired keys")
        self.assertIsNone(c.call("GET", "short:0"))
        self.assertEqual(c.call("SMEMBERS", "sset"), [])

    def test_sets_hashes_lists(self):
        c = self.c
        self.assertEqual(c.call("SADD", "s", "a", "b", "a"), 2)
        self.assertEqual(sorted(c.call("SMEMBERS", "s")), [b"a", b"b"])
        self.assertEqual(c.call("SISMEMBER", "s", "a"), 1)
        self.assertEqual(c.call("SISMEMBER", "s", "z"), 0)
        self.assertEqual(c.call("SCARD", "s"), 2)
        self.assertEqual(c.call("SREM", "s", "a", "b", "z"), 2)
        self.assertEqual(c.call("EXISTS", "s"), 0)
        self.assertEqual(c.call("SMEMBERS", "s"), [])
        self.assertEqual(c.call("HSET", "h", "f1", "v1", "f2", "v2"), 2)
        self.assertEqual(c.call("HSET", "h", "f1", "x"), 0)
        self.assertEqual(c.call("HGET", "h", "f1"), b"x")
        self.assertIsNone(c.call("HGET", "h", "zz"))
        flat = c.call("HGETALL", "h")
        self.assertEqual(dict(zip(flat[::2], flat[1::2])), {b"f1": b"x", b"f2": b"v2"})
        self.assertEqual(c.call("HDEL", "h", "f1", "f2", "f3"), 2)
        self.assertEqual(c.call("HGETALL", "h"), [])
        self.assertEqual(c.call("RPUSH", "l", "a", "b", "c", "d", "e"), 5)
        self.assertEqual(c.call("LPUSH", "l", "x", "y"), 7)
        self.assertEqual(c.call("LLEN", "l"), 7)
        self.assertEqual(c.call("LRANGE", "l", "0", "-1"),
                         [b"y", b"x", b"a", b"b", b"c", b"d", b"e"])
        for start, stop in [(-2, -1), (3, 1), (-100, 100), (5, 10), (1, 2), (-3, 2)]:
            self.assertEqual(c.call("LRANGE", "l", start, stop),
                             [b"y", b"x", b"a", b"b", b"c", b"d", b"e"][
                                 slice(*_redis_range(start, stop, 7))], (start, stop))
        self.assertEqual(c.call("LPOP", "l"), b"y")
        self.assertEqual(c.call("RPOP", "l", "2"), [b"e", b"d"])
        self.assertEqual(c.call("LPOP", "l", "0"), [])
        self.assertIsNone(c.call("LPOP", "nope", "2"))
        self.assertIsNone(c.call("RPOP", "nope"))
        self.assertEqual(c.call("LPOP", "l", "10"), [b"x", b"a", b"b", b"c"])
        self.assertEqual(c.call("EXISTS", "l"), 0)

    def test_keys_and_scan(self):
        c = self.c
        names = [f"user:{i}" for i in range(300)] + [f"job:{i}" for i in range(200)]
        c.send(b"".join(command("SET", n, "v") for n in names))
        self.assertEqual(c.read(len(names)), [Simple("OK")] * len(names))
        c.call("SADD", "set:1", "m")
        self.assertEqual(sorted(c.call("KEYS", "job:1?")),
                         sorted(f"job:1{i}".encode() for i in range(10)))
        self.assertEqual(sorted(c.call("KEYS", "[s]et:*")), [b"set:1"])
        self.assertEqual(len(c.call("KEYS", "*")), 501)
        for match, count, expected in [(None, None, 501), ("user:*", "50", 300),
                                       ("job:1*", "7", 111), ("nothing*", "100", 0)]:
            cursor, seen = b"0", set()
            while True:
                args = ["SCAN", cursor]
                if match:
                    args += ["MATCH", match]
                if count:
                    args += ["COUNT", count]
                cursor, keys = c.call(*args)
                seen.update(keys)
                if cursor == b"0":
                    break
            self.assertEqual(len(seen), expected, (match, count))
        cursor, keys = c.call("SCAN", "0", "TYPE", "set", "COUNT", "1000")
        self.assertEqual((cursor, keys), (b"0", [b"set:1"]))

    def test_pipelining_and_inline(self):
        c = self.c
        c.send(command("SET", "a", "1") + b"GET a\r\n" + b'ECHO "two words"\r\n'
               + b"\r\n" + command("INCR", "a") + b"PING\n")
        self.assertEqual(c.read(5), ["OK", b"1", b"two words", 2, "PONG"])
        # The same requests one byte at a time.
        data = command("SET", "b", "x\r\ny") + b"GET b\r\n"
        for i in range(len(data)):
            c.send(data[i:i + 1])
        self.assertEqual(c.read(2), ["OK", b"x\r\ny"])

    def test_protocol_error_closes_the_connection_only(self):
        bad = self.conn()
        bad.send(b"PING\r\n*1\r\n$x\r\n")
        self.assertTrue(bad.closed())
        self.assertEqual(bad.read(2), ["PONG", err("ERR Protocol error: invalid bulk length")])
        for junk, message in [(b"*x\r\n", "invalid multibulk length"),
                              (b"*1\r\n:1\r\n", "expected '$', got ':'"),
                              (b'SET "a b\r\n', "unbalanced quotes in request")]:
            other = self.conn()
            other.send(junk)
            self.assertTrue(other.closed())
            self.assertEqual(other.read(), [err("ERR Protocol error: " + message)])
        self.assertEqual(self.c.call("PING"), "PONG")  # the server is fine

    def test_quit(self):
        q = self.conn()
        q.send(b"QUIT\r\nSET after quit\r\n")
        self.assertTrue(q.closed())
        self.assertEqual(q.read(), ["OK"])
        self.assertEqual(self.c.call("EXISTS", "after"), 0)

    def test_pubsub_fan_out_to_50_subscribers(self):
        subscribers = [self.conn() for _ in range(50)]
        for i, s in enumerate(subscribers):
            s.send(command("SUBSCRIBE", "news", f"own:{i}"))
            self.assertEqual(s.read(2), [[b"subscribe", b"news", 1],
                                         [b"subscribe", f"own:{i}".encode(), 2]])
        pattern = self.conn()
        pattern.send(command("PSUBSCRIBE", "n*"))
        self.assertEqual(pattern.read(), [[b"psubscribe", b"n*", 1]])
        self.assertEqual(self.c.call("PUBLISH", "news", "hello"), 51)
        self.assertEqual(self.c.call("PUBLISH", "own:7", "just you"), 1)
        self.assertEqual(self.c.call("PUBLISH", "nobody", "x"), 1)  # the pattern
        for i, s in enumerate(subscribers):
            expected = [[b"message", b"news", b"hello"]]
            if i == 7:
                expected.append([b"message", b"own:7", b"just you"])
            self.assertEqual(s.read(len(expected)), expected)
        self.assertEqual(pattern.read(2), [[b"pmessage", b"n*", b"news", b"hello"],
                                           [b"pmessage", b"n*", b"nobody", b"x"]])
        s = subscribers[0]
        self.assertEqual(s.call("GET", "k"), err(
            "ERR Can't execute 'get': only (P|S)SUBSCRIBE / (P|S)UNSUBSCRIBE / PING / QUIT "
            "/ RESET are allowed in this context"))
        self.assertEqual(s.call("PING"), [b"pong", b""])
        s.send(command("UNSUBSCRIBE"))
        replies = s.read(2)  # in an order of the server's choosing
        self.assertEqual([r[0] for r in replies], [b"unsubscribe"] * 2)
        self.assertEqual(sorted(r[1] for r in replies), [b"news", b"own:0"])
        self.assertEqual([r[2] for r in replies], [1, 0])
        self.assertEqual(s.call("UNSUBSCRIBE"), [b"unsubscribe", None, 0])
        self.assertEqual(s.call("SET", "k", "back to normal"), "OK")
        for other in subscribers[1:]:
            other.close()
        self.conns = [self.c, s, pattern]
        wait_for(self, lambda: self.c.call("PUBLISH", "news", "again") == 1, 10,
                 "the server to drop the 49 closed subscribers")
        self.assertEqual(self.c.call("PUBLISH", "news", "again"), 1)

    def test_info_and_command(self):
        info = self.c.call("INFO")
        self.assertIn(b"redis_version:", info)
        self.assertIn(b"# Keyspace", info)
        self.assertEqual(self.c.call("INFO", "nosuchsection"), b"")
        self.assertIsInstance(self.c.call("COMMAND", "COUNT"), int)
        self.assertIsInstance(self.c.call("COMMAND"), list)

    # -- the usual clients -----------------------------------------------------------------

    def redis_py(self) -> redis.Redis:
        r = redis.Redis(host="127.0.0.1", port=self.server.port, password=self.password,
                        socket_timeout=10)
        self.addCleanup(r.close)
        return r

    def test_redis_py(self):
        r = self.redis_py()
        self.assertTrue(r.ping())
        self.assertTrue(r.set("k", "v", ex=100))
        self.assertEqual(r.get("k"), b"v")
        self.assertEqual(r.ttl("k"), 100)
        self.assertEqual(r.sadd("s", "a", "b"), 2)
        self.assertEqual(r.smembers("s"), {b"a", b"b"})
        self.assertEqual(r.hset("h", mapping={"f": "1", "g": "2"}), 2)
        self.assertEqual(r.hgetall("h"), {b"f": b"1", b"g": b"2"})
        self.assertEqual(r.rpush("l", 1, 2, 3), 3)
        self.assertEqual(r.lrange("l", 0, -1), [b"1", b"2", b"3"])
        pipe = r.pipeline(transaction=False)
        for i in range(100):
            pipe.incr("counter")
        self.assertEqual(pipe.execute()[-1], 100)
        self.assertEqual(sorted(r.scan_iter(match="[kshl]", count=2)),
                         [b"h", b"k", b"l", b"s"])
        with self.assertRaises(redis.ResponseError) as e:
            r.get("s")
        self.assertIn("WRONGTYPE", str(e.exception))
        self.assertIn("redis_version", r.info())
        self.assertEqual(r.dbsize(), 5)
        ps = r.pubsub()
        ps.subscribe("ch")
        self.assertEqual(ps.get_message(timeout=5)["type"], "subscribe")
        self.assertEqual(r.publish("ch", "hello"), 1)
        message = ps.get_message(timeout=5)
        self.assertEqual((message["channel"], message["data"]), (b"ch", b"hello"))
        ps.close()

    def redis_cli(self, *args: str, password: Optional[str] = None) -> str:
        cmd = [need("redis-cli"), "-h", "127.0.0.1", "-p", str(self.server.port)]
        password = password if password is not None else self.password
        if password:
            cmd += ["--no-auth-warning", "-a", password]
        done = subprocess.run(cmd + list(args), capture_output=True, timeout=30)
        return (done.stdout + done.stderr).decode()

    def test_redis_cli_round_trips(self):
        self.assertEqual(self.redis_cli("PING"), "PONG\n")
        self.assertEqual(self.redis_cli("SET", "greeting", "hello world"), "OK\n")
        self.assertEqual(self.redis_cli("GET", "greeting"), "hello world\n")
        self.assertEqual(self.redis_cli("GET", "nope"), "\n")
        self.assertEqual(self.redis_cli("SADD", "s", "b", "a"), "2\n")
        self.assertEqual(sorted(self.redis_cli("SMEMBERS", "s").split()), ["a", "b"])
        self.assertEqual(self.redis_cli("INCR", "greeting").strip(),
                         "ERR value is not an integer or out of range")
        self.assertEqual(self.redis_cli("--no-raw", "GET", "nope"), "(nil)\n")
        self.assertEqual(self.redis_cli("--no-raw", "INCR", "n"), "(integer) 1\n")
        done = subprocess.run([need("redis-cli"), "-p", str(self.server.port),
                               *(["--no-auth-warning", "-a", self.password]
                                 if self.password else [])],
                              input=b"SET piped 1\nGET piped\n", capture_output=True,
                              timeout=30)
        self.assertEqual(done.stdout.decode().split(), ["OK", "1"])


def _redis_range(start: int, stop: int, n: int) -> tuple:
    s = max(n + start, 0) if start < 0 else start
    e = n + stop if stop < 0 else stop
    e = min(e, n - 1)
    return (s, e + 1) if s <= e and s < n else (0, 0)


class AuthMixin(ServerCase):
    password = PASSWORD

    def test_noauth_then_auth(self):
        c = self.conn(auth=False)
        self.assertReply(c.call("GET", "k"), err("NOAUTH Authentication required."))
        self.assertReply(c.call("PING"), err("NOAUTH Authentication required."))
        self.assertReply(c.call("GET"), err("ERR wrong number of arguments for 'get' "
                                            "command"))
        self.assertReply(c.call("AUTH", "wrong"), err(
            "WRONGPASS invalid username-password pair or user is disabled."))
        self.assertReply(c.call("AUTH", "admin", PASSWORD), err(
            "WRONGPASS invalid username-password pair or user is disabled."))
        self.assertReply(c.call("PING"), err("NOAUTH Authentication required."))
        self.assertReply(c.call("AUTH", PASSWORD), Simple("OK"))
        self.assertReply(c.call("PING"), Simple("PONG"))
        d = self.conn(auth=False)
        self.assertReply(d.call("AUTH", "default", PASSWORD), Simple("OK"))
        big = self.conn(auth=False)
        big.send(b"*20\r\n")
        self.assertTrue(big.closed())
        self.assertEqual(big.read(), [err("ERR Protocol error: unauthenticated multibulk "
                                          "length")])

    def test_wrong_password_with_redis_cli(self):
        out = subprocess.run([need("redis-cli"), "-p", str(self.server.port),
                              "--no-auth-warning", "-a", "wrong", "PING"],
                             capture_output=True, timeout=30)
        text = (out.stdout + out.stderr).decode()
        self.assertIn("WRONGPASS", text)
        self.assertIn("NOAUTH Authentication required", text)
        out = subprocess.run([need("redis-cli"), "-p", str(self.server.port),
                              "--no-auth-warning", "-a", PASSWORD, "PING"],
                             capture_output=True, timeout=30)
        self.assertEqual(out.stdout, b"PONG\n")

    def test_wrong_password_with_redis_py(self):
        # No retries: redis-py counts a refused password as a connection error and by default
        # tries again with backoff (8 s), to the same refusal.
        once = Retry(NoBackoff(), 0)
        r = redis.Redis(host="127.0.0.1", port=self.server.port, password="wrong",
                        socket_timeout=10, retry=once)
        self.addCleanup(r.close)
        self.assertRaises(redis.AuthenticationError, r.ping)
        r = redis.Redis(host="127.0.0.1", port=self.server.port, socket_timeout=10, retry=once)
        self.addCleanup(r.close)
        self.assertRaises(redis.AuthenticationError, r.ping)


class ClientMixin(ServerCase):
    """Titan's own Twisted client, against either server."""

    timeout = 60

    def client(self, url: Optional[str] = None, **kw) -> StoreClient:
        client = StoreClient(url or self.server.url, **kw)
        self.addCleanup(client.close)
        return client

    @defer.inlineCallbacks
    def test_client(self):
        c = self.client()
        yield c.flushdb()
        self.assertIsNone((yield c.set("job:1", b"RUNNING", ex=60)))
        self.assertEqual((yield c.get("job:1")), b"RUNNING")
        self.assertEqual((yield c.ttl("job:1")), 60)
        self.assertIsNone((yield c.get("nope")))
        self.assertEqual((yield c.set("job:1", "x", nx=True)), False)
        self.assertEqual((yield c.sadd("workers", "w1", "w2")), 2)
        self.assertEqual((yield c.smembers("workers")), {b"w1", b"w2"})
        self.assertEqual((yield c.srem("workers", "w1")), 1)
        self.assertEqual((yield c.hset("h", mapping={"a": "1"})), 1)
        self.assertEqual((yield c.hgetall("h")), {b"a": b"1"})
        self.assertEqual((yield c.rpush("q", "a", "b")), 2)
        self.assertEqual((yield c.lpop("q")), b"a")
        self.assertEqual((yield c.delete("job:1", "nope")), 1)
        self.assertEqual((yield c.scan_all(match="w*")), {b"workers"})
        # Pipelined: many in flight, replies in order.
        results = yield defer.gatherResults([c.incr("n") for _ in range(200)])
        self.assertEqual(results, list(range(1, 201)))
        with self.assertRaises(StoreError) as e:
            yield c.get("workers")
        self.assertEqual(e.exception.prefix, "WRONGTYPE")

    @defer.inlineCallbacks
    def test_client_pubsub(self):
        c = self.client()
        got = []
        delivered = defer.Deferred()  # fires with the 51st delivery

        def note(item):
            got.append(item)
            if len(got) == 51:
                delivered.callback(None)
        subs = []
        for i in range(50):
            subs.append((yield c.subscribe("fanout", lambda ch, m, i=i: note((i, m)))))
        psub = yield c.subscribe("fan*", lambda ch, m: note(("p", ch, m)), pattern=True)
        self.assertEqual((yield c.publish("fanout", b"one")), 2)  # one connection, 2 subs

        def late(failure):
            failure.trap(defer.TimeoutError)
            self.fail(f"{len(got)} of 51 deliveries within 20 s: {got}")
        yield delivered.addTimeout(20, reactor).addErrback(late)
        self.assertEqual(sorted(m for m in got if m[0] != "p"),
                         [(i, b"one") for i in range(50)])
        self.assertIn(("p", b"fanout", b"one"), got)
        for s in subs:
            yield s.unsubscribe()
        yield psub.unsubscribe()
        self.assertEqual((yield c.publish("fanout", b"two")), 0)

    @defer.inlineCallbacks
    def test_client_wrong_password(self):
        c = self.client(f"redis://:wrong@127.0.0.1:{self.server.port}", connect_timeout=1)
        with self.assertRaises(StoreUnavailable) as e:
            yield c.get("k")
        self.assertIn("WRONGPASS", str(e.exception))


class TitanStoreConformanceTests(ConformanceMixin, SynchronousTestCase):
    kind = "titan"


class RedisConformanceTests(ConformanceMixin, SynchronousTestCase):
    kind = "redis"


class TitanStoreAuthTests(AuthMixin, SynchronousTestCase):
    kind = "titan"


class RedisAuthTests(AuthMixin, SynchronousTestCase):
    kind = "redis"


class TitanStoreClientTests(ClientMixin, TestCase):
    kind = "titan"
    password = PASSWORD


class RedisClientTests(ClientMixin, TestCase):
    kind = "redis"
    password = PASSWORD


class TitanStoreDurabilityTests(SynchronousTestCase):
    """Only TitanStore keeps its data: restarts, crashes, damage, compaction."""

    def setUp(self) -> None:
        self.server = Server("titan")
        self.addCleanup(self.server.stop)
        self.server.start()

    def restart(self, sig: int = signal.SIGTERM) -> Conn:
        self.server.stop(sig)
        self.server.start()
        return Conn(self.server.port)

    def fill(self, c: Conn) -> None:
        c.send(b"".join(command(*args) for args in [
            ("SET", "str", b"\x00binary\r\n"), ("SET", "ttl", "v", "EX", "1000"),
            ("SET", "short", "v", "PX", "300"), ("SADD", "set", "a", "b", "c"),
            ("SREM", "set", "c"), ("HSET", "hash", "f", "1", "g", "2"),
            ("HDEL", "hash", "g"), ("RPUSH", "list", "1", "2", "3"), ("LPOP", "list"),
            ("INCRBY", "n", "41"), ("INCR", "n"), ("SET", "gone", "x"), ("DEL", "gone"),
            ("SET", "persisted", "v", "EX", "100"), ("PERSIST", "persisted")]))
        c.read(15)
        self.short_expired_at = time.monotonic() + 0.35  # `short`'s PX 300, and a margin
        self.log = os.path.join(self.server.data_dir, "aof", "events.0.aof")

    def log_holds(self, text: bytes) -> int:
        with open(self.log, "rb") as f:
            return f.read().count(text)

    def check(self, c: Conn) -> None:
        # Not synchronisation: a restart can take under 300 ms, and `short` must be past
        # its time when looked at (a store that counted it from the restart would show it).
        time.sleep(max(0.0, self.short_expired_at - time.monotonic()))
        self.assertEqual(c.call("GET", "str"), b"\x00binary\r\n")
        self.assertTrue(990 <= c.call("TTL", "ttl") <= 1000)
        self.assertIsNone(c.call("GET", "short"))
        self.assertEqual(sorted(c.call("SMEMBERS", "set")), [b"a", b"b"])
        self.assertEqual(c.call("HGETALL", "hash"), [b"f", b"1"])
        self.assertEqual(c.call("LRANGE", "list", "0", "-1"), [b"2", b"3"])
        self.assertEqual(c.call("GET", "n"), b"42")
        self.assertEqual(c.call("EXISTS", "gone"), 0)
        self.assertEqual(c.call("TTL", "persisted"), -1)
        self.assertEqual(c.call("DBSIZE"), 7)

    def test_clean_restart(self):
        c = Conn(self.server.port)
        self.fill(c)
        # `short` expires while the store runs, and is swept: DBSIZE counts it until then.
        wait_for(self, lambda: c.call("DBSIZE") == 7, 10, "the sweep to remove `short`")
        c.close()
        c = self.restart()
        self.check(c)
        c.close()

    def test_kill_9(self):
        c = Conn(self.server.port)
        self.fill(c)
        c.close()
        # The store answers before it writes (everysec): the kill comes once the log holds
        # the last of the fill (its key is in two records); no fsync is needed for a kill.
        wait_for(self, lambda: self.log_holds(b"persisted") >= 2, 10,
                 "the fill to be written to the append-only file")
        c = self.restart(signal.SIGKILL)
        self.check(c)
        c.close()

    def test_ttl_runs_out_while_stopped(self):
        c = Conn(self.server.port)
        c.call("SET", "k", "v", "PX", "500")
        due = time.monotonic() + 0.55  # k's time, as the store counts it, and a margin
        c.call("SET", "keep", "v", "EX", "100")
        c.close()
        self.server.stop()
        # Not synchronisation: k's time must run out while the store is down (a store that
        # counted it from the restart would still show it).
        time.sleep(max(0.0, due - time.monotonic()))
        self.server.start()
        c = Conn(self.server.port)
        self.assertIsNone(c.call("GET", "k"))
        self.assertEqual(c.call("KEYS", "*"), [b"keep"])
        c.close()

    def test_torn_tail(self):
        c = Conn(self.server.port)
        self.fill(c)
        c.close()
        self.server.stop()
        log = os.path.join(self.server.data_dir, "aof", "events.0.aof")
        good = os.path.getsize(log)
        with open(log, "ab") as f:
            f.write(b"\x00\x00\x10\x00\x12\x34")  # a record cut short by a crash
        self.server.start()
        c = Conn(self.server.port)
        self.check(c)
        c.close()
        self.assertEqual(os.path.getsize(log), good)
        with open(self.server.log_file) as f:
            self.assertIn("incomplete record", f.read())

    def test_compaction(self):
        c = Conn(self.server.port)
        self.fill(c)
        for i in range(200):
            c.call("SET", "churn", str(i))
        self.assertEqual(c.call("BGREWRITEAOF"),
                         "Background append only file rewriting started")
        wait_for(self, lambda: b"aof_rewrites:1" in c.call("INFO", "persistence"), 10,
                 "the compaction to end")
        c.call("SET", "after", "1")
        c.close()
        self.assertTrue(os.path.exists(os.path.join(self.server.data_dir, "aof",
                                                    "snapshot.1")))
        c = self.restart()
        self.check_after_compaction(c)
        c.close()

    def check_after_compaction(self, c: Conn) -> None:
        self.assertEqual(c.call("GET", "churn"), b"199")
        self.assertEqual(c.call("GET", "after"), b"1")
        self.assertEqual(c.call("GET", "n"), b"42")
        self.assertEqual(sorted(c.call("SMEMBERS", "set")), [b"a", b"b"])

    def test_second_store_on_the_same_data_dir_refuses(self):
        other = Server("titan", data_dir=self.server.data_dir)
        with self.assertRaises(AssertionError) as e:
            other.start()
        self.assertIn("in use by another titan-store", str(e.exception))


class TitanStoreConfigTests(SynchronousTestCase):
    """`titan-store --config FILE` takes the file's `store:` section; options win."""

    def test_config_file(self):
        server = Server("titan", extra=())
        config = os.path.join(server.data_dir, "titan.yaml")
        with open(config, "w") as f:
            f.write("store:\n  password: from-file\n  max_bulk_bytes: 1000\n"
                    "  fsync: always\nmaster:\n  heartbeat_interval: 1.0\n")
        server.extra = ("--config", config)
        self.addCleanup(server.stop)
        server.start()
        c = Conn(server.port)
        self.assertEqual(c.call("PING"), err("NOAUTH Authentication required."))
        self.assertEqual(c.call("AUTH", "from-file"), "OK")
        self.assertEqual(c.call("SET", "k", "x" * 1000), "OK")
        self.assertEqual(c.call("CONFIG", "GET", "appendfsync"), [b"appendfsync", b"always"])
        c.send(command("SET", "k", "x" * 1001))
        self.assertTrue(c.closed())
        self.assertEqual(c.read(), [err("ERR Protocol error: invalid bulk length")])

    def test_bad_config_stops_start_up_with_one_line(self):
        data_dir = tempfile.mkdtemp(prefix="titan-store-badconfig-")
        config = os.path.join(data_dir, "titan.yaml")
        with open(config, "w") as f:
            f.write("store:\n  fsync: sometimes\n")
        done = subprocess.run([os.path.join(BIN, "twistd"), "-n", "--pidfile=", "titan-store",
                               "--config", config, "--data-dir", data_dir],
                              capture_output=True, timeout=60)
        self.assertNotEqual(done.returncode, 0)
        self.assertIn(f"{config}:2: store.fsync must be one of always, everysec, no",
                      done.stderr.decode())
