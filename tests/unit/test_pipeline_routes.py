"""The constructor's server side (issue 18): pipelines as documents (titan/documents.py),
read by the YAML reader itself and judged by the master's DAG checks, so a document is
refused where `titan run FILE` refuses the same pipeline, with its message, step and key;
the drafts store (titan/drafts.py); and their routes (titan/web/app.py) over MasterApi."""
from __future__ import annotations

import json
import os
import stat

import yaml
from twisted.trial.unittest import SynchronousTestCase

from titan.core.dag import parse_dag
from titan.documents import document_of, parse_yaml, problems_of, read_document
from titan.drafts import DraftError, Drafts
from titan.master.api import OPERATOR
from titan.sdk.pipeline import Pipeline, PipelineError
from tests.unit.test_web import TOKEN, VIEWER, WebCase


def titan_run_error(text: str) -> PipelineError:
    """What `titan run FILE` refuses the YAML with (load_pipeline's reader)."""
    try:
        Pipeline.from_yaml(text, path="p.yaml").to_spec()
    except PipelineError as e:
        return e
    raise AssertionError("titan run would take it")


def dag(spec: dict) -> list:
    """The DAG a spec makes, as the master sees it: each job's spec, in order."""
    return [s.to_wire() for s in parse_dag(spec).specs]


BAD = {
    "a cycle": """
name: p
jobs:
  - id: a
    command: "true"
    depends_on: [c]
  - id: b
    command: "true"
    depends_on: a
  - id: c
    command: "true"
    depends_on: b
""",
    "an unknown parent": """
name: p
jobs:
  - id: a
    command: "true"
  - id: b
    command: "true"
    depends_on: [a, nope]
""",
    "a bad duration": """
name: p
jobs:
  - id: a
    command: "true"
    timeout: 5 parsecs
""",
    "a duplicate id": """
name: p
jobs:
  - id: a
    command: "true"
  - id: a
    command: "false"
""",
    "an unknown key": """
name: p
jobs:
  - id: a
    comand: "true"
""",
    "a gate's key on a job": """
name: p
jobs:
  - id: a
    command: "true"
    on_timeout: approve
""",
    "a bad name": """
name: not a name
jobs:
  - id: a
    command: "true"
""",
}
# (step, key) each names.
WHERE = {"a cycle": ("a", "depends_on"), "an unknown parent": ("b", "depends_on"),
         "a bad duration": ("a", "timeout"), "a duplicate id": ("a", "id"),
         "an unknown key": ("a", "comand"), "a gate's key on a job": ("a", "on_timeout"),
         "a bad name": (None, "name")}


class DocumentTests(SynchronousTestCase):
    def test_a_document_gets_the_problem_titan_run_prints_for_the_same_yaml(self):
        for what, text in BAD.items():
            error = titan_run_error(text)
            found = problems_of(yaml.safe_load(text), {})[0]  # the first is titan run's
            # titan run: "p.yaml:LINE: jobs[0].timeout must be ..."; a document has no lines.
            where, _, message = str(error).partition(": ")
            self.assertRegex(where, r"^p\.yaml:\d+$", what)
            self.assertEqual(found["message"].split(" (line")[0],
                             message.split(" (line")[0], what)
            self.assertEqual((found["step"], found["key"]), WHERE[what], what)
            self.assertEqual((error.step, error.key), WHERE[what], what)

    def test_the_cycle_names_its_steps(self):
        [found] = problems_of(yaml.safe_load(BAD["a cycle"]), {})
        self.assertEqual(found["message"], "jobs[0].depends_on: cycle: a -> b -> c -> a")

    def test_every_problem_is_found_each_in_its_place(self):
        doc = {"name": "p", "jobs": [
            {"id": "a", "command": "true", "timeout": "soon"},
            {"id": "a", "command": "true"},
            {"id": "c", "command": "true", "depends_on": ["zz"]},
            {"id": "d", "command": "true", "retries": -1}]}
        found = problems_of(doc, {})
        # In titan run's order: each step's keys and values first, then the graph.
        self.assertEqual([(p["step"], p["key"]) for p in found],
                         [("a", "timeout"), ("a", "id"), ("d", "retries"),
                          ("c", "depends_on")])
        self.assertTrue(found[3]["message"].startswith("jobs[2].depends_on: unknown job"),
                        found[3])
        self.assertEqual(problems_of(dict(doc, jobs=doc["jobs"][1:2]), {}), [])
        # Past the first, only while the master's time allows: the first is always there.
        self.assertEqual(problems_of(doc, {}, budget=0.0), found[:1])
        self.assertEqual(problems_of(doc, {}, limit=2), found[:2])

    def test_the_pipelines_own_keys_are_named_with_no_step(self):
        doc = {"name": "p", "colour": "red", "schedule": "every day",
               "jobs": [{"id": "a", "command": "true"}]}
        self.assertEqual([(p["step"], p["key"]) for p in problems_of(doc, {})],
                         [(None, "colour"), (None, "schedule")])
        [found] = problems_of({"name": "p", "jobs": []}, {})
        self.assertEqual((found["step"], found["key"]), (None, "jobs"))

    def test_the_masters_own_checks_too(self):
        """What only the master refuses (a health check without a port), as titan run
        gets it back from SUBMIT_DAG."""
        doc = {"name": "p", "jobs": [{"id": "api", "type": "service", "command": "serve",
                                      "health": "tcp"}]}
        [found] = problems_of(doc, {})
        self.assertEqual(found, {"step": "api", "key": "health",
                                 "message": "job api: a health check needs a port"})

    def test_scripts_come_from_files_never_from_the_disk(self):
        doc = {"name": "p", "jobs": [{"id": "load", "file": "load.py", "args": "--fast -n 2"}]}
        _, spec = read_document(doc, {"load.py": "print('hi')"})
        [job] = spec["jobs"]
        self.assertEqual(job["script"], {"name": "load.py", "content": b"print('hi')",
                                         "args": ["--fast", "-n", "2"]})
        self.assertIsNone(job["command"])
        # The same as Pipeline.script gives, to the byte.
        p = Pipeline("p")
        p.script("load", "load.py", "print('hi')", args="--fast -n 2")
        self.assertEqual(dag(spec), dag(p.to_spec()))
        # A file of that name where the master runs is never read.
        here = os.getcwd()
        with open(os.path.join(here, "load.py"), "w") as f:
            f.write("print('from the disk')")
        self.addCleanup(os.unlink, os.path.join(here, "load.py"))
        [found] = problems_of(doc, {})
        self.assertEqual((found["step"], found["key"]), ("load", "file"))
        self.assertIn("load.py", found["message"])

    def test_the_references_format_is_normalised_to_titans(self):
        text = """
name: ref
version: "1.0"
jobs:
  - id: train
    file: train.py
    args: --epochs 2
    requirement: GPU
    hitl_message: Publish this model?
    max_wait_seconds: 4h
    affinity: true
  - id: publish
    command: python3 publish.py
    requirement: GENERAL
    depends_on: train
  - id: api
    type: service
    command: serve --port {port}
    port: 8000
"""
        out = parse_yaml(text, {"train.py": "print(1)"}, "ref.yaml")
        self.assertEqual(out["files"], {"train.py": "print(1)"})
        self.assertEqual(out["missing"], [])
        self.assertEqual(out["document"], {"name": "ref", "jobs": [
            {"id": "train", "file": "train.py", "args": ["--epochs", "2"], "depends_on": [],
             "tags": ["GPU"], "affinity": "parent"},
            {"id": "train.approval", "gate": True, "depends_on": ["train"],
             "message": "Publish this model?", "timeout": 14400},
            {"id": "publish", "command": ["python3", "publish.py"],
             "depends_on": ["train.approval"]},
            {"id": "api", "type": "service", "command": ["serve", "--port", "{port}"],
             "depends_on": [], "port": 8000, "health": "tcp"}]})
        # Read back, it is the same DAG as the YAML.
        _, spec = read_document(out["document"], out["files"])
        self.assertEqual(dag(spec),
                         dag(Pipeline.from_yaml(text, files={"train.py": "print(1)"})
                             .to_spec()))

    def test_a_file_not_sent_is_named_not_refused_on_import(self):
        out = parse_yaml("name: p\njobs:\n  - id: a\n    file: a.sh\n", {})
        self.assertEqual(out["missing"], ["a.sh"])
        self.assertEqual(out["document"]["jobs"][0]["file"], "a.sh")
        [found] = problems_of(out["document"], out["files"])
        self.assertEqual((found["step"], found["key"]), ("a", "file"))

    def test_a_bad_yaml_is_refused_with_titan_runs_message(self):
        from titan.documents import PipelineProblems
        error = titan_run_error(BAD["an unknown key"])
        with self.assertRaises(PipelineProblems) as caught:
            parse_yaml(BAD["an unknown key"], {}, "p.yaml")
        [found] = caught.exception.problems
        self.assertEqual(found, {"step": "a", "key": "comand", "message": str(error)})

    def test_specs_written_as_a_document_give_the_same_dag(self):
        p = Pipeline("rt", agent_run_id="ag", stage="PLAN", max_jobs=50)
        a = p.job("a", "echo a", tags="gpu,big", retries=2, timeout="1m30s", priority=3,
                  delay=1.5, env={"X": "1"}, cwd="/tmp", affinity="strict:parent")
        s = p.script("s", "s.sh", "echo $1", args=["x y"], depends_on=[a])
        g = p.gate("ok", "Go?", depends_on=[s], timeout="2h", on_timeout="approve")
        p.job("svc", "serve {port}", type="service", port="auto", health="http:/up",
              restart="always", persist=True, depends_on=[g])
        p.job("h", "true", hitl_message="sure?", depends_on=["svc"])
        template = parse_dag(p.to_spec())
        out = document_of(template.name, template.specs, agent_run_id="ag", stage="PLAN",
                          max_jobs=50)
        self.assertEqual(out["files"], {"s.sh": "echo $1"})
        _, spec = read_document(json.loads(json.dumps(out["document"])), out["files"])
        again = parse_dag(spec)
        self.assertEqual([s.to_wire() for s in again.specs],
                         [s.to_wire() for s in template.specs])
        self.assertEqual((again.agent_run_id, again.stage, again.max_jobs),
                         ("ag", "PLAN", 50))

    def test_titan_run_is_unchanged_for_files_on_disk(self):
        directory = self.mktemp()
        os.makedirs(directory)
        with open(os.path.join(directory, "x.py"), "w") as f:
            f.write("print(2)")
        p = Pipeline.from_yaml("name: p\nproject: false\njobs:\n  - id: a\n    file: x.py\n",
                               path=os.path.join(directory, "p.yaml"))
        self.assertEqual(p.to_spec()["jobs"][0]["script"]["content"], b"print(2)")
        with self.assertRaises(PipelineError) as caught:
            Pipeline.from_yaml("name: p\njobs:\n  - id: a\n    file: y.py\n",
                               path=os.path.join(directory, "p.yaml"))
        self.assertRegex(str(caught.exception), r"p\.yaml:4: jobs\[0\]\.file: cannot read "
                                                r"y\.py: No such file")


class DraftStoreTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.dir = os.path.join(self.mktemp(), "drafts")
        self.drafts = Drafts(self.dir, limit=3)

    def test_put_get_list_newest_first_delete(self):
        self.assertEqual(self.drafts.list(), [])
        self.drafts.put("one", {"steps": [{}, {}]}, 10.0)
        self.drafts.put("two", {"steps": []}, 20.0)
        self.drafts.put("one", {"steps": [{}, {}, {}]}, 30.0)
        self.assertEqual(self.drafts.list(), [
            {"name": "one", "updated_at": 30.0, "steps": 3},
            {"name": "two", "updated_at": 20.0, "steps": 0}])
        self.assertEqual(self.drafts.get("one"),
                         {"name": "one", "updated_at": 30.0, "draft": {"steps": [{}, {}, {}]}})
        self.assertIsNone(self.drafts.get("three"))
        mode = stat.S_IMODE(os.stat(os.path.join(self.dir, "one.json")).st_mode)
        self.assertEqual(mode, 0o600)
        self.assertEqual(sorted(os.listdir(self.dir)), ["one.json", "two.json"])
        self.assertTrue(self.drafts.delete("one"))
        self.assertFalse(self.drafts.delete("one"))
        # Another store on the same directory (a restarted master) finds what is left.
        self.assertEqual([d["name"] for d in Drafts(self.dir).list()], ["two"])

    def test_names_are_checked(self):
        for bad in ("", "a/b", "../x", "sp ace", "x" * 101, "é"):
            with self.assertRaises(DraftError, msg=bad):
                self.drafts.put(bad, {}, 1.0)
        self.drafts.put("A-1_b.c", {}, 1.0)
        self.assertEqual(os.listdir(self.dir), ["A-1_b.c.json"])

    def test_at_most_the_limit_of_drafts(self):
        for name in ("a", "b", "c"):
            self.drafts.put(name, {}, 1.0)
        with self.assertRaises(DraftError) as caught:
            self.drafts.put("d", {}, 2.0)
        self.assertTrue(caught.exception.full)
        self.drafts.put("a", {"again": True}, 3.0)  # replacing one is not one more


class PipelineRouteTests(WebCase):
    DIAMOND = {"name": "dia", "jobs": [
        {"id": "a", "command": "true"},
        {"id": "b", "file": "b.py", "args": "--fast", "depends_on": ["a"]},
        {"id": "c", "command": ["echo", "c"], "depends_on": ["a"]},
        {"id": "ok", "gate": True, "message": "ship?", "depends_on": ["b", "c"]},
        {"id": "d", "command": "true", "depends_on": ["ok"]}]}
    FILES = {"b.py": "print('b')"}

    def test_validate_names_each_problem(self):
        r = self.post("/api/v1/pipelines/validate",
                      {"document": self.DIAMOND, "files": self.FILES})
        self.assertEqual((r.status, r.json), (200, {"ok": True, "problems": []}))
        cyclic = json.loads(json.dumps(self.DIAMOND))
        cyclic["jobs"][0]["depends_on"] = ["d"]
        r = self.post("/api/v1/pipelines/validate", {"document": cyclic, "files": self.FILES})
        self.assertEqual(r.json, {"ok": False, "problems": [{
            "step": "a", "key": "depends_on",
            "message": "jobs[0].depends_on: cycle: a -> b -> ok -> d -> a"}]})
        r = self.post("/api/v1/pipelines/validate", {"document": self.DIAMOND})
        self.assertEqual([(p["step"], p["key"]) for p in r.json["problems"]], [("b", "file")])
        for body in ({}, {"document": []}, {"document": {}, "files": {"x": 1}}):
            r = self.post("/api/v1/pipelines/validate", body)
            self.assertEqual((r.status, r.error), (400, "bad_request"), body)

    def test_parse_answers_a_document_or_titan_runs_message(self):
        r = self.post("/api/v1/pipelines/parse", {"yaml": yaml.safe_dump(self.DIAMOND),
                                                  "files": self.FILES})
        self.assertEqual(r.status, 200, r.body)
        self.assertEqual([j["id"] for j in r.json["document"]["jobs"]],
                         ["a", "b", "c", "ok", "d"])
        self.assertEqual(r.json["files"], self.FILES)
        r = self.post("/api/v1/pipelines/parse", {"yaml": BAD["a bad duration"],
                                                  "name": "p.yaml"})
        error = titan_run_error(BAD["a bad duration"])
        self.assertEqual(r.status, 400)
        self.assertEqual(r.json["error"], {"code": "bad_pipeline", "message": str(error)})
        self.assertEqual(r.json["problems"], [{"step": "a", "key": "timeout",
                                               "message": str(error)}])

    def test_deploy_starts_a_run_or_registers_a_schedule(self):
        r = self.post("/api/v1/pipelines", {"document": self.DIAMOND, "files": self.FILES})
        self.assertEqual(r.status, 200, r.body)
        run_id = r.json["run_id"]
        run = self.api.run_info(OPERATOR, run_id)
        self.assertEqual([j["node"] for j in run["jobs"]], ["a", "b", "c", "ok", "d"])
        b = self.api.scheduler.jobs[f"{run_id}/b"].spec
        self.assertEqual((b.script_name, b.script, b.command),
                         ("b.py", b"print('b')", ("--fast",)))
        r = self.post("/api/v1/pipelines", {"document": dict(self.DIAMOND,
                                                             schedule="0 3 * * *"),
                                            "files": self.FILES})
        self.assertEqual((r.status, r.json["schedule_id"]), (200, "dia"))
        r = self.post("/api/v1/pipelines", {"document": self.DIAMOND})
        self.assertEqual((r.status, r.error), (400, "bad_pipeline"))
        self.assertEqual(r.json["problems"][0]["step"], "b")
        r = self.post("/api/v1/pipelines", {"document": self.DIAMOND, "files": self.FILES},
                      token=VIEWER)
        self.assertEqual((r.status, r.error), (403, "read_only"))
        sid, csrf = self.login()
        r = self.request("POST", "/api/v1/pipelines", {"document": self.DIAMOND,
                                                       "files": self.FILES}, cookie=sid)
        self.assertEqual((r.status, r.error), (403, "csrf"))

    def test_a_runs_pipeline_as_a_document_and_back(self):
        run_id = self.post("/api/v1/pipelines", {"document": self.DIAMOND,
                                                 "files": self.FILES}).json["run_id"]
        self.settle(self.api.add_jobs(OPERATOR, run_id, [
            {"id": "late", "command": ["true"], "depends_on": ["d"]}]))
        r = self.get(f"/api/v1/runs/{run_id}/pipeline")
        self.assertEqual(r.status, 200, r.body)
        self.assertEqual(r.json["files"], self.FILES)
        jobs = r.json["document"]["jobs"]
        self.assertEqual([(j["id"], j["depends_on"]) for j in jobs], [
            ("a", []), ("b", ["a"]), ("c", ["a"]), ("ok", ["b", "c"]), ("d", ["ok"]),
            ("late", ["d"])])
        again = self.post("/api/v1/pipelines", r.json).json["run_id"]
        s = self.api.scheduler
        self.assertEqual([s.jobs[k].spec for k in s.runs[again].jobs],
                         [s.jobs[k].spec for k in s.runs[run_id].jobs])
        self.assertEqual(self.get("/api/v1/runs/nope/pipeline").status, 404)

    def test_drafts_over_http(self):
        self.assertEqual(self.get("/api/v1/drafts").json, {"drafts": []})
        r = self.request("PUT", "/api/v1/drafts/mine", {"draft": {"steps": [1, 2]}},
                         token=TOKEN)
        self.assertEqual((r.status, r.json["name"]), (200, "mine"))
        self.assertEqual(self.get("/api/v1/drafts").json["drafts"][0]["steps"], 2)
        self.assertEqual(self.get("/api/v1/drafts/mine").json["draft"], {"steps": [1, 2]})
        self.assertTrue(os.path.exists(os.path.join(self.data_dir, "drafts", "mine.json")))
        self.assertEqual(self.get("/api/v1/drafts/other").status, 404)
        r = self.request("PUT", "/api/v1/drafts/bad%20name", {"draft": {}}, token=TOKEN)
        self.assertEqual((r.status, r.error), (400, "bad_request"))
        r = self.request("PUT", "/api/v1/drafts/mine", {"nothing": 1}, token=TOKEN)
        self.assertEqual(r.status, 400)
        r = self.request("PUT", "/api/v1/drafts/big", {"draft": "x" * 5000}, token=TOKEN)
        self.assertEqual((r.status, r.error), (413, "too_large"))
        r = self.request("PUT", "/api/v1/drafts/mine", {"draft": {}}, token=VIEWER)
        self.assertEqual(r.status, 403)
        self.assertEqual(self.get("/api/v1/drafts", token=VIEWER).status, 200)
        r = self.request("DELETE", "/api/v1/drafts/mine", token=TOKEN)
        self.assertEqual(r.json, {"name": "mine", "deleted": True})
        self.assertEqual(self.request("DELETE", "/api/v1/drafts/mine", token=TOKEN).status,
                         404)

    def test_answers_are_what_the_document_says(self):
        import jsonschema_rs
        from titan.web.openapi import SCHEMAS
        validator = jsonschema_rs.Draft202012Validator(
            {"$ref": "#/components/schemas/PipelineDocument",
             "components": {"schemas": SCHEMAS}})
        r = self.post("/api/v1/pipelines/parse", {"yaml": yaml.safe_dump(self.DIAMOND),
                                                  "files": self.FILES})
        self.assertEqual([e.message for e in validator.iter_errors(r.json)], [])
        run_id = self.post("/api/v1/pipelines", {"document": self.DIAMOND,
                                                 "files": self.FILES}).json["run_id"]
        r = self.get(f"/api/v1/runs/{run_id}/pipeline")
        self.assertEqual([e.message for e in validator.iter_errors(r.json)], [])
