"""Job output kept by the master: one append-only file per job under the data dir."""
from __future__ import annotations

import codecs
import os
from typing import Iterator, Optional

from twisted.internet import defer

READ_LIMIT = 1024 * 1024
STREAM_CHUNK = 64 * 1024  # what a streamed read holds at a time


class TextSlice:
    """Bytes [start, end) of a job's log as UTF-8 text (bytes that are not UTF-8 replaced
    by U+FFFD), read from a file already open, a chunk at a time: `length()` counts the
    text's bytes in a first pass (a frame's header goes first), `chunks()` gives them.
    Nothing larger than a chunk is held, however long the log."""

    def __init__(self, f, start: int, end: int, prefix: bytes = b"") -> None:
        self.f = f
        self.start = start
        self.end = end
        self.prefix = prefix
        self._length: Optional[int] = None

    def _pieces(self) -> Iterator[bytes]:
        if self.f is None:
            return
        self.f.seek(self.start)
        decoder = codecs.getincrementaldecoder("utf-8")("replace")
        left = self.end - self.start
        while left > 0:
            raw = self.f.read(min(STREAM_CHUNK, left))
            if not raw:
                break  # (cannot shrink: logs are only appended to; but be safe)
            left -= len(raw)
            yield decoder.decode(raw, final=left <= 0).encode("utf-8")
        tail = decoder.decode(b"", final=True)
        if tail:
            yield tail.encode("utf-8")

    def length(self) -> int:
        if self._length is None:
            self._length = len(self.prefix) + sum(len(p) for p in self._pieces())
        return self._length

    def chunks(self) -> Iterator[bytes]:
        try:
            if self.prefix:
                yield self.prefix
            yield from self._pieces()
        finally:
            self.close()

    def text(self) -> str:
        """The whole slice at once (for a caller that wants it in memory)."""
        return b"".join(self.chunks()).decode("utf-8")

    def close(self) -> None:
        if self.f is not None:
            self.f.close()
            self.f = None


def _megabytes(n: int) -> str:
    return f"{n / 1048576:.3g} MB" if n >= 1048576 else f"{n} bytes"


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

    def text_slice(self, job_id: str, start: int, end: int, prefix: bytes = b"") -> TextSlice:
        """Bytes [start, end) of the log, to stream as text (TextSlice); the file stays
        open until it is read or closed, so a log forgotten meanwhile still reads."""
        try:
            f = open(self._path(job_id), "rb") if end > start else None
        except OSError:
            f = None
        return TextSlice(f, start, end if f is not None else start, prefix)

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
