"""Starting workers by hand and draining them (issue 17, Cluster): the core's drain, and the
master's shell that starts the processes and sees drained workers out, on a fake clock."""
from __future__ import annotations

import signal

from twisted.internet.testing import MemoryReactorClock
from twisted.trial.unittest import SynchronousTestCase

from tests.unit.test_master import TOKEN, Peer
from titan.config import AutoscalerConfig, Config, MasterConfig
from titan.core import events as ev
from titan.core.model import JobSpec, JobState, WorkerState
from titan.core.scheduler import Scheduler
from titan.master import autoscale
from titan.master.api import OPERATOR, BadRequest, Caller, Forbidden, NotFound, NotRunning, \
    WorkerLimit
from titan.master.service import MasterService
from titan.protocols.opcodes import Op


def _joined(worker_id: str, slots: int = 2) -> ev.WorkerJoined:
    return ev.WorkerJoined(worker_id=worker_id, name=worker_id, host="h", tags=(),
                           slots=slots, running=(), finished=())


def _submitted(job_id: str) -> ev.JobSubmitted:
    return ev.JobSubmitted(JobSpec(job_id=job_id, command=("true",)))


class CoreDrainTests(SynchronousTestCase):
    """The pure scheduler: events in, decisions out."""

    def setUp(self):
        self.s = Scheduler(heartbeat_timeout=5.0)
        self.now = 100.0
        self.events: list = []

    def apply(self, event) -> list:
        self.now += 1
        self.events.append((event, self.now))
        return self.s.apply(event, self.now)

    def dispatched(self, decisions) -> list:
        return [(d.job_id, d.worker_id) for d in decisions if isinstance(d, ev.Dispatch)]

    def test_a_drained_worker_takes_nothing_new_finishes_its_job_then_leaves(self):
        self.apply(_joined("w1"))
        self.assertEqual(self.dispatched(self.apply(_submitted("a"))), [("a", "w1")])
        out = self.apply(ev.WorkerRetiring("w1", "drained by an operator"))
        self.assertIn(ev.WorkerChanged("w1", WorkerState.DRAINING, "drained by an operator"),
                      out)
        # A free slot, but no new job for it.
        self.assertEqual(self.dispatched(self.apply(_submitted("b"))), [])
        # Its job ends as usual, and still nothing new goes there.
        out = self.apply(ev.JobFinished("a", "w1", 1, 0, None))
        self.assertEqual(self.s.jobs["a"].state, JobState.COMPLETED)
        self.assertEqual(self.dispatched(out), [])
        self.assertEqual(self.s.workers["w1"].state, WorkerState.DRAINING)
        # Idle, it leaves: gone at once, not after a heartbeat timeout.
        out = self.apply(ev.WorkerDisconnected("w1"))
        self.assertNotIn("w1", self.s.workers)
        self.assertIn(ev.WorkerChanged("w1", WorkerState.DEAD,
                                       "drained: left after its last job"), out)
        self.assertEqual(self.s.jobs["b"].state, JobState.PENDING)
        self.assertEqual(self.dispatched(self.apply(_joined("w2"))), [("b", "w2")])

    def test_a_drain_survives_a_reconnect_and_a_replay(self):
        self.apply(_joined("w1"))
        self.apply(_submitted("a"))
        self.apply(ev.WorkerRetiring("w1", "drained"))
        self.apply(ev.WorkerDisconnected("w1"))  # its job still runs: not gone
        self.assertEqual(self.s.workers["w1"].state, WorkerState.DRAINING)
        back = ev.WorkerJoined(worker_id="w1", name="w1", host="h", tags=(), slots=2,
                               running=(ev.JobReport("a", 1),), finished=())
        out = self.apply(back)
        self.assertIn(ev.WorkerChanged("w1", WorkerState.DRAINING, "joined"), out)
        self.assertEqual(self.dispatched(self.apply(_submitted("b"))), [])
        self.apply(ev.MasterRestarted())
        self.assertEqual(self.s.workers["w1"].state, WorkerState.DRAINING)
        # What a master restart replays from its log gives the same worker.
        again = Scheduler(heartbeat_timeout=5.0)
        again.replay((at, e) for e, at in self.events)
        self.assertEqual(again.workers["w1"].state, WorkerState.DRAINING)
        self.assertEqual(again.workers["w1"].running, {"a"})

    def test_a_drained_worker_lost_with_a_job_running_is_any_lost_worker(self):
        self.apply(_joined("w1"))
        self.apply(_submitted("a"))
        self.apply(ev.WorkerRetiring("w1", "drained"))
        self.apply(ev.WorkerDisconnected("w1"))
        proposed = self.s.apply(ev.Tick(), self.now + 6)
        [lost] = [d.event for d in proposed if isinstance(d, ev.Propose)]
        self.apply(lost)
        self.assertNotIn("w1", self.s.workers)
        self.assertEqual(self.s.jobs["a"].state, JobState.PENDING)  # runs elsewhere


class FakeProcess:
    """subprocess.Popen, without a process: what the shell started and signalled."""
    started: list = []
    next_pid = 4000

    def __init__(self, cmd, **kw):
        FakeProcess.next_pid += 1
        self.pid = FakeProcess.next_pid
        self.cmd = cmd
        self.cwd = kw.get("cwd")
        self.signals: list = []
        self.code = None
        FakeProcess.started.append(self)

    def poll(self):
        return self.code

    def send_signal(self, sig):
        self.signals.append(sig)
        self.code = 0

    def wait(self, timeout=None):
        self.code = 0 if self.code is None else self.code
        return self.code

    def kill(self):
        self.code = -9

    def option(self, name: str) -> str:
        return self.cmd[self.cmd.index(name) + 1]


class ShellDrainTests(SynchronousTestCase):
    """The master, its API and its autoscaler shell (off: max_workers 0), on a fake clock,
    with workers as connections and started processes as FakeProcess."""

    def setUp(self):
        FakeProcess.started = []
        self.patch(autoscale.subprocess, "Popen", FakeProcess)
        self.reactor = MemoryReactorClock()
        config = Config(token=TOKEN, master=MasterConfig(
            listen="tcp:0:interface=127.0.0.1", data_dir=self.mktemp(),
            heartbeat_interval=1.0, heartbeat_timeout=5.0),
            autoscaler=AutoscalerConfig(max_workers=0, interval=1.0, slots=2))
        self.master = MasterService(config, reactor=self.reactor)
        self.master.privilegedStartService()
        self.master.startService()
        self.addCleanup(self.master.stopService)
        self.api = self.master.api
        self.reactor.pump([1] * 2)

    def register(self, name: str, slots: int = 2, tags=()) -> Peer:
        peer = Peer(self.master)
        peer.result(Op.REGISTER, {"token": TOKEN, "worker_id": f"{name}-id", "name": name,
                                  "slots": slots, "tags": list(tags)})
        return peer

    def client(self) -> Peer:
        peer = Peer(self.master)
        peer.result(Op.HELLO, {"token": TOKEN})
        return peer

    def test_start_spawns_a_worker_with_what_was_asked_for(self):
        reply = self.api.start_worker(OPERATOR, ["gpu", "x.1"], 3, None, by="dashboard")
        [proc] = FakeProcess.started
        self.assertEqual(reply, {"name": "local-1", "pid": proc.pid, "tags": ["GPU", "X.1"],
                                 "slots": 3, "spawned_by": "dashboard"})
        self.assertEqual((proc.option("--name"), proc.option("--tags"),
                          proc.option("--slots")), ("local-1", "GPU,X.1", "3"))
        self.assertIn("--no-detect-tags", proc.cmd)
        self.assertTrue(proc.cwd.endswith("/started/local-1"))
        # Registered, it is listed as started from the dashboard.
        self.register("local-1", 3, ["GPU", "X.1"])
        [view] = self.api.list_workers(OPERATOR)
        self.assertEqual((view["name"], view["spawned_by"], view["pid"], view["tags"]),
                         ("local-1", "dashboard", proc.pid, ["GPU", "X.1"]))
        # The autoscaler never counts it as its own (it would retire it when idle).
        [info] = self.master.autoscaler.view(self.master.now()).workers
        self.assertFalse(info.spawned)

    def test_defaults_a_name_and_the_cli_says_it_started_it(self):
        reply = self.client().result(Op.START_WORKER, {"name": "gpu-box"})
        self.assertEqual((reply["name"], reply["tags"], reply["slots"], reply["spawned_by"]),
                         ("gpu-box", [], 2, "cli"))

    def test_bad_fields_are_refused_naming_them(self):
        cases = [({"tags": "GPU"}, "'tags'"), ({"tags": ["a b"]}, "'tags'"),
                 ({"tags": [1]}, "'tags'"), ({"slots": 0}, "'slots'"),
                 ({"slots": 65}, "'slots'"), ({"slots": True}, "'slots'"),
                 ({"slots": "2"}, "'slots'"), ({"name": "a/b"}, "'name'")]
        for body, field in cases:
            with self.assertRaises(BadRequest, msg=str(body)) as caught:
                self.api.start_worker(OPERATOR, body.get("tags", []), body.get("slots"),
                                      body.get("name"))
            self.assertIn(field, caught.exception.message)
        self.register("taken")
        with self.assertRaises(BadRequest) as caught:
            self.api.start_worker(OPERATOR, [], None, "taken")
        self.assertIn("a worker named taken is connected", caught.exception.message)
        self.assertEqual(FakeProcess.started, [])

    def test_at_most_max_started_by_hand(self):
        for _ in range(autoscale.MAX_STARTED):
            self.api.start_worker(OPERATOR, [], 1, None)
        with self.assertRaises(WorkerLimit):
            self.api.start_worker(OPERATOR, [], 1, None)
        FakeProcess.started[0].code = 1  # one exits: room for another
        self.reactor.advance(1)
        self.api.start_worker(OPERATOR, [], 1, None)

    def test_a_job_s_token_may_neither_start_nor_drain(self):
        job = Caller(("j", 1))
        with self.assertRaises(Forbidden):
            self.api.start_worker(job, [], 1, None)
        with self.assertRaises(Forbidden):
            self.api.drain_worker(job, "x")

    def test_a_started_worker_drained_while_busy_is_stopped_once_its_job_ends(self):
        self.api.start_worker(OPERATOR, [], 2, None)
        [proc] = FakeProcess.started
        w = self.register("local-1")
        c = self.client()
        first = c.result(Op.SUBMIT_JOB, {"command": ["true"]})["job_id"]
        [(_, dispatch)] = [f for f in w.frames() if f[0] == Op.DISPATCH]
        self.assertEqual(dispatch["job_id"], first)
        reply = c.result(Op.DRAIN_WORKER, {"name": "local-1"})
        self.assertEqual((reply["name"], reply["state"], reply["running"]),
                         ("local-1", "DRAINING", [first]))
        second = c.result(Op.SUBMIT_JOB, {"command": ["true"]})["job_id"]
        self.reactor.pump([1] * 3)
        self.assertEqual([f for f in w.frames() if f[0] == Op.DISPATCH], [])
        self.assertEqual(proc.signals, [])  # it still runs its job
        w.result(Op.JOB_COMPLETE, {"job_id": first, "attempt": 1, "exit_code": 0})
        self.reactor.advance(1)
        self.assertEqual(proc.signals, [signal.SIGTERM])
        w.proto.connectionLost(None)  # it stops: its connection goes
        self.reactor.advance(0)
        self.assertEqual(self.api.list_workers(OPERATOR), [])
        s = self.master.scheduler
        self.assertEqual((s.jobs[first].state, s.jobs[second].state),
                         (JobState.COMPLETED, JobState.PENDING))

    def test_another_worker_drained_is_told_to_stop_and_again_after_a_reconnect(self):
        w = self.register("outside")
        self.api.drain_worker(OPERATOR, "outside")
        self.reactor.advance(0)
        self.assertIn((Op.DRAIN_WORKER, {"worker_id": "outside-id"}), w.frames())
        self.reactor.pump([1] * 3)
        self.assertEqual([f for f in w.frames() if f[0] == Op.DRAIN_WORKER], [])  # once
        # It reconnects before it stopped (the frame may have been lost): still DRAINING,
        # and told again on its new connection.
        again = self.register("outside")
        w.proto.connectionLost(None)
        self.reactor.advance(1)
        self.assertEqual(self.api.list_workers(OPERATOR)[0]["state"], "DRAINING")
        self.assertIn((Op.DRAIN_WORKER, {"worker_id": "outside-id"}), again.frames())
        again.proto.connectionLost(None)
        self.reactor.advance(0)
        self.assertEqual(self.api.list_workers(OPERATOR), [])  # it left

    def test_drain_refusals(self):
        self.register("w1")
        with self.assertRaises(NotFound):
            self.api.drain_worker(OPERATOR, "nobody")
        self.api.drain_worker(OPERATOR, "w1-id")  # by id too
        with self.assertRaises(NotRunning) as caught:
            self.api.drain_worker(OPERATOR, "w1")
        self.assertIn("already DRAINING", caught.exception.message)
