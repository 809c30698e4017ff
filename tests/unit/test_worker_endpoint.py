"""How a worker dials its master: an address straight away, a name through the resolver."""
from __future__ import annotations

from twisted.internet.endpoints import HostnameEndpoint
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.testing import MemoryReactorClock
from twisted.trial.unittest import SynchronousTestCase

from titan.worker.service import master_endpoint


class MasterEndpointTests(SynchronousTestCase):
    def dial(self, host: str):
        reactor = MemoryReactorClock()
        master_endpoint(reactor, host, 9090).connect(Factory.forProtocol(Protocol))
        return reactor

    def test_an_address_is_dialled_at_once_without_resolving(self):
        # (resolving takes a thread of the reactor's pool, which then stays for good)
        for host in ("127.0.0.1", "10.1.2.3", "::1", "fe80::1"):
            reactor = self.dial(host)
            self.assertEqual([(h, p) for h, p, *_ in reactor.tcpClients], [(host, 9090)])

    def test_a_name_is_resolved(self):
        self.assertIsInstance(master_endpoint(MemoryReactorClock(), "master.example", 9090),
                              HostnameEndpoint)
