"""`titan mcp` through the official MCP client (ClientSession), against a live cluster.

The client is asyncio: each test runs it with `asyncio.run` in the test method (trial's
reactor is not involved: ClusterTestCase is a SynchronousTestCase).  What is asserted is
what an MCP client sees: the tools and their schemas, a pipeline run to its end, errors
as tool errors (`is_error`) with messages that say what is wrong, gates refused unless
the operator allowed them, the HTTP transport with the cluster token and without it.
"""
from __future__ import annotations

import asyncio
import atexit
import contextlib
import json
import os
import re
import select
import subprocess
import sys
import textwrap
import time

from tests.acceptance.helpers import ClusterTestCase, wait_for
from titan.testing.cluster import BIN, free_port

TITAN = os.path.join(BIN, "titan")
STORE_PORT = free_port()
TOOLS = {"submit_job", "submit_pipeline", "run_status", "job_status", "job_logs",
         "wait_for_run", "cancel", "list_workers", "list_runs", "agent_run_timeline",
         "store_get", "store_put", "decide_gate", "research"}

DIAMOND = textwrap.dedent("""\
    name: mcp-diamond
    jobs:
      - id: a
        command: echo A
      - id: b
        command: echo B from b
        depends_on: a
      - id: c
        command: [python3, -c, "print('C')"]
        depends_on: [a]
      - id: d
        command: echo D
        depends_on: [b, c]
    """)

GATED = textwrap.dedent("""\
    name: mcp-gated
    jobs:
      - id: build
        command: echo built
      - id: review
        gate: true
        message: Ship it?
        depends_on: build
      - id: deploy
        command: echo deployed
        depends_on: review
    """)


@contextlib.asynccontextmanager
async def stdio_session(env: dict, *args: str):
    from mcp import ClientSession
    from mcp.client.stdio import StdioServerParameters, stdio_client
    params = StdioServerParameters(command=TITAN, args=["mcp", *args], env=env)
    with open(os.devnull, "w") as errlog:
        async with stdio_client(params, errlog=errlog) as (read, write):
            async with ClientSession(read, write, read_timeout_seconds=60) as session:
                await session.initialize()
                yield session


def run_async(coroutine):
    """asyncio.run, with the first error inside the SDK's task groups raised as itself
    (an assertion of a scenario, not "unhandled errors in a TaskGroup")."""
    try:
        return asyncio.run(coroutine)
    except BaseExceptionGroup as group:
        leaf = group
        while isinstance(leaf, BaseExceptionGroup):
            leaf = leaf.exceptions[0]
        raise leaf from group


def text_of(result) -> str:
    return "".join(getattr(c, "text", "") for c in result.content)


async def call(session, tool: str, **arguments):
    """A tool's answer as JSON; the test fails (AssertionError) if it is a tool error."""
    result = await session.call_tool(tool, arguments)
    assert not result.is_error, f"{tool}({arguments}) failed: {text_of(result)}"
    return json.loads(text_of(result))


async def error_of(session, tool: str, **arguments) -> str:
    """The message of a tool error (AssertionError if the call succeeded)."""
    result = await session.call_tool(tool, arguments)
    assert result.is_error, f"{tool}({arguments}) did not fail: {text_of(result)}"
    return text_of(result)


class McpStdioTests(ClusterTestCase):
    workers = 1
    cluster_options = {"config_extra": f"store:\n  backend: titanstore\n"
                                       f"  url: redis://127.0.0.1:{STORE_PORT}/0\n"}

    def setUp(self):
        if type(self).__dict__.get("store") is None:  # TitanStore, for store_get/store_put
            from tests.acceptance.test_store import Server
            type(self).store = Server("titan").start(port=STORE_PORT)
            atexit.register(type(self).store.proc.kill)
        super().setUp()

    def test_tools_are_listed_with_schemas_for_a_model(self):
        async def scenario():
            async with stdio_session(self.cluster.env()) as s:
                return (await s.list_tools()).tools
        tools = {t.name: t for t in run_async(scenario())}
        self.assertEqual(set(tools), TOOLS)
        for tool in tools.values():
            self.assertGreater(len(tool.description or ""), 30, tool.name)
            self.assertEqual(tool.input_schema["type"], "object", tool.name)
            for name, prop in tool.input_schema.get("properties", {}).items():
                self.assertTrue(prop.get("description"), f"{tool.name}.{name}")
        schema = tools["submit_pipeline"].input_schema
        self.assertLessEqual({"yaml", "spec", "agent_run_id", "stage"},
                             set(schema["properties"]))
        self.assertEqual(tools["job_status"].input_schema["required"], ["job_id"])
        self.assertEqual(set(tools["decide_gate"].input_schema["required"]), {"gate", "approve"})
        self.assertEqual(tools["job_logs"].input_schema["properties"]["max_bytes"]["maximum"],
                         65536)

    def test_a_pipeline_runs_to_completion(self):
        async def scenario():
            async with stdio_session(self.cluster.env()) as s:
                submitted = await call(s, "submit_pipeline", yaml=DIAMOND,
                                       agent_run_id="agent-7", stage="PLAN")
                run_id = submitted["run_id"]
                run = await call(s, "wait_for_run", run_id=run_id, timeout=60)
                logs = await call(s, "job_logs", job_id=f"{run_id}/b")
                tail = await call(s, "job_logs", job_id=f"{run_id}/b", tail=3)
                rest = await call(s, "job_logs", job_id=f"{run_id}/b", offset=2, max_bytes=4)
                status = await call(s, "run_status", run_id=run_id)
                runs = await call(s, "list_runs", agent_run_id="agent-7")
                timeline = await call(s, "agent_run_timeline", agent_run_id="agent-7")
                resource = await s.read_resource(f"titan://runs/{run_id}")
                log_resource = await s.read_resource(f"titan://jobs/{run_id}/d/logs")
                return (run_id, run, logs, tail, rest, status, runs, timeline, resource,
                        log_resource)
        (run_id, run, logs, tail, rest, status, runs, timeline, resource,
         log_resource) = run_async(scenario())
        self.assertEqual(run["state"], "COMPLETED", run)
        self.assertEqual(sorted(j["job_id"] for j in run["jobs"]),
                         [f"{run_id}/{n}" for n in "abcd"])
        self.assertEqual({j["state"] for j in run["jobs"]}, {"COMPLETED"})
        self.assertEqual(logs["text"], "B from b\n")
        self.assertTrue(logs["complete"])
        self.assertEqual((tail["text"], tail["offset"]), (" b\n", 6))
        self.assertEqual((rest["text"], rest["offset"], rest["next_offset"]), ("from", 2, 6))
        self.assertFalse(rest["complete"])
        self.assertEqual(status["state"], "COMPLETED")
        self.assertEqual([r["run_id"] for r in runs["runs"]], [run_id])
        self.assertEqual([(t["stage"], t["run_id"], t["state"]) for t in timeline["timeline"]],
                         [("PLAN", run_id, "COMPLETED")])
        self.assertEqual(json.loads(resource.contents[0].text)["state"], "COMPLETED")
        self.assertEqual(log_resource.contents[0].text, "D\n")
        # What `titan` itself sees of the run the MCP client started.
        with self.cluster.client() as c:
            self.assertEqual(c.run(run_id)["state"], "COMPLETED")
            self.assertEqual(c.logs(f"{run_id}/c"), b"C\n")

    def test_jobs_store_and_cancel(self):
        async def scenario():
            async with stdio_session(self.cluster.env()) as s:
                job = await call(s, "submit_job", command="sleep 60", name="long")
                await call(s, "store_put", key="mcp:greeting", value="hello")
                got = await call(s, "store_get", key="mcp:greeting")
                missing = await call(s, "store_get", key="mcp:nothing")
                cancelled = await call(s, "cancel", ref=job["job_id"])
                status = await call(s, "job_status", job_id=job["job_id"])
                workers = await call(s, "list_workers")
                return job, got, missing, cancelled, status, workers
        job, got, missing, cancelled, status, workers = run_async(scenario())
        self.assertEqual((got["found"], got["value"]), (True, "hello"))
        self.assertFalse(missing["found"])
        self.assertTrue(cancelled["cancelled"])
        self.assertEqual(status["state"], "CANCELLED")
        self.assertEqual(len(workers["workers"]), 1)
        with self.cluster.client() as c:
            self.assertEqual(c.job(job["job_id"])["state"], "CANCELLED")
            self.assertEqual(c.store_get("mcp:greeting"), b"hello")

    def test_errors_are_tool_errors_and_the_server_goes_on(self):
        bad_key = DIAMOND.replace("command: echo D", "command: echo D\n    colour: red")
        async def scenario():
            async with stdio_session(self.cluster.env()) as s:
                found = [
                    await error_of(s, "submit_pipeline", yaml=bad_key),
                    await error_of(s, "submit_pipeline", yaml="name: x\njobs: [oops"),
                    await error_of(s, "submit_pipeline", spec={
                        "name": "s", "jobs": [{"id": "a", "command": "true",
                                               "depends_on": ["nowhere"]}]}),
                    await error_of(s, "submit_pipeline"),
                    await error_of(s, "run_status", run_id="no-such-run"),
                    await error_of(s, "decide_gate", gate="r/g", approve="maybe"),
                ]
                still = await call(s, "list_workers")
                return found, still
        (bad, unparsable, parent, neither, unknown, wrong_type), still = run_async(scenario())
        self.assertIn("step 'd'", bad)
        self.assertIn("key 'colour'", bad)
        self.assertIn("pipeline.yaml:", unparsable)
        self.assertIn("step 'a'", parent)
        self.assertIn("nowhere", parent)
        self.assertIn("either `yaml`", neither)
        self.assertIn("no-such-run", unknown)
        self.assertIn("approve", wrong_type)
        self.assertEqual(len(still["workers"]), 1)
        with self.cluster.client() as c:  # none of the refused pipelines started a run
            self.assertEqual([r for r in c.runs() if r["name"] in ("s", "x")], [])

    def test_master_down_is_a_tool_error(self):
        env = dict(self.cluster.env(), TITAN_PORT=str(free_port()))
        async def scenario():
            async with stdio_session(env) as s:
                first = await error_of(s, "list_runs")
                again = await error_of(s, "job_status", job_id="x")
                tools = (await s.list_tools()).tools
                return first, again, tools
        first, again, tools = run_async(scenario())
        self.assertIn("cannot reach the master", first)
        self.assertIn("connection refused", again)
        self.assertEqual(len(tools), len(TOOLS))

    def test_gate_decisions_refused_by_default_and_made_when_allowed(self):
        async def refused():
            async with stdio_session(self.cluster.env()) as s:
                run_id = (await call(s, "submit_pipeline", yaml=GATED))["run_id"]
                gate = f"{run_id}/review"
                await asyncio.to_thread(wait_for, self, lambda: self._state(gate) ==
                                        "WAITING_APPROVAL", 30, f"{gate} waiting")
                return gate, run_id, await error_of(s, "decide_gate", gate=gate, approve=True)
        gate, run_id, refusal = run_async(refused())
        self.assertIn("gate decisions through MCP are off", refusal)
        self.assertIn("--allow-gate-decisions", refusal)
        self.assertEqual(self._state(gate), "WAITING_APPROVAL")

        async def allowed():
            async with stdio_session(self.cluster.env(), "--allow-gate-decisions") as s:
                decided = await call(s, "decide_gate", gate=gate, approve=True,
                                     comment="tests pass")
                return decided, await call(s, "wait_for_run", run_id=run_id, timeout=60)
        decided, run = run_async(allowed())
        self.assertEqual(decided["state"], "COMPLETED")
        self.assertEqual(run["state"], "COMPLETED")
        with self.cluster.client() as c:
            decision = c.job(gate)["decision"]
            self.assertEqual((decision["approved"], decision["by"], decision["comment"]),
                             (True, "mcp", "tests pass"))

        # The environment switch does the same as the flag.
        env = dict(self.cluster.env(), TITAN_MCP_ALLOW_GATE_DECISIONS="1")
        async def by_env():
            async with stdio_session(env) as s:
                run_id = (await call(s, "submit_pipeline", yaml=GATED))["run_id"]
                gate = f"{run_id}/review"
                await asyncio.to_thread(wait_for, self, lambda: self._state(gate) ==
                                        "WAITING_APPROVAL", 30, f"{gate} waiting")
                return await call(s, "decide_gate", gate=gate, approve=False, comment="no")
        self.assertEqual(run_async(by_env())["state"], "CANCELLED")

    def test_gate_decisions_allowed_by_the_config_file(self):
        allow = os.path.join(self.base_dir, "mcp-allow.yaml")
        with open(allow, "w") as f:
            f.write("mcp:\n  allow_gate_decisions: true\n")
        deny = os.path.join(self.base_dir, "mcp-deny.yaml")
        with open(deny, "w") as f:
            f.write("mcp:\n  allow_gate_decisions: false\n")

        async def scenario():
            async with stdio_session(self.cluster.env(), "--config", deny) as s:
                run_id = (await call(s, "submit_pipeline", yaml=GATED))["run_id"]
                gate = f"{run_id}/review"
                await asyncio.to_thread(wait_for, self, lambda: self._state(gate) ==
                                        "WAITING_APPROVAL", 30, f"{gate} waiting")
                refusal = await error_of(s, "decide_gate", gate=gate, approve=True)
            async with stdio_session(self.cluster.env(), "--config", allow) as s:
                decided = await call(s, "decide_gate", gate=gate, approve=True)
                return refusal, decided, await call(s, "wait_for_run", run_id=run_id,
                                                    timeout=60)
        refusal, decided, run = run_async(scenario())
        self.assertIn("gate decisions through MCP are off", refusal)
        self.assertEqual(decided["state"], "COMPLETED")
        self.assertEqual(run["state"], "COMPLETED")

        # A wrong value stops `titan mcp` at once, naming the file, the line and the key.
        bad = os.path.join(self.base_dir, "mcp-bad.yaml")
        with open(bad, "w") as f:
            f.write("mcp:\n  allow_gate_decisions: maybe\n")
        done = self.titan("mcp", "--config", bad, timeout=30)
        self.assertEqual(done.returncode, 1)
        self.assertIn(f"{bad}:2: mcp.allow_gate_decisions must be true or false, not 'maybe'",
                      done.stderr.decode())

    def test_stdout_carries_nothing_but_protocol(self):
        """Raw lines in and out, as Claude Desktop sees them: each line on stdout is one
        JSON-RPC message, even around a failing call and a job's output."""
        messages = [
            {"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
                "protocolVersion": "2025-06-18", "capabilities": {},
                "clientInfo": {"name": "raw", "version": "0"}}},
            {"jsonrpc": "2.0", "method": "notifications/initialized"},
            {"jsonrpc": "2.0", "id": 2, "method": "tools/call", "params": {
                "name": "run_status", "arguments": {"run_id": "no-such-run"}}},
            {"jsonrpc": "2.0", "id": 3, "method": "tools/call", "params": {
                "name": "submit_pipeline", "arguments": {"yaml": DIAMOND}}},
        ]
        proc = subprocess.Popen([TITAN, "mcp"], env=self.cluster.env(), stdin=subprocess.PIPE,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        lines = []
        try:
            proc.stdin.write("".join(json.dumps(m) + "\n" for m in messages).encode())
            proc.stdin.flush()
            deadline = time.monotonic() + 60
            while len(lines) < 3 and time.monotonic() < deadline:  # the three answers
                ready, _, _ = select.select([proc.stdout], [], [], 1)
                if ready:
                    line = proc.stdout.readline()
                    if not line:
                        break
                    lines.append(line)
            proc.stdin.close()  # the end of the conversation: the server ends
            proc.wait(30)
            rest, err = proc.stdout.read(), proc.stderr.read()
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            proc.stdout.close()
            proc.stderr.close()
        out = b"".join(lines) + rest
        replies = [json.loads(line) for line in out.decode().splitlines()]  # JSON, all
        self.assertEqual(proc.returncode, 0, err.decode())
        self.assertEqual([r.get("id") for r in replies], [1, 2, 3])
        self.assertEqual(replies[0]["result"]["serverInfo"]["name"], "titan")
        self.assertTrue(replies[1]["result"]["isError"])
        self.assertFalse(replies[2]["result"].get("isError"))

    def _state(self, job_id: str) -> str:
        with self.cluster.client() as c:
            return c.job(job_id)["state"]


class McpHttpTests(ClusterTestCase):
    workers = 1

    def test_http_with_the_cluster_token_and_refused_without_it(self):
        proc = subprocess.Popen([TITAN, "mcp", "--http", "tcp:0"], env=self.cluster.env(),
                                stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE)
        self.addCleanup(self._stop, proc)
        line = proc.stderr.readline().decode()
        match = re.search(r"(http://127\.0\.0\.1:\d+/mcp)", line)
        self.assertIsNotNone(match, line)
        url = match.group(1)

        async def session_with(token: str):
            import httpx2
            from mcp import ClientSession
            from mcp.client.streamable_http import streamable_http_client
            headers = {"Authorization": f"Bearer {token}"}
            async with httpx2.AsyncClient(headers=headers, timeout=30) as http:
                async with streamable_http_client(url, http_client=http) as (read, write):
                    async with ClientSession(read, write, read_timeout_seconds=30) as s:
                        await s.initialize()
                        tools = (await s.list_tools()).tools
                        run_id = (await call(s, "submit_pipeline", yaml=DIAMOND))["run_id"]
                        run = await call(s, "wait_for_run", run_id=run_id, timeout=60)
                        return tools, run

        async def raw(headers: dict):
            import httpx2
            async with httpx2.AsyncClient(timeout=10) as http:
                body = {"jsonrpc": "2.0", "id": 1, "method": "tools/list"}
                return await http.post(url, json=body, headers=dict(
                    headers, accept="application/json, text/event-stream"))

        tools, run = run_async(session_with(self.cluster.token))
        self.assertEqual({t.name for t in tools}, TOOLS)
        self.assertEqual(run["state"], "COMPLETED")
        wrong = run_async(raw({"Authorization": "Bearer not-the-token"}))
        self.assertEqual(wrong.status_code, 401)
        self.assertIn("cluster token", wrong.text)
        self.assertEqual(run_async(raw({})).status_code, 401)
        with self.assertRaises(Exception):
            run_async(asyncio.wait_for(session_with("not-the-token"), 30))
        self.assertIsNone(proc.poll())  # refusals do not stop the server

    @staticmethod
    def _stop(proc: subprocess.Popen) -> None:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        proc.stdout.close()
        proc.stderr.close()
