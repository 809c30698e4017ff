"""DAG runs through the real faces: `titan run` YAML files, the SDK's Pipeline, gates."""
from __future__ import annotations

import os
import sys
import textwrap
import time

from titan.sdk.pipeline import Pipeline
from tests.acceptance.helpers import ClusterTestCase, Journal, wait_ended, wait_run_ended

PY = sys.executable


class DagTests(ClusterTestCase):
    def write(self, name: str, text: str) -> str:
        path = os.path.join(self.base_dir, name)
        with open(path, "w") as f:
            f.write(textwrap.dedent(text))
        return path

    def test_diamond_from_yaml_with_wait(self):
        path = self.write("diamond.yaml", """\
            name: diamond
            jobs:
              - id: a
                command: echo A
              - id: b
                command: echo B
                depends_on: a
              - id: c
                command: echo C
                depends_on: [a]
              - id: d
                command: sh -c 'echo D'
                depends_on: [b, c]
            """)
        result = self.titan("run", path, "--wait")
        self.assertEqual(result.returncode, 0, result.stderr)
        out = result.stdout.decode().splitlines()
        run_id = out[0]
        self.assertTrue(run_id.startswith("diamond-"))
        self.assertEqual(out[1].split(), ["JOB", "STATE", "ATTEMPTS", "DURATION", "WORKER",
                                          "REASON"])
        self.assertEqual([line.split()[:3] for line in out[2:]],
                         [[n, "COMPLETED", "1"] for n in "abcd"])
        self.assertIn(f"{run_id} COMPLETED: COMPLETED 4", result.stderr.decode())
        with self.cluster.client() as c:
            run = c.run(run_id)
            jobs = {j["node"]: j for j in run["jobs"]}
            # No job started before its parents finished.
            self.assertGreaterEqual(jobs["b"]["started_at"], jobs["a"]["finished_at"])
            self.assertGreaterEqual(jobs["d"]["started_at"], max(jobs["b"]["finished_at"],
                                                                 jobs["c"]["finished_at"]))
            self.assertEqual(c.logs(f"{run_id}/d"), b"D\n")
        status = self.titan("status", run_id)
        self.assertEqual(status.stdout.decode().splitlines()[0], "COMPLETED")
        self.assertEqual(self.titan("logs", f"{run_id}/b").stdout, b"B\n")

    def test_a_reference_project_pipeline_runs_as_it_is(self):
        # The reference's layout: a project folder with the YAML, code importing its
        # neighbours and data files; `project: true` ships the folder with the jobs.
        project = os.path.join(self.base_dir, "ref-project")
        os.makedirs(os.path.join(project, "src"))
        os.makedirs(os.path.join(project, "data"))
        files = {
            "src/main.py": "import sys\nfrom helper import greet\n"
                           "print(greet(sys.argv[1:]), open('data/input.txt').read().strip())\n"
                           "open('made-by-' + sys.argv[1] + '.txt', 'w').write('x')\n",
            "src/helper.py": "def greet(args):\n    return 'hello %s' % args\n",
            "data/input.txt": "from the project ✓\n",
            "pipeline.yaml": "name: refproj\nproject: true\njobs:\n"
                             "  - id: first\n    type: run\n    file: src/main.py\n"
                             "    args: \"one 'two three'\"\n    priority: 2\n"
                             "  - id: second\n    file: src/main.py\n    args: again\n"
                             "    depends_on: [first]\n",
        }
        for name, text in files.items():
            with open(os.path.join(project, name), "w", encoding="utf-8") as f:
                f.write(text)
        result = self.titan("run", os.path.join(project, "pipeline.yaml"), "--wait")
        self.assertEqual(result.returncode, 0, result.stderr.decode())
        run_id = result.stdout.decode().splitlines()[0]
        self.assertEqual(self.titan("logs", f"{run_id}/first").stdout.decode(),
                         "hello ['one', 'two three'] from the project ✓\n")
        self.assertEqual(self.titan("logs", f"{run_id}/second").stdout.decode(),
                         "hello ['again'] from the project ✓\n")

    def test_fan_out_and_in_with_results(self):
        p = Pipeline("mapreduce")
        split = p.job("split", [PY, "-c", "print('split')"])
        maps = [p.job(f"map{i}", [PY, "-c", textwrap.dedent(f"""\
                    from titan.sdk import current_job
                    current_job().set_result({{"square": {i} * {i}}})""")])
                for i in range(50)]
        reduce = p.job("reduce", [PY, "-c", textwrap.dedent("""\
                    from titan.sdk import current_job
                    me = current_job()
                    total = sum(r["square"] for r in me.parent_results().values())
                    me.set_result({"total": total})
                    print("total", total)""")])
        split >> maps >> reduce
        with self.cluster.client() as c:
            run_id = c.submit(p)
            run = wait_run_ended(self, c, run_id, 120)
            self.assertEqual(run["state"], "COMPLETED", run["counts"])
            self.assertEqual(run["total"], 52)
            expected = sum(i * i for i in range(50))
            self.assertEqual(c.result(f"{run_id}/reduce"), {"total": expected})
            self.assertEqual(c.logs(f"{run_id}/reduce"), f"total {expected}\n".encode())
        result = self.titan("result", f"{run_id}/reduce")
        self.assertEqual(result.stdout.decode().split(), ["{", '"total":', f"{expected}", "}"])

    def test_failure_retries_then_dead_and_descendants_cancelled(self):
        path = self.write("failing.yaml", """\
            name: failing
            jobs:
              - id: ok
                command: "true"
              - id: flaky
                command: sh -c 'echo try $TITAN_ATTEMPT; exit 7'
                depends_on: ok
                retries: 2
              - id: child
                command: "true"
                depends_on: flaky
              - id: grandchild
                command: "true"
                depends_on: child
              - id: sibling
                command: "true"
                depends_on: ok
            """)
        result = self.titan("run", path, "--wait")
        self.assertEqual(result.returncode, 1)
        run_id = result.stdout.decode().splitlines()[0]
        with self.cluster.client() as c:
            jobs = {j["node"]: j for j in c.run(run_id)["jobs"]}
            self.assertEqual(jobs["flaky"]["state"], "DEAD")
            self.assertEqual(jobs["flaky"]["attempt"], 3)
            self.assertEqual(jobs["flaky"]["reason"], "exit 7")
            self.assertEqual(jobs["child"]["state"], "CANCELLED")
            self.assertEqual(jobs["child"]["reason"], "cancelled: flaky DEAD")
            self.assertEqual(jobs["grandchild"]["reason"], "cancelled: flaky DEAD")
            self.assertEqual(jobs["sibling"]["state"], "COMPLETED")
            # The dead-lettered job keeps its logs: all three attempts.
            self.assertEqual(c.logs(f"{run_id}/flaky"), b"try 1\ntry 2\ntry 3\n")
        status = self.titan("status", f"{run_id}/grandchild").stdout.decode()
        self.assertIn("CANCELLED", status.splitlines()[0])
        self.assertIn("reason:    cancelled: flaky DEAD", status)

    def test_gates_approved_and_rejected_from_the_cli(self):
        path = self.write("gated.yaml", """\
            name: release
            jobs:
              - id: build
                command: echo built
              - id: review
                gate: true
                message: Ship it?
                depends_on: build
              - id: deploy
                command: echo deployed
                depends_on: review
            """)
        approved = self.titan("run", path).stdout.decode().strip()
        rejected = self.titan("run", path).stdout.decode().strip()
        with self.cluster.client() as c:
            for run_id in (approved, rejected):
                self.wait_for(lambda: c.job(f"{run_id}/review")["state"] == "WAITING_APPROVAL",
                              what="the gate to wait")
            info = c.job(f"{approved}/review")
            self.assertIn("waiting for approval (Ship it?)", info["waiting"])
            self.assertEqual(c.job(f"{approved}/deploy")["state"], "PENDING")
            # A bare gate id is ambiguous while two runs have it.
            ambiguous = self.titan("approve", "review")
            self.assertEqual(ambiguous.returncode, 1)
            self.assertIn("job review is in several runs", ambiguous.stderr.decode())
            ok = self.titan("approve", f"{approved}/review", "--comment", "looks good",
                            "--by", "alice")
            self.assertEqual(ok.stdout.decode().strip(), f"{approved}/review APPROVED by alice")
            no = self.titan("reject", f"{rejected}/review", "-m", "not today", "--by", "bob")
            self.assertEqual(no.returncode, 0, no.stderr)
            self.assertEqual(wait_run_ended(self, c, approved, 30)["state"], "COMPLETED")
            self.assertEqual(c.logs(f"{approved}/deploy"), b"deployed\n")
            self.assertEqual(wait_run_ended(self, c, rejected, 30)["state"], "CANCELLED")
            deploy = c.job(f"{rejected}/deploy")
            self.assertEqual(deploy["state"], "CANCELLED")
            self.assertEqual(deploy["reason"], "cancelled: gate review rejected by bob: not today")
            decision = c.job(f"{approved}/review")["decision"]
            self.assertEqual((decision["approved"], decision["by"], decision["comment"]),
                             (True, "alice", "looks good"))
            self.assertLess(abs(decision["at"] - time.time()), 60)
            again = self.titan("approve", f"{rejected}/review")
            self.assertEqual(again.returncode, 1)
            self.assertIn("is not waiting for approval (it is CANCELLED)", again.stderr.decode())

    def test_hitl_message_inserts_a_gate(self):
        p = Pipeline("hitl")
        train = p.job("train", ["true"], hitl_message="Approve the model?")
        p.job("publish", ["true"]).after(train)
        with self.cluster.client() as c:
            run_id = c.submit(p)
            gate = f"{run_id}/train.approval"
            self.wait_for(lambda: c.job(gate)["state"] == "WAITING_APPROVAL",
                          what="the inserted gate")
            self.assertEqual(c.job(f"{run_id}/publish")["depends_on"], ["train.approval"])
            c.approve(gate)
            self.assertEqual(wait_run_ended(self, c, run_id, 30)["state"], "COMPLETED")

    def test_a_task_grows_its_dag_three_levels_deep(self):
        grow = textwrap.dedent("""\
            from titan.sdk import current_job
            me = current_job()
            level = me.node.count(".")
            if level < 3:  # two children of its own, each running this same script
                me.add_jobs([{"id": f"{me.node}.{i}", "script": {"name": "grow.py",
                              "content": open(__file__, "rb").read()},
                              "depends_on": [me.node]} for i in range(2)])
            me.set_result({"level": level})
            """)
        p = Pipeline("agent", agent_run_id="agent-7", stage="PLAN")
        p.script("seed", "grow.py", content=grow.encode())
        with self.cluster.client() as c:
            run_id = c.submit(p)
            run = wait_run_ended(self, c, run_id, 120)
            self.assertEqual(run["state"], "COMPLETED", run["counts"])
            self.assertEqual(run["total"], 1 + 2 + 4 + 8)
            nodes = {j["node"] for j in run["jobs"]}
            self.assertIn("seed.1.0.1", nodes)
            self.assertEqual(c.result(f"{run_id}/seed.0.1.1"), {"level": 3})
            job = c.job(f"{run_id}/seed.0.1")
            self.assertEqual(job["depends_on"], ["seed.0"])
            # The agent run's timeline: its DAG runs in order.
            p2 = Pipeline("agent", agent_run_id="agent-7", stage="EVAL")
            p2.job("judge", ["true"])
            second = c.submit(p2)
            wait_run_ended(self, c, second, 30)
            timeline = c.runs("agent-7")
            self.assertEqual([(r["run_id"], r["stage"], r["state"]) for r in timeline],
                             [(run_id, "PLAN", "COMPLETED"), (second, "EVAL", "COMPLETED")])
        listing = self.titan("runs", "agent-7").stdout.decode().splitlines()
        self.assertEqual([line.split()[2:5] for line in listing[1:]],
                         [["PLAN", "COMPLETED", "15/15"], ["EVAL", "COMPLETED", "1/1"]])

    def test_runaway_growth_is_bounded(self):
        p = Pipeline("runaway", max_jobs=5)
        p.job("loop", [PY, "-c", textwrap.dedent("""\
            from titan.sdk import current_job
            from titan.errors import RemoteError
            me = current_job()
            try:
                me.add_jobs([{"id": f"x{i}", "command": ["true"]} for i in range(10)])
            except RemoteError as e:
                print("refused:", e.message)
            """)])
        with self.cluster.client() as c:
            run_id = c.submit(p)
            run = wait_run_ended(self, c, run_id, 30)
            self.assertEqual(run["total"], 1)
            self.assertEqual(c.logs(f"{run_id}/loop").decode(),
                             f"refused: run {run_id} would have 11 jobs, over its limit of 5 "
                             "(max_jobs)\n")

    def test_a_job_token_cannot_approve_gates(self):
        p = Pipeline("sneaky")
        gate = p.gate("review", "ok?")
        p.job("try", [PY, "-c", textwrap.dedent("""\
            import os
            from titan.sdk import Client
            from titan.errors import RemoteError
            try:
                Client().approve(os.environ["TITAN_RUN_ID"] + "/review")
            except RemoteError as e:
                print(e.code)
            """)])
        p.job("after", ["true"]).after(gate)
        with self.cluster.client() as c:
            run_id = c.submit(p)
            self.assertEqual(wait_ended(self, c, f"{run_id}/try", 20)[0]["state"], "COMPLETED")
            self.assertEqual(c.logs(f"{run_id}/try"), b"forbidden\n")
            self.assertEqual(c.job(f"{run_id}/review")["state"], "WAITING_APPROVAL")
            c.cancel(run_id)
            self.assertEqual(wait_run_ended(self, c, run_id, 30)["state"], "CANCELLED")

    def test_cycle_is_refused_naming_the_jobs(self):
        with self.cluster.client() as c:
            with self.assertRaises(Exception) as caught:
                c.submit_dag({"name": "loop", "jobs": [
                    {"id": "a", "command": ["true"], "depends_on": ["c"]},
                    {"id": "b", "command": ["true"], "depends_on": ["a"]},
                    {"id": "c", "command": ["true"], "depends_on": ["b"]}]})
            self.assertEqual(str(caught.exception), "cycle: a -> b -> c -> a")
        path = self.write("bad.yaml", "name: bad\njobs:\n  - id: a\n    comand: x\n")
        result = self.titan("run", path)
        self.assertEqual(result.returncode, 1)
        self.assertIn(f"{path}:4: jobs[0]: unknown key 'comand'", result.stderr.decode())

    def test_cancel_a_whole_run(self):
        p = Pipeline("long")
        first = p.job("first", ["sleep", "60"])
        p.job("second", ["true"]).after(first)
        with self.cluster.client() as c:
            run_id = c.submit(p)
            self.wait_for(lambda: c.job(f"{run_id}/first")["state"] == "RUNNING",
                          what="the first job")
            result = self.titan("cancel", run_id)
            self.assertEqual(result.stdout.decode().strip(), f"{run_id} CANCELLED")
            run = wait_run_ended(self, c, run_id, 30)
            self.assertEqual(run["state"], "CANCELLED")
            self.assertEqual({j["state"] for j in run["jobs"]}, {"CANCELLED"})


class ScheduleAndRoutingTests(ClusterTestCase):
    workers = 1
    slots = 2

    def test_cron_schedule_starts_runs_until_cancelled(self):
        p = Pipeline("tick", schedule="* * * * * */2")  # every 2 s (seconds field last)
        p.job("hello", ["echo", "tick"])
        with self.cluster.client() as c:
            schedule_id = c.submit_dag(p)["schedule_id"]
            self.assertEqual(schedule_id, "tick")
            self.wait_for(lambda: len([r for r in c.runs() if r["name"] == "tick"]) >= 2,
                          timeout=15, what="two scheduled runs")
            listing = self.titan("schedules").stdout.decode()
            self.assertIn("tick      * * * * * */2", listing)
            self.assertEqual(self.titan("cancel", "tick").returncode, 0)
            count = len([r for r in c.runs() if r["name"] == "tick"])
            # Two periods and more during which no run may start: a span to watch, not a
            # wait for something to come.
            time.sleep(4.5)
            self.assertLessEqual(len([r for r in c.runs() if r["name"] == "tick"]), count + 1)
            for r in [r for r in c.runs() if r["name"] == "tick"]:
                self.assertEqual(wait_run_ended(self, c, r["run_id"], 30)["state"], "COMPLETED")
                self.assertRegex(r["run_id"], r"^tick-\d{8}T\d{6}$")

    def test_gpu_job_without_gpu_worker_does_not_block_others(self):
        journal = Journal(os.path.join(self.base_dir, "journal"))
        with self.cluster.client() as c:
            gpu = c.submit(journal.sh("true"), tags=["GPU"], priority=10)
            plain = c.submit(journal.sh(["echo", "general"]))
            self.assertEqual(wait_ended(self, c, plain, 30)[0]["state"], "COMPLETED")
            job = c.job(gpu)
            self.assertEqual(job["state"], "PENDING")
            self.assertEqual(job["waiting"], "no live worker has the tags GPU")
            status = self.titan("status", gpu).stdout.decode()
            self.assertIn("waiting:   no live worker has the tags GPU", status)
            self.cluster.start_worker("gpu1", tags="GPU")
            try:
                [ended] = wait_ended(self, c, gpu, 30)
                self.assertEqual((ended["state"], ended["worker"]), ("COMPLETED", "gpu1"))
            finally:
                self.cluster.kill_worker("gpu1")
            # Each ran once, where it belongs, the kill of gpu1 after its job notwithstanding.
            self.assertEqual([e.worker for e in journal.starts(gpu)], ["gpu1"])
            journal.check_exactly_once(self, [c.job(gpu), c.job(plain)])
