"""How the worker starts a job's process (executor.spawn), with real children: what the job
gets (environment, stdin, descriptors, umask, directory) and what a start that fails says.

Each test runs twice: through the worker's own call of subprocess's C code (`_start`, on
CPython 3.11 to 3.13) and through subprocess.Popen (the fallback elsewhere).
"""
from __future__ import annotations

import os

from twisted.internet import defer, reactor
from twisted.trial.unittest import SkipTest, TestCase

from titan.worker import executor
from titan.worker.executor import JobProcess, spawn


class SpawnTests(TestCase):
    fast = True

    def setUp(self) -> None:
        if self.fast and executor._fork_exec is None:
            raise SkipTest("this Python has no fork_exec of the expected signature")
        if not self.fast:
            self.patch(executor, "_fork_exec", None)
        self.patch(executor, "job_umask", -1)

    def workdir(self) -> str:
        path = os.path.abspath(self.mktemp())
        os.makedirs(path)
        return path

    def start(self, command, env=None, cwd=None):
        """(why it could not start or None, Deferred of (exit code, stdout, stderr))."""
        done: defer.Deferred = defer.Deferred()
        out = {"out": b"", "err": b""}

        def output(stream, data):
            out[stream] += data

        proto = JobProcess(reactor, on_output=output,
                           on_exit=lambda code, why: done.callback((code, out["out"],
                                                                    out["err"])))
        env = dict(os.environ) if env is None else env
        problem = spawn(reactor, proto, command, env, cwd or self.workdir())
        return problem, done

    async def run_job(self, command, **kwargs):
        problem, done = self.start(command, **kwargs)
        self.assertIsNone(problem)
        return await done

    async def test_environment_as_given_and_as_changed(self):
        env = dict(os.environ, TITAN_SPAWN_TEST="first")
        env.pop("TITAN_SPAWN_GONE", None)
        script = 'echo "$TITAN_SPAWN_TEST:${TITAN_SPAWN_GONE-unset}"'
        code, out, _ = await self.run_job(["sh", "-c", script], env=env)
        self.assertEqual((code, out), (0, b"first:unset\n"))
        # The same names with other values, and one more: never an earlier job's entries.
        env.update(TITAN_SPAWN_TEST="second", TITAN_SPAWN_GONE="set")
        code, out, _ = await self.run_job(["sh", "-c", script], env=env)
        self.assertEqual((code, out), (0, b"second:set\n"))

    async def test_the_job_gets_its_mark_and_only_its_environment(self):
        code, out, _ = await self.run_job(["/usr/bin/env"], env={"ONLY": "this"})
        lines = sorted(out.decode().splitlines())
        self.assertEqual(code, 0)
        self.assertEqual(len(lines), 2)
        self.assertEqual(lines[0], "ONLY=this")
        self.assertTrue(lines[1].startswith(executor.MARK_VARIABLE + "="))

    async def test_stdin_is_at_its_end(self):
        code, out, _ = await self.run_job(["sh", "-c", "cat; echo done; readlink /proc/$$/fd/0"])
        self.assertEqual((code, out), (0, b"done\n/dev/null\n"))

    async def test_no_descriptor_of_the_worker_leaks_into_the_job(self):
        fd = os.open(os.devnull, os.O_RDONLY)
        self.addCleanup(os.close, fd)
        os.set_inheritable(fd, True)  # even one the worker marked inheritable
        code, out, _ = await self.run_job(["sh", "-c", "ls /proc/$$/fd"])
        self.assertEqual(code, 0)
        self.assertEqual(sorted(int(x) for x in out.split()), [0, 1, 2])

    async def test_umask_is_the_one_jobs_start_with(self):
        for mask, shown in ((0o022, b"0022\n"), (0o027, b"0027\n")):
            self.patch(executor, "job_umask", mask)
            code, out, _ = await self.run_job(["sh", "-c", "umask"])
            self.assertEqual((code, out), (0, shown))

    async def test_runs_in_its_directory(self):
        cwd = self.workdir()
        code, out, _ = await self.run_job(["pwd"], cwd=cwd)
        self.assertEqual((code, out), (0, os.path.realpath(cwd).encode() + b"\n"))

    def test_a_directory_that_is_gone_says_so(self):
        cwd = os.path.join(self.workdir(), "gone")
        problem, _ = self.start(["/bin/true"], cwd=cwd)
        self.assertEqual(problem, "cannot start /bin/true: No such file or directory")

    def test_a_program_that_cannot_be_executed_says_so(self):
        cwd = self.workdir()
        path = os.path.join(cwd, "garbage")
        with open(path, "wb") as f:
            f.write(b"\x7fELF not really")
        os.chmod(path, 0o755)
        problem, _ = self.start([path], cwd=cwd)
        self.assertEqual(problem, f"cannot start {path}: Exec format error")

    async def test_a_failed_start_leaves_no_child_and_no_descriptor(self):
        def children() -> set[int]:
            with open(f"/proc/{os.getpid()}/task/{os.getpid()}/children") as f:
                return {int(pid) for pid in f.read().split()}

        # Other tests run in this process too (trial -j2) and may have children of their
        # own (a class's cluster): only a new one counts -- apart from the job guard, which
        # the first job of this process starts.
        had = children()
        before = sorted(os.listdir("/proc/self/fd"))
        problem, _ = self.start(["/bin/true"], cwd="/nonexistent/titan-test")
        self.assertIsNotNone(problem)
        self.assertEqual(sorted(os.listdir("/proc/self/fd")), before)
        guard = executor.guard._proc.pid if executor.guard._proc is not None else None
        self.assertEqual(children() - had - {guard}, set())


class PopenSpawnTests(SpawnTests):
    fast = False
