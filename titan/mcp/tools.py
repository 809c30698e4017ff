"""What the MCP tools do, as plain blocking calls through the SDK (no MCP in here).

Each method takes JSON-ready arguments and returns JSON-ready data, or raises
`ToolFailure` with a message written for the model that called it: a refusal of the
master, a pipeline's problem (naming its step and key), the master out of reach.  A new
`Client` per call: the SDK's client is one socket and not shared between threads, and
the server runs each call in a thread of its own.
"""
from __future__ import annotations

import os
from typing import Any, Callable, Optional

from titan.errors import RemoteError, TitanError

MAX_LOG_BYTES = 64 * 1024      # one job_logs answer at most
MAX_WAIT = 120.0               # wait_for_run waits at most this long per call
MAX_STORE_VALUE = 256 * 1024   # store_get answers at most this much of a value
MAX_LIST = 200                 # list_runs answers at most this many
RESEARCH_WAIT = 300.0          # research waits at most this long for its report
ENDED = frozenset({"COMPLETED", "FAILED", "DEAD", "CANCELLED"})
GATE_ENV = "TITAN_MCP_ALLOW_GATE_DECISIONS"
GATE_REFUSAL = (
    "gate decisions through MCP are off: a human approval gate that an AI can approve "
    "itself is no gate. A person can decide it with `titan approve GATE` / `titan reject "
    "GATE` or in the dashboard; an operator who wants MCP clients to decide gates starts "
    f"the server with `titan mcp --allow-gate-decisions` (or {GATE_ENV}=1, or "
    "allow_gate_decisions: true in the mcp: section of the file given with --config).")


class ToolFailure(Exception):
    """A tool call that failed; the message is what the model reads."""


def gate_decisions_allowed(flag: bool = False, configured: bool = False) -> bool:
    """On with the command line's flag, the environment's switch, or the config file's
    `mcp.allow_gate_decisions` (the flag and the switch turn it on whatever the file says)."""
    return flag or configured or \
        os.environ.get(GATE_ENV, "").strip().lower() in ("1", "true", "yes", "on")


def _text(data: Any) -> str:
    if isinstance(data, (bytes, bytearray)):
        return bytes(data).decode("utf-8", errors="replace")
    return "" if data is None else str(data)


def _problem_message(problem: dict) -> str:
    where = []
    if problem.get("step"):
        where.append(f"step {problem['step']!r}")
    if problem.get("key"):
        where.append(f"key {problem['key']!r}")
    head = f"pipeline refused ({', '.join(where)}): " if where else "pipeline refused: "
    return head + problem["message"]


def read_pipeline(yaml_text: Optional[str] = None, spec: Optional[dict] = None,
                  files: Optional[dict] = None) -> dict:
    """The SUBMIT_DAG body of a pipeline given as YAML text or as a document (the YAML
    format's keys as JSON), checked as `titan run` and the master check it; else
    ToolFailure naming the step and key at fault.  Scripts (`file:`) come from `files`
    only, never from the server's disk."""
    from titan.core.dag import SubmitError
    from titan.documents import (PipelineProblems, check_files, check_spec, pipeline_problem,
                                 read_document, submit_problem)
    from titan.sdk.pipeline import Pipeline, PipelineError
    if (yaml_text is None) == (spec is None):
        raise ToolFailure("give the pipeline once: either `yaml` (YAML text) or `spec` "
                          "(the same keys as a JSON object)")
    try:
        files = check_files(files)
    except ValueError as e:
        raise ToolFailure(str(e)) from None
    if spec is not None:
        try:
            _, body = read_document(spec, files)
        except PipelineProblems as e:
            raise ToolFailure(_problem_message(e.problems[0])) from None
        return body
    try:
        body = Pipeline.from_yaml(yaml_text, path="pipeline.yaml", base_dir=".",
                                  files=files).to_spec()
    except PipelineError as e:
        raise ToolFailure(_problem_message(pipeline_problem(e, document=False))) from None
    try:
        check_spec(body)
    except SubmitError as e:
        raise ToolFailure(_problem_message(submit_problem(e))) from None
    return body


def _job_view(job: dict) -> dict:
    keep = ("job_id", "name", "state", "command", "attempt", "exit_code", "reason", "worker",
            "worker_id", "run_id", "depends_on", "waiting", "tags", "created_at",
            "started_at", "ended_at", "stage", "agent_run_id", "gate", "decision", "result")
    return {k: job[k] for k in keep if k in job and job[k] not in (None, "", [], {})}


def _run_view(run: dict, jobs: bool = True) -> dict:
    out = {k: v for k, v in run.items() if k not in ("jobs", "changed", "active")}
    if jobs and "jobs" in run:
        out["jobs"] = [_job_view(j) for j in run["jobs"]]
    return out


class Tools:
    """The tools' work.  `connect()` gives a new SDK client (a context manager)."""

    def __init__(self, connect: Callable[[], Any], allow_gate_decisions: bool = False) -> None:
        self.connect = connect
        self.allow_gate_decisions = allow_gate_decisions

    def _call(self, what: Callable[[Any], Any]) -> Any:
        try:
            with self.connect() as client:
                return what(client)
        except ToolFailure:
            raise
        except RemoteError as e:
            raise ToolFailure(f"the master refused: {e.message}") from None
        except TitanError as e:  # ConnectError too: "cannot reach the master at ..."
            raise ToolFailure(str(e)) from None
        except OSError as e:
            raise ToolFailure(f"lost the connection to the master: {e}") from None

    # -- submitting ----------------------------------------------------------------------

    def submit_job(self, command: Any, name: Optional[str] = None, priority: int = 0,
                   tags: Optional[list] = None, timeout: Optional[float] = None,
                   retries: int = 0, env: Optional[dict] = None) -> dict:
        if isinstance(command, str):
            if not command.strip():
                raise ToolFailure("command is empty")
        elif not command or not all(isinstance(a, str) for a in command):
            raise ToolFailure("command must be a shell string or a non-empty list of strings")
        job_id = self._call(lambda c: c.submit(command, name=name, priority=priority,
                                               tags=tags or (), timeout=timeout,
                                               retries=retries, env=env or {}))
        return {"job_id": job_id, "state": "QUEUED",
                "next": "job_status or job_logs with this job_id"}

    def submit_pipeline(self, yaml: Optional[str] = None, spec: Optional[dict] = None,
                        files: Optional[dict] = None, agent_run_id: Optional[str] = None,
                        stage: Optional[str] = None) -> dict:
        body = read_pipeline(yaml, spec, files)
        if agent_run_id:
            body["agent_run_id"] = agent_run_id
        if stage:
            body["stage"] = stage
        reply = self._call(lambda c: c.submit_dag(body))
        if "schedule_id" in reply:
            return {"schedule_id": reply["schedule_id"], "next_at": reply.get("next_at")}
        return {"run_id": reply["run_id"], "jobs": reply.get("jobs"),
                "next": "wait_for_run or run_status with this run_id"}

    # -- looking -------------------------------------------------------------------------

    def run_status(self, run_id: str) -> dict:
        return _run_view(self._call(lambda c: c.run(run_id)))

    def job_status(self, job_id: str) -> dict:
        return _job_view(self._call(lambda c: c.job(job_id)))

    def job_logs(self, job_id: str, tail: Optional[int] = None, offset: int = 0,
                 max_bytes: int = MAX_LOG_BYTES) -> dict:
        max_bytes = max(1, min(int(max_bytes), MAX_LOG_BYTES))
        if offset < 0:
            raise ToolFailure("offset must be 0 or more")
        if tail is not None and tail < 0:
            raise ToolFailure("tail must be 0 or more")

        def read(c):
            from titan.protocols.opcodes import Op
            chunks, at, size = [], offset, 0
            start = offset
            while True:
                part = c.call(Op.GET_LOGS, {"job_id": job_id, "offset": at})
                data = part["data"]
                if not data:
                    return start, b"".join(chunks), at, part.get("done", True), \
                        part.get("state")
                chunks.append(data)
                size += len(data)
                at = part["offset"]
                keep = tail if tail is not None else max_bytes
                if tail is not None:  # only the end is wanted: drop what is before it
                    while size - len(chunks[0]) >= keep and len(chunks) > 1:
                        size -= len(chunks[0])
                        start += len(chunks.pop(0))
                elif size >= max_bytes:
                    data = b"".join(chunks)[:max_bytes]
                    return start, data, start + len(data), False, part.get("state")
        start, data, end, done, state = self._call(read)
        if tail is not None:
            want = min(tail, max_bytes)
            if len(data) > want:
                start += len(data) - want
                data = data[len(data) - want:]
        return {"job_id": job_id, "state": state, "offset": start, "next_offset": end,
                "complete": bool(done), "text": _text(data),
                "note": None if done else "more output may follow: call again with "
                                          "offset=next_offset"}

    def wait_for_run(self, run_id: str, timeout: float = 60.0) -> dict:
        timeout = max(0.0, min(float(timeout), MAX_WAIT))
        run = self._call(lambda c: c.wait_run(run_id, timeout=timeout))
        out = _run_view(run)
        if run["state"] == "RUNNING":
            out["note"] = (f"still running after {timeout:g}s: call wait_for_run again "
                           f"(each call waits at most {MAX_WAIT:g}s)")
        return out

    def cancel(self, ref: str) -> dict:
        return self._call(lambda c: c.cancel(ref))

    def list_workers(self) -> dict:
        return {"workers": self._call(lambda c: c.workers())}

    def list_runs(self, agent_run_id: Optional[str] = None, limit: int = 20) -> dict:
        limit = max(1, min(int(limit), MAX_LIST))
        return {"runs": self._call(lambda c: c.runs(agent_run_id, limit=limit))}

    def agent_run_timeline(self, agent_run_id: str) -> dict:
        """The runs of one agent run, oldest first, each with its stage and its counts."""
        runs = self._call(lambda c: c.runs(agent_run_id, limit=MAX_LIST))
        if not runs:
            raise ToolFailure(f"no runs carry agent_run_id {agent_run_id!r}")
        runs = sorted(runs, key=lambda r: r.get("created_at") or 0)
        stages = []
        for r in runs:
            stages.append({"stage": r.get("stage"), "run_id": r["run_id"],
                           "name": r.get("name"), "state": r["state"],
                           "counts": r.get("counts"), "total": r.get("total"),
                           "created_at": r.get("created_at"),
                           "ended_at": r.get("ended_at")})
        states = {r["state"] for r in runs}
        return {"agent_run_id": agent_run_id, "runs": len(runs),
                "state": "RUNNING" if "RUNNING" in states else
                ("COMPLETED" if states == {"COMPLETED"} else "/".join(sorted(states))),
                "timeline": stages}

    # -- the store -----------------------------------------------------------------------

    def store_get(self, key: str) -> dict:
        value = self._call(lambda c: c.store_get(key))
        if value is None:
            return {"key": key, "found": False, "value": None}
        out = {"key": key, "found": True, "value": _text(value[:MAX_STORE_VALUE])}
        if len(value) > MAX_STORE_VALUE:
            out["note"] = f"value cut to its first {MAX_STORE_VALUE} bytes of {len(value)}"
        return out

    def store_put(self, key: str, value: str, ttl: Optional[float] = None) -> dict:
        if ttl is not None and ttl <= 0:
            raise ToolFailure("ttl must be more than 0 seconds (or left out)")
        self._call(lambda c: c.store_put(key, value, ex=ttl))
        return {"key": key, "stored": True, "ttl": ttl}

    # -- gates ---------------------------------------------------------------------------

    def decide_gate(self, gate: str, approve: bool, comment: str = "") -> dict:
        if not self.allow_gate_decisions:
            raise ToolFailure(GATE_REFUSAL)
        job = self._call(lambda c: c.approve(gate, comment, by="mcp") if approve
                         else c.reject(gate, comment, by="mcp"))
        return _job_view(job)

    # -- research ------------------------------------------------------------------------

    def research(self, question: str, n: int = 3, timeout: float = RESEARCH_WAIT,
                 agent_run_id: Optional[str] = None) -> dict:
        """A research run on the workers (titan/mcp/research.py): PLAN asks the model for n
        sub-questions, n ITER jobs answer them in parallel, SYNTH writes the report.  Waits
        for it (at most RESEARCH_WAIT seconds) and answers the report with the run's ids."""
        import secrets
        import time
        from titan.mcp.research import research_run
        agent_run_id = agent_run_id or f"research-{secrets.token_hex(4)}"
        try:
            spec = research_run(question, n, agent_run_id)
        except ValueError as e:
            raise ToolFailure(str(e)) from None
        timeout = max(1.0, min(float(timeout), RESEARCH_WAIT))

        def go(c):
            run_id = c.submit_dag(spec)["run_id"]
            deadline = time.monotonic() + timeout
            while True:
                left = deadline - time.monotonic()
                run = c.wait_run(run_id, timeout=max(0.1, min(left, 60.0)))
                if run["state"] != "RUNNING" or left <= 0:
                    break
            failed = [j for j in run.get("jobs", ()) if j["state"] in ("FAILED", "DEAD")]
            tails = {j["job_id"]: _text(c.logs(j["job_id"])[-2000:]) for j in failed[:3]}
            report = None
            if run["state"] == "COMPLETED":
                report = (c.result(f"{run_id}/synth") or {}).get("report")
            return run_id, run, tails, report
        run_id, run, tails, report = self._call(go)
        jobs = [{"job_id": j["job_id"], "state": j["state"]} for j in run.get("jobs", ())]
        if run["state"] == "RUNNING":
            return {"run_id": run_id, "agent_run_id": agent_run_id, "state": "RUNNING",
                    "jobs": jobs, "report": None,
                    "note": f"no report after {timeout:g}s: call wait_for_run with this "
                            f"run_id; the report is then the result of job {run_id}/synth "
                            "(job_status)"}
        if run["state"] != "COMPLETED":
            said = "; ".join(f"{job}: {tail.strip()[-600:]}" for job, tail in tails.items())
            raise ToolFailure(f"research run {run_id} (agent run {agent_run_id}) ended "
                              f"{run['state']}" + (f"; {said}" if said else ""))
        return {"run_id": run_id, "agent_run_id": agent_run_id, "state": "COMPLETED",
                "report": report, "jobs": jobs}
