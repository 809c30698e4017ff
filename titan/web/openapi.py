"""The OpenAPI 3.1 document of /api/v1, written as data (served at /api/v1/openapi.json).

tests/unit/test_web.py checks that every route titan/web/app.py serves is here, with its
method, and that every path here is served.
"""
from __future__ import annotations

from typing import Any

JSON = "application/json"


def _ref(name: str) -> dict:
    return {"$ref": f"#/components/schemas/{name}"}


def _ok(schema: dict, description: str = "OK") -> dict:
    return {"description": description, "content": {JSON: {"schema": schema}}}


def _obj(required: dict, optional: dict | None = None) -> dict:
    """An object that has every property of `required` (and may have `optional` ones, or
    more: a view may grow; a client reads what it knows)."""
    return {"type": "object", "required": list(required),
            "properties": {**required, **(optional or {})}}


_ERR = {"description": "An error", "content": {JSON: {"schema": _ref("Error")}}}
_ANY = {"type": "object"}


def _query(name: str, kind: str, description: str, **extra: Any) -> dict:
    return {"name": name, "in": "query", "required": False, "description": description,
            "schema": {"type": kind, **extra}}


def _path(name: str, description: str) -> dict:
    return {"name": name, "in": "path", "required": True, "description": description,
            "schema": {"type": "string", "minLength": 1}}


def _op(summary: str, ok: dict, *, params: tuple = (), body: dict | None = None,
        errors: tuple = (401,), public: bool = False, responses: dict | None = None) -> dict:
    op: dict = {"summary": summary, "responses": {"200": ok}}
    for status in errors:
        op["responses"][str(status)] = _ERR
    op["responses"].update(responses or {})
    if params:
        op["parameters"] = list(params)
    if body is not None:
        op["requestBody"] = {"required": True, "content": {JSON: {"schema": body}}}
    if public:
        op["security"] = []
    return op


# What a change may answer besides 200 (503: the event log cannot be written).
_CHANGE = (400, 401, 403, 404, 413, 503)
_OFFSET = {"minimum": 0, "maximum": 2 ** 62}
# A job ref is one path segment, so a node named like an action (logs, cancel) is never
# taken for one: a run's job goes in with its slash percent-encoded.
_REF = "the job: its id, or RUN_ID%2FNODE (one path segment: the slash percent-encoded)"
_NUM = {"type": ["number", "null"]}
_COUNT = {"type": "integer", "minimum": 0}
_FILES = {"type": "object", "additionalProperties": {"type": "string"},
          "description": "the scripts' texts by the name a step's `file` gives"}
_DOCUMENT_BODY = {"type": "object", "required": ["document"], "properties": {
    "document": {"type": "object", "description": "the pipeline in the YAML format's keys"},
    "files": _FILES}}
_PIPELINE_ERR = {"description": "A bad request, or a pipeline `titan run` would refuse "
                                "(bad_pipeline, with its problems)",
                 "content": {JSON: {"schema": {"allOf": [
                     {"$ref": "#/components/schemas/Error"}, {"type": "object", "properties": {
                         "problems": {"type": "array", "items": {
                             "$ref": "#/components/schemas/Problem"}}}}]}}}}
_DRAFT_NAME = {"name": "name", "in": "path", "required": True,
               "description": "the draft's name: 1-100 of letters, digits, _ . -",
               "schema": {"type": "string", "pattern": "^[A-Za-z0-9_.-]{1,100}$"}}
_LIST = lambda key, item: _ok({"type": "object", "properties": {  # noqa: E731
    key: {"type": "array", "items": item}}, "required": [key]})

PATHS: dict[str, dict] = {
    "/api/v1/login": {"post": _op(
        "Log in with the cluster token, a viewer token or a one-time code: sets the "
        "HttpOnly, SameSite=Strict session cookie and answers the session's CSRF value",
        _ok(_ref("Session")), public=True, errors=(400, 401, 413),
        body={"type": "object", "properties": {"token": {"type": "string"},
                                               "code": {"type": "string"}},
              "anyOf": [{"required": ["token"]}, {"required": ["code"]}]})},
    "/login": {"get": {
        "summary": "The one-time login link `titan up` prints: opens a session and "
                   "redirects to the dashboard",
        "security": [], "parameters": [_query("code", "string", "the one-time login code")],
        "responses": {"303": _ok({"type": "object", "required": ["redirect"], "properties": {
            "redirect": {"const": "/"}}}, "Logged in; on to / (the Location header)"),
            "401": _ERR}}},
    "/api/v1/logout": {"post": _op("End the session of the cookie sent", _ok({
        "type": "object", "required": ["logged_out"],
        "properties": {"logged_out": {"const": True}}}),
                                   public=True, errors=(400, 413))},
    "/api/v1/session": {"get": _op("Who the caller is (role) and its session's CSRF value",
                                   _ok(_ref("Session")))},
    "/api/v1/login-codes": {"post": _op(
        "A one-time login code (and the path of its link) for a browser",
        _ok(_ref("LoginCode")), errors=(400, 401, 403, 413, 503))},
    "/api/v1/openapi.json": {"get": _op("This document", _ok({
        "type": "object", "required": ["openapi", "info", "paths"],
        "properties": {"openapi": {"const": "3.1.0"}}}), public=True, errors=())},
    "/metrics": {"get": {
        "summary": "The master's metrics for Prometheus (docs/metrics.md): Prometheus' text "
                   "format, or OpenMetrics when the Accept header asks for it",
        "responses": {"200": {"description": "The metrics", "content": {
            "text/plain": {"schema": {"type": "string"}},
            "application/openmetrics-text": {"schema": {"type": "string"}}}},
            "401": _ERR}}},
    "/api/v1/cluster": {"get": _op("The cluster: job counts by state, workers, slots, "
                                   "persistence, warnings", _ok(_ref("Cluster")))},
    "/api/v1/workers": {"get": _op("Every worker: name, host, tags, busy/total slots, the "
                                   "jobs it runs, heartbeat age, state, who started it",
                                   _LIST("workers", _ref("Worker"))),
                        "post": {**_op(
        "Start a local titan-worker (the master spawns it, as the autoscaler does) with the "
        "tags and slots asked for; it shows in GET /api/v1/workers once it registers",
        _ok({"type": "object", "properties": {
            "name": {"type": "string"}, "pid": {"type": "integer"},
            "tags": {"type": "array", "items": {"type": "string"}},
            "slots": {"type": "integer"}, "spawned_by": {"type": "string"}},
            "required": ["name", "pid", "tags", "slots", "spawned_by"]}),
        errors=(400, 401, 403, 409, 413)), "requestBody": {
            "required": False, "content": {JSON: {"schema": {
                "type": "object", "properties": {
                    "tags": {"type": "array", "items": {
                        "type": "string", "pattern": "^[A-Za-z0-9_.:-]{1,64}$"}},
                    "slots": {"type": "integer", "minimum": 1, "maximum": 64},
                    "name": {"type": "string", "pattern": "^[A-Za-z0-9_.-]{1,64}$"}}}}}}}},
    "/api/v1/workers/{name}/drain": {"post": _op(
        "Drain a worker: no new jobs from now on; it finishes what it runs, then leaves "
        "(one the master started is stopped, any other is told to stop)", _ok({
            "type": "object", "properties": {
                "name": {"type": "string"}, "worker_id": {"type": "string"},
                "state": {"type": "string"},
                "running": {"type": "array", "items": {"type": "string"}}},
            "required": ["name", "state"]}),
        errors=_CHANGE + (409,), params=(_path("name", "the worker: its name or id"),))},
    "/api/v1/runs": {"get": _op(
        "DAG runs, newest first, a page at a time", _ok({
            "type": "object", "required": ["runs", "next_cursor"], "properties": {
                "runs": {"type": "array", "items": _ref("Run")},
                "next_cursor": {"type": ["integer", "null"]}}}),
        errors=(400, 401),
        params=(_query("limit", "integer", "runs per page (1-1000, default 50)",
                       minimum=1, maximum=1000),
                _query("cursor", "integer", "next_cursor of the page before", **_OFFSET),
                _query("state", "string", "RUNNING, COMPLETED, FAILED or CANCELLED",
                       enum=["RUNNING", "COMPLETED", "FAILED", "CANCELLED"]),
                _query("name", "string", "runs whose name contains this"),
                _query("agent_run_id", "string", "runs of this agent run")))},
    "/api/v1/runs/{run_id}": {"get": _op(
        "One run with its jobs (a page of them: offset/limit, 2,000 by default) and the "
        "edges among them", _ok(_ref("RunGraph")), errors=(400, 401, 404),
        params=(_path("run_id", "the run"),
                _query("offset", "integer", "the first job (in the run's order)", **_OFFSET),
                _query("limit", "integer", "jobs in this page (1-10000, default 2000)",
                       minimum=1, maximum=10_000)))},
    "/api/v1/runs/{run_id}/cancel": {"post": _op(
        "Cancel every unfinished job of a run", _ok(_ref("RunCancelled")), errors=_CHANGE,
        params=(_path("run_id", "the run"),))},
    "/api/v1/jobs/{ref}": {"get": _op(
        "One job: spec, worker, attempt, exit code and reason, times, result",
        _ok(_ref("Job")), errors=(401, 404),
        params=(_path("ref", _REF),))},
    "/api/v1/jobs/{ref}/logs": {"get": _op(
        "Bytes [offset, offset+limit) of a job's output, as text, and where to go on",
        _ok(_ref("Logs")), errors=(400, 401, 404),
        params=(_path("ref", _REF),
                _query("offset", "integer", "the first byte (default 0)", **_OFFSET),
                _query("limit", "integer", "bytes at most (1-1048576, default 65536)",
                       minimum=1, maximum=1024 * 1024)))},
    "/api/v1/jobs/{ref}/cancel": {"post": _op(
        "Cancel a job", _ok(_ref("JobCancelled")), errors=_CHANGE,
        params=(_path("ref", _REF),))},
    "/api/v1/gates": {"get": _op(
        "Approval gates waiting across runs (question, run, waiting since, time left), or "
        "the decided ones (who, when, why)", _LIST("gates", _ref("Gate")),
        errors=(400, 401),
        params=(_query("decided", "boolean", "true: the latest decided gates"),
                _query("limit", "integer", "gates at most (1-10000, default 200)",
                       minimum=1, maximum=10_000)))},
    "/api/v1/gates/{ref}/decide": {"post": _op(
        "Approve or reject a waiting gate with a comment (409 if it is not waiting)",
        _ok(_ref("Job")), errors=_CHANGE + (409,),
        params=(_path("ref", "the gate: " + _REF),),
        body={"type": "object", "required": ["approved"], "properties": {
            "approved": {"type": "boolean"}, "comment": {"type": "string"},
            "by": {"type": "string"}}})},
    "/api/v1/agent-runs": {"get": _op(
        "Agent runs, the one whose latest stage moved last first: stages, labels, states",
        _LIST("agent_runs", _ref("AgentRun")), errors=(400, 401),
        params=(_query("limit", "integer", "agent runs at most (1-1000, default 100)",
                       minimum=1, maximum=1000),))},
    "/api/v1/agent-runs/{agent_run_id}": {"get": _op(
        "The runs (stages) of one agent run, in order, with states and times, and the "
        "model usage its jobs recorded (titan.agents) per stage and in total",
        _ok({"type": "object", "required": ["agent_run_id", "runs", "usage"], "properties": {
            "agent_run_id": {"type": "string"},
            "runs": {"type": "array", "items": _ref("Run")},
            "usage": {"oneOf": [{"type": "null"}, _ref("AgentUsage")]}}}),
        errors=(401, 404),
        params=(_path("agent_run_id", "the agent run"),))},
    "/api/v1/services": {"get": _op(
        "Services: state, worker, port, restarts, health, last lines",
        _LIST("services", _ref("Service")), errors=(400, 401),
        params=(_query("all", "boolean", "long-ended ones too"),))},
    "/api/v1/services/{name}/restart": {"post": _op(
        "Restart a running service", _ok(_ref("ServiceRestarted")), errors=_CHANGE + (409,),
        params=(_path("name", "the service"),))},
    "/api/v1/services/{name}/stop": {"post": _op(
        "Stop a service (cancel its job)", _ok(_ref("JobCancelled")),
        errors=_CHANGE + (409,),
        params=(_path("name", "the service"),))},
    "/api/v1/schedules": {"get": _op("Cron schedules: next fire time, last run",
                                     _LIST("schedules", _ref("Schedule")))},
    "/api/v1/schedules/{schedule_id}": {"delete": _op(
        "Remove a schedule", _ok(_ref("ScheduleRemoved")), errors=_CHANGE,
        params=(_path("schedule_id", "the schedule"),))},
    "/api/v1/store/keys": {"get": _op(
        "One SCAN step over the store's keys (read only): type and TTL of each",
        _ok({"type": "object", "required": ["cursor", "keys"], "properties": {
            "cursor": {"type": "integer", "minimum": 0},
            "keys": {"type": "array", "items": _ref("StoreKey")}}}), errors=(400, 401, 503),
        params=(_query("pattern", "string", "a glob (default *)"),
                _query("cursor", "integer", "the cursor the step before gave (0: start)",
                       minimum=0, maximum=2 ** 63),
                _query("count", "integer", "keys per step, a hint (1-1000)",
                       minimum=1, maximum=1000)))},
    "/api/v1/store/value": {"get": _op(
        "One key's type, TTL and value (string, hash, set or list)",
        _ok(_ref("StoreValue")), errors=(400, 401, 404, 503),
        params=(dict(_query("key", "string", "the key", minLength=1), required=True),))},
    "/api/v1/pipelines/parse": {"post": _op(
        "A pipeline's YAML (Titan's format or the reference's) as a document in Titan's "
        "keys, as `titan run` reads it (hitl_message becomes a gate step, depends_on a "
        "list); 400 bad_pipeline with the message `titan run` prints and its problems",
        _ok(_ref("PipelineDocument")), errors=(400, 401, 413),
        responses={"400": _PIPELINE_ERR},
        body={"type": "object", "required": ["yaml"], "properties": {
            "yaml": {"type": "string"}, "files": _FILES,
            "name": {"type": "string", "minLength": 1, "maxLength": 200,
                     "pattern": "\\S"}}})},
    "/api/v1/pipelines/validate": {"post": _op(
        "Check a document as `titan run` would (its reader, then the master's DAG checks: "
        "keys, values, durations, duplicate ids, unknown parents, cycles): the problems, "
        "each naming its step and key where it has one", _ok(_obj({
            "ok": {"type": "boolean"},
            "problems": {"type": "array", "items": _ref("Problem")}})),
        errors=(400, 401, 413), body=_DOCUMENT_BODY)},
    "/api/v1/pipelines": {"post": _op(
        "Submit a document as `titan run` does: a run starts ({run_id}), or, with a "
        "schedule, the schedule is registered ({schedule_id, next_at}); 400 bad_pipeline "
        "with its problems", _ok({"oneOf": [
            _obj({"run_id": {"type": "string"}}),
            _obj({"schedule_id": {"type": "string"}, "next_at": _NUM})]}),
        errors=_CHANGE, responses={"400": _PIPELINE_ERR}, body=_DOCUMENT_BODY)},
    "/api/v1/runs/{run_id}/pipeline": {"get": _op(
        "A run's pipeline as a document (every job as it is now, those added while it "
        "ran included) and its scripts: submitting it gives the same DAG",
        _ok(_ref("PipelineDocument")), errors=(401, 404),
        params=(_path("run_id", "the run"),))},
    "/api/v1/drafts": {"get": _op(
        "The constructor's drafts kept on the master, the latest saved first",
        _LIST("drafts", _obj({"name": {"type": "string"}, "updated_at": {"type": "number"},
                              "steps": _COUNT})))},
    "/api/v1/drafts/{name}": {
        "get": _op("One draft: what the constructor saved", _ok(_obj({
            "name": {"type": "string"}, "updated_at": {"type": "number"}, "draft": {}})),
            errors=(400, 401, 404), params=(_DRAFT_NAME,)),
        "put": _op("Save a draft under a name (replacing one of that name); 409 "
                   "draft_limit past 1,000 drafts", _ok(_obj({
                       "name": {"type": "string"}, "updated_at": {"type": "number"}})),
                   errors=_CHANGE + (409,), params=(_DRAFT_NAME,),
                   body={"type": "object", "required": ["draft"], "properties": {
                       "draft": {}}}),
        "delete": _op("Delete a draft", _ok(_obj({
            "name": {"type": "string"}, "deleted": {"const": True}})),
            errors=_CHANGE, params=(_DRAFT_NAME,))},
    "/api/v1/events": {"get": {
        "summary": "Live changes as Server-Sent Events (titan/web/events.py)",
        "parameters": [
            _query("run", "string", "only these runs' things (comma-separated; may repeat)"),
            _query("kind", "string", "only these kinds, comma-separated: job, gate, service, "
                                     "run, worker, schedule (400 for another)"),
            _query("last_event_id", "string", "resume after this id (as Last-Event-ID)"),
            {"name": "Last-Event-ID", "in": "header", "required": False,
             "description": "resume after this id (a browser's EventSource sends it)",
             "schema": {"type": "string"}}],
        "responses": {"200": {"description": "An event stream",
                              "content": {"text/event-stream": {
                                  "schema": _ref("ChangeEvent")}}},
                      "400": _ERR, "401": _ERR, "404": _ERR}}},
    "/api/v1/jobs/{ref}/log/stream": {"get": {
        "summary": "A job's output as Server-Sent Events from ?offset=N as it is written "
                   "(titan/web/events.py)",
        "parameters": [_path("ref", _REF),
                       _query("offset", "integer", "the first byte (default 0)", **_OFFSET),
                       {"name": "Last-Event-ID", "in": "header", "required": False,
                        "description": "resume from this byte offset (it wins over offset)",
                        "schema": {"type": "string", "pattern": "^[0-9]+$"}}],
        "responses": {"200": {"description": "An event stream", "content": {
            "text/event-stream": {"schema": _ref("LogEvent")}}},
            "400": _ERR, "401": _ERR, "404": _ERR}}},
}

_STR = {"type": ["string", "null"]}
_NUM = {"type": ["number", "null"]}
_INT = {"type": ["integer", "null"]}
_COUNT = {"type": "integer", "minimum": 0}
_STRS = {"type": "array", "items": {"type": "string"}}
JOB_STATES = ["PENDING", "RUNNING", "COMPLETED", "FAILED", "DEAD", "CANCELLED",
              "WAITING_APPROVAL"]
RUN_STATES = ["RUNNING", "COMPLETED", "FAILED", "CANCELLED"]
WORKER_STATES = ["ALIVE", "DISCONNECTED", "DRAINING", "DEAD"]
# A PENDING job that waits for a time is DELAYED (its delay) or RETRYING (a backoff).
PHASES = JOB_STATES + ["DELAYED", "RETRYING"]
_BY_STATE = {"type": "object", "propertyNames": {"enum": JOB_STATES},
             "additionalProperties": {"type": "integer", "minimum": 0}}


def _sse(events: dict) -> dict:
    """A Server-Sent Events stream, described one event at a time (OpenAPI 3.1's reading
    of `schema` for text/event-stream, `itemSchema` in 3.2): {event, data, id}, `data` a
    JSON text of the schema given for its event."""
    return {"oneOf": [_obj({"event": {"const": name}, "data": {
        "type": "string", "contentMediaType": JSON, "contentSchema": data}},
        {"id": {"type": "string"}, "retry": {"type": "integer"}})
        for name, data in events.items()]}


SCHEMAS: dict[str, dict] = {
    "Problem": {"type": "object", "required": ["step", "key", "message"], "properties": {
        "step": _STR, "key": _STR, "message": {"type": "string"}}},
    "PipelineDocument": {"type": "object", "required": ["document", "files"], "properties": {
        "document": {"type": "object", "required": ["name", "jobs"], "properties": {
            "name": {"type": "string"}, "jobs": {"type": "array", "items": {
                "type": "object", "required": ["id", "depends_on"], "properties": {
                    "id": {"type": "string"}, "depends_on": _STRS}}}}},
        "files": {"type": "object", "additionalProperties": {"type": "string"}},
        "missing": _STRS}},
    "Error": {"type": "object", "required": ["error"], "properties": {"error": {
        "type": "object", "required": ["code", "message"],
        "properties": {"code": {"type": "string"}, "message": {"type": "string"}}}}},
    "Session": _obj({"role": {"enum": ["operator", "viewer"]}, "csrf": _STR,
                     "expires": _NUM}),
    "LoginCode": _obj({"code": {"type": "string", "minLength": 1},
                       "path": {"type": "string", "pattern": "^/login\\?code="}}),
    "Cluster": _obj({
        "jobs": _BY_STATE, "workers": _COUNT, "slots": _COUNT, "busy": _COUNT,
        "persistence": {"type": ["object", "null"]}, "recovery": {"type": ["object", "null"]},
        "text_frames": {"type": "string"}, "storage": _STR, "warnings": _STRS},
        {"config": {"type": "object"}, "web_port": {"type": ["integer", "null"]}}),
    "Worker": _obj({
        "worker_id": {"type": "string"}, "name": {"type": "string"},
        "host": {"type": "string"}, "tags": _STRS, "slots": _COUNT, "busy": _COUNT,
        "jobs": _STRS, "state": {"enum": WORKER_STATES}, "last_heartbeat_ago": {
            "type": "number"}, "joined_at": {"type": "number"}, "completed": _COUNT,
        "idle_for": _NUM, "spawned_by": _STR}, {"pid": {"type": "integer"}, "why": _STR,
                                                 "clock_offset": _NUM}),
    "AgentRun": _obj({
        "agent_run_id": _STR, "runs": {"type": "integer"},
        "stages": {"type": "array", "items": _obj({
            "run_id": _STR, "name": _STR, "stage": _STR, "state": _STR})},
        "state": _STR, "started_at": {"type": "number"},
        "finished_at": {"type": ["number", "null"]}, "last_at": {"type": "number"}}),
    "UsageTotals": _obj({
        "calls": _COUNT, "tokens_in": _COUNT, "tokens_out": _COUNT,
        "latency": {"type": "number", "minimum": 0}, "cost": {"type": "number"}}),
    "AgentUsage": _obj({
        "stages": {"type": "object", "additionalProperties": _ref("UsageTotals")},
        "runs": {"type": "object", "additionalProperties": _ref("UsageTotals")},
        "total": _ref("UsageTotals"), "truncated": {"type": "boolean"}}),
    "Run": _obj({
        "run_id": {"type": "string"}, "name": {"type": "string"},
        "state": {"enum": RUN_STATES}, "agent_run_id": _STR, "stage": _STR,
        "schedule_id": _STR, "created_at": {"type": "number"}, "finished_at": _NUM,
        "version": _COUNT, "total": _COUNT, "counts": _BY_STATE}),
    "RunJob": _obj({
        "node": {"type": "string"}, "job_id": {"type": "string"},
        "name": _STR, "state": {"enum": JOB_STATES}, "kind": {"type": "string"},
        "attempt": _COUNT, "worker": _STR, "started_at": _NUM, "finished_at": _NUM,
        "reason": _STR, "exit_code": _INT, "depends_on": _STRS,
        "phase": {"enum": PHASES}, "failures": _COUNT, "ready_at": _NUM}),
    "RunGraph": {"allOf": [_ref("Run"), _obj({
        "jobs": {"type": "array", "items": _ref("RunJob")},
        "edges": {"type": "array", "items": {"type": "array", "items": {"type": "string"},
                                             "minItems": 2, "maxItems": 2}},
        "offset": _COUNT, "next_offset": _INT})]},
    "Decision": _obj({"approved": {"type": "boolean"}, "by": {"type": "string"},
                      "comment": {"type": "string"}, "at": {"type": "number"}},
                     {"via": {"type": "string"}}),
    "Job": _obj({
        "job_id": {"type": "string"}, "name": _STR, "state": {"enum": JOB_STATES},
        "run_id": _STR, "node": _STR, "kind": {"type": "string"}, "depends_on": _STRS,
        "command": _STRS, "file": _STR, "priority": {"type": "integer"}, "tags": _STRS,
        "attempt": _COUNT, "failures": _COUNT, "retries": _COUNT, "worker_id": _STR,
        "worker": _STR, "exit_code": _INT, "reason": _STR, "waiting": _STR,
        "submitted_at": {"type": "number"}, "started_at": _NUM, "finished_at": _NUM,
        "ready_at": _NUM, "result": {}, "message": _STR,
        "decision": {"oneOf": [{"type": "null"}, _ref("Decision")]},
        "phase": {"enum": PHASES}, "attempts_dropped": _COUNT, "attempts": {
            "type": "array", "items": _obj({
                "attempt": {"type": "integer", "minimum": 1}, "worker": _STR,
                "started_at": _NUM, "finished_at": _NUM, "exit_code": _INT,
                "state": {"type": "string"}, "reason": _STR})}}),
    "Logs": _obj({
        "job_id": {"type": "string"}, "offset": _COUNT, "next_offset": _COUNT,
        "data": {"type": "string"}, "state": {"enum": JOB_STATES},
        "done": {"type": "boolean"}}),
    "Gate": _obj({
        "job_id": {"type": "string"}, "run_id": {"type": "string"},
        "node": {"type": "string"}, "question": _STR, "state": {"enum": JOB_STATES},
        "waiting_since": _NUM, "deadline": _NUM, "time_left": _NUM,
        "on_timeout": {"type": "string"},
        "decision": {"oneOf": [{"type": "null"}, _ref("Decision")]}}),
    "Service": _obj({
        "name": {"type": "string"}, "job_id": {"type": "string"},
        "state": {"type": "string"}, "worker": _STR, "host": _STR, "port": _INT,
        "pid": _INT, "restarts": _COUNT, "uptime": _NUM,
        "healthy": {"type": ["boolean", "null"]}, "reason": _STR, "command": _STRS,
        "restart": {"enum": ["always", "on-failure", "never"]}, "health": _STR,
        "last_lines": _STRS, "health_error": _STR, "last_exit": _STR}),
    "Schedule": _obj({
        "schedule_id": {"type": "string"}, "name": {"type": "string"},
        "cron": {"type": "string"}, "fired": _COUNT, "next_at": _NUM,
        "last_run_id": _STR}),
    "StoreKey": _obj({"key": {"type": "string"}, "type": {"type": "string"},
                      "ttl": {"type": "integer"}}),
    "StoreValue": _obj({
        "key": {"type": "string"},
        "type": {"type": "string"},
        "ttl": {"type": "integer"},
        "value": {"oneOf": [{"type": "string"}, _STRS, {"type": "null"},
                            {"type": "object", "additionalProperties": {"type": "string"}}]}}),
    "JobCancelled": _obj({"job_id": {"type": "string"}, "state": {"enum": JOB_STATES},
                          "cancelled": {"type": "boolean"}}),
    "RunCancelled": _obj({"run_id": {"type": "string"}, "state": {"enum": RUN_STATES},
                          "cancelled": {"type": "boolean"}}),
    "ScheduleRemoved": _obj({"schedule_id": {"type": "string"},
                             "cancelled": {"const": True}, "state": {"const": "REMOVED"}}),
    "ServiceRestarted": _obj({"name": {"type": "string"}, "job_id": {"type": "string"}}),
    "LogEvent": _sse({"log": _obj({"offset": _COUNT, "text": {"type": "string"}}),
                      "end": _obj({"state": {"enum": JOB_STATES}, "offset": _COUNT})}),
    "ChangeEvent": _sse({
        "batch": _obj({"changes": {"type": "array", "items": _obj({
            "kind": {"enum": ["job", "gate", "service", "run", "worker", "schedule"]},
            "id": {"type": "string"}, "run_id": _STR,
            "data": {"type": ["object", "null"]}})}}),
        "ping": {"type": "object"}, "reset": _obj({"reason": {"type": "string"}})}),
}


def document() -> dict:
    return {
        "openapi": "3.1.0",
        "info": {"title": "Titan master API", "version": "1",
                 "description": "The dashboard's JSON API (docs/web.md).  Errors are "
                                "{\"error\": {\"code\", \"message\"}}."},
        "paths": PATHS,
        "components": {
            "schemas": SCHEMAS,
            "securitySchemes": {
                "bearer": {"type": "http", "scheme": "bearer",
                           "description": "The cluster token, or a viewer token"},
                "session": {"type": "apiKey", "in": "cookie", "name": "titan_session",
                            "description": "The cookie POST /api/v1/login sets; a change "
                                           "made with it needs the X-Titan-CSRF header"}}},
        "security": [{"bearer": []}, {"session": []}],
    }
