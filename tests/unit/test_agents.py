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

    def test_titan_plugins_lists_the_chat_models(self):
        import contextlib
        import io

        from titan import cli
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            self.assertEqual(cli.main(["plugins", "--json"]), 0)
        rows = {(p["kind"], p["name"]): p for p in json.loads(out.getvalue())}
        self.assertEqual(rows[("chat-model", "openai")]["origin"], "built-in")
        self.assertIn("TITAN_LLM_SCRIPT", rows[("chat-model", "scripted")]["description"])

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


# -- the OpenAI-compatible provider against a real HTTP server on 127.0.0.1 ----------------

from twisted.internet import defer, reactor, threads  # noqa: E402
from twisted.trial.unittest import TestCase  # noqa: E402
from twisted.web import resource, server  # noqa: E402

from titan.agents import (AuthenticationError, ChatTimeout, ModelNotFound,  # noqa: E402
                          RateLimited, ServerError)
from titan.agents.openai import OpenAIChatModel, retry_after  # noqa: E402


def completion(text, model="m-1", tokens_in=12, tokens_out=5):
    return {"id": "chatcmpl-1", "object": "chat.completion", "model": model,
            "choices": [{"index": 0, "finish_reason": "stop",
                         "message": {"role": "assistant", "content": text}}],
            "usage": {"prompt_tokens": tokens_in, "completion_tokens": tokens_out,
                      "total_tokens": tokens_in + tokens_out}}


class Completions(resource.Resource):
    """POST /v1/chat/completions answering from `answers`: (status, headers, body) tuples,
    or ("hang", seconds) to answer only after that long; the last one is reused."""
    isLeaf = True

    def __init__(self, answers) -> None:
        super().__init__()
        self.answers = list(answers)
        self.requests: list = []
        self.delayed: list = []

    def render_POST(self, request):
        if request.path != b"/v1/chat/completions":
            request.setResponseCode(404)
            return b'{"error": {"message": "no such path"}}'
        self.requests.append({"authorization": request.getHeader("authorization"),
                              "body": json.loads(request.content.read())})
        answer = self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]
        if answer[0] == "hang":
            def late():
                if not request.finished and not request._disconnected:
                    request.write(json.dumps(completion("late")).encode())
                    request.finish()
            self.delayed.append(reactor.callLater(answer[1], late))
            return server.NOT_DONE_YET
        status, headers, body = answer
        request.setResponseCode(status)
        request.setHeader("content-type", "application/json")
        for name, value in headers.items():
            request.setHeader(name, value)
        return json.dumps(body).encode()


class OpenAIProviderTests(TestCase):
    def serve(self, *answers):
        self.site = Completions(answers)
        factory = server.Site(self.site)
        protocols = []
        build = factory.buildProtocol

        def tracked(addr):
            p = build(addr)
            protocols.append(p)
            return p
        factory.buildProtocol = tracked
        port = reactor.listenTCP(0, factory, interface="127.0.0.1")

        @defer.inlineCallbacks
        def stop():
            for call in self.site.delayed:
                if call.active():
                    call.cancel()
            for p in protocols:
                if getattr(p, "transport", None) is not None:
                    p.transport.abortConnection()
            yield port.stopListening()
            from twisted.internet.task import deferLater
            yield deferLater(reactor, 0.01, lambda: None)
        self.addCleanup(stop)
        self.slept: list = []
        return f"http://127.0.0.1:{port.getHost().port}/v1"

    def model(self, base, **options):
        defaults = {"model": "m-1", "api_key": "sk-test-secret-9f3c", "environ": {},
                    "backoff": 0.01, "max_backoff": 0.04, "max_retry_after": 0.5,
                    "timeout": 5.0, "retries": 3, "sleep": self.slept.append}
        return OpenAIChatModel(base, **{**defaults, **options})

    def chat(self, chat_model, *args, **kwargs):
        """chat_model.chat(...) in a thread: the server answers on the reactor meanwhile."""
        return threads.deferToThread(chat_model.chat, *args, **kwargs)

    def test_verify_object(self):
        verifyObject(IChatModel, OpenAIChatModel(model="m", environ={}))
        factory = {p.name: p for p in plugins(IChatModelFactory)}["openai"]
        built = factory.build({"environ": {"TITAN_LLM_MODEL": "llama3.1",
                                           "TITAN_LLM_BASE_URL": "http://127.0.0.1:9/v1/"}})
        verifyObject(IChatModel, built)
        self.assertEqual((built.model, built.url, built.api_key),
                         ("llama3.1", "http://127.0.0.1:9/v1/chat/completions", None))
        with self.assertRaises(NotConfigured) as caught:
            OpenAIChatModel(environ={})
        self.assertIn("set TITAN_LLM_MODEL", str(caught.exception))

    @defer.inlineCallbacks
    def test_a_reply_and_its_usage(self):
        base = self.serve((200, {}, completion("Tides follow the moon.", model="m-1-0613",
                                               tokens_in=21, tokens_out=6)))
        model = self.model(base, price_in=2.0, price_out=8.0)
        client = FakeClient({"r-1": {"agent_run_id": "agent-3", "stage": "PLAN"}})
        metered = Metered(model, Meter(environ={"TITAN_JOB_ID": "r-1/plan",
                                                "TITAN_RUN_ID": "r-1"},
                                       client_factory=lambda: client))
        reply = yield self.chat(metered, [{"role": "system", "content": "be brief"},
                                          {"role": "user", "content": "Why tides?"}],
                                temperature=0, max_tokens=50)
        self.assertEqual((reply.text, reply.model, reply.finish_reason),
                         ("Tides follow the moon.", "m-1-0613", "stop"))
        self.assertEqual(reply.usage, Usage(tokens_in=21, tokens_out=6))
        self.assertAlmostEqual(reply.cost, (21 * 2.0 + 6 * 8.0) / 1e6)
        self.assertGreater(reply.latency, 0)
        [sent] = self.site.requests
        self.assertEqual(sent["authorization"], "Bearer sk-test-secret-9f3c")
        self.assertEqual(sent["body"], {"model": "m-1", "temperature": 0, "max_tokens": 50,
                                        "messages": [{"role": "system", "content": "be brief"},
                                                     {"role": "user", "content": "Why tides?"}]})
        seen = summarize(client, agent_run_id="agent-3")
        self.assertEqual((seen["stages"]["PLAN"]["tokens_in"],
                          seen["stages"]["PLAN"]["tokens_out"], seen["total"]["calls"],
                          seen["total"]["models"]), (21, 6, 1, {"m-1-0613": 1}))
        self.assertEqual(self.slept, [])

    @defer.inlineCallbacks
    def test_429_then_success_honours_retry_after_within_its_bound(self):
        limited = (429, {"Retry-After": "0.2"}, {"error": {"message": "slow down"}})
        greedy = (429, {"Retry-After": "3600"}, {"error": {"message": "slow down"}})
        base = self.serve(limited, greedy, (429, {}, {}), (200, {}, completion("fine")))
        reply = yield self.chat(self.model(base), "hello")
        self.assertEqual(reply.text, "fine")
        # As asked (0.2 s); an hour capped at max_retry_after; no header: the backoff (3rd).
        self.assertEqual(self.slept, [0.2, 0.5, 0.04])
        self.assertEqual(len(self.site.requests), 4)

    @defer.inlineCallbacks
    def test_429_past_the_retries_is_a_rate_limit_error(self):
        base = self.serve((429, {}, {"error": {"message": "quota exceeded"}}))
        with self.assertRaises(RateLimited) as caught:
            yield self.chat(self.model(base, retries=2), "hello")
        self.assertIn("HTTP 429: quota exceeded (gave up after 3 attempts)",
                      str(caught.exception))
        self.assertEqual(self.slept, [0.01, 0.02])

    @defer.inlineCallbacks
    def test_5xx_is_retried_with_backoff(self):
        base = self.serve((503, {}, {"error": {"message": "overloaded"}}),
                          (500, {}, "boom"), (200, {}, completion("after all")))
        reply = yield self.chat(self.model(base), "hello")
        self.assertEqual(reply.text, "after all")
        self.assertEqual(self.slept, [0.01, 0.02])
        self.site.answers = [(502, {}, {"error": {"message": "bad gateway"}})]
        with self.assertRaises(ServerError) as caught:
            yield self.chat(self.model(base, retries=1), "hello")
        self.assertIn("/v1/chat/completions: HTTP 502: bad gateway (gave up after 2 attempts)",
                      str(caught.exception))

    @defer.inlineCallbacks
    def test_401_names_the_key_without_showing_it(self):
        base = self.serve((401, {}, {"error": {"message": "Incorrect API key provided"}}))
        with self.assertRaises(AuthenticationError) as caught:
            yield self.chat(self.model(base), "hello")
        message = str(caught.exception)
        self.assertIn("HTTP 401: the server refused the API key (check TITAN_LLM_API_KEY "
                      "(the key sent ends in ...9f3c)): Incorrect API key provided", message)
        self.assertNotIn("sk-test-secret", message)
        self.assertEqual(len(self.site.requests), 1)  # not retried
        with self.assertRaises(AuthenticationError) as caught:
            yield self.chat(self.model(base, api_key=""), "hello")
        self.assertIn("TITAN_LLM_API_KEY is not set: no key was sent", str(caught.exception))
        self.assertIsNone(self.site.requests[-1]["authorization"])

    @defer.inlineCallbacks
    def test_404_names_the_model(self):
        base = self.serve((404, {}, {"error": {"message": "model 'gpt-9' does not exist"}}))
        with self.assertRaises(ModelNotFound) as caught:
            yield self.chat(self.model(base), "hello", model="gpt-9")
        self.assertIn("HTTP 404: no model 'gpt-9' there, or no such endpoint (check "
                      "TITAN_LLM_MODEL and TITAN_LLM_BASE_URL): model 'gpt-9' does not exist",
                      str(caught.exception))
        self.assertEqual(self.site.requests[0]["body"]["model"], "gpt-9")

    @defer.inlineCallbacks
    def test_a_timeout(self):
        base = self.serve(("hang", 30))
        with self.assertRaises(ChatTimeout) as caught:
            yield self.chat(self.model(base, timeout=0.2, retries=1), "hello")
        self.assertIn("no answer within 0.2 s (TITAN_LLM_TIMEOUT) (gave up after 2 attempts)",
                      str(caught.exception))
        self.assertEqual(len(self.site.requests), 2)

    @defer.inlineCallbacks
    def test_an_unreachable_server(self):
        base = self.serve((200, {}, completion("x")))
        dead = "http://127.0.0.1:1/v1"
        with self.assertRaises(ServerError) as caught:
            yield self.chat(self.model(dead, retries=1), "hello")
        self.assertIn(f"cannot reach {dead}/chat/completions", str(caught.exception))
        self.assertIn("(gave up after 2 attempts)", str(caught.exception))
        del base

    def test_retry_after_forms(self):
        self.assertEqual(retry_after("7"), 7.0)
        self.assertEqual(retry_after(None), None)
        self.assertEqual(retry_after("soon"), None)
        self.assertAlmostEqual(retry_after("Wed, 21 Oct 2015 07:28:10 GMT",
                                           now=lambda: 1445412480.0), 10.0)
