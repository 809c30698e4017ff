"""Pipelines: YAML (the reference format and Titan's keys) and the Python builder give the
same DAG spec; every error names the file, the line and the key."""
from __future__ import annotations

import os
import subprocess

from twisted.trial.unittest import SynchronousTestCase

from titan.errors import TitanError
from titan.sdk.pipeline import (GATE_TIMEOUT, Gate, Job, Pipeline, PipelineError,
                                load_pipeline)

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

REFERENCE = """\
name: ml-pipeline
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
  - id: report
    file: report.sh
    depends_on: [train]
    delay: 2
"""

KNOWN = ("id, type, file, args, depends_on, requirement, priority, delay, affinity, port, "
         "hitl_message, max_wait_seconds, command, retries, timeout, env, gate, tags, cwd, "
         "message, on_timeout, restart, health, persist")


def job(id, command=None, script=None, **changes):
    """The spec of a job with every default, as the master gets it."""
    spec = {"id": id, "kind": "job", "command": command, "script": script, "depends_on": [],
            "priority": 0, "tags": [], "timeout": None, "retries": 0, "delay": 0.0, "env": {},
            "cwd": None, "hitl_message": None, "max_wait_seconds": None, "affinity": None,
            "type": "run", "port": None}
    assert set(changes) <= set(spec), changes
    spec.update(changes)
    return spec


def gate(id, depends_on=(), message=None, timeout=GATE_TIMEOUT, on_timeout="reject"):
    return {"id": id, "kind": "gate", "depends_on": list(depends_on),
            "message": message or f"approve {id}?", "timeout": timeout,
            "on_timeout": on_timeout}


def dag(name, jobs, **changes):
    spec = {"name": name, "agent_run_id": None, "stage": None, "schedule": None,
            "max_jobs": None, "jobs": jobs}
    spec.update(changes)
    return spec


class ReferenceFormatTests(SynchronousTestCase):
    def setUp(self):
        self.dir = self.mktemp()
        os.makedirs(self.dir)
        for name, content in (("fetch.py", b"print('fetch')\n"), ("train.py", b"print(2)\n"),
                              ("report.sh", b"#!/bin/sh\necho report\n")):
            with open(os.path.join(self.dir, name), "wb") as f:
                f.write(content)

    def expected(self):
        return dag("ml-pipeline", [
            job("fetch", script={"name": "fetch.py", "content": b"print('fetch')\n",
                                 "args": ["--source", "s3://bucket", "--limit", "10"]},
                priority=5),
            job("train", script={"name": "train.py", "content": b"print(2)\n", "args": []},
                depends_on=["fetch"], tags=["GPU"], hitl_message="Approve training results?",
                max_wait_seconds=3600.0),
            job("report", script={"name": "report.sh", "content": b"#!/bin/sh\necho report\n",
                                  "args": []},
                depends_on=["train"], delay=2.0),
        ])

    def test_reference_example(self):
        p = Pipeline.from_yaml(REFERENCE, "ml.yaml", base_dir=self.dir)
        spec = p.to_spec()
        self.assertEqual(spec, self.expected())
        self.assertIsNone(p.project_dir)
        self.assertIsInstance(spec["jobs"][2]["delay"], float)
        self.assertIsInstance(spec["jobs"][1]["max_wait_seconds"], float)

    def test_load_pipeline_reads_scripts_beside_the_file(self):
        path = os.path.join(self.dir, "ml.yaml")
        with open(path, "w") as f:
            f.write(REFERENCE)
        self.assertEqual(load_pipeline(path).to_spec(), self.expected())

    def test_project_true_runs_each_file_from_a_zip_of_the_folder(self):
        with open(os.path.join(self.dir, "fetch.py"), "w") as f:
            f.write("import sys, helper\nprint(helper.greet(sys.argv[1:]), open('data.txt').read())\n")
        with open(os.path.join(self.dir, "helper.py"), "w") as f:
            f.write("def greet(args):\n    return 'hello %s' % args\n")
        with open(os.path.join(self.dir, "data.txt"), "w") as f:
            f.write("beside it")
        text = REFERENCE.replace("project: false", "project: true")
        p = Pipeline.from_yaml(text, "ml.yaml", base_dir=self.dir)
        self.assertEqual(p.project_dir, self.dir)
        spec = p.to_spec()
        plain = self.expected()
        for got, want in zip(spec["jobs"], plain["jobs"]):
            if want["script"] is None:
                self.assertEqual(got, want)
                continue
            self.assertEqual(got["script"]["name"], f"{want['id']}.project.py")
            self.assertEqual(got["script"]["args"], want["script"]["args"])
            self.assertEqual({k: v for k, v in got.items() if k != "script"},
                             {k: v for k, v in want.items() if k != "script"})
        # The launcher unpacks the folder where it runs and runs the file there, with its args.
        work = os.path.abspath(self.mktemp())
        os.makedirs(work)
        launcher = os.path.join(work, "fetch.project.py")
        with open(launcher, "wb") as f:
            f.write(spec["jobs"][0]["script"]["content"])
        done = subprocess.run(["python3", launcher, *spec["jobs"][0]["script"]["args"]],
                              cwd=work, capture_output=True, timeout=30)
        self.assertEqual(done.stdout.decode(),
                         "hello ['--source', 's3://bucket', '--limit', '10'] beside it\n",
                         done.stderr.decode())
        self.assertEqual(sorted(os.listdir(work)), ["fetch.project.py"])  # cleaned up

    def test_project_file_outside_the_folder_is_an_error(self):
        other = self.mktemp()
        os.makedirs(other)
        with open(os.path.join(other, "far.py"), "w") as f:
            f.write("print(1)\n")
        text = ("name: p\nproject: true\njobs:\n  - id: a\n"
                f"    file: {os.path.relpath(os.path.join(other, 'far.py'), self.dir)}\n")
        p = Pipeline.from_yaml(text, "p.yaml", base_dir=self.dir)
        with self.assertRaises(PipelineError) as caught:
            p.to_spec()
        self.assertIn("p.yaml:5: jobs[0].file: job a: p.zip has no file ../", str(caught.exception))

    def test_file_in_a_subdirectory_keeps_its_basename(self):
        os.makedirs(os.path.join(self.dir, "scripts"))
        with open(os.path.join(self.dir, "scripts", "x.sh"), "wb") as f:
            f.write(b"echo x\n")
        p = Pipeline.from_yaml("name: s\nproject: false\njobs:\n  - id: x\n"
                               "    file: scripts/x.sh\n    args: [-v, 3]\n", "s.yaml",
                               base_dir=self.dir)
        self.assertEqual(p.to_spec()["jobs"][0]["script"],
                         {"name": "x.sh", "content": b"echo x\n", "args": ["-v", "3"]})

    def test_service_type_and_port(self):
        text = ("name: svc\njobs:\n"
                "  - {id: api, type: service, file: fetch.py, port: 8080, affinity: w1}\n"
                "  - {id: web, type: service, command: [python3, -m, http.server], port: auto}\n"
                "  - {id: txt, command: 'true', port: '8081'}\n")
        jobs = Pipeline.from_yaml(text, "svc.yaml", base_dir=self.dir).to_spec()["jobs"]
        self.assertEqual([(j["type"], j["port"], j["affinity"]) for j in jobs],
                         [("service", 8080, "w1"), ("service", "auto", None),
                          ("run", "8081", None)])

    def test_persist_keeps_a_service_up_after_its_run(self):
        text = ("name: svc\njobs:\n"
                "  - {id: api, type: service, command: [serve], persist: true}\n"
                "  - {id: use, command: [use], depends_on: api}\n")
        p = Pipeline.from_yaml(text, "svc.yaml", base_dir=self.dir)
        self.assertEqual([j.get("persist") for j in p.to_spec()["jobs"]], [True, None])
        self.assertIn("persist: true", p.to_yaml())
        e = self.assertRaises(PipelineError, Pipeline.from_yaml,
                              "name: s\njobs:\n  - id: a\n    command: x\n"
                              "    persist: true\n", "s.yaml", self.dir)
        self.assertEqual(str(e), "s.yaml:5: jobs[0].persist: only for a service "
                                 "(add type: service)")
        b = Pipeline("b")
        self.assertTrue(b.job("api", "serve", type="service", persist=True).to_spec()["persist"])


class ReferenceDefaultsTests(SynchronousTestCase):
    """What the reference's YAML parser (titan_yaml_parser.py) makes of its own files."""

    def setUp(self):
        self.dir = self.mktemp()
        os.makedirs(os.path.join(self.dir, "src"))
        with open(os.path.join(self.dir, "src", "step.py"), "w") as f:
            f.write("print('step')\n")

    def read(self, text):
        return Pipeline.from_yaml(text, "ref.yaml", base_dir=self.dir)

    def test_version_is_read_and_left_alone(self):
        for version in ('"1.0"', "1.0", "2"):
            p = self.read(f"name: v\nversion: {version}\njobs:\n  - {{id: a, command: 'true'}}\n")
            self.assertEqual(p.to_spec(), dag("v", [job("a", ["true"])]))
        e = self.assertRaises(PipelineError, self.read,
                              "name: v\nversion: [1]\njobs:\n  - {id: a, command: 'true'}\n")
        self.assertEqual(str(e), "ref.yaml:2: version must be a version label like '1.0', "
                                 "not [1]")

    def test_requirement_general_means_any_worker(self):
        p = self.read("name: g\njobs:\n"
                      "  - {id: a, command: 'true', requirement: GENERAL}\n"
                      "  - {id: b, command: 'true', requirement: general, tags: [ssd]}\n"
                      "  - {id: c, command: 'true', requirement: GPU}\n")
        self.assertEqual([j["tags"] for j in p.to_spec()["jobs"]], [[], ["ssd"], ["GPU"]])

    def test_affinity_true_means_the_parents_worker(self):
        p = self.read("name: s\njobs:\n"
                      "  - {id: a, command: 'true'}\n"
                      "  - {id: b, command: 'true', depends_on: a, affinity: true}\n"
                      "  - {id: c, command: 'true', depends_on: a, affinity: false}\n"
                      "  - {id: d, command: 'true', affinity: w2}\n"
                      "  - {id: e, command: 'true', affinity: 'strict:w2'}\n")
        self.assertEqual([j["affinity"] for j in p.to_spec()["jobs"]],
                         [None, "parent", None, "w2", "strict:w2"])
        e = self.assertRaises(PipelineError, self.read,
                              "name: s\njobs:\n  - id: a\n    command: 'true'\n"
                              "    affinity: 3\n")
        self.assertEqual(str(e), "ref.yaml:5: jobs[0].affinity must be true, false, parent, a "
                                 "worker's name or strict:..., not 3")
        b = Pipeline("b")
        b.job("x", "true")
        self.assertEqual(b.job("y", "true", affinity=True, depends_on="x").affinity, "parent")

    def test_project_defaults_to_true_as_in_the_reference(self):
        p = self.read("name: ref\njobs:\n  - {id: a, file: src/step.py, args: GO}\n")
        self.assertEqual(p.project_dir, self.dir)
        [spec] = p.to_spec()["jobs"]
        self.assertEqual(spec["script"]["name"], "a.project.py")  # runs src/step.py from the zip
        self.assertEqual(spec["script"]["args"], ["GO"])
        self.assertIn("project: true", p.to_yaml())
        plain = self.read("name: ref\nproject: false\njobs:\n  - {id: a, file: src/step.py}\n")
        self.assertIsNone(plain.project_dir)
        self.assertEqual(plain.to_spec()["jobs"][0]["script"]["name"], "step.py")
        self.assertIn("project: false", plain.to_yaml())  # read back the same
        self.assertIsNone(self.read("name: c\njobs:\n  - {id: a, command: 'true'}\n")
                          .project_dir)  # no file job: nothing to ship

    def test_a_big_folder_by_default_says_how_to_ship_the_file_alone(self):
        with open(os.path.join(self.dir, "big.bin"), "wb") as f:
            f.write(os.urandom(9 * 2**20))  # does not compress
        p = self.read("name: ref\njobs:\n  - {id: a, file: src/step.py}\n")
        e = self.assertRaises(PipelineError, p.to_spec)
        self.assertEqual(str(e), f"pipeline 'ref': the project folder {self.dir} zips to more "
                                 "than 8 MB; ship big data as files the jobs read, or run it "
                                 "with project: false (project is true unless the YAML says "
                                 "otherwise, as in the reference)")
        self.read("name: ref\nproject: false\njobs:\n  - {id: a, file: src/step.py}\n"
                  ).to_spec()  # the file alone

    def test_the_reference_example_pipeline(self):
        # titan_test_suite/examples/yaml_based_static_tests/dag_structure_test/agent.yaml,
        # the reference's own example, as it is written.
        for name in ("scripts/init.py", "src/processor.py", "src/server.py"):
            os.makedirs(os.path.join(self.dir, os.path.dirname(name)), exist_ok=True)
            with open(os.path.join(self.dir, name), "w") as f:
                f.write("print(1)\n")
        p = self.read('''\
name: "titan-comprehensive-test"
version: "1.0"
jobs:
  - id: "step-1-init"
    type: "run"
    file: "scripts/init.py"
    priority: 10
    args: "--mode reset"
  - id: "step-2-fetch"
    type: "run"
    file: "src/processor.py"
    args: "FETCH"
    delay: 2
    depends_on:
      - "step-1-init"
  - id: "step-3-process"
    type: "run"
    file: "src/processor.py"
    args: "PROCESS_DATA"
    requirement: GENERAL
    affinity: true
    depends_on:
      - "step-2-fetch"
  - id: "step-4-server"
    type: "service"
    file: "src/server.py"
    port: 9000
    depends_on:
      - "step-3-process"
''')
        jobs = {j["id"]: j for j in p.to_spec()["jobs"]}
        self.assertEqual(jobs["step-3-process"]["affinity"], "parent")
        self.assertEqual(jobs["step-3-process"]["tags"], [])
        self.assertEqual(jobs["step-4-server"]["type"], "service")
        self.assertEqual(jobs["step-4-server"]["script"]["name"], "step-4-server.project.py")


class TitanKeysTests(SynchronousTestCase):
    def test_every_titan_key(self):
        text = """\
name: etl
schedule: "*/5 * * * *"
agent_run_id: run-42
stage: PLAN
max_jobs: 20
jobs:
  - id: extract
    command: python3 extract.py --since 'last week'
    retries: 2
    timeout: 60
    env: {REGION: eu, DEBUG: 1, FLAG: yes}
    tags: GPU, HIGH_MEM
    requirement: SSD
    cwd: /srv/etl
    priority: -3
  - id: review
    gate: true
    depends_on: extract
    message: Ship it?
    timeout: 2h
    on_timeout: approve
  - id: load
    command: [python3, load.py, 10]
    depends_on: [review, extract]
    delay: 500ms
    timeout: 1h30m
    tags: [GPU]
    requirement: GPU
"""
        spec = Pipeline.from_yaml(text, "etl.yaml").to_spec()
        self.assertEqual(spec, dag("etl", [
            job("extract", ["python3", "extract.py", "--since", "last week"], retries=2,
                timeout=60.0, env={"REGION": "eu", "DEBUG": "1", "FLAG": "yes"},
                tags=["GPU", "HIGH_MEM", "SSD"], cwd="/srv/etl", priority=-3),
            gate("review", ["extract"], "Ship it?", 7200.0, "approve"),
            job("load", ["python3", "load.py", "10"], depends_on=["review", "extract"],
                delay=0.5, timeout=5400.0, tags=["GPU"]),
        ], schedule="*/5 * * * *", agent_run_id="run-42", stage="PLAN", max_jobs=20))

    def test_durations(self):
        for written, seconds in (("500ms", 0.5), ("2s", 2.0), ("5m", 300.0), ("1h", 3600.0),
                                 ("1h30m", 5400.0), ("1.5", 1.5), ("0", 0.0), ("'3'", 3.0),
                                 ("1d", 86400.0), ("2 m", 120.0)):
            text = f"name: d\njobs:\n  - id: a\n    command: 'true'\n    delay: {written}\n"
            delay = Pipeline.from_yaml(text, "d.yaml").to_spec()["jobs"][0]["delay"]
            self.assertEqual((written, delay), (written, seconds))

    def test_gate_defaults_and_aliases(self):
        text = """\
name: g
jobs:
  - {id: a, command: 'true'}
  - {id: ok, gate: true, depends_on: a}
  - {id: hitl, gate: true, depends_on: [ok], hitl_message: 'Sure?', max_wait_seconds: 60}
  - {id: b, command: 'true', depends_on: hitl, gate: false}
"""
        jobs = Pipeline.from_yaml(text, "g.yaml").to_spec()["jobs"]
        self.assertEqual(jobs[1:3], [gate("ok", ["a"], "approve ok?", 172800.0, "reject"),
                                     gate("hitl", ["ok"], "Sure?", 60.0)])
        self.assertEqual(jobs[3], job("b", ["true"], depends_on=["hitl"]))

    def test_schedule_with_six_fields(self):
        text = "name: s\nschedule: 0 0 * * * 30\njobs:\n  - {id: a, command: 'true'}\n"
        self.assertEqual(Pipeline.from_yaml(text, "s.yaml").schedule, "0 0 * * * 30")

    def test_text_stays_as_written(self):
        text = "name: 2024\njobs:\n  - {id: 007, command: [echo, 0x10, 1.0, no]}\n"
        spec = Pipeline.from_yaml(text, "t.yaml").to_spec()
        self.assertEqual((spec["name"], spec["jobs"][0]["id"], spec["jobs"][0]["command"]),
                         ("2024", "007", ["echo", "0x10", "1.0", "no"]))

    def test_anchors(self):
        text = ("name: a\njobs:\n  - {id: a, command: &c [echo, hi]}\n"
                "  - {id: b, command: *c, depends_on: a}\n")
        jobs = Pipeline.from_yaml(text, "a.yaml").to_spec()["jobs"]
        self.assertEqual([j["command"] for j in jobs], [["echo", "hi"], ["echo", "hi"]])

    def test_spec_is_a_fresh_copy(self):
        p = Pipeline.from_yaml("name: c\njobs:\n  - {id: a, command: [x], env: {A: b}}\n")
        spec = p.to_spec()
        spec["jobs"][0]["command"].append("y")
        spec["jobs"][0]["env"]["B"] = "c"
        self.assertEqual(p.to_spec()["jobs"][0], job("a", ["x"], env={"A": "b"}))


class YamlErrorTests(SynchronousTestCase):
    def assertError(self, text, message, base_dir=None):
        e = self.assertRaises(PipelineError, Pipeline.from_yaml, text, "etl.yaml", base_dir)
        self.assertEqual(str(e), message)
        self.assertIsInstance(e, TitanError)

    def test_wrong_type(self):
        text = """\
name: etl
jobs:
  - id: extract
    command: python3 e.py
  - id: load
    command: python3 l.py
    retries: x
"""
        self.assertError(text, "etl.yaml:7: jobs[1].retries must be a whole number, not 'x'")
        self.assertError(text.replace("retries: x", "retries: -1"),
                         "etl.yaml:7: jobs[1].retries must be 0 or more, not -1")
        self.assertError(text.replace("retries: x", "priority: 1.5"),
                         "etl.yaml:7: jobs[1].priority must be a whole number, not 1.5")
        self.assertError(text.replace("retries: x", "timeout: 0"),
                         "etl.yaml:7: jobs[1].timeout must be more than 0 seconds, not 0")
        self.assertError(text.replace("retries: x", "delay: soon"),
                         "etl.yaml:7: jobs[1].delay must be a number of seconds or a duration "
                         "like '500ms', '2s', '5m', '1h', not 'soon'")
        self.assertError(text.replace("retries: x", "env: {A: null}"),
                         "etl.yaml:7: jobs[1].env.A must be a string, not None")
        self.assertError(text.replace("retries: x", "env: [A]"),
                         "etl.yaml:7: jobs[1].env must be a mapping of names to strings, "
                         "not ['A']")
        self.assertError(text.replace("retries: x", "type: daemon"),
                         "etl.yaml:7: jobs[1].type must be run or service, not 'daemon'")
        self.assertError(text.replace("retries: x", "port: true"),
                         "etl.yaml:7: jobs[1].port must be a port number or a string, "
                         "not True")
        self.assertError(text.replace("retries: x", "command: []"),
                         "etl.yaml:7: jobs[1].command is given twice (first at line 6)")
        text = text.replace("    retries: x\n", "")
        self.assertError(text.replace("python3 l.py", "''"),
                         "etl.yaml:6: jobs[1].command: the command is empty")
        self.assertError(text.replace("python3 l.py", "\"echo 'x\""),
                         "etl.yaml:6: jobs[1].command: cannot split \"echo 'x\" like a "
                         "shell: No closing quotation")

    def test_unknown_key(self):
        text = "name: etl\njobs:\n  - id: extract\n    comand: python3 e.py\n"
        self.assertError(text, f"etl.yaml:4: jobs[0]: unknown key 'comand' (known: {KNOWN})")
        self.assertError("name: etl\nretry: 1\njobs: []\n",
                         "etl.yaml:2: unknown key 'retry' (known: name, project, jobs, "
                         "schedule, agent_run_id, stage, max_jobs, version, workspace)")

    def test_unknown_dependency(self):
        text = """\
name: etl
jobs:
  - id: extract
    command: python3 e.py
  - id: load
    command: python3 l.py
    depends_on:
      - extract
  - id: report
    command: python3 r.py
    depends_on:
      - extract
      - lod
"""
        self.assertError(text, "etl.yaml:13: jobs[2].depends_on: unknown job 'lod'")
        self.assertError(text.replace("      - extract\n      - lod\n", "      lod\n"),
                         "etl.yaml:12: jobs[2].depends_on: unknown job 'lod'")

    def test_duplicate_ids_name_both_lines(self):
        text = """\
name: etl
jobs:
  - id: extract
    command: python3 e.py
  - id: load
    command: python3 l.py
  - command: python3 e2.py
    id: extract
"""
        self.assertError(text, "etl.yaml:8: jobs[2].id: 'extract' is already the id of "
                               "jobs[0] (line 3)")

    def test_cycle(self):
        text = """\
name: etl
jobs:
  - id: a
    command: 'true'
    depends_on: [c]
  - id: b
    command: 'true'
    depends_on: [a]
  - id: c
    command: 'true'
    depends_on: [b]
  - id: d
    command: 'true'
    depends_on: [c]
"""
        self.assertError(text, "etl.yaml:5: jobs[0].depends_on: cycle: a -> b -> c -> a")
        # The cycle starts at the job that comes first, whichever way it is found.
        text = """\
name: etl
jobs:
  - {id: x, command: 'true'}
  - {id: b, command: 'true', depends_on: [x, c]}
  - {id: c, command: 'true', depends_on: [b]}
"""
        self.assertError(text, "etl.yaml:4: jobs[1].depends_on: cycle: b -> c -> b")
        self.assertError("name: etl\njobs:\n  - id: a\n    command: 'true'\n"
                         "    depends_on: a\n",
                         "etl.yaml:5: jobs[0].depends_on: 'a' depends on itself")

    def test_missing_file(self):
        base = self.mktemp()
        os.makedirs(base)
        text = "name: etl\njobs:\n  - id: x\n    depends_on: []\n    file: scripts/x.py\n"
        self.assertError(text, "etl.yaml:5: jobs[0].file: cannot read scripts/x.py: "
                               "No such file or directory", base_dir=base)
        os.makedirs(os.path.join(base, "scripts", "x.py"))
        self.assertError(text, "etl.yaml:5: jobs[0].file: cannot read scripts/x.py: "
                               "Is a directory", base_dir=base)

    def test_no_jobs(self):
        self.assertError("name: etl\njobs: []\n",
                         "etl.yaml:2: jobs: a pipeline needs at least one job")
        self.assertError("name: etl\njobs:\n",
                         "etl.yaml:2: jobs: a pipeline needs at least one job")
        self.assertError("name: etl\n", "etl.yaml:1: jobs: a pipeline needs at least one job "
                                        "(there is no jobs: list)")
        self.assertError("", "etl.yaml:1: the pipeline is empty: it needs a name and jobs")
        self.assertError("# nothing\n", "etl.yaml:1: the pipeline is empty: it needs a name "
                                        "and jobs")
        self.assertError("name: etl\njobs: {a: 1}\n",
                         "etl.yaml:2: jobs must be a list of jobs, not {'a': 1}")

    def test_command_and_file(self):
        self.assertError("name: etl\njobs:\n  - id: a\n    file: a.py\n    command: x\n",
                         "etl.yaml:5: jobs[0]: give command or file, not both")
        self.assertError("name: etl\njobs:\n  - id: a\n    retries: 1\n",
                         "etl.yaml:3: jobs[0]: give command or file (the script to run)")
        self.assertError("name: etl\njobs:\n  - id: a\n    command: x\n    args: -v\n",
                         "etl.yaml:5: jobs[0].args: only with file (put the arguments in "
                         "command)")

    def test_gate_keys(self):
        self.assertError("name: etl\njobs:\n  - id: g\n    gate: true\n    command: x\n",
                         "etl.yaml:5: jobs[0].command: not allowed on a gate (a gate takes id, "
                         "gate, depends_on, message, hitl_message, timeout, max_wait_seconds, "
                         "on_timeout)")
        self.assertError("name: etl\njobs:\n  - id: g\n    gate: true\n    on_timeout: wait\n",
                         "etl.yaml:5: jobs[0].on_timeout must be reject or approve, "
                         "not 'wait'")
        self.assertError("name: etl\njobs:\n  - id: g\n    gate: yes please\n",
                         "etl.yaml:4: jobs[0].gate must be true or false, not 'yes please'")
        self.assertError("name: etl\njobs:\n  - id: g\n    gate: true\n    message: a\n"
                         "    hitl_message: b\n",
                         "etl.yaml:6: jobs[0]: give message or hitl_message, not both")
        self.assertError("name: etl\njobs:\n  - id: a\n    command: x\n    message: hi\n",
                         "etl.yaml:5: jobs[0].message: only for a gate (add gate: true)")

    def test_ids_and_names(self):
        self.assertError("name: etl\njobs:\n  - id: a/b\n    command: x\n",
                         "etl.yaml:3: jobs[0].id must be letters, digits, '_', '.' or '-', "
                         "not 'a/b'")
        self.assertError("name: etl\njobs:\n  - command: x\n", "etl.yaml:3: jobs[0]: id is "
                                                               "required")
        self.assertError("jobs:\n  - {id: a, command: x}\n", "etl.yaml:1: name is required")
        self.assertError("name: my etl\njobs:\n  - {id: a, command: x}\n",
                         "etl.yaml:1: name must be letters, digits, '_', '.' or '-', "
                         "not 'my etl'")
        self.assertError("name: etl\njobs:\n  - just a string\n",
                         "etl.yaml:3: jobs[0] must be a mapping of keys, not 'just a string'")

    def test_top_level_values(self):
        tail = "jobs:\n  - {id: a, command: x}\n"
        self.assertError("name: etl\nschedule: '* * * 99 *'\n" + tail,
                         "etl.yaml:2: schedule is not a valid cron expression: '* * * 99 *'")
        self.assertError("name: etl\nschedule: '* * * *'\n" + tail,
                         "etl.yaml:2: schedule must be a cron expression of 5 or 6 fields, "
                         "not '* * * *'")
        self.assertError("name: etl\nmax_jobs: 0\n" + tail,
                         "etl.yaml:2: max_jobs must be 1 or more, not 0")
        self.assertError("name: etl\nproject: maybe\n" + tail,
                         "etl.yaml:2: project must be true or false, not 'maybe'")
        self.assertError("name: etl\nname: etl2\n" + tail,
                         "etl.yaml:2: name is given twice (first at line 1)")
        self.assertError("- a\n- b\n", "etl.yaml:1: a pipeline must be a mapping of keys "
                                       "(name, jobs, ...)")

    def test_not_yaml(self):
        self.assertError("name: etl\njobs: [\n", "etl.yaml:3: not valid YAML: expected the "
                                                 "node content, but found '<stream end>'")

    def test_load_pipeline_errors(self):
        missing = os.path.join(self.mktemp(), "p.yaml")
        e = self.assertRaises(PipelineError, load_pipeline, missing)
        self.assertEqual(str(e), f"{missing}: cannot read the pipeline: "
                                 "No such file or directory")
        path = self.mktemp()
        with open(path, "w") as f:
            f.write("name: etl\njobs:\n  - {id: a, command: x, retries: x}\n")
        e = self.assertRaises(PipelineError, load_pipeline, path)
        self.assertEqual(str(e), f"{path}:3: jobs[0].retries must be a whole number, not 'x'")


class BuilderTests(SynchronousTestCase):
    def test_the_example(self):
        p = Pipeline("etl")
        a = p.job("extract", ["python3", "extract.py"], retries=2, timeout=60, tags=["GPU"],
                  env={"A": "1"}, priority=0, delay=0)
        b = p.job("transform", "python3 transform.py")
        s = p.script("load", "load.py", content=b"print('load')\n", args=["--x"])
        g = p.gate("review", message="Ship it?", timeout=3600, on_timeout="reject")
        self.assertIs(a >> b >> g >> s, s)
        self.assertEqual((type(a), type(g)), (Job, Gate))
        self.assertEqual(p.to_spec(), dag("etl", [
            job("extract", ["python3", "extract.py"], retries=2, timeout=60.0, tags=["GPU"],
                env={"A": "1"}),
            job("transform", ["python3", "transform.py"], depends_on=["extract"]),
            job("load", script={"name": "load.py", "content": b"print('load')\n",
                                "args": ["--x"]}, depends_on=["review"]),
            gate("review", ["transform"], "Ship it?", 3600.0),
        ]))

    def test_operators(self):
        p = Pipeline("ops")
        a, b, c, d, e = (p.job(n, ["true"]) for n in "abcde")
        self.assertIs([a, b] >> c, c)
        self.assertEqual(c << [d], [d])
        self.assertIs([e] << c, c)
        self.assertEqual(a >> [d, e], [d, e])
        a >> c            # already there: not twice
        deps = {n["id"]: n["depends_on"] for n in p.to_spec()["jobs"]}
        self.assertEqual(deps, {"a": [], "b": [], "c": ["a", "b", "d"], "d": ["a"],
                                "e": ["c", "a"]})
        with self.assertRaises(TypeError):
            a >> "b"
        with self.assertRaises(TypeError):
            a >> 3

    def test_depends_on_by_id_node_or_later(self):
        p = Pipeline("ids")
        a = p.job("a", "true")
        p.job("b", "true", depends_on=[a, "c"])
        p.job("c", "true", depends_on="a")
        g = p.gate("g", depends_on=a)
        g.after("b", p["c"])
        self.assertEqual([n["depends_on"] for n in p.to_spec()["jobs"]],
                         [[], ["a", "c"], ["a"], ["a", "b", "c"]])
        self.assertEqual((len(p), "g" in p, "z" in p, p.jobs[3]), (4, True, False, g))

    def test_builder_errors(self):
        p = Pipeline("etl")
        p.job("a", "true")
        cases = [
            (lambda: p.job("a", "x"), "pipeline 'etl': job id 'a' is used twice"),
            (lambda: p.job("x/y", "x"), "pipeline 'etl': job id must be letters, digits, "
                                        "'_', '.' or '-', not 'x/y'"),
            (lambda: p.job("b", "x", retries="x"),
             "pipeline 'etl': job 'b': retries must be a whole number, not 'x'"),
            (lambda: p.job("b", ""), "pipeline 'etl': job 'b': command: the command is empty"),
            (lambda: p.job("b", "x", env={"A": 1}),
             "pipeline 'etl': job 'b': env.A must be a string, not 1"),
            (lambda: p.job("b", "x", timeout="forever"),
             "pipeline 'etl': job 'b': timeout must be a number of seconds or a duration like "
             "'500ms', '2s', '5m', '1h', not 'forever'"),
            (lambda: p.gate("g", on_timeout="later"),
             "pipeline 'etl': job 'g': on_timeout must be reject or approve, not 'later'"),
            (lambda: p.script("s", "s.py"), "pipeline 'etl': job 's': script: give content "
                                            "or path, one of them"),
            (lambda: p.script("s", "a/s.py", content=b""),
             "pipeline 'etl': job 's': script: name must be a file name, not 'a/s.py'"),
            (lambda: Pipeline("bad name"), "pipeline 'bad name': name must be letters, "
                                           "digits, '_', '.' or '-', not 'bad name'"),
            (lambda: Pipeline("x", schedule="every day"),
             "pipeline 'x': schedule must be a cron expression of 5 or 6 fields, "
             "not 'every day'"),
            (lambda: Pipeline("x").to_spec(), "pipeline 'x': a pipeline needs at least one "
                                              "job"),
        ]
        for call, message in cases:
            e = self.assertRaises(PipelineError, call)
            self.assertEqual(str(e), message)
        # Nothing that failed was added.
        self.assertEqual([n.id for n in p.jobs], ["a"])
        missing = os.path.join(self.mktemp(), "s.py")
        e = self.assertRaises(PipelineError, p.script, "s", path=missing)
        self.assertEqual(str(e), f"pipeline 'etl': job 's': script: cannot read {missing}: "
                                 "No such file or directory")

    def test_graph_errors_at_to_spec(self):
        p = Pipeline("g")
        a, b, c = p.job("a", "x"), p.job("b", "x"), p.job("c", "x", depends_on=["lod"])
        e = self.assertRaises(PipelineError, p.to_spec)
        self.assertEqual(str(e), "pipeline 'g': job 'c': depends_on: unknown job 'lod'")
        c.depends_on.remove("lod")
        a >> b >> c >> a
        e = self.assertRaises(PipelineError, p.to_spec)
        self.assertEqual(str(e), "pipeline 'g': job 'a': depends_on: cycle: a -> b -> c -> a")
        e = self.assertRaises(PipelineError, p.to_yaml)
        self.assertEqual(str(e), "pipeline 'g': job 'a': depends_on: cycle: a -> b -> c -> a")
        other = Pipeline("other").job("o", "x")
        e = self.assertRaises(PipelineError, lambda: other >> a)
        self.assertEqual(str(e), "pipeline 'g': job 'a': depends_on: 'o' is a job of "
                                 "pipeline 'other', not of 'g'")

    def test_script_from_path(self):
        path = os.path.join(self.mktemp(), "load.py")
        os.makedirs(os.path.dirname(path))
        with open(path, "wb") as f:
            f.write(b"print('from disk')\n")
        p = Pipeline("s")
        p.script("load", path=path, args="--fast --n 3")
        p.script("text", "t.sh", content="echo é\n")
        jobs = p.to_spec()["jobs"]
        self.assertEqual([j["script"] for j in jobs], [
            {"name": "load.py", "content": b"print('from disk')\n",
             "args": ["--fast", "--n", "3"]},
            {"name": "t.sh", "content": "echo é\n".encode(), "args": []}])
        self.assertEqual([j["command"] for j in jobs], [None, None])

    def test_fan_out_one_fifty_one(self):
        p = Pipeline("fanout", agent_run_id="r1", stage="ITER", max_jobs=100)
        split = p.job("split", "python3 split.py")
        reduce = p.job("reduce", "python3 reduce.py", retries=1)
        maps = [p.job(f"map-{i}", ["python3", "map.py", str(i)], tags="CPU") for i in range(50)]
        split >> maps >> reduce
        spec = p.to_spec()
        self.assertEqual(len(spec["jobs"]), 52)
        by_id = {j["id"]: j for j in spec["jobs"]}
        self.assertEqual(by_id["reduce"]["depends_on"], [f"map-{i}" for i in range(50)])
        self.assertEqual({tuple(by_id[f"map-{i}"]["depends_on"]) for i in range(50)},
                         {("split",)})
        self.assertEqual(by_id["map-49"]["command"], ["python3", "map.py", "49"])
        self.assertEqual((spec["agent_run_id"], spec["stage"], spec["max_jobs"]),
                         ("r1", "ITER", 100))
        again = Pipeline.from_yaml(p.to_yaml(), "fanout.yaml").to_spec()
        self.assertEqual(again, spec)


class RoundTripTests(SynchronousTestCase):
    def build(self):
        p = Pipeline("rt", schedule="0 3 * * *", agent_run_id="run.1", stage="EVAL",
                     max_jobs=9)
        a = p.job("a", ["python3", "-c", "print('yes', 1)"], retries=3, timeout="90s",
                  tags="GPU,SSD", env={"N": "1", "YES": "yes", "EMPTY": ""}, cwd="/tmp",
                  priority=7, delay="250ms", affinity="w1")
        b = p.job("b", ["sleep", "5"], hitl_message="Look at b?\nReally?", max_wait_seconds=60)
        svc = p.job("svc", "python3 -m http.server", type="service", port="8000")
        g = p.gate("g", timeout="1d", on_timeout="approve")
        g2 = p.gate("g2", message="Second: sure?")
        c = p.job("c", "true", port=9000)
        a >> [b, svc] >> g >> g2 >> c
        return p

    def test_commands_and_gates(self):
        p = self.build()
        text = p.to_yaml()
        again = Pipeline.from_yaml(text, "rt.yaml")
        self.assertEqual(again.to_spec(), p.to_spec())
        self.assertEqual(again.to_yaml(), text)
        # Defaults are left out of the YAML.
        self.assertNotIn("retries: 0", text)
        self.assertIn("schedule: 0 3 * * *", text)

    def test_scripts_saved_beside_the_yaml(self):
        p = self.build()
        p.script("s", "s.py", content=b"print('s')\n", args=["--a", "1"], depends_on="c")
        p.script("t", "run.sh", content=b"echo t\n", depends_on=["s"])
        self.assertIn("file: s.py", p.to_yaml())
        directory = self.mktemp()
        os.makedirs(directory)
        path = os.path.join(directory, "rt.yaml")
        p.save(path)
        self.assertEqual(sorted(os.listdir(directory)), ["rt.yaml", "run.sh", "s.py"])
        self.assertEqual(load_pipeline(path).to_spec(), p.to_spec())
        with open(path) as f:
            text = f.read()
        self.assertEqual(Pipeline.from_yaml(text, base_dir=directory).to_spec(), p.to_spec())

    def test_two_scripts_with_one_name(self):
        p = Pipeline("two")
        p.script("a", "run.py", content=b"1")
        p.script("b", "run.py", content=b"1")
        p.to_yaml()     # the same script twice is fine
        p.script("c", "run.py", content=b"2")
        e = self.assertRaises(PipelineError, p.to_yaml)
        self.assertEqual(str(e), "pipeline 'two': jobs 'a' and 'c' have different scripts both "
                                 "named 'run.py'; YAML names a script by its file, so give "
                                 "them different names")

    def test_project_round_trip(self):
        base = self.mktemp()
        p = Pipeline("proj", project_dir=base)
        p.job("a", "true")
        self.assertIn("project: true", p.to_yaml())
        self.assertEqual(Pipeline.from_yaml(p.to_yaml(), base_dir=base).project_dir, base)


class ExamplePipelinesTests(SynchronousTestCase):
    def load(self, name):
        return load_pipeline(os.path.join(ROOT, "etc", "pipelines", name)).to_spec()

    def test_etl(self):
        spec = self.load("etl.yaml")
        self.assertEqual(spec["name"], "etl")
        self.assertEqual([(j["id"], j["depends_on"], j["retries"] > 0) for j in spec["jobs"]],
                         [("extract", [], True), ("transform", ["extract"], True),
                          ("load", ["transform"], True)])

    def test_fanout(self):
        spec = self.load("fanout.yaml")
        ids = [j["id"] for j in spec["jobs"]]
        maps = [f"map-{i}" for i in range(10)]
        self.assertEqual(ids, ["split", *maps, "reduce"])
        self.assertEqual(spec["jobs"][-1]["depends_on"], maps)
        self.assertEqual([j["env"]["SHARD"] for j in spec["jobs"][1:-1]],
                         [str(i) for i in range(10)])

    def test_gated(self):
        spec = self.load("gated.yaml")
        self.assertEqual([(j["id"], j["kind"], j["depends_on"]) for j in spec["jobs"]],
                         [("build", "job", []), ("approve-release", "gate", ["build"]),
                          ("deploy", "job", ["approve-release"])])
        self.assertEqual((spec["jobs"][1]["timeout"], spec["jobs"][1]["on_timeout"]),
                         (3600.0, "reject"))

    def test_examples_run_with_python3_alone(self):
        """Each example's commands run, in order, on this box (gates approved)."""
        for name in ("etl.yaml", "fanout.yaml", "gated.yaml"):
            shared = os.path.abspath(self.mktemp())
            for spec in self.load(name)["jobs"]:
                if spec["kind"] == "gate":
                    continue
                self.assertIsNone(spec["script"])
                self.assertEqual(spec["command"][0], "python3")
                env = {k: (shared if v.startswith("/tmp/titan-example-") else v)
                       for k, v in spec["env"].items()}
                workdir = os.path.join(shared + "-work", spec["id"])
                os.makedirs(workdir)
                done = subprocess.run(spec["command"], env={**os.environ, **env}, cwd=workdir,
                                      capture_output=True, timeout=60)
                self.assertEqual((name, spec["id"], done.returncode, done.stderr),
                                 (name, spec["id"], 0, b""))


class LoaderTests(SynchronousTestCase):
    """The YAML is read by libyaml (PyYAML's wheels carry it), fast, keeping its lines."""

    def test_libyaml_reads_the_file(self):
        import yaml
        from titan.sdk import pipeline
        self.assertTrue(yaml.__with_libyaml__)
        self.assertTrue(issubclass(pipeline._Loader, yaml.CSafeLoader))

    def test_ten_thousand_jobs_load_quickly_and_keep_their_lines(self):
        import sys
        import time
        sys.path.insert(0, os.path.join(ROOT, "bench"))
        try:
            from yaml_load import pipeline_text
        finally:
            sys.path.pop(0)
        text = pipeline_text(10_000)
        start = time.process_time()  # CPU time: other processes on the machine do not count
        spec = Pipeline.from_yaml(text, "big.yaml").to_spec()
        took = time.process_time() - start
        self.assertEqual(len(spec["jobs"]), 10_000)
        self.assertEqual(spec["jobs"][10]["env"], {"STEP": "10", "DEBUG": "yes"})
        self.assertEqual(spec["jobs"][10]["timeout"], 300.0)
        self.assertEqual(spec["jobs"][7]["depends_on"], ["step-3", "step-6"])
        # ~0.25 s on the 2-core CI VM; the pure-Python parser took 3.4 s.  Generous, for a
        # busy machine.
        self.assertLess(took, 1.5)
        # A mistake near the end is still named by its line.
        bad = text.replace("  - id: step-9999\n", "  - id: step-9999\n    retries: many\n")
        e = self.assertRaises(PipelineError, Pipeline.from_yaml, bad, "big.yaml")
        line = bad.splitlines().index("    retries: many") + 1
        self.assertEqual(str(e), f"big.yaml:{line}: jobs[9999].retries must be a whole "
                                 "number, not 'many'")
