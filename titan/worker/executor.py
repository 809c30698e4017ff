"""How a job becomes a process: its own session and process group, its own directory.

Output is handed over as it arrives; on exit whatever the job left behind in its process
group is killed, so a job never leaves orphans.
"""
from __future__ import annotations

import ctypes
import errno
import os
import shutil
import signal
from typing import Callable, Optional

from twisted.internet import error, process
from twisted.internet.protocol import ProcessProtocol
from twisted.logger import Logger
from twisted.python.failure import Failure


try:
    _libc = ctypes.CDLL(None, use_errno=True)
    _prctl = _libc.prctl
except (OSError, AttributeError):  # not Linux
    _prctl = None
PR_SET_PDEATHSIG = 1


class SessionProcess(process.Process):
    """A child that starts its own session, so its whole tree is one process group.

    Twisted has no public hook for this; these two overrides of its fork path are covered
    by tests that kill a job's grandchildren (tests/unit/test_executor.py).
    """

    def _trySpawnInsteadOfFork(self, *args, **kwargs) -> bool:
        return False  # posix_spawn cannot call setsid(); take the fork path

    def _execChild(self, path, uid, gid, executable, args, environment):
        os.setsid()
        if _prctl is not None:
            _prctl(PR_SET_PDEATHSIG, signal.SIGKILL)  # a kill -9'd worker takes its jobs along
        super()._execChild(path, uid, gid, executable, args, environment)


def signal_group(pid: int, sig: int) -> None:
    """Send `sig` to the process group led by `pid` (or to pid alone if it has none yet)."""
    try:
        os.killpg(pid, sig)
    except ProcessLookupError:
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            pass
    except PermissionError:
        pass


class JobProcess(ProcessProtocol):
    log = Logger()

    def __init__(self, clock, on_output: Callable[[str, bytes], None],
                 on_exit: Callable[[Optional[int], Optional[str]], None],
                 timeout: Optional[float] = None, kill_grace: float = 5.0) -> None:
        self.clock = clock
        self.on_output = on_output
        self.on_exit = on_exit
        self.timeout = timeout
        self.kill_grace = kill_grace
        self.pid: Optional[int] = None
        self.kill_reason: Optional[str] = None
        self._timeout_call = None
        self._hard_kill_call = None
        self.ended = False

    def connectionMade(self) -> None:
        self.pid = self.transport.pid
        self.transport.closeStdin()
        if self.timeout:
            self._timeout_call = self.clock.callLater(
                self.timeout, self.kill, f"timeout after {self.timeout:g}s")

    def outReceived(self, data: bytes) -> None:
        self.on_output("out", data)

    def errReceived(self, data: bytes) -> None:
        self.on_output("err", data)

    def kill(self, reason: str) -> None:
        """Stop the whole group: TERM, then KILL once the grace period is over."""
        if self.ended or self.pid is None:
            return
        if self.kill_reason is None:
            self.kill_reason = reason
        signal_group(self.pid, signal.SIGTERM)
        if self._hard_kill_call is None:
            self._hard_kill_call = self.clock.callLater(
                self.kill_grace, signal_group, self.pid, signal.SIGKILL)

    def processExited(self, reason: Failure) -> None:
        # The leader is gone; whatever it started goes with it (and frees the pipes).
        if self.pid is not None:
            signal_group(self.pid, signal.SIGKILL)

    def processEnded(self, reason: Failure) -> None:
        self.ended = True
        for call in (self._timeout_call, self._hard_kill_call):
            if call is not None and call.active():
                call.cancel()
        exit_code: Optional[int] = None
        why: Optional[str] = self.kill_reason
        if reason.check(error.ProcessDone):
            exit_code = 0
        elif reason.check(error.ProcessTerminated):
            exit_code = reason.value.exitCode
            if exit_code is None and why is None:
                sig = reason.value.signal
                name = signal.Signals(sig).name if sig in signal.Signals._value2member_map_ else sig
                why = f"killed by signal {name}"
        self.on_exit(exit_code, why)


def resolve_executable(command: list[str], env: dict, cwd: str) -> Optional[str]:
    """The path of the program a command runs, or None when there is none to run."""
    program = command[0]
    if "/" in program:
        path = program if os.path.isabs(program) else os.path.join(cwd, program)
        return path if os.access(path, os.X_OK) and not os.path.isdir(path) else None
    return shutil.which(program, path=env.get("PATH", os.defpath))


def spawn(reactor, proto: JobProcess, command: list[str], env: dict, cwd: str) -> Optional[str]:
    """Start `command`; return None, or why it could not start."""
    executable = resolve_executable(command, env, cwd)
    if executable is None:
        return f"command not found: {command[0]}"
    try:
        SessionProcess(reactor, executable, list(command), env, cwd, proto)
    except OSError as e:
        return f"cannot start {command[0]}: {os.strerror(e.errno or errno.EIO)}"
    return None
