"""How a job becomes a process: its own session and process group, its own directory
(or its run's shared one: `job_workdir`).

Output is handed over as it arrives; on exit whatever the job left behind in its process
group is killed, so a job never leaves orphans.
"""
from __future__ import annotations

import errno
import os
import shutil
import signal
import subprocess
import sys
from typing import Callable, Optional

from twisted.internet import error, process
from twisted.internet.protocol import ProcessProtocol
from twisted.logger import Logger
from twisted.python.failure import Failure

# The guard: one small process per worker that reads "+PGID" / "-PGID" lines and, at the
# end of its input (the worker is gone, however it went: kill -9 too), SIGKILLs every
# process group still listed.
_GUARD_SOURCE = """\
import os, signal, sys
groups = set()
for line in sys.stdin.buffer:
    (groups.add if line[:1] == b"+" else groups.discard)(int(line[1:]))
for pgid in groups:
    try:
        os.killpg(pgid, signal.SIGKILL)
    except OSError:
        pass
"""


class GroupGuard:
    """Makes a kill -9'd worker take its jobs along: their whole process groups, grandchildren
    included (PR_SET_PDEATHSIG in each child took only the group leader, and needed Python
    code run in the forked child, which is what made every spawn cost a fork of the worker).
    """

    log = Logger()

    def __init__(self) -> None:
        self._proc: Optional[subprocess.Popen] = None

    def _start(self) -> subprocess.Popen:
        return subprocess.Popen([sys.executable, "-S", "-c", _GUARD_SOURCE],
                                stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
                                start_new_session=True)

    def watch(self, pgid: int) -> None:
        for _ in range(2):
            if self._proc is None:
                self._proc = self._start()
            try:
                os.write(self._proc.stdin.fileno(), b"+%d\n" % pgid)
                return
            except OSError:  # the guard died: start another one
                self.log.warn("the job guard process died; starting another")
                self._discard()

    def release(self, pgid: int) -> None:
        if self._proc is not None:
            try:
                os.write(self._proc.stdin.fileno(), b"-%d\n" % pgid)
            except OSError:
                self._discard()

    def _discard(self) -> None:
        proc, self._proc = self._proc, None
        if proc is not None:
            try:
                proc.stdin.close()
            except OSError:
                pass
            proc.poll()

    def close(self, timeout: float = 5.0) -> None:
        """Kill what is left of every watched group now, and end the guard."""
        proc, self._proc = self._proc, None
        if proc is not None:
            proc.stdin.close()
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


guard = GroupGuard()


class SessionProcess(process.Process):
    """A child that starts its own session, so its whole tree is one process group.

    It is started by subprocess's C code (vfork + setsid + exec: no Python runs in the child)
    instead of Twisted's os.fork() path, which copies the worker's page tables and then runs
    Python in the child: about 4 ms of CPU per job instead of 0.5 (bench/README.md).  Twisted
    still owns the pipes and reaps the child.  Covered by tests that kill a job's
    grandchildren (tests/unit/test_executor.py).
    """

    _popen: Optional[subprocess.Popen] = None

    def _fork(self, path, uid, gid, executable, args, environment, fdmap=None, **kwargs):
        fdmap = fdmap or {}
        if uid is not None or gid is not None or set(fdmap) - {0, 1, 2}:
            raise OSError(errno.EINVAL, "jobs take no uid, gid or extra descriptors")
        self._popen = subprocess.Popen(
            list(args), executable=executable, cwd=path, env=environment,
            stdin=fdmap.get(0, subprocess.DEVNULL), stdout=fdmap.get(1, subprocess.DEVNULL),
            stderr=fdmap.get(2, subprocess.DEVNULL), close_fds=True, start_new_session=True)
        self.pid = self._popen.pid
        self.status = -1
        guard.watch(self.pid)

    def processEnded(self, status) -> None:
        # Twisted reaped the child; tell subprocess, or it would try to reap the pid again.
        if self._popen is not None:
            self._popen.returncode = os.waitstatus_to_exitcode(status)
            guard.release(self.pid)
        super().processEnded(status)


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


def job_workdir(data_dir: str, job_id: str, spec, run_id: Optional[str]) -> tuple[str, bool]:
    """Where a job runs, and whether the worker made that directory (and removes it once it
    is empty and no job of this worker runs there).

    - `cwd` given: there, as it is.
    - `workspace: shared` in a run: `<data_dir>/shared/<RUN_ID>`, one per run on each
      worker, shared by the run's jobs that run on this worker (docs/pipelines.md).
    - otherwise its own: `<data_dir>/work/<job id>` (`work/RUN_ID/JOB_ID` in a run).
    """
    if spec.cwd:
        return os.path.expanduser(spec.cwd), False
    if spec.workspace == "shared" and run_id:
        return os.path.join(data_dir, "shared", run_id), True
    return os.path.join(data_dir, "work", job_id), True


def release_workdir(workdir: str, job_id: str, in_use: bool) -> None:
    """Remove a directory the worker made for a job if the job left it empty (and no other
    job runs there); then its run's folder (`work/RUN_ID`), once empty."""
    if in_use:
        return
    try:
        os.rmdir(workdir)
        if "/" in job_id:
            os.rmdir(os.path.dirname(workdir))
    except OSError:
        pass


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
