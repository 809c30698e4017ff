"""The executor with real child processes: process groups, timeouts, output, no orphans."""
from __future__ import annotations

import os
import sys
import time

from twisted.internet import defer, reactor
from twisted.trial.unittest import SkipTest, TestCase

from titan.worker import executor
from titan.worker.executor import JobProcess, resolve_executable, spawn


def alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(") ", 1)[1].split()[0] != "Z"
    except OSError:
        return False


class ExecutorTests(TestCase):
    def run_job(self, command, timeout=None, cwd=None):
        """Start `command`; returns (JobProcess, Deferred of (exit_code, reason, output))."""
        done: defer.Deferred = defer.Deferred()
        output = self.output = []
        proto = JobProcess(reactor, on_output=lambda s, d: output.append((s, d)),
                           on_exit=lambda code, why: done.callback((code, why, output)),
                           timeout=timeout, kill_grace=1.0)
        problem = spawn(reactor, proto, command, dict(os.environ), cwd or self.mktemp_dir())
        self.assertIsNone(problem)
        return proto, done

    def mktemp_dir(self) -> str:
        path = os.path.abspath(self.mktemp())
        os.makedirs(path)
        return path

    async def test_output_and_exit_code(self):
        _, done = self.run_job(["sh", "-c", "echo out; echo err >&2; exit 4"])
        code, why, output = await done
        self.assertEqual((code, why), (4, None))
        self.assertEqual(b"".join(d for s, d in output if s == "out"), b"out\n")
        self.assertEqual(b"".join(d for s, d in output if s == "err"), b"err\n")

    async def test_runs_in_its_directory_and_own_session(self):
        cwd = self.mktemp_dir()
        proto, done = self.run_job(["sh", "-c", "pwd; ps -o sid= -p $$; ps -o pgid= -p $$"],
                                   cwd=cwd)
        code, _, output = await done
        lines = b"".join(d for _, d in output).decode().split()
        self.assertEqual(code, 0)
        self.assertEqual(lines[0], os.path.realpath(cwd))
        self.assertEqual(int(lines[1]), proto.pid)  # session leader
        self.assertEqual(int(lines[2]), proto.pid)  # and group leader
        self.assertNotEqual(os.getsid(0), proto.pid)

    async def test_timeout_kills_the_whole_group(self):
        pidfile = os.path.join(self.mktemp_dir(), "child.pid")
        start = time.monotonic()
        _, done = self.run_job(["sh", "-c", f"sleep 60 & echo $! > {pidfile}; sleep 60"],
                               timeout=0.5)
        code, why, _ = await done
        self.assertLess(time.monotonic() - start, 5)
        self.assertEqual((code, why), (None, "timeout after 0.5s"))
        with open(pidfile) as f:
            self.assertFalse(alive(int(f.read())))

    async def test_term_is_escalated_to_kill(self):
        proto, done = self.run_job(["sh", "-c", "trap '' TERM; echo ready; sleep 60"])
        deadline = time.monotonic() + 10
        while b"ready" not in b"".join(d for _, d in self.output):  # the trap is set
            self.assertLess(time.monotonic(), deadline, "the job never printed ready")
            await _sleep(0.02)
        proto.kill("cancelled")
        code, why, _ = await done
        self.assertEqual(why, "cancelled")
        self.assertIsNone(code)

    async def test_leftovers_die_when_the_job_exits(self):
        pidfile = os.path.join(self.mktemp_dir(), "bg.pid")
        _, done = self.run_job(["sh", "-c", f"sleep 60 > /dev/null 2>&1 & echo $! > {pidfile}"])
        code, _, _ = await done
        self.assertEqual(code, 0)
        with open(pidfile) as f:
            pid = int(f.read())
        for _ in range(50):
            if not alive(pid):
                break
            await _sleep(0.02)
        self.assertFalse(alive(pid))

    async def test_killed_by_a_signal_says_so(self):
        _, done = self.run_job(["sh", "-c", "kill -9 $$"])
        code, why, _ = await done
        self.assertEqual((code, why), (None, "killed by signal SIGKILL"))

    def test_command_not_found(self):
        proto = JobProcess(reactor, lambda *a: None, lambda *a: None)
        self.assertEqual(spawn(reactor, proto, ["no-such-program-xyz"], dict(os.environ), "/"),
                         "command not found: no-such-program-xyz")
        self.assertIsNone(resolve_executable(["./missing.sh"], {}, "/tmp"))
        self.assertEqual(resolve_executable(["sh"], {"PATH": "/bin:/usr/bin"}, "/"), "/bin/sh")


# A job that double-forks and calls setsid(): its grandchild leaves the job's session and
# process group, closes its output and lives on; the job itself exits 0 at once.
ESCAPE = """\
import os, sys, time
if os.fork() == 0:
    os.setsid()
    pid = os.fork()
    if pid:
        with open(sys.argv[1], "w") as f:
            f.write(str(pid))
        os._exit(0)
    os.closerange(0, 3)
    if sys.argv[3:] == ["unmarked"]:
        os.environ.pop("TITAN_JOB_MARK")
    os.execv("/bin/sleep", ["sleep", "60"])
os.wait()
time.sleep(float(sys.argv[2]))
"""


class ContainmentTests(ExecutorTests):
    """A job's processes end with it even when they leave its session (issue 15): by its
    cgroup where this machine lets the worker make one, else by tracking."""

    mode = "tracking"

    def setUp(self):
        saved = executor._containment
        self.addCleanup(setattr, executor, "_containment", saved)
        executor._containment = None
        try:
            executor.containment(self.mode)
        except OSError as e:
            raise SkipTest(f"no cgroup for jobs on this machine: {e}")

    async def wait_gone(self, pid: int) -> bool:
        deadline = time.monotonic() + 10
        while alive(pid) and time.monotonic() < deadline:
            await _sleep(0.02)
        return not alive(pid)

    async def test_a_double_forked_setsid_process_is_killed_and_logged(self):
        pidfile = os.path.join(self.mktemp_dir(), "escaped.pid")
        proto, done = self.run_job([sys.executable, "-c", ESCAPE, pidfile, "0"])
        code, why, output = await done
        self.assertEqual((code, why), (0, None))
        with open(pidfile) as f:
            pid = int(f.read())
        self.assertEqual(proto.contained.kind, self.mode)
        self.assertTrue(await self.wait_gone(pid), f"pid {pid} outlived its job")
        err = b"".join(d for s, d in output if s == "err").decode()
        self.assertIn(f"[titan: killed 1 process the job left running (pid {pid})", err)

    async def test_a_timeout_kills_what_left_the_session(self):
        pidfile = os.path.join(self.mktemp_dir(), "escaped.pid")
        _, done = self.run_job([sys.executable, "-c", ESCAPE, pidfile, "60"], timeout=1.0)
        code, why, _ = await done
        self.assertEqual((code, why), (None, "timeout after 1s"))
        with open(pidfile) as f:
            self.assertTrue(await self.wait_gone(int(f.read())))

    async def test_a_job_that_leaves_nothing_says_nothing(self):
        _, done = self.run_job(["sh", "-c", "sleep 0.1 & wait"])
        code, _, output = await done
        self.assertEqual((code, output), (0, []))


class CgroupContainmentTests(ContainmentTests):
    mode = "cgroup"

    async def test_a_process_that_dropped_the_mark_is_killed_too(self):
        pidfile = os.path.join(self.mktemp_dir(), "escaped.pid")
        _, done = self.run_job([sys.executable, "-c", ESCAPE, pidfile, "0", "unmarked"])
        code, _, output = await done
        with open(pidfile) as f:
            pid = int(f.read())
        self.assertTrue(await self.wait_gone(pid))
        self.assertIn(b"[titan: killed 1 process", b"".join(d for _, d in output))


class GuardTests(TestCase):
    """The guard reads its input in naps (executor.GUARD_NAP), not a line at a time: what a
    worker wrote just before it died is still acted on, in the order written."""

    def test_a_dead_workers_last_lines_are_all_acted_on(self):
        import subprocess
        sleepers = [subprocess.Popen(["sleep", "60"], start_new_session=True)
                    for _ in range(3)]
        for p in sleepers:
            self.addCleanup(p.wait)
            self.addCleanup(p.kill)
        guard = executor.GroupGuard()
        guard.started()
        first, released, last = (p.pid for p in sleepers)
        guard.watch(first, b"mA")
        guard.watch(released, b"mB")
        time.sleep(executor.GUARD_NAP / 2)  # the guard now naps with lines to come
        guard.release(released, b"mB")
        guard.watch(last, b"mC")  # written a moment before the "worker" is gone
        proc = guard._proc
        proc.stdin.close()  # as a kill -9 of the worker closes it
        self.assertEqual(proc.wait(10), 0)
        for p in (sleepers[0], sleepers[2]):
            self.assertEqual(p.wait(5), -9)
        self.assertIsNone(sleepers[1].poll(), "a released group was killed")

    def test_a_dead_worker_wakes_the_guard_from_its_nap(self):
        """The nap does not delay the kill: the end of the pipe wakes the guard at once (a
        job that went on for a nap after its worker died could finish what the master
        will run again)."""
        import subprocess
        self.patch(executor, "GUARD_NAP", 30.0)
        sleeper = subprocess.Popen(["sleep", "60"], start_new_session=True)
        self.addCleanup(sleeper.wait)
        self.addCleanup(sleeper.kill)
        guard = executor.GroupGuard()
        guard.started()
        guard.watch(sleeper.pid, b"mD")
        guard.watch(os.getpid() + 10 ** 7, b"mE")  # a second line: the guard now naps
        time.sleep(0.2)
        guard._proc.stdin.close()  # the worker is gone
        start = time.monotonic()
        self.assertEqual(sleeper.wait(5), -9)
        self.assertLess(time.monotonic() - start, 5, "the guard slept through the hangup")


def _sleep(seconds: float) -> defer.Deferred:
    d: defer.Deferred = defer.Deferred()
    reactor.callLater(seconds, d.callback, None)
    return d
