"""A data dir belongs to one process at a time: the master's, a worker's, `titan up`'s.

`DataDirLock.acquire` takes a POSIX record lock (fcntl) on `<dir>/LOCK` and writes the pid
and the kind of process into it; a second process on the same dir is refused with the pid
that holds it.  The kernel drops the lock when its process ends, however it ends (kill -9
included), so a lock is never stale; the pid in the file is only read to name the holder.
Record locks belong to a process, not to a file descriptor: they are not passed on to
children (jobs, spawned workers), and two services of one process (tests) do not exclude
each other.  `holder` asks, without taking anything, whether a dir is in use (`titan up`
checks before it touches a file).  The store keeps its own flock-based LOCK file (same
name, same first line); `holder` sees both kinds.
"""
from __future__ import annotations

import fcntl
import os
from typing import Optional

import attrs

from titan.errors import TitanError

LOCK_FILE = "LOCK"


class DataDirInUse(TitanError):
    def __init__(self, path: str, who: str, pid: Optional[int]) -> None:
        self.path, self.who, self.pid = path, who, pid
        super().__init__(f"{path} is in use by {who} (pid {pid if pid else '?'}); stop it "
                         f"first, or give this one another --data-dir")


def _read_holder(fd: int) -> tuple[Optional[int], str]:
    try:
        text = os.pread(fd, 200, 0).decode(errors="replace").split()
    except OSError:
        return None, "another process"
    pid = int(text[0]) if text and text[0].isdigit() else None
    return pid, (text[1] if len(text) > 1 else "another process")


@attrs.define
class DataDirLock:
    path: str
    fd: Optional[int] = None

    @classmethod
    def acquire(cls, path: str, who: str) -> "DataDirLock":
        """Lock `path` (made if missing) for this process, or raise DataDirInUse."""
        path = os.path.abspath(os.path.expanduser(path))
        os.makedirs(path, mode=0o700, exist_ok=True)
        fd = os.open(os.path.join(path, LOCK_FILE), os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            pid, other = _read_holder(fd)
            os.close(fd)
            raise DataDirInUse(path, other, pid) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()} {who}\n".encode(), 0)
        return cls(path, fd)

    def release(self) -> None:
        if self.fd is not None:
            os.close(self.fd)  # drops the lock; the file stays (its content is harmless)
            self.fd = None


def holder(path: str) -> Optional[DataDirInUse]:
    """Who holds `path` (a DataDirInUse to raise or print), or None if nobody does.

    Takes nothing: a missing dir or LOCK file is free, and no file is made.  Not for a dir
    this process holds: closing the probe would drop this process's own record lock."""
    path = os.path.abspath(os.path.expanduser(path))
    try:
        fd = os.open(os.path.join(path, LOCK_FILE), os.O_RDONLY)
    except OSError:
        return None
    try:
        # fcntl record locks (masters, workers, `titan up`): ask the kernel, take nothing.
        try:
            fcntl.lockf(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except OSError:
            pid, who = _read_holder(fd)
            return DataDirInUse(path, who, pid)
        # flock (a titan-store): a shared probe, released at once.
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except OSError:
            pid, who = _read_holder(fd)
            return DataDirInUse(path, "a titan-store" if who == "another process" else who,
                                pid)
        return None
    finally:
        os.close(fd)  # releases the probes


def write_file(data_dir: str, name: str, text: str) -> None:
    """`name` in `data_dir`, readable by its owner only, whole or not at all (a reader such as
    `titan up` polling for a port file never sees it half written)."""
    path = os.path.join(data_dir, name)
    fd = os.open(path + ".tmp", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.replace(path + ".tmp", path)
