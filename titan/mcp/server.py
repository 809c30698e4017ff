"""The MCP server: Titan's tools (tools.py) on the official `mcp` SDK (major 2, MCPServer).

stdio: nothing but protocol on stdout (the SDK points fd 1 at stderr while it serves, and
every log goes to stderr).  Streamable HTTP: on 127.0.0.1 unless told otherwise, each
request must carry the cluster token as `Authorization: Bearer TOKEN`; others get 401.
Each tool call runs the blocking SDK in a thread; any failure comes back as a tool error
(`is_error`), never as a crash of the server.
"""
from __future__ import annotations

import hmac
import json
import socket
import sys
from typing import Annotated, Any, Callable, Optional, Union

import anyio
from mcp.server.mcpserver import MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from pydantic import Field

from titan.mcp.research import MAX_SUBQUESTIONS
from titan.mcp.tools import MAX_LOG_BYTES, MAX_WAIT, RESEARCH_WAIT, ToolFailure, Tools

INSTRUCTIONS = (
    "Titan is a distributed job orchestrator. Jobs are shell commands run on workers; a "
    "pipeline (DAG run) is jobs with depends_on edges, optional approval gates, and "
    "agent_run_id/stage labels that group runs into an agent's timeline. Typical flow: "
    "submit_pipeline (or submit_job), then wait_for_run / job_status, then job_logs. Ids: "
    "a run id names a DAG run; a job inside it is RUN_ID/JOB_ID.")

PIPELINE_HELP = (
    "Start a DAG run from a pipeline. Give `yaml` (the text of a Titan pipeline file) OR "
    "`spec` (the same keys as a JSON object). Keys: name (required), agent_run_id, stage, "
    "jobs: a list of steps, each with id, command (a shell string or a list of words), "
    "depends_on (ids), and optionally retries, timeout (seconds), env, tags, priority, "
    "or an approval gate for a person instead of a command (gate: true, message: QUESTION). "
    "Example YAML:\n"
    "name: etl\njobs:\n  - id: extract\n    command: echo extracted\n"
    "  - id: load\n    command: echo loaded\n    depends_on: [extract]\n"
    "Returns the run_id; follow it with wait_for_run. A pipeline with a problem is refused "
    "with a message naming the step and key at fault; nothing is started then.")


def _json(value: Any) -> str:
    return json.dumps(value, indent=1, sort_keys=True, default=repr)


def build_server(tools: Tools) -> MCPServer:
    server = MCPServer("titan", instructions=INSTRUCTIONS, log_level="WARNING")

    async def run(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> str:
        try:
            result = await anyio.to_thread.run_sync(lambda: fn(*args, **kwargs))
        except ToolFailure as e:
            raise ToolError(str(e)) from None
        except Exception as e:  # a bug of ours: still an answer, never a dead server
            raise ToolError(f"internal error in titan mcp: {type(e).__name__}: {e}") from None
        return _json(result)

    @server.tool(description=(
        "Queue one job (a shell command) on the cluster's workers. Returns its job_id; "
        "then job_status to see its state and job_logs for its output."),
        structured_output=False)
    async def submit_job(
            command: Annotated[Union[str, list[str]], Field(
                description="a shell command line, or the program and its arguments as a "
                            "list of strings")],
            name: Annotated[Optional[str], Field(description="a name for people")] = None,
            priority: Annotated[int, Field(description="higher runs first")] = 0,
            tags: Annotated[Optional[list[str]], Field(
                description="capabilities a worker must have, e.g. ['GPU']")] = None,
            timeout: Annotated[Optional[float], Field(
                description="seconds before the job is killed", gt=0)] = None,
            retries: Annotated[int, Field(description="retries after a failure", ge=0)] = 0,
            env: Annotated[Optional[dict[str, str]], Field(
                description="environment variables for the job")] = None) -> str:
        return await run(tools.submit_job, command, name=name, priority=priority, tags=tags,
                         timeout=timeout, retries=retries, env=env)

    @server.tool(description=PIPELINE_HELP, structured_output=False)
    async def submit_pipeline(
            yaml: Annotated[Optional[str], Field(
                description="the pipeline as YAML text (give this or spec)")] = None,
            spec: Annotated[Optional[dict[str, Any]], Field(
                description="the pipeline as a JSON object in the YAML format's keys "
                            "(give this or yaml)")] = None,
            files: Annotated[Optional[dict[str, str]], Field(
                description="texts of the scripts that steps name with `file:`, by the "
                            "name written there")] = None,
            agent_run_id: Annotated[Optional[str], Field(
                description="groups this run with others of one agent run")] = None,
            stage: Annotated[Optional[str], Field(
                description="this run's stage in the agent run, e.g. PLAN or EVAL")] = None
    ) -> str:
        return await run(tools.submit_pipeline, yaml, spec, files, agent_run_id, stage)

    @server.tool(description="A DAG run's state, its counts by state, and each of its jobs "
                             "(state, exit code, reason).", structured_output=False)
    async def run_status(run_id: Annotated[str, Field(description="the run id")]) -> str:
        return await run(tools.run_status, run_id)

    @server.tool(description="One job's state, attempt, worker, exit code and why it ended "
                             "or waits.", structured_output=False)
    async def job_status(job_id: Annotated[str, Field(
            description="a job id, or RUN_ID/JOB_ID for a job of a run")]) -> str:
        return await run(tools.job_status, job_id)

    @server.tool(description=(
        f"A job's output (stdout and stderr as they came), at most {MAX_LOG_BYTES} bytes "
        "per call. Use tail=N for its last N bytes, or offset to read on from where the "
        "previous call stopped (next_offset)."), structured_output=False)
    async def job_logs(
            job_id: Annotated[str, Field(description="a job id, or RUN_ID/JOB_ID")],
            tail: Annotated[Optional[int], Field(
                description="only the last this many bytes", ge=0)] = None,
            offset: Annotated[int, Field(description="the byte to start at", ge=0)] = 0,
            max_bytes: Annotated[int, Field(description="the most bytes to return", ge=1,
                                            le=MAX_LOG_BYTES)] = MAX_LOG_BYTES) -> str:
        return await run(tools.job_logs, job_id, tail=tail, offset=offset,
                         max_bytes=max_bytes)

    @server.tool(description=(
        f"Wait until a DAG run has ended (at most `timeout` seconds, {MAX_WAIT:g} at most), "
        "then its state and jobs. A run still RUNNING then says so: call again."),
        structured_output=False)
    async def wait_for_run(
            run_id: Annotated[str, Field(description="the run id")],
            timeout: Annotated[float, Field(description="seconds to wait at most", ge=0,
                                            le=MAX_WAIT)] = 60.0) -> str:
        return await run(tools.wait_for_run, run_id, timeout)

    @server.tool(description="Cancel a job, every unfinished job of a run, or a schedule.",
                 structured_output=False)
    async def cancel(ref: Annotated[str, Field(
            description="a job id, RUN_ID/JOB_ID, a run id or a schedule id")]) -> str:
        return await run(tools.cancel, ref)

    @server.tool(description="The workers: id, tags, slots, running jobs, state.",
                 structured_output=False)
    async def list_workers() -> str:
        return await run(tools.list_workers)

    @server.tool(description="Recent DAG runs (newest first), or those of one agent run.",
                 structured_output=False)
    async def list_runs(
            agent_run_id: Annotated[Optional[str], Field(
                description="only the runs of this agent run")] = None,
            limit: Annotated[int, Field(description="how many at most", ge=1, le=200)] = 20
    ) -> str:
        return await run(tools.list_runs, agent_run_id, limit)

    @server.tool(description=(
        "An agent run's timeline: its runs oldest first, each with its stage (PLAN, ITER, "
        "EVAL, SYNTH, ...), state and job counts."), structured_output=False)
    async def agent_run_timeline(agent_run_id: Annotated[str, Field(
            description="the agent_run_id the runs carry")]) -> str:
        return await run(tools.agent_run_timeline, agent_run_id)

    @server.tool(description="Read a key of the cluster's shared store (text).",
                 structured_output=False)
    async def store_get(key: Annotated[str, Field(description="the key")]) -> str:
        return await run(tools.store_get, key)

    @server.tool(description="Write a key of the cluster's shared store, optionally "
                             "expiring after ttl seconds.", structured_output=False)
    async def store_put(
            key: Annotated[str, Field(description="the key")],
            value: Annotated[str, Field(description="the value (text)")],
            ttl: Annotated[Optional[float], Field(
                description="seconds until the key expires", gt=0)] = None) -> str:
        return await run(tools.store_put, key, value, ttl)

    @server.tool(description=(
        "Approve or reject a human approval gate. Off unless the operator enabled gate "
        "decisions for MCP; when off it answers why and decides nothing."),
        structured_output=False)
    async def decide_gate(
            gate: Annotated[str, Field(description="the gate's job id (RUN_ID/STEP)")],
            approve: Annotated[bool, Field(description="true to approve, false to reject")],
            comment: Annotated[str, Field(description="why")] = "") -> str:
        return await run(tools.decide_gate, gate, approve, comment)

    @server.tool(description=(
        "Research a question on the cluster: a model (the chat model configured on the "
        "workers) splits it into n sub-questions, each answered by its own job in parallel, "
        "then a synthesis job writes a Markdown report. Waits for the report (at most "
        f"{RESEARCH_WAIT:g} s) and returns it with the run_id, the agent_run_id (for "
        "agent_run_timeline) and the jobs; a run still going past that is returned with "
        "a note (follow it with wait_for_run)."))
    async def research(
            question: Annotated[str, Field(description="the question to research")],
            n: Annotated[int, Field(ge=1, le=MAX_SUBQUESTIONS, description=(
                "how many sub-questions, each its own parallel job"))] = 3,
            agent_run_id: Annotated[Optional[str], Field(description=(
                "the agent run to file the run under (default: a new one)"))] = None) -> str:
        return await run(tools.research, question, n, agent_run_id=agent_run_id)

    @server.resource("titan://runs/{run_id}", mime_type="application/json",
                     description="A DAG run and its jobs, as run_status gives it.")
    async def run_resource(run_id: str) -> str:
        return await run(tools.run_status, run_id)

    @server.resource("titan://jobs/{+job_id}/logs", mime_type="text/plain",
                     description=f"A job's output (its last {MAX_LOG_BYTES} bytes).")
    async def job_logs_resource(job_id: str) -> str:
        try:
            answer = await anyio.to_thread.run_sync(
                lambda: tools.job_logs(job_id, tail=MAX_LOG_BYTES))
        except ToolFailure as e:
            raise ToolError(str(e)) from None
        return answer["text"]

    return server


# -- transports --------------------------------------------------------------------------

def parse_endpoint(text: str) -> tuple[str, int]:
    """`tcp:PORT[:interface=HOST]`, `HOST:PORT` or `PORT` → (host, port); 127.0.0.1 unless
    an interface is named."""
    host, port = "127.0.0.1", None
    if text.startswith("tcp:"):
        port, _, option = text[4:].partition(":")
        if option:
            key, sep, value = option.partition("=")
            if key != "interface" or not sep or not value:
                raise ValueError(f"--http {text!r}: expected tcp:PORT[:interface=HOST]")
            host = value.replace("\\:", ":")  # Twisted's escaped colons (\:\:1) too
    elif ":" in text:
        host, _, port = text.rpartition(":")
        host = host.strip("[]")
    else:
        port = text
    if not port or not port.isdigit() or int(port) > 65535:
        raise ValueError(f"--http {text!r}: expected tcp:PORT[:interface=HOST], HOST:PORT "
                         "or PORT")
    return host, int(port)


class BearerGate:
    """ASGI middleware: HTTP requests without `Authorization: Bearer TOKEN` get a 401."""

    def __init__(self, app: Any, token: str) -> None:
        self.app = app
        self.expected = f"Bearer {token}".encode()

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            given = dict(scope.get("headers") or ()).get(b"authorization", b"")
            if not hmac.compare_digest(given, self.expected):
                body = b'{"error": "a valid cluster token is needed: Authorization: Bearer TOKEN"}'
                await send({"type": "http.response.start", "status": 401,
                            "headers": [(b"content-type", b"application/json"),
                                        (b"www-authenticate", b'Bearer realm="titan"'),
                                        (b"content-length", str(len(body)).encode())]})
                await send({"type": "http.response.body", "body": body})
                return
        await self.app(scope, receive, send)


def serve_http(server: MCPServer, endpoint: str, token: str) -> None:
    import uvicorn
    from mcp.server.transport_security import TransportSecuritySettings
    host, port = parse_endpoint(endpoint)
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    bound = sock.getsockname()[1]
    # DNS-rebinding protection: the Host header must name this listener.
    security = TransportSecuritySettings(
        enable_dns_rebinding_protection=True,
        allowed_hosts=[f"{host}:{bound}", f"127.0.0.1:{bound}", f"localhost:{bound}"],
        allowed_origins=[f"http://{host}:{bound}", f"http://127.0.0.1:{bound}",
                         f"http://localhost:{bound}"])
    app = BearerGate(server.streamable_http_app(transport_security=security, host=host),
                     token)
    print(f"titan mcp: serving MCP at http://{host}:{bound}/mcp (bearer: the cluster token)",
          file=sys.stderr, flush=True)
    config = uvicorn.Config(app, log_level="warning", lifespan="on")
    anyio.run(lambda: uvicorn.Server(config).serve(sockets=[sock]))


def main(master: Optional[str] = None, token: Optional[str] = None,
         http: Optional[str] = None, allow_gate_decisions: bool = False,
         config: Optional[str] = None) -> int:
    from titan.config import ConfigError, load_config
    from titan.errors import TitanError
    from titan.mcp.tools import gate_decisions_allowed
    from titan.sdk.client import Client
    from titan.sdk.connection import cluster_token, master_address
    master_address(master)  # a malformed --master is said now, not at the first call
    found = cluster_token(token)

    def connect() -> Client:
        return Client(master=master, token=found, name="titan-mcp")
    try:  # the config file the master and workers read (--config): its `mcp:` section
        settings = load_config(config).mcp
    except ConfigError as e:
        raise TitanError(str(e)) from None
    tools = Tools(connect, allow_gate_decisions=gate_decisions_allowed(
        allow_gate_decisions, settings.allow_gate_decisions))
    server = build_server(tools)
    if http is None:
        server.run("stdio")
        return 0
    if not found:
        raise TitanError("titan mcp --http needs the cluster token (TITAN_TOKEN, --token-file "
                         "or a local master's data dir): it is what HTTP clients must show")
    try:
        serve_http(server, http, found)
    except ValueError as e:
        raise TitanError(str(e)) from None
    except OSError as e:  # the port taken, an address not of this machine
        raise TitanError(f"titan mcp --http {http}: cannot listen there: "
                         f"{e.strerror or e}") from None
    return 0
