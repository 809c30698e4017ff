"""The JSON REST API under /api/v1 (docs/web.md), with klein.

Each route is a thin adapter over `MasterApi`: it checks who asks (titan/web/auth.py),
reads its parameters, calls one operation and answers JSON once `api.reply_ready()` fires,
as every face does.  Errors are JSON too: {"error": {"code", "message"}}.
"""
from __future__ import annotations

import json
import re
from typing import Any, Awaitable, Callable, Optional

from urllib.parse import quote, unquote

import attrs
from klein import Klein
from twisted.internet import defer
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.resource import Resource
from werkzeug.exceptions import MethodNotAllowed, NotFound as NoRoute
from werkzeug.routing import BaseConverter

from titan.errors import RemoteError
from titan.master.api import BadRequest, Caller, MasterApi, NotFound
from titan.web.auth import COOKIE, CSRF_HEADER, OPERATOR, Principal, WebAuth

PREFIX = "/api/v1"
LOG_LIMIT = 1024 * 1024  # the most bytes of a log one request reads
_WHOLE = re.compile(r"-?[0-9]+")
# A RemoteError's code -> the HTTP status it is answered with (400 for any other).
STATUS = {"not_found": 404, "auth": 401, "unauthorized": 401, "forbidden": 403,
          "csrf": 403, "read_only": 403, "not_waiting": 409, "not_running": 409,
          "too_large": 413, "no_route": 404, "method": 405, "no_store": 503,
          "worker_limit": 409, "draft_limit": 409,
          "unreachable": 503, "storage_unavailable": 503, "internal": 500}


@attrs.frozen
class Raw:
    """A route's answer that is not JSON: its bytes and content type, sent as they are."""
    body: bytes
    content_type: str


class HttpError(RemoteError):
    """A refusal of the HTTP face itself (no route, no credentials, CSRF, a body too big)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(code, message)


def _json_default(value: Any) -> Any:
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    if isinstance(value, (set, frozenset, tuple)):
        return list(value)
    raise TypeError(f"{type(value).__name__} is not JSON")


def encode(value: Any) -> bytes:
    return json.dumps(value, default=_json_default, separators=(",", ":")).encode()


def _arg(request, name: str) -> Optional[str]:
    values = request.args.get(name.encode())
    return values[0].decode("utf-8", "replace") if values else None


def _int_arg(request, name: str, default: Optional[int], low: int, high: int
             ) -> Optional[int]:
    """A whole-number query parameter in [low, high], else 400 naming it (an empty one too:
    the document says integer; int() alone would take ' 7', '1_0' and other digits)."""
    raw = _arg(request, name)
    if raw is None:
        return default
    if not _WHOLE.fullmatch(raw):
        raise BadRequest(f"query parameter {name!r} must be a whole number, not {raw!r}")
    value = int(raw)
    if not low <= value <= high:
        raise BadRequest(f"query parameter {name!r} must be from {low} to {high}, not {value}")
    return value


def _bool_arg(request, name: str) -> bool:
    """A true/false query parameter (absent: false), else 400 naming it."""
    raw = _arg(request, name)
    if raw is None or raw == "false":
        return False
    if raw == "true":
        return True
    raise BadRequest(f"query parameter {name!r} must be true or false, not {raw!r}")


def _utf8_cut(data: bytes, limit: int) -> bytes:
    """`data[:limit]`, moved back to the start of a UTF-8 character (if one is cut)."""
    if len(data) <= limit:
        return data
    end = limit
    while end > max(0, limit - 3) and (data[end] & 0xC0) == 0x80:
        end -= 1
    return data[:end] if end > 0 else data[:limit]


class Segment(BaseConverter):
    """A path parameter is exactly one segment of the path as sent, percent-decoded: a job
    of a run is `RUN%2FNODE`, so a node named `logs` or `cancel` is never taken for the
    action routes below /jobs/{ref} (RawPath hands werkzeug the undecoded path)."""
    regex = "[^/]+"

    def to_python(self, value: str) -> str:
        return unquote(value)

    def to_url(self, value: str) -> str:
        return quote(value, safe="")


class RawPath(Resource):
    """Twisted splits the path at its slashes and then decodes each segment, and klein joins
    them again with slashes, so `RUN%2Flogs` would reach werkzeug as two segments.  This
    hands klein the segments as sent; `Segment` decodes each parameter on its own."""
    isLeaf = True

    def __init__(self, inner: Resource) -> None:
        super().__init__()
        self.inner = inner

    def render(self, request):
        raw = request.path.split(b"?", 1)[0].split(b"/")[1:]
        request.postpath = raw[len(request.prepath):]
        return self.inner.render(request)


# (method, path, name) of every route, in the order declared: openapi.py documents each.
ROUTES: list[tuple[str, str, str]] = []
APP = Klein()
# Before any route is declared: every <param> is a `Segment`.
APP.url_map.converters["default"] = Segment


class WebApp:
    """The routes; `resource()` is the twisted.web resource that serves them."""
    app = APP
    log = Logger()

    def __init__(self, api: MasterApi, auth: WebAuth, max_body_bytes: int,
                 events: Callable[[Optional[str]], Any]) -> None:
        self.api = api
        self.auth = auth
        self.max_body_bytes = max_body_bytes
        # Builds the SSE resources (titan/web/events.py): of the changes, or of a job's log
        # given its ref.
        self.events = events

    def resource(self):
        return RawPath(self.app.resource())

    # -- the frame around every route ----------------------------------------------------

    def route(path: str, method: str = "GET", change: bool = False,  # type: ignore[misc]
              public: bool = False):
        """Declare a route: `change` ones need an operator (and, with a session cookie, the
        CSRF header); `public` ones need no credentials."""
        def decorate(f):
            async def handler(self, request, **params):
                return await self._serve(request, f, params, change, public)
            handler.__name__ = f.__name__
            handler.__doc__ = f.__doc__
            ROUTES.append((method, path, f.__name__))
            return APP.route(path, methods=[method], endpoint=f.__name__)(handler)
        return decorate

    async def _serve(self, request, f, params: dict, change: bool, public: bool) -> bytes:
        request.setHeader(b"content-type", b"application/json; charset=utf-8")
        request.setHeader(b"cache-control", b"no-store")
        request.setHeader(b"x-content-type-options", b"nosniff")
        try:
            who = None
            if not public:
                who = self.auth.principal(request)
                if who is None:
                    raise HttpError("unauthorized", "log in first: POST /api/v1/login with "
                                    "the cluster token, or send Authorization: Bearer TOKEN")
                if change:
                    self._may_change(request, who)
            body = self._body(request) if request.method in (b"POST", b"PUT", b"DELETE") \
                else None
            result = f(self, request, who, body, **params)
            if isinstance(result, (defer.Deferred,)) or hasattr(result, "__await__"):
                result = await result
            await self.api.reply_ready()
            status = 200
            if isinstance(result, tuple):
                status, result = result
            request.setResponseCode(status)
            if isinstance(result, Raw):
                request.setHeader(b"content-type", result.content_type.encode())
                return result.body
            return encode(result)
        except Exception:
            return self._error(request, Failure())

    def _may_change(self, request, who: Principal) -> None:
        if who.role != OPERATOR:
            raise HttpError("read_only", "a viewer token may read, not change anything")
        if who.session is not None and \
                not self.auth.csrf_ok(who.session, request.getHeader(CSRF_HEADER)):
            raise HttpError("csrf", "a change made with a session cookie must carry the "
                            "session's X-Titan-CSRF header (GET /api/v1/session gives it)")

    def _body(self, request) -> dict:
        """The request's JSON object (empty if there is no body); 413 past the limit."""
        length = request.getHeader(b"content-length")
        if length is not None and length.isdigit() and int(length) > self.max_body_bytes:
            raise HttpError("too_large", f"the body is {int(length)} bytes, over the limit "
                            f"of {self.max_body_bytes} (web.max_body_bytes)")
        data = request.content.read(self.max_body_bytes + 1) if request.content else b""
        if len(data) > self.max_body_bytes:
            raise HttpError("too_large", f"the body is over the limit of "
                            f"{self.max_body_bytes} bytes (web.max_body_bytes)")
        if not data.strip():
            return {}
        try:
            body = json.loads(data)
        except (ValueError, UnicodeDecodeError) as e:
            raise BadRequest(f"the body is not valid JSON: {e}") from None
        if not isinstance(body, dict):
            raise BadRequest(f"the body must be a JSON object, not {type(body).__name__}")
        return body

    def _error(self, request, failure: Failure) -> bytes:
        error = failure.value if isinstance(failure.value, RemoteError) else \
            self.api.explain_failure(failure)
        if error is None:
            self.log.failure("{method} {uri} failed", failure, method=request.method,
                             uri=request.uri)
            error = RemoteError("internal", f"the master failed to answer: "
                                f"{failure.getErrorMessage()}")
        status = STATUS.get(error.code, 400)
        request.setResponseCode(status)
        if status == 401:
            request.setHeader(b"www-authenticate", b'Bearer realm="titan"')
        body: dict = {"error": {"code": error.code, "message": error.message}}
        problems = getattr(error, "problems", None)
        if problems is not None:  # a pipeline refused: each problem with its step and key
            body["problems"] = problems
        return encode(body)

    @app.handle_errors(NoRoute)
    def no_route(self, request, failure):
        request.setHeader(b"content-type", b"application/json; charset=utf-8")
        path = request.path.decode("utf-8", "replace")
        hint = " (GET /api/v1/openapi.json lists them)"
        if path.startswith((PREFIX + "/jobs/", PREFIX + "/gates/")):
            hint = "; a job of a run is one path segment, its slash encoded: " \
                   f"{PREFIX}/jobs/RUN%2FNODE" + hint
        return self._error(request, Failure(HttpError("no_route", f"no route {path}{hint}")))

    @app.handle_errors(MethodNotAllowed)
    def wrong_method(self, request, failure):
        request.setHeader(b"content-type", b"application/json; charset=utf-8")
        # A 405 says what is served there (RFC 9110 15.5.6); werkzeug adds HEAD to GET.
        allowed = sorted(set(getattr(failure.value, "valid_methods", None) or ()) - {"OPTIONS"})
        request.setHeader(b"allow", ", ".join(allowed).encode())
        return self._error(request, Failure(HttpError(
            "method", f"{request.method.decode()} is not served at "
                      f"{request.path.decode('utf-8', 'replace')}")))

    def caller(self, who: Principal) -> Caller:
        return Caller(None, who.describe)

    # -- auth ------------------------------------------------------------------------------

    @route(PREFIX + "/login", "POST", public=True)
    def login(self, request, who, body):
        """Log in with {"token": ...} (the cluster token or a viewer token) or {"code": ...}
        (a one-time login code): sets the session cookie, answers the CSRF value."""
        if "code" in body:
            role = OPERATOR if self.auth.use_login_code(body["code"]) else None
            what = "login code (unknown, used or expired)"
        elif "token" in body:
            if not isinstance(body["token"], str):
                raise BadRequest("'token' must be a string")
            role = self.auth.role_of(body["token"])
            what = "token"
        else:
            raise BadRequest("'token' is required (or 'code', a one-time login code)")
        if role is None:
            raise HttpError("unauthorized", f"wrong {what}")
        return self._open_session(request, role)

    def _open_session(self, request, role: str) -> dict:
        session = self.auth.open_session(role)
        request.addCookie(COOKIE, session.sid.encode(), path=b"/", httpOnly=True,
                          secure=request.isSecure(), sameSite="strict",
                          max_age=str(int(self.auth.session_ttl)).encode())
        return {"role": role, "csrf": session.csrf, "expires": session.expires}

    @route("/login", "GET", public=True)
    def login_link(self, request, who, body):
        """The one-time link `titan up` prints: /login?code=...: a session, then the UI."""
        if not self.auth.use_login_code(_arg(request, "code")):
            raise HttpError("unauthorized", "this login link is unknown, used or expired: "
                            "log in with the cluster token")
        self._open_session(request, OPERATOR)
        request.redirect(b"/")
        return (303, {"redirect": "/"})

    @route(PREFIX + "/logout", "POST", public=True)
    def logout(self, request, who, body):
        sid = request.getCookie(COOKIE)
        if sid:
            self.auth.close_session(sid.decode("ascii", "replace"))
        request.addCookie(COOKIE, b"", path=b"/", httpOnly=True, sameSite="strict",
                          max_age=b"0")
        return {"logged_out": True}

    @route(PREFIX + "/session")
    def session(self, request, who, body):
        """Who the caller is, and (for a session) its CSRF value."""
        return {"role": who.role, "csrf": who.session.csrf if who.session else None,
                "expires": who.session.expires if who.session else None}

    @route(PREFIX + "/login-codes", "POST", change=True)
    def login_code(self, request, who, body):
        """A one-time login code (and link) for a browser, for an operator."""
        code = self.auth.new_login_code()
        return {"code": code, "path": f"/login?code={code}"}

    # -- the document ----------------------------------------------------------------------

    @route(PREFIX + "/openapi.json", public=True)
    def openapi(self, request, who, body):
        from titan.web.openapi import document
        return document()

    # -- reads -----------------------------------------------------------------------------

    @route("/metrics")
    def metrics(self, request, who, body):
        """The master's metrics for Prometheus (docs/metrics.md), with the cluster token or
        a viewer token, as every read."""
        accept = request.getHeader(b"accept")
        data, content_type = self.api.metrics(
            self.caller(who), accept.decode("latin-1") if accept else None)
        return Raw(data, content_type)

    @route(PREFIX + "/cluster")
    def cluster(self, request, who, body):
        return self.api.stats(self.caller(who))

    @route(PREFIX + "/workers")
    def workers(self, request, who, body):
        return {"workers": self.api.list_workers(self.caller(who))}

    @route(PREFIX + "/runs")
    def runs(self, request, who, body):
        return self.api.runs_page(
            self.caller(who), limit=_int_arg(request, "limit", 50, 1, 1000),
            cursor=_int_arg(request, "cursor", None, 0, 2 ** 62),
            state=_arg(request, "state"), name=_arg(request, "name") or None,
            agent_run_id=_arg(request, "agent_run_id") or None)

    @route(PREFIX + "/runs/<run_id>")
    def run(self, request, who, body, run_id):
        return self.api.run_graph(self.caller(who), run_id,
                                  offset=_int_arg(request, "offset", 0, 0, 2 ** 62),
                                  limit=_int_arg(request, "limit", 2000, 1, 10_000))

    @route(PREFIX + "/jobs/<ref>")
    def job(self, request, who, body, ref):
        return self.api.job_info(self.caller(who), ref)

    @route(PREFIX + "/jobs/<ref>/logs")
    async def logs(self, request, who, body, ref):
        """Bytes [offset, offset + limit) of the job's output (as text), and where to go on."""
        offset = _int_arg(request, "offset", 0, 0, 2 ** 62)
        limit = _int_arg(request, "limit", 64 * 1024, 1, LOG_LIMIT)
        got = await self.api.read_logs(self.caller(who), ref, offset, False)
        data = _utf8_cut(got["data"], limit)
        end = offset + len(data)
        return {"job_id": ref, "offset": offset, "next_offset": end,
                "data": data.decode("utf-8", "replace"), "state": got["state"],
                "done": got["done"] and end == got["offset"]}

    @route(PREFIX + "/gates")
    def gates(self, request, who, body):
        """Waiting gates across runs (the inbox), or with ?decided=true the decided ones."""
        decided = _bool_arg(request, "decided")
        return {"gates": self.api.list_gates(self.caller(who), decided,
                                             _int_arg(request, "limit", 200, 1, 10_000))}

    @route(PREFIX + "/agent-runs")
    def agent_runs(self, request, who, body):
        """Agent runs, the latest to move first, each with its stages' labels and states."""
        return {"agent_runs": self.api.list_agent_runs(
            self.caller(who), _int_arg(request, "limit", 100, 1, 1000))}

    @route(PREFIX + "/agent-runs/<agent_run_id>")
    async def agent_run(self, request, who, body, agent_run_id):
        """The runs (stages) of one agent run, in the order they were submitted, and the
        model usage its jobs recorded, per stage and in total (null without a store, or
        when the store cannot be read: the timeline still shows)."""
        caller = self.caller(who)
        runs = self.api.list_runs(caller, agent_run_id, 10_000)
        try:
            usage = await self.api.agent_run_usage(caller, agent_run_id)
        except Exception as e:
            self.log.warn("agent run {id}: cannot read the model usage: {why}",
                          id=agent_run_id, why=f"{type(e).__name__}: {e}")
            usage = None
        return {"agent_run_id": agent_run_id, "runs": runs, "usage": usage}

    @route(PREFIX + "/services")
    def services(self, request, who, body):
        everything = _bool_arg(request, "all")
        return {"services": self.api.list_services(self.caller(who), everything)}

    @route(PREFIX + "/schedules")
    def schedules(self, request, who, body):
        return {"schedules": self.api.list_schedules(self.caller(who))}

    @route(PREFIX + "/store/keys")
    def store_keys(self, request, who, body):
        """One SCAN step: ?pattern=glob&cursor=N&count=M; cursor 0 in the answer is the end."""
        return self.api.store_scan(self.caller(who), _arg(request, "pattern") or "*",
                                   _int_arg(request, "cursor", 0, 0, 2 ** 63),
                                   _int_arg(request, "count", 100, 1, 1000))

    @route(PREFIX + "/store/value")
    def store_value(self, request, who, body):
        key = _arg(request, "key")
        if not key:
            raise BadRequest("query parameter 'key' is required")
        return self.api.store_read(self.caller(who), key)

    # -- changes ---------------------------------------------------------------------------

    @route(PREFIX + "/jobs/<ref>/cancel", "POST", change=True)
    def cancel_job(self, request, who, body, ref):
        caller = self.caller(who)
        self.api.admit(caller, "CANCEL_JOB")
        job = self.api.job_info(caller, ref)  # a job (404 if none), not a run of that name
        return self.api.cancel(caller, job["job_id"])

    @route(PREFIX + "/runs/<run_id>/cancel", "POST", change=True)
    def cancel_run(self, request, who, body, run_id):
        caller = self.caller(who)
        self.api.admit(caller, "CANCEL_JOB")
        self.api.run_info(caller, run_id, jobs=False)  # 404 if there is no such run
        return self.api.cancel(caller, run_id)

    @route(PREFIX + "/gates/<ref>/decide", "POST", change=True)
    def decide(self, request, who, body, ref):
        """{"approved": true|false, "comment": "...", "by": "name"}; 409 if not waiting."""
        caller = self.caller(who)
        self.api.admit(caller, "DECIDE_GATE")
        approved = body.get("approved")
        if not isinstance(approved, bool):
            raise BadRequest("'approved' is required (true or false)")
        comment = body.get("comment", "")
        if not isinstance(comment, str):
            raise BadRequest("'comment' must be a string")
        by = body.get("by", "") or "someone on the dashboard"
        if not isinstance(by, str):
            raise BadRequest("'by' must be a string")
        job = self.api.job_info(caller, ref)
        if job["kind"] != "gate":  # no such gate: not a request the body made bad (400)
            raise NotFound(f"no gate {ref}: {job['job_id']} is a {job['kind']}, not an "
                           "approval gate")
        if job["state"] != "WAITING_APPROVAL":
            raise HttpError("not_waiting", f"gate {job['job_id']} is not waiting for "
                            f"approval (it is {job['state']})")
        return self.api.decide_gate(caller, job["job_id"], approved, by, comment)

    @route(PREFIX + "/services/<name>/restart", "POST", change=True)
    def restart_service(self, request, who, body, name):
        caller = self.caller(who)
        self.api.admit(caller, "RESTART_SERVICE")
        return self.api.restart_service(caller, name)

    @route(PREFIX + "/services/<name>/stop", "POST", change=True)
    def stop_service(self, request, who, body, name):
        caller = self.caller(who)
        self.api.admit(caller, "CANCEL_JOB")
        return self.api.stop_service(caller, name)

    @route(PREFIX + "/workers", "POST", change=True)
    def start_worker(self, request, who, body):
        """{"tags": [...], "slots": N, "name": "..."} (all optional): the master starts a
        local titan-worker; it shows in GET /workers once it registers."""
        return self.api.start_worker(self.caller(who), body.get("tags", []),
                                     body.get("slots"), body.get("name"), by="dashboard")

    @route(PREFIX + "/workers/<name>/drain", "POST", change=True)
    def drain_worker(self, request, who, body, name):
        """No new jobs for the worker (a name or an id); it leaves once what it runs ends."""
        return self.api.drain_worker(self.caller(who), name)

    @route(PREFIX + "/schedules/<schedule_id>", "DELETE", change=True)
    def remove_schedule(self, request, who, body, schedule_id):
        caller = self.caller(who)
        self.api.admit(caller, "REMOVE_SCHEDULE")
        return self.api.remove_schedule(caller, schedule_id)

    # -- pipelines: the constructor (docs/web.md, "Pipelines and drafts") ---------------

    @route(PREFIX + "/pipelines/parse", "POST")
    def parse_pipeline(self, request, who, body):
        """{"yaml": TEXT, "files": {NAME: TEXT}, "name": "FILE.yaml"}: the pipeline as a
        document in Titan's keys; 400 bad_pipeline with what `titan run` would print."""
        return self.api.parse_pipeline(self.caller(who), body.get("yaml"), body.get("files"),
                                       body.get("name"))

    @route(PREFIX + "/pipelines/validate", "POST")
    def validate_pipeline(self, request, who, body):
        """{"document": {...}, "files": {...}}: {"ok", "problems"} as `titan run` judges."""
        return self.api.validate_pipeline(self.caller(who), body.get("document"),
                                          body.get("files"))

    @route(PREFIX + "/pipelines", "POST", change=True)
    def submit_pipeline(self, request, who, body):
        """{"document": {...}, "files": {...}}: a run, or a schedule, as `titan run` does."""
        return self.api.submit_pipeline(self.caller(who), body.get("document"),
                                        body.get("files"))

    @route(PREFIX + "/runs/<run_id>/pipeline")
    def run_pipeline(self, request, who, body, run_id):
        """The run's pipeline (its jobs as they are now) as a document, and its scripts."""
        return self.api.run_pipeline_document(self.caller(who), run_id)

    @route(PREFIX + "/drafts")
    def drafts(self, request, who, body):
        return {"drafts": self.api.list_drafts(self.caller(who))}

    @route(PREFIX + "/drafts/<name>")
    def draft(self, request, who, body, name):
        return self.api.get_draft(self.caller(who), name)

    @route(PREFIX + "/drafts/<name>", "PUT", change=True)
    def put_draft(self, request, who, body, name):
        """{"draft": ANY JSON}: saved (replaced) under the name."""
        if "draft" not in body:
            raise BadRequest("'draft' is required (the constructor's draft, any JSON)")
        return self.api.put_draft(self.caller(who), name, body["draft"])

    @route(PREFIX + "/drafts/<name>", "DELETE", change=True)
    def delete_draft(self, request, who, body, name):
        return self.api.delete_draft(self.caller(who), name)

    # -- live changes (titan/web/events.py) ----------------------------------------------

    @app.route(PREFIX + "/events", branch=True, methods=["GET"], endpoint="events")
    def events_resource(self, request):
        return self._stream(request)

    @app.route(PREFIX + "/jobs/<ref>/log/stream", methods=["GET"], endpoint="log_stream")
    def log_stream(self, request, ref):
        return self._stream(request, ref)

    def _stream(self, request, ref: Optional[str] = None):
        """A Server-Sent Events resource of titan/web/events.py (it checks who asks)."""
        return self.events(ref)

    del route


ROUTES.append(("GET", PREFIX + "/events", "events"))
ROUTES.append(("GET", PREFIX + "/jobs/<ref>/log/stream", "log_stream"))
