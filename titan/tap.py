"""What the twistd plugins (titan-master, titan-worker, titan-store) share: command-line
options, and stop signals handled in the reactor's loop."""
from __future__ import annotations

import atexit
import os
import signal
import sys
from typing import Optional

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


TWISTD_DEFAULT_PIDFILE = "twistd.pid"


def own_pidfile(options: usage.Options, data_dir: Optional[str], name: str) -> None:
    """twistd writes `./twistd.pid` unless told otherwise, so a master and a worker started
    from one directory (as the README shows) collide: the second refuses to start.  Unless
    --pidfile was given, a titan process in the foreground (-n) writes none, and a daemon
    writes `DATA_DIR/NAME.pid`.  (`twist` has no pidfile: nothing to do.)"""
    parent = getattr(options, "parent", None)
    if parent is None or parent.get("pidfile") != TWISTD_DEFAULT_PIDFILE:
        return
    if parent.get("nodaemon") or not data_dir:
        parent["pidfile"] = ""
        return
    data_dir = os.path.abspath(os.path.expanduser(data_dir))
    os.makedirs(data_dir, exist_ok=True)
    parent["pidfile"] = os.path.join(data_dir, f"{name}.pid")


_exit_status: list = []


def _exit_with_status() -> None:
    # Registered when this module is imported, so it runs after the atexit handlers
    # registered later (LIFO), once twistd has stopped everything and returned.
    if _exit_status:
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except Exception:
                pass
        os._exit(_exit_status[0])


atexit.register(_exit_with_status)


def exit_after_stop(reactor, status: int) -> None:
    """Stop the reactor (services stop as usual), then end the process with `status`:
    twistd itself always exits 0, which would tell a supervisor that all went well."""
    _exit_status[:] = [status]
    reactor.callLater(0, reactor.stop)


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
