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
        self._valid = False  # known to be UTF-8 (by length())

    def _raw(self) -> Iterator[bytes]:
        if self.f is None:
            return
        self.f.seek(self.start)
        left = self.end - self.start
        while left > 0:
            raw = self.f.read(min(STREAM_CHUNK, left))
            if not raw:
                break  # (cannot shrink: logs are only appended to; but be safe)
            left -= len(raw)
            yield raw

    def _pieces(self) -> Iterator[bytes]:
        if self._valid:  # UTF-8 already (the usual case): the bytes as they are
            yield from self._raw()
            return
        decoder = codecs.getincrementaldecoder("utf-8")("replace")
        for raw in self._raw():
            yield decoder.decode(raw).encode("utf-8")
        tail = decoder.decode(b"", final=True)
        if tail:
            yield tail.encode("utf-8")

    def length(self) -> int:
        if self._length is None:
            # A first pass: valid UTF-8 keeps its length; otherwise count the text with
            # its replacements.
            checker = codecs.getincrementaldecoder("utf-8")("strict")
            size = 0
            try:
                for raw in self._raw():
                    checker.decode(raw)
                    size += len(raw)
                checker.decode(b"", final=True)
                self._valid = True
            except UnicodeDecodeError:
                self._valid = False
                size = sum(len(p) for p in self._pieces())
            self._length = len(self.prefix) + size
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
    """Files 0600 and folders 0700 whatever the umask (docs/security.md).  Each attempt of a
    job keeps at most `max_bytes` of output: past that, a line says the rest is cut, and
    once the attempt is over (`attempt_over`), how much was."""

    def __init__(self, directory: str, max_bytes: Optional[int] = None) -> None:
        self.directory = directory
        self.max_bytes = max_bytes
        os.makedirs(directory, mode=0o700, exist_ok=True)
        os.chmod(directory, 0o700)
        self._sizes: dict[str, int] = {}
        self._waiters: dict[str, list[defer.Deferred]] = {}
        self._attempts: dict[str, list] = {}  # job id -> [attempt, bytes kept, bytes cut]

    def _path(self, job_id: str) -> str:
        # A DAG job's id is RUN/JOB: one folder per run.
        return os.path.join(self.directory, f"{job_id}.log")

    def append(self, job_id: str, data: bytes, attempt: int = 0) -> int:
        """Keep `data` (up to the attempt's cap); returns how many bytes went to disk."""
        if not data:
            return 0
        if self.max_bytes is not None:
            data = self._capped(job_id, data, attempt)
            if not data:
                return 0
        return self._write(job_id, data)

    def _capped(self, job_id: str, data: bytes, attempt: int) -> bytes:
        state = self._attempts.get(job_id)
        if state is None or state[0] != attempt:
            if state is not None and state[2]:
                self._write(job_id, self._tally(state))
            state = self._attempts[job_id] = [attempt, 0, 0]
        room = self.max_bytes - state[1]
        if len(data) <= room:
            state[1] += len(data)
            return data
        if room <= 0:
            state[2] += len(data)
            return b""
        state[1] = self.max_bytes
        state[2] += len(data) - room
        return data[:room] + (
            f"\n[titan: attempt {attempt} passed the log cap of {_megabytes(self.max_bytes)}"
            f" (master.log_max_bytes): the rest of its output is cut]\n").encode()

    @staticmethod
    def _tally(state: list) -> bytes:
        return (f"[titan: {state[2]} bytes of attempt {state[0]}'s output were cut "
                f"(over master.log_max_bytes)]\n").encode()

    def attempt_over(self, job_id: str) -> int:
        """The job ended: say how much of its last attempt was cut, if any; returns the
        bytes written."""
        state = self._attempts.pop(job_id, None)
        if state is not None and state[2]:
            return self._write(job_id, self._tally(state))
        return 0

    def _write(self, job_id: str, data: bytes) -> int:
        before = self.size(job_id)
        path = self._path(job_id)
        if before == 0 and "/" in job_id:
            os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
        finally:
            os.close(fd)
        self._sizes[job_id] = before + len(data)
        self.wake(job_id)
        return len(data)

    def sizes(self):
        """(job id, bytes) of every log on disk, for a master that restarts."""
        for root, _, files in os.walk(self.directory):
            for name in files:
                if name.endswith(".log"):
                    path = os.path.join(root, name)
                    try:
                        size = os.path.getsize(path)
                    except OSError:
                        continue
                    yield os.path.relpath(path, self.directory)[:-4], size

    def remove(self, job_id: str) -> None:
        """Forget a job's output (the master forgot the job); a run's folder goes with its
        last log."""
        self._sizes.pop(job_id, None)
        self._attempts.pop(job_id, None)
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
