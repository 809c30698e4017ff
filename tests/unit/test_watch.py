"""Following a run by its changes (WATCH_RUN / RUN_CHANGED), batch submits (SUBMIT_JOBS) and
waiting for many jobs (WAIT_JOBS), through the master's protocol with a fake clock."""
from __future__ import annotations

from twisted.internet import defer
from twisted.trial.unittest import SynchronousTestCase

from titan.core import events as ev
from titan.core.dag import parse_dag
from titan.core.scheduler import Scheduler
from titan.master.service import WATCH_INTERVAL
from titan.protocols.opcodes import Op
from tests.unit.test_master import MasterCase

DIAMOND = {"name": "d", "jobs": [{"id": "a", "command": "true"},
                                 {"id": "b", "command": "true", "depends_on": ["a"]},
                                 {"id": "c", "command": "true"}]}


class CoreNamesWhatMovedTests(SynchronousTestCase):
    def test_run_changed_names_the_jobs_that_moved(self):
        s = Scheduler()
        s.apply(ev.WorkerJoined("w1", "w1", "h", (), 1, (), ()), 0.0)
        s.apply(ev.DagSubmitted("r", parse_dag(DIAMOND)), 0.0)
        out = s.apply(ev.JobFinished("r/a", "w1", 1, 0, None), 2.0)
        [changed] = [d for d in out if isinstance(d, ev.RunChanged)]
        # a completed and the next job took the freed slot; the third, still pending, did
        # not move and is not named.
        [running] = [k for k, j in s.jobs.items() if j.state.value == "RUNNING"]
        self.assertEqual(sorted(changed.jobs), sorted(["r/a", running]))
        grown = s.apply(ev.JobsAdded("r", tuple(parse_dag(
            {"name": "g", "jobs": [{"id": "e", "command": "true"}]}).specs), "me"), 3.0)
        [changed] = [d for d in grown if isinstance(d, ev.RunChanged)]
        self.assertEqual(changed.jobs, ("r/e",))


class WatchRunTests(MasterCase):
    def pushes(self, peer) -> list[dict]:
        self.reactor.advance(0)
        self.reactor.advance(WATCH_INTERVAL)
        return [body for op, body in peer.frames() if op == Op.RUN_CHANGED]

    def finish(self, worker, job_id: str, code: int = 0) -> None:
        worker.send(Op.JOB_COMPLETE, {"job_id": job_id, "attempt": 1, "exit_code": code})

    def test_a_snapshot_then_only_what_changed(self):
        w = self.worker("w1", slots=1)
        c = self.client()
        run_id = c.result(Op.SUBMIT_DAG, DIAMOND)["run_id"]
        snap = c.result(Op.WATCH_RUN, {"run_id": run_id})
        self.assertEqual([j["node"] for j in snap["jobs"]], ["a", "b", "c"])
        [first] = self.dispatched(w)
        self.finish(w, first["job_id"])
        [push] = self.pushes(c)
        # Two jobs moved (the one that ended, the one dispatched next); the third did not.
        self.assertEqual(len(push["jobs"]), 2)
        self.assertEqual(push["jobs"][0], {**push["jobs"][0], "job_id": first["job_id"],
                                           "state": "COMPLETED"})
        self.assertEqual(push["jobs"][1]["state"], "RUNNING")
        self.assertGreater(push["version"], snap["version"])
        self.assertEqual((push["state"], push["total"]), ("RUNNING", 3))
        self.assertEqual(push["counts"], {"COMPLETED": 1, "RUNNING": 1, "PENDING": 1})

    def test_the_last_push_ends_the_watch(self):
        w = self.worker("w1", slots=3)
        c = self.client()
        run_id = c.result(Op.SUBMIT_DAG, DIAMOND)["run_id"]
        c.result(Op.WATCH_RUN, {"run_id": run_id, "jobs": False})
        states = {}
        for _ in range(3):
            for d in self.dispatched(w):
                self.finish(w, d["job_id"])
        for push in self.pushes(c):
            states.update({j["node"]: j["state"] for j in push["jobs"]})
            last = push
        self.assertEqual(last["state"], "COMPLETED")
        self.assertEqual(states, {"a": "COMPLETED", "b": "COMPLETED", "c": "COMPLETED"})
        self.assertEqual(self.master._watchers, {})

    def test_changes_of_one_turn_go_in_one_push(self):
        w = self.worker("w1", slots=2)
        c = self.client()
        run_id = c.result(Op.SUBMIT_DAG, DIAMOND)["run_id"]
        c.result(Op.WATCH_RUN, {"run_id": run_id})
        a, other = self.dispatched(w)
        from titan.protocols import codec
        from titan.protocols.frame import encode_frame
        data = b"".join(encode_frame(Op.JOB_COMPLETE, codec.pack(
            {"rid": 100 + i, "job_id": d["job_id"], "attempt": 1, "exit_code": 0}))
            for i, d in enumerate((a, other)))
        w.proto.dataReceived(data)  # both in one read: one turn of the reactor
        pushes = self.pushes(c)
        self.assertEqual(len(pushes), 1, pushes)
        self.assertEqual({j["node"]: j["state"] for j in pushes[0]["jobs"]},
                         {"a": "COMPLETED", "c": "COMPLETED", "b": "RUNNING"})

    def test_pushes_are_spaced_but_the_end_goes_at_once(self):
        w = self.worker("w1", slots=1)
        c = self.client()
        run_id = c.result(Op.SUBMIT_DAG, DIAMOND)["run_id"]
        c.result(Op.WATCH_RUN, {"run_id": run_id})

        def pushed():
            return [b for op, b in c.frames() if op == Op.RUN_CHANGED]
        [first] = self.dispatched(w)
        self.finish(w, first["job_id"])
        self.assertEqual(len(pushed()), 1)  # the first goes at once
        self.reactor.advance(WATCH_INTERVAL / 2)
        [second] = self.dispatched(w)
        self.finish(w, second["job_id"])
        self.assertEqual(pushed(), [])  # too soon after the last one: held
        self.reactor.advance(WATCH_INTERVAL / 2)
        [held] = pushed()
        self.assertEqual(sorted(j["state"] for j in held["jobs"]), ["COMPLETED", "RUNNING"])
        [third] = self.dispatched(w)
        self.finish(w, third["job_id"])  # the run ends: its push does not wait
        [last] = pushed()
        self.assertEqual((last["state"], [j["state"] for j in last["jobs"]]),
                         ("COMPLETED", ["COMPLETED"]))

    def test_without_jobs_the_snapshot_lists_the_active_ones(self):
        self.worker("w1", slots=1)
        c = self.client()
        run_id = c.result(Op.SUBMIT_DAG, DIAMOND)["run_id"]
        snap = c.result(Op.WATCH_RUN, {"run_id": run_id, "jobs": False})
        self.assertNotIn("jobs", snap)
        self.assertEqual([(j["node"], j["state"]) for j in snap["active"]], [("a", "RUNNING")])

    def test_unwatch_and_hang_up_stop_the_pushes(self):
        w = self.worker("w1", slots=1)
        c1, c2 = self.client(), self.client()
        run_id = c1.result(Op.SUBMIT_DAG, DIAMOND)["run_id"]
        c1.result(Op.WATCH_RUN, {"run_id": run_id})
        c2.result(Op.WATCH_RUN, {"run_id": run_id})
        c1.result(Op.UNWATCH_RUN, {"run_id": run_id})
        [d] = self.dispatched(w)
        self.finish(w, d["job_id"])
        self.assertEqual(self.pushes(c1), [])
        self.assertEqual(len(self.pushes(c2)), 1)
        c2.proto.connectionLost(None)
        self.assertEqual(self.master._watchers, {})

    def test_an_unknown_run_is_named(self):
        c = self.client()
        op, body = c.reply(c.send(Op.WATCH_RUN, {"run_id": "nope"}))
        self.assertEqual((op, body["code"], body["message"]),
                         (Op.ERROR, "not_found", "no run nope"))


class SubmitManyTests(MasterCase):
    def test_many_jobs_in_one_request_in_order(self):
        w = self.worker("w1", slots=2)
        c = self.client()
        ids = c.result(Op.SUBMIT_JOBS, {"jobs": [{"command": ["echo", str(i)]}
                                                 for i in range(5)] + [{"command": "x",
                                                                        "job_id": "mine"}]})
        self.assertEqual(len(ids["job_ids"]), 6)
        self.assertEqual(ids["job_ids"][-1], "mine")
        self.assertEqual(len(set(ids["job_ids"])), 6)
        self.assertEqual([d["spec"]["command"] for d in self.dispatched(w)],
                         [["echo", "0"], ["echo", "1"]])

    def test_a_bad_job_names_its_place_and_nothing_is_queued(self):
        c = self.client()
        for jobs, message in (
                ([{"command": "true"}, {"command": "true", "timeout": -5}],
                 "jobs[1]: job "),
                ([{"command": "true"}, "true"], "jobs[1]: expected a map of job options, not str"),
                ([{"command": "true", "job_id": "x"}, {"command": "y", "job_id": "x"}],
                 "jobs[1]: job id 'x' appears twice in the batch"),
                ([{"command": "s", "kind": "service", "name": "s"}],
                 "jobs[0]: a batch takes jobs only")):
            op, body = c.reply(c.send(Op.SUBMIT_JOBS, {"jobs": jobs}))
            self.assertEqual((op, body["code"]), (Op.ERROR, "bad_job"), body)
            self.assertTrue(body["message"].startswith(message), body["message"])
        op, body = c.reply(c.send(Op.SUBMIT_JOBS, {}))
        self.assertEqual((op, body["code"]), (Op.ERROR, "bad_request"))
        self.assertEqual(self.master.scheduler.jobs, {})

    def test_wait_jobs_is_held_until_every_one_ended(self):
        w = self.worker("w1", slots=3)
        c = self.client()
        ids = c.result(Op.SUBMIT_JOBS, {"jobs": [{"command": "true"}] * 3})["job_ids"]
        self.dispatched(w)
        rid = c.send(Op.WAIT_JOBS, {"job_ids": ids})
        for job_id in ids[:2]:
            w.send(Op.JOB_COMPLETE, {"job_id": job_id, "attempt": 1, "exit_code": 0})
        self.assertEqual(c.frames(), [])
        w.send(Op.JOB_COMPLETE, {"job_id": ids[2], "attempt": 1, "exit_code": 3})
        result = c.reply(rid)[1]["result"]
        self.assertEqual(result["pending"], [])
        self.assertEqual([(j["job_id"], j["state"]) for j in result["jobs"]],
                         [(ids[0], "COMPLETED"), (ids[1], "COMPLETED"), (ids[2], "FAILED")])
        self.assertEqual(self.master._done_waiters, {})

    def test_wait_jobs_times_out_with_what_is_pending(self):
        w = self.worker("w1", slots=2)
        c = self.client()
        ids = c.result(Op.SUBMIT_JOBS, {"jobs": [{"command": "true"}] * 2})["job_ids"]
        self.dispatched(w)
        w.send(Op.JOB_COMPLETE, {"job_id": ids[0], "attempt": 1, "exit_code": 0})
        rid = c.send(Op.WAIT_JOBS, {"job_ids": ids, "timeout": 2})
        self.reactor.advance(2.5)
        result = c.reply(rid)[1]["result"]
        self.assertEqual(([j["job_id"] for j in result["jobs"]], result["pending"]),
                         ([ids[0]], [ids[1]]))
        self.assertEqual(self.master._done_waiters, {})
        op, body = c.reply(c.send(Op.WAIT_JOBS, {"job_ids": [ids[0], "zzz"]}))
        self.assertEqual((op, body["code"]), (Op.ERROR, "not_found"))


class AsyncClientTests(MasterCase):
    """The Twisted client's batch submit and watch_run, wired to the master in memory."""

    def connect(self):
        from twisted.test.iosim import connect, makeFakeClient, makeFakeServer

        from titan.sdk.asyncclient import AsyncClient, ClientProtocol
        server = self.master.listener.factory.buildProtocol(None)
        proto = ClientProtocol()
        proto.clock = self.reactor
        self.pump = connect(server, makeFakeServer(server), proto, makeFakeClient(proto),
                            greet=False)
        client = AsyncClient(proto)
        d = client.call(Op.HELLO, {"token": "sesame"})
        self.flush()
        self.successResultOf(d)
        return client

    def flush(self):
        for _ in range(5):
            self.pump.flush()
            self.reactor.advance(0)
            self.reactor.advance(WATCH_INTERVAL)

    def test_submit_many_map_wait_many_and_watch_run(self):
        w = self.worker("w1", slots=4)
        client = self.connect()
        d = defer.ensureDeferred(client.map(["echo", "{}"], ["x", "y"], priority=3))
        self.flush()
        ids = self.successResultOf(d)
        specs = [b["spec"] for b in self.dispatched(w)]
        self.assertEqual([(s["command"], s["priority"]) for s in specs],
                         [(["echo", "x"], 3), (["echo", "y"], 3)])
        waited = defer.ensureDeferred(client.wait_many(ids))
        for job_id in ids:
            w.send(Op.JOB_COMPLETE, {"job_id": job_id, "attempt": 1, "exit_code": 0})
        self.flush()
        self.assertEqual([j["state"] for j in self.successResultOf(waited)],
                         ["COMPLETED", "COMPLETED"])

        run_id = self.client().result(Op.SUBMIT_DAG, DIAMOND)["run_id"]
        seen = []
        ended = client.watch_run(run_id, lambda run: seen.append(
            {j["node"]: j["state"] for j in run["changed"]}))
        self.flush()
        for _ in range(3):
            for d in self.dispatched(w):
                w.send(Op.JOB_COMPLETE, {"job_id": d["job_id"], "attempt": 1, "exit_code": 0})
            self.flush()
        run = self.successResultOf(ended)
        self.assertEqual(run["state"], "COMPLETED")
        self.assertEqual({j["node"]: j["state"] for j in run["jobs"]},
                         {"a": "COMPLETED", "b": "COMPLETED", "c": "COMPLETED"})
        self.assertEqual(seen[0], {"a": "RUNNING", "b": "PENDING", "c": "RUNNING"})
        self.assertEqual(seen[-1].get("b"), "COMPLETED")
        self.assertNotIn("a", seen[-1])  # only what moved is told


class SubmitAndWatchTests(MasterCase):
    def test_submit_dag_with_watch_answers_the_run_and_pushes_its_changes(self):
        w = self.worker("w1", slots=1)
        c = self.client()
        submitted = c.result(Op.SUBMIT_DAG, dict(DIAMOND, watch=True))
        snap = submitted["run"]
        self.assertEqual((snap["run_id"], [j["node"] for j in snap["jobs"]]),
                         (submitted["run_id"], ["a", "b", "c"]))
        self.assertEqual(snap["jobs"][0]["state"], "RUNNING")
        [d] = self.dispatched(w)
        w.send(Op.JOB_COMPLETE, {"job_id": d["job_id"], "attempt": 1, "exit_code": 0})
        self.reactor.advance(WATCH_INTERVAL)
        [push] = [b for op, b in c.frames() if op == Op.RUN_CHANGED]
        self.assertEqual(push["jobs"][0]["state"], "COMPLETED")
        other = self.client()  # without watch: no run in the reply, no pushes
        self.assertNotIn("run", other.result(Op.SUBMIT_DAG, DIAMOND))
