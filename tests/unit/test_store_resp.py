"""RESP2 (titan.store.resp): the request parser at every split of a stream, inline
commands and Redis's quoting, protocol errors with Redis's wording, limits, encoders, and
the reply parser the client uses."""
from __future__ import annotations

from hypothesis import given, settings, strategies as st
from twisted.trial import unittest

from titan.store.resp import (
    INLINE_MAX, ProtocolError, Push, ReplyError, ReplyParser, RequestParser, Simple, bulk,
    bulks, command, encode, error, integer, parse_int, parse_whole, split_inline)

# Requests of every shape, including values that look like framing.
REQUESTS = [
    [b"SET", b"key", b"value"],
    [b"GET", b"key"],
    [b"SET", b"crlf", b"a\r\nb\r\n$3\r\nxyz\r\n"],
    [b"ECHO", b""],
    [b"SET", b"bin", bytes(range(256))],
    [b"MSET", b"*", b"$", b"\r\n", b"*1\r\n"],
    [b"PING"],
]
STREAM = b"".join(command(*r) for r in REQUESTS)
# The same with inline requests and ignored empties mixed in.
MIXED = (command(*REQUESTS[0]) + b"PING\r\n" + b"*0\r\n" + b"\r\n"
         + b'echo "a b" \'c\'\n' + command(*REQUESTS[2]) + b"*-1\r\n" + b"GET x\r\n")
MIXED_PARSED = [REQUESTS[0], [b"PING"], [b"echo", b"a b", b"c"], REQUESTS[2], [b"GET", b"x"]]


def feed_all(chunks, **kw) -> tuple[list, RequestParser]:
    parser = RequestParser(**kw)
    out = []
    for chunk in chunks:
        out.extend(parser.feed(chunk))
    return out, parser


class RequestParserTests(unittest.TestCase):
    def test_whole_stream(self):
        out, parser = feed_all([STREAM])
        self.assertEqual(out, REQUESTS)
        self.assertIsNone(parser.error)
        self.assertEqual(parser.pending(), 0)
        self.assertTrue(parser.ready)

    def test_every_split_in_two(self):
        for i in range(len(STREAM) + 1):
            out, parser = feed_all([STREAM[:i], STREAM[i:]])
            self.assertEqual(out, REQUESTS, f"split at {i}")
            self.assertIsNone(parser.error)

    def test_every_split_in_three(self):
        n = len(MIXED)
        for i in range(0, n + 1, 3):
            for j in range(i, n + 1, 5):
                out, _ = feed_all([MIXED[:i], MIXED[i:j], MIXED[j:]])
                self.assertEqual(out, MIXED_PARSED, f"splits at {i}, {j}")

    def test_byte_by_byte(self):
        out, parser = feed_all([MIXED[i:i + 1] for i in range(len(MIXED))])
        self.assertEqual(out, MIXED_PARSED)
        self.assertTrue(parser.ready)

    @settings(max_examples=200, deadline=None)
    @given(st.lists(st.lists(st.binary(max_size=40), min_size=1, max_size=5), max_size=6),
           st.lists(st.integers(min_value=0, max_value=400), max_size=8))
    def test_any_requests_any_splits(self, requests, cuts):
        stream = b"".join(command(*r) for r in requests)
        points = sorted({min(c, len(stream)) for c in cuts})
        chunks = [stream[a:b] for a, b in zip([0] + points, points + [len(stream)])]
        out, parser = feed_all(chunks)
        self.assertEqual(out, requests)
        self.assertIsNone(parser.error)

    def test_big_value_in_pieces(self):
        value = bytes(range(256)) * 4096  # 1 MiB, gathered in pieces
        data = command(b"SET", b"k", value)
        parser = RequestParser()
        out = []
        for i in range(0, len(data), 1000):
            out.extend(parser.feed(data[i:i + 1000]))
            if i + 1000 < len(data):
                self.assertLess(len(parser._buf), 300_000)
        self.assertEqual(out, [[b"SET", b"k", value]])
        self.assertEqual(parser.pending(), 0)

    def test_parse_whole_is_the_fast_path(self):
        plain = [r for r in REQUESTS if not any(b"\r\n" in a for a in r)]
        data = b"".join(command(*r) for r in plain)
        out: list = []
        self.assertEqual(parse_whole(data, 1 << 20, out), len(data))
        self.assertEqual(out, plain)
        # A value holding CRLF is left for the parser.
        out = []
        data = command(b"GET", b"a") + command(b"GET", b"a\r\nb")
        self.assertEqual(parse_whole(data, 1 << 20, out), len(command(b"GET", b"a")))
        self.assertEqual(out, [[b"GET", b"a"]])
        out = []
        data = command(b"GET", b"a") + b"*2\r\n$3\r\nGET\r\n$1"
        self.assertEqual(parse_whole(data, 1 << 20, out), len(command(b"GET", b"a")))
        self.assertEqual(out, [[b"GET", b"a"]])
        for odd in [b"PING\r\n", b"*01\r\n$4\r\nPING\r\n", b"*1\r\n$04\r\nPING\r\n",
                    b"*1\r\n$+4\r\nPING\r\n", b"*1\r\n$5\r\nPING\r\n"]:
            out = []
            self.assertEqual(parse_whole(odd, 1 << 20, out), 0, odd)
            self.assertEqual(out, [])

    def test_inline(self):
        out, _ = feed_all([b"  set  k   v \r\nget k\nGET\tk\r\n"])
        self.assertEqual(out, [[b"set", b"k", b"v"], [b"get", b"k"], [b"GET", b"k"]])

    def test_empty_requests_are_ignored(self):
        out, parser = feed_all([b"\r\n\n   \r\n*0\r\n*-1\r\nPING\r\n"])
        self.assertEqual(out, [[b"PING"]])
        self.assertIsNone(parser.error)

    def test_redis_takes_the_two_bytes_after_a_value_unseen(self):
        out, _ = feed_all([b"*1\r\n$4\r\nPINGxx*1\r\n$4\r\nPING\r\n"])
        self.assertEqual(out, [[b"PING"], [b"PING"]])

    def assertProtocolError(self, data: bytes, message: str, before=()):
        for chunks in ([data], [data[i:i + 1] for i in range(len(data))]):
            out, parser = feed_all(chunks)
            self.assertEqual(parser.error, "Protocol error: " + message, data)
            self.assertEqual(out, list(before))
            self.assertEqual(parser.feed(b"PING\r\n"), [])  # nothing more after an error

    def test_protocol_errors(self):
        self.assertProtocolError(b"*x\r\n", "invalid multibulk length")
        self.assertProtocolError(b"*1x\r\n", "invalid multibulk length")
        self.assertProtocolError(b"*99999999999\r\n", "invalid multibulk length")
        self.assertProtocolError(b"*1\r\nx\r\n", "expected '$', got 'x'")
        self.assertProtocolError(b"*2\r\n$1\r\na\r\n:1\r\n", "expected '$', got ':'")
        self.assertProtocolError(b"*1\r\n$x\r\n", "invalid bulk length")
        self.assertProtocolError(b"*1\r\n$-1\r\n", "invalid bulk length")
        self.assertProtocolError(b'set "a b\r\n', "unbalanced quotes in request")
        self.assertProtocolError(b"PING\r\n*x\r\n", "invalid multibulk length",
                                 before=[[b"PING"]])

    def test_too_big(self):
        out, parser = feed_all([b"a" * (INLINE_MAX + 1)])
        self.assertEqual(parser.error, "Protocol error: too big inline request")
        out, parser = feed_all([b"*" + b"1" * (INLINE_MAX + 1)])
        self.assertEqual(parser.error, "Protocol error: too big mbulk count string")
        out, parser = feed_all([b"*1\r\n$" + b"1" * (INLINE_MAX + 1)])
        self.assertEqual(parser.error, "Protocol error: too big bulk count string")

    def test_max_bulk(self):
        out, parser = feed_all([command(b"SET", b"k", b"x" * 100)], max_bulk=100)
        self.assertEqual(out, [[b"SET", b"k", b"x" * 100]])
        out, parser = feed_all([command(b"SET", b"k", b"x" * 101)], max_bulk=100)
        self.assertEqual(parser.error, "Protocol error: invalid bulk length")
        # Refused from the length line, before the value arrives.
        out, parser = feed_all([b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$101\r\n"], max_bulk=100)
        self.assertEqual(parser.error, "Protocol error: invalid bulk length")

    def test_unauthenticated_limits_and_one_at_a_time(self):
        parser = RequestParser()
        parser.unauthenticated = True
        data = command(b"AUTH", b"pw") + command(b"PING") + command(b"PING")
        self.assertEqual(parser.feed(data), [[b"AUTH", b"pw"]])
        self.assertEqual(parser.feed(b""), [[b"PING"]])
        parser.unauthenticated = False
        self.assertEqual(parser.feed(b""), [[b"PING"]])
        parser = RequestParser()
        parser.unauthenticated = True
        parser.feed(b"*11\r\n")
        self.assertEqual(parser.error, "Protocol error: unauthenticated multibulk length")
        parser = RequestParser()
        parser.unauthenticated = True
        parser.feed(b"*2\r\n$16385\r\n")
        self.assertEqual(parser.error, "Protocol error: unauthenticated bulk length")


class InlineSplitTests(unittest.TestCase):
    def test_quoting_like_redis(self):
        cases = {
            b"a b  c": [b"a", b"b", b"c"],
            b'"a b" c': [b"a b", b"c"],
            b"'a b' c": [b"a b", b"c"],
            b'"\\x41\\n\\r\\t\\b\\a\\\\\\"\\z"': [b"A\n\r\t\b\a\\\"z"],
            b"'it\\'s'": [b"it's"],
            b"'a\\nb'": [b"a\\nb"],
            b'""': [b""],
            b"''": [b""],
            b'a"b c"': [b"ab c"],
            b'"\\x4"': [b"x4"],
            b"": [],
            b"   ": [],
        }
        for line, words in cases.items():
            self.assertEqual(split_inline(line), words, line)

    def test_unbalanced(self):
        for line in [b'"a', b"'a", b'"a"b', b"'a'b", b'"a\\"']:
            self.assertRaises(ProtocolError, split_inline, line)


class IntegerTests(unittest.TestCase):
    def test_parse_int_like_string2ll(self):
        good = {b"0": 0, b"7": 7, b"-7": -7, b"9223372036854775807": 2 ** 63 - 1,
                b"-9223372036854775808": -2 ** 63}
        for text, value in good.items():
            self.assertEqual(parse_int(text), value)
        for text in [b"", b"-", b"+1", b" 1", b"1 ", b"01", b"-0", b"1.0", b"1e3",
                     b"9223372036854775808", b"-9223372036854775809", b"1_0", b"\xd9\xa1"]:
            self.assertIsNone(parse_int(text), text)


class EncoderTests(unittest.TestCase):
    def test_encoders(self):
        self.assertEqual(integer(5), b":5\r\n")
        self.assertEqual(integer(-2), b":-2\r\n")
        self.assertEqual(integer(10 ** 12), b":1000000000000\r\n")
        self.assertEqual(bulk(b"a\r\nb"), b"$4\r\na\r\nb\r\n")
        self.assertEqual(bulks([b"a", None, b""]), b"*3\r\n$1\r\na\r\n$-1\r\n$0\r\n\r\n")
        self.assertEqual(error("ERR bad\r\nthing"), b"-ERR bad  thing\r\n")
        self.assertEqual(encode([1, [b"x", None], Simple("OK"), ReplyError("ERR e")]),
                         b"*4\r\n:1\r\n*2\r\n$1\r\nx\r\n$-1\r\n+OK\r\n-ERR e\r\n")
        self.assertEqual(command("SET", "clé", 5, 1.5, b"\x00"),
                         b"*5\r\n$3\r\nSET\r\n$4\r\ncl\xc3\xa9\r\n$1\r\n5\r\n$3\r\n1.5\r\n"
                         b"$1\r\n\x00\r\n")
        self.assertRaises(TypeError, command, "SET", None)


class ReplyParserTests(unittest.TestCase):
    REPLIES = [Simple("OK"), ReplyError("ERR no"), 42, -1, b"bulk\r\nvalue", None, b"",
               [b"a", [1, None, []], None], [], [[[b"deep"]]]]

    def encoded(self) -> bytes:
        return b"".join(encode(r) for r in self.REPLIES)

    def check(self, got):
        self.assertEqual(len(got), len(self.REPLIES))
        for a, b in zip(got, self.REPLIES):
            if isinstance(b, ReplyError):
                self.assertIsInstance(a, ReplyError)
                self.assertEqual(str(a), str(b))
                self.assertEqual(a.prefix, "ERR")
            else:
                self.assertEqual(a, b)

    def test_every_split(self):
        data = self.encoded()
        for i in range(len(data) + 1):
            parser = ReplyParser()
            got = parser.feed(data[:i]) + parser.feed(data[i:])
            self.check(got)

    def test_byte_by_byte(self):
        data = self.encoded()
        parser = ReplyParser()
        got = []
        for i in range(len(data)):
            got += parser.feed(data[i:i + 1])
        self.check(got)

    def test_resp3_types(self):
        data = (b"%2\r\n$1\r\na\r\n:1\r\n$1\r\nb\r\n_\r\n" b"~2\r\n+x\r\n+y\r\n"
                b">3\r\n$7\r\nmessage\r\n$1\r\nc\r\n$2\r\nhi\r\n" b"#t\r\n#f\r\n,1.5\r\n"
                b"=8\r\ntxt:text\r\n(12345678901234567890\r\n!3\r\nERR\r\n%0\r\n")
        expected = [{b"a": 1, b"b": None}, {"x", "y"}, [b"message", b"c", b"hi"], True,
                    False, 1.5, b"text", 12345678901234567890, ReplyError("ERR"), {}]
        for i in range(len(data) + 1):
            parser = ReplyParser()
            got = parser.feed(data[:i]) + parser.feed(data[i:])
            self.assertEqual(got, expected)
            self.assertIsInstance(got[2], Push)

    def test_nil_array_and_garbage(self):
        self.assertEqual(ReplyParser().feed(b"*-1\r\n"), [None])
        self.assertRaises(ProtocolError, ReplyParser().feed, b"?what\r\n")
        self.assertRaises(ProtocolError, ReplyParser().feed, b":x\r\n")
