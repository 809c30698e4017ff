"""What the twistd plugins (titan-master, titan-worker, titan-store) share: command-line
options, and stop signals handled in the reactor's loop."""
from __future__ import annotations

import atexit
import os
import signal
import sys
from typing import Optional

from twisted.python import usage

from titan.auth import blank_in_own_process, read_token_file
from titan.config import Config, ConfigError, load_config


class ConfigOptions(usage.Options):
    optParameters = [
        ["config", "c", None, "YAML config file (see etc/titan.yaml)."],
        ["token", None, None, "Cluster token.  Visible to every local user (ps) while the "
                              "process starts: prefer $TITAN_TOKEN or --token-file."],
        ["token-file", None, None, "A file (mode 0600) whose first line is the cluster token "
                                   "(default: $TITAN_TOKEN, the config, or one generated "
                                   "into the master's data dir)."],
        ["data-dir", "d", None, "Directory for this process's state."],
    ]
    section = ""

    def load(self) -> Config:
        try:
            config = load_config(self["config"])
        except ConfigError as e:
            # One line that names file, line and key; twistd's usage dump would bury it.
            raise SystemExit(f"titan: {e}")
        from titan import jsonlog
        jsonlog.choose(self, config.log_format)
        config = config.override("", token=self._token(config))
        return config.override(self.section, data_dir=self["data-dir"])

    # Where the token came from at the start: "option", "file", "env" or "config" (None:
    # nowhere; a master then keeps one in its data dir).
    token_from: Optional[str] = None
    _start_token: Optional[str] = None

    def reread(self) -> Config:
        """The config as `load` made it, from the file as it is now (a master's reload;
        ConfigError if it is bad).  The token comes from where it came from at the start: a
        --token-file is read again, `token:` is the new file's, and --token or $TITAN_TOKEN
        stay what they were (the process forgot where they came from)."""
        config = load_config(self["config"])
        if self.token_from == "file":
            try:
                token = read_token_file(self["token-file"])
            except ValueError as e:
                raise ConfigError(str(e)) from None
        elif self.token_from in ("option", "env"):
            token = self._start_token
        else:
            token = config.token
        config = config.override("", token=token)
        return config.override(self.section, data_dir=self["data-dir"])

    def _token(self, config: Config) -> Optional[str]:
        """--token, --token-file, $TITAN_TOKEN or the config's (`hide_token` then blanks
        the copies in the process's command line and environment)."""
        if self["token"] and self["token-file"]:
            raise usage.UsageError("--token and --token-file: give one of them")
        if self["token"]:
            print("titan: warning: --token on the command line is visible to every local "
                  "user (ps) while the process starts; use $TITAN_TOKEN or --token-file "
                  "instead", file=sys.stderr, flush=True)
            token, self.token_from = self["token"], "option"
        elif self["token-file"]:
            try:
                token = read_token_file(self["token-file"])
            except ValueError as e:
                raise usage.UsageError(str(e))
            self.token_from = "file"
        elif os.environ.get("TITAN_TOKEN"):
            token, self.token_from = os.environ["TITAN_TOKEN"], "env"
        else:
            token = config.token
            self.token_from = "config" if token else None
        self._start_token = token
        return token


def hide_token(token: Optional[str]) -> None:
    """In a titan process that has read its token: blank the copies in its own command line
    and environment block (/proc/PID/cmdline and environ are readable by a worker's jobs,
    and the command line by every local user), and drop it from os.environ."""
    if token:
        blank_in_own_process(token)
    os.environ.pop("TITAN_TOKEN", None)


TWISTD_DEFAULT_PIDFILE = "twistd.pid"

# The umask this process was started with (jobs get it back), once `private_files` ran.
started_umask: Optional[int] = None


def private_files() -> None:
    """Every file a titan process creates is 0600 and every folder 0700, whatever the umask
    it was started with and the mode of its data dir: event logs, snapshots, SQLite, job
    logs, port and pid files, tokens, twistd's log (docs/security.md).  Jobs are started
    with the umask this process had (titan/worker/executor.py)."""
    global started_umask
    old = os.umask(0o077)
    if started_umask is None:
        started_umask = old


def private_dir(path: str) -> None:
    """Make `path` (0700), or narrow it to 0700 if it is ours and wider."""
    os.makedirs(path, mode=0o700, exist_ok=True)
    try:
        if os.stat(path).st_mode & 0o077:
            os.chmod(path, 0o700)
    except OSError:
        pass


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
