"""The Twisted side of TitanStore: one protocol instance per connection.

The path of a request is short on purpose: bytes → RequestParser → Store.execute per
command → the replies of everything that one read brought, joined and written at once.
On a plain TCP connection whose send buffer is empty the reply goes straight to the
socket (one system call) instead of waiting for the reactor's next write pass.
"""
from __future__ import annotations

from typing import Optional

from twisted.internet import interfaces, tcp
from twisted.internet.protocol import Factory, Protocol
from twisted.logger import Logger
from zope.interface import implementer

from titan.limits import connection_cap, raise_fd_limit
from titan.store.commands import Session, Store
from titan.store.resp import DEFAULT_MAX_BULK, RequestParser, error, parse_whole


@implementer(interfaces.IPushProducer)
class _ReadPauser:
    """Registered as the transport's producer: while a client's unread replies pile up
    beyond the transport's buffer size, its requests are not read."""

    def __init__(self, transport) -> None:
        self.transport = transport

    def pauseProducing(self) -> None:
        self.transport.pauseProducing()

    def resumeProducing(self) -> None:
        self.transport.resumeProducing()

    def stopProducing(self) -> None:
        pass


class StoreProtocol(Protocol, Session):
    log = Logger()

    def __init__(self, factory: "StoreFactory") -> None:
        Session.__init__(self, authenticated=factory.store.password is None)
        self.factory = factory
        self.store = factory.store
        self.parser = RequestParser(factory.max_bulk)
        self.parser.unauthenticated = not self.authenticated
        self._direct = False
        self._held: Optional[list] = None  # (flush, reply) waiting for an fsync (always)
        self._ticket = 0
        self._closed = False
        self._auth_call = None

    # -- connection ------------------------------------------------------------------------

    def connectionMade(self) -> None:
        f = self.factory
        t = self.transport
        peer = t.getPeer()
        self.address = f"{getattr(peer, 'host', peer)}:{getattr(peer, 'port', '')}"
        if len(f.clients) >= f.max_clients:
            t.write(b"-ERR max number of clients reached\r\n")
            self.closing = True
            t.loseConnection()
            return
        f.next_id += 1
        self.id = f.next_id
        f.clients.add(self)
        f.connections_received += 1
        if isinstance(t, tcp.Connection):
            t.setTcpNoDelay(True)
            # The direct write needs Twisted's buffer attributes; without them, none.
            self._direct = hasattr(t, "dataBuffer") and hasattr(t, "_tempDataLen")
        t.registerProducer(_ReadPauser(t), True)
        if not self.authenticated and f.auth_timeout is not None:
            self._auth_call = f.clock().callLater(f.auth_timeout, self._auth_expired)

    def _auth_expired(self) -> None:
        """A client of a store with a password must AUTH within store.auth_timeout."""
        self._auth_call = None
        if self.authenticated or self._closed or self.closing:
            return
        self._send(error(f"ERR AUTH required within {self.factory.auth_timeout:g} s of "
                         "connecting (store.auth_timeout)"))
        self._close()

    def connectionLost(self, reason=None) -> None:
        self._closed = True
        if self._auth_call is not None and self._auth_call.active():
            self._auth_call.cancel()
        self.factory.clients.discard(self)
        if self.channels or self.patterns:
            self.store.drop_session(self)

    def _close(self) -> None:
        self.closing = True
        t = self.transport
        t.unregisterProducer()  # else a paused producer keeps the connection open
        t.loseConnection()

    # -- requests --------------------------------------------------------------------------

    def dataReceived(self, data: bytes) -> None:
        parser = self.parser
        if self.gated or self.closing or parser.unauthenticated:
            self._gated_data(data)
            return
        if parser.ready:
            commands = []
            if parse_whole(data, parser.max_bulk, commands) != len(data):
                commands = parser.feed(data)  # from the start: parse_whole keeps nothing
        else:
            commands = parser.feed(data)
        if commands:
            self._run(commands)
        if parser.error is not None and not self.closing:
            self._send(error("ERR " + parser.error))
            self._close()

    def _gated_data(self, data: bytes) -> None:
        """dataReceived for a connection not yet authenticated, subscribed or closing."""
        if self.closing:
            return
        parser = self.parser
        while True:
            # Until AUTH the parser hands out one request at a time: its limits depend on
            # whether the requests before it authenticated the connection.
            one = parser.unauthenticated
            commands = parser.feed(data)
            data = b""
            if commands:
                self._run(commands)
                parser.unauthenticated = not self.authenticated
            if not one or not commands or self.closing:
                break
        if parser.error is not None and not self.closing:
            self._send(error("ERR " + parser.error))
            self._close()

    def _run(self, commands: list) -> None:
        store = self.store
        db = store.db
        if db.expires:
            db.tick()
        else:
            db.stale = True  # nothing depends on the time: skip reading the clock
        hold = self.factory.hold_writes
        if hold:
            journal = len(store.journal)
        if len(commands) == 1:
            out = store.execute(self, commands[0])
        else:
            execute = store.execute
            replies = []
            for args in commands:
                replies.append(execute(self, args))
                if self.closing:
                    break
            out = b"".join(replies)
        store.commands_processed += len(commands)
        if hold and len(store.journal) != journal:
            self._hold()
        self._send(out)
        if self.closing:
            self._close()

    # -- replies ---------------------------------------------------------------------------

    def _hold(self) -> None:
        """Keep this connection's replies (these and all after them, in order) until the
        changes they report are on disk: until the next flush of the journal is synced."""
        if self._held is None:
            self._held = []
        self._ticket = self.factory.flush_seq + 1
        self.factory.durable_waiters.append(self)

    def release(self, synced: int) -> None:
        """Flushes up to `synced` are on disk: send what waited for them."""
        held = self._held
        if held is None:
            return
        i = 0
        while i < len(held) and held[i][0] <= synced:
            i += 1
        ready = b"".join(data for _, data in held[:i])
        del held[:i]
        if not held:
            self._held = None
        if ready and not self._closed:
            self._send_now(ready)

    def _send(self, data: bytes) -> None:
        if self._held is not None:
            self._held.append((self._ticket, data))
            return
        self._send_now(data)

    def _send_now(self, data: bytes) -> None:
        t = self.transport
        if self._direct and not t.dataBuffer and not t._tempDataLen:
            try:
                sent = t.socket.send(data)
            except (BlockingIOError, InterruptedError):
                sent = 0
            except OSError:
                sent = 0  # Twisted's own write finds out what went wrong
            if sent == len(data):
                return
            data = data[sent:]
        t.write(data)

    def push(self, data: bytes) -> None:
        """A pub/sub message: sent like a reply; a subscriber that does not read them is
        cut off once pubsub_buffer_bytes are waiting for it."""
        if self._closed:
            return
        self._send(data)
        t = self.transport
        waiting = getattr(t, "_tempDataLen", 0) + len(getattr(t, "dataBuffer", b""))
        if waiting > self.factory.pubsub_buffer_bytes:
            self.log.warn("disconnecting subscriber {address}: {bytes} bytes of messages "
                          "unread", address=self.address, bytes=waiting)
            self._closed = True
            self.store.drop_session(self)
            t.unregisterProducer()
            t.abortConnection()


class StoreFactory(Factory):
    noisy = False

    def __init__(self, store: Store, max_bulk: int = DEFAULT_MAX_BULK,
                 max_clients: int = 10000, pubsub_buffer_bytes: int = 32 * 1024 * 1024,
                 hold_writes: bool = False, auth_timeout: Optional[float] = None,
                 reactor=None) -> None:
        self.store = store
        self.max_bulk = max_bulk
        self.max_clients = max_clients
        self.auth_timeout = auth_timeout
        self.reactor = reactor
        self.pubsub_buffer_bytes = pubsub_buffer_bytes
        # fsync always: a reply to a change goes out once the change is on disk.
        self.hold_writes = hold_writes
        self.durable_waiters: list[StoreProtocol] = []
        self.flush_seq = 0  # journal flushes so far: replies held for one wait for its number
        self.clients: set[StoreProtocol] = set()
        self.next_id = 0
        self.connections_received = 0

    def clock(self):
        if self.reactor is None:
            from twisted.internet import reactor
            return reactor
        return self.reactor

    def startFactory(self) -> None:
        # Descriptors: as many as the system allows, and clients kept below them.
        soft, _hard = raise_fd_limit()
        self.max_clients = connection_cap(self.max_clients, soft)

    def buildProtocol(self, addr) -> StoreProtocol:
        return StoreProtocol(self)

    def take_waiters(self) -> tuple[int, list]:
        """A journal flush starts: its number, and the connections waiting for it."""
        self.flush_seq += 1
        waiters, self.durable_waiters = self.durable_waiters, []
        return self.flush_seq, waiters
