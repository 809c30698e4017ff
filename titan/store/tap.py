"""`twistd titan-store`: options and service."""
from __future__ import annotations

import os

import attrs
from twisted.python import usage

from titan.store.config import FSYNC, StoreConfigError, load_store_config


class Options(usage.Options):
    synopsis = "[--config FILE] [--listen ENDPOINT] [--data-dir DIR] [--password P]"
    longdesc = ("TitanStore: keys, sets, hashes, lists, TTLs and pub/sub over the Redis "
                "protocol (RESP2), kept in an append-only file.  The password may also "
                "come from $TITAN_STORE_PASSWORD.")
    optParameters = [
        ["config", "c", None, "YAML config file (its `store:` section; see etc/titan.yaml)."],
        ["listen", "l", None, "Twisted endpoint to listen on "
                              "(default tcp:6379:interface=127.0.0.1)."],
        ["data-dir", "d", None, "Directory for the append-only file (default ~/.titan/store)."],
        ["password", None, None, "Clients must AUTH with this password."],
        ["fsync", None, None, f"When the file is synced: {', '.join(FSYNC)} "
                              f"(default everysec)."],
    ]

    def postOptions(self) -> None:
        try:
            config = load_store_config(self["config"])
        except StoreConfigError as e:
            raise SystemExit(f"titan-store: {e}")
        if self["fsync"] is not None and self["fsync"] not in FSYNC:
            raise usage.UsageError(f"--fsync must be one of {', '.join(FSYNC)}")
        password = self["password"] or os.environ.get("TITAN_STORE_PASSWORD") or None
        changes = {"listen": self["listen"], "data_dir": self["data-dir"],
                   "password": password, "fsync": self["fsync"]}
        self.config = attrs.evolve(config, **{k: v for k, v in changes.items()
                                              if v is not None})


def makeService(options: Options):
    from titan.store.service import StoreService
    return StoreService(options.config)
