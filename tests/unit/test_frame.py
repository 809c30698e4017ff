"""TITAN_PROTO framing (titan.protocols.frame) and structured bodies (titan.protocols.codec)."""
from __future__ import annotations

import struct

from hypothesis import given, settings, strategies as st
from twisted.trial import unittest

from titan.protocols import codec
from titan.protocols.frame import (
    DEFAULT_MAX_BODY, FLAG_STRUCTURED, HEADER_SIZE, Frame, FrameDecoder, FrameError,
    encode_frame)
from titan.protocols.opcodes import KNOWN_OPCODES, Op

SAMPLE = [
    Frame(Op.HELLO, codec.pack({"rid": 1, "token": "t"})),
    Frame(Op.STATS, b"", flags=0),
    Frame(Op.KV_SET, "clé|välue ✓".encode(), flags=0),
    Frame(Op.ACK, codec.pack({"rid": 1, "result": {"ok": True}})),
]
STREAM = b"".join(encode_frame(f.opcode, f.body, f.flags) for f in SAMPLE)


def decode_all(chunks, max_body=DEFAULT_MAX_BODY):
    decoder = FrameDecoder(max_body)
    out = []
    for chunk in chunks:
        out.extend(decoder.feed(chunk))
    return out, decoder


def header(version=1, opcode=Op.STATS, flags=FLAG_STRUCTURED, length=0) -> bytes:
    return struct.pack("!BBBBI", version, opcode, flags, 0, length)


class EncodeTests(unittest.TestCase):
    def test_header_layout(self):
        self.assertEqual(encode_frame(Op.SUBMIT_JOB, b"abc"),
                         b"\x01\x03\x01\x00\x00\x00\x00\x03abc")
        self.assertEqual(encode_frame(Op.KV_GET, b"", flags=0),
                         b"\x01\x61\x00\x00\x00\x00\x00\x00")

    def test_length_counts_bytes_not_characters(self):
        text = "héllo wörld ✓ 日本"
        body = text.encode("utf-8")
        data = encode_frame(Op.KV_SET, body, flags=0)
        self.assertEqual((len(text), len(body)), (16, 24))
        self.assertEqual(struct.unpack("!I", data[4:8])[0], 24)
        (frame,), _ = decode_all([data])
        self.assertEqual(frame.body.decode("utf-8"), "héllo wörld ✓ 日本")
        self.assertFalse(frame.structured)


class DecoderTests(unittest.TestCase):
    def test_one_byte_at_a_time(self):
        out, decoder = decode_all([STREAM[i:i + 1] for i in range(len(STREAM))])
        self.assertEqual(out, SAMPLE)
        self.assertEqual(decoder.buffered, 0)

    def test_every_two_way_split(self):
        for cut in range(len(STREAM) + 1):
            out, decoder = decode_all([STREAM[:cut], STREAM[cut:]])
            self.assertEqual(out, SAMPLE, f"split at {cut}")
            self.assertEqual(decoder.buffered, 0)

    def test_many_frames_in_one_read(self):
        frames = [Frame(Op.HEARTBEAT, codec.pack({"n": n})) for n in range(500)]
        out, _ = decode_all([b"".join(encode_frame(f.opcode, f.body) for f in frames)])
        self.assertEqual(out, frames)

    def test_partial_frame_stays_buffered(self):
        decoder = FrameDecoder()
        data = encode_frame(Op.STATS, b"12345")
        self.assertEqual(decoder.feed(data[:-1]), [])
        self.assertEqual(decoder.buffered, len(data) - 1)
        self.assertEqual(decoder.feed(data[-1:]), [Frame(Op.STATS, b"12345")])
        self.assertEqual(decoder.buffered, 0)

    def test_empty_body(self):
        out, _ = decode_all([encode_frame(Op.STATS_JSON, b"", flags=0)])
        self.assertEqual(out, [Frame(Op.STATS_JSON, b"", flags=0)])

    def test_body_of_exactly_max_body(self):
        body = bytes(range(256)) * 4
        out, decoder = decode_all([encode_frame(Op.UPLOAD_ASSET, body, flags=0)], max_body=1024)
        self.assertEqual(out, [Frame(Op.UPLOAD_ASSET, body, flags=0)])
        self.assertFalse(decoder.broken)

    def test_default_limit_accepts_exactly_16_mib(self):
        body = b"x" * (16 * 1024 * 1024)
        data = encode_frame(Op.UPLOAD_ASSET, body)
        decoder = FrameDecoder()
        out = []
        for i in range(0, len(data), 1 << 20):
            out.extend(decoder.feed(data[i:i + (1 << 20)]))
        self.assertEqual(len(out), 1)
        self.assertEqual(out[0].opcode, Op.UPLOAD_ASSET)
        self.assertEqual(len(out[0].body), 16 * 1024 * 1024)
        self.assertEqual(decoder.buffered, 0)

    def test_one_byte_over_the_limit_is_fatal(self):
        good = encode_frame(Op.STATS, b"")
        decoder = FrameDecoder(1024)
        # Refused on the header alone: the body never needs to arrive.
        out = decoder.feed(good + header(opcode=Op.UPLOAD_ASSET, length=1025))
        self.assertEqual(out[0], Frame(Op.STATS, b""))
        problem = out[1]
        self.assertIsInstance(problem, FrameError)
        self.assertEqual((problem.code, problem.fatal, problem.opcode),
                         ("too_large", True, Op.UPLOAD_ASSET))
        self.assertIn("1025 bytes", problem.message)
        self.assertEqual(len(out), 2)
        self.assertTrue(decoder.broken)
        self.assertEqual(decoder.feed(b"\x00" * 1025 + good), [])
        self.assertEqual(decoder.buffered, 0)

    def test_bad_version_is_fatal(self):
        decoder = FrameDecoder()
        out = decoder.feed(header(version=2, flags=0) + encode_frame(Op.STATS, b""))
        self.assertEqual(len(out), 1)
        self.assertEqual((out[0].code, out[0].fatal, out[0].flags), ("bad_version", True, 0))
        self.assertTrue(decoder.broken)
        self.assertEqual(decoder.feed(encode_frame(Op.STATS, b"")), [])

    def test_unknown_opcode_is_skipped_and_the_stream_goes_on(self):
        self.assertNotIn(0x7F, KNOWN_OPCODES)
        body = codec.pack({"rid": 7})
        data = header(opcode=0x7F, length=len(body)) + body + encode_frame(Op.STATS, b"s")
        for chunks in ([data], [data[i:i + 1] for i in range(len(data))]):
            out, decoder = decode_all(chunks)
            self.assertEqual(len(out), 2)
            problem, frame = out
            self.assertEqual((problem.code, problem.fatal, problem.opcode, problem.body),
                             ("unknown_opcode", False, 0x7F, body))
            self.assertEqual(problem.message, "unknown opcode 0x7f")
            self.assertEqual(frame, Frame(Op.STATS, b"s"))
            self.assertFalse(decoder.broken)

    def test_feed_buffers_even_if_the_result_is_not_read(self):
        decoder = FrameDecoder()
        data = encode_frame(Op.STATS, b"abc")
        decoder.feed(data[:5])
        self.assertEqual(decoder.feed(data[5:]), [Frame(Op.STATS, b"abc")])


frames_strategy = st.lists(
    st.builds(Frame, opcode=st.sampled_from(sorted(KNOWN_OPCODES)),
              body=st.binary(max_size=300), flags=st.integers(0, 255)),
    max_size=12)


class RoundTripProperties(unittest.TestCase):
    @settings(max_examples=200, deadline=None)
    @given(frames=frames_strategy, data=st.data())
    def test_any_chunking_round_trips(self, frames, data):
        stream = b"".join(encode_frame(f.opcode, f.body, f.flags) for f in frames)
        cuts = sorted(data.draw(st.lists(st.integers(0, len(stream)), max_size=20)))
        edges = [0, *cuts, len(stream)]
        out, decoder = decode_all(stream[a:b] for a, b in zip(edges, edges[1:]))
        self.assertEqual(out, frames)
        self.assertEqual(decoder.buffered, 0)

    @settings(max_examples=200, deadline=None)
    @given(frames=frames_strategy)
    def test_byte_at_a_time_round_trips(self, frames):
        stream = b"".join(encode_frame(f.opcode, f.body, f.flags) for f in frames)
        out, _ = decode_all(stream[i:i + 1] for i in range(len(stream)))
        self.assertEqual(out, frames)


msgpack_values = st.recursive(
    st.none() | st.booleans() | st.integers(-2**63, 2**64 - 1) | st.floats(allow_nan=False)
    | st.text() | st.binary(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=20)


class CodecTests(unittest.TestCase):
    def test_round_trip(self):
        body = {"rid": 3, "name": "jöb ✓", "data": b"\x00\xff", "args": ["a", 1, 2.5, None],
                "nested": {"ok": True}}
        self.assertEqual(codec.unpack(codec.pack(body)), body)
        self.assertEqual(codec.unpack(codec.pack({})), {})

    @settings(max_examples=200, deadline=None)
    @given(st.dictionaries(st.text(), msgpack_values, max_size=6))
    def test_maps_round_trip(self, body):
        self.assertEqual(codec.unpack(codec.pack(body)), body)

    def test_non_map_bodies_are_refused(self):
        for value in ([1, 2], "text", 5, None, b"raw"):
            e = self.assertRaises(codec.BodyError, codec.unpack, codec.pack(value))
            self.assertIn("must be a msgpack map", str(e))

    def test_garbage_is_refused(self):
        for data in (b"", b"\xc1", b"\x81\xa1a", codec.pack({"a": 1}) + b"\x00",
                     "plain text".encode()):
            e = self.assertRaises(codec.BodyError, codec.unpack, data)
            self.assertIsInstance(e, ValueError)
