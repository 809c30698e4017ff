"""titan/mcp/tools.py and the pure parts of titan/mcp/server.py, with a stand-in SDK client:
what a model is told when a call fails, the bounds on logs, gates off by default, the
HTTP endpoint's forms and the bearer check."""
from __future__ import annotations

import asyncio
import json

from twisted.trial.unittest import SynchronousTestCase

from titan.errors import RemoteError
from titan.mcp import tools as mcp_tools
from titan.mcp.server import BearerGate, build_server, parse_endpoint
from titan.mcp.tools import GATE_ENV, MAX_LOG_BYTES, ToolFailure, Tools, read_pipeline
from titan.protocols.opcodes import Op
from titan.sdk.client import ConnectError


class FakeClient:
    """The SDK client's methods the tools use; GET_LOGS serves `log` in `chunk`-byte parts."""

    def __init__(self, log: bytes = b"", chunk: int = 4, fail: Exception = None) -> None:
        self.log, self.chunk, self.fail = log, chunk, fail
        self.calls: list = []
        self.closed = False

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.closed = True

    def call(self, opcode, body=None, timeout=None):
        self.calls.append((opcode, body))
        if self.fail:
            raise self.fail
        assert opcode == Op.GET_LOGS
        at = body["offset"]
        data = self.log[at:at + self.chunk]
        return {"data": data, "offset": at + len(data), "done": at + len(data) >= len(self.log),
                "state": "COMPLETED"}

    def approve(self, gate, comment, by=None):
        self.calls.append(("approve", gate, comment, by))
        return {"job_id": gate, "state": "COMPLETED", "decision": {"approved": True, "by": by}}

    def run(self, run_id, jobs=True):
        if self.fail:
            raise self.fail
        return {"run_id": run_id, "state": "RUNNING", "jobs": []}


def tools_for(client: FakeClient, **kwargs) -> Tools:
    return Tools(lambda: client, **kwargs)


class LogsTests(SynchronousTestCase):
    LOG = b"0123456789abcdefghij"

    def test_whole_output_in_chunks(self):
        out = tools_for(FakeClient(self.LOG)).job_logs("j")
        self.assertEqual((out["text"], out["offset"], out["next_offset"], out["complete"]),
                         (self.LOG.decode(), 0, 20, True))
        self.assertIsNone(out["note"])

    def test_tail_keeps_the_last_bytes_and_says_where_they_start(self):
        out = tools_for(FakeClient(self.LOG)).job_logs("j", tail=6)
        self.assertEqual((out["text"], out["offset"], out["next_offset"]), ("efghij", 14, 20))

    def test_offset_and_max_bytes_bound_one_answer(self):
        out = tools_for(FakeClient(self.LOG)).job_logs("j", offset=3, max_bytes=5)
        self.assertEqual((out["text"], out["offset"], out["next_offset"], out["complete"]),
                         ("34567", 3, 8, False))
        self.assertIn("offset=next_offset", out["note"])

    def test_never_more_than_the_limit(self):
        big = b"x" * (MAX_LOG_BYTES * 3)
        client = FakeClient(big, chunk=10000)
        out = tools_for(client).job_logs("j", max_bytes=10 ** 9)
        self.assertEqual(len(out["text"]), MAX_LOG_BYTES)
        self.assertEqual(len(tools_for(FakeClient(big, 10000)).job_logs("j", tail=10 ** 9)
                             ["text"]), MAX_LOG_BYTES)

    def test_output_that_is_not_utf8_is_still_text(self):
        out = tools_for(FakeClient(b"caf\xe9\n", chunk=100)).job_logs("j")
        self.assertEqual(out["text"], "caf\ufffd\n")

    def test_negative_numbers_refused(self):
        with self.assertRaises(ToolFailure):
            tools_for(FakeClient()).job_logs("j", offset=-1)
        with self.assertRaises(ToolFailure):
            tools_for(FakeClient()).job_logs("j", tail=-1)


class FailureTests(SynchronousTestCase):
    def test_a_refusal_says_the_master_refused_and_why(self):
        client = FakeClient(fail=RemoteError("not_found", "no job or run 'x'"))
        with self.assertRaises(ToolFailure) as caught:
            tools_for(client).job_logs("x")
        self.assertEqual(str(caught.exception), "the master refused: no job or run 'x'")
        self.assertTrue(client.closed)

    def test_master_out_of_reach(self):
        client = FakeClient(fail=ConnectError("cannot reach the master at 127.0.0.1:1: "
                                              "connection refused"))
        with self.assertRaises(ToolFailure) as caught:
            tools_for(client).run_status("r")
        self.assertIn("cannot reach the master", str(caught.exception))

    def test_a_connection_lost_midway(self):
        with self.assertRaises(ToolFailure) as caught:
            tools_for(FakeClient(fail=ConnectionResetError(104, "reset"))).run_status("r")
        self.assertIn("lost the connection to the master", str(caught.exception))

    def test_wait_for_run_is_bounded_and_says_so(self):
        waited = []

        class Waiting(FakeClient):
            def wait_run(self, run_id, timeout=None):
                waited.append(timeout)
                return {"run_id": run_id, "state": "RUNNING", "jobs": []}
        out = tools_for(Waiting()).wait_for_run("r", timeout=10 ** 6)
        self.assertEqual(waited, [mcp_tools.MAX_WAIT])
        self.assertIn("still running", out["note"])


class GateTests(SynchronousTestCase):
    def test_off_by_default_and_nothing_decided(self):
        client = FakeClient()
        with self.assertRaises(ToolFailure) as caught:
            tools_for(client).decide_gate("r/review", True)
        self.assertIn("gate decisions through MCP are off", str(caught.exception))
        self.assertEqual(client.calls, [])

    def test_allowed(self):
        client = FakeClient()
        out = tools_for(client, allow_gate_decisions=True).decide_gate("r/g", True, "ok")
        self.assertEqual(client.calls, [("approve", "r/g", "ok", "mcp")])
        self.assertEqual(out["state"], "COMPLETED")

    def test_the_environment_switch(self):
        self.patch(mcp_tools.os, "environ", {GATE_ENV: "1"})
        self.assertTrue(mcp_tools.gate_decisions_allowed())
        self.patch(mcp_tools.os, "environ", {GATE_ENV: "0"})
        self.assertFalse(mcp_tools.gate_decisions_allowed())
        self.assertTrue(mcp_tools.gate_decisions_allowed(True))
        self.patch(mcp_tools.os, "environ", {})
        self.assertFalse(mcp_tools.gate_decisions_allowed())


class PipelineTests(SynchronousTestCase):
    def test_yaml_becomes_the_masters_spec(self):
        spec = read_pipeline("name: p\njobs:\n  - id: a\n    command: echo hi\n")
        self.assertEqual(spec["name"], "p")
        self.assertEqual([j["id"] for j in spec["jobs"]], ["a"])

    def test_a_step_and_key_are_named(self):
        with self.assertRaises(ToolFailure) as caught:
            read_pipeline("name: p\njobs:\n  - id: a\n    command: echo\n    colour: red\n")
        self.assertIn("step 'a'", str(caught.exception))
        self.assertIn("key 'colour'", str(caught.exception))

    def test_the_masters_own_check(self):
        with self.assertRaises(ToolFailure) as caught:
            read_pipeline(spec={"name": "p", "jobs": [{"id": "a", "command": "true",
                                                       "depends_on": ["b"]}]})
        self.assertIn("step 'a'", str(caught.exception))

    def test_scripts_come_from_files_never_the_servers_disk(self):
        with self.assertRaises(ToolFailure):
            read_pipeline("name: p\njobs:\n  - id: a\n    file: /etc/hostname\n")
        spec = read_pipeline("name: p\njobs:\n  - id: a\n    file: run.sh\n",
                             files={"run.sh": "echo from files\n"})
        self.assertEqual(spec["jobs"][0]["id"], "a")

    def test_one_form_only(self):
        for args in ({}, {"yaml_text": "name: p", "spec": {"name": "p"}}):
            with self.assertRaises(ToolFailure):
                read_pipeline(**args)


class EndpointTests(SynchronousTestCase):
    def test_forms(self):
        self.assertEqual(parse_endpoint("tcp:8765"), ("127.0.0.1", 8765))
        self.assertEqual(parse_endpoint("tcp:0:interface=::1"), ("::1", 0))
        self.assertEqual(parse_endpoint("tcp:0:interface=\\:\\:1"), ("::1", 0))
        self.assertEqual(parse_endpoint("8765"), ("127.0.0.1", 8765))
        self.assertEqual(parse_endpoint("0.0.0.0:80"), ("0.0.0.0", 80))

    def test_nonsense_refused(self):
        for text in ("", "tcp:", "tcp:x", "tcp:1:backlog=5", "host:", "70000"):
            with self.assertRaises(ValueError, msg=text):
                parse_endpoint(text)


class BearerGateTests(SynchronousTestCase):
    def answer(self, headers: list) -> list:
        sent, reached = [], []

        async def app(scope, receive, send):
            reached.append(scope)
            await send({"type": "http.response.start", "status": 200, "headers": []})

        async def send(message):
            sent.append(message)
        asyncio.run(BearerGate(app, "s3cret")({"type": "http", "headers": headers}, None, send))
        return [m.get("status") for m in sent if "status" in m], len(reached)

    def test_the_token_lets_in(self):
        self.assertEqual(self.answer([(b"authorization", b"Bearer s3cret")]), ([200], 1))

    def test_anything_else_is_a_401(self):
        for headers in ([], [(b"authorization", b"Bearer s3cre")],
                        [(b"authorization", b"s3cret")], [(b"authorization", b"Basic s3cret")]):
            self.assertEqual(self.answer(headers), ([401], 0), headers)


class ServerTests(SynchronousTestCase):
    def test_a_bug_is_a_tool_error_not_a_crash(self):
        class Broken(FakeClient):
            def workers(self):
                raise KeyError("oops")
        server = build_server(tools_for(Broken()))

        async def scenario():
            from mcp.server.mcpserver.exceptions import ToolError
            try:
                await server.call_tool("list_workers", {})
            except ToolError as e:
                return str(e)
        self.assertIn("internal error in titan mcp: KeyError", asyncio.run(scenario()))

    def test_answers_are_json_text(self):
        class Workers(FakeClient):
            def workers(self):
                return [{"worker_id": "w1", "tags": ["CPU"]}]
        server = build_server(tools_for(Workers()))
        result = asyncio.run(server.call_tool("list_workers", {}))
        self.assertFalse(result.is_error)
        self.assertEqual(json.loads(result.content[0].text), {"workers": [{"worker_id": "w1", "tags": ["CPU"]}]})
