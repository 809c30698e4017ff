"""StoreClient: a Twisted client for TitanStore — or for Redis and Valkey, which speak the
same protocol.

    client = StoreClient("redis://:secret@127.0.0.1:6379/0")
    yield client.set("job:1", b"RUNNING", ex=60)
    state = yield client.get("job:1")                  # b"RUNNING"
    sub = yield client.subscribe("events", on_event)   # on_event(channel, message)
    yield client.publish("events", b"job:1 done")      # 1
    yield sub.unsubscribe()
    yield client.close()

Every method returns a Deferred.  Commands share one connection and are pipelined: each is
written at once and the replies are matched to them in order.  Subscriptions use a second
connection, opened at the first subscribe.  Both reconnect with backoff (ClientService):
after a reconnection the client authenticates again and subscribes again to everything
subscribed; messages published while it was away are lost (as with any Redis client).

A command issued while there is no connection waits for one for `connect_timeout`
seconds, then fails with StoreUnavailable; a command in flight when the connection drops
fails with StoreUnavailable too (it may or may not have run).  An error reply fails the
command's Deferred with StoreError (its message, e.g. "WRONGTYPE Operation against...").

Keys, values, channels and messages may be bytes or str (UTF-8); replies are bytes.
"""
from __future__ import annotations

from collections import deque
from typing import Callable, Optional, Union
from urllib.parse import unquote, urlsplit

from twisted.application.internet import ClientService, backoffPolicy
from twisted.internet import defer
from twisted.internet.endpoints import HostnameEndpoint
from twisted.internet.protocol import Factory, Protocol
from twisted.logger import Logger
from twisted.python.failure import Failure

from titan.store.resp import ReplyError, ReplyParser, command

Data = Union[bytes, str]


class StoreError(Exception):
    """The store answered with an error."""

    @property
    def prefix(self) -> str:
        return str(self).split(" ", 1)[0]


class StoreUnavailable(Exception):
    """No connection to the store (now, or within connect_timeout)."""


def parse_url(url: str) -> dict:
    """redis://[[user]:password@]host[:port][/db] → host, port, username, password, db."""
    parts = urlsplit(url)
    if parts.scheme != "redis":
        raise ValueError(f"{url!r}: a store URL starts with redis:// (TLS is not supported)")
    try:
        port = parts.port or 6379
    except ValueError:
        raise ValueError(f"{url!r}: the port is not a number") from None
    path = parts.path.strip("/")
    if path and not path.isdigit():
        raise ValueError(f"{url!r}: the database after the / must be a number")
    return {"host": parts.hostname or "127.0.0.1", "port": port,
            "username": unquote(parts.username) if parts.username else None,
            "password": unquote(parts.password) if parts.password is not None else None,
            "db": int(path or 0)}


def _b(value: Data) -> bytes:
    return value.encode() if isinstance(value, str) else value


class _CommandProtocol(Protocol):
    def __init__(self, client: "StoreClient") -> None:
        self.client = client
        self.parser = ReplyParser()
        self.waiting: deque = deque()
        # (The client holds ClientService's proxy of this protocol, not this object:
        # it tells a connection that is gone by this flag.)
        self.alive = True

    def connectionMade(self) -> None:
        if hasattr(self.transport, "setTcpNoDelay"):
            self.transport.setTcpNoDelay(True)

    def send(self, args: tuple) -> defer.Deferred:
        d: defer.Deferred = defer.Deferred()
        self.waiting.append(d)
        self.transport.write(command(*args))
        return d

    def dataReceived(self, data: bytes) -> None:
        try:
            replies = self.parser.feed(data)
        except Exception as e:
            self.client.log.error("bad reply from the store ({error}); reconnecting", error=e)
            self.transport.abortConnection()
            return
        waiting = self.waiting
        for reply in replies:
            if not waiting:
                self.client.log.warn("a reply nobody asked for: {reply!r}", reply=reply)
                continue
            d = waiting.popleft()
            if isinstance(reply, ReplyError):
                d.errback(StoreError(str(reply)))
            else:
                d.callback(reply)

    def connectionLost(self, reason=None) -> None:
        self.alive = False
        self.client._lost()
        waiting, self.waiting = self.waiting, deque()
        for d in waiting:
            d.errback(StoreUnavailable("the connection to the store was lost"))


class _SubscriberProtocol(_CommandProtocol):
    """A connection in subscribed mode: pushes (message, subscribe, ...) go to the client;
    other replies (AUTH's) to the commands waiting for them."""

    def dataReceived(self, data: bytes) -> None:
        try:
            replies = self.parser.feed(data)
        except Exception as e:
            self.client.log.error("bad reply from the store ({error}); reconnecting", error=e)
            self.transport.abortConnection()
            return
        for reply in replies:
            if isinstance(reply, list) and reply and isinstance(reply[0], bytes) and \
                    reply[0] in _PUSHES:
                self.client._pushed(reply)
            elif self.waiting:
                d = self.waiting.popleft()
                if isinstance(reply, ReplyError):
                    d.errback(StoreError(str(reply)))
                else:
                    d.callback(reply)
            elif isinstance(reply, ReplyError):
                self.client.log.error("the store refused a subscription command: {error}",
                                      error=str(reply))

    def connectionLost(self, reason=None) -> None:
        self.alive = False
        self.client._sub_lost()
        waiting, self.waiting = self.waiting, deque()
        for d in waiting:
            d.errback(StoreUnavailable("the connection to the store was lost"))


_PUSHES = frozenset((b"message", b"pmessage", b"subscribe", b"psubscribe", b"unsubscribe",
                     b"punsubscribe", b"pong"))


class _Factory(Factory):
    noisy = False

    def __init__(self, make) -> None:
        self.make = make

    def buildProtocol(self, addr):
        return self.make()


class Subscription:
    """One callback on one channel (or pattern).  `unsubscribe()` stops it."""

    def __init__(self, client: "StoreClient", name: bytes, pattern: bool,
                 callback: Callable[[bytes, bytes], object]) -> None:
        self.client = client
        self.name = name
        self.pattern = pattern
        self.callback = callback
        self.active = True

    def unsubscribe(self) -> defer.Deferred:
        return self.client._unsubscribe(self)

    def __repr__(self) -> str:
        kind = "pattern" if self.pattern else "channel"
        return f"<Subscription {kind} {self.name!r}{'' if self.active else ' (ended)'}>"


class StoreClient:
    log = Logger()

    def __init__(self, url: str = "redis://127.0.0.1:6379/0", reactor=None,
                 connect_timeout: float = 10.0, name: Optional[str] = None,
                 retry_max_delay: float = 5.0, password: Optional[str] = None) -> None:
        if reactor is None:
            from twisted.internet import reactor
        self.reactor = reactor
        self.url = url
        self.options = parse_url(url)
        if password and self.options["password"] is None:  # a password the URL lacks
            self.options["password"] = password
        self.connect_timeout = connect_timeout
        self.name = name
        self._retry = backoffPolicy(initialDelay=0.1, maxDelay=retry_max_delay)
        self._proto: Optional[_CommandProtocol] = None
        self._queue: deque = deque()  # (args, Deferred, timer) waiting for a connection
        self._closed = False
        self.last_error: Optional[str] = None
        # Called with (command, seconds, outcome: "ok", "error" or "unavailable") as each
        # command's reply arrives: the master's metrics (titan/master/metrics.py).
        self.on_command: Optional[Callable[[Data, float, str], None]] = None
        self._service = self._make_service(lambda: _CommandProtocol(self), self._prepare)
        self._service.startService()
        # Subscriptions: made on first use.
        self._sub_service: Optional[ClientService] = None
        self._sub_proto: Optional[_SubscriberProtocol] = None
        self._subs: dict[tuple[bool, bytes], list[Subscription]] = {}
        self._confirmed: set = set()          # (pattern, name) the server confirmed
        self._pending: dict[tuple, list] = {}  # (kind, name) -> Deferreds

    def _make_service(self, make, prepare) -> ClientService:
        endpoint = HostnameEndpoint(self.reactor, self.options["host"], self.options["port"],
                                    timeout=max(1, int(self.connect_timeout)))
        return ClientService(endpoint, _Factory(make), retryPolicy=self._retry,
                             clock=self.reactor, prepareConnection=prepare)

    # -- connection ------------------------------------------------------------------------

    def _hello(self, proto: _CommandProtocol) -> list:
        """The commands a new connection starts with."""
        o = self.options
        calls = []
        if o["password"] is not None:
            auth = ("AUTH", o["username"], o["password"]) if o["username"] else \
                ("AUTH", o["password"])
            calls.append(proto.send(auth))
        if o["db"]:
            calls.append(proto.send(("SELECT", o["db"])))
        if self.name:
            calls.append(proto.send(("CLIENT", "SETNAME", self.name)))
        return calls

    def _prepare(self, proto: _CommandProtocol) -> defer.Deferred:
        d = defer.gatherResults(self._hello(proto), consumeErrors=True)

        def ready(_):
            if not proto.alive:
                return
            self._proto = proto
            self.last_error = None
            queue, self._queue = self._queue, deque()
            for args, waiter, timer in queue:
                if timer.active():
                    timer.cancel()
                proto.send(args).chainDeferred(waiter)

        return d.addCallbacks(ready, self._refused, errbackArgs=(proto,))

    def _refused(self, failure: Failure, proto) -> None:
        """The store refused what a new connection starts with (a wrong password): close
        it and let ClientService try again after its backoff.  (The failure is not
        passed on: ClientService takes a failed prepareConnection for a connection that
        never was, and a later disconnection would then confuse it.)"""
        error = failure.value.subFailure if isinstance(failure.value, defer.FirstError) \
            else failure
        message = error.getErrorMessage()
        if message != self.last_error:
            self.log.error("the store at {host}:{port} refused the connection: {error}",
                           host=self.options["host"], port=self.options["port"],
                           error=message)
        self.last_error = message
        if proto.transport is not None:
            proto.transport.loseConnection()

    def _lost(self) -> None:
        if self._proto is not None and not self._proto.alive:
            self._proto = None

    def execute(self, *args) -> defer.Deferred:
        """Any command; the Deferred fires with the decoded reply."""
        if self.on_command is not None and args:
            return self._send(args).addBoth(self._observed, args[0], self.reactor.seconds())
        return self._send(args)

    def _send(self, args: tuple) -> defer.Deferred:
        if self._closed:
            return defer.fail(StoreUnavailable("this StoreClient is closed"))
        proto = self._proto
        if proto is not None:
            return proto.send(args)
        d: defer.Deferred = defer.Deferred()
        entry = [args, d, None]
        entry[2] = self.reactor.callLater(self.connect_timeout, self._gave_up, entry)
        self._queue.append(entry)
        return d

    def _observed(self, result, command: Data, start: float):
        outcome = "ok"
        if isinstance(result, Failure):
            outcome = "error" if result.check(StoreError) else "unavailable"
        if self.on_command is not None:
            self.on_command(command, max(0.0, self.reactor.seconds() - start), outcome)
        return result

    def _gave_up(self, entry) -> None:
        try:
            self._queue.remove(entry)
        except ValueError:
            return
        why = f": {self.last_error}" if self.last_error else ""
        entry[1].errback(StoreUnavailable(
            f"no connection to the store at {self.options['host']}:{self.options['port']} "
            f"within {self.connect_timeout:g}s{why}"))

    def wait_connected(self, timeout: Optional[float] = None) -> defer.Deferred:
        """Fires once the command connection is ready (PING answered)."""
        if timeout is None:
            return self.execute("PING").addCallback(lambda _: None)
        saved = self.connect_timeout
        self.connect_timeout = timeout
        try:
            return self.execute("PING").addCallback(lambda _: None)
        finally:
            self.connect_timeout = saved

    def close(self) -> defer.Deferred:
        self._closed = True
        queue, self._queue = self._queue, deque()
        for _, d, timer in queue:
            if timer.active():
                timer.cancel()
            d.errback(StoreUnavailable("this StoreClient is closed"))
        stops = [self._service.stopService()]
        if self._sub_service is not None:
            stops.append(self._sub_service.stopService())
        for key, waiters in list(self._pending.items()):
            for d in waiters:
                d.errback(StoreUnavailable("this StoreClient is closed"))
        self._pending.clear()
        return defer.DeferredList(stops).addCallback(lambda _: None)

    # -- keys and strings ------------------------------------------------------------------

    def ping(self) -> defer.Deferred:
        return self.execute("PING").addCallback(lambda r: _b(r))

    def get(self, key: Data) -> defer.Deferred:
        return self.execute("GET", key)

    def set(self, key: Data, value: Data, ex: Optional[float] = None,
            px: Optional[int] = None, nx: bool = False, xx: bool = False,
            keepttl: bool = False) -> defer.Deferred:
        """None; with nx or xx, True if it was set and False if not.  `ex` may be a
        fraction of a second (sent as PX)."""
        args: list = ["SET", key, value]
        if ex is not None:
            if isinstance(ex, float) and not ex.is_integer():
                args += ["PX", int(ex * 1000)]
            else:
                args += ["EX", int(ex)]
        if px is not None:
            args += ["PX", int(px)]
        if nx:
            args.append("NX")
        if xx:
            args.append("XX")
        if keepttl:
            args.append("KEEPTTL")
        conditional = nx or xx
        return self.execute(*args).addCallback(
            lambda r: (r is not None) if conditional else None)

    def delete(self, *keys: Data) -> defer.Deferred:
        return self.execute("DEL", *keys)

    def exists(self, *keys: Data) -> defer.Deferred:
        return self.execute("EXISTS", *keys)

    def expire(self, key: Data, seconds: float) -> defer.Deferred:
        if isinstance(seconds, float) and not seconds.is_integer():
            return self.execute("PEXPIRE", key, int(seconds * 1000)).addCallback(bool)
        return self.execute("EXPIRE", key, int(seconds)).addCallback(bool)

    def persist(self, key: Data) -> defer.Deferred:
        return self.execute("PERSIST", key).addCallback(bool)

    def ttl(self, key: Data) -> defer.Deferred:
        return self.execute("TTL", key)

    def pttl(self, key: Data) -> defer.Deferred:
        return self.execute("PTTL", key)

    def incr(self, key: Data, amount: int = 1) -> defer.Deferred:
        return self.execute("INCRBY", key, amount)

    def mget(self, *keys: Data) -> defer.Deferred:
        return self.execute("MGET", *keys)

    def mset(self, mapping: dict) -> defer.Deferred:
        args: list = ["MSET"]
        for k, v in mapping.items():
            args += [k, v]
        return self.execute(*args).addCallback(lambda _: None)

    def keys(self, pattern: Data = "*") -> defer.Deferred:
        return self.execute("KEYS", pattern)

    def scan(self, cursor: int = 0, match: Optional[Data] = None,
             count: Optional[int] = None) -> defer.Deferred:
        """(next cursor, keys); 0 as the next cursor ends the iteration."""
        args: list = ["SCAN", cursor]
        if match is not None:
            args += ["MATCH", match]
        if count is not None:
            args += ["COUNT", count]
        return self.execute(*args).addCallback(lambda r: (int(r[0]), r[1]))

    @defer.inlineCallbacks
    def scan_all(self, match: Optional[Data] = None, count: int = 1000):
        """Every key (matching `match`), by SCAN: a set of bytes."""
        cursor = 0
        found: set = set()
        while True:
            cursor, keys = yield self.scan(cursor, match, count)
            found.update(keys)
            if cursor == 0:
                return found

    def flushdb(self) -> defer.Deferred:
        return self.execute("FLUSHDB").addCallback(lambda _: None)

    def info(self, section: Optional[str] = None) -> defer.Deferred:
        """INFO as a dict of str (sections merged)."""
        args = ("INFO", section) if section else ("INFO",)

        def parse(text: bytes) -> dict:
            out = {}
            for line in text.decode("utf-8", "replace").splitlines():
                if line and not line.startswith("#") and ":" in line:
                    k, v = line.split(":", 1)
                    out[k] = v
            return out

        return self.execute(*args).addCallback(parse)

    # -- sets, hashes, lists ---------------------------------------------------------------

    def sadd(self, key: Data, *members: Data) -> defer.Deferred:
        return self.execute("SADD", key, *members)

    def srem(self, key: Data, *members: Data) -> defer.Deferred:
        return self.execute("SREM", key, *members)

    def smembers(self, key: Data) -> defer.Deferred:
        return self.execute("SMEMBERS", key).addCallback(set)

    def sismember(self, key: Data, member: Data) -> defer.Deferred:
        return self.execute("SISMEMBER", key, member).addCallback(bool)

    def scard(self, key: Data) -> defer.Deferred:
        return self.execute("SCARD", key)

    def hset(self, key: Data, field: Optional[Data] = None, value: Optional[Data] = None,
             mapping: Optional[dict] = None) -> defer.Deferred:
        """How many fields were new."""
        args: list = ["HSET", key]
        if field is not None:
            args += [field, value]
        for k, v in (mapping or {}).items():
            args += [k, v]
        return self.execute(*args)

    def hget(self, key: Data, field: Data) -> defer.Deferred:
        return self.execute("HGET", key, field)

    def hgetall(self, key: Data) -> defer.Deferred:
        return self.execute("HGETALL", key).addCallback(
            lambda flat: dict(zip(flat[::2], flat[1::2])))

    def hdel(self, key: Data, *fields: Data) -> defer.Deferred:
        return self.execute("HDEL", key, *fields)

    def lpush(self, key: Data, *values: Data) -> defer.Deferred:
        return self.execute("LPUSH", key, *values)

    def rpush(self, key: Data, *values: Data) -> defer.Deferred:
        return self.execute("RPUSH", key, *values)

    def lpop(self, key: Data) -> defer.Deferred:
        return self.execute("LPOP", key)

    def rpop(self, key: Data) -> defer.Deferred:
        return self.execute("RPOP", key)

    def lrange(self, key: Data, start: int = 0, stop: int = -1) -> defer.Deferred:
        return self.execute("LRANGE", key, start, stop)

    def llen(self, key: Data) -> defer.Deferred:
        return self.execute("LLEN", key)

    # -- pub/sub ---------------------------------------------------------------------------

    def publish(self, channel: Data, message: Data) -> defer.Deferred:
        """How many subscribers got it."""
        return self.execute("PUBLISH", channel, message)

    def psubscribe(self, pattern: Data, callback) -> defer.Deferred:
        return self.subscribe(pattern, callback, pattern=True)

    def subscribe(self, channel: Data, callback: Callable[[bytes, bytes], object],
                  pattern: bool = False) -> defer.Deferred:
        """Call `callback(channel, message)` for each message on `channel` (with
        pattern=True: on every channel matching the glob pattern).  Fires with a
        Subscription once the store has confirmed it (within connect_timeout, else it
        fails with StoreUnavailable and nothing stays subscribed)."""
        if self._closed:
            return defer.fail(StoreUnavailable("this StoreClient is closed"))
        name = _b(channel)
        sub = Subscription(self, name, pattern, callback)
        key = (pattern, name)
        subs = self._subs.setdefault(key, [])
        subs.append(sub)
        if key in self._confirmed:
            return defer.succeed(sub)
        kind = b"psubscribe" if pattern else b"subscribe"
        d: defer.Deferred = defer.Deferred()
        first = (kind, name) not in self._pending  # else a SUBSCRIBE is on its way
        self._pending.setdefault((kind, name), []).append(d)
        if self._sub_service is None:
            self._sub_service = self._make_service(lambda: _SubscriberProtocol(self),
                                                   self._sub_prepare)
            self._sub_service.startService()
        elif self._sub_proto is not None and first:
            self._sub_proto.send_push(kind, name)
        timer = self.reactor.callLater(self.connect_timeout, self._sub_gave_up, sub, d)

        def confirmed(result):
            if timer.active():
                timer.cancel()
            return sub

        return d.addCallback(confirmed)

    def _sub_gave_up(self, sub: Subscription, d: defer.Deferred) -> None:
        kind = b"psubscribe" if sub.pattern else b"subscribe"
        waiters = self._pending.get((kind, sub.name), [])
        if d in waiters:
            waiters.remove(d)
            if not waiters:
                del self._pending[(kind, sub.name)]
            self._drop(sub)
            why = f": {self.last_error}" if self.last_error else ""
            d.errback(StoreUnavailable(f"the store did not confirm the subscription to "
                                       f"{sub.name!r} within {self.connect_timeout:g}s{why}"))

    def _sub_prepare(self, proto: _SubscriberProtocol) -> defer.Deferred:
        proto.send_push = lambda kind, name: proto.transport.write(command(kind, name))
        d = defer.gatherResults(self._hello(proto), consumeErrors=True)

        def ready(_):
            if not proto.alive:
                return
            self._sub_proto = proto
            self.last_error = None
            channels = [n for (p, n) in self._subs if not p]
            patterns = [n for (p, n) in self._subs if p]
            if channels:
                proto.transport.write(command("SUBSCRIBE", *channels))
            if patterns:
                proto.transport.write(command("PSUBSCRIBE", *patterns))

        return d.addCallbacks(ready, self._refused, errbackArgs=(proto,))

    def _sub_lost(self) -> None:
        if self._sub_proto is not None and not self._sub_proto.alive:
            self._sub_proto = None
            self._confirmed.clear()

    def _pushed(self, reply: list) -> None:
        kind = reply[0]
        if kind == b"message" and len(reply) == 3:
            for sub in list(self._subs.get((False, reply[1]), ())):
                self._deliver(sub, reply[1], reply[2])
        elif kind == b"pmessage" and len(reply) == 4:
            for sub in list(self._subs.get((True, reply[1]), ())):
                self._deliver(sub, reply[2], reply[3])
        elif kind in (b"subscribe", b"psubscribe") and len(reply) == 3:
            key = (kind == b"psubscribe", reply[1])
            if key in self._subs:
                self._confirmed.add(key)
            elif self._sub_proto is not None:  # dropped meanwhile
                self._sub_proto.send_push(b"p" * key[0] + b"unsubscribe", reply[1])
            for d in self._pending.pop((kind, reply[1]), []):
                d.callback(None)
        elif kind in (b"unsubscribe", b"punsubscribe") and len(reply) == 3:
            if reply[1] is not None:
                for d in self._pending.pop((kind, reply[1]), []):
                    d.callback(None)

    def _deliver(self, sub: Subscription, channel: bytes, message: bytes) -> None:
        try:
            sub.callback(channel, message)
        except Exception:
            self.log.failure("a subscriber's callback for {channel!r} failed",
                             channel=channel)

    def _drop(self, sub: Subscription) -> bool:
        """Forget a subscription; True if it was the last on its channel."""
        sub.active = False
        key = (sub.pattern, sub.name)
        subs = self._subs.get(key, [])
        if sub in subs:
            subs.remove(sub)
        if subs:
            return False
        self._subs.pop(key, None)
        self._confirmed.discard(key)
        return True

    def _unsubscribe(self, sub: Subscription) -> defer.Deferred:
        if not sub.active:
            return defer.succeed(None)
        if not self._drop(sub) or self._sub_proto is None:
            return defer.succeed(None)
        kind = b"punsubscribe" if sub.pattern else b"unsubscribe"
        d: defer.Deferred = defer.Deferred()
        self._pending.setdefault((kind, sub.name), []).append(d)
        self._sub_proto.send_push(kind, sub.name)
        return d
