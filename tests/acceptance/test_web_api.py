"""The web API (titan/web/, docs/web.md) with treq against a live master and workers:
log in, read what the SDK submitted, read a log by offsets, approve a gate, cancel a job."""
from __future__ import annotations

import sys
import time

import treq
from twisted.internet import defer
from twisted.trial.unittest import TestCase

from tests.acceptance.helpers import ClusterTestCase


def _get(url: str, **kw) -> defer.Deferred:
    # A connection per request: none is left open in the pool when a test ends.
    return treq.get(url, persistent=False, **kw)


def _post(url: str, **kw) -> defer.Deferred:
    return treq.post(url, persistent=False, **kw)


def _py(code: str) -> list[str]:
    return [sys.executable, "-c", code]


class WebApiTests(ClusterTestCase, TestCase):
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
        code, job = yield self.get(f"/api/v1/jobs/{run_id}/a")
        self.assertEqual((job["state"], job["exit_code"], job["worker"]), ("COMPLETED", 0, "w1"))
        code, first = yield self.get(f"/api/v1/jobs/{run_id}/a/logs?offset=0&limit=6")
        self.assertEqual((first["data"], first["next_offset"], first["done"]),
                         ("alpha-", 6, False))
        code, rest = yield self.get(f"/api/v1/jobs/{run_id}/a/logs?offset=6")
        self.assertEqual((rest["data"], rest["done"]), ("line\nbeta-line\n", True))

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
        response = yield _post(self.url(f"/api/v1/gates/{run_id}/ok/decide"),
                                   json={"approved": True, "comment": "lgtm", "by": "ann"},
                                   cookies=cookies, headers={"X-Titan-CSRF": csrf})
        body = yield treq.json_content(response)
        self.assertEqual((response.code, body["state"]), (200, "COMPLETED"))
        with self.cluster.client() as c:
            run = c.wait_run(run_id, timeout=60)
        self.assertEqual(run["state"], "COMPLETED")
        self.assertEqual(c_job_decision(self.cluster, f"{run_id}/ok")["comment"], "lgtm")
        response = yield _post(self.url(f"/api/v1/gates/{run_id}/ok/decide"),
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

    def pause(self, seconds: float) -> defer.Deferred:
        from twisted.internet import reactor
        from twisted.internet.task import deferLater
        return deferLater(reactor, seconds, lambda: None)


def c_job_decision(cluster, job_id: str) -> dict:
    with cluster.client() as c:
        return c.job(job_id)["decision"]
