"""Which local user runs the other end of a connection (titan/master/peer.py)."""
from __future__ import annotations

import os
import socket
import tempfile

from twisted.internet.address import IPv4Address, IPv6Address
from twisted.trial.unittest import SynchronousTestCase

from titan.master import peer

# Two sockets of one loopback connection as /proc/net/tcp lists them (uid 1000 connected
# from port 41000 to a master on 9090, uid 0), and the header line.
TCP = """\
  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 0100007F:2382 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 11
   1: 0100007F:A028 0100007F:2382 01 00000000:00000000 00:00000000 00000000  1000        0 12
   2: 0100007F:2382 0100007F:A028 01 00000000:00000000 00:00000000 00000000     0        0 13
"""
# ::1 port 41001 (uid 1001) to ::1 port 9090, and an IPv4-mapped peer (uid 1002) seen in tcp6.
TCP6 = """\
  sl  local_address                         remote_address                        st
   0: 00000000000000000000000001000000:A029 00000000000000000000000001000000:2382 01 \
00000000:00000000 00:00000000 00000000  1001        0 21
   1: 0000000000000000FFFF00000100007F:A02A 0000000000000000FFFF00000100007F:2382 01 \
00000000:00000000 00:00000000 00000000  1002        0 22
"""


class TablesTests(SynchronousTestCase):
    def uid(self, peer_addr, host_addr):
        return peer.tcp_peer_uid(peer_addr, host_addr,
                                 read=lambda: (TCP + TCP6).splitlines())

    def test_the_peers_socket_is_found_by_its_two_ends(self):
        self.assertEqual(self.uid(IPv4Address("TCP", "127.0.0.1", 41000),
                                  IPv4Address("TCP", "127.0.0.1", 9090)), 1000)
        self.assertEqual(self.uid(IPv6Address("TCP", "::1", 41001),
                                  IPv6Address("TCP", "::1", 9090)), 1001)
        # A peer the master sees as ::ffff:127.0.0.1 is listed as such or as 127.0.0.1.
        self.assertEqual(self.uid(IPv6Address("TCP", "::ffff:127.0.0.1", 41002),
                                  IPv6Address("TCP", "::ffff:127.0.0.1", 9090)), 1002)
        self.assertEqual(self.uid(IPv6Address("TCP", "::ffff:127.0.0.1", 41000),
                                  IPv6Address("TCP", "::", 9090)), None)  # not our end
        self.assertEqual(self.uid(IPv6Address("TCP", "::ffff:127.0.0.1", 41000),
                                  IPv6Address("TCP", "::ffff:127.0.0.1", 9090)), 1000)

    def test_a_peer_not_in_the_tables_has_no_uid(self):
        self.assertIsNone(self.uid(IPv4Address("TCP", "10.0.0.5", 41000),
                                   IPv4Address("TCP", "10.0.0.1", 9090)))
        self.assertIsNone(self.uid(IPv4Address("TCP", "127.0.0.1", 41099),
                                   IPv4Address("TCP", "127.0.0.1", 9090)))


class RealSocketTests(SynchronousTestCase):
    """The kernel's own tables: a connection this process makes is this process's user's."""

    def test_loopback_tcp(self):
        for family, host, address in ((socket.AF_INET, "127.0.0.1", IPv4Address),
                                      (socket.AF_INET6, "::1", IPv6Address)):
            with socket.socket(family) as server:
                try:
                    server.bind((host, 0))
                except OSError:
                    continue  # no IPv6 here
                server.listen()
                port = server.getsockname()[1]
                with socket.create_connection((host, port)) as client:
                    conn, addr = server.accept()
                    with conn:
                        found = peer.tcp_peer_uid(address("TCP", addr[0], addr[1]),
                                                  address("TCP", host, port))
                    self.assertEqual(found, os.geteuid(), host)
                    client.close()

    def test_unix_socket(self):
        path = os.path.join(tempfile.mkdtemp(), "s")
        with socket.socket(socket.AF_UNIX) as server:
            server.bind(path)
            server.listen()
            with socket.socket(socket.AF_UNIX) as client:
                client.connect(path)
                conn, _ = server.accept()
                with conn:
                    self.assertEqual(peer.unix_peer_uid(conn), os.geteuid())
