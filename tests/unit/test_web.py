"""The web face (titan/web/): HTTP requests to the master's site over StringTransport, with
a fake clock -- auth (login, cookie, bearer, CSRF, viewers), errors, each route's shape."""
from __future__ import annotations

import json
import os
import re
from urllib.parse import quote

from twisted.internet.address import IPv4Address
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.trial.unittest import SynchronousTestCase

from titan.config import Config, MasterConfig, WebConfig
from titan.core import events as ev
from titan.master.api import OPERATOR
from titan.master.service import MasterService
from titan.web.app import ROUTES, WebApp

TOKEN = "sesame"
VIEWER = "just-looking"
PEER = IPv4Address("TCP", "127.0.0.1", 40000)


def seg(ref: str) -> str:
    """A job ref as one path segment (a run's job: RUN%2FNODE)."""
    return quote(ref, safe="")


class Response:
    def __init__(self, raw: bytes) -> None:
        head, _, self.body = raw.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        self.status = int(lines[0].split()[1])
        self.headers: list[tuple[str, str]] = []
        for line in lines[1:]:
            name, _, value = line.partition(":")
            self.headers.append((name.strip().lower(), value.strip()))

    def header(self, name: str) -> list[str]:
        return [v for k, v in self.headers if k == name]

    @property
    def json(self):
        return json.loads(self.body)

    @property
    def error(self) -> str:
        return self.json["error"]["code"]


class WebCase(SynchronousTestCase):
    def setUp(self) -> None:
        self.reactor = MemoryReactorClock()
        self.data_dir = self.mktemp()
        config = Config(token=TOKEN, master=MasterConfig(
            listen="tcp:0:interface=127.0.0.1", data_dir=self.data_dir,
            heartbeat_interval=1.0, heartbeat_timeout=5.0),
            web=WebConfig(listen="tcp:0:interface=127.0.0.1", viewer_tokens=(VIEWER,),
                          session_ttl=600.0, max_body_bytes=4096))
        self.master = MasterService(config, reactor=self.reactor)
        self.master.privilegedStartService()
        self.master.startService()
        self.addCleanup(self.master.stopService)
        self.api = self.master.api
        self.cookie = None  # (sid, csrf) after self.login()

    def request(self, method: str, path: str, body=None, token=None, cookie=None,
                csrf=None, raw: bytes | None = None, headers: dict | None = None) -> Response:
        data = raw if raw is not None else (b"" if body is None else json.dumps(body).encode())
        lines = [f"{method} {path} HTTP/1.0", "Host: 127.0.0.1"]
        if token is not None:
            lines.append(f"Authorization: Bearer {token}")
        if cookie is not None:
            lines.append(f"Cookie: titan_session={cookie}")
        if csrf is not None:
            lines.append(f"X-Titan-CSRF: {csrf}")
        for name, value in (headers or {}).items():
            lines.append(f"{name}: {value}")
        if data or method != "GET":
            lines.append(f"Content-Length: {len(data)}")
        transport = StringTransport(peerAddress=PEER)
        proto = self.master.web.site.buildProtocol(PEER)
        proto.makeConnection(transport)
        proto.dataReceived(("\r\n".join(lines) + "\r\n\r\n").encode() + data)
        for _ in range(3):
            self.reactor.advance(0)  # the records are written; the reply goes out
        return Response(transport.value())

    def get(self, path: str, **kw) -> Response:
        return self.request("GET", path, token=kw.pop("token", TOKEN), **kw)

    def post(self, path: str, body=None, **kw) -> Response:
        return self.request("POST", path, body, token=kw.pop("token", TOKEN), **kw)

    def login(self, token: str = TOKEN) -> tuple[str, str]:
        r = self.request("POST", "/api/v1/login", {"token": token})
        self.assertEqual(r.status, 200, r.body)
        [cookie] = r.header("set-cookie")
        sid = re.match(r"titan_session=([^;]+)", cookie).group(1)
        return sid, r.json["csrf"]

    def pending_job(self) -> str:
        return self.settle(self.api.submit(OPERATOR, {"command": ["true"]}))["job_id"]

    def settle(self, d):
        self.reactor.advance(0)
        return self.successResultOf(d)

    def diamond(self, name: str = "d", gate: bool = False) -> str:
        jobs = [{"id": "a", "command": ["true"]},
                {"id": "b", "command": ["true"], "depends_on": ["a"]},
                {"id": "c", "command": ["true"], "depends_on": ["a"]},
                {"id": "d", "command": ["true"], "depends_on": ["b", "c"]}]
        if gate:
            jobs = [{"id": "ok", "kind": "gate", "message": "go?", "timeout": 600}] + \
                [dict(j, depends_on=j.get("depends_on", ["ok"])) for j in jobs]
        return self.settle(self.api.submit_dag(OPERATOR, {"name": name, "jobs": jobs}))[
            "run_id"]


class AuthTests(WebCase):
    def test_no_credentials_or_a_wrong_token_is_401(self):
        for r in (self.request("GET", "/api/v1/cluster"),
                  self.get("/api/v1/cluster", token="wrong"),
                  self.get("/api/v1/cluster", token=""),
                  self.request("GET", "/api/v1/cluster", cookie="made-up"),
                  self.request("GET", "/api/v1/cluster", headers={
                      "Authorization": f"Basic {TOKEN}"})):
            self.assertEqual((r.status, r.error), (401, "unauthorized"), r.body)
            self.assertEqual(r.header("content-type"), ["application/json; charset=utf-8"])
        self.assertEqual(self.get("/api/v1/cluster").status, 200)

    def test_login_sets_a_strict_http_only_cookie(self):
        r = self.request("POST", "/api/v1/login", {"token": "wrong"})
        self.assertEqual((r.status, r.error, r.header("set-cookie")), (401, "unauthorized", []))
        r = self.request("POST", "/api/v1/login", {"token": TOKEN})
        self.assertEqual((r.status, r.json["role"]), (200, "operator"))
        [cookie] = r.header("set-cookie")
        self.assertIn("HttpOnly", cookie)
        self.assertIn("SameSite=strict", cookie)
        self.assertIn("Path=/", cookie)
        self.assertNotIn(TOKEN, cookie)
        sid = re.match(r"titan_session=([^;]+)", cookie).group(1)
        r = self.request("GET", "/api/v1/session", cookie=sid)
        self.assertEqual((r.status, r.json["csrf"]), (200, self.request(
            "GET", "/api/v1/session", cookie=sid).json["csrf"]))

    def test_a_cookie_change_needs_the_csrf_header(self):
        sid, csrf = self.login()
        job_id = self.pending_job()
        for wrong in (None, "forged"):
            r = self.request("POST", f"/api/v1/jobs/{job_id}/cancel", cookie=sid, csrf=wrong)
            self.assertEqual((r.status, r.error), (403, "csrf"))
            self.assertEqual(self.master.scheduler.jobs[job_id].state.value, "PENDING")
        r = self.request("POST", f"/api/v1/jobs/{job_id}/cancel", cookie=sid, csrf=csrf)
        self.assertEqual((r.status, r.json["state"]), (200, "CANCELLED"))

    def test_a_bearer_change_needs_no_csrf_header(self):
        job_id = self.pending_job()
        r = self.post(f"/api/v1/jobs/{job_id}/cancel")
        self.assertEqual((r.status, r.json["cancelled"]), (200, True))

    def test_a_viewer_reads_and_changes_nothing(self):
        job_id = self.pending_job()
        self.assertEqual(self.get(f"/api/v1/jobs/{job_id}", token=VIEWER).status, 200)
        r = self.post(f"/api/v1/jobs/{job_id}/cancel", token=VIEWER)
        self.assertEqual((r.status, r.error), (403, "read_only"))
        sid, csrf = self.login(VIEWER)
        self.assertEqual(self.request("GET", "/api/v1/session", cookie=sid).json["role"],
                         "viewer")
        r = self.request("POST", f"/api/v1/jobs/{job_id}/cancel", cookie=sid, csrf=csrf)
        self.assertEqual((r.status, r.error), (403, "read_only"))
        self.assertEqual(self.master.scheduler.jobs[job_id].state.value, "PENDING")

    def test_logout_and_expiry_end_a_session(self):
        sid, _ = self.login()
        self.request("POST", "/api/v1/logout", cookie=sid)
        self.assertEqual(self.request("GET", "/api/v1/workers", cookie=sid).status, 401)
        sid, _ = self.login()
        self.reactor.advance(599)
        self.assertEqual(self.request("GET", "/api/v1/workers", cookie=sid).status, 200)
        self.reactor.advance(2)
        self.assertEqual(self.request("GET", "/api/v1/workers", cookie=sid).status, 401)

    def test_the_login_link_works_once(self):
        with open(os.path.join(self.data_dir, "web.login")) as f:
            code = f.read().strip()
        self.assertEqual(os.stat(os.path.join(self.data_dir, "web.login")).st_mode & 0o777,
                         0o600)
        self.assertNotEqual(code, TOKEN)
        r = self.request("GET", f"/login?code={code}")
        self.assertEqual((r.status, r.header("location")), (303, ["/"]))
        sid = re.match(r"titan_session=([^;]+)", r.header("set-cookie")[0]).group(1)
        self.assertEqual(self.request("GET", "/api/v1/session", cookie=sid).json["role"],
                         "operator")
        r = self.request("GET", f"/login?code={code}")
        self.assertEqual((r.status, r.header("set-cookie")), (401, []))
        code = self.post("/api/v1/login-codes").json["code"]
        self.assertEqual(self.request("POST", "/api/v1/login", {"code": code}).status, 200)
        self.assertEqual(self.request("POST", "/api/v1/login", {"code": code}).status, 401)


class ErrorTests(WebCase):
    def test_unknown_route_and_method(self):
        r = self.get("/api/v1/nothing")
        self.assertEqual((r.status, r.error), (404, "no_route"))
        r = self.request("DELETE", "/api/v1/workers", token=TOKEN)
        self.assertEqual(r.status, 405)
        self.assertEqual(r.error, "method")
        self.assertEqual(r.header("allow"), ["GET, HEAD, POST"])  # schemathesis: RFC 9110
        r = self.request("TRACE", "/api/v1/jobs/x%2Fy/cancel", token=TOKEN)
        self.assertEqual((r.status, r.header("allow")), (405, ["POST"]))

    def test_malformed_json_and_bad_fields_are_400_naming_them(self):
        r = self.request("POST", "/api/v1/login", raw=b"{not json")
        self.assertEqual((r.status, r.error), (400, "bad_request"))
        self.assertIn("not valid JSON", r.json["error"]["message"])
        r = self.request("POST", "/api/v1/login", raw=b"[1]")
        self.assertIn("JSON object", r.json["error"]["message"])
        run_id = self.diamond(gate=True)
        r = self.post(f"/api/v1/gates/{run_id}%2Fok/decide", {"approved": "yes"})
        self.assertEqual(r.status, 400)
        self.assertIn("'approved'", r.json["error"]["message"])
        r = self.get("/api/v1/runs?limit=lots")
        self.assertEqual(r.status, 400)
        self.assertIn("'limit'", r.json["error"]["message"])

    def test_an_oversized_body_is_413(self):
        r = self.request("POST", "/api/v1/login", {"token": "x" * 5000})
        self.assertEqual((r.status, r.error), (413, "too_large"))

    def test_deciding_a_gate_not_waiting_is_409(self):
        run_id = self.diamond(gate=True)
        r = self.post(f"/api/v1/gates/{run_id}%2Fok/decide", {"approved": True, "comment": "go"})
        self.assertEqual((r.status, r.json["state"]), (200, "COMPLETED"))
        self.assertEqual(self.master.scheduler.jobs[f"{run_id}/ok"].decision["comment"], "go")
        r = self.post(f"/api/v1/gates/{run_id}%2Fok/decide", {"approved": False})
        self.assertEqual((r.status, r.error), (409, "not_waiting"))

    def test_query_parameters_not_as_documented_are_400(self):
        # tests/acceptance/test_web_schema.py found these taken as defaults (a 200).
        for path in ("/api/v1/runs?cursor=", "/api/v1/runs?limit=%201", "/api/v1/runs?limit=1_0",
                     "/api/v1/runs?state=",
                     "/api/v1/gates?decided=null", "/api/v1/services?all=1"):
            r = self.get(path)
            self.assertEqual((r.status, r.error), (400, "bad_request"), path)
        for path in ("/api/v1/runs?limit=1", "/api/v1/gates?decided=false",
                     "/api/v1/services?all=true"):
            self.assertEqual(self.get(path).status, 200, path)

    def test_deciding_a_job_that_is_not_a_gate_is_404(self):
        run_id = self.diamond(gate=True)
        r = self.post(f"/api/v1/gates/{run_id}%2Fa/decide", {"approved": True})
        self.assertEqual((r.status, r.error), (404, "not_found"))
        self.assertIn("not an approval gate", r.json["error"]["message"])

    def test_unknown_things_are_404(self):
        for path in ("/api/v1/jobs/nope", "/api/v1/runs/nope", "/api/v1/agent-runs/nope"):
            self.assertEqual(self.get(path).status, 404, path)
        # A parameter that is not UTF-8 is an unknown thing, in JSON, not a crash.
        r = self.get("/api/v1/jobs/%FF/logs")
        self.assertEqual((r.status, r.error), (404, "not_found"))
        self.assertEqual(self.post("/api/v1/runs/nope/cancel").status, 404)


class RouteTests(WebCase):
    def test_cluster_and_workers(self):
        self.master.handle(ev.WorkerJoined("w1", "w1", "10.0.0.5", frozenset({"GPU"}), 2))
        job_id = self.pending_job()
        self.reactor.advance(0)
        self.assertEqual(self.get("/api/v1/cluster").json["slots"], 2)
        [w] = self.get("/api/v1/workers").json["workers"]
        self.assertEqual((w["name"], w["host"], w["tags"], w["slots"], w["busy"], w["jobs"],
                          w["state"], w["spawned_by"]),
                         ("w1", "10.0.0.5", ["GPU"], 2, 1, [job_id], "ALIVE", None))

    def test_runs_paged_and_one_run_with_edges(self):
        ids = [self.diamond(f"r{i}") for i in range(3)]
        page = self.get("/api/v1/runs?limit=2").json
        self.assertEqual([r["run_id"] for r in page["runs"]], [ids[2], ids[1]])
        page = self.get(f"/api/v1/runs?limit=2&cursor={page['next_cursor']}").json
        self.assertEqual(([r["run_id"] for r in page["runs"]], page["next_cursor"]),
                         ([ids[0]], None))
        self.assertEqual([r["run_id"] for r in self.get("/api/v1/runs?name=r1").json["runs"]],
                         [ids[1]])
        run = self.get(f"/api/v1/runs/{ids[0]}").json
        self.assertEqual((run["total"], len(run["jobs"]), sorted(map(tuple, run["edges"]))),
                         (4, 4, [("a", "b"), ("a", "c"), ("b", "d"), ("c", "d")]))
        run = self.get(f"/api/v1/runs/{ids[0]}?offset=3&limit=5").json
        self.assertEqual([j["node"] for j in run["jobs"]], ["d"])

    def test_a_job_and_its_log_by_offsets(self):
        run_id = self.diamond()
        key = f"{run_id}/a"
        self.master.handle(ev.WorkerJoined("w1", "w1", "127.0.0.1", frozenset(), 4))
        self.reactor.advance(0)
        job = self.get(f"/api/v1/jobs/{seg(key)}").json
        self.assertEqual((job["job_id"], job["state"], job["worker"], job["command"]),
                         (key, "RUNNING", "w1", ["true"]))
        self.api.job_logs(key, [(1, "héllo\n".encode()), (1, b"world\n")], 1)
        log = self.get(f"/api/v1/jobs/{seg(key)}/logs?offset=0&limit=2").json
        # 2 bytes would cut the é in two: the page ends before it.
        self.assertEqual((log["data"], log["next_offset"], log["done"]), ("h", 1, False))
        log = self.get(f"/api/v1/jobs/{seg(key)}/logs?offset=1&limit=100").json
        self.assertEqual((log["data"], log["next_offset"]), ("éllo\nworld\n", 13))
        self.assertEqual(self.get(f"/api/v1/jobs/{seg(key)}/logs?limit=0").status, 400)

    def test_gates_inbox_and_decided(self):
        run_id = self.diamond(gate=True)
        [gate] = self.get("/api/v1/gates").json["gates"]
        self.assertEqual((gate["run_id"], gate["question"], gate["time_left"]),
                         (run_id, "go?", 600))
        self.post(f"/api/v1/gates/{run_id}%2Fok/decide", {"approved": False, "comment": "no",
                                                        "by": "ann"})
        self.assertEqual(self.get("/api/v1/gates").json["gates"], [])
        [done] = self.get("/api/v1/gates?decided=true").json["gates"]
        self.assertEqual((done["decision"]["by"], done["decision"]["comment"]), ("ann", "no"))
        self.assertIn("over HTTP", done["decision"]["via"])

    def test_the_inbox_lists_waiting_gates_of_every_run_in_submission_order(self):
        first = self.diamond("g1", gate=True)
        self.diamond("plain")
        third = self.diamond("g3", gate=True)
        # A gate added later to the first run, and one still behind a pending parent.
        self.settle(self.api.add_jobs(OPERATOR, first, [
            {"id": "late", "kind": "gate", "message": "late?"},
            {"id": "behind", "kind": "gate", "message": "not yet", "depends_on": ["d"]}]))
        decided = self.diamond("g4", gate=True)
        self.post(f"/api/v1/gates/{decided}%2Fok/decide", {"approved": True})
        gates = self.get("/api/v1/gates").json["gates"]
        self.assertEqual([(g["job_id"], g["state"]) for g in gates],
                         [(f"{first}/ok", "WAITING_APPROVAL"),
                          (f"{third}/ok", "WAITING_APPROVAL"),
                          (f"{first}/late", "WAITING_APPROVAL")])
        self.assertEqual([g["job_id"] for g in self.get("/api/v1/gates?limit=1").json[
            "gates"]], [f"{first}/ok"])
        self.assertEqual([g["job_id"] for g in self.get("/api/v1/gates?decided=true").json[
            "gates"]], [f"{decided}/ok"])

    def test_an_agent_runs_stages_paged_newest_first(self):
        ids = []
        for i in range(5):  # stages of ag1 between runs of another agent run and none
            agent = {0: "ag1", 2: "ag1", 4: "ag1", 1: "ag2"}.get(i)
            body = {"name": f"s{i}", "jobs": [{"id": "a", "command": ["true"]}]}
            if agent:
                body.update(agent_run_id=agent, stage=f"S{i}")
            ids.append(self.settle(self.api.submit_dag(OPERATOR, body))["run_id"])
        page = self.get("/api/v1/runs?agent_run_id=ag1&limit=2").json
        self.assertEqual([r["run_id"] for r in page["runs"]], [ids[4], ids[2]])
        page = self.get(f"/api/v1/runs?agent_run_id=ag1&limit=2&cursor="
                        f"{page['next_cursor']}").json
        self.assertEqual(([r["run_id"] for r in page["runs"]], page["next_cursor"]),
                         ([ids[0]], None))
        self.assertEqual(self.get("/api/v1/runs?agent_run_id=nope").json["runs"], [])
        self.assertEqual([r["run_id"] for r in self.get("/api/v1/runs").json["runs"]],
                         ids[::-1])

    def test_cancel_a_run(self):
        run_id = self.diamond()
        r = self.post(f"/api/v1/runs/{run_id}/cancel")
        self.assertEqual((r.status, r.json["cancelled"]), (200, True))
        self.assertEqual(self.get(f"/api/v1/runs/{run_id}").json["state"], "CANCELLED")

    def test_agent_run_services_and_schedules(self):
        self.settle(self.api.submit_dag(OPERATOR, {"name": "plan", "agent_run_id": "ag1",
                                                   "stage": "PLAN", "jobs": [
                                                       {"id": "a", "command": ["true"]}]}))
        [stage] = self.get("/api/v1/agent-runs/ag1").json["runs"]
        self.assertEqual((stage["stage"], stage["state"]), ("PLAN", "RUNNING"))
        self.assertEqual(self.get("/api/v1/services").json, {"services": []})
        self.assertEqual(self.post("/api/v1/services/web/restart").status, 404)
        self.assertEqual(self.post("/api/v1/services/web/stop").status, 404)
        self.settle(self.api.submit_dag(OPERATOR, {"name": "nightly", "schedule": "0 3 * * *",
                                                   "jobs": [{"id": "a", "command": ["true"]}]}))
        [sched] = self.get("/api/v1/schedules").json["schedules"]
        self.assertEqual(sched["schedule_id"], "nightly")
        r = self.request("DELETE", "/api/v1/schedules/nightly", token=TOKEN)
        self.assertEqual((r.status, r.json["state"]), (200, "REMOVED"))
        self.assertEqual(self.get("/api/v1/schedules").json, {"schedules": []})

    def test_the_store_without_one_is_503(self):
        r = self.get("/api/v1/store/keys?pattern=titan:*")
        self.assertEqual((r.status, r.error), (503, "no_store"))
        self.assertEqual(self.get("/api/v1/store/value").status, 400)


class JobRefTests(WebCase):
    """A job ref is one path segment: nodes named like the action routes are never shadowed."""

    def test_nodes_named_logs_and_cancel_are_not_taken_for_actions(self):
        run_id = self.settle(self.api.submit_dag(OPERATOR, {"name": "acts", "jobs": [
            {"id": "logs", "command": ["true"]}, {"id": "cancel", "command": ["true"]},
            {"id": "decide", "kind": "gate", "message": "go?"}]}))["run_id"]
        self.master.handle(ev.WorkerJoined("w1", "w1", "127.0.0.1", frozenset(), 4))
        self.reactor.advance(0)
        self.api.job_logs(f"{run_id}/logs", [(1, b"from logs\n")], 1)
        self.api.job_logs(f"{run_id}/cancel", [(1, b"from cancel\n")], 1)
        for node in ("logs", "cancel"):
            job = self.get(f"/api/v1/jobs/{run_id}%2F{node}").json
            self.assertEqual((job["job_id"], job["state"]), (f"{run_id}/{node}", "RUNNING"))
            log = self.get(f"/api/v1/jobs/{run_id}%2F{node}/logs").json
            self.assertEqual(log["data"], f"from {node}\n")
        # Cancelling the node "logs" cancels that job alone, then "cancel" too.
        r = self.post(f"/api/v1/jobs/{run_id}%2Flogs/cancel")
        self.assertEqual((r.status, r.json["cancelled"]), (200, True))
        states = lambda: {n: self.master.scheduler.jobs[f"{run_id}/{n}"].state.value  # noqa
                          for n in ("logs", "cancel")}
        self.assertEqual(states(), {"logs": "CANCELLED", "cancel": "RUNNING"})
        self.assertEqual(self.post(f"/api/v1/jobs/{run_id}%2Fcancel/cancel").status, 200)
        self.assertEqual(states(), {"logs": "CANCELLED", "cancel": "CANCELLED"})
        # A gate named "decide" is decided at /gates/RUN%2Fdecide/decide (a lowercase %2f
        # too); the encoded slash reaches the master as a slash.
        self.assertEqual(self.get(f"/api/v1/jobs/{run_id}%2fdecide").json["state"],
                         "WAITING_APPROVAL")
        r = self.post(f"/api/v1/gates/{run_id}%2fdecide/decide", {"approved": True})
        self.assertEqual((r.status, r.json["job_id"], r.json["state"]),
                         (200, f"{run_id}/decide", "COMPLETED"))

    def test_an_unencoded_slash_is_never_a_node_of_the_run(self):
        run_id = self.diamond()
        # /jobs/RUN/logs is the log of a job "RUN" (there is none), not the node "logs".
        r = self.get(f"/api/v1/jobs/{run_id}/logs")
        self.assertEqual((r.status, r.error), (404, "not_found"))
        r = self.get(f"/api/v1/jobs/{run_id}/a")
        self.assertEqual((r.status, r.error), (404, "no_route"))
        self.assertIn(f"/api/v1/jobs/RUN%2FNODE", r.json["error"]["message"])
        self.assertEqual(self.get(f"/api/v1/jobs/{run_id}%2Fa").status, 200)


class EventsMountTests(WebCase):
    """/api/v1/events and a job's log stream are titan/web/events.py's, mounted here."""

    def test_the_streams_are_mounted_behind_the_same_auth(self):
        job_id = self.pending_job()
        for path in ("/api/v1/events", f"/api/v1/jobs/{job_id}/log/stream"):
            self.assertEqual(self.request("GET", path).status, 401, path)
            r = self.get(path)
            self.assertEqual(r.status, 200, path)
            self.assertTrue(r.header("content-type")[0].startswith("text/event-stream"), path)
            sid, _ = self.login()
            self.assertEqual(self.request("GET", path, cookie=sid).status, 200, path)


class OpenApiTests(WebCase):
    def test_every_route_is_documented_and_every_documented_path_served(self):
        doc = self.request("GET", "/api/v1/openapi.json").json
        self.assertEqual(doc["openapi"], "3.1.0")
        documented = {(method.upper(), path) for path, ops in doc["paths"].items()
                      for method in ops}
        served = set()
        for rule in WebApp.app.url_map.iter_rules():
            if rule.endpoint.endswith("_branch"):
                continue  # klein's catch-all below a branch route (the events stream)
            path = re.sub(r"<(?:\w+:)?(\w+)>", r"{\1}", rule.rule)
            for method in rule.methods - {"HEAD", "OPTIONS"}:
                served.add((method, path))
        self.assertEqual(documented, served)
        self.assertEqual({(m, re.sub(r"<(?:\w+:)?(\w+)>", r"{\1}", p)) for m, p, _ in ROUTES},
                         served)
        for path, ops in doc["paths"].items():
            for op in ops.values():
                names = {p["name"] for p in op.get("parameters", ()) if p["in"] == "path"}
                self.assertEqual(names, set(re.findall(r"{(\w+)}", path)), path)

    def test_answers_are_what_the_document_says(self):
        """The components' schemas hold for real answers (schemathesis checks every route
        against a live master in tests/acceptance/test_web_schema.py; this is the quick
        guard of the schemas it made true)."""
        import jsonschema_rs
        from titan.web.openapi import SCHEMAS

        def check(name: str, value) -> None:
            validator = jsonschema_rs.Draft202012Validator(
                {"$ref": f"#/components/schemas/{name}", "components": {"schemas": SCHEMAS}})
            errors = [f"{e.message} at {list(e.instance_path)}"
                      for e in validator.iter_errors(value)]
            self.assertEqual(errors, [], f"{name}: {value}")

        self.master.handle(ev.WorkerJoined("w1", "w1", "10.0.0.5", frozenset({"GPU"}), 2))
        run_id = self.diamond(gate=True)
        self.reactor.advance(0)
        check("Cluster", self.get("/api/v1/cluster").json)
        [worker] = self.get("/api/v1/workers").json["workers"]
        check("Worker", worker)
        [run] = self.get("/api/v1/runs").json["runs"]
        check("Run", run)
        check("RunGraph", self.get(f"/api/v1/runs/{run_id}").json)
        [gate] = self.get("/api/v1/gates").json["gates"]
        check("Gate", gate)
        check("Job", self.get(f"/api/v1/jobs/{run_id}%2Fok").json)
        check("Logs", self.get(f"/api/v1/jobs/{run_id}%2Fa/logs").json)
        check("Job", self.post(f"/api/v1/gates/{run_id}%2Fok/decide",
                               {"approved": True, "comment": "go"}).json)
        [decided] = self.get("/api/v1/gates?decided=true").json["gates"]
        check("Gate", decided)
        check("RunCancelled", self.post(f"/api/v1/runs/{run_id}/cancel").json)
        check("JobCancelled", self.post(f"/api/v1/jobs/{self.pending_job()}/cancel").json)
        check("Session", self.get("/api/v1/session").json)
        check("LoginCode", self.post("/api/v1/login-codes").json)
        check("Error", self.get("/api/v1/runs/nope").json)
