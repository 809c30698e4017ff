"""`twistd titan-master`: options and service."""
from __future__ import annotations

import os

from titan.master.service import MasterService
from titan.tap import (ConfigOptions, hide_token, own_pidfile, private_files,
                       stop_signals_in_the_loop)


class Options(ConfigOptions):
    synopsis = ("[--config FILE] [--listen ENDPOINT] [--http ENDPOINT] [--data-dir DIR] "
                "[--token-file F]")
    longdesc = "The Titan master: schedules jobs onto the workers that dial it."
    optParameters = [
        ["listen", "l", None, "Twisted endpoint to listen on "
                              "(default tcp:9090:interface=127.0.0.1)."],
        ["http", None, None, "Twisted endpoint of the web API and dashboard (web.listen; "
                             "default tcp:8080:interface=127.0.0.1)."],
        ["store", None, None, "The store to reach for tasks' keys, sets and pub/sub: "
                              "redis://[:PASSWORD@]HOST:PORT[/0] (TitanStore or Redis)."],
    ]
    section = "master"

    def postOptions(self) -> None:
        config = self.load()
        # Absolute now, whatever directory the service later runs from (twistd may chdir).
        data_dir = os.path.abspath(os.path.expanduser(config.master.data_dir))
        self.config = config.override("master", listen=self["listen"], data_dir=data_dir)
        if self["http"]:
            self.config = self.config.override("web", listen=self["http"])
        if self["store"]:
            self.config = self.config.override("store", url=self["store"])
        # The store's password: $TITAN_STORE_PASSWORD (how `titan up` passes it, never on a
        # command line), else `store.password` in the config, else the URL's.  Taken out of
        # the environment, which the workers it starts would inherit.
        password = os.environ.pop("TITAN_STORE_PASSWORD", None)
        if password:
            self.config = self.config.override("store", password=password)
        # Name the problem before twistd starts logging, on one line of stderr.
        from titan.errors import TitanError
        from titan.interfaces import IPersistenceFactory
        from titan.plugin_registry import find
        try:
            find(IPersistenceFactory, config.persistence.backend, "persistence backend")
        except TitanError as e:
            raise SystemExit(f"titan: {config.source}: persistence.backend: {e}")
        own_pidfile(self, self.config.master.data_dir, "titan-master")


def makeService(options: Options) -> MasterService:
    stop_signals_in_the_loop()
    private_files()
    hide_token(options.config.token)
    return MasterService(options.config)
