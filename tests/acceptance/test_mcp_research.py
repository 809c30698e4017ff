"""`titan mcp`'s research tool, offline: the official MCP client asks research(question, 3)
and gets a report back; the run it started has a plan job, three ITER jobs in parallel and a
synthesis job, all COMPLETED (SDK), and `titan runs` shows it under its agent run.  The
workers' model is titan.agents' scripted provider (TITAN_LLM_SCRIPT in their environment)."""
from __future__ import annotations

import os
import tempfile

from tests.acceptance.helpers import ClusterTestCase
from tests.acceptance.test_mcp import call, error_of, run_async, stdio_session

SCRIPT_DIR = tempfile.mkdtemp(prefix="titan-research-script-")
SCRIPT = os.path.join(SCRIPT_DIR, "script.yaml")
with open(SCRIPT, "w") as f:
    f.write(
        "- match: 'QUESTION: no plan'\n"
        "  reply: ''\n"
        "- match: '^STAGE: PLAN'\n"
        "  reply: '[\"Why do tides rise?\", \"What moves them?\", \"Where are they highest?\"]'\n"
        "- match: '^STAGE: ITER'\n"
        "  reply: 'finding on {prompt}'\n"
        "- match: '^STAGE: SYNTH'\n"
        "  reply: \"# Tides report\\n{prompt}\"\n")

QUESTION = "How do tides work?"
SUBS = ["Why do tides rise?", "What moves them?", "Where are they highest?"]


class ResearchToolTests(ClusterTestCase):
    workers = 1
    cluster_options = {"env": {"TITAN_LLM_SCRIPT": SCRIPT}}

    def test_research_returns_a_report_from_parallel_jobs(self):
        async def scenario():
            async with stdio_session(self.cluster.env()) as s:
                return await call(s, "research", question=QUESTION, n=3)
        answer = run_async(scenario())
        run_id, agent = answer["run_id"], answer["agent_run_id"]
        self.assertEqual(answer["state"], "COMPLETED", answer)
        report = answer["report"]
        self.assertTrue(report.startswith("# Tides report\nSTAGE: SYNTH\n"), report)
        self.assertIn(f"QUESTION: {QUESTION}", report)
        for sub in SUBS:  # each finding is its own ITER job's answer to its sub-question
            self.assertIn(f"- {sub}: finding on STAGE: ITER", report)
            self.assertIn(f"SUB-QUESTION: {sub}", report)
        self.assertEqual(sorted(j["job_id"] for j in answer["jobs"]),
                         sorted(f"{run_id}/{j}" for j in
                                ("plan", "iter-1", "iter-2", "iter-3", "synth")))

        with self.cluster.client() as c:   # what the SDK sees of the run
            run = c.run(run_id)
            self.assertEqual((run["state"], run.get("agent_run_id"), run.get("stage")),
                             ("COMPLETED", agent, "RESEARCH"))
            jobs = {j["job_id"].rsplit("/", 1)[1]: j for j in run["jobs"]}
            self.assertEqual({n: j["state"] for n, j in jobs.items()},
                             dict.fromkeys(["plan", "iter-1", "iter-2", "iter-3", "synth"],
                                           "COMPLETED"))
            iters = [f"iter-{i}" for i in (1, 2, 3)]
            for name in iters:  # parallel: each needs only the plan
                self.assertEqual(c.job(f"{run_id}/{name}")["depends_on"], ["plan"])
            self.assertEqual(sorted(c.job(f"{run_id}/synth")["depends_on"]), iters)
            self.assertEqual([c.result(f"{run_id}/{n}")["sub_question"] for n in iters], SUBS)
            self.assertEqual(c.result(f"{run_id}/synth")["report"], report)

        out = self.titan("runs", agent)    # and what `titan runs` shows of its agent run
        self.assertEqual(out.returncode, 0, out.stderr)
        row = next(line for line in out.stdout.decode().splitlines() if run_id in line)
        self.assertEqual(row.split()[:5], [run_id, "mcp-research", "RESEARCH", "COMPLETED",
                                           "5/5"])

    def test_a_plan_without_sub_questions_is_a_tool_error_that_says_why(self):
        async def scenario():
            async with stdio_session(self.cluster.env()) as s:
                bad_n = await error_of(s, "research", question=QUESTION, n=0)
                return bad_n, await error_of(s, "research", question="no plan", n=2)
        bad_n, failed = run_async(scenario())
        self.assertIn("greater than or equal to 1", bad_n)
        self.assertRegex(failed, r"research run (\S+) \(agent run research-\w+\) ended "
                                 r"FAILED; \1/plan: (.|\n)*research plan: the model gave no "
                                 r"sub-question: ''")
