"""Which local user runs the other end of a connection (Linux).

A UNIX socket says so itself (SO_PEERCRED).  For a TCP connection over loopback, the
kernel's socket tables (/proc/net/tcp and tcp6) list every socket of this network namespace
with its owner's uid: the peer's socket is the one whose local address is our remote one and
whose remote address is our local one.  A peer on another machine has no uid here (None).
"""
from __future__ import annotations

import ipaddress
import socket
import struct
from typing import Callable, Iterable, Optional

from twisted.internet.address import IPv4Address, IPv6Address, UNIXAddress

TCP_TABLES = ("/proc/net/tcp", "/proc/net/tcp6")
_UCRED = struct.Struct("3i")  # pid, uid, gid


def _address(text: str) -> tuple:
    """/proc/net/tcp's `HEX:PORT` → (ip address, port).  The address is the kernel's bytes
    in host order, 32 bits at a time (little-endian on the machines Titan runs on)."""
    hex_ip, hex_port = text.split(":")
    raw = bytes.fromhex(hex_ip)
    words = b"".join(raw[i:i + 4][::-1] for i in range(0, len(raw), 4))
    return _plain(ipaddress.ip_address(words)), int(hex_port, 16)


def _plain(address):
    """An IPv4-mapped IPv6 address as the IPv4 address it is (the same socket appears as
    one in tcp6 and as the other to a peer)."""
    mapped = getattr(address, "ipv4_mapped", None)
    return mapped if mapped is not None else address


def uid_in_tables(lines: Iterable[str], local: tuple, remote: tuple) -> Optional[int]:
    """The uid of the socket whose local end is `local` and remote end `remote` (each an
    (ip address, port)), in the lines of /proc/net/tcp{,6}; None if it is not there."""
    ports = (f":{local[1]:04X}", f":{remote[1]:04X}")  # a cheap test before parsing
    for line in lines:
        fields = line.split()
        if len(fields) < 8 or not (fields[1].endswith(ports[0])
                                   and fields[2].endswith(ports[1])):
            continue  # the header, or another connection
        try:
            if _address(fields[1]) == local and _address(fields[2]) == remote:
                return int(fields[7])
        except ValueError:
            continue
    return None


def _read_tables(paths=TCP_TABLES) -> Iterable[str]:
    for path in paths:
        try:
            with open(path, encoding="ascii", errors="replace") as f:
                yield from f
        except OSError:
            continue


def tcp_peer_uid(peer, host, read: Callable[[], Iterable[str]] = _read_tables) -> Optional[int]:
    """The uid that owns the far end of the TCP connection from `peer` to `host` (Twisted
    addresses), when both ends are on this machine; else None."""
    try:
        remote = (_plain(ipaddress.ip_address(peer.host.split("%", 1)[0])), int(peer.port))
        local = (_plain(ipaddress.ip_address(host.host.split("%", 1)[0])), int(host.port))
    except (AttributeError, ValueError, TypeError):
        return None
    # The peer's socket: local end = our remote end, remote end = our local end.
    return uid_in_tables(read(), remote, local)


def unix_peer_uid(sock) -> Optional[int]:
    try:
        data = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _UCRED.size)
    except (AttributeError, OSError):
        return None
    return _UCRED.unpack(data)[1]


def peer_uid(transport) -> Optional[int]:
    """The uid running the other end of `transport`'s connection, if it is on this machine
    and the kernel tells; None otherwise."""
    try:
        peer, host = transport.getPeer(), transport.getHost()
    except Exception:
        return None
    if isinstance(peer, UNIXAddress):
        return unix_peer_uid(getattr(transport, "socket", None))
    if isinstance(peer, (IPv4Address, IPv6Address)):
        return tcp_peer_uid(peer, host)
    return None


def describe_uid(uid: Optional[int]) -> str:
    if uid is None:
        return "an unknown user"
    try:
        import pwd
        return f"uid {uid} ({pwd.getpwuid(uid).pw_name})"
    except (ImportError, KeyError):
        return f"uid {uid}"
