"""One process per data dir (titan/datadir.py): held, refused with the holder's pid, free
again once the holder is gone."""
from __future__ import annotations

import os
import subprocess
import sys

from twisted.trial.unittest import SynchronousTestCase

from titan.datadir import DataDirInUse, DataDirLock, holder

HOLD = """\
import fcntl, os, sys
from titan.datadir import DataDirLock
if sys.argv[2] == "flock":  # as a titan-store holds its dir
    fd = os.open(os.path.join(sys.argv[1], "LOCK"), os.O_RDWR | os.O_CREAT, 0o600)
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    os.write(fd, b"%d\\n" % os.getpid())
else:
    DataDirLock.acquire(sys.argv[1], sys.argv[2])
print("held", flush=True)
sys.stdin.read()
"""


class DataDirLockTests(SynchronousTestCase):
    def hold(self, path: str, who: str) -> subprocess.Popen:
        """Another process holding `path` until its stdin closes."""
        proc = subprocess.Popen([sys.executable, "-c", HOLD, path, who],
                                stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        self.addCleanup(lambda: proc.poll() is None and (proc.kill(), proc.wait()))
        self.assertEqual(proc.stdout.readline(), b"held\n")  # blocks until it holds it
        return proc

    def test_a_free_dir_is_free_and_asking_makes_nothing(self):
        path = self.mktemp()
        self.assertIsNone(holder(path))
        self.assertFalse(os.path.exists(path))
        lock = DataDirLock.acquire(path, "titan-master")
        with open(os.path.join(path, "LOCK")) as f:
            self.assertEqual(f.read(), f"{os.getpid()} titan-master\n")
        lock.release()
        self.assertIsNone(holder(path))

    def test_held_by_another_process_names_its_pid_until_it_ends(self):
        path = os.path.abspath(self.mktemp())
        other = self.hold(path, "titan-worker")
        seen = holder(path)
        self.assertEqual((seen.pid, seen.who), (other.pid, "titan-worker"))
        with self.assertRaises(DataDirInUse) as e:
            DataDirLock.acquire(path, "titan-worker")
        self.assertEqual(str(e.exception),
                         f"{path} is in use by titan-worker (pid {other.pid}); stop it first, "
                         f"or give this one another --data-dir")
        other.stdin.close()
        other.wait(10)  # the kernel drops its lock with it, however it ends
        self.assertIsNone(holder(path))
        DataDirLock.acquire(path, "titan-worker").release()

    def test_a_stores_flock_is_seen(self):
        path = os.path.abspath(self.mktemp())
        os.makedirs(path)
        other = self.hold(path, "flock")
        seen = holder(path)
        self.assertEqual((seen.pid, seen.who), (other.pid, "a titan-store"))
