"""titan/package.py (what goes into a bundle, its example configs) and titan/bundle.py (what
a bundle checks when it starts)."""
from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path, PurePosixPath

import attrs
from twisted.trial.unittest import SynchronousTestCase

from titan.bundle import only_the_bundle, python_mismatch
from titan.config import Config, load_config
from titan.package import (BUNDLES, PackageError, build_bundle, distributions, etc_config,
                           example_config, keep)

MASTER, WORKER = BUNDLES


def names(dists) -> set:
    return {d.metadata["Name"].lower() for d in dists}


class KeepTests(SynchronousTestCase):
    def test_code_and_licences_go_in(self):
        for path in ("twisted/internet/epollreactor.py", "twisted/internet/testing.py",
                     "twisted/plugins/twisted_reactors.py", "twisted/plugins/titan_services.py",
                     "msgpack/_cmsgpack.cpython-311-x86_64-linux-gnu.so",
                     "twisted-26.10.0.dist-info/licenses/LICENSE",
                     "twisted-26.10.0.dist-info/METADATA", "titan/worker/service.py"):
            self.assertTrue(keep(PurePosixPath(path), WORKER), path)

    def test_tests_caches_sources_and_twisteds_other_applications_stay_out(self):
        for path in ("twisted/test/test_defer.py", "twisted/internet/test/test_tcp.py",
                     "zope/interface/tests/test_adapter.py", "attr/__pycache__/x.cpython-311.pyc",
                     "attr/__init__.pyi", "zope/interface/_zope_interface_coptimizations.c",
                     "twisted/conch/ssh/transport.py", "twisted/trial/unittest.py",
                     "twisted/words/protocols/irc.py", "twisted/plugins/twisted_conch.py",
                     "twisted/plugins/dropin.cache", "twisted/internet/iocpreactor/abstract.py",
                     "twisted-26.10.0.dist-info/RECORD", "../../../bin/twistd"):
            self.assertFalse(keep(PurePosixPath(path), MASTER), path)

    def test_the_worker_reads_yaml_with_the_pure_python_loader(self):
        so = PurePosixPath("yaml/_yaml.cpython-311-x86_64-linux-gnu.so")
        self.assertTrue(keep(so, MASTER))
        self.assertFalse(keep(so, WORKER))


class DistributionsTests(SynchronousTestCase):
    def test_what_each_bundle_carries(self):
        master, worker = names(distributions(MASTER.skip_dists)), \
            names(distributions(WORKER.skip_dists))
        for dist in ("twisted", "zope.interface", "attrs", "msgpack", "pyyaml", "treq"):
            self.assertIn(dist, master)
            self.assertIn(dist, worker)
        self.assertIn("klein", master)
        self.assertIn("croniter", master)
        # Never: the MCP SDK, build-time-only packages, Twisted's TLS extras, Titan itself
        # (its files come from its package), the web face and cron for a worker.
        for dist in ("mcp", "pydantic", "packaging", "tzdata", "pyopenssl", "cryptography",
                     "service-identity", "titan-orchestrator"):
            self.assertNotIn(dist, master)
            self.assertNotIn(dist, worker)
        self.assertNotIn("klein", worker)
        self.assertNotIn("croniter", worker)


class ExampleConfigTests(SynchronousTestCase):
    def load(self, kind: str) -> Config:
        path = os.path.join(tempfile.mkdtemp(), f"{kind}.yaml")
        with open(path, "w") as f:
            f.write(example_config(kind, etc_config().read_text()))
        return load_config(path)

    def test_master_config_listens_for_other_machines_and_starts_no_local_workers(self):
        config = self.load("master")
        self.assertEqual(config.master.listen, "tcp:9090")
        self.assertEqual(config.autoscaler.max_workers, 0)
        default = Config()
        master = attrs.evolve(config.master, listen=default.master.listen)
        autoscaler = attrs.evolve(config.autoscaler, max_workers=default.autoscaler.max_workers)
        changed = attrs.evolve(config, source=default.source, master=master,
                               autoscaler=autoscaler)
        self.assertEqual(changed, default)  # every other key at its default

    def test_worker_config_names_the_master_to_set(self):
        config = self.load("worker")
        self.assertEqual(config.worker.master, "titan-master.example:9090")
        self.assertEqual(config.worker.slots, Config().worker.slots)

    def test_a_section_missing_from_etc_is_said(self):
        text = etc_config().read_text().replace("\nllm:", "\nllm_gone:")
        with self.assertRaises(PackageError) as e:
            example_config("worker", text)
        self.assertIn("no llm: section", str(e.exception))


class BuildTests(SynchronousTestCase):
    def test_without_shiv_the_error_says_how_to_get_it(self):
        self.patch(sys, "modules", dict(sys.modules, shiv=None))
        with self.assertRaises(PackageError) as e:
            build_bundle(WORKER, Path(tempfile.mkdtemp()))
        self.assertIn("shiv is not installed: pip install shiv==1.0.8", str(e.exception))


class BundleStartTests(SynchronousTestCase):
    def test_the_python_it_was_built_for_runs_it(self):
        self.assertEqual(python_mismatch("3.11", (3, 11, 7), "/usr/bin/python3", "w.pyz"), "")

    def test_another_python_is_told_which_one_to_use(self):
        why = python_mismatch("3.11", (3, 12, 1), "/usr/bin/python3", "titan-worker.pyz")
        self.assertIn("titan-worker.pyz: built for Python 3.11", why)
        self.assertIn("/usr/bin/python3 is Python 3.12: run it with python3.11", why)

    def test_the_machines_own_packages_are_left_out(self):
        own = "/home/u/.shiv/titan-worker.pyz_ab/site-packages"
        path = ["/opt/titan-worker.pyz", "/usr/lib/python311.zip", "/usr/lib/python3.11",
                "/usr/lib/python3.11/lib-dynload", "/usr/local/lib/python3.11/dist-packages",
                "/usr/lib/python3/dist-packages", "/home/u/.local/lib/python3.11/site-packages",
                own]
        self.assertEqual(only_the_bundle(path, own),
                         ["/opt/titan-worker.pyz", "/usr/lib/python311.zip",
                          "/usr/lib/python3.11", "/usr/lib/python3.11/lib-dynload", own])


class SystemdUnitTests(SynchronousTestCase):
    """etc/systemd/*.service start the bundles with options their plugins take."""

    def exec_start(self, name: str) -> list:
        import shlex
        path = Path(etc_config().parent, "systemd", name)
        lines = [line for line in path.read_text().splitlines()
                 if line.startswith("ExecStart=")]
        self.assertEqual(len(lines), 1)
        return shlex.split(lines[0][len("ExecStart="):])

    def test_each_unit_runs_its_bundle_with_its_plugins_options(self):
        from twisted.python.reflect import accumulateClassList

        from titan.master.tap import Options as MasterOptions
        from titan.worker.tap import Options as WorkerOptions

        for bundle, options in ((MASTER, MasterOptions), (WORKER, WorkerOptions)):
            argv = self.exec_start(f"{bundle.plugin}.service")
            self.assertEqual(argv[0], "/usr/bin/python3")
            self.assertEqual(os.path.basename(argv[1]), bundle.file_name)
            params: list = []
            accumulateClassList(options, "optParameters", params)
            known = {f"--{p[0]}" for p in params}
            given = dict(zip(argv[2::2], argv[3::2]))
            self.assertLessEqual(set(given), known, bundle.plugin)
            self.assertEqual(os.path.basename(given["--config"]), f"{bundle.kind}.yaml")
