"""The research tool's pieces without a cluster: what it submits, how a PLAN reply becomes
sub-questions, and what it answers when the run fails or outlasts its wait."""
from __future__ import annotations

import contextlib

from twisted.trial import unittest

from titan.mcp.research import MAX_SUBQUESTIONS, research_run, sub_questions
from titan.mcp.tools import ToolFailure, Tools


class SubQuestionsTests(unittest.SynchronousTestCase):
    def test_a_json_list_anywhere_in_the_reply(self):
        self.assertEqual(sub_questions('Here:\n```json\n["a?", "b?", "c?"]\n```', 3),
                         ["a?", "b?", "c?"])
        self.assertEqual(sub_questions('["a?", "b?", "c?", "d?"]', 2), ["a?", "b?"])

    def test_lines_when_there_is_no_json(self):
        self.assertEqual(sub_questions("1. first?\n- second?\n\n* third?", 5),
                         ["first?", "second?", "third?"])

    def test_nothing_is_an_error(self):
        e = self.assertRaises(ValueError, sub_questions, "  \n", 3)
        self.assertIn("the model gave no sub-question", str(e))


class RunTests(unittest.SynchronousTestCase):
    def test_the_plan_job_ships_this_module_as_its_script(self):
        spec = research_run("  Why tides? ", 4, "agent-1")
        self.assertEqual((spec["agent_run_id"], spec["stage"], len(spec["jobs"])),
                         ("agent-1", "RESEARCH", 1))
        plan = spec["jobs"][0]
        self.assertEqual(plan["id"], "plan")
        self.assertEqual(plan["script"]["name"], "research.py")
        self.assertEqual(plan["script"]["args"],
                         ["--step", "plan", "--question", "Why tides?", "--n", "4"])
        self.assertIn(b"def run_step", plan["script"]["content"])

    def test_bad_arguments(self):
        for n in (0, MAX_SUBQUESTIONS + 1, True, "3"):
            self.assertRaises(ValueError, research_run, "q", n, "a")
        self.assertRaises(ValueError, research_run, " ", 3, "a")


class FakeClient:
    def __init__(self, states):
        self.states = list(states)
        self.submitted = []

    def submit_dag(self, spec):
        self.submitted.append(spec)
        return {"run_id": "r1"}

    def wait_run(self, run_id, timeout=None):
        state, jobs = self.states.pop(0) if len(self.states) > 1 else self.states[0]
        return {"run_id": run_id, "state": state,
                "jobs": [{"job_id": f"r1/{j}", "state": s} for j, s in jobs.items()]}

    def logs(self, job_id):
        return b"Traceback...\nresearch plan: the model gave no sub-question: ''\n"

    def result(self, job_id):
        return {"report": "# R"} if job_id == "r1/synth" else None


def tools_for(client):
    return Tools(lambda: contextlib.nullcontext(client))


class ToolTests(unittest.SynchronousTestCase):
    def test_completed(self):
        client = FakeClient([("RUNNING", {"plan": "RUNNING"}),
                             ("COMPLETED", {"plan": "COMPLETED", "synth": "COMPLETED"})])
        out = tools_for(client).research("q", 2, agent_run_id="a-1")
        self.assertEqual(out, {"run_id": "r1", "agent_run_id": "a-1", "state": "COMPLETED",
                               "report": "# R",
                               "jobs": [{"job_id": "r1/plan", "state": "COMPLETED"},
                                        {"job_id": "r1/synth", "state": "COMPLETED"}]})
        self.assertEqual(client.submitted[0]["agent_run_id"], "a-1")

    def test_failed_names_the_job_and_its_last_words(self):
        client = FakeClient([("FAILED", {"plan": "FAILED"})])
        e = self.assertRaises(ToolFailure, tools_for(client).research, "q", 2, agent_run_id="a")
        self.assertEqual(str(e), "research run r1 (agent run a) ended FAILED; r1/plan: "
                                 "Traceback...\nresearch plan: the model gave no "
                                 "sub-question: ''")

    def test_still_running_after_the_wait_says_how_to_follow_it(self):
        client = FakeClient([("RUNNING", {"plan": "COMPLETED", "iter-1": "RUNNING"})])
        out = tools_for(client).research("q", 1, timeout=0.2)
        self.assertEqual((out["state"], out["report"]), ("RUNNING", None))
        self.assertRegex(out["agent_run_id"], r"^research-[0-9a-f]{8}$")
        self.assertIn("wait_for_run", out["note"])
        self.assertIn("r1/synth", out["note"])

    def test_a_bad_n_is_refused_before_anything_is_submitted(self):
        client = FakeClient([("COMPLETED", {})])
        e = self.assertRaises(ToolFailure, tools_for(client).research, "q", 0)
        self.assertIn("n must be a whole number from 1 to", str(e))
        self.assertEqual(client.submitted, [])
