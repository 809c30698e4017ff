"""RESP2, the Redis serialization protocol: an incremental request parser, a reply parser
(for the client) and the encoders.

Requests are arrays of bulk strings (`*2\\r\\n$3\\r\\nGET\\r\\n$1\\r\\nk\\r\\n`) or inline
commands (`GET k\\r\\n`, as typed into telnet, with Redis's quoting rules).  The parser
follows redis-server's own (networking.c) closely, error messages included, so that clients
see the same replies from TitanStore as from Redis.

Nothing here does I/O: bytes in, commands (lists of bytes) out.
"""
from __future__ import annotations

from typing import Optional

# The same limits as redis-server: inline requests and the count lines of multibulk
# requests may be at most 64 KiB; a bulk string at most proto-max-bulk-len (512 MiB).
INLINE_MAX = 64 * 1024
DEFAULT_MAX_BULK = 512 * 1024 * 1024
INT_MAX = 2 ** 31 - 1
# Before AUTH on a server with a password, Redis accepts only small requests.
UNAUTH_MAX_ARGS = 10
UNAUTH_MAX_BULK = 16384
# A bulk string still this far from complete is gathered in pieces, not by concatenation.
_BIG = 256 * 1024


_HEADERS = [b"$%d" % n for n in range(8192)]  # `$n` for the lengths _fast handles


class ProtocolError(Exception):
    """A request that cannot be parsed: the connection gets `-ERR <message>` and closes."""


class RequestParser:
    """Feed it bytes as they arrive; it returns the complete commands they finish.

    After a protocol error, `error` holds the message (`Protocol error: ...`) and the parser
    takes nothing more; the commands before the bad one are returned first.  With
    `one_at_a_time` set it stops after each command (the rest waits in its buffer until the
    next `feed`, which may be `feed(b"")`): a server uses it while a connection is not yet
    authenticated, because the limits then depend on the commands before.
    """

    __slots__ = ("max_bulk", "unauthenticated", "error", "ready", "_buf", "_args", "_need",
                 "_bulk", "_chunks", "_have", "_want")

    def __init__(self, max_bulk: int = DEFAULT_MAX_BULK) -> None:
        self.max_bulk = max_bulk
        self.unauthenticated = False
        self.error: Optional[str] = None
        # Nothing held: the next bytes start a request, so `parse_whole(data)` may be
        # tried before `feed(data)`.
        self.ready = True
        self._buf = b""
        self._args: Optional[list] = None  # the multibulk request being read
        self._need = 0                       # bulk strings it still lacks
        self._bulk = -1                      # length of the bulk string being read, or -1
        self._chunks: Optional[list] = None  # pieces of a big bulk string
        self._have = 0
        self._want = 0

    def pending(self) -> int:
        """Bytes held for an incomplete request."""
        return len(self._buf) + self._have

    def feed(self, data: bytes) -> list:
        if self.error is not None:
            return []
        if self._chunks is not None:
            self._chunks.append(data)
            self._have += len(data)
            if self._have < self._want:
                return []
            buf = b"".join(self._chunks)
            self._chunks = None
            self._have = 0
        elif self._buf:
            buf = self._buf + data
        else:
            buf = data
        out: list = []
        if self._args is None and not self.unauthenticated and buf and buf[0] == 42:
            # The common case, whole multibulk requests: no state to keep.
            pos = parse_whole(buf, self.max_bulk, out)
            if pos == len(buf):
                self._buf = b""
                self.ready = True
                return out
            if pos:
                buf = buf[pos:]
        try:
            pos = self._parse(buf, out)
        except ProtocolError as e:
            self.error = f"Protocol error: {e}"
            self._buf = b""
            self._args = None
            self.ready = False
            return out
        rest = len(buf) - pos
        if self._bulk >= 0 and self._bulk + 2 - rest > _BIG:
            # A big value on its way: gather its pieces and join them once.
            self._chunks = [buf[pos:]] if rest else []
            self._have = rest
            self._want = self._bulk + 2
            self._buf = b""
        else:
            self._buf = buf[pos:] if rest else b""
        self.ready = not rest and self._args is None
        return out

    def _parse(self, buf: bytes, out: list) -> int:
        pos = 0
        n = len(buf)
        find = buf.find
        args = self._args
        need = self._need
        bulk = self._bulk
        one = self.unauthenticated
        max_bulk = UNAUTH_MAX_BULK if one else self.max_bulk
        try:
            while True:
                if args is None:
                    if pos >= n:
                        return pos
                    if buf[pos] != 42:  # not '*': an inline command
                        nl = find(b"\n", pos)
                        if nl < 0:
                            if n - pos > INLINE_MAX:
                                raise ProtocolError("too big inline request")
                            return pos
                        line = buf[pos:nl]
                        pos = nl + 1
                        words = split_inline(line)
                        if words:
                            out.append(words)
                            if one:
                                return pos
                        continue
                    nl = find(b"\r\n", pos)
                    if nl < 0:
                        if n - pos > INLINE_MAX:
                            raise ProtocolError("too big mbulk count string")
                        return pos
                    s = buf[pos + 1:nl]
                    if s.isdigit() and (s[0] != 48 or len(s) == 1):
                        count = int(s)
                        if count > INT_MAX:
                            raise ProtocolError("invalid multibulk length")
                    else:
                        count = parse_int(s)
                        if count is None or count > 0:
                            raise ProtocolError("invalid multibulk length")
                    pos = nl + 2
                    if count <= 0:
                        continue  # an empty request: ignored, as Redis does
                    if one and count > UNAUTH_MAX_ARGS:
                        raise ProtocolError("unauthenticated multibulk length")
                    args = []
                    need = count
                while need:
                    if bulk < 0:
                        if pos >= n:
                            return pos
                        if buf[pos] != 36:  # '$'
                            raise ProtocolError(f"expected '$', got '{chr(buf[pos])}'")
                        nl = find(b"\r\n", pos)
                        if nl < 0:
                            if n - pos > INLINE_MAX:
                                raise ProtocolError("too big bulk count string")
                            return pos
                        s = buf[pos + 1:nl]
                        if not s.isdigit() or (s[0] == 48 and len(s) > 1):
                            raise ProtocolError("invalid bulk length")
                        bulk = int(s)
                        if bulk > max_bulk:
                            if one:
                                raise ProtocolError("unauthenticated bulk length")
                            raise ProtocolError("invalid bulk length")
                        pos = nl + 2
                    end = pos + bulk
                    if end + 2 > n:
                        return pos
                    # Like Redis, the two bytes after the data are taken as its CRLF unseen.
                    args.append(buf[pos:end])
                    pos = end + 2
                    bulk = -1
                    need -= 1
                out.append(args)
                args = None
                if one:
                    return pos
        finally:
            self._args = args
            self._need = need
            self._bulk = bulk


_ESCAPES = {ord("n"): 10, ord("r"): 13, ord("t"): 9, ord("b"): 8, ord("a"): 7}
_SPACE = frozenset(b" \n\r\t\x0b\x0c\x00")
_HEX = frozenset(b"0123456789abcdefABCDEF")


def parse_whole(buf: bytes, max_bulk: int, out: list) -> int:
    """Parse the complete, well-formed multibulk requests at the start of `buf` into
    `out`; return where they end.  Anything else (an inline request, an incomplete or odd
    one, a value holding CRLF) is left for RequestParser, which starts where this stopped.

    The fast path of the common case: it splits at CRLF and checks that each `$n` line is
    exactly the length of the part after it; a value holding CRLF fails that check at its
    first piece."""
    if len(buf) > max_bulk:
        return 0  # a bulk string may be too long: RequestParser checks each
    parts = buf.split(b"\r\n")
    last = len(parts) - 1
    i = 0
    headers = _HEADERS
    try:
        while i < last:
            h = parts[i]
            s = h[1:]
            if h[:1] != b"*" or not s.isdigit() or s[0] == 48:
                break
            j = i + 1 + 2 * int(s)
            if j > last:
                break
            args = parts[i + 2:j:2]
            if parts[i + 1:j:2] != [headers[len(a)] for a in args]:
                break
            out.append(args)
            i = j
    except IndexError:  # a value longer than the table of headers
        pass
    if i == last:  # all but what follows the last CRLF
        return len(buf) - len(parts[last])
    return sum(map(len, parts[:i])) + 2 * i


def split_inline(line: bytes) -> list:
    """Split an inline request into words the way redis-server does (sdssplitargs):
    whitespace separates; "double quotes" take \\n \\r \\t \\b \\a \\xHH and \\<c>;
    'single quotes' take \\'.  A closing quote must end its word."""
    if b'"' not in line and b"'" not in line:
        return line.split()
    words = []
    i = 0
    n = len(line)
    while True:
        while i < n and line[i] in _SPACE:
            i += 1
        if i >= n:
            return words
        word = bytearray()
        inq = insq = False
        while True:
            if inq:
                if i >= n:
                    raise ProtocolError("unbalanced quotes in request")
                c = line[i]
                if c == 92 and i + 3 < n and line[i + 1] == 120 and \
                        line[i + 2] in _HEX and line[i + 3] in _HEX:  # \xHH
                    word.append(int(line[i + 2:i + 4], 16))
                    i += 3
                elif c == 92 and i + 1 < n:
                    i += 1
                    word.append(_ESCAPES.get(line[i], line[i]))
                elif c == 34:  # closing "
                    if i + 1 < n and line[i + 1] not in _SPACE:
                        raise ProtocolError("unbalanced quotes in request")
                    i += 1
                    break
                else:
                    word.append(c)
            elif insq:
                if i >= n:
                    raise ProtocolError("unbalanced quotes in request")
                c = line[i]
                if c == 92 and i + 1 < n and line[i + 1] == 39:  # \'
                    i += 1
                    word.append(39)
                elif c == 39:
                    if i + 1 < n and line[i + 1] not in _SPACE:
                        raise ProtocolError("unbalanced quotes in request")
                    i += 1
                    break
                else:
                    word.append(c)
            else:
                if i >= n:
                    break
                c = line[i]
                if c in _SPACE:
                    break
                if c == 34:
                    inq = True
                elif c == 39:
                    insq = True
                else:
                    word.append(c)
            i += 1
        words.append(bytes(word))


def parse_int(s: bytes) -> Optional[int]:
    """A signed 64-bit integer written exactly as Redis's string2ll accepts it (no sign
    but '-', no spaces, no leading zeros), else None."""
    if s.isdigit():
        if s[0] == 48 and len(s) > 1:
            return None
        value = int(s)
        return value if value <= 0x7FFFFFFFFFFFFFFF else None
    if len(s) > 1 and s[0] == 45 and s[1:].isdigit() and s[1] != 48:
        value = int(s)
        return value if value >= -0x8000000000000000 else None
    return None


# -- encoders ----------------------------------------------------------------------------

OK = b"+OK\r\n"
PONG = b"+PONG\r\n"
NIL = b"$-1\r\n"
NIL_ARRAY = b"*-1\r\n"
EMPTY_ARRAY = b"*0\r\n"
EMPTY_BULK = b"$0\r\n\r\n"
_INTS = [b":%d\r\n" % i for i in range(-2, 1025)]


def integer(n: int) -> bytes:
    if -2 <= n <= 1024:
        return _INTS[n + 2]
    return b":%d\r\n" % n


def bulk(b: bytes) -> bytes:
    return b"$%d\r\n%b\r\n" % (len(b), b)


NULL3 = b"_\r\n"  # RESP3's null, for bulk strings and arrays alike


def bulk_or_nil(b: Optional[bytes], nil: bytes = NIL) -> bytes:
    if b is None:
        return nil
    return b"$%d\r\n%b\r\n" % (len(b), b)


def simple(s: str) -> bytes:
    return b"+" + s.encode() + b"\r\n"


def error(message: str) -> bytes:
    """`message` with its prefix (ERR, WRONGTYPE, NOAUTH...); CR and LF become spaces, as
    in Redis, so the reply stays one line."""
    return b"-" + message.replace("\r", " ").replace("\n", " ").encode(
        "utf-8", "surrogateescape") + b"\r\n"


def bulks(items, nil: bytes = NIL, kind: bytes = b"*") -> bytes:
    """An array of bulk strings (None becomes `nil`); `kind` ~ makes it a RESP3 set, >
    a RESP3 push."""
    parts = [kind + b"%d\r\n" % len(items)]
    append = parts.append
    for b in items:
        if b is None:
            append(nil)
        else:
            append(b"$%d\r\n%b\r\n" % (len(b), b))
    return b"".join(parts)


def encode(value, resp3: bool = False) -> bytes:
    """Any reply value: None (nil), bytes/str (bulk), int, list/tuple (array, nested),
    dict (RESP3 map, or a flat array in RESP2), ReplyError (error), Simple (status)."""
    if value is None:
        return NULL3 if resp3 else NIL
    if isinstance(value, (bytes, bytearray)):
        return b"$%d\r\n%b\r\n" % (len(value), value)
    if isinstance(value, bool):
        return integer(int(value))
    if isinstance(value, int):
        return integer(value)
    if isinstance(value, Simple):
        return b"+" + value.encode() + b"\r\n"
    if isinstance(value, str):
        return bulk(value.encode())
    if isinstance(value, ReplyError):
        return error(str(value))
    if isinstance(value, (list, tuple)):
        return b"*%d\r\n" % len(value) + b"".join(encode(v, resp3) for v in value)
    if isinstance(value, dict):
        head = b"%%%d\r\n" % len(value) if resp3 else b"*%d\r\n" % (2 * len(value))
        return head + b"".join(encode(k, resp3) + encode(v, resp3)
                               for k, v in value.items())
    raise TypeError(f"cannot encode {type(value).__name__} as RESP")


def command(*args) -> bytes:
    """A request as a client sends it: an array of bulk strings.  str is UTF-8 encoded;
    int and float are written in decimal."""
    parts = [b"*%d\r\n" % len(args)]
    for a in args:
        if isinstance(a, str):
            a = a.encode()
        elif isinstance(a, (int, float)) and not isinstance(a, bool):
            a = repr(a).encode() if isinstance(a, float) else b"%d" % a
        elif not isinstance(a, (bytes, bytearray, memoryview)):
            raise TypeError(f"a command argument must be bytes, str, int or float, not "
                            f"{type(a).__name__}")
        parts.append(b"$%d\r\n%b\r\n" % (len(a), a))
    return b"".join(parts)


# -- replies (the client side) -----------------------------------------------------------

class Simple(str):
    """A status reply (`+OK`)."""


class ReplyError(Exception):
    """An error reply (`-ERR ...`), as a value: the parser returns it, it does not raise."""

    def __eq__(self, other) -> bool:
        return isinstance(other, ReplyError) and str(other) == str(self)

    def __hash__(self) -> int:
        return hash(str(self))

    @property
    def prefix(self) -> str:
        return str(self).split(" ", 1)[0]


class Push(list):
    """A RESP3 push (`>`): a pub/sub message or (un)subscribe confirmation."""


class ReplyParser:
    """Incremental RESP2/RESP3 reply parser: `feed(bytes)` returns the complete replies.

    Status replies come out as Simple (a str), errors as ReplyError instances, integers as
    int, bulk strings as bytes (nil as None), arrays as lists (nil array as None); from
    RESP3: null None, maps dict, sets set, pushes Push, booleans bool, doubles float,
    verbatim strings bytes (without their format).
    Raises ProtocolError on bytes that are neither.
    """

    def __init__(self, max_bulk: int = DEFAULT_MAX_BULK) -> None:
        self.max_bulk = max_bulk
        self._buf = b""
        self._stack: list = []  # [items, still needed, kind]

    def feed(self, data: bytes) -> list:
        buf = self._buf + data if self._buf else data
        out: list = []
        pos = 0
        n = len(buf)
        stack = self._stack
        while pos < n:
            nl = buf.find(b"\r\n", pos)
            if nl < 0:
                break
            kind = buf[pos]
            if kind in b"$=!":  # bulk, verbatim, blob error
                length = _reply_int(buf[pos + 1:nl])
                if length < 0:
                    value = None
                    pos = nl + 2
                else:
                    if length > self.max_bulk:
                        raise ProtocolError("bulk reply too long")
                    end = nl + 2 + length
                    if end + 2 > n:
                        break
                    value = buf[nl + 2:end]
                    pos = end + 2
                    if kind == 61:  # =: "txt:" and the text
                        value = value[4:]
                    elif kind == 33:
                        value = ReplyError(value.decode("utf-8", "replace"))
            elif kind == 43:  # +
                value = Simple(buf[pos + 1:nl].decode("utf-8", "replace"))
                pos = nl + 2
            elif kind == 58 or kind == 40:  # : (
                value = _reply_int(buf[pos + 1:nl])
                pos = nl + 2
            elif kind == 45:  # -
                value = ReplyError(buf[pos + 1:nl].decode("utf-8", "replace"))
                pos = nl + 2
            elif kind == 95:  # _
                value = None
                pos = nl + 2
            elif kind == 35:  # #
                value = buf[pos + 1:nl] == b"t"
                pos = nl + 2
            elif kind == 44:  # ,
                value = float(buf[pos + 1:nl])
                pos = nl + 2
            elif kind in b"*%~>":
                count = _reply_int(buf[pos + 1:nl])
                pos = nl + 2
                if kind == 37:  # %: key, value pairs
                    count *= 2
                if count > 0:
                    stack.append([[], count, kind])
                    continue
                value = None if count < 0 else _container(kind, [])
            else:
                raise ProtocolError(f"unexpected reply type {chr(kind)!r}")
            # Place the value: into the innermost open aggregate, closing those it completes.
            while stack:
                top = stack[-1]
                top[0].append(value)
                top[1] -= 1
                if top[1]:
                    break
                stack.pop()
                value = _container(top[2], top[0])
            else:
                out.append(value)
        self._buf = buf[pos:] if pos < n else b""
        return out


def _container(kind: int, items: list):
    if kind == 37:
        return dict(zip(items[::2], items[1::2]))
    if kind == 126:
        return set(items)
    if kind == 62:
        return Push(items)
    return items


def _reply_int(s: bytes) -> int:
    try:
        return int(s)
    except ValueError:
        raise ProtocolError(f"not an integer: {s[:32]!r}") from None
