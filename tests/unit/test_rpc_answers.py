"""RpcProtocol: what happens when even the error reply to a request cannot be sent."""
from __future__ import annotations

from twisted.internet import defer
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.trial import unittest

from titan.protocols import codec
from titan.protocols.frame import encode_frame
from titan.protocols.opcodes import Op
from titan.protocols.rpc import RpcProtocol


class Broken(RpcProtocol):
    def op_STATS_JSON(self, body):
        raise KeyError("boom")

    def op_JOB_INFO(self, body):
        return defer.fail(KeyError("later"))

    def op_LIST_JOBS(self, body):
        return {"jobs": []}

    def _send_failure(self, rid, opcode, failure):
        raise RuntimeError("cannot answer")


class UnanswerableTests(unittest.TestCase):
    def setUp(self):
        self.proto = Broken()
        self.proto.clock = Clock()
        self.transport = StringTransport()
        self.proto.makeConnection(self.transport)

    def ask(self, opcode, rid) -> None:
        self.proto.dataReceived(encode_frame(opcode, codec.pack({"rid": rid})))

    def test_logged_and_the_connection_serves_on(self):
        for opcode in (Op.STATS_JSON, Op.JOB_INFO):
            self.ask(opcode, 1)
            self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)
        self.ask(Op.LIST_JOBS, 2)
        self.assertIn(b"jobs", self.transport.value())
        self.assertFalse(self.transport.disconnecting)
