"""The reactive autoscaler's decisions, as a table, and as a plugin."""
from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase
from zope.interface.verify import verifyObject

from titan.core.autoscale import (
    Pending, Reactive, RetireWorker, ScaleView, SpawnWorker, Waiting, WorkerInfo, unservable)
from titan.interfaces import IAutoscaler, IAutoscalerFactory
from titan.plugin_registry import plugins
from titan.protocols.opcodes import Op

GPU = frozenset({"GPU"})
NONE = frozenset()


def worker(name, busy=0, slots=2, tags=NONE, idle=None, spawned=False, state="ALIVE"):
    return WorkerInfo(worker_id=f"{name}-id", name=name, tags=tags, slots=slots, busy=busy,
                      idle_for=idle, spawned=spawned, state=state)


class ReactiveTests(SynchronousTestCase):
    def setUp(self):
        self.scaler = Reactive(min_workers=1, max_workers=3, window=5, idle_timeout=45)

    def decide(self, waiting=(), workers=(), pending=(), spawnable=GPU):
        return self.scaler.evaluate(ScaleView(tuple(waiting), tuple(workers), tuple(pending),
                                              spawnable), 100.0)

    def test_plugin(self):
        [factory] = [p for p in plugins(IAutoscalerFactory) if p.name == "reactive"]
        verifyObject(IAutoscalerFactory, factory)
        built = factory.build({"max_workers": 7, "idle_timeout": 3})
        verifyObject(IAutoscaler, built)
        self.assertEqual((built.max_workers, built.idle_timeout, built.min_workers), (7, 3, 0))

    def test_saturated_for_longer_than_the_window_spawns(self):
        [d] = self.decide([Waiting(NONE, 12, 6.0)], [worker("w1", busy=2)])
        self.assertEqual(d, SpawnWorker(NONE, "12 jobs needing no tags waited 6s with every "
                                              "capable slot busy"))

    def test_not_before_the_window(self):
        self.assertEqual(self.decide([Waiting(NONE, 12, 4.9)], [worker("w1", busy=2)]), [])

    def test_not_while_a_capable_slot_is_free(self):
        self.assertEqual(self.decide([Waiting(NONE, 3, 9)], [worker("w1", busy=1)]), [])

    def test_spawns_with_the_tags_the_waiting_jobs_need(self):
        [d] = self.decide([Waiting(GPU, 2, 9)], [worker("w1", busy=0)])
        self.assertEqual(d.tags, GPU)  # a free CPU slot does not help a GPU job

    def test_one_at_a_time_per_need_and_never_beyond_the_cap(self):
        self.assertEqual(self.decide([Waiting(NONE, 9, 9)], [worker("w1", busy=2)],
                                     [Pending("auto-1", NONE, 1.0)]), [])
        full = [worker("w1", busy=2), worker("a1", busy=2, spawned=True),
                worker("a2", busy=2, spawned=True)]
        self.assertEqual(self.decide([Waiting(NONE, 9, 9)], full), [])
        two_needs = self.decide([Waiting(NONE, 9, 9), Waiting(GPU, 1, 30)],
                                [worker("w1", busy=2)])
        self.assertEqual([d.tags for d in two_needs], [GPU, NONE])  # longest wait first

    def test_retires_its_own_idle_workers_but_not_below_min(self):
        workers = [worker("w1", idle=500), worker("a1", idle=50, spawned=True),
                   worker("a2", idle=60, spawned=True)]
        decisions = self.decide([], workers)
        self.assertEqual(decisions, [RetireWorker("a2-id", "a2", "idle for 60s"),
                                     RetireWorker("a1-id", "a1", "idle for 50s")])
        self.scaler.min_workers = 2
        self.assertEqual(len(self.decide([], workers)), 1)

    def test_never_retires_busy_or_young_idlers_or_others_workers(self):
        workers = [worker("w1", idle=500), worker("a1", busy=1, spawned=True),
                   worker("a2", idle=44, spawned=True)]
        self.assertEqual(self.decide([], workers), [])

    def test_no_retiring_while_jobs_wait(self):
        # a1 is idle long enough, but jobs wait (for a slot a1 could even give them).
        workers = [worker("w1", busy=2), worker("a1", idle=99, tags=GPU, spawned=True)]
        self.assertEqual(self.decide([Waiting(NONE, 5, 9)], workers), [])


class SpawnableTests(SynchronousTestCase):
    """A started worker carries only tags this machine offers (issue 13, A1)."""

    def setUp(self):
        self.scaler = Reactive(min_workers=0, max_workers=3, window=5, idle_timeout=45)

    def decide(self, waiting=(), workers=(), spawnable=NONE):
        return self.scaler.evaluate(ScaleView(tuple(waiting), tuple(workers), (), spawnable),
                                    100.0)

    def test_never_spawns_for_a_tag_this_machine_does_not_offer(self):
        self.assertEqual(self.decide([Waiting(GPU, 3, 60)]), [])
        self.assertEqual(self.decide([Waiting(GPU, 3, 60)], [worker("w1", busy=2)]), [])
        # ...nor for a need that is only partly offered.
        both = frozenset({"GPU", "HIGH_MEM"})
        self.assertEqual(self.decide([Waiting(both, 1, 60)], spawnable=frozenset({"HIGH_MEM"})),
                         [])

    def test_jobs_it_cannot_serve_do_not_hold_up_the_others(self):
        decisions = self.decide([Waiting(GPU, 3, 60), Waiting(NONE, 4, 9)],
                                [worker("w1", busy=2)])
        self.assertEqual([d.tags for d in decisions], [NONE])

    def test_spawns_for_what_is_offered_detected_or_configured(self):
        offered = frozenset({"GPU", "PYTHON"})
        [d] = self.decide([Waiting(frozenset({"PYTHON"}), 2, 9)], spawnable=offered)
        self.assertEqual(d.tags, frozenset({"PYTHON"}))  # only what the jobs need

    def test_unservable_names_the_missing_tags(self):
        view = ScaleView((Waiting(frozenset({"GPU", "PYTHON"}), 1, 1), Waiting(NONE, 1, 1)),
                         spawnable=frozenset({"PYTHON"}))
        self.assertEqual(unservable(view), [(frozenset({"GPU", "PYTHON"}), GPU)])

    def test_jobs_it_cannot_serve_do_not_keep_its_idle_workers(self):
        # A GPU job waits for ever on a box without one: auto-1 (no tags) idles all the same.
        workers = [worker("w1", busy=0), worker("a1", idle=50, spawned=True)]
        self.assertEqual(self.decide([Waiting(GPU, 1, 600)], workers),
                         [RetireWorker("a1-id", "a1", "idle for 50s")])
        # ...but jobs it could take do.
        self.assertEqual(self.decide([Waiting(NONE, 1, 600)], workers), [])


class ShellTests(SynchronousTestCase):
    """The master's autoscaler shell: what it detects, what it starts, what it tells."""

    def start(self, detected=(), **autoscaler):
        from twisted.internet.testing import MemoryReactorClock

        from titan.config import AutoscalerConfig, Config, MasterConfig
        from titan.master.service import MasterService
        from tests.unit.test_master import TOKEN, Peer
        self.reactor = MemoryReactorClock()
        config = Config(token=TOKEN, master=MasterConfig(
            listen="tcp:0:interface=127.0.0.1", data_dir=self.mktemp()),
            autoscaler=AutoscalerConfig(window=2, interval=1, **autoscaler))
        self.master = MasterService(config, reactor=self.reactor)
        self.master.autoscaler._detect = lambda high_mem_gb: set(detected)
        self.spawned = []
        self.master.autoscaler.spawn = lambda tags, reason: self.spawned.append(tags)
        self.master.privilegedStartService()
        self.master.startService()
        self.addCleanup(self.master.stopService)
        self.reactor.pump([1] * 3)  # jobs are not queued at time 0 (a falsy time)
        self.client = Peer(self.master)
        self.client.result(Op.HELLO, {"token": TOKEN})

    def submit(self, tags) -> str:
        return self.client.result(Op.SUBMIT_JOB, {"command": ["true"], "tags": tags})["job_id"]

    def test_a_gpu_job_on_a_box_without_one_waits_and_says_why(self):
        self.start(detected=(), tags=("python",))
        job = self.submit(["gpu"])
        self.reactor.pump([1] * 10)
        self.assertEqual(self.spawned, [])
        info = self.client.result(Op.JOB_INFO, {"job_id": job})
        self.assertEqual(info["state"], "PENDING")
        self.assertEqual(info["waiting"],
                         "no live worker; the autoscaler will not start one: this machine "
                         "offers PYTHON, not GPU (detected: no tags; autoscaler.tags: PYTHON)")
        self.assertIn("no worker started for jobs needing GPU", self.master.autoscaler
                      .last_decisions[-1])
        # Jobs it can serve still get a worker: a configured tag, or none.
        self.submit(["python"])
        self.submit([])
        self.reactor.pump([1] * 4)
        self.assertEqual(set(self.spawned), {NONE, frozenset({"PYTHON"})})

    def test_a_detected_tag_may_be_spawned(self):
        self.start(detected=("GPU",))
        job = self.submit(["GPU"])
        info = self.client.result(Op.JOB_INFO, {"job_id": job})
        self.assertEqual(info["waiting"], "no live worker")  # it will start one
        self.reactor.pump([1] * 4)
        self.assertEqual(set(self.spawned), {GPU})

    def test_detection_follows_the_worker_section(self):
        import attrs
        from titan.master.autoscale import AutoscalerService
        self.start(detected=("GPU",))
        master = self.master
        master.config = attrs.evolve(master.config, worker=attrs.evolve(
            master.config.worker, detect_tags=False))
        shell = AutoscalerService(master, None, detect=lambda gb: {"GPU"})
        shell.startService()
        self.addCleanup(shell.stopService)
        self.assertEqual(shell.spawnable, NONE)

    def test_a_plugin_that_asks_for_more_is_refused(self):
        self.start(detected=())
        self.master.autoscaler.autoscaler = _Greedy()
        self.submit(["GPU"])
        self.reactor.pump([1] * 4)
        self.assertEqual(self.spawned, [])
        self.assertIn("refused to start a worker tagged GPU",
                      " ".join(self.master.autoscaler.last_decisions))


class _Greedy:
    def evaluate(self, view, now):
        return [SpawnWorker(w.tags, "greedy") for w in view.waiting]
