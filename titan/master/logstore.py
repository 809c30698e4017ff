"""Job output kept by the master: one append-only file per job under the data dir."""
from __future__ import annotations

import os
from typing import Optional

from twisted.internet import defer

READ_LIMIT = 1024 * 1024


class LogStore:
    def __init__(self, directory: str) -> None:
        self.directory = directory
        os.makedirs(directory, exist_ok=True)
        self._sizes: dict[str, int] = {}
        self._waiters: dict[str, list[defer.Deferred]] = {}

    def _path(self, job_id: str) -> str:
        # A DAG job's id is RUN/JOB: one folder per run.
        return os.path.join(self.directory, f"{job_id}.log")

    def append(self, job_id: str, data: bytes) -> None:
        if not data:
            return
        before = self.size(job_id)
        path = self._path(job_id)
        if before == 0 and "/" in job_id:
            os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "ab") as f:
            f.write(data)
        self._sizes[job_id] = before + len(data)
        self.wake(job_id)

    def remove(self, job_id: str) -> None:
        """Forget a job's output (the master forgot the job); a run's folder goes with its
        last log."""
        self._sizes.pop(job_id, None)
        path = self._path(job_id)
        try:
            os.unlink(path)
        except OSError:
            return
        if "/" in job_id:
            try:
                os.rmdir(os.path.dirname(path))
            except OSError:
                pass  # not empty yet

    def size(self, job_id: str) -> int:
        if job_id not in self._sizes:
            try:
                self._sizes[job_id] = os.path.getsize(self._path(job_id))
            except OSError:
                return 0
        return self._sizes[job_id]

    def read(self, job_id: str, offset: int = 0, limit: int = READ_LIMIT) -> bytes:
        if offset >= self.size(job_id):
            return b""
        with open(self._path(job_id), "rb") as f:
            f.seek(offset)
            return f.read(limit)

    def changed(self, job_id: str) -> defer.Deferred:
        """Fires the next time `job_id` gets output (or ends: see `wake`)."""
        d: defer.Deferred = defer.Deferred()
        self._waiters.setdefault(job_id, []).append(d)
        return d

    def forget_waiter(self, job_id: str, d: defer.Deferred) -> None:
        waiting = self._waiters.get(job_id)
        if waiting and d in waiting:
            waiting.remove(d)
            if not waiting:
                del self._waiters[job_id]

    def wake(self, job_id: str) -> None:
        for d in self._waiters.pop(job_id, ()):
            d.callback(None)

    def waiting(self, job_id: Optional[str] = None) -> int:
        if job_id is None:
            return sum(len(v) for v in self._waiters.values())
        return len(self._waiters.get(job_id, ()))
