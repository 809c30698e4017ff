"""The store's password (issue 15, 2): made by `titan up`, passed by environment, used by
the master's client."""
from __future__ import annotations

import io
import os
import sys

from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from titan.master.tap import Options
from titan.store.client import StoreClient
from titan.store.config import load_or_create_password


class PasswordFileTests(SynchronousTestCase):
    def test_made_once_private_and_kept(self):
        data_dir = os.path.join(self.mktemp(), "store")
        password = load_or_create_password(data_dir)
        path = os.path.join(data_dir, "password")
        self.assertEqual(os.stat(path).st_mode & 0o777, 0o600)
        self.assertEqual(os.stat(data_dir).st_mode & 0o777, 0o700)
        self.assertGreaterEqual(len(password), 24)
        self.assertEqual(load_or_create_password(data_dir), password)
        self.assertNotEqual(load_or_create_password(self.mktemp()), password)


class MasterSideTests(SynchronousTestCase):
    def test_the_master_takes_it_from_its_environment_and_drops_it_there(self):
        self.patch(os, "environ", dict(os.environ, TITAN_STORE_PASSWORD="s3cret"))
        options = Options()
        options.parseOptions(["--data-dir", self.mktemp(), "--store",
                              "redis://127.0.0.1:6390/0"])
        self.assertEqual(options.config.store.password, "s3cret")
        self.assertEqual(options.config.store.url, "redis://127.0.0.1:6390/0")  # not in it
        self.assertNotIn("TITAN_STORE_PASSWORD", os.environ)  # its children do not get it

    def test_the_client_authenticates_with_it_unless_the_url_has_one(self):
        clock = Clock()
        client = StoreClient("redis://127.0.0.1:1/0", reactor=clock, password="s3cret")
        self.addCleanup(client.close)
        self.assertEqual(client.options["password"], "s3cret")
        client = StoreClient("redis://:own@127.0.0.1:1/0", reactor=clock, password="s3cret")
        self.addCleanup(client.close)
        self.assertEqual(client.options["password"], "own")


class StoreOptionsTests(SynchronousTestCase):
    def parse(self, *argv: str) -> tuple:
        from titan.store.tap import Options
        err = io.StringIO()
        options = Options()
        self.patch(sys, "stderr", err)
        options.parseOptions(["--data-dir", self.mktemp(), *argv])
        return options.config.password, err.getvalue()

    def test_a_password_on_the_command_line_is_warned_about(self):
        password, said = self.parse("--password", "hunter2")
        self.assertEqual(password, "hunter2")
        self.assertIn("--password on the command line is visible to every local user", said)

    def test_the_environment_is_quiet(self):
        self.patch(os, "environ", dict(os.environ, TITAN_STORE_PASSWORD="hunter2"))
        self.assertEqual(self.parse(), ("hunter2", ""))
