"""The web API (titan/web/, docs/web.md) with treq against a live master and workers:
log in, read what the SDK submitted, read a log by offsets, approve a gate, cancel a job;
browse the store the master uses (a real titan-store), drive a live service over HTTP."""
from __future__ import annotations

import socket
import sys
import time

import treq
from twisted.internet import defer
from twisted.trial.unittest import TestCase

from tests.acceptance import test_legacy_store as legacy  # (the module: not its tests)
from tests.acceptance.helpers import ClusterTestCase
from titan.testing.cluster import free_port


def _get(url: str, **kw) -> defer.Deferred:
    # A connection per request: none is left open in the pool when a test ends.
    return treq.get(url, persistent=False, **kw)


def _post(url: str, **kw) -> defer.Deferred:
    return treq.post(url, persistent=False, **kw)


def _py(code: str) -> list[str]:
    return [sys.executable, "-c", code]


class WebCase(ClusterTestCase, TestCase):
    """What the classes below share: requests to the cluster's web listener."""
    workers = 1
    timeout = 120

    def url(self, path: str) -> str:
        return self.cluster.web_url + path

    def bearer(self) -> dict:
        return {"Authorization": f"Bearer {self.cluster.token}"}

    @defer.inlineCallbacks
    def get(self, path: str, **kw):
        response = yield _get(self.url(path), headers=kw.pop("headers", self.bearer()),
                                  **kw)
        body = yield treq.json_content(response)
        return response.code, body

    @defer.inlineCallbacks
    def login(self):
        """(cookies, csrf) of a browser session opened with the cluster token."""
        response = yield _post(self.url("/api/v1/login"), json={"token": self.cluster.token})
        body = yield treq.json_content(response)
        self.assertEqual(response.code, 200, body)
        return response.cookies(), body["csrf"]

    @defer.inlineCallbacks
    def request(self, method: str, path: str, **kw):
        """(status, JSON body) of any method, with the cluster token."""
        response = yield treq.request(method, self.url(path), persistent=False,
                                      headers=kw.pop("headers", self.bearer()), **kw)
        body = yield treq.json_content(response)
        return response.code, body

    def pause(self, seconds: float) -> defer.Deferred:
        from twisted.internet import reactor
        from twisted.internet.task import deferLater
        return deferLater(reactor, seconds, lambda: None)


class WebApiTests(WebCase):
    @defer.inlineCallbacks
    def test_login_with_the_token_and_refusal_of_a_wrong_one(self):
        response = yield _post(self.url("/api/v1/login"), json={"token": "wrong"})
        body = yield treq.json_content(response)
        self.assertEqual((response.code, body["error"]["code"]), (401, "unauthorized"))
        code, body = yield self.get("/api/v1/workers", headers={})
        self.assertEqual(code, 401)
        cookies, csrf = yield self.login()
        [cookie] = response_cookie = [c for c in cookies if c.name == "titan_session"]
        self.assertTrue(response_cookie and cookie.has_nonstandard_attr("HttpOnly"))
        code, body = yield self.get("/api/v1/workers", headers={}, cookies=cookies)
        self.assertEqual((code, [w["name"] for w in body["workers"]]), (200, ["w1"]))

    @defer.inlineCallbacks
    def test_a_diamond_from_the_sdk_listed_read_and_its_log_by_offsets(self):
        with self.cluster.client() as c:
            run_id = c.submit_dag({"name": "webdiamond", "jobs": [
                {"id": "a", "command": _py("print('alpha-line'); print('beta-line')")},
                {"id": "b", "command": ["true"], "depends_on": ["a"]},
                {"id": "c", "command": ["true"], "depends_on": ["a"]},
                {"id": "d", "command": ["true"], "depends_on": ["b", "c"]}]})["run_id"]
            self.assertEqual(c.wait_run(run_id, timeout=60)["state"], "COMPLETED")
        code, page = yield self.get("/api/v1/runs?name=webdiamond")
        self.assertEqual([r["run_id"] for r in page["runs"]], [run_id])
        self.assertEqual(page["runs"][0]["counts"], {"COMPLETED": 4})
        code, run = yield self.get(f"/api/v1/runs/{run_id}")
        self.assertEqual(sorted(map(tuple, run["edges"])),
                         [("a", "b"), ("a", "c"), ("b", "d"), ("c", "d")])
        self.assertEqual({j["state"] for j in run["jobs"]}, {"COMPLETED"})
        code, job = yield self.get(f"/api/v1/jobs/{run_id}%2Fa")
        self.assertEqual((job["state"], job["exit_code"], job["worker"]), ("COMPLETED", 0, "w1"))
        code, first = yield self.get(f"/api/v1/jobs/{run_id}%2Fa/logs?offset=0&limit=6")
        self.assertEqual((first["data"], first["next_offset"], first["done"]),
                         ("alpha-", 6, False))
        code, rest = yield self.get(f"/api/v1/jobs/{run_id}%2Fa/logs?offset=6")
        self.assertEqual((rest["data"], rest["done"]), ("line\nbeta-line\n", True))

    @defer.inlineCallbacks
    def test_a_script_job_names_its_file_apart_from_its_arguments(self):
        from titan.sdk import Pipeline
        p = Pipeline("scripted")
        p.script("load", "load.py", "import sys; print(sys.argv[1:])", args=["--fast"])
        with self.cluster.client() as c:
            run_id = c.submit(p)
            self.assertEqual(c.wait_run(run_id, timeout=60)["state"], "COMPLETED")
        code, job = yield self.get(f"/api/v1/jobs/{run_id}%2Fload")
        self.assertEqual((code, job["file"], job["command"]), (200, "load.py",
                                                                ["load.py", "--fast"]))
        code, plain = yield self.get(f"/api/v1/jobs/{run_id}%2Fload/logs")
        self.assertEqual(plain["data"], "['--fast']\n")

    @defer.inlineCallbacks
    def test_agent_runs_listed_latest_first_with_their_stages(self):
        with self.cluster.client() as c:
            for agent, stage in (("ar-old", "PLAN"), ("ar-new", "PLAN"), ("ar-new", "EVAL")):
                run_id = c.submit_dag({"name": f"{agent}-{stage}", "agent_run_id": agent,
                                       "stage": stage, "jobs": [{"id": "t",
                                                                 "command": ["true"]}]})
                c.wait_run(run_id["run_id"], timeout=60)
        code, body = yield self.get("/api/v1/agent-runs")
        self.assertEqual(code, 200, body)
        mine = [a for a in body["agent_runs"] if a["agent_run_id"].startswith("ar-")]
        self.assertEqual([(a["agent_run_id"], a["runs"], a["state"],
                           [(st["stage"], st["name"], st["state"]) for st in a["stages"]])
                          for a in mine],
                         [("ar-new", 2, "COMPLETED", [("PLAN", "ar-new-PLAN", "COMPLETED"),
                                                      ("EVAL", "ar-new-EVAL", "COMPLETED")]),
                          ("ar-old", 1, "COMPLETED", [("PLAN", "ar-old-PLAN", "COMPLETED")])])
        self.assertGreaterEqual(mine[0]["finished_at"], mine[0]["started_at"])
        code, body = yield self.get("/api/v1/agent-runs?limit=0")
        self.assertEqual((code, body["error"]["code"]), (400, "bad_request"))
        # This cluster has no store: an agent run's model usage is null, not an error,
        # and `titan runs` shows the stages alone.
        code, body = yield self.get("/api/v1/agent-runs/ar-new")
        self.assertEqual((code, [r["stage"] for r in body["runs"]], body["usage"]),
                         (200, ["PLAN", "EVAL"], None), body)
        done = self.titan("runs", "ar-new")
        self.assertEqual((done.returncode, done.stderr), (0, b""))
        self.assertIn("ar-new-EVAL", done.stdout.decode())
        self.assertNotIn("MODEL USAGE", done.stdout.decode())

    @defer.inlineCallbacks
    def test_approving_a_gate_over_http_lets_the_run_go_on(self):
        with self.cluster.client() as c:
            run_id = c.submit_dag({"name": "webgate", "jobs": [
                {"id": "ok", "kind": "gate", "message": "ship?"},
                {"id": "ship", "command": ["true"], "depends_on": ["ok"]}]})["run_id"]
        deadline = time.monotonic() + 30
        while True:
            code, inbox = yield self.get("/api/v1/gates")
            mine = [g for g in inbox["gates"] if g["run_id"] == run_id]
            if mine or time.monotonic() > deadline:
                break
            yield self.pause(0.1)
        self.assertEqual([(g["question"], g["state"]) for g in mine], [("ship?", "WAITING_APPROVAL")])
        cookies, csrf = yield self.login()
        response = yield _post(self.url(f"/api/v1/gates/{run_id}%2Fok/decide"),
                                   json={"approved": True, "comment": "lgtm", "by": "ann"},
                                   cookies=cookies, headers={"X-Titan-CSRF": csrf})
        body = yield treq.json_content(response)
        self.assertEqual((response.code, body["state"]), (200, "COMPLETED"))
        with self.cluster.client() as c:
            run = c.wait_run(run_id, timeout=60)
        self.assertEqual(run["state"], "COMPLETED")
        self.assertEqual(c_job_decision(self.cluster, f"{run_id}/ok")["comment"], "lgtm")
        response = yield _post(self.url(f"/api/v1/gates/{run_id}%2Fok/decide"),
                                   json={"approved": False}, headers=self.bearer())
        self.assertEqual(response.code, 409)
        yield response.content()

    @defer.inlineCallbacks
    def test_cancelling_a_running_job_over_http(self):
        with self.cluster.client() as c:
            job_id = c.submit(["sleep", "60"])
            self.wait_for(lambda: c.status(job_id) == "RUNNING", what="the job to run")
        response = yield _post(self.url(f"/api/v1/jobs/{job_id}/cancel"),
                                   headers=self.bearer())
        body = yield treq.json_content(response)
        self.assertEqual((response.code, body["cancelled"]), (200, True))
        with self.cluster.client() as c:
            self.assertEqual(c.wait(job_id, timeout=30)["state"], "CANCELLED")


class WebStoreAndServiceTests(legacy.WithStore, WebCase):
    """A master whose store is a real titan-store (as in test_legacy_store), one worker."""

    def redis(self, *args: str) -> str:
        return legacy.redis_cli(self.store_port, *args)

    @defer.inlineCallbacks
    def test_store_keys_of_each_type_paged_with_type_ttl_and_value_read_only(self):
        with self.cluster.client() as c:  # through the master, as a task would
            c.store_put("webst:str", "héllo", ex=300)
            c.store_sadd("webst:set", "b")
            c.store_sadd("webst:set", "a")
        self.assertEqual(self.redis("HSET", "webst:hash", "f1", "v1", "f2", "v2"), "2\n")
        self.assertEqual(self.redis("RPUSH", "webst:list", "x", "y", "z"), "3\n")
        fillers = [f"webst:n:{i}" for i in range(20)]
        self.assertEqual(self.redis("MSET", *[x for k in fillers for x in (k, "1")]), "OK\n")
        self.redis("SET", "other:key", "not matched")
        # Page through webst:* a few keys at a time until the cursor comes back 0.
        seen: dict = {}
        cursor, pages = 0, 0
        while True:
            code, page = yield self.get(f"/api/v1/store/keys?pattern=webst:*&count=5"
                                        f"&cursor={cursor}")
            self.assertEqual(code, 200, page)
            pages += 1
            for item in page["keys"]:
                seen[item["key"]] = item
            cursor = page["cursor"]
            if cursor == 0 or pages > 100:
                break
        self.assertEqual(cursor, 0)
        self.assertGreater(pages, 1)  # really paged, not every key in one answer
        self.assertEqual(set(seen), {"webst:str", "webst:set", "webst:hash", "webst:list",
                                     *fillers})
        self.assertEqual({k: seen[k]["type"] for k in ("webst:str", "webst:set",
                                                       "webst:hash", "webst:list")},
                         {"webst:str": "string", "webst:set": "set", "webst:hash": "hash",
                          "webst:list": "list"})
        self.assertTrue(0 < seen["webst:str"]["ttl"] <= 300, seen["webst:str"])
        self.assertEqual(seen["webst:hash"]["ttl"], -1)
        values = {}
        for key in ("webst:str", "webst:set", "webst:hash", "webst:list"):
            code, got = yield self.get(f"/api/v1/store/value?key={key}")
            self.assertEqual((code, got["key"]), (200, key), got)
            values[key] = (got["type"], got["value"])
        self.assertEqual(values, {"webst:str": ("string", "héllo"),
                                  "webst:set": ("set", ["a", "b"]),
                                  "webst:hash": ("hash", {"f1": "v1", "f2": "v2"}),
                                  "webst:list": ("list", ["x", "y", "z"])})
        code, got = yield self.get("/api/v1/store/value?key=webst:none")
        self.assertEqual((code, got["error"]["code"]), (404, "not_found"))
        # Read-only: no method writes (405), and nothing changed in the store.
        for method, path in (("POST", "/api/v1/store/value?key=webst:str"),
                             ("PUT", "/api/v1/store/value?key=webst:str"),
                             ("DELETE", "/api/v1/store/value?key=webst:str"),
                             ("DELETE", "/api/v1/store/keys?pattern=webst:*")):
            code, got = yield self.request(method, path, json={"value": "overwritten"})
            self.assertEqual((code, got["error"]["code"]), (405, "method"), (method, path))
        self.assertEqual(self.redis("GET", "webst:str"), "héllo\n")
        self.assertEqual(self.redis("EXISTS", "webst:n:0"), "1\n")

    @defer.inlineCallbacks
    def test_a_live_service_listed_restarted_and_stopped_over_http(self):
        port = free_port()
        with self.cluster.client() as c:
            c.deploy("webhttp", [sys.executable, "-m", "http.server", str(port),
                                 "--bind", "127.0.0.1"], port=port)
            first = self.wait_for(lambda: (lambda s: s if s["state"] == "RUNNING" and s["pid"]
                                           else None)(c.service("webhttp")), 60,
                                  "the service to run with a pid")
        self.wait_for(lambda: _answers(port), 30, f"the service to answer on port {port}")
        code, body = yield self.get("/api/v1/services")
        [svc] = [s for s in body["services"] if s["name"] == "webhttp"]
        self.assertEqual((code, svc["state"], svc["port"], svc["worker"], svc["pid"]),
                         (200, "RUNNING", port, "w1", first["pid"]))
        code, body = yield self.request("POST", "/api/v1/services/webhttp/restart")
        self.assertEqual((code, body["name"]), (200, "webhttp"), body)
        with self.cluster.client() as c:
            again = self.wait_for(
                lambda: (lambda s: s if s["state"] == "RUNNING" and s["restarts"] >= 1
                         and s["pid"] not in (None, first["pid"]) else None)(
                    c.service("webhttp")), 60, "the service to run again with a new pid")
        self.assertEqual((again["restarts"], again["job_id"]), (1, first["job_id"]))
        self.wait_for(lambda: _answers(port), 30, "the restarted service to answer")
        code, body = yield self.request("POST", "/api/v1/services/webhttp/stop")
        self.assertEqual(code, 200, body)
        with self.cluster.client() as c:
            self.wait_for(lambda: c.service("webhttp")["state"] == "STOPPED", 30,
                          "the service to be stopped")
        self.wait_for(lambda: not _answers(port), 30, f"port {port} to be closed")
        code, body = yield self.request("POST", "/api/v1/services/webhttp/stop")
        self.assertEqual((code, body["error"]["code"]), (409, "not_running"))


def _answers(port: int) -> bool:
    """Whether something accepts connections on 127.0.0.1:port."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return True
    except OSError:
        return False


def c_job_decision(cluster, job_id: str) -> dict:
    with cluster.client() as c:
        return c.job(job_id)["decision"]
