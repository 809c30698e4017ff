"""`twistd titan-store`: options and service."""
from __future__ import annotations

import os
import sys

from twisted.python import usage

from titan.store.config import FSYNC
from titan.tap import own_pidfile, private_files, stop_signals_in_the_loop


class Options(usage.Options):
    synopsis = "[--config FILE] [--listen ENDPOINT] [--data-dir DIR] [--password P]"
    longdesc = ("TitanStore: keys, sets, hashes, lists, TTLs and pub/sub over the Redis "
                "protocol (RESP2 and RESP3), kept in an append-only file.  Settings come "
                "from the config file's `store:` section; these options override them.  "
                "The password may also come from $TITAN_STORE_PASSWORD.")
    optParameters = [
        ["config", "c", None, "YAML config file (its `store:` section; see etc/titan.yaml)."],
        ["listen", "l", None, "Twisted endpoint to listen on "
                              "(default tcp:6379:interface=127.0.0.1)."],
        ["data-dir", "d", None, "Directory for the append-only file (default ~/.titan/store)."],
        ["password", None, None, "Clients must AUTH with this password.  Visible to every "
                                 "local user (ps): prefer $TITAN_STORE_PASSWORD."],
        ["fsync", None, None, f"When the file is synced: {', '.join(FSYNC)} "
                              f"(default everysec)."],
    ]

    def postOptions(self) -> None:
        from titan.config import ConfigError, load_config
        try:
            config = load_config(self["config"])
        except ConfigError as e:
            # One line that names file, line and key; twistd's usage dump would bury it.
            raise SystemExit(f"titan-store: {e}")
        from titan import jsonlog
        jsonlog.choose(self, config.log_format)
        if self["fsync"] is not None and self["fsync"] not in FSYNC:
            raise usage.UsageError(f"--fsync must be one of {', '.join(FSYNC)}")
        if self["password"]:
            print("titan-store: warning: --password on the command line is visible to every "
                  "local user (ps); use $TITAN_STORE_PASSWORD instead", file=sys.stderr,
                  flush=True)
        password = self["password"] or os.environ.get("TITAN_STORE_PASSWORD") or None
        config = config.override("store", listen=self["listen"], data_dir=self["data-dir"],
                                 password=password, fsync=self["fsync"])
        self.config = config.store
        own_pidfile(self, self.config.data_dir, "titan-store")


def makeService(options: Options):
    from titan.store.service import StoreService
    stop_signals_in_the_loop()
    private_files()
    return StoreService(options.config)
