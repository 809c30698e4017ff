"""Jobs' own directories handed out from a pool of empty ones (executor.Workdirs): what a job
finds is always an empty directory of its own, and what a job leaves behind stays where
the docs say (`work/JOB_ID`, `work/RUN_ID/JOB_ID`)."""
from __future__ import annotations

import errno
import os

from twisted.internet import defer, reactor
from twisted.trial.unittest import SkipTest, SynchronousTestCase, TestCase

from titan.worker import executor
from titan.worker.executor import JobProcess, Workdirs, spawn


class WorkdirsTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.data = os.path.abspath(self.mktemp())
        os.makedirs(os.path.join(self.data, "work"))
        self.dirs = Workdirs()
        self.dirs.start(self.data)

    def path(self, job_id: str) -> str:
        return os.path.join(self.data, "work", job_id)

    def cycle(self, job_id: str, vacated: bool = True) -> str:
        """Make a job's directory and release it as a job that wrote nothing."""
        path = self.path(job_id)
        self.dirs.make(path)
        self.dirs.release(path, job_id, in_use=False, vacated=vacated)
        return path

    def test_an_empty_directory_goes_to_the_pool_and_comes_back_empty(self):
        path = self.cycle("j1")
        self.assertFalse(os.path.exists(path))
        self.assertEqual(len(self.dirs.free), 1)
        inode = os.stat(self.dirs.free[0]).st_ino
        nxt = self.path("j2")
        self.dirs.make(nxt)
        self.assertEqual(os.stat(nxt).st_ino, inode)  # renamed, not made
        self.assertEqual(os.listdir(nxt), [])
        self.assertEqual(os.stat(nxt).st_mode & 0o7777, self.dirs.mode)
        self.assertEqual(self.dirs.free, [])

    def test_what_a_job_wrote_stays_where_it_was(self):
        path = self.path("j1")
        self.dirs.make(path)
        with open(os.path.join(path, "out.txt"), "w") as f:
            f.write("result")
        self.dirs.release(path, "j1", in_use=False, vacated=True)
        with open(os.path.join(path, "out.txt")) as f:
            self.assertEqual(f.read(), "result")
        self.assertEqual(self.dirs.free, [])
        self.cycle("j2")  # and the next job never sees it
        self.dirs.make(self.path("j3"))
        self.assertEqual(os.listdir(self.path("j3")), [])

    def test_not_vacated_means_removed_not_reused(self):
        path = self.cycle("j1", vacated=False)
        self.assertFalse(os.path.exists(path))
        self.assertEqual(self.dirs.free, [])
        self.assertEqual(os.listdir(self.dirs.pool_dir), [])

    def test_a_directory_whose_mode_changed_is_not_reused(self):
        path = self.path("j1")
        self.dirs.make(path)
        os.chmod(path, 0o777 if self.dirs.mode != 0o777 else 0o700)  # chmod go+rwx .
        self.dirs.release(path, "j1", in_use=False, vacated=True)
        self.assertFalse(os.path.exists(path))
        self.assertEqual(self.dirs.free, [])

    def test_a_directory_with_extended_attributes_is_not_reused(self):
        path = self.path("j1")
        self.dirs.make(path)
        try:
            os.setxattr(path, "user.titan-test", b"1")
        except OSError as e:
            if e.errno in (errno.ENOTSUP, errno.EOPNOTSUPP, errno.EPERM):
                raise SkipTest(f"no user xattrs here: {e}")
            raise
        self.dirs.release(path, "j1", in_use=False, vacated=True)
        self.assertFalse(os.path.exists(path))
        self.assertEqual(self.dirs.free, [])

    def test_a_run_folder_is_made_and_removed_around_its_jobs(self):
        self.cycle("warm")
        path = self.path("r-1/a")
        self.dirs.make(path)
        self.assertTrue(os.path.isdir(path))
        other = self.path("r-1/b")
        self.dirs.make(other)
        self.dirs.release(path, "r-1/a", in_use=False, vacated=True)
        self.assertTrue(os.path.isdir(os.path.dirname(path)))  # b is still there
        self.dirs.release(other, "r-1/b", in_use=False, vacated=True)
        self.assertFalse(os.path.exists(os.path.dirname(path)))
        self.assertEqual(len(self.dirs.free), 3)  # a, b and the run's folder
        self.assertEqual(os.listdir(os.path.join(self.data, "work")), [])

    def test_a_run_folder_emptied_between_its_jobs_comes_back_from_the_pool(self):
        for job in ("warm-1", "warm-2"):
            self.cycle(job)
        self.cycle("r-1/a")  # the run's folder is made, then pooled with a's
        pooled = {os.stat(p).st_ino for p in self.dirs.free}
        path = self.path("r-1/b")
        self.dirs.make(path)  # the run's next job on this worker, a moment later
        self.assertIn(os.stat(os.path.dirname(path)).st_ino, pooled)  # renamed, not made
        self.assertEqual(os.listdir(os.path.dirname(path)), ["b"])
        self.assertEqual(os.stat(os.path.dirname(path)).st_mode & 0o7777, self.dirs.mode)
        self.dirs.release(path, "r-1/b", in_use=False, vacated=True)
        self.assertEqual(os.listdir(os.path.join(self.data, "work")), [])

    def test_a_run_folder_with_what_a_job_left_stays(self):
        self.cycle("warm")
        path = self.path("r-1/a")
        self.dirs.make(path)
        with open(os.path.join(os.path.dirname(path), "shared.txt"), "w") as f:
            f.write("x")  # ../shared.txt from the job's directory
        self.dirs.release(path, "r-1/a", in_use=False, vacated=True)
        self.assertEqual(os.listdir(os.path.dirname(path)), ["shared.txt"])
        self.dirs.make(self.path("r-2/a"))  # and no other run is given it
        self.assertEqual(os.listdir(os.path.join(self.data, "work", "r-2")), ["a"])

    def test_an_existing_directory_is_used_as_it_is(self):
        self.cycle("warm")
        path = self.path("j1")
        os.makedirs(path)
        with open(os.path.join(path, "kept"), "w") as f:
            f.write("x")
        self.dirs.make(path)
        self.assertEqual(os.listdir(path), ["kept"])
        self.assertEqual(len(self.dirs.free), 1)

    def test_in_use_and_shared_directories_are_left_to_release_workdir(self):
        self.cycle("warm")
        shared = os.path.join(self.data, "shared", "r-1")
        os.makedirs(shared)
        self.dirs.release(shared, "r-1/a", in_use=False, vacated=True)
        self.assertFalse(os.path.exists(shared))  # removed, not pooled
        path = self.path("j1")
        self.dirs.make(path)
        self.dirs.release(path, "j1", in_use=True, vacated=True)
        self.assertTrue(os.path.isdir(path))
        self.assertEqual(len(self.dirs.free), 0)

    def test_the_pool_is_bounded(self):
        paths = [self.path(f"j{i}") for i in range(Workdirs.POOL + 3)]
        for p in paths:
            self.dirs.make(p)
        for i, p in enumerate(paths):
            self.dirs.release(p, f"j{i}", in_use=False, vacated=True)
        self.assertEqual(len(self.dirs.free), Workdirs.POOL)
        self.assertEqual(len(os.listdir(self.dirs.pool_dir)), Workdirs.POOL)
        self.assertEqual(os.listdir(os.path.join(self.data, "work")), [])

    def test_a_new_worker_starts_with_an_empty_pool(self):
        self.cycle("j1")
        again = Workdirs()
        again.start(self.data)
        self.assertEqual(again.free, [])
        self.assertEqual(os.listdir(again.pool_dir), [])

    def test_without_start_it_is_mkdir_and_rmdir(self):
        dirs = Workdirs()
        path = self.path("j1")
        dirs.make(path)
        self.assertTrue(os.path.isdir(path))
        dirs.release(path, "j1", in_use=False, vacated=True)
        self.assertFalse(os.path.exists(path))
        self.assertEqual(dirs.free, [])


class VacatedTests(TestCase):
    """A job's containment says whether its processes are all gone when it ends."""

    async def test_a_finished_job_in_a_cgroup_is_vacated(self):
        if executor.containment().kind != "cgroup":
            raise SkipTest("no cgroup for jobs here")
        done: defer.Deferred = defer.Deferred()
        proto = JobProcess(reactor, on_output=lambda s, d: None,
                           on_exit=lambda code, why: done.callback(code))
        cwd = os.path.abspath(self.mktemp())
        os.makedirs(cwd)
        self.assertIsNone(spawn(reactor, proto, ["sh", "-c", "sleep 0.1; exit 0"],
                                dict(os.environ), cwd))
        self.assertFalse(proto.contained.vacated)
        self.assertEqual(await done, 0)
        self.assertTrue(proto.contained.vacated)

    async def test_a_cgroup_handed_back_is_no_longer_the_ended_jobs(self):
        """The next job may get the same cgroup: the ended job's kill must not reach it."""
        if executor.containment().kind != "cgroup":
            raise SkipTest("no cgroup for jobs here")
        cwd = os.path.abspath(self.mktemp())
        os.makedirs(cwd)
        ended: defer.Deferred = defer.Deferred()
        first = JobProcess(reactor, on_output=lambda s, d: None,
                           on_exit=lambda code, why: ended.callback(code))
        self.assertIsNone(spawn(reactor, first, ["/bin/true"], dict(os.environ), cwd))
        self.assertEqual(await ended, 0)
        done: defer.Deferred = defer.Deferred()
        second = JobProcess(reactor, on_output=lambda s, d: None,
                            on_exit=lambda code, why: done.callback((code, why)))
        self.assertIsNone(spawn(reactor, second, ["sleep", "30"], dict(os.environ), cwd))
        self.addCleanup(lambda: second.ended or second.kill("test over"))
        if second.contained.path != first.contained.path:
            raise SkipTest("the pool handed out another cgroup")
        self.assertEqual(first.contained.members(), [])
        self.assertEqual(first.contained.kill_all(), [])
        first.contained.signal(15)
        self.assertEqual(second.contained.members(), [second.pid])
        second.kill("test over")
        self.assertEqual(await done, (None, "test over"))

    def test_tracked_processes_never_count_as_vacated(self):
        self.assertFalse(executor.Tracked("mark").vacated)
