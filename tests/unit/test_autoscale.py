"""The reactive autoscaler's decisions, as a table, and as a plugin."""
from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase
from zope.interface.verify import verifyObject

from titan.core.autoscale import (
    Pending, Reactive, RetireWorker, ScaleView, SpawnWorker, Waiting, WorkerInfo)
from titan.interfaces import IAutoscaler, IAutoscalerFactory
from titan.plugin_registry import plugins

GPU = frozenset({"GPU"})
NONE = frozenset()


def worker(name, busy=0, slots=2, tags=NONE, idle=None, spawned=False, state="ALIVE"):
    return WorkerInfo(worker_id=f"{name}-id", name=name, tags=tags, slots=slots, busy=busy,
                      idle_for=idle, spawned=spawned, state=state)


class ReactiveTests(SynchronousTestCase):
    def setUp(self):
        self.scaler = Reactive(min_workers=1, max_workers=3, window=5, idle_timeout=45)

    def decide(self, waiting=(), workers=(), pending=()):
        return self.scaler.evaluate(ScaleView(tuple(waiting), tuple(workers), tuple(pending)),
                                    100.0)

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
