"""titan.agents: the chat-model interface, its providers, and the usage a job records."""
from __future__ import annotations

import json
import os

from twisted.trial.unittest import SynchronousTestCase
from zope.interface.verify import verifyObject

from titan.agents import (ChatModelError, IChatModel, IChatModelFactory, Meter, Metered,
                          NotConfigured, Reply, ScriptError, Usage, chat_model,
                          provider_name, summarize)
from titan.agents.scripted import ScriptedChatModel
from titan.plugin_registry import plugins


class FakeClient:
    """What the meter uses of titan.sdk.Client: the run's record and the store."""

    def __init__(self, runs=None) -> None:
        self.runs = runs or {}
        self.kv: dict = {}
        self.sets: dict = {}
        self.run_calls = 0

    def run(self, run_id, jobs=True):
        self.run_calls += 1
        return self.runs[run_id]

    def store_put(self, key, value, ex=None):
        self.kv[key] = value.encode() if isinstance(value, str) else value

    def store_get(self, key):
        return self.kv.get(key)

    def store_sadd(self, key, member):
        members = self.sets.setdefault(key, set())
        added = member not in members
        members.add(member)
        return int(added)

    def store_smembers(self, key):
        return {m.encode() for m in self.sets.get(key, ())}


class PluginTests(SynchronousTestCase):
    def test_built_ins_are_plugins_and_provide_the_interfaces(self):
        found = {p.name: p for p in plugins(IChatModelFactory)}
        self.assertIn("scripted", found)
        for factory in found.values():
            verifyObject(IChatModelFactory, factory)
        verifyObject(IChatModel, found["scripted"].build({"replies": ["hi"]}))
        verifyObject(IChatModel, ScriptedChatModel(lambda messages, **o: "x"))
        verifyObject(IChatModel, Metered(ScriptedChatModel(["x"]), Meter(environ={})))

    def test_an_unknown_provider_names_the_known_ones(self):
        with self.assertRaises(NotConfigured) as caught:
            chat_model("gpt-magic")
        self.assertIn("unknown chat model 'gpt-magic' (known: ", str(caught.exception))
        self.assertIn("scripted", str(caught.exception))

    def test_the_environment_names_the_provider(self):
        self.assertEqual(provider_name({"TITAN_LLM_SCRIPT": "s.yaml"}), "scripted")
        self.assertEqual(provider_name({"TITAN_LLM_MODEL": "llama3", "TITAN_LLM_SCRIPT": "s"}),
                         "openai")
        self.assertEqual(provider_name({"TITAN_LLM_BASE_URL": "http://127.0.0.1:1/v1"}),
                         "openai")
        self.assertEqual(provider_name({"TITAN_LLM_PROVIDER": "acme", "TITAN_LLM_MODEL": "m"}),
                         "acme")
        with self.assertRaises(NotConfigured) as caught:
            provider_name({})
        for variable in ("TITAN_LLM_MODEL", "TITAN_LLM_SCRIPT", "TITAN_LLM_PROVIDER"):
            self.assertIn(variable, str(caught.exception))

    def test_chat_model_builds_the_scripted_model_from_the_environment(self):
        script = self.mktemp() + ".json"
        with open(script, "w") as f:
            json.dump(["from the file"], f)
        self.patch(os, "environ", {"TITAN_LLM_SCRIPT": script})
        model = chat_model()
        verifyObject(IChatModel, model)
        self.assertEqual(model.name, "scripted")
        self.assertEqual(model.chat("hello").text, "from the file")


class ScriptedTests(SynchronousTestCase):
    def test_replies_in_order_then_a_clear_error(self):
        model = ScriptedChatModel(["one", "two"])
        self.assertEqual([model.chat("a").text, model.chat("b").text], ["one", "two"])
        with self.assertRaises(ScriptError) as caught:
            model.chat("what now")
        self.assertIn("no reply for call 3 ('what now')", str(caught.exception))

    def test_deterministic(self):
        script = [{"match": "^plan", "reply": '["a?", "b?"]'}, "first", "second",
                  {"match": "answer (.*)", "reply": "answered: {prompt}"}]
        calls = ["plan tides", "x", "answer a?", "y", "plan tides", "answer b?"]

        def replies():
            model = ScriptedChatModel(script)
            return [(r.text, r.usage, r.model)
                    for r in (model.chat([{"role": "system", "content": "be brief"},
                                          {"role": "user", "content": c}]) for c in calls)]

        first = replies()
        self.assertEqual(first, replies())
        self.assertEqual([text for text, _, _ in first],
                         ['["a?", "b?"]', "first", "answered: answer a?", "second",
                          '["a?", "b?"]', "answered: answer b?"])
        # Words count as tokens: "be brief" + "plan tides" in, one word out.
        self.assertEqual(first[0][1], Usage(tokens_in=4, tokens_out=2))
        self.assertEqual(first[0][2], "scripted")

    def test_repeat_starts_over(self):
        model = ScriptedChatModel(["a", "b"], repeat=True)
        self.assertEqual([model.chat("q").text for _ in range(5)], ["a", "b", "a", "b", "a"])

    def test_a_function_answers(self):
        seen = []

        def answer(messages, **options):
            seen.append((messages[-1]["content"], options))
            return f"echo {messages[-1]['content']}"

        model = ScriptedChatModel(answer, model="echo-1")
        reply = model.chat("hi there", temperature=0)
        self.assertEqual((reply.text, reply.model, reply.cost), ("echo hi there", "echo-1", 0.0))
        self.assertEqual(reply.usage, Usage(2, 3))
        self.assertEqual(seen, [("hi there", {"temperature": 0})])
        fixed = ScriptedChatModel(lambda m, **o: {"text": "t", "usage": {"tokens_in": 7,
                                                                          "tokens_out": 9},
                                                  "cost": 0.5})
        reply = fixed.chat("q")
        self.assertEqual((reply.text, reply.usage, reply.cost), ("t", Usage(7, 9), 0.5))

    def test_a_yaml_script_file(self):
        path = self.mktemp() + ".yaml"
        with open(path, "w") as f:
            f.write("replies:\n  - match: sub-questions\n    reply: |\n      - one?\n"
                    "  - the report\nrepeat: true\n")
        model = ScriptedChatModel(path=path)
        self.assertEqual(model.chat("give sub-questions").text, "- one?\n")
        self.assertEqual(model.chat("write").text, "the report")
        self.assertEqual(model.chat("write").text, "the report")

    def test_a_bad_script_is_named(self):
        with self.assertRaises(ScriptError) as caught:
            ScriptedChatModel(path="/nonexistent/script.yaml")
        self.assertIn("/nonexistent/script.yaml: cannot read the script (TITAN_LLM_SCRIPT)",
                      str(caught.exception))
        path = self.mktemp() + ".json"
        with open(path, "w") as f:
            f.write('{"replies": [1]}')
        with self.assertRaises(ScriptError) as caught:
            ScriptedChatModel(path=path)
        self.assertIn(f"{path}: entry 1: expected a string or a mapping with 'reply'",
                      str(caught.exception))
        self.patch(os, "environ", {})
        with self.assertRaises(ScriptError) as caught:
            ScriptedChatModel()
        self.assertIn("TITAN_LLM_SCRIPT", str(caught.exception))

    def test_bad_messages_are_refused(self):
        model = ScriptedChatModel(["x"])
        with self.assertRaises(ChatModelError) as caught:
            model.chat([{"content": "no role"}])
        self.assertIn("messages[0]: expected a mapping with 'role' and 'content'",
                      str(caught.exception))


class UsageTests(SynchronousTestCase):
    ENV = {"TITAN_JOB_ID": "research-1a2b/iter-2", "TITAN_RUN_ID": "research-1a2b",
           "TITAN_ATTEMPT": "2"}

    def test_a_job_records_its_calls_for_its_agent_run_and_stage(self):
        client = FakeClient({"research-1a2b": {"agent_run_id": "agent-7", "stage": "ITER"}})
        meter = Meter(environ=self.ENV, client_factory=lambda: client)
        model = Metered(ScriptedChatModel(lambda m, **o: {
            "text": "ok", "usage": Usage(100, 20), "latency": 0.25, "cost": 0.001,
            "model": "m1"}), meter)
        model.chat("one")
        model.chat("two")
        key = f"titan:usage:job:research-1a2b/iter-2:2:{os.getpid()}"
        self.assertEqual(client.sets, {"titan:usage:agent:agent-7": {key},
                                       "titan:usage:run:research-1a2b": {key}})
        self.assertEqual(json.loads(client.kv[key]), {
            "agent_run_id": "agent-7", "stage": "ITER", "run_id": "research-1a2b",
            "job_id": "research-1a2b/iter-2", "attempt": 2, "calls": 2, "tokens_in": 200,
            "tokens_out": 40, "latency": 0.5, "cost": 0.002, "models": {"m1": 2}})
        self.assertEqual(client.run_calls, 1)  # the run is asked once per process

    def test_summarize_sums_per_stage_and_in_total(self):
        client = FakeClient({"plan-1": {"agent_run_id": "agent-7", "stage": "PLAN"},
                             "iter-1": {"agent_run_id": "agent-7", "stage": "ITER"}})
        for job, run, tokens in (("plan-1/plan", "plan-1", 10), ("iter-1/a", "iter-1", 100),
                                 ("iter-1/b", "iter-1", 1000)):
            env = {"TITAN_JOB_ID": job, "TITAN_RUN_ID": run}
            meter = Meter(environ=env, client_factory=lambda: client)
            meter._where = None
            self.patch(os, "getpid", lambda job=job: hash(job) % 10000)
            Metered(ScriptedChatModel(lambda m, **o: {"text": "", "usage": Usage(tokens, 1),
                                                      "cost": 0.5, "latency": 1.0,
                                                      "model": "m"}), meter).chat("q")
        seen = summarize(client, agent_run_id="agent-7")
        self.assertEqual(seen["total"], {"calls": 3, "tokens_in": 1110, "tokens_out": 3,
                                         "latency": 3.0, "cost": 1.5, "models": {"m": 3}})
        self.assertEqual({s: t["tokens_in"] for s, t in seen["stages"].items()},
                         {"PLAN": 10, "ITER": 1100})
        self.assertEqual(set(seen["jobs"]), {"plan-1/plan", "iter-1/a", "iter-1/b"})
        self.assertEqual(summarize(client, run_id="iter-1")["total"]["calls"], 2)

    def test_the_environment_may_name_the_agent_run_and_stage(self):
        client = FakeClient()
        env = dict(self.ENV, TITAN_AGENT_RUN_ID="agent-9", TITAN_STAGE="EVAL")
        meter = Meter(environ=env, client_factory=lambda: client)
        meter.add(Reply("x", Usage(1, 1), model="m"))
        self.assertEqual(client.run_calls, 0)
        self.assertEqual(summarize(client, agent_run_id="agent-9")["stages"]["EVAL"]["calls"],
                         1)

    def test_outside_a_job_nothing_is_written(self):
        def no_client():
            raise AssertionError("no client outside a job")
        meter = Meter(environ={}, client_factory=no_client)
        meter.add(Reply("x", Usage(3, 4), latency=0.1, model="m"))
        self.assertEqual((meter.totals.calls, meter.totals.tokens_in, meter.totals.tokens_out),
                         (1, 3, 4))

    def test_a_failed_write_does_not_fail_the_call(self):
        import io
        import sys
        err = io.StringIO()
        self.patch(sys, "stderr", err)

        def down():
            raise ConnectionRefusedError("master down")
        model = Metered(ScriptedChatModel(["a", "b"]), Meter(environ=self.ENV,
                                                             client_factory=down))
        self.assertEqual([model.chat("q").text, model.chat("q").text], ["a", "b"])
        self.assertEqual(err.getvalue(), "titan.agents: cannot record the model's usage: "
                                         "ConnectionRefusedError: master down\n")
