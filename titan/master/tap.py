"""`twistd titan-master`: options and service."""
from __future__ import annotations

import os

from titan.master.reload import reload_on_hangup
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

    _store_password = None

    def postOptions(self) -> None:
        # The store's password: $TITAN_STORE_PASSWORD (how `titan up` passes it, never on a
        # command line), else `store.password` in the config, else the URL's.  Taken out of
        # the environment, which the workers it starts would inherit.
        self._store_password = os.environ.pop("TITAN_STORE_PASSWORD", None)
        self.config = config = self._with_options(self.load())
        # Name the problem before twistd starts logging, on one line of stderr.
        from titan.errors import TitanError
        from titan.interfaces import IPersistenceFactory
        from titan.plugin_registry import find
        try:
            find(IPersistenceFactory, config.persistence.backend, "persistence backend")
        except TitanError as e:
            raise SystemExit(f"titan: {config.source}: persistence.backend: {e}")
        own_pidfile(self, self.config.master.data_dir, "titan-master")

    def _with_options(self, config):
        """The command line's options over the file's settings."""
        # Absolute now, whatever directory the service later runs from (twistd may chdir).
        data_dir = os.path.abspath(os.path.expanduser(config.master.data_dir))
        config = config.override("master", listen=self["listen"], data_dir=data_dir)
        if self["http"]:
            config = config.override("web", listen=self["http"])
        if self["store"]:
            config = config.override("store", url=self["store"])
        if self._store_password:
            config = config.override("store", password=self._store_password)
        return config

    def reload(self):
        """The config as it would be at a start now: the file read again, these options over
        it (the master's reload: titan/master/reload.py).  ConfigError if it is bad."""
        return self._with_options(self.reread())


def makeService(options: Options) -> MasterService:
    stop_signals_in_the_loop()
    private_files()
    hide_token(options.config.token)
    service = MasterService(options.config)
    service.config_loader = options.reload
    reload_on_hangup(service)
    return service
