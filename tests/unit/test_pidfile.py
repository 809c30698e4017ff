"""twistd's pidfile: the titan plugins never take ./twistd.pid (README's "cluster by hand"
starts a master and a worker from one directory)."""
from __future__ import annotations

import os

from twisted.scripts._twistd_unix import ServerOptions
from twisted.trial.unittest import SynchronousTestCase


class PidfileTests(SynchronousTestCase):
    def parse(self, *argv: str) -> ServerOptions:
        options = ServerOptions()
        options.parseOptions(list(argv))
        return options

    def setUp(self) -> None:
        self.dir = os.path.abspath(self.mktemp())

    def test_foreground_writes_none(self) -> None:
        for plugin, extra in (("titan-master", []), ("titan-worker", ["--token", "t"]),
                              ("titan-store", [])):
            options = self.parse("-n", plugin, "--data-dir", self.dir, *extra)
            self.assertEqual(options["pidfile"], "", plugin)

    def test_daemon_writes_it_in_its_data_dir(self) -> None:
        options = self.parse("titan-worker", "--token", "t", "--data-dir", self.dir)
        self.assertEqual(options["pidfile"], os.path.join(self.dir, "titan-worker.pid"))
        self.assertTrue(os.path.isdir(self.dir))

    def test_an_explicit_pidfile_wins(self) -> None:
        wanted = os.path.join(self.dir, "mine.pid")
        options = self.parse("-n", "--pidfile", wanted, "titan-master", "--data-dir", self.dir)
        self.assertEqual(options["pidfile"], wanted)
