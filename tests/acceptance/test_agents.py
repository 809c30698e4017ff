"""titan.agents inside real jobs: a job's model calls are counted for its agent run and
stage (named in its environment), where a client can sum them (issue 19 §2)."""
from __future__ import annotations

import atexit
import json
import os
import sys
import urllib.request

from titan.agents import summarize
from titan.testing.cluster import free_port
from tests.acceptance.browser import BrowserTestCase
from tests.acceptance.helpers import ClusterTestCase

STORE_PORT = free_port()
STORE_CONFIG = {"config_extra": f"store:\n  backend: titanstore\n"
                                f"  url: redis://127.0.0.1:{STORE_PORT}/0\n"}
_store = []


def start_store() -> None:
    """A TitanStore of this module's own on STORE_PORT, started once for every class."""
    if not _store:
        from tests.acceptance.test_store import Server
        _store.append(Server("titan").start(port=STORE_PORT))
        atexit.register(_store[0].stop)

# A job that asks the scripted model twice and prints the answers.
ASK = """\
import os
print("agent run", os.environ.get("TITAN_AGENT_RUN_ID"), os.environ.get("TITAN_STAGE"))
from titan.agents import chat_model
model = chat_model()
for question in ("plan the tides", "answer: why the moon?"):
    print(model.chat([{"role": "user", "content": question}]).text)
"""


class UsageInJobsTests(ClusterTestCase):
    workers = 1
    # The usage goes to the store, through the master: a TitanStore of its own.
    cluster_options = STORE_CONFIG

    def setUp(self):
        start_store()
        super().setUp()

    def test_calls_in_jobs_are_summed_per_stage_of_the_agent_run(self):
        script = os.path.join(self.base_dir, "script.yaml")
        with open(script, "w") as f:
            f.write("- match: '^plan'\n  reply: three sub-questions\n"
                    "- match: '^answer: (.*)'\n  reply: 'because: {prompt}'\n")
        env = {"TITAN_LLM_SCRIPT": script}
        with self.cluster.client() as c:
            runs = []
            for stage, jobs in (("PLAN", ["plan"]), ("ITER", ["a", "b"])):
                spec = {"name": f"agents-{stage.lower()}", "agent_run_id": "agent-m2",
                        "stage": stage,
                        "jobs": [{"id": j, "command": [sys.executable, "-c", ASK], "env": env}
                                 for j in jobs]}
                run_id = c.submit_dag(spec)["run_id"]
                run = c.wait_run(run_id, timeout=60)
                self.assertEqual(run["state"], "COMPLETED", run)
                runs.append(run_id)
            out = c.logs(f"{runs[0]}/plan").decode()
            self.assertIn("three sub-questions\nbecause: answer: why the moon?\n", out)
            # the worker names the job's agent run and stage in its environment
            self.assertIn("agent run agent-m2 PLAN\n", out)
            self.assertIn("agent run agent-m2 ITER\n", c.logs(f"{runs[1]}/a").decode())
            seen = summarize(c, agent_run_id="agent-m2")
            # Each job: 2 calls; in "plan the tides" (3 words) + "answer: why the moon?" (4),
            # out "three sub-questions" (2) + "because: answer: why the moon?" (5).
            self.assertEqual({s: (t["calls"], t["tokens_in"], t["tokens_out"])
                              for s, t in seen["stages"].items()},
                             {"PLAN": (2, 7, 7), "ITER": (4, 14, 14)}, json.dumps(seen))
            self.assertEqual(seen["total"]["calls"], 6)
            self.assertEqual(set(seen["jobs"]), {f"{runs[0]}/plan", f"{runs[1]}/a",
                                                 f"{runs[1]}/b"})
            self.assertEqual(summarize(c, run_id=runs[1])["total"]["calls"], 4)
        self.check_titan_runs_shows_the_usage()
        self.check_the_agent_run_route_has_the_usage()

    def check_titan_runs_shows_the_usage(self):
        """`titan runs AGENT_RUN_ID`: after the stages, calls and tokens per stage, a total."""
        done = self.titan("runs", "agent-m2")
        out = done.stdout.decode()
        self.assertEqual((done.returncode, done.stderr), (0, b""), out)
        stages, usage = out.split("\n\n")
        self.assertIn("agents-iter", stages)
        lines = usage.splitlines()
        self.assertEqual(lines[0].split(), ["MODEL", "USAGE", "CALLS", "TOKENS", "IN",
                                            "TOKENS", "OUT", "LATENCY", "COST"])
        # stage, calls, tokens in, tokens out (the latency is measured: only its unit).
        self.assertEqual([line.split()[:4] for line in lines[1:]],
                         [["PLAN", "2", "7", "7"], ["ITER", "4", "14", "14"],
                          ["TOTAL", "6", "21", "21"]], out)
        for line in lines[1:]:
            self.assertRegex(line, r"\d+\.\d\ds +\$0\.0000$")

    def check_the_agent_run_route_has_the_usage(self):
        """GET /api/v1/agent-runs/ID: the same numbers, summed on the master."""
        request = urllib.request.Request(
            self.cluster.web_url + "/api/v1/agent-runs/agent-m2",
            headers={"Authorization": f"Bearer {self.cluster.token}"})
        with urllib.request.urlopen(request, timeout=30) as response:
            body = json.load(response)
        usage = body["usage"]
        self.assertEqual({s: (t["calls"], t["tokens_in"], t["tokens_out"], t["cost"])
                          for s, t in usage["stages"].items()},
                         {"PLAN": (2, 7, 7, 0), "ITER": (4, 14, 14, 0)}, json.dumps(body))
        self.assertEqual((usage["total"]["calls"], usage["total"]["tokens_in"],
                          usage["total"]["tokens_out"], usage["truncated"]),
                         (6, 21, 21, False))
        self.assertEqual({run_id: t["calls"] for run_id, t in usage["runs"].items()},
                         {body["runs"][0]["run_id"]: 2, body["runs"][1]["run_id"]: 4})
        self.assertGreater(usage["total"]["latency"], 0)
        self.assertAlmostEqual(usage["total"]["latency"],
                               sum(t["latency"] for t in usage["stages"].values()), places=5)


class UsageOnTheTimelineTests(BrowserTestCase):
    """The dashboard's agent timeline: each run's model calls and tokens, and the total."""
    workers = 1
    cluster_options = STORE_CONFIG

    def setUp(self):
        start_store()
        super().setUp()

    def test_the_timeline_shows_each_runs_usage_and_the_total(self):
        script = os.path.join(self.base_dir, "script.yaml")
        with open(script, "w") as f:
            f.write("- match: '^plan'\n  reply: three sub-questions\n"
                    "- match: '^answer: (.*)'\n  reply: 'because: {prompt}'\n")
        with self.cluster.client() as c:
            run_id = c.submit_dag({"name": "ui-plan", "agent_run_id": "agent-ui", "stage": "PLAN",
                                   "jobs": [{"id": "plan", "command": [sys.executable, "-c", ASK],
                                             "env": {"TITAN_LLM_SCRIPT": script}}]})["run_id"]
            self.assertEqual(c.wait_run(run_id, timeout=60)["state"], "COMPLETED")
        self.open("/agent-runs/agent-ui")
        cell = self.find(f'[data-testid="timeline-usage-{run_id}"]')
        self.until(lambda: cell.text == "2× · 14 tok", what="the run's calls and tokens")
        self.assertIn("2 calls · 7 in / 7 out", cell.get_attribute("title"))
        self.assertIn("PLAN 2× · 7/7 tok · $0.0000", self.find('[data-testid="usage-stage-PLAN"]').text)
        self.assertRegex(self.find('[data-testid="usage-total-line"]').text,
                         r"^total 2 calls · 7 in / 7 out · \d+\.\d\ds · \$0\.0000$")
