"""The routing chain: built-in routers as plugins, and their decisions in the core."""
from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase
from zope.interface.verify import verifyObject

from titan.config import Config
from titan.core import events as ev
from titan.core.dag import parse_dag
from titan.core.model import JobSpec
from titan.core.routing import Affinity, Capability, LeastLoaded, parse_affinity
from titan.core.scheduler import Scheduler
from titan.interfaces import IRouter, IRouterFactory
from titan.master.service import build_routers
from titan.plugin_registry import plugins


class PluginTests(SynchronousTestCase):
    def test_built_ins_are_plugins_and_provide_the_interfaces(self):
        found = {p.name: p for p in plugins(IRouterFactory)}
        self.assertTrue({"capability", "affinity", "least-loaded"} <= set(found))
        for factory in found.values():
            verifyObject(IRouterFactory, factory)
            verifyObject(IRouter, factory.build({}))

    def test_the_config_names_the_chain(self):
        chain = build_routers(Config(router=("capability", "least-loaded")))
        self.assertEqual([type(r) for r in chain], [Capability, LeastLoaded])
        with self.assertRaises(SystemExit) as caught:
            build_routers(Config(router=("capability", "fastest")))
        self.assertIn("router: unknown router 'fastest' (known: affinity, capability, "
                      "least-loaded", str(caught.exception))

    def test_affinity_grammar(self):
        self.assertEqual(parse_affinity(None), (None, False))
        self.assertEqual(parse_affinity("parent"), ("parent", False))
        self.assertEqual(parse_affinity("gpu-box"), ("gpu-box", False))
        self.assertEqual(parse_affinity("strict"), ("parent", True))
        self.assertEqual(parse_affinity("strict:gpu-box"), ("gpu-box", True))


class DecisionTests(SynchronousTestCase):
    def setUp(self):
        self.s = Scheduler()
        self.now = 0.0

    def apply(self, event):
        self.now += 1
        return self.s.apply(event, self.now)

    def join(self, name, slots=1, tags=()):
        self.apply(ev.WorkerJoined(name, name, "h", frozenset(tags), slots))

    def placed(self, out):
        return {d.job_id: d.worker_id for d in out if isinstance(d, ev.Dispatch)}

    def submit(self, job_id, **kw):
        return self.placed(self.apply(ev.JobSubmitted(JobSpec(job_id=job_id, command=("x",), **kw))))

    def finish(self, job_id):
        job = self.s.jobs[job_id]
        return self.placed(self.apply(ev.JobFinished(job_id, job.worker_id, job.attempt, 0)))

    def test_capability_is_strict(self):
        self.join("cpu", slots=4)
        self.join("gpu", slots=1, tags=["GPU"])
        self.assertEqual(self.submit("train", tags=["gpu"]), {"train": "gpu"})
        self.assertEqual(self.submit("train2", tags=["GPU"]), {})  # waits for the GPU box
        self.assertEqual(self.s.waiting_reason("train2", self.now), "waiting for a free slot")
        self.assertEqual(self.submit("plain"), {"plain": "cpu"})
        self.assertEqual(self.finish("train"), {"train2": "gpu"})

    def test_best_fit_keeps_tagged_workers_for_jobs_that_need_them(self):
        self.join("gpu", slots=2, tags=["GPU"])
        self.join("cpu", slots=1)
        self.assertEqual(self.submit("plain"), {"plain": "cpu"})
        self.assertEqual(self.submit("overflow"), {"overflow": "gpu"})  # cpu is full

    def test_general_requirement_is_any_worker_and_leaves_the_gpu_box_free(self):
        # The reference's `requirement: GENERAL` is no tag: any worker takes it, the plain
        # one first; the GPU box only when the plain one is full.
        self.join("gpu", slots=2, tags=["GPU"])
        self.join("cpu", slots=1)
        placed = self.dag([{"id": "a", "command": ["x"], "requirement": "GENERAL"},
                           {"id": "b", "command": ["x"], "requirement": "general"},
                           {"id": "t", "command": ["x"], "requirement": "GPU"}])
        self.assertEqual(placed, {"r/a": "cpu", "r/b": "gpu", "r/t": "gpu"})
        self.assertEqual(self.s.jobs["r/a"].spec.tags, frozenset())

    def test_a_worker_tagged_general_counts_as_plain(self):
        # Reference users tag their plain workers GENERAL: a plain job goes there, not to
        # the GPU box that joined first.
        self.join("gpu", slots=2, tags=["GPU"])
        self.join("gen", slots=1, tags=["GENERAL"])
        self.assertEqual(self.submit("plain"), {"plain": "gen"})
        self.assertEqual(self.submit("more"), {"more": "gpu"})  # gen is full
        self.assertEqual(self.submit("t", tags=["GPU"]), {"t": "gpu"})

    def test_least_loaded_then_fewest_completed(self):
        self.join("a", slots=2)
        self.join("b", slots=4)
        self.assertEqual(self.submit("j1"), {"j1": "a"})  # both empty: join order
        self.assertEqual(self.submit("j2"), {"j2": "b"})  # a is at 1/2, b at 0/4
        self.assertEqual(self.submit("j3"), {"j3": "b"})  # a 1/2 > b 1/4
        self.finish("j1")
        self.finish("j2")
        self.finish("j3")
        # a: 0/2 with 1 done, b: 0/4 with 2 done → a
        self.assertEqual(self.submit("j4"), {"j4": "a"})

    def dag(self, jobs):
        return self.placed(self.apply(ev.DagSubmitted("r", parse_dag({"name": "r", "jobs": jobs}))))

    def test_soft_parent_affinity(self):
        self.join("a", slots=2)
        self.join("b", slots=2)
        placed = self.dag([{"id": "p", "command": ["x"]},
                           {"id": "filler", "command": ["x"]},
                           {"id": "c", "command": ["x"], "depends_on": ["p"],
                            "affinity": "parent"}])
        self.assertEqual(placed, {"r/p": "a", "r/filler": "b"})
        self.assertEqual(self.finish("r/p"), {"r/c": "a"})  # a, though equally loaded

    def test_soft_affinity_falls_back_when_the_worker_is_full(self):
        self.join("a", slots=1)
        self.join("b", slots=1)
        self.submit("busy")  # takes a
        self.assertEqual(self.submit("x", affinity="a"), {"x": "b"})

    def test_strict_affinity_waits_without_blocking_others(self):
        self.join("a", slots=1)
        self.join("b", slots=1)
        self.submit("busy")  # on a
        self.assertEqual(self.submit("pinned", affinity="strict:a", priority=9), {})
        self.assertEqual(self.s.waiting_reason("pinned", self.now),
                         "waiting for the worker of its affinity (a)")
        self.assertEqual(self.submit("other"), {"other": "b"})
        self.assertEqual(self.finish("busy"), {"pinned": "a"})

    def test_a_chain_without_capability_ignores_tags(self):
        self.s = Scheduler(routers=[LeastLoaded()])
        self.join("cpu")
        self.assertEqual(self.submit("t", tags=["GPU"]), {"t": "cpu"})

    def test_explain_names_missing_tags(self):
        self.join("cpu")
        self.submit("t", tags=["GPU", "HIGH_MEM"])
        self.assertEqual(self.s.waiting_reason("t", self.now),
                         "no live worker has the tags GPU,HIGH_MEM")
        self.assertIsNone(Affinity().explain(self.s.jobs["t"], []))
