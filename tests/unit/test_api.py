"""The master's operations called directly (titan/master/api.py), without any face.

What every face gets from them: the refusals a job's own token meets, the validation of
requests (typed errors with the wire's codes and messages, nothing recorded), and replies
that wait for the persistence barrier.
"""
from __future__ import annotations

from twisted.internet import defer

from titan.auth import job_token
from titan.core import events as ev
from titan.errors import RemoteError
from titan.master import api as A
from titan.master.api import OPERATOR, Caller
from tests.unit.test_master import TOKEN, HeldPersistence, MasterCase


class ApiCase(MasterCase):
    def setUp(self) -> None:
        super().setUp()  # a master on a memory reactor (test_master's)
        self.api = self.master.api

    def settle(self, d):
        """What a Deferred (or coroutine) of the API gives, once the records are written."""
        if not isinstance(d, defer.Deferred):
            d = defer.Deferred.fromCoroutine(d) if hasattr(d, "send") else defer.succeed(d)
        self.reactor.advance(0)
        return self.successResultOf(d)

    def refused(self, kind: type, call, *args, **kwargs) -> RemoteError:
        """The operation refuses at once with `kind` and records nothing."""
        records = self.master.persistence.bytes_since_compaction
        e = self.assertRaises(kind, call, *args, **kwargs)
        self.assertIsInstance(e, RemoteError)  # what every face knows how to say
        self.assertEqual(self.master.persistence.bytes_since_compaction, records)
        return e

    def running_job(self, run: bool = False) -> tuple[str, Caller]:
        """A job running on w1 (in a run with `run`), and the caller its token makes."""
        self.master.handle(ev.WorkerJoined("w1", "w1", "127.0.0.1", frozenset(), 4))
        if run:
            reply = self.settle(self.api.submit_dag(OPERATOR, {
                "name": "r", "jobs": [{"id": "a", "command": ["true"]}]}))
            job_id = reply["jobs"][0]
        else:
            job_id = self.settle(self.api.submit(OPERATOR, {"command": ["true"]}))["job_id"]
        self.master.handle(ev.JobStarted(job_id, "w1", 1))
        self.reactor.advance(0)
        caller = self.api.authenticate(job_token(TOKEN, job_id, 1), "job's token")
        self.assertEqual(caller.scope, (job_id, 1))
        return job_id, caller


class ScopeTests(ApiCase):
    def test_a_wrong_token_is_refused_and_closes(self):
        e = self.refused(A.WrongToken, self.api.authenticate, "guess")
        self.assertEqual((e.code, e.message, e.close), ("auth", "wrong cluster token", True))
        self.assertIsNone(self.api.authenticate(TOKEN).scope)

    def test_what_a_jobs_token_may_not_do(self):
        job_id, caller = self.running_job()
        for operation in ("DECIDE_GATE", "CANCEL_JOB", "REMOVE_SCHEDULE", "RESTART_SERVICE"):
            e = self.refused(A.Forbidden, self.api.admit, caller, operation)
            self.assertEqual((e.code, e.message, e.close),
                             ("forbidden", f"a job's own token may not {operation}", False))
        self.api.admit(caller, "SUBMIT_JOB")  # what it may do
        self.api.admit(OPERATOR, "DECIDE_GATE")  # the cluster token may do anything
        e = self.refused(A.Forbidden, self.api.decide_gate, caller, job_id, True, "me", "")
        self.assertEqual(e.code, "forbidden")

    def test_a_jobs_token_ends_with_its_attempt(self):
        job_id, caller = self.running_job()
        self.settle(self.api.job_complete("w1", job_id, 1, 0, None))
        e = self.refused(A.Unauthorized, self.api.admit, caller, "JOB_INFO")
        self.assertEqual((e.code, e.close), ("auth", True))
        self.assertEqual(e.message, f"the token of job {job_id} (attempt 1) is no longer "
                                    "valid: that attempt is not running")
        self.refused(A.Unauthorized, self.api.authenticate, job_token(TOKEN, job_id, 1))
        self.refused(A.Unauthorized, self.api.set_result, caller, None, 1)

    def test_a_job_sets_its_own_result_only(self):
        job_id, caller = self.running_job()
        e = self.refused(A.Forbidden, self.api.set_result, caller, "other", 1)
        self.assertEqual(e.message, "a job may set its own result only")
        self.assertEqual(self.settle(self.api.set_result(caller, None, {"n": 1})),
                         {"job_id": job_id})
        self.assertEqual(self.api.get_result(OPERATOR, job_id)["result"], {"n": 1})

    def test_a_job_adds_jobs_to_its_own_run_only_as_itself(self):
        job_id, caller = self.running_job(run=True)
        run_id = job_id.split("/")[0]
        e = self.refused(A.Forbidden, self.api.add_jobs, caller, "other-run", [])
        self.assertEqual(e.message, f"a job may add jobs to its own run ({run_id}) only")
        recorded = []
        handle = self.master.handle
        self.patch(self.master, "handle", lambda event: recorded.append(event) or handle(event))
        reply = self.settle(self.api.add_jobs(caller, None, [{"id": "b", "command": ["true"]}],
                                              by="someone else"))
        self.assertEqual(reply, {"run_id": run_id, "added": [f"{run_id}/b"]})
        [added] = [e for e in recorded if isinstance(e, ev.JobsAdded)]
        self.assertEqual((added.run_id, added.by), (run_id, job_id))

    def test_a_jobs_token_may_not_write_gate_keys(self):
        _, caller = self.running_job()
        e = self.refused(A.Forbidden, self.api.kv_set, caller, "titan:hitl:status:g", "APPROVED")
        self.assertEqual(e.message, "a job's own token may not KV_SET 'titan:hitl:status:g': "
                                    "keys under titan:hitl: belong to approval gates")
        # The cluster token may: here it meets the missing store instead.
        e = self.refused(A.NoStore, self.api.kv_set, OPERATOR, "titan:hitl:status:g", "x")
        self.assertEqual((e.code, e.message),
                         ("no_store", "the store is not configured on this master"))


class ValidationTests(ApiCase):
    def check(self, kind: type, code: str, message: str, call, *args) -> None:
        e = self.refused(kind, call, *args)
        self.assertEqual((e.code, e.message), (code, message))
        self.assertEqual(self.master.scheduler.jobs, {})

    def test_submissions(self):
        api = self.api
        self.check(A.BadRequest, "bad_request", "'jobs' is required: a list of job submissions",
                   api.submit_many, OPERATOR, [])
        self.check(A.BadJob, "bad_job", "jobs[1]: a batch takes jobs only; deploy services "
                   "one at a time", api.submit_many, OPERATOR,
                   [{"command": ["true"]}, {"kind": "service", "name": "s"}])
        self.check(A.BadJob, "bad_job", "jobs[1]: job id 'x' appears twice in the batch",
                   api.submit_many, OPERATOR,
                   [{"job_id": "x", "command": ["true"]}, {"job_id": "x", "command": ["true"]}])
        self.check(A.BadJob, "bad_job", "kind must be job or service, not 'thing'",
                   api.submit, OPERATOR, {"kind": "thing"})
        self.check(A.BadDag, "bad_dag", "schedule '* *' is not a cron expression (5 fields, "
                   "or 6 with seconds last)", api.submit_dag, OPERATOR,
                   {"name": "n", "schedule": "* *", "jobs": [{"id": "a", "command": ["x"]}]})

    def test_reads_and_decisions(self):
        api = self.api
        self.check(A.BadRequest, "bad_request", "limit must be a whole number of at least 1, "
                   "not 0", api.list_jobs, OPERATOR, None, 0)
        self.check(A.BadRequest, "bad_request", "'job_ids' is required: a list of job ids",
                   lambda: api.wait_jobs(OPERATOR, "x", None).send(None))
        self.check(A.BadRequest, "bad_request", "'approved' is required (true or false)",
                   api.decide_gate, OPERATOR, None, "yes", "me", "")
        self.check(A.BadRequest, "bad_request", "'job_id' is required (str)",
                   api.decide_gate, OPERATOR, None, True, "me", "")
        self.check(A.NotFound, "not_found", "no schedule nightly",
                   api.remove_schedule, OPERATOR, "nightly")
        self.check(A.NotFound, "not_found", "no service web", api.restart_service, OPERATOR,
                   "web")
        self.check(A.BadRequest, "bad_request", "'member' is required (bytes or str)",
                   api.kv_sadd, OPERATOR, "k", 3)

    def test_a_result_over_the_limit(self):
        job_id = self.settle(self.api.submit(OPERATOR, {"command": ["true"]}))["job_id"]
        e = self.refused(A.BadResult, self.api.set_result, OPERATOR, job_id, "x" * 70_000)
        self.assertEqual(e.code, "bad_result")
        self.assertIn("over the 65536-byte limit; write a file instead", e.message)
        self.assertIsNone(self.api.get_result(OPERATOR, job_id)["result"])


class DurableReplyTests(ApiCase):
    """An operation's reply fires once its records are durable (the barrier), not before."""

    def setUp(self) -> None:
        super().setUp()
        self.held = HeldPersistence(self.master.persistence)
        self.master.persistence = self.held

    def held_until_release(self, d: defer.Deferred):
        self.reactor.advance(0)
        self.assertNoResult(d)
        self.held.release()
        return self.successResultOf(d)

    def test_changes_wait_for_their_records(self):
        api = self.api
        job_id = self.held_until_release(api.submit(OPERATOR, {"command": ["true"]}))["job_id"]
        self.assertEqual(self.held_until_release(api.submit_many(
            OPERATOR, [{"job_id": "b1", "command": ["true"]}])), {"job_ids": ["b1"]})
        reply = self.held_until_release(api.cancel(OPERATOR, job_id))
        self.assertEqual((reply["state"], reply["cancelled"]), ("CANCELLED", True))
        reply = self.held_until_release(api.submit_dag(OPERATOR, {
            "name": "g", "jobs": [{"id": "ok", "kind": "gate"}]}))
        gate = reply["jobs"][0]
        self.assertEqual(self.held_until_release(
            api.decide_gate(Caller(describe="a test"), gate, True, "me", "fine"))["state"],
            "COMPLETED")
        self.assertEqual(self.master.scheduler.jobs[gate].decision["via"], "a test")

    def test_a_wait_answers_once_the_end_is_durable(self):
        self.master.handle(ev.WorkerJoined("w1", "w1", "127.0.0.1", frozenset(), 1))
        job_id = self.held_until_release(
            self.api.submit(OPERATOR, {"command": ["true"]}))["job_id"]
        self.master.handle(ev.JobStarted(job_id, "w1", 1))
        wait = defer.Deferred.fromCoroutine(self.api.wait_job(OPERATOR, job_id, None))
        done = self.api.job_complete("w1", job_id, 1, 0, None)
        self.reactor.advance(0)
        self.assertNoResult(wait)  # ended in memory, not yet on disk
        self.assertNoResult(done)
        self.held.release()
        self.reactor.advance(0)
        self.assertEqual(self.successResultOf(wait)["state"], "COMPLETED")
        self.assertEqual(self.successResultOf(done), {})


class DashboardReadTests(ApiCase):
    """The operations the web face (titan/web/) reads its views with."""

    def diamond(self, name: str = "d") -> str:
        return self.settle(self.api.submit_dag(OPERATOR, {"name": name, "jobs": [
            {"id": "a", "command": ["true"]},
            {"id": "b", "command": ["true"], "depends_on": ["a"]},
            {"id": "c", "command": ["true"], "depends_on": ["a"]},
            {"id": "d", "command": ["true"], "depends_on": ["b", "c"]}]}))["run_id"]

    def test_runs_page_newest_first_with_a_cursor_and_filters(self):
        ids = [self.diamond(f"r{i}") for i in range(5)]
        page = self.api.runs_page(OPERATOR, limit=2)
        self.assertEqual([r["run_id"] for r in page["runs"]], ids[:2:-1][:2])
        rest = self.api.runs_page(OPERATOR, limit=2, cursor=page["next_cursor"])
        self.assertEqual([r["run_id"] for r in rest["runs"]], [ids[2], ids[1]])
        last = self.api.runs_page(OPERATOR, limit=2, cursor=rest["next_cursor"])
        self.assertEqual(([r["run_id"] for r in last["runs"]], last["next_cursor"]),
                         ([ids[0]], None))
        self.assertEqual([r["run_id"] for r in self.api.runs_page(OPERATOR, name="r3")["runs"]],
                         [ids[3]])
        self.api.cancel(OPERATOR, ids[1])
        self.reactor.advance(0)
        self.assertEqual([r["run_id"] for r in
                          self.api.runs_page(OPERATOR, state="cancelled")["runs"]], [ids[1]])
        e = self.refused(A.BadRequest, self.api.runs_page, OPERATOR, state="DONE")
        self.assertIn("no run state 'DONE'", e.message)
        self.refused(A.BadRequest, self.api.runs_page, OPERATOR, limit=0)

    def test_run_graph_gives_edges_and_pages_its_jobs(self):
        run_id = self.diamond()
        graph = self.api.run_graph(OPERATOR, run_id)
        self.assertEqual([j["node"] for j in graph["jobs"]], ["a", "b", "c", "d"])
        self.assertEqual(sorted(map(tuple, graph["edges"])),
                         [("a", "b"), ("a", "c"), ("b", "d"), ("c", "d")])
        self.assertEqual((graph["total"], graph["next_offset"]), (4, None))
        page = self.api.run_graph(OPERATOR, run_id, offset=1, limit=2)
        self.assertEqual(([j["node"] for j in page["jobs"]], page["next_offset"]),
                         (["b", "c"], 3))
        self.refused(A.NotFound, self.api.run_graph, OPERATOR, "nope")

    def test_gates_waiting_then_decided(self):
        run_id = self.settle(self.api.submit_dag(OPERATOR, {"name": "g", "jobs": [
            {"id": "ok", "kind": "gate", "message": "ship it?", "timeout": 600}]}))["run_id"]
        self.reactor.advance(10)
        [gate] = self.api.list_gates(OPERATOR)
        self.assertEqual((gate["run_id"], gate["question"], gate["state"]),
                         (run_id, "ship it?", "WAITING_APPROVAL"))
        self.assertAlmostEqual(gate["time_left"], 590, delta=1)
        self.assertEqual(self.api.list_gates(OPERATOR, decided=True), [])
        self.settle(self.api.decide_gate(OPERATOR, gate["job_id"], False, "ann", "not yet"))
        self.assertEqual(self.api.list_gates(OPERATOR), [])
        [done] = self.api.list_gates(OPERATOR, decided=True)
        self.assertEqual((done["state"], done["decision"]["by"], done["decision"]["comment"]),
                         ("CANCELLED", "ann", "not yet"))

    def test_workers_list_the_jobs_they_run(self):
        job_id, _ = self.running_job()
        [worker] = self.api.list_workers(OPERATOR)
        self.assertEqual(worker["jobs"], [job_id])

    def test_stop_service_names_a_service(self):
        self.refused(A.NotFound, self.api.stop_service, OPERATOR, "web")


class FakeStore:
    def __init__(self, data: dict) -> None:
        self.data = data

    def scan(self, cursor, match, count):
        keys = sorted(self.data)
        return defer.succeed((0, [k.encode() for k in keys]))

    def execute(self, command, key):
        assert command == "TYPE"
        value = self.data.get(key.decode() if isinstance(key, bytes) else key)
        kind = {str: "string", dict: "hash", set: "set", list: "list"}.get(type(value), "none")
        return defer.succeed(kind.encode())

    def ttl(self, key):
        return defer.succeed(-1)

    def get(self, key):
        return defer.succeed(self.data[key].encode())

    def hgetall(self, key):
        return defer.succeed({k.encode(): v.encode() for k, v in self.data[key].items()})

    def smembers(self, key):
        return defer.succeed({m.encode() for m in self.data[key]})

    def lrange(self, key, start, stop):
        return defer.succeed([v.encode() for v in self.data[key]])


class StoreBrowseTests(ApiCase):
    def test_scan_and_read_each_type(self):
        self.master.store = FakeStore({"s": "v", "h": {"f": "1"}, "set": {"b", "a"},
                                       "l": ["x", "y"]})
        page = self.successResultOf(self.api.store_scan(OPERATOR, "*", 0, 10))
        self.assertEqual(page["cursor"], 0)
        self.assertEqual({k["key"]: k["type"] for k in page["keys"]},
                         {"s": "string", "h": "hash", "set": "set", "l": "list"})
        read = lambda key: self.successResultOf(self.api.store_read(OPERATOR, key))["value"]
        self.assertEqual((read("s"), read("h"), read("set"), read("l")),
                         ("v", {"f": "1"}, ["a", "b"], ["x", "y"]))
        self.failureResultOf(self.api.store_read(OPERATOR, "gone"), A.NotFound)

    def test_no_store(self):
        self.refused(A.NoStore, self.api.store_scan, OPERATOR)


class UsageStore(FakeStore):
    """A store with the usage records of titan/agents/usage.py."""

    def smembers(self, key):
        return defer.succeed({m.encode() for m in self.data.get(key, ())})

    def mget(self, *keys):
        return defer.succeed([None if self.data.get(k) is None else self.data[k].encode()
                              for k in keys])


class AgentRunUsageTests(ApiCase):
    """agent_run_usage: the agent run's model usage summed per stage, per run and in total."""

    def record(self, stage, run_id, calls, tokens_in, tokens_out, latency, cost) -> str:
        import json
        return json.dumps({"stage": stage, "run_id": run_id, "calls": calls,
                           "tokens_in": tokens_in, "tokens_out": tokens_out,
                           "latency": latency, "cost": cost, "models": {"m": calls}})

    def test_summed_per_stage_run_and_total_skipping_gone_and_broken_records(self):
        index = "titan:usage:agent:a1"
        self.master.store = UsageStore({
            index: {"k1", "k2", "k3", "k4", "gone", "broken"},
            "k1": self.record("PLAN", "r1", 1, 10, 5, 0.5, 0.01),
            "k2": self.record("ITER", "r2", 2, 20, 8, 1.0, 0.02),
            "k3": self.record("ITER", "r3", 3, 30, 9, 1.5, 0.03),
            "k4": self.record(None, "r4", 1, 1, 1, 0.25, 0.0),
            "broken": "not json"})
        usage = self.successResultOf(self.api.agent_run_usage(OPERATOR, "a1"))
        self.assertEqual({s: (t["calls"], t["tokens_in"], t["tokens_out"])
                          for s, t in usage["stages"].items()},
                         {"PLAN": (1, 10, 5), "ITER": (5, 50, 17), "": (1, 1, 1)})
        self.assertEqual({r: t["calls"] for r, t in usage["runs"].items()},
                         {"r1": 1, "r2": 2, "r3": 3, "r4": 1})
        self.assertEqual(usage["total"], {"calls": 7, "tokens_in": 61, "tokens_out": 23,
                                          "latency": 3.25, "cost": 0.06})
        self.assertFalse(usage["truncated"])

    def test_bounded_and_says_so(self):
        self.master.store = UsageStore({
            "titan:usage:agent:a1": {"k1", "k2", "k3"},
            **{k: self.record("PLAN", "r1", 1, 1, 1, 0.1, 0.0) for k in ("k1", "k2", "k3")}})
        self.patch(self.api, "USAGE_KEYS", 2)
        usage = self.successResultOf(self.api.agent_run_usage(OPERATOR, "a1"))
        self.assertEqual((usage["total"]["calls"], usage["truncated"]), (2, True))

    def test_nothing_recorded_and_no_store(self):
        self.master.store = UsageStore({})
        usage = self.successResultOf(self.api.agent_run_usage(OPERATOR, "a1"))
        self.assertEqual((usage["stages"], usage["total"]["calls"]), ({}, 0))
        self.master.store = None
        self.assertIsNone(self.successResultOf(self.api.agent_run_usage(OPERATOR, "a1")))
