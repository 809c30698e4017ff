"""The constructor's exports (webui/src/constructor/model.ts) build the same DAG as each other,
read by Titan's own Python: for each sample draft (webui/src/constructor/fixtures.ts), the YAML
(toYaml, read by Pipeline.from_yaml with its scripts beside it), the Python file (toPython, run
without its `__main__` part) and the document the master's routes take (toDocument) give the
same spec, with the draft's jobs, edges, keys and scripts' bytes.

The model is TypeScript: webui/src/constructor/export-fixtures.ts prints the exports as JSON,
run with vite-node (installed with the front end's packages: `make webui`)."""
from __future__ import annotations

import json
import os
import subprocess
import tempfile

from twisted.trial.unittest import SkipTest, SynchronousTestCase

from titan.documents import parse_yaml
from titan.sdk.pipeline import Pipeline

# The public reference's format: file jobs, requirement, a hitl_message gate, type: run.
REFERENCE = """\
name: ml-pipeline
version: "1.0"
project: false
jobs:
  - id: fetch
    type: run
    file: fetch.py
    args: "--source s3://bucket --limit 10"
    priority: 5
  - id: train
    file: train.py
    depends_on: [fetch]
    requirement: GPU
    hitl_message: "Approve training results?"
    max_wait_seconds: 3600
  - id: publish
    file: scripts/report.sh
    depends_on: train
    requirement: GENERAL
    delay: 2
    affinity: true
  - id: serve
    type: service
    file: serve.py
    port: 8000
    depends_on: [publish]
"""
REFERENCE_FILES = {"fetch.py": "print('fetch')\n", "train.py": "print('train')\n",
                   "scripts/report.sh": "#!/bin/sh\necho report\n",
                   "serve.py": "print('serving')\n"}

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
WEBUI = os.path.join(ROOT, "webui")
VITE_NODE = os.path.join(WEBUI, "node_modules", ".bin", "vite-node")
SCRIPT = os.path.join("src", "constructor", "export-fixtures.ts")

_exports: dict | None = None


def run_model(*args: str) -> dict:
    """export-fixtures.ts's answer."""
    if not os.path.exists(VITE_NODE):
        raise SkipTest("the front end's packages are not installed (make webui)")
    done = subprocess.run([VITE_NODE, SCRIPT, *args], cwd=WEBUI, capture_output=True,
                          text=True, timeout=120,
                          env=dict(os.environ, TITAN_VITE_NO_WATCH="1"))
    if done.returncode != 0:
        raise AssertionError(f"vite-node {SCRIPT} failed:\n{done.stderr}")
    lines = done.stdout.strip().split("\n")  # (not splitlines: the text has U+2028)
    try:
        return json.loads(lines[-1])
    except ValueError:
        raise AssertionError(f"not JSON: {done.stdout[-300:]!r} {done.stderr[-500:]}") from None


def exports() -> dict:
    """The fixtures' exports, made once for the module."""
    global _exports
    if _exports is None:
        _exports = run_model()
    return _exports


def from_python(source: str) -> Pipeline:
    """The `p` the exported file builds, without submitting it."""
    body = source.replace('if __name__ == "__main__":', "if False:")
    assert body != source, "the file has no __main__ part"
    space: dict = {"__name__": "constructor_export"}
    exec(compile(body, "<exported python>", "exec"), space)
    return space["p"]


def from_yaml(text: str, files: dict[str, str]) -> Pipeline:
    with tempfile.TemporaryDirectory() as folder:
        for name, content in files.items():
            os.makedirs(os.path.dirname(os.path.join(folder, name)), exist_ok=True)
            with open(os.path.join(folder, name), "w", encoding="utf-8", newline="") as f:
                f.write(content)
        return Pipeline.from_yaml(text, path=os.path.join(folder, "pipeline.yaml"),
                                  base_dir=folder)


class ExportTests(SynchronousTestCase):

    def specs(self, name: str) -> tuple[dict, dict, dict]:
        out = exports()[name]
        by_yaml = from_yaml(out["yaml"], out["files"]).to_spec()
        by_python = from_python(out["python"]).to_spec()
        # The document and its files, read as the master's routes read them.
        by_document = Pipeline.from_document(out["document"], files=out["files"]).to_spec()
        return by_yaml, by_python, by_document

    def same_dag(self, name: str) -> dict:
        by_yaml, by_python, by_document = self.specs(name)
        self.assertEqual(by_python, by_yaml)
        self.assertEqual(by_document, by_yaml)
        return by_yaml

    def test_diamond(self):
        spec = self.same_dag("diamond")
        jobs = {job["id"]: job for job in spec["jobs"]}
        self.assertEqual([job["id"] for job in spec["jobs"]],
                         ["build", "load", "api", "review", "deploy"])
        self.assertEqual(jobs["review"]["depends_on"], ["load", "api"])
        self.assertEqual(jobs["review"]["kind"], "gate")
        self.assertEqual((jobs["review"]["timeout"], jobs["review"]["on_timeout"],
                          jobs["review"]["message"]), (3600.0, "approve", "Ship it?"))
        build = jobs["build"]
        self.assertEqual((build["command"], build["retries"], build["timeout"],
                          build["priority"], build["tags"], build["env"], build["cwd"]),
                         (["make", "-j4", "dist"], 2, 600.0, 5, ["GPU", "HIGH_MEM"],
                          {"MODE": "release", "EMPTY": ""}, "/tmp"))
        self.assertEqual(jobs["load"]["script"],
                         {"name": "load.py", "args": ["--fast", "two words"],
                          "content": b"import sys\nprint('loaded', sys.argv[1:])\n"})
        api = jobs["api"]
        self.assertEqual((api["type"], api["port"], api["health"], api["restart"],
                          api["persist"]), ("service", "auto", "http:/", "always", True))
        self.assertEqual((spec["name"], spec["agent_run_id"], spec["stage"]),
                         ("release", "agent-7", "PLAN"))

    def test_tricky_text(self):
        spec = self.same_dag("tricky")
        jobs = {job["id"]: job for job in spec["jobs"]}
        self.assertEqual(set(jobs), {"007", "on", "off", "null", "x.y-z_w"})
        self.assertEqual(jobs["007"]["command"], ["echo", "a: b # c", "its", "$x"])
        self.assertEqual(jobs["007"]["env"], {
            "YES": "yes", "NO": "no", "ON": "on", "NUM": "010", "QUOTE": 'say "hi"',
            "COLON": "a: b", "HASH": "#x"})
        self.assertEqual(jobs["off"]["message"], 'Ready?\nSay "yes": or no # really\n \n'
                         '\tindented\u2028sep\x85nel\xa0nbsp\ufeff')
        self.assertEqual((jobs["null"]["env"], jobs["null"]["cwd"]),
                         ({"TAB": "a\tb\u2028c"}, " /tmp/lead "))
        self.assertEqual(jobs["off"]["timeout"], 90.0)
        self.assertEqual(jobs["on"]["script"]["args"], ["a b", "c d", 'e "f"'])
        self.assertIn("héllo wörld ✓ 🚀".encode(), jobs["on"]["script"]["content"])
        self.assertIn(b"\r\n", jobs["on"]["script"]["content"])
        self.assertIn("\u200b\u2028".encode(), jobs["on"]["script"]["content"])
        self.assertEqual((jobs["null"]["affinity"], jobs["null"]["priority"]), ("no", -3))
        self.assertEqual(jobs["x.y-z_w"]["port"], 8123)
        self.assertEqual(jobs["x.y-z_w"]["cwd"], "/tmp/ä dir")
        self.assertEqual(sorted(jobs["null"]["depends_on"]), ["off", "on"])
        self.assertEqual(spec["schedule"], "*/5 * * * *")

    def test_extra_keys(self):
        spec = self.same_dag("extras")
        self.assertEqual((spec["workspace"], spec["max_jobs"]), ("shared", 10))
        a = spec["jobs"][0]
        self.assertEqual((a["hitl_message"], a["max_wait_seconds"]), ("Go on?", 4 * 3600.0))

    def test_scripts_of_one_name(self):
        spec = self.same_dag("scripts")
        scripts = {job["id"]: job["script"] for job in spec["jobs"]}
        self.assertEqual(scripts["a"], {"name": "x.py", "content": b"print('one')\n", "args": []})
        self.assertEqual(scripts["b"], {"name": "x.py", "content": b"print('two')\n",
                                        "args": ["--two"]})
        self.assertEqual(scripts["c"]["name"], "y.sh")

    def test_python_runs_as_a_file(self):
        """The exported file is valid Python on its own (compiles; imports what it uses)."""
        for name, out in exports().items():
            compile(out["python"], f"{name}.py", "exec")
            self.assertIn("from titan.sdk import Client, Pipeline", out["python"])
            self.assertIn("titan.submit(p)", out["python"])


class ImportTests(SynchronousTestCase):
    """What the master gives (its parse answer, titan.documents.parse_yaml) read by the
    model's fromDocument and exported again builds the same DAG: Titan's example pipelines
    and a file in the public reference's format."""

    def test_imported_pipelines_export_the_same_dag(self):
        given = {}
        for name in sorted(os.listdir(os.path.join(ROOT, "etc", "pipelines"))):
            if name.endswith(".yaml"):
                with open(os.path.join(ROOT, "etc", "pipelines", name), encoding="utf-8") as f:
                    given[name] = parse_yaml(f.read(), {}, name)
        given["reference.yaml"] = parse_yaml(REFERENCE, REFERENCE_FILES, "reference.yaml")
        self.assertEqual(given["reference.yaml"]["missing"], [])
        self.assertGreaterEqual(len(given), 4)
        answers = run_model(self.write(given))
        for name, parsed in given.items():
            out = answers[name]
            want = Pipeline.from_document(parsed["document"], files=parsed["files"]).to_spec()
            by_document = Pipeline.from_document(out["document"], files=out["files"]).to_spec()
            by_yaml = from_yaml(out["yaml"], out["files"]).to_spec()
            by_python = from_python(out["python"]).to_spec()
            self.assertEqual(by_document, want, name)
            self.assertEqual(by_yaml, want, name)
            self.assertEqual(by_python, want, name)
            # Every step and edge is on the canvas.
            steps = {step["data"]["id"] for step in out["draft"]["steps"]}
            self.assertEqual(steps, {job["id"] for job in want["jobs"]}, name)
            edges = {(e["source"], e["target"]) for e in out["draft"]["edges"]}
            self.assertEqual(edges, {(p, job["id"]) for job in want["jobs"]
                                     for p in job["depends_on"]}, name)
        reference = {job["id"]: job for job in
                     from_python(answers["reference.yaml"]["python"]).to_spec()["jobs"]}
        self.assertEqual(reference["train.approval"]["kind"], "gate")
        self.assertEqual(reference["publish"]["depends_on"], ["train.approval"])
        self.assertEqual(reference["train"]["tags"], ["GPU"])
        self.assertEqual(reference["publish"]["script"]["content"],
                         b"#!/bin/sh\necho report\n")
        self.assertEqual((reference["serve"]["type"], reference["serve"]["port"],
                          reference["serve"]["script"]["content"]),
                         ("service", 8000, b"print('serving')\n"))

    def write(self, given: dict) -> str:
        path = self.mktemp() + ".json"
        with open(path, "w", encoding="utf-8") as f:
            json.dump({name: {"document": parsed["document"], "files": parsed["files"]}
                       for name, parsed in given.items()}, f)
        return os.path.abspath(path)
