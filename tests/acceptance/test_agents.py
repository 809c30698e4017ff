"""titan.agents inside real jobs: a job's model calls are counted for its agent run and
stage, where a client can sum them (issue 19 §2)."""
from __future__ import annotations

import atexit
import json
import os
import sys

from titan.agents import summarize
from titan.testing.cluster import free_port
from tests.acceptance.helpers import ClusterTestCase

STORE_PORT = free_port()

# A job that asks the scripted model twice and prints the answers.
ASK = """\
from titan.agents import chat_model
model = chat_model()
for question in ("plan the tides", "answer: why the moon?"):
    print(model.chat([{"role": "user", "content": question}]).text)
"""


class UsageInJobsTests(ClusterTestCase):
    workers = 1
    # The usage goes to the store, through the master: a TitanStore of its own.
    cluster_options = {"config_extra": f"store:\n  backend: titanstore\n"
                                       f"  url: redis://127.0.0.1:{STORE_PORT}/0\n"}

    def setUp(self):
        if type(self).__dict__.get("store") is None:
            from tests.acceptance.test_store import Server
            type(self).store = Server("titan").start(port=STORE_PORT)
            atexit.register(type(self).store.stop)
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
