"""How a job becomes a process: its own session and process group, its own directory
(or its run's shared one: `job_workdir`).

Output is handed over as it arrives; on exit whatever the job left behind is killed -- its
process group, and what left the group (setsid) through the job's cgroup or its mark
(`containment`) -- so a job never leaves orphans, and its log says when it tried.
"""
from __future__ import annotations

import errno
import os
import secrets
import shutil
import signal
import stat
import subprocess
import sys
from typing import Callable, Optional

from twisted.internet import error, process
from twisted.internet.protocol import ProcessProtocol
from twisted.logger import Logger
from twisted.python.failure import Failure

# The umask jobs start with (the worker's own is 077: titan.tap.private_files); -1: as is.
job_umask = -1
MARK_VARIABLE = "TITAN_JOB_MARK"  # in every process a job starts (setsid does not drop it)

# The guard: one small process per worker that reads lines naming what a job holds --
# "+gPGID" (a process group), "+cPATH" (a job's cgroup), "+mMARK" (the mark in its processes'
# environment), "-..." when the job is over, "=rPATH" (the worker's cgroup folder) -- and, at
# the end of its input (the worker is gone, however it went: kill -9 too), kills every
# process still listed, by group, by cgroup (cgroup.kill of the worker's folder takes every
# job cgroup under it) and by mark, then removes the cgroups.  It reads what is there, then
# waits GUARD_NAP seconds before reading again -- in a poll that asks for no event, so that
# new lines do not wake it but the worker's end of the pipe closing (POLLHUP) does, at
# once: the worker's two lines a job wake it at most ~1/GUARD_NAP times a second (a
# wake-up per line cost ~0.04 ms of CPU a job), a dead worker's jobs are killed as soon as
# before, and every line written before the worker died is still read before the end of
# input acts.
GUARD_NAP = 0.02
_GUARD_SOURCE = """\
import os, select, signal, sys, time
held = {b"g": set(), b"c": set(), b"m": set(), b"r": set()}
rest = b""
hangup = select.poll()
hangup.register(0, 0)  # no events asked for: poll still says POLLHUP, at once
while True:
    data = os.read(0, 1 << 20)
    if not data:
        break
    *lines, rest = (rest + data).split(b"\\n")
    for line in lines:
        (held[line[1:2]].add if line[:1] in b"+=" else held[line[1:2]].discard)(line[2:])
    hangup.poll(%(nap_ms)r)
for pgid in held[b"g"]:
    try:
        os.killpg(int(pgid), signal.SIGKILL)
    except OSError:
        pass
for path in held[b"c"] | held[b"r"]:  # a worker's folder: every job cgroup under it
    try:
        with open(path + b"/cgroup.kill", "wb") as f:
            f.write(b"1")
    except OSError:
        pass
marks = [b"TITAN_JOB_MARK=" + m + b"\\0" for m in held[b"m"]]
if marks:
    for pid in os.listdir(b"/proc"):
        if pid.isdigit() and int(pid) != os.getpid():
            try:
                with open(b"/proc/" + pid + b"/environ", "rb") as f:
                    env = f.read()
                if any(m in env for m in marks):
                    os.kill(int(pid), signal.SIGKILL)
            except OSError:
                pass
deadline = time.monotonic() + 5
below = []
for root in held[b"r"]:
    try:
        below += [root + b"/" + n for n in os.listdir(root) if os.path.isdir(root + b"/" + n)]
    except OSError:
        pass
for path in below + sorted(held[b"r"], reverse=True):
    while True:
        try:
            os.rmdir(path)
        except FileNotFoundError:
            pass
        except OSError:
            if time.monotonic() < deadline:
                time.sleep(0.02)
                continue
        break
"""


class GroupGuard:
    """Makes a kill -9'd worker take its jobs along: their whole process groups, cgroups and
    marked processes, grandchildren included (PR_SET_PDEATHSIG in each child took only the
    group leader, and needed Python code run in the forked child, which is what made every
    spawn cost a fork of the worker).
    """

    log = Logger()

    def __init__(self) -> None:
        self._proc: Optional[subprocess.Popen] = None

    def _start(self) -> subprocess.Popen:
        source = _GUARD_SOURCE % {"nap_ms": int(GUARD_NAP * 1000)}
        return subprocess.Popen([sys.executable, "-S", "-c", source],
                                stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
                                start_new_session=True)

    def started(self) -> None:
        """Start the guard now (not inside a job's cgroup, where it would be started by
        the first `watch` of a job and die with that job)."""
        if self._proc is None:
            self._proc = self._start()

    def _send(self, lines: bytes) -> None:
        for _ in range(2):
            if self._proc is None:
                self._proc = self._start()
            try:
                os.write(self._proc.stdin.fileno(), lines)
                return
            except OSError:  # the guard died: start another one
                self.log.warn("the job guard process died; starting another")
                self._discard()

    def watch(self, pgid: int, *held: bytes) -> None:
        """Hold process group `pgid` and `held` (b"cPATH", b"mMARK", b"rPATH")."""
        self._send(b"+g%d\n" % pgid + b"".join(b"+" + h + b"\n" for h in held))

    def release(self, pgid: int, *held: bytes) -> None:
        if self._proc is not None:
            try:
                os.write(self._proc.stdin.fileno(),
                         b"-g%d\n" % pgid + b"".join(b"-" + h + b"\n" for h in held))
            except OSError:
                self._discard()

    def hold(self, item: bytes) -> None:
        """Something to clean up when the worker goes, for as long as it lives (b"rPATH")."""
        self._send(b"=" + item + b"\n")

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
                proc.wait(timeout + 5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


guard = GroupGuard()


# -- containment: every process a job starts, whatever it does --------------------------
# A job's processes share its session and process group, until one calls setsid(): a
# double fork and setsid escape a kill of the group.  So each job also gets a cgroup (v2)
# of its own where the worker can make one, and cgroup.kill ends all of it; elsewhere the
# worker finds a job's processes by session, process group, parent and the mark in their
# environment (TITAN_JOB_MARK), which a setsid keeps.

def _proc_stat(pid: bytes) -> Optional[tuple[str, int, int, int]]:
    """(state, ppid, pgrp, session) of a process, or None once it is gone."""
    try:
        with open(b"/proc/" + pid + b"/stat", "rb") as f:
            data = f.read()
    except OSError:
        return None
    fields = data[data.rindex(b")") + 2:].split()
    return fields[0].decode(), int(fields[1]), int(fields[2]), int(fields[3])


class Tracked:
    """A job's processes found by session, process group, parent and mark (no cgroup)."""

    kind = "tracking"
    vacated = False  # known to hold no process any more (Cgroup.release)

    def __init__(self, mark: str) -> None:
        self.mark = mark
        self.leader: Optional[int] = None

    def held(self) -> tuple[bytes, ...]:
        return (b"m" + self.mark.encode(),)

    def before_spawn(self) -> None:
        pass

    def after_spawn(self, pid: Optional[int]) -> None:
        self.leader = pid

    def members(self) -> list[int]:
        """Every live process of the job: in its session or group, carrying its mark, or a
        descendant of one of those."""
        needle = f"{MARK_VARIABLE}={self.mark}\0".encode()
        own = os.getpid()
        found: set[int] = set()
        parents: dict[int, int] = {}
        # Every process of the job was made after its first one: while pids have not wrapped
        # around since, only those above the leader's need a look (each costs reads).
        first = self.leader if self.leader is not None and _last_pid() >= self.leader else 0
        for name in os.listdir(b"/proc"):
            if not name.isdigit():
                continue
            pid = int(name)
            if pid == own or pid < first:
                continue
            stat = _proc_stat(name)
            if stat is None or stat[0] == "Z":
                continue
            state, ppid, pgrp, session = stat
            parents[pid] = ppid
            if self.leader is not None and self.leader in (pgrp, session):
                found.add(pid)
                continue
            try:
                with open(b"/proc/" + name + b"/environ", "rb") as f:
                    if needle in f.read():
                        found.add(pid)
            except OSError:
                pass
        grew = True
        while grew:  # descendants that dropped the mark (env -i) and left the session
            grew = False
            for pid, ppid in parents.items():
                if ppid in found and pid not in found:
                    found.add(pid)
                    grew = True
        return sorted(found)

    def signal(self, sig: int) -> None:
        for pid in self.members():
            try:
                os.kill(pid, sig)
            except OSError:
                pass

    def kill_all(self) -> list[int]:
        """SIGKILL every process of the job; returns the ones found."""
        killed: list[int] = []
        for _ in range(3):  # one that forked meanwhile is found the next time round
            pids = self.members()
            if not pids:
                break
            for pid in pids:
                try:
                    os.kill(pid, signal.SIGKILL)
                except OSError:
                    pass
            killed.extend(p for p in pids if p not in killed)
        return killed

    def release(self) -> bool:
        return True


class Cgroup(Tracked):
    """A job's own cgroup, made under the worker's: the job's first process is born in it
    (the worker steps in to spawn it and back out), so nothing it starts can leave it."""

    kind = "cgroup"

    def __init__(self, mark: str, owner: "CgroupContainment") -> None:
        super().__init__(mark)
        self.owner = owner
        if owner.free:  # an empty one a job before it left: no mkdir, no rmdir, no open
            self.path, self.procs = owner.free.pop()
        else:
            self.path = owner.new_path(mark)
            os.mkdir(self.path, 0o700)
            try:
                self.procs = _open_procs(self.path, os.O_RDWR)
            except OSError:
                os.rmdir(self.path)
                raise

    def held(self) -> tuple[bytes, ...]:
        return (b"c" + self.path.encode(), b"m" + self.mark.encode())

    def before_spawn(self) -> None:
        os.write(self.procs, b"0")

    def after_spawn(self, pid: Optional[int]) -> None:
        self.leader = pid
        try:
            os.write(self.owner.home_procs, b"0")
        except OSError as e:  # (kill_all never kills the worker with its job)
            Logger().error("the worker could not step out of a job's cgroup {path}: {why}",
                           path=self.path, why=e.strerror or e)

    def members(self) -> list[int]:
        if self.vacated:
            # Found empty when the job's leader was reaped and handed back (release): it is
            # another job's now, or gone, and the killing at the job's end reads nothing.
            return []
        try:
            with open(os.path.join(self.path, "cgroup.procs"), "rb") as f:
                pids = [int(x) for x in f.read().split()]
        except OSError:
            return []
        return [p for p in pids if (_proc_stat(b"%d" % p) or ("Z",))[0] != "Z"]

    def kill_all(self) -> list[int]:
        pids = self.members()
        if not pids:
            return pids
        if os.getpid() in pids:
            # The worker failed to step back out after a spawn: never cgroup.kill itself.
            pids.remove(os.getpid())
            for pid in pids:
                try:
                    os.kill(pid, signal.SIGKILL)
                except OSError:
                    pass
        elif pids:
            _write(os.path.join(self.path, "cgroup.kill"), b"1")
        return pids

    def release(self) -> bool:
        """Hand the cgroup back for another job once it is empty (or remove it); False
        while it still holds dying processes (it is removed later)."""
        try:
            empty = not os.pread(self.procs, 1, 0)  # (a read from 0 lists it afresh)
        except OSError:
            os.close(self.procs)
            return True
        self.vacated = empty
        if self.owner.stale:
            self.owner.sweep()
        if empty and len(self.owner.free) < POOL:
            self.owner.free.append((self.path, self.procs))
            return True
        os.close(self.procs)
        try:
            os.rmdir(self.path)
        except FileNotFoundError:
            return True
        except OSError:
            self.owner.stale.add(self.path)
            return False
        return True


def _last_pid() -> int:
    """The pid the kernel handed out last (0 if it cannot tell: then look at every pid)."""
    try:
        with open("/proc/sys/kernel/ns_last_pid", "rb") as f:
            return int(f.read())
    except (OSError, ValueError):
        return 0


def _open_procs(cgroup: str, flags: int) -> int:
    """`cgroup.procs` of a cgroup, kept open: an open of a cgroupfs path and its close were
    a third of the system calls the cgroup moves cost per job."""
    return os.open(os.path.join(cgroup, "cgroup.procs"), flags | os.O_CLOEXEC)


def _write(path: str, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY)
    try:
        os.write(fd, data)
    finally:
        os.close(fd)


def _cgroup2_home() -> tuple[str, str]:
    """(mount point of the cgroup2 hierarchy, this process's cgroup folder in it)."""
    with open("/proc/self/cgroup") as f:
        own = next((line.strip()[3:] for line in f if line.startswith("0::")), None)
    if own is None:
        raise OSError("not in a cgroup v2 hierarchy")
    with open("/proc/self/mountinfo") as f:
        for line in f:
            left, _, right = line.partition(" - ")
            if right.split()[:1] == ["cgroup2"]:
                fields = left.split()
                root, mount_point = fields[3], fields[4]
                if own == root or own.startswith(root.rstrip("/") + "/"):
                    rel = own[len(root.rstrip("/")):].lstrip("/")
                    return mount_point, os.path.join(mount_point, rel)
    raise OSError("no cgroup2 file system mounted that holds this process's cgroup")


POOL = 64  # empty job cgroups a worker keeps for its next jobs


class CgroupContainment:
    """Jobs in cgroups of their own: `<this process's cgroup>/titan-<pid>/<mark>`."""

    kind = "cgroup"

    def __init__(self) -> None:
        _, self.home = _cgroup2_home()
        self.root = os.path.join(self.home, f"titan-{os.getpid()}")
        self.stale: set[str] = set()
        # Empty job cgroups, kept for the next jobs, with their cgroup.procs open.
        self.free: list[tuple[str, int]] = []
        os.makedirs(self.root, 0o700, exist_ok=True)
        try:
            self.home_procs = _open_procs(self.home, os.O_WRONLY)
            if not os.path.exists(os.path.join(self.root, "cgroup.kill")):
                raise OSError("cgroup.kill is missing (Linux 5.14 or later has it)")
            probe = Cgroup(f"probe-{secrets.token_hex(4)}", self)
            probe.before_spawn()
            probe.after_spawn(None)
            probe.release()
        except OSError:
            for fd in [getattr(self, "home_procs", None), *(fd for _, fd in self.free)]:
                if fd is not None:
                    os.close(fd)
            try:
                os.rmdir(self.root)
            except OSError:
                pass
            raise
        guard.started()
        guard.hold(b"r" + self.root.encode())

    def new_path(self, mark: str) -> str:
        return os.path.join(self.root, mark)

    def sweep(self) -> None:
        """Remove the cgroups that still held dying processes when their jobs ended."""
        for path in list(self.stale):
            try:
                os.rmdir(path)
            except FileNotFoundError:
                pass
            except OSError:
                continue
            self.stale.discard(path)

    def new(self, mark: str) -> Tracked:
        return Cgroup(mark, self)


class TrackingContainment:
    kind = "tracking"

    def new(self, mark: str) -> Tracked:
        return Tracked(mark)


_containment = None


def containment(mode: str = "auto"):
    """How this process contains its jobs: `cgroup`, `tracking`, or `auto` (a cgroup where
    this process can make one, else tracking).  Chosen once, on first use."""
    global _containment
    if _containment is None or (mode != "auto" and _containment.kind != mode):
        if mode == "tracking":
            _containment = TrackingContainment()
        else:
            try:
                _containment = CgroupContainment()
            except OSError as e:
                if mode == "cgroup":
                    raise
                Logger().info("jobs are contained by tracking their processes (no cgroup "
                              "of their own: {why})", why=e.strerror or e)
                _containment = TrackingContainment()
    return _containment


# CPython 3.11 to 3.13 share this private signature of _posixsubprocess.fork_exec (what
# subprocess.Popen calls); elsewhere jobs are started through Popen, the same way but with
# ~60 us more of the worker's CPU per job (mostly encoding the environment again).
_fork_exec = (getattr(subprocess, "_fork_exec", None)
              if (3, 11) <= sys.version_info[:2] <= (3, 13) else None)
_devnull: Optional[int] = None
# "KEY=value" bytes of the environment entries seen lately: a worker passes the same ~50
# inherited variables to every job, and encoding them was a fifth of its Python per job.
_env_entries: dict[tuple[str, str], bytes] = {}


def _encoded_env(env: dict) -> list[bytes]:
    cache = _env_entries
    out = []
    for item in env.items():
        entry = cache.get(item)
        if entry is None:
            key = os.fsencode(item[0])
            if b"=" in key:
                raise ValueError("illegal environment variable name")
            entry = key + b"=" + os.fsencode(item[1])
            if len(cache) >= 4096:  # the per-job values (ids, marks, tokens) pile up
                cache.clear()
            cache[item] = entry
        out.append(entry)
    return out


def _stdin_fd() -> int:
    """/dev/null, opened once: a job's stdin (no pipe that the worker closes at once)."""
    global _devnull
    if _devnull is None:
        _devnull = os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC)
    return _devnull


def _start(args: list, executable: str, cwd: str, env: dict, stdout: int,
           stderr: int) -> int:
    """Start a child as subprocess.Popen(args, executable=..., cwd=..., env=...,
    stdin=DEVNULL, close_fds=True, start_new_session=True, umask=job_umask) would (vfork,
    setsid, exec; errors before the exec come back as OSError), without Popen's Python."""
    exe = os.fsencode(executable)
    exe_list = ((exe,) if os.path.dirname(exe) else
                tuple(os.path.join(os.fsencode(d), exe) for d in os.get_exec_path(env)))
    err_read, err_write = os.pipe()
    low = []
    while err_write < 3:  # never one of the child's 0, 1, 2
        low.append(err_write)
        err_write = os.dup(err_write)
    for fd in low:
        os.close(fd)
    try:
        pid = _fork_exec(args, exe_list, True, (err_write,), cwd, _encoded_env(env),
                         _stdin_fd(), -1, -1, stdout, -1, stderr, err_read, err_write,
                         True, True, -1, None, None, None, job_umask, None,
                         subprocess._USE_VFORK)
    except BaseException:
        os.close(err_read)
        raise
    finally:
        os.close(err_write)
    try:
        report = b""
        while True:  # EOF once the child has exec'd (the pipe is close-on-exec)
            part = os.read(err_read, 50000)
            if not part or len(report) > 50000:
                break
            report += part
    finally:
        os.close(err_read)
    if not report:
        return pid
    try:
        os.waitpid(pid, 0)
    except ChildProcessError:
        pass
    name, _, rest = report.partition(b":")
    hex_errno, _, message = rest.partition(b":")
    try:
        number = int(hex_errno, 16)
    except ValueError:
        number = 0
    if name == b"OSError" and number:
        raise OSError(number, os.strerror(number),
                      cwd if message == b"noexec" else executable)
    raise OSError(errno.EIO, f"cannot start {executable}: {report.decode(errors='replace')}")


class SessionProcess(process.Process):
    """A child that starts its own session, so its whole tree is one process group (and its
    own cgroup, or a mark in its environment: `containment`).

    It is started by subprocess's C code (vfork + setsid + exec: no Python runs in the child)
    instead of Twisted's os.fork() path, which copies the worker's page tables and then runs
    Python in the child: about 4 ms of CPU per job instead of 0.5 (bench/README.md).  Twisted
    still owns the output pipes and reaps the child; stdin is /dev/null.  Covered by tests
    that kill a job's grandchildren (tests/unit/test_executor.py).
    """

    _popen: Optional[subprocess.Popen] = None
    _started = False
    contained: Optional[Tracked] = None

    def __init__(self, reactor, executable, args, environment, path, proto,
                 contained: Tracked) -> None:
        self.contained = contained
        super().__init__(reactor, executable, args, environment, path, proto,
                         childFDs={1: "r", 2: "r"})

    def _fork(self, path, uid, gid, executable, args, environment, fdmap=None, **kwargs):
        fdmap = fdmap or {}
        if uid is not None or gid is not None or set(fdmap) - {1, 2}:
            raise OSError(errno.EINVAL, "jobs take no uid, gid or extra descriptors")
        contained = self.contained
        contained.before_spawn()
        pid = None
        try:
            if _fork_exec is not None:
                pid = _start(list(args), executable, path, environment,
                             fdmap.get(1, -1), fdmap.get(2, -1))
            else:
                self._popen = subprocess.Popen(
                    list(args), executable=executable, cwd=path, env=environment,
                    stdin=subprocess.DEVNULL, stdout=fdmap.get(1, subprocess.DEVNULL),
                    stderr=fdmap.get(2, subprocess.DEVNULL), close_fds=True,
                    start_new_session=True, umask=job_umask)
                pid = self._popen.pid
        finally:
            contained.after_spawn(pid)
        self.pid = pid
        self.status = -1
        self._started = True
        guard.watch(self.pid, *contained.held())

    def processEnded(self, status) -> None:
        if self._started:
            if self._popen is not None:
                # Twisted reaped the child; tell subprocess, or it would reap the pid again.
                self._popen.returncode = os.waitstatus_to_exitcode(status)
            guard.release(self.pid, *self.contained.held())
            self.contained.release()
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
        self.contained: Optional[Tracked] = None  # set by spawn

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
        if self.contained is not None:  # the ones that left the group too
            self.contained.signal(signal.SIGTERM)
        if self._hard_kill_call is None:
            self._hard_kill_call = self.clock.callLater(self.kill_grace, self._kill_all)

    def _kill_all(self) -> list[int]:
        strays = self.contained.kill_all() if self.contained is not None else []
        signal_group(self.pid, signal.SIGKILL)
        return strays

    def processExited(self, reason: Failure) -> None:
        # The leader is gone; whatever it started goes with it (and frees the pipes), and
        # the job's log says so.
        if self.pid is not None:
            strays = self._kill_all()
            if strays:
                shown = " ".join(map(str, strays[:10])) + (" ..." if len(strays) > 10 else "")
                self.on_output("err", (
                    f"\n[titan: killed {len(strays)} process{'es' if len(strays) > 1 else ''}"
                    f" the job left running (pid {shown}): a job's processes end with it]\n"
                ).encode())

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


class Workdirs:
    """Jobs' own directories (`work/JOB_ID`, `work/RUN_ID/JOB_ID`) without a mkdir and an
    rmdir per job: on ext4 those two cost the worker ~0.2 ms of CPU a job (inode allocation
    that skips recently freed inodes, then the inode's eviction), two renames ~0.03 ms.

    An empty directory a job leaves is renamed into `<data dir>/.free-workdirs/` (POOL at
    most) and the next job's directory is one renamed out of it: for the job it is new
    (empty, the mode os.makedirs gives, the worker's, no extended attributes: one that is not is removed
    as before).  A run's folder (`work/RUN_ID`) is taken from and given back to the same pool.
    Without a pool (`start` not called, another file system), mkdir and rmdir.
    """

    POOL = 32

    def __init__(self) -> None:
        self.work: Optional[str] = None
        self.pool_dir: Optional[str] = None
        self.free: list[str] = []
        self._next = 0
        self.runs: dict[str, set[str]] = {}  # a run's folder: its jobs' directories made

    def start(self, data_dir: str) -> None:
        self.work = os.path.join(data_dir, "work") + os.sep
        self.pool_dir = os.path.join(data_dir, ".free-workdirs")
        shutil.rmtree(self.pool_dir, ignore_errors=True)  # an earlier worker's
        os.makedirs(self.pool_dir, 0o700, exist_ok=True)
        self.free = []
        self.runs = {}
        mask = os.umask(0o077)
        os.umask(mask)
        self.mode = 0o777 & ~mask  # what os.makedirs gives a job's directory

    def _pooled(self, workdir: str) -> bool:
        return self.work is not None and workdir.startswith(self.work)

    def make(self, workdir: str) -> None:
        """Make a job's directory (as os.makedirs(workdir, exist_ok=True))."""
        if self.free and self._pooled(workdir):
            spare = self.free.pop()
            try:
                try:
                    os.rename(spare, workdir)
                except FileNotFoundError:  # its run's folder is not there yet
                    self._take(os.path.dirname(workdir))
                    os.rename(spare, workdir)
                self._made(workdir)
                return
            except OSError:  # (workdir exists and is not empty: it is used as it is)
                self.free.append(spare)
        os.makedirs(workdir, exist_ok=True)
        self._made(workdir)

    def _made(self, workdir: str) -> None:
        parent = os.path.dirname(workdir)
        if self._pooled(parent):  # work/RUN_ID/JOB_ID: counted in its run's folder
            self.runs.setdefault(parent, set()).add(workdir)

    def _take(self, folder: str) -> None:
        """A run's folder: from the pool too (a run's jobs on a worker come and go, and its
        folder, emptied between two of them, was made and removed again ~0.2 ms each)."""
        if self.free:
            spare = self.free.pop()
            try:
                os.rename(spare, folder)
                return
            except OSError:
                self.free.append(spare)
        os.makedirs(folder, exist_ok=True)

    def _park(self, path: str) -> bool:
        """Into the pool, if there is room and `path` is as a new one would be."""
        if len(self.free) >= self.POOL or not self._reusable(path):
            return False
        self._next += 1
        spare = os.path.join(self.pool_dir, str(self._next))
        try:
            os.rename(path, spare)
        except OSError:
            return False
        self.free.append(spare)
        return True

    def release(self, workdir: str, job_id: str, in_use: bool, vacated: bool = False) -> None:
        """As release_workdir: gone if the job left it empty (here: into the pool, if
        `vacated`: the job's cgroup held no process any more, so none of its processes can
        still have its cwd there and write into the next job's directory), and so is its
        run's folder once no directory of the run's jobs is left in it."""
        if in_use:
            return
        if not (vacated and self._pooled(workdir) and self._park(workdir)):
            try:
                os.rmdir(workdir)
            except OSError:  # what the job left stays: and so does its run's folder
                pass
        if "/" not in job_id:
            return
        parent = os.path.dirname(workdir)
        made = self.runs.get(parent)
        if made is not None:
            made.discard(workdir)
            if made:  # other jobs' directories are in it: no look, no rmdir
                return
            del self.runs[parent]
        if not (vacated and self._pooled(parent) and self._park(parent)):
            try:
                os.rmdir(parent)
            except OSError:
                pass

    def _reusable(self, workdir: str) -> bool:
        try:
            st = os.stat(workdir, follow_symlinks=False)
            return (stat.S_ISDIR(st.st_mode) and stat.S_IMODE(st.st_mode) == self.mode
                    and st.st_uid == os.geteuid() and not os.listdir(workdir)
                    and not os.listxattr(workdir, follow_symlinks=False))
        except OSError:
            return False


workdirs = Workdirs()


def resolve_executable(command: list[str], env: dict, cwd: str) -> Optional[str]:
    """The path of the program a command runs, or None when there is none to run."""
    program = command[0]
    if "/" in program:
        path = program if os.path.isabs(program) else os.path.join(cwd, program)
        return path if os.access(path, os.X_OK) and not os.path.isdir(path) else None
    return shutil.which(program, path=env.get("PATH", os.defpath))


def spawn(reactor, proto: JobProcess, command: list[str], env: dict, cwd: str) -> Optional[str]:
    """Start `command`, contained (`containment`); return None, or why it could not start."""
    executable = resolve_executable(command, env, cwd)
    if executable is None:
        return f"command not found: {command[0]}"
    mark = secrets.token_hex(8)
    env = dict(env)
    env[MARK_VARIABLE] = mark
    try:
        contained = containment().new(mark)
    except OSError as e:  # (cgroup.max.descendants, say): this job is tracked instead
        Logger().warn("no cgroup for a job ({why}): its processes are tracked instead",
                      why=e.strerror or e)
        contained = Tracked(mark)
    proto.contained = contained
    try:
        SessionProcess(reactor, executable, list(command), env, cwd, proto, contained)
    except OSError as e:
        contained.release()
        return f"cannot start {command[0]}: {os.strerror(e.errno or errno.EIO)}"
    return None
