"""The constructor's HTTP API (issue 18; docs/web.md, "Pipelines and drafts") with treq
against a live master and a worker: a cycle named by its steps, a diamond with a gate and a
shipped script deployed, approved over HTTP and run to the end, a schedule registered, a
run's pipeline deployed again as the same DAG, YAML in the reference's format read as
Titan's, and drafts kept across a master restart."""
from __future__ import annotations

import os
import signal
import subprocess
import sys

from twisted.internet import defer

from tests.acceptance.test_web_api import WebCase

SCRIPT = "import sys\nprint('script args', sys.argv[1:])\n"
DIAMOND = {"name": "web-dia", "jobs": [
    {"id": "a", "command": "true"},
    {"id": "b", "file": "b.py", "args": "--fast 'two words'", "depends_on": ["a"]},
    {"id": "c", "command": ["echo", "c ran"], "depends_on": ["a"]},
    {"id": "ok", "gate": True, "message": "Ship it?", "depends_on": ["b", "c"]},
    {"id": "d", "command": "true", "depends_on": ["ok"]}]}
REFERENCE = """
name: ref-style
version: "1.0"
project: false
jobs:
  - id: train
    command: python3 -c "print('trained')"
    requirement: GENERAL
    hitl_message: Publish this model?
    max_wait_seconds: 4h
  - id: publish
    command: python3 -c "print('published')"
    depends_on: train
    affinity: true
"""


class PipelineCase(WebCase):
    @defer.inlineCallbacks
    def send(self, method: str, path: str, body=None):
        kw = {"json": body} if body is not None else {}
        return (yield self.request(method, path, **kw))

    @defer.inlineCallbacks
    def graph(self, run_id: str):
        """[(node, sorted parents)] of a run, and its edges, as GET /runs/{id} gives them."""
        code, run = yield self.get(f"/api/v1/runs/{run_id}")
        self.assertEqual(code, 200, run)
        return ([(j["node"], j["kind"], sorted(j["depends_on"])) for j in run["jobs"]],
                sorted(map(tuple, run["edges"])))

    @defer.inlineCallbacks
    def wait_state(self, ref: str, state: str, timeout: float = 30.0):
        path = f"/api/v1/jobs/{ref.replace('/', '%2F')}" if "/" in ref else \
            f"/api/v1/runs/{ref}"
        for _ in range(int(timeout / 0.1)):
            code, body = yield self.get(path)
            if code == 200 and body["state"] == state:
                return body
            yield self.pause(0.1)
        self.fail(f"{ref} did not reach {state}: {body}")


class WebPipelineTests(PipelineCase):
    @defer.inlineCallbacks
    def test_a_cycle_is_named_by_its_steps(self):
        cyclic = {"name": "cyc", "jobs": [dict(j) for j in DIAMOND["jobs"]]}
        cyclic["jobs"][0]["depends_on"] = ["d"]
        code, body = yield self.send("POST", "/api/v1/pipelines/validate",
                                     {"document": cyclic, "files": {"b.py": SCRIPT}})
        self.assertEqual(code, 200, body)
        self.assertEqual(body, {"ok": False, "problems": [{
            "step": "a", "key": "depends_on",
            "message": "jobs[0].depends_on: cycle: a -> b -> ok -> d -> a"}]})
        # Deploying it is refused the same way, and starts nothing.
        code, body = yield self.send("POST", "/api/v1/pipelines",
                                     {"document": cyclic, "files": {"b.py": SCRIPT}})
        self.assertEqual((code, body["error"]["code"]), (400, "bad_pipeline"))
        self.assertEqual(body["problems"][0]["step"], "a")
        code, runs = yield self.get("/api/v1/runs?name=cyc")
        self.assertEqual(runs["runs"], [])

    @defer.inlineCallbacks
    def test_deploy_a_diamond_with_a_gate_approve_it_and_see_it_complete(self):
        code, body = yield self.send("POST", "/api/v1/pipelines",
                                     {"document": DIAMOND, "files": {"b.py": SCRIPT}})
        self.assertEqual(code, 200, body)
        run_id = body["run_id"]
        self.assertTrue(run_id.startswith("web-dia-"), run_id)
        yield self.wait_state(f"{run_id}/ok", "WAITING_APPROVAL")
        code, b = yield self.get(f"/api/v1/jobs/{run_id}%2Fb")
        self.assertEqual((b["state"], b["file"]), ("COMPLETED", "b.py"))
        code, logs = yield self.get(f"/api/v1/jobs/{run_id}%2Fb/logs")
        self.assertIn("script args ['--fast', 'two words']", logs["data"])
        code, decided = yield self.send("POST", f"/api/v1/gates/{run_id}%2Fok/decide",
                                        {"approved": True, "comment": "go"})
        self.assertEqual(code, 200, decided)
        run = yield self.wait_state(run_id, "COMPLETED")
        self.assertEqual(run["counts"], {"COMPLETED": 5})
        nodes, edges = yield self.graph(run_id)
        self.assertEqual(edges, [("a", "b"), ("a", "c"), ("b", "ok"), ("c", "ok"),
                                 ("ok", "d")])

    @defer.inlineCallbacks
    def test_a_document_with_a_schedule_registers_it(self):
        code, body = yield self.send("POST", "/api/v1/pipelines", {"document": {
            "name": "web-nightly", "schedule": "0 3 * * *",
            "jobs": [{"id": "backup", "command": "true"}]}})
        self.assertEqual(code, 200, body)
        self.assertEqual(body["schedule_id"], "web-nightly")
        code, listed = yield self.get("/api/v1/schedules")
        [schedule] = [s for s in listed["schedules"] if s["schedule_id"] == "web-nightly"]
        self.assertEqual(schedule["cron"], "0 3 * * *")
        code, runs = yield self.get("/api/v1/runs?name=web-nightly")
        self.assertEqual(runs["runs"], [])  # registered, not run

    @defer.inlineCallbacks
    def test_a_runs_pipeline_deployed_again_is_the_same_dag(self):
        code, body = yield self.send("POST", "/api/v1/pipelines",
                                     {"document": DIAMOND, "files": {"b.py": SCRIPT}})
        first = body["run_id"]
        with self.cluster.client() as c:  # a job added while it runs
            c.add_jobs(first, [{"id": "late", "command": ["true"], "depends_on": ["c"]}])
        code, copy = yield self.get(f"/api/v1/runs/{first}/pipeline")
        self.assertEqual(code, 200, copy)
        self.assertEqual(copy["files"], {"b.py": SCRIPT})
        code, body = yield self.send("POST", "/api/v1/pipelines", copy)
        self.assertEqual(code, 200, body)
        again = body["run_id"]
        one = yield self.graph(first)
        two = yield self.graph(again)
        self.assertEqual(one, two)
        self.assertIn(("late", "job", ["c"]), one[0])
        for node, _, _ in one[0]:  # and each job the same: command or script and args, ...
            views = []
            for run_id in (first, again):
                code, job = yield self.get(f"/api/v1/jobs/{run_id}%2F{node}")
                views.append({k: job[k] for k in ("command", "file", "kind", "tags",
                                                  "priority", "retries", "message")})
            self.assertEqual(views[0], views[1], node)
        for run_id in (first, again):
            yield self.send("POST", f"/api/v1/runs/{run_id}/cancel")

    @defer.inlineCallbacks
    def test_yaml_in_the_references_format_reads_as_titans_and_runs(self):
        code, body = yield self.send("POST", "/api/v1/pipelines/parse",
                                     {"yaml": REFERENCE, "name": "ref.yaml"})
        self.assertEqual(code, 200, body)
        self.assertEqual([(j["id"], j["depends_on"]) for j in body["document"]["jobs"]],
                         [("train", []), ("train.approval", ["train"]),
                          ("publish", ["train.approval"])])
        self.assertEqual(body["document"]["jobs"][1]["timeout"], 4 * 3600)
        code, started = yield self.send("POST", "/api/v1/pipelines", body)
        self.assertEqual(code, 200, started)
        run_id = started["run_id"]
        yield self.wait_state(f"{run_id}/train.approval", "WAITING_APPROVAL")
        code, _ = yield self.send("POST", f"/api/v1/gates/{run_id}%2Ftrain.approval/decide",
                                  {"approved": True})
        self.assertEqual(code, 200)
        yield self.wait_state(run_id, "COMPLETED")
        # A bad one: the message `titan run FILE` prints.
        text = REFERENCE.replace("depends_on", "depnds_on")
        code, bad = yield self.send("POST", "/api/v1/pipelines/parse",
                                    {"yaml": text, "name": "ref.yaml"})
        self.assertEqual(code, 400)
        folder = self.mktemp()
        os.makedirs(folder)
        with open(os.path.join(folder, "ref.yaml"), "w") as f:
            f.write(text)
        cli = subprocess.run([os.path.join(os.path.dirname(sys.executable), "titan"), "run",
                              "ref.yaml"], cwd=folder, env=self.cluster.env(),
                             capture_output=True, text=True, timeout=60)
        self.assertEqual(cli.returncode, 1, cli)
        self.assertEqual(cli.stderr.strip(), f"titan: {bad['error']['message']}")
        self.assertIn("ref.yaml:13: jobs[1]: unknown key 'depnds_on'", cli.stderr)
        self.assertEqual(bad["problems"], [{"step": "publish", "key": "depnds_on",
                                            "message": bad["error"]["message"]}])



class DraftTests(PipelineCase):
    """On a cluster of their own: the master is restarted."""

    @defer.inlineCallbacks
    def test_drafts_are_kept_across_a_master_restart(self):
        draft = {"name": "etl", "steps": [{"data": {"id": "a", "kind": "job"},
                                           "position": {"x": 1, "y": 2}}], "edges": []}
        code, saved = yield self.send("PUT", "/api/v1/drafts/etl-draft", {"draft": draft})
        self.assertEqual((code, saved["name"]), (200, "etl-draft"))
        code, _ = yield self.send("PUT", "/api/v1/drafts/other", {"draft": {"steps": []}})
        code, listed = yield self.get("/api/v1/drafts")
        self.assertEqual([(d["name"], d["steps"]) for d in listed["drafts"]],
                         [("other", 0), ("etl-draft", 1)])
        code, _ = yield self.send("DELETE", "/api/v1/drafts/other")
        self.assertEqual(code, 200)
        self.cluster.kill_master(signal.SIGKILL)
        self.cluster.start_master()
        code, listed = yield self.get("/api/v1/drafts")
        self.assertEqual([d["name"] for d in listed["drafts"]], ["etl-draft"])
        code, got = yield self.get("/api/v1/drafts/etl-draft")
        self.assertEqual((code, got["draft"]), (200, draft))
        code, gone = yield self.get("/api/v1/drafts/other")
        self.assertEqual(code, 404)

