"""RpcProtocol over an in-memory transport and a fake clock."""
from __future__ import annotations

import struct

from twisted.internet import defer, error
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.python.failure import Failure
from twisted.trial import unittest

from titan.errors import RemoteError
from titan.protocols import codec
from titan.protocols.frame import Frame, FrameDecoder, encode_frame
from titan.protocols.opcodes import Op
from titan.protocols.rpc import RpcProtocol


class Server(RpcProtocol):
    max_body = 1024
    request_timeout = 5.0

    def op_STATS_JSON(self, body):
        return {"echo": body.get("x")}

    def op_JOB_INFO(self, body):
        self.waiting = defer.Deferred()
        return self.waiting

    async def op_WAIT_JOB(self, body):
        await defer.succeed(None)
        return {"job_id": body["job_id"], "state": "COMPLETED"}

    def op_CANCEL_JOB(self, body):
        raise RemoteError("not_found", f"no job {body['job_id']}")

    def op_HELLO(self, body):
        raise RemoteError("auth", "wrong cluster token", close=True)

    def op_LIST_JOBS(self, body):
        raise KeyError("boom")

    def op_LIST_WORKERS(self, body):
        return {"workers": {1, 2}}  # a set does not pack


def request(opcode, rid, **body) -> bytes:
    return encode_frame(opcode, codec.pack({"rid": rid, **body}))


class RpcTestCase(unittest.TestCase):
    def setUp(self):
        self.proto = Server()
        self.proto.clock = self.clock = Clock()
        self.transport = StringTransport()
        self.proto.makeConnection(self.transport)

    def sent(self) -> list[Frame]:
        """Every frame written since the last call, decoded."""
        frames = FrameDecoder().feed(self.transport.value())
        self.transport.clear()
        self.assertTrue(all(isinstance(f, Frame) for f in frames), frames)
        return frames

    def replies(self) -> list[tuple[int, dict]]:
        return [(f.opcode, codec.unpack(f.body)) for f in self.sent()]


class ServingTests(RpcTestCase):
    def test_sync_handler(self):
        self.proto.dataReceived(request(Op.STATS_JSON, 7, x="hi"))
        self.assertEqual(self.replies(), [(Op.ACK, {"rid": 7, "result": {"echo": "hi"}})])

    def test_deferred_handler_replies_when_it_fires(self):
        self.proto.dataReceived(request(Op.JOB_INFO, 8, job_id="j1"))
        self.assertEqual(self.sent(), [])
        self.proto.waiting.callback({"state": "RUNNING"})
        self.assertEqual(self.replies(), [(Op.ACK, {"rid": 8, "result": {"state": "RUNNING"}})])

    def test_async_handler(self):
        self.proto.dataReceived(request(Op.WAIT_JOB, 9, job_id="j2"))
        self.assertEqual(self.replies(), [
            (Op.ACK, {"rid": 9, "result": {"job_id": "j2", "state": "COMPLETED"}})])

    def test_many_requests_in_one_read(self):
        self.proto.dataReceived(b"".join(request(Op.STATS_JSON, rid, x=rid) for rid in (1, 2, 3)))
        self.assertEqual([body for _, body in self.replies()],
                         [{"rid": r, "result": {"echo": r}} for r in (1, 2, 3)])

    def test_remote_error(self):
        self.proto.dataReceived(request(Op.CANCEL_JOB, 10, job_id="j9"))
        self.assertEqual(self.replies(), [
            (Op.ERROR, {"rid": 10, "code": "not_found", "message": "no job j9"})])
        self.assertFalse(self.transport.disconnecting)

    def test_remote_error_with_close_closes_after_the_reply(self):
        self.proto.dataReceived(request(Op.HELLO, 11, token="bad"))
        self.assertEqual(self.replies(), [
            (Op.ERROR, {"rid": 11, "code": "auth", "message": "wrong cluster token"})])
        self.assertTrue(self.transport.disconnecting)

    def test_unexpected_exception_is_internal(self):
        self.proto.dataReceived(request(Op.LIST_JOBS, 12))
        [(op, body)] = self.replies()
        self.assertEqual((op, body["rid"], body["code"]), (Op.ERROR, 12, "internal"))
        self.assertEqual(body["message"], "LIST_JOBS failed: 'boom'")
        self.assertEqual(len(self.flushLoggedErrors(KeyError)), 1)
        self.assertFalse(self.transport.disconnecting)

    def test_unpackable_result_is_internal(self):
        self.proto.dataReceived(request(Op.LIST_WORKERS, 13))
        [(op, body)] = self.replies()
        self.assertEqual((op, body["rid"], body["code"]), (Op.ERROR, 13, "internal"))
        self.assertEqual(len(self.flushLoggedErrors(TypeError)), 1)

    def test_operation_without_handler(self):
        self.proto.dataReceived(request(Op.KV_GET, 14, key="k"))
        self.assertEqual(self.replies(), [
            (Op.ERROR, {"rid": 14, "code": "unsupported",
                        "message": "KV_GET is not served here"})])

    def test_no_reply_after_the_connection_is_gone(self):
        self.proto.dataReceived(request(Op.JOB_INFO, 15))
        self.proto.connectionLost(Failure(error.ConnectionDone()))
        self.proto.waiting.callback({})
        self.assertEqual(self.transport.value(), b"")


class BadInputTests(RpcTestCase):
    def test_undecodable_body_keeps_the_connection(self):
        self.proto.dataReceived(encode_frame(Op.STATS_JSON, b"\xc1garbage"))
        [(op, body)] = self.replies()
        self.assertEqual((op, body["rid"], body["code"]), (Op.ERROR, None, "bad_body"))
        self.assertTrue(body["message"].startswith("STATS_JSON: body is not valid msgpack"))
        self.assertFalse(self.transport.disconnecting)
        self.proto.dataReceived(request(Op.STATS_JSON, 2, x=1))
        self.assertEqual(self.replies(), [(Op.ACK, {"rid": 2, "result": {"echo": 1}})])

    def test_non_map_body(self):
        self.proto.dataReceived(encode_frame(Op.STATS_JSON, codec.pack([1, 2])))
        [(op, body)] = self.replies()
        self.assertEqual((body["code"], body["message"]),
                         ("bad_body", "STATS_JSON: body must be a msgpack map, not list"))

    def test_oversized_frame_is_refused_and_closes(self):
        self.proto.dataReceived(struct.pack("!BBBBI", 1, Op.UPLOAD_ASSET, 1, 0, 1025))
        [(op, body)] = self.replies()
        self.assertEqual((op, body["code"]), (Op.ERROR, "too_large"))
        self.assertEqual(body["message"],
                         "UPLOAD_ASSET frame of 1025 bytes is over the 1024-byte limit")
        self.assertTrue(self.transport.disconnecting)
        self.proto.dataReceived(request(Op.STATS_JSON, 3))  # ignored from here on
        self.assertEqual(self.transport.value(), b"")

    def test_bad_version_closes(self):
        self.proto.dataReceived(b"GET / HTTP/1.1\r\n\r\n")
        [frame] = self.sent()
        self.assertEqual((frame.opcode, frame.flags), (Op.ERROR, 0))  # "T" & 1 == 0: text
        self.assertTrue(frame.body.startswith(b"ERROR: unsupported protocol version 71"))
        self.assertTrue(self.transport.disconnecting)

    def test_unknown_opcode_then_a_good_request(self):
        body = codec.pack({"rid": 4})
        self.proto.dataReceived(struct.pack("!BBBBI", 1, 0x7E, 1, 0, len(body)) + body
                                + request(Op.STATS_JSON, 5, x="ok"))
        self.assertEqual(self.replies(), [
            (Op.ERROR, {"rid": 4, "code": "unknown_opcode", "message": "unknown opcode 0x7e"}),
            (Op.ACK, {"rid": 5, "result": {"echo": "ok"}})])
        self.assertFalse(self.transport.disconnecting)

    def test_text_frame_gets_a_text_error(self):
        self.proto.dataReceived(encode_frame(Op.GET_JOB_STATUS, b"job-1", flags=0))
        self.assertEqual(self.sent(), [Frame(
            Op.ERROR, b"ERROR: text frames are not served on this connection", flags=0)])

    def test_unhashable_rid_in_a_reply_is_ignored(self):
        self.proto.dataReceived(encode_frame(Op.ACK, codec.pack({"rid": [1], "result": 1}))
                                + request(Op.STATS_JSON, 6))
        self.assertEqual(self.replies(), [(Op.ACK, {"rid": 6, "result": {"echo": None}})])


class CallTests(RpcTestCase):
    def test_call_resolves_on_ack(self):
        d = self.proto.call(Op.STATS_JSON, {"x": 1})
        [(op, body)] = self.replies()
        self.assertEqual((op, body), (Op.STATS_JSON, {"x": 1, "rid": 1}))
        self.proto.dataReceived(encode_frame(Op.ACK, codec.pack({"rid": 1, "result": [1, 2]})))
        self.assertEqual(self.successResultOf(d), [1, 2])

    def test_replies_match_by_rid(self):
        d1 = self.proto.call(Op.JOB_INFO, {"job_id": "a"})
        d2 = self.proto.call(Op.JOB_INFO, {"job_id": "b"})
        self.assertEqual([b["rid"] for _, b in self.replies()], [1, 2])
        self.proto.dataReceived(encode_frame(Op.ACK, codec.pack({"rid": 2, "result": "B"})))
        self.assertNoResult(d1)
        self.assertEqual(self.successResultOf(d2), "B")
        self.proto.dataReceived(encode_frame(Op.ACK, codec.pack({"rid": 1, "result": "A"})))
        self.assertEqual(self.successResultOf(d1), "A")

    def test_call_fails_on_error(self):
        d = self.proto.call(Op.CANCEL_JOB, {"job_id": "x"})
        self.proto.dataReceived(encode_frame(Op.ERROR, codec.pack(
            {"rid": 1, "code": "not_found", "message": "no job x"})))
        e = self.failureResultOf(d, RemoteError).value
        self.assertEqual((e.code, e.message), ("not_found", "no job x"))

    def test_call_times_out(self):
        d = self.proto.call(Op.STATS_JSON)
        self.clock.advance(4.9)
        self.assertNoResult(d)
        self.clock.advance(0.1)
        self.failureResultOf(d, defer.TimeoutError)
        # A late reply is dropped quietly.
        self.proto.dataReceived(encode_frame(Op.ACK, codec.pack({"rid": 1, "result": 1})))
        self.assertEqual(self.proto._pending, {})

    def test_explicit_timeout_and_none(self):
        d1 = self.proto.call(Op.STATS_JSON, timeout=1)
        d2 = self.proto.call(Op.STATS_JSON, timeout=None)
        self.clock.advance(1000)
        self.failureResultOf(d1, defer.TimeoutError)
        self.assertNoResult(d2)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_pending_calls_fail_on_connection_lost(self):
        d1 = self.proto.call(Op.STATS_JSON)
        d2 = self.proto.call(Op.JOB_INFO)
        self.proto.connectionLost(Failure(error.ConnectionDone()))
        for d in (d1, d2):
            f = self.failureResultOf(d, error.ConnectionLost)
            self.assertIn("connection lost before the reply", str(f.value))
        self.assertEqual(self.clock.getDelayedCalls(), [])
        self.failureResultOf(self.proto.call(Op.STATS_JSON), error.ConnectionLost)

    def test_unpackable_call_leaves_nothing_pending(self):
        self.assertRaises(TypeError, self.proto.call, Op.STATS_JSON, {"x": object()})
        self.assertEqual(self.proto._pending, {})
        self.assertEqual(self.transport.value(), b"")
