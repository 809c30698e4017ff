"""examples/research_agent/ end to end, offline, on a real cluster: run as a user runs it (the
Python entry point, the YAML pipeline with `titan run`), checked through the CLI and the SDK.

No model is named in the environment, so the agent's jobs use titan.agents' scripted provider
with the example's deterministic replies: PLAN gives 3 sub-questions, the first EVAL asks for a
second round of 2, the second is satisfied.  ResearchAgentOnlineTests names a model instead:
an OpenAI-compatible server on 127.0.0.1 run by the test."""
from __future__ import annotations

import atexit
import json
import os
import re
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from titan.agents import summarize
from titan.testing.cluster import free_port
from tests.acceptance.helpers import ClusterTestCase

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
AGENT = os.path.join(ROOT, "examples", "research_agent")
QUESTION = "How do B-trees stay balanced?"
TWO_ROUNDS = ["PLAN", "ITER", "EVAL", "ITER", "EVAL", "SYNTH"]
STORE_PORT = free_port()


def offline_env(env: dict) -> dict:
    return {k: v for k, v in env.items() if not k.startswith("TITAN_LLM_")}


class ResearchAgentTests(ClusterTestCase):
    workers = 2
    slots = 4
    # The workers' jobs must not find a real model in the environment the tests run in;
    # the model calls' usage goes to a store of the cluster's own.
    cluster_options = {"env": {"TITAN_LLM_BASE_URL": "", "TITAN_LLM_MODEL": "",
                               "TITAN_LLM_SCRIPT": "", "TITAN_LLM_PROVIDER": ""},
                       "config_extra": f"store:\n  backend: titanstore\n"
                                       f"  url: redis://127.0.0.1:{STORE_PORT}/0\n"}

    def setUp(self):
        if type(self).__dict__.get("store") is None:
            from tests.acceptance.test_store import Server
            type(self).store = Server("titan").start(port=STORE_PORT)
            atexit.register(type(self).store.stop)
        super().setUp()

    def run_py(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, os.path.join(AGENT, "run.py"), *args],
                              env=offline_env(self.cluster.env()), capture_output=True,
                              timeout=timeout, cwd=self.base_dir, stdin=subprocess.DEVNULL)

    def runs_of(self, agent_run_id: str) -> list:
        with self.cluster.client() as c:
            return c.runs(agent_run_id)

    def cli_stages(self, agent_run_id: str) -> list:
        """The STAGE column of `titan runs AGENT_RUN_ID`, top to bottom, and every run's
        state."""
        out = self.titan("runs", agent_run_id)
        self.assertEqual(out.returncode, 0, out.stderr.decode())
        lines = out.stdout.decode().splitlines()
        header = lines[0].split()
        self.assertEqual(header[:4], ["RUN", "NAME", "STAGE", "STATE"])
        rows = []
        for line in lines[1:]:
            if not line.strip():
                continue
            if line.split()[0] == "MODEL":  # the model usage table follows the stages
                break
            rows.append(line.split())
        return [(r[2], r[3]) for r in rows]

    def check_parallel_iters(self, c, iter_run: str, n: int) -> None:
        run = c.run(iter_run)
        jobs = {j["node"]: j for j in run["jobs"]}
        iters = [jobs[f"iter-{i}"] for i in range(1, n + 1)]
        self.assertEqual(sorted(jobs), sorted(["fanout", "gather"]
                                              + [f"iter-{i}" for i in range(1, n + 1)]))
        self.assertEqual({j["state"] for j in jobs.values()}, {"COMPLETED"})
        # Grown at run time by fanout, all at once: each started before any of them ended.
        self.assertLess(max(j["started_at"] for j in iters),
                        min(j["finished_at"] for j in iters),
                        f"the iter jobs of {iter_run} did not overlap: {iters}")
        self.assertEqual(sorted(c.job(f"{iter_run}/gather")["depends_on"]),
                         sorted(j["node"] for j in iters))

    # -- the Python entry point --------------------------------------------------------------

    def test_run_py_two_rounds_parallel_iters_report(self):
        done = self.run_py(QUESTION, "--agent-run-id", "ra-py", "--n", "3")
        out = done.stdout.decode()
        self.assertEqual(done.returncode, 0, f"{out}\n{done.stderr.decode()}")
        self.assertIn("timeline (titan runs ra-py): " + " -> ".join(TWO_ROUNDS), out)

        # `titan runs AGENT_RUN_ID` lists the stages in the order they ran, all COMPLETED.
        self.assertEqual(self.cli_stages("ra-py"), [(s, "COMPLETED") for s in TWO_ROUNDS])

        runs = self.runs_of("ra-py")
        self.assertEqual([r["stage"] for r in runs], TWO_ROUNDS)
        with self.cluster.client() as c:
            # Round 1: the 3 planned sub-questions; round 2: the 2 EVAL asked for.
            self.check_parallel_iters(c, runs[1]["run_id"], 3)
            self.check_parallel_iters(c, runs[3]["run_id"], 2)
            plan = c.result(f"{runs[0]['run_id']}/plan")
            self.assertEqual(len(plan["todo"]), 3)
            self.assertEqual(plan["agent"], "ra-py")
            self.assertEqual(c.result(f"{runs[2]['run_id']}/eval")["decision"],
                             "another round")
            self.assertEqual(c.result(f"{runs[4]['run_id']}/eval")["decision"], "synthesise")
            # The report is the SYNTH run's result, and what run.py printed.
            result = c.result(f"{runs[5]['run_id']}/synth")
            # Every model call was counted for its stage: 1 plan, 3 + 2 iter, 2 eval, 1 synth.
            used = summarize(c, agent_run_id="ra-py")
        self.assertEqual({stage: t["calls"] for stage, t in used["stages"].items()},
                         {"PLAN": 1, "ITER": 5, "EVAL": 2, "SYNTH": 1}, json.dumps(used))
        self.assertEqual(used["total"]["models"], {"scripted": 9})
        self.assertRegex(out, r"model usage: EVAL 2 calls, \d+ tokens in, \d+ out; ITER 5 calls, "
                              r".*; PLAN 1 calls, .*; SYNTH 1 calls, .*; cost 0.0000\n")
        self.assertEqual(result["question"], QUESTION)
        self.assertEqual((result["findings"], result["rounds"]), (5, 2))
        report = result["report"].splitlines()
        self.assertEqual(report[0], f"# {QUESTION}")
        self.assertEqual(len([line for line in report if line[:2] in ("1.", "5.")]), 2)
        for sub in plan["todo"]:
            self.assertIn(sub, result["report"])
        for line in report:
            self.assertIn(f"  | {line}".rstrip(), out)

    def test_run_py_gate_waits_for_a_person_and_one_round(self):
        proc = subprocess.Popen([sys.executable, os.path.join(AGENT, "run.py"), QUESTION,
                                 "--agent-run-id", "ra-gate", "--n", "2", "--max-rounds", "1",
                                 "--gate"],
                                env=offline_env(self.cluster.env()), cwd=self.base_dir,
                                stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE)
        self.addCleanup(lambda: proc.poll() is None and (proc.kill(), proc.wait()))

        def synth_waiting():
            runs = self.runs_of("ra-gate") if self._agent_known("ra-gate") else []
            synth = [r for r in runs if r["stage"] == "SYNTH"]
            if not synth:
                return None
            with self.cluster.client() as c:
                jobs = {j["node"]: j["state"] for j in c.run(synth[0]["run_id"])["jobs"]}
            return synth[0]["run_id"] if jobs.get("approve") == "WAITING_APPROVAL" else None

        synth_run = self.wait_for(synth_waiting, timeout=60, what="the SYNTH gate waiting")
        time.sleep(0.5)     # the gate holds synth: nothing runs past it
        with self.cluster.client() as c:
            self.assertEqual(c.job(f"{synth_run}/synth")["state"], "PENDING")
        self.assertIsNone(proc.poll())
        approved = self.titan("approve", f"{synth_run}/approve", "-m", "go")
        self.assertEqual(approved.returncode, 0, approved.stderr.decode())
        out, err = proc.communicate(timeout=60)
        out = out.decode()
        self.assertEqual(proc.returncode, 0, f"{out}\n{err.decode()}")
        self.assertIn(f"the gate {synth_run}/approve waits for a person", out)
        self.assertIn(f"titan approve {synth_run}/approve", out)
        # --max-rounds 1: EVAL wanted more, but the bound sends it on to SYNTH.
        self.assertEqual(self.cli_stages("ra-gate"),
                         [(s, "COMPLETED") for s in ["PLAN", "ITER", "EVAL", "SYNTH"]])
        with self.cluster.client() as c:
            result = c.result(f"{synth_run}/synth")
        self.assertEqual((result["findings"], result["rounds"]), (2, 1))

    def _agent_known(self, agent_run_id: str) -> bool:
        try:
            self.runs_of(agent_run_id)
            return True
        except Exception:
            return False     # not started yet: an unknown agent run is an error

    # -- the YAML pipeline -------------------------------------------------------------------

    def test_yaml_pipeline_with_titan_run(self):
        started = self.titan("run", os.path.join(AGENT, "research.yaml"),
                             "--set", "agent_run_id=ra-yaml")
        self.assertEqual(started.returncode, 0, started.stderr.decode())
        plan_run = started.stdout.decode().split()[0]
        self.assertTrue(plan_run.startswith("research-plan-"), plan_run)

        def synth_done():
            runs = self.runs_of("ra-yaml")
            bad = [r for r in runs if r["state"] in ("FAILED", "CANCELLED")]
            self.assertEqual(bad, [])
            return runs if runs[-1]["stage"] == "SYNTH" \
                and runs[-1]["state"] == "COMPLETED" else None

        runs = self.wait_for(synth_done, timeout=90, what="the YAML agent's SYNTH run")
        self.assertEqual(runs[0]["run_id"], plan_run)
        self.assertEqual(self.cli_stages("ra-yaml"), [(s, "COMPLETED") for s in TWO_ROUNDS])
        shown = self.titan("result", f"{runs[-1]['run_id']}/synth")
        self.assertEqual(shown.returncode, 0, shown.stderr.decode())
        self.assertIn(f"# {QUESTION}", shown.stdout.decode())


# -- against a model server ----------------------------------------------------------------------

class FakeOpenAI(BaseHTTPRequestHandler):
    """POST /v1/chat/completions, OpenAI's format: replies by the prompt's STAGE line."""
    calls: list = []

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        prompt = body["messages"][-1]["content"]
        stage = re.search(r"^STAGE: (\w+)$", prompt, re.M).group(1)
        type(self).calls.append({"path": self.path, "stage": stage, "model": body["model"],
                                 "authorization": self.headers.get("Authorization")})
        if stage == "PLAN" and "GARBAGE" in prompt:
            text = "I cannot answer that in JSON, sorry."
        elif stage == "PLAN":      # JSON in a fence, as models write it
            text = 'Here:\n```json\n["Which rotations exist?", "When does a node split?"]\n```'
        elif stage == "ITER":
            sub = re.search(r"^SUB-QUESTION: (.*)$", prompt, re.M).group(1)
            text = f"answer to {sub}"
        elif stage == "EVAL":
            text = '{"enough": true, "reason": "covered", "follow_up": []}'
        else:
            text = "# Report from the model\n\n" + "\n".join(
                line for line in prompt.splitlines() if line.startswith("- "))
        reply = json.dumps({"model": body["model"], "choices": [
            {"index": 0, "message": {"role": "assistant", "content": text},
             "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 10, "completion_tokens": 5}}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(reply)))
        self.end_headers()
        self.wfile.write(reply)

    def log_message(self, *args):
        pass


class ResearchAgentOnlineTests(ClusterTestCase):
    workers = 1
    slots = 4
    server = None

    def setUp(self):
        cls = type(self)
        if cls.server is None:
            cls.server = ThreadingHTTPServer(("127.0.0.1", 0), FakeOpenAI)
            threading.Thread(target=cls.server.serve_forever, daemon=True).start()
            cls.cluster_options = {"env": {
                "TITAN_LLM_BASE_URL": f"http://127.0.0.1:{cls.server.server_port}/v1",
                "TITAN_LLM_MODEL": "fake-model", "TITAN_LLM_API_KEY": "sk-test-9876",
                "TITAN_LLM_PROVIDER": "", "TITAN_LLM_SCRIPT": ""}}
        super().setUp()

    def test_run_py_calls_the_model_the_environment_names(self):
        FakeOpenAI.calls.clear()
        done = subprocess.run([sys.executable, os.path.join(AGENT, "run.py"), QUESTION,
                               "--agent-run-id", "ra-online", "--n", "2"],
                              env=self.cluster.env(), capture_output=True, timeout=120,
                              cwd=self.base_dir, stdin=subprocess.DEVNULL)
        out = done.stdout.decode()
        self.assertEqual(done.returncode, 0, f"{out}\n{done.stderr.decode()}")
        # EVAL was satisfied at once: one round.
        self.assertIn("timeline (titan runs ra-online): PLAN -> ITER -> EVAL -> SYNTH", out)
        runs = self.runs_of_online("ra-online")
        with self.cluster.client() as c:
            plan = c.result(f"{runs[0]['run_id']}/plan")
            result = c.result(f"{runs[-1]['run_id']}/synth")
        self.assertEqual(plan["todo"], ["Which rotations exist?", "When does a node split?"])
        self.assertEqual(plan["model"], "fake-model")
        self.assertEqual(result["report"], "# Report from the model\n\n"
                         "- Which rotations exist?: answer to Which rotations exist?\n"
                         "- When does a node split?: answer to When does a node split?")
        self.assertEqual(sorted(call["stage"] for call in FakeOpenAI.calls),
                         ["EVAL", "ITER", "ITER", "PLAN", "SYNTH"])
        self.assertEqual({(c["path"], c["model"], c["authorization"])
                          for c in FakeOpenAI.calls},
                         {("/v1/chat/completions", "fake-model", "Bearer sk-test-9876")})

    def test_a_reply_without_json_fails_the_stage_and_run_py_says_why(self):
        done = subprocess.run([sys.executable, os.path.join(AGENT, "run.py"),
                               "GARBAGE question", "--agent-run-id", "ra-bad"],
                              env=self.cluster.env(), capture_output=True, timeout=120,
                              cwd=self.base_dir, stdin=subprocess.DEVNULL)
        err = done.stderr.decode()
        self.assertEqual(done.returncode, 1, done.stdout.decode() + err)
        self.assertRegex(err, r"run research-plan-\w+ \(PLAN\) ended FAILED")
        self.assertIn("plan: the model failed: the model's reply holds no JSON: "
                      "'I cannot answer that in JSON, sorry.'", err)
        self.assertEqual([r["stage"] for r in self.runs_of_online("ra-bad")], ["PLAN"])

    def runs_of_online(self, agent_run_id: str) -> list:
        with self.cluster.client() as c:
            return c.runs(agent_run_id)
