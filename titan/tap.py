"""What the twistd plugins (titan-master, titan-worker, titan-store) share: command-line
options, and stop signals handled in the reactor's loop."""
from __future__ import annotations

import os
import signal

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


def stop_signals_in_the_loop(reactor=None) -> None:
    """Once the reactor runs, SIGTERM and SIGINT only hand themselves to its loop.

    Twisted's own handlers log ("Received SIGTERM, shutting down.") inside the signal
    handler.  When the signal lands while the main thread is taking the log file's lock, the
    handler waits for that lock for ever: it happened to a worker told by the kernel that
    its master died (PR_SET_PDEATHSIG) at the moment it logged losing the connection.  These
    handlers do nothing but `callFromThread`, which is safe there; the loop then runs
    Twisted's handler, which logs and stops."""
    if reactor is None:
        from twisted.internet import reactor

    stopping = []

    def in_the_loop(handler, signum: int) -> None:
        # A second signal (the kernel's and a supervisor's, say) would make the reactor
        # complain that it is not running any more: the first one stops it.
        if not stopping:
            stopping.append(signum)
            handler(signum, None)

    def install() -> None:
        for signum, handler in ((signal.SIGTERM, reactor.sigTerm),
                                (signal.SIGINT, reactor.sigInt)):
            if callable(signal.getsignal(signum)):  # the reactor installed its handlers
                signal.signal(signum, lambda n, frame, h=handler:
                              reactor.callFromThread(in_the_loop, h, n))

    # After the "during startup" trigger in which the reactor installs its own.
    reactor.addSystemEventTrigger("after", "startup", install)
