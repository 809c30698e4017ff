"""`twistd titan-worker`: options and service."""
from __future__ import annotations

import os

from twisted.python import usage

from titan.auth import read_token
from titan.config import MasterConfig
from titan.tap import (ConfigOptions, hide_token, own_pidfile, private_files,
                       stop_signals_in_the_loop)
from titan.worker.service import WorkerService, parse_hostport


class Options(ConfigOptions):
    synopsis = ("[--config FILE] [--master HOST:PORT] [--token-file F] [--tags A,B] [--slots N] "
                "[--name NAME] [--data-dir DIR] [--no-detect-tags]")
    longdesc = "A Titan worker: dials the master and runs the jobs it is given."
    optParameters = [
        ["master", "m", None, "Where the master listens, HOST:PORT (default 127.0.0.1:9090)."],
        ["tags", "t", None, "Capability tags, comma separated (GPU,HIGH_MEM,...)."],
        ["slots", "s", None, "How many jobs may run at once (default 4).", int],
        ["name", "n", None, "A name for people (default: the host name)."],
    ]
    optFlags = [
        ["no-detect-tags", None, "Offer only the --tags given, not also the ones this "
                                 "machine is seen to have (GPU, HIGH_MEM)."],
    ]
    section = "worker"

    def postOptions(self) -> None:
        config = self.load()
        tags = None
        if self["tags"] is not None:
            tags = tuple(t.strip() for t in self["tags"].split(",") if t.strip())
        if self["slots"] is not None and self["slots"] < 1:
            raise usage.UsageError("--slots must be 1 or more")
        config = config.override("worker", master=self["master"], tags=tags,
                                 slots=self["slots"], name=self["name"],
                                 detect_tags=False if self["no-detect-tags"] else None)
        # Absolute now: jobs run in their own directories, and a relative path to the
        # scripts they are shipped would name nothing from there.
        config = config.override("worker", data_dir=os.path.abspath(
            os.path.expanduser(config.worker.data_dir)))
        try:
            parse_hostport(config.worker.master)
        except ValueError as e:
            raise usage.UsageError(f"--master: {e}")
        if not config.token:
            # A worker beside a master with a generated token may read it from there.
            config = config.override("", token=read_token(config.master.data_dir
                                                          or MasterConfig().data_dir))
        if not config.token:
            raise usage.UsageError(
                "no cluster token: set TITAN_TOKEN, pass --token-file, or put token: in the "
                "config")
        self.config = config
        own_pidfile(self, config.worker.data_dir, "titan-worker")


def makeService(options: Options) -> WorkerService:
    stop_signals_in_the_loop()
    private_files()
    hide_token(options.config.token)
    return WorkerService(options.config, options.config.token)
