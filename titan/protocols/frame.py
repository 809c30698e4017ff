"""The TITAN_PROTO frame: an 8-byte header, then the body (see docs/protocol.md).

Pure code: no reactor, no sockets.  `FrameDecoder` is fed whatever bytes arrived, in any
split, and yields whole frames or errors.
"""
from __future__ import annotations

import struct
from typing import Callable, NamedTuple, Optional, Union

from titan.protocols.opcodes import KNOWN_OPCODES, op_name

VERSION = 1
HEADER = struct.Struct("!BBBBI")  # version, opcode, flags, spare, body length
HEADER_SIZE = HEADER.size  # 8
FLAG_STRUCTURED = 0x01
DEFAULT_MAX_BODY = 16 * 1024 * 1024
# Until a peer has authenticated, a master reads frames of at most this many bytes (a HELLO
# or REGISTER is far smaller): a stranger cannot make it buffer megabytes.
DEFAULT_PREAUTH_MAX_BODY = 64 * 1024


# Named tuples, not attrs classes: every client imports this module, and `titan status`
# should not pay for building attrs classes at start-up (~15 ms of a CLI command).
class Frame(NamedTuple):
    opcode: int
    body: bytes
    flags: int = FLAG_STRUCTURED

    @property
    def structured(self) -> bool:
        return bool(self.flags & FLAG_STRUCTURED)


class FrameError(NamedTuple):
    """A frame the decoder could not accept.

    `fatal` means the byte stream can no longer be trusted (bad header or length): the peer
    gets this error and the connection closes.  Otherwise the frame was skipped whole (its
    body is kept, so a structured reply can still name the request's `rid`) and the stream
    goes on.
    """

    code: str
    message: str
    fatal: bool
    opcode: int = 0
    flags: int = FLAG_STRUCTURED
    body: bytes = b""


def encode_frame(opcode: int, body: bytes, flags: int = FLAG_STRUCTURED) -> bytes:
    return HEADER.pack(VERSION, opcode, flags, 0, len(body)) + body


class FrameDecoder:
    """`max_body` bounds a structured frame's body, `max_text_body` a text frame's (flags 0;
    the same as `max_body` unless given).  Both are checked on the header, before any of
    the body is buffered, and may be changed between feeds (a master raises them once a
    peer has authenticated).

    `text_gate`, when set, is asked about a text frame longer than `max_body` (only then):
    it returns None to let it have up to `max_text_body`, or why not (said in the error).
    """

    def __init__(self, max_body: int = DEFAULT_MAX_BODY,
                 max_text_body: Optional[int] = None) -> None:
        self.max_body = max_body
        self.max_text_body = max_text_body
        self.text_gate: Optional[Callable[[int, int], Optional[str]]] = None
        self._buffer = bytearray()
        self._broken = False

    # Said after the limit in a too_large error (where the limit comes from).
    limit_note = ""
    text_limit_note = ""

    @property
    def broken(self) -> bool:
        return self._broken

    @property
    def buffered(self) -> int:
        return len(self._buffer)

    def feed(self, data: bytes) -> list[Union[Frame, FrameError]]:
        """Buffer `data`; return the frames (and errors) it completes, in stream order.

        Eager on purpose: the bytes are buffered even if the caller stops looking at the
        result early, and handlers that run on the returned frames may feed this decoder again.
        """
        if self._broken:
            return []
        buf = self._buffer
        buf += data
        out: list[Union[Frame, FrameError]] = []
        pos = 0
        end = len(buf)
        while end - pos >= HEADER_SIZE:
            version, opcode, flags, _spare, length = HEADER.unpack_from(buf, pos)
            if version != VERSION:
                out.append(FrameError(
                    "bad_version",
                    f"unsupported protocol version {version} (this server speaks {VERSION})",
                    fatal=True, opcode=opcode, flags=flags))
                break
            limit, note = self.max_body, self.limit_note
            if length > limit and not flags & FLAG_STRUCTURED and \
                    self.max_text_body is not None:
                why = self.text_gate(opcode, length) if self.text_gate is not None else None
                if why is None:
                    limit, note = self.max_text_body, self.text_limit_note
                else:
                    note = f" ({why})"
            if length > limit:
                kind = "" if flags & FLAG_STRUCTURED else "text "
                out.append(FrameError(
                    "too_large",
                    f"{op_name(opcode)} {kind}frame of {length} bytes is over the "
                    f"{limit}-byte limit{note}",
                    fatal=True, opcode=opcode, flags=flags))
                break
            if end - pos - HEADER_SIZE < length:
                break
            start = pos + HEADER_SIZE
            body = bytes(buf[start:start + length])
            pos = start + length
            if opcode in KNOWN_OPCODES:
                out.append(Frame(opcode, body, flags))
            else:
                out.append(FrameError("unknown_opcode", f"unknown opcode 0x{opcode:02x}",
                                      fatal=False, opcode=opcode, flags=flags, body=body))
        if out and isinstance(out[-1], FrameError) and out[-1].fatal:
            self._broken = True
            buf.clear()
        elif pos:
            del buf[:pos]
        return out
