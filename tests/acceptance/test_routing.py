"""Routing with real workers: tags, and a third party's router found as a plugin."""
from __future__ import annotations

import os
import tempfile
import textwrap

from tests.acceptance.helpers import ClusterTestCase

# A third party's distribution: its own titan/plugins/ folder, no __init__.py in it.
THIRD_PARTY = '''\
from twisted.plugin import IPlugin
from zope.interface import implementer
from titan.interfaces import IRouter, IRouterFactory


@implementer(IRouter)
class Newest:
    name = "newest-worker"
    description = "Everything to the worker that joined last (a test plugin)."

    def route(self, job, candidates, context):
        return sorted(candidates, key=lambda w: -w.seq)

    def explain(self, job, workers):
        return None


@implementer(IPlugin, IRouterFactory)
class NewestFactory:
    name = Newest.name
    description = Newest.description

    def build(self, options):
        return Newest()


newest = NewestFactory()
'''


def third_party_dist() -> str:
    root = tempfile.mkdtemp(prefix="titan-plugin-")
    os.makedirs(os.path.join(root, "titan", "plugins"))
    with open(os.path.join(root, "titan", "plugins", "acme_router.py"), "w") as f:
        f.write(THIRD_PARTY)
    with open(os.path.join(root, "setup.cfg"), "w") as f:
        f.write(textwrap.dedent("""\
            [metadata]
            name = acme-titan-router
            version = 1.0
            [options]
            packages = find_namespace:
            """))
    return root


PLUGIN_ROOT = third_party_dist()


class ThirdPartyRouterTests(ClusterTestCase):
    workers = 2
    slots = 4
    cluster_options = {"config_top": "router: [capability, newest-worker]\n",
                       "env": {"PYTHONPATH": PLUGIN_ROOT}}

    def test_the_plugin_is_found_and_routes_jobs(self):
        listing = self.titan("plugins").stdout.decode()
        line = [l for l in listing.splitlines() if "newest-worker" in l]
        self.assertEqual(len(line), 1, listing)
        self.assertIn(os.path.join(PLUGIN_ROOT, "titan", "plugins", "acme_router.py"), line[0])
        with self.cluster.client() as c:
            newest = max(c.workers(), key=lambda w: w["joined_at"])["name"]
            jobs = [c.submit(["true"]) for _ in range(4)]
            workers = {c.wait(j, timeout=30)["worker"] for j in jobs}
        self.assertEqual(workers, {newest})  # least-loaded would have used both


class TagRoutingTests(ClusterTestCase):
    workers = 1
    slots = 2

    def test_a_gpu_worker_takes_only_gpu_jobs_while_others_have_room(self):
        self.cluster.start_worker("gpu1", tags="GPU,HIGH_MEM")
        self.cluster.wait_for_workers(2)
        with self.cluster.client() as c:
            gpu = [c.submit(["true"], tags=["gpu"]) for _ in range(3)]
            both = c.submit(["true"], tags=["GPU", "HIGH_MEM"])
            for j in gpu + [both]:
                self.assertEqual(c.wait(j, timeout=30)["worker"], "gpu1")
            plain = [c.wait(c.submit(["true"]), timeout=30)["worker"] for _ in range(6)]
            self.assertEqual(set(plain), {"w1"})
        workers = self.titan("workers").stdout.decode()
        self.assertRegex(workers, r"gpu1-\w+\s+\S+\s+GPU,HIGH_MEM\s+\d/2")
