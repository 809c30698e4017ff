"""The TITAN_PROTO frame: an 8-byte header, then the body (see docs/protocol.md).

Pure code: no reactor, no sockets.  `FrameDecoder` is fed whatever bytes arrived, in any
split, and yields whole frames or errors.
"""
from __future__ import annotations

import struct
from typing import Iterator, Union

import attrs

from titan.protocols.opcodes import KNOWN_OPCODES, op_name

VERSION = 1
HEADER = struct.Struct("!BBBBI")  # version, opcode, flags, spare, body length
HEADER_SIZE = HEADER.size  # 8
FLAG_STRUCTURED = 0x01
DEFAULT_MAX_BODY = 16 * 1024 * 1024


@attrs.frozen
class Frame:
    opcode: int
    body: bytes
    flags: int = FLAG_STRUCTURED

    @property
    def structured(self) -> bool:
        return bool(self.flags & FLAG_STRUCTURED)


@attrs.frozen
class FrameError:
    """A frame the decoder could not accept.

    `fatal` means the byte stream can no longer be trusted (bad header or length): the peer
    gets this error and the connection closes.  Otherwise the frame was skipped whole and the
    stream goes on.
    """

    code: str
    message: str
    fatal: bool
    opcode: int = 0
    flags: int = FLAG_STRUCTURED


def encode_frame(opcode: int, body: bytes, flags: int = FLAG_STRUCTURED) -> bytes:
    return HEADER.pack(VERSION, opcode, flags, 0, len(body)) + body


class FrameDecoder:
    def __init__(self, max_body: int = DEFAULT_MAX_BODY) -> None:
        self.max_body = max_body
        self._buffer = bytearray()
        self._broken = False

    @property
    def broken(self) -> bool:
        return self._broken

    @property
    def buffered(self) -> int:
        return len(self._buffer)

    def feed(self, data: bytes) -> Iterator[Union[Frame, FrameError]]:
        if self._broken:
            return
        buf = self._buffer
        buf += data
        pos = 0
        end = len(buf)
        try:
            while end - pos >= HEADER_SIZE:
                version, opcode, flags, _spare, length = HEADER.unpack_from(buf, pos)
                if version != VERSION:
                    self._broken = True
                    yield FrameError(
                        "bad_version",
                        f"unsupported protocol version {version} (this server speaks {VERSION})",
                        fatal=True, opcode=opcode, flags=flags)
                    return
                if length > self.max_body:
                    self._broken = True
                    yield FrameError(
                        "too_large",
                        f"{op_name(opcode)} frame of {length} bytes is over the "
                        f"{self.max_body}-byte limit",
                        fatal=True, opcode=opcode, flags=flags)
                    return
                if end - pos - HEADER_SIZE < length:
                    break
                start = pos + HEADER_SIZE
                body = bytes(buf[start:start + length])
                pos = start + length
                if opcode not in KNOWN_OPCODES:
                    yield FrameError("unknown_opcode", f"unknown opcode 0x{opcode:02x}",
                                     fatal=False, opcode=opcode, flags=flags)
                    continue
                yield Frame(opcode, body, flags)
        finally:
            if self._broken:
                buf.clear()
            elif pos:
                del buf[:pos]
