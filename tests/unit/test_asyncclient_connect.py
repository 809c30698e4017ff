"""AsyncClient.connect against something that is not a master: it says so within seconds
(issue 13, C14: the blocking client did already; the Twisted one waited for its 60 s)."""
from __future__ import annotations

import time

from twisted.internet import defer, protocol, reactor
from twisted.trial.unittest import TestCase

from titan.errors import TitanError
from titan.sdk import asyncclient


class Silent(protocol.Protocol):
    """Takes the connection and never says a word (a port of some other service)."""


class Http(protocol.Protocol):
    def dataReceived(self, data: bytes) -> None:
        self.transport.write(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n")
        self.transport.loseConnection()


class NotAMasterTests(TestCase):
    def serve(self, kind) -> str:
        port = reactor.listenTCP(0, protocol.Factory.forProtocol(kind), interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        return f"127.0.0.1:{port.getHost().port}"

    async def refused(self, where: str) -> tuple[str, float]:
        started = time.monotonic()
        try:
            client = await asyncclient.AsyncClient.connect(reactor, where, token="t")
        except TitanError as e:
            return str(e), time.monotonic() - started
        client.protocol.transport.loseConnection()
        self.fail(f"connected to {where}")

    def test_a_silent_server(self):
        self.patch(asyncclient, "CONNECT_TIMEOUT", 0.3)
        where = self.serve(Silent)

        async def check():
            said, took = await self.refused(where)
            self.assertEqual(said, f"{where} is not a Titan master: no answer to the HELLO "
                                   "within 0.3 s")
            self.assertLess(took, 5)
        return defer.Deferred.fromCoroutine(check())

    def test_a_server_of_another_protocol(self):
        where = self.serve(Http)

        async def check():
            said, took = await self.refused(where)
            self.assertTrue(said.startswith(f"{where} is not a Titan master"), said)
            self.assertLess(took, 2)
        return defer.Deferred.fromCoroutine(check())
