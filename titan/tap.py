"""Command-line options shared by the twistd plugins (titan-master, titan-worker)."""
from __future__ import annotations

import os

from twisted.python import usage

from titan.config import Config, ConfigError, load_config


class ConfigOptions(usage.Options):
    optParameters = [
        ["config", "c", None, "YAML config file (see etc/titan.yaml)."],
        ["token", None, None, "Cluster token (default: $TITAN_TOKEN, the config, or one "
                              "generated into the master's data dir)."],
        ["data-dir", "d", None, "Directory for this process's state."],
    ]
    section = ""

    def load(self) -> Config:
        try:
            config = load_config(self["config"])
        except ConfigError as e:
            # One line that names file, line and key; twistd's usage dump would bury it.
            raise SystemExit(f"titan: {e}")
        token = self["token"] or os.environ.get("TITAN_TOKEN") or config.token
        config = config.override("", token=token)
        return config.override(self.section, data_dir=self["data-dir"])
