"""The append-only file: Titan's embedded event log.

Files in the data dir:
  CURRENT          the generation g in force
  snapshot.<g>     the state that stands for every record before events.<g>.aof
  events.<g>.aof   records since; a compaction in progress may have started events.<g+1>.aof,
                   which then simply continues the chain

Each file starts with an 8-byte magic, then frames: `length (u32) | crc32 (u32) | payload`.
A frame holds one record, or -- when the top bit of `length` is set -- a batch: a msgpack
array of records, all that one write() put on disk (what a turn of the reactor appended, up
to BATCH_BYTES).  Batches make recovery cheap: one checksum and one msgpack call per write
instead of per record.  They lose nothing a single-record layout would keep: a crash cuts
a write short either way, and a write is acknowledged (`always`) only after its fsync.
Recovery truncates a torn tail (a crash mid-write) with a warning that says how many bytes,
and refuses to start on damage anywhere else (CorruptLog, pointing at `titan aof check`).

A write that fails or is cut short (a full disk, a log made read-only) never leaves a torn
frame behind: the file is cut back to the end of its last good frame and the records stay
pending, unacknowledged, while `unavailable` says why; a probe retries them with backoff and
the waiters fire once they are stored.  Under `always` a failed fsync does the same with
what it covered (Linux may drop the pages of a failed fsync: they are written again).
"""
from __future__ import annotations

import errno
import os
import struct
import time
import zlib
from typing import Callable, Optional

import msgpack
from twisted.internet import defer, threads
from twisted.internet.task import LoopingCall
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from titan.interfaces import CorruptLog, IPersistence, StorageUnavailable
from titan.persistence.availability import Availability, why

LOG_MAGIC = b"TITANAOF"
SNAP_MAGIC = b"TITANSNP"
RECORD = struct.Struct("!II")
POLICIES = ("always", "everysec", "no")
BATCH = 0x80000000  # set in a frame's length: the payload is a batch of records
MAX_RECORD = BATCH - 1
BATCH_BYTES = 1 << 20  # a batch frame holds about this much at most


class FileOps:
    """The system calls the log's writes go through (a test swaps in one that fails)."""
    write = staticmethod(os.write)
    fsync = staticmethod(os.fsync)
    truncate = staticmethod(os.ftruncate)


def _fsync_dir(path: str) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def frame(record: bytes) -> bytes:
    return RECORD.pack(len(record), zlib.crc32(record)) + record


def batch_frame(records: list[bytes]) -> bytes:
    payload = msgpack.packb(records, use_bin_type=True)
    return RECORD.pack(len(payload) | BATCH, zlib.crc32(payload)) + payload


def _frame_of(records: list[bytes]) -> bytes:
    return frame(records[0]) if len(records) == 1 else batch_frame(records)


def frames(records: list[bytes], size: int) -> bytes:
    """`records` (`size` bytes in all) as they go on disk: one frame for a lone record,
    else batches of up to BATCH_BYTES."""
    if size <= BATCH_BYTES:
        return _frame_of(records)
    out, group, grouped = [], [], 0
    for record in records:
        if group and grouped + len(record) > BATCH_BYTES:
            out.append(_frame_of(group))
            group, grouped = [], 0
        group.append(record)
        grouped += len(record)
    out.append(_frame_of(group))
    return b"".join(out)


def _batch(payload: bytes) -> Optional[list]:
    """The records of a batch frame's payload, or None if it is not one."""
    try:
        items = msgpack.unpackb(payload, use_list=True)
    except Exception:
        return None
    # Checked at C speed (set of types, then `in`): recovery reads every record through here.
    if type(items) is not list or not items or set(map(type, items)) != _BYTES_ONLY \
            or b"" in items:
        return None
    return items


_BYTES_ONLY = {bytes}


class LogFile:
    """Reads one log file: records, and where (if anywhere) it stops being good."""

    def __init__(self, path: str) -> None:
        self.path = path
        with open(path, "rb") as f:
            self.data = f.read()
        self.good_end = 0  # offset after the last good record
        self.problem: Optional[str] = None

    def records(self) -> list[bytes]:
        """Every good record, in order; `problem` and `good_end` say where the good part
        ends (None and the file's size when all of it is good)."""
        data = self.data
        if len(data) < len(LOG_MAGIC):
            if LOG_MAGIC.startswith(data):
                self.problem = "torn" if data else None
                return []
            self.problem = "not a Titan event log"
            return []
        if not data.startswith(LOG_MAGIC):
            self.problem = "not a Titan event log"
            return []
        out: list[bytes] = []
        add, extend = out.append, out.extend
        pos = len(LOG_MAGIC)
        end = len(data)
        unpack = RECORD.unpack_from
        crc32 = zlib.crc32
        header = RECORD.size
        problem = None
        while pos < end:
            if end - pos < header:
                problem = "torn"
                break
            length, crc = unpack(data, pos)
            batch = length & BATCH
            length &= MAX_RECORD
            if length == 0:
                # Never written (append refuses empty records): after a power loss a file
                # can end in zeros where the data did not reach the disk.
                zeros = data.count(0, pos) == end - pos
                problem = "torn" if zeros else "a record of length 0"
                break
            start = pos + header
            stop = start + length
            if stop > end:
                problem = "torn"
                break
            payload = data[start:stop]
            if crc32(payload) != crc:
                # A bad checksum on the very last frame is a write the crash cut short;
                # anywhere else it is damage.
                problem = "torn" if stop == end else "checksum mismatch"
                break
            if batch:
                items = _batch(payload)
                if items is None:  # its checksum held: written so, not damaged since
                    problem = "a batch of records that does not decode"
                    break
                extend(items)
            else:
                add(payload)
            pos = stop
        self.good_end = pos
        self.problem = problem
        return out


@implementer(IPersistence)
class AOFPersistence(Availability):
    log = Logger()

    def __init__(self, directory: str, fsync: str = "everysec", reactor=None,
                 blocking: Optional[Callable] = None, ops: Optional[FileOps] = None) -> None:
        if fsync not in POLICIES:
            raise ValueError(f"fsync must be one of {', '.join(POLICIES)}, not {fsync!r}")
        if reactor is None:
            from twisted.internet import reactor
        self.reactor = reactor
        self.directory = directory
        self.policy = fsync
        # How blocking calls (fsync, snapshot writes) run: in a thread by default.
        self._blocking = blocking or (lambda f, *a: threads.deferToThread(f, *a))
        self._gen = 0
        self._fd: Optional[int] = None
        self._buffer: list[bytes] = []  # records appended and not yet written
        self._buffered = 0  # their bytes
        # Appends (always) and barriers waiting for what was appended before them to be durable.
        self._waiting: list[defer.Deferred] = []
        self._flush_call = None
        self._syncing = False
        # Fire when the fsyncs running in threads return: a file is closed only after the
        # fsyncs that use it (a closed descriptor's number can be reused at once).
        self._inflight: list[defer.Deferred] = []
        self._compacting: Optional[list[defer.Deferred]] = None  # who waits for it
        self._ticker: Optional[LoopingCall] = None
        self._closed: Optional[list[defer.Deferred]] = None  # who waits for close
        self.appended = 0  # records appended since the last compaction
        self.bytes_since_compaction = 0
        self.ops = ops or FileOps()
        self._end = 0  # the current log's size up to the end of its last good frame
        self._torn = False  # bytes after _end that a failed write left: cut before writing
        self._synced = 0  # (always) the current log's size at its last good fsync
        self._written: list[bytes] = []  # (always) records written after _synced
        # Called (in the reactor's thread) with the seconds each fsync of the log took: the
        # master's metrics (titan/master/metrics.py); not part of IPersistence.
        self.on_fsync: Optional[Callable[[float], None]] = None
        self._init_availability()

    # -- files -----------------------------------------------------------------------------

    def _path(self, name: str) -> str:
        return os.path.join(self.directory, name)

    def _log_path(self, gen: int) -> str:
        return self._path(f"events.{gen}.aof")

    def _current(self) -> int:
        try:
            with open(self._path("CURRENT")) as f:
                return int(f.read().strip() or 0)
        except FileNotFoundError:
            pass
        except ValueError:
            raise CorruptLog(self._path("CURRENT"), 0, "not a generation number") from None
        # No CURRENT: nothing was ever compacted, so the chain starts at events.0.aof (and
        # may go on to events.1.aof if the first compaction was cut short).  Later files
        # without it mean CURRENT was lost: starting empty would drop them all.
        if not os.path.exists(self._log_path(0)):
            later = sorted(name for name in self._listdir()
                           if name.startswith(("events.", "snapshot.")))
            if later:
                raise CorruptLog(self._path("CURRENT"), 0,
                                 f"CURRENT is missing but {', '.join(later)} exist")
        return 0

    def _listdir(self) -> list[str]:
        try:
            return os.listdir(self.directory)
        except FileNotFoundError:
            return []

    def read_snapshot(self, gen: int) -> Optional[bytes]:
        path = self._path(f"snapshot.{gen}")
        try:
            with open(path, "rb") as f:
                data = f.read()
        except FileNotFoundError:
            if gen == 0:
                return None
            raise CorruptLog(path, 0, "the snapshot named by CURRENT is missing") from None
        if not data.startswith(SNAP_MAGIC) or len(data) < len(SNAP_MAGIC) + RECORD.size:
            raise CorruptLog(path, 0, "not a Titan snapshot")
        length, crc = RECORD.unpack_from(data, len(SNAP_MAGIC))
        body = data[len(SNAP_MAGIC) + RECORD.size:]
        if len(body) != length or zlib.crc32(body) != crc:
            raise CorruptLog(path, len(SNAP_MAGIC), "the snapshot's checksum does not match")
        return body

    # -- IPersistence ----------------------------------------------------------------------

    def load(self):
        os.makedirs(self.directory, exist_ok=True)
        gen = self._current()
        snapshot = self.read_snapshot(gen)
        if gen and not os.path.exists(self._log_path(gen)):
            # A compaction creates the next log before CURRENT names it.
            raise CorruptLog(self._log_path(gen), 0, "the log named by CURRENT is missing")
        records: list[bytes] = []
        last = gen
        while os.path.exists(self._log_path(gen)):
            path = self._log_path(gen)
            final = not os.path.exists(self._log_path(gen + 1))
            log = LogFile(path)
            records.extend(log.records())
            if log.problem == "torn" and final:
                cut = len(log.data) - log.good_end
                self.log.warn("{path}: the last {bytes} bytes are an incomplete record "
                              "(a crash mid-write); truncating them", path=path, bytes=cut)
                with open(path, "r+b") as f:
                    f.truncate(log.good_end)
                    os.fsync(f.fileno())
            elif log.problem:
                raise CorruptLog(path, log.good_end, log.problem)
            log.data = b""
            last = gen
            gen += 1
        self._gen = last
        self._open(last)
        self._start_ticker()
        return snapshot, records

    def _open(self, gen: int) -> None:
        path = self._log_path(gen)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        size = os.fstat(fd).st_size
        if size == 0:
            try:
                if self.ops.write(fd, LOG_MAGIC) != len(LOG_MAGIC):
                    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            except OSError:
                os.close(fd)
                os.unlink(path)
                raise
            size = len(LOG_MAGIC)
        self._fd = fd
        self._end = self._synced = size
        self._torn = False
        self._written = []

    def _start_ticker(self) -> None:
        if self.policy == "everysec":
            self._ticker = LoopingCall(self._fsync_now)
            self._ticker.clock = self.reactor
            self._ticker.start(1.0, now=False).addErrback(
                lambda f: self.log.failure("the once-a-second fsync stopped", f))

    def append(self, record: bytes) -> defer.Deferred:
        if not record:
            raise ValueError("an empty record cannot be stored")
        if len(record) > MAX_RECORD:
            raise ValueError(f"a record of {len(record)} bytes is over the limit of "
                             f"{MAX_RECORD}")
        self._buffer.append(record)
        self._buffered += len(record)
        self.appended += 1
        self.bytes_since_compaction += len(record) + RECORD.size
        if self._flush_call is None:
            # Group commit: everything appended in this turn of the reactor is written in
            # one write (and, for `always`, made durable by one fsync).
            self._flush_call = self.reactor.callLater(0, self._flush)
        if self.policy == "always":
            d: defer.Deferred = defer.Deferred()
            self._waiting.append(d)
            return d
        return defer.succeed(None)

    def barrier(self) -> defer.Deferred:
        # Waits in _waiting behind the appends before it: fired when they are written
        # (everysec, no) or by the group fsync that covers them (always).
        if not self._buffer and not self._waiting and not self._syncing:
            return defer.succeed(None)
        d: defer.Deferred = defer.Deferred()
        self._waiting.append(d)
        if self._flush_call is None:
            self._flush_call = self.reactor.callLater(0, self._flush)
        return d

    # -- availability (see titan.persistence.availability) ---------------------------------

    def _closing(self) -> bool:
        return self._closed is not None

    def _recovered(self) -> None:
        if self.unavailable is None:
            return
        super()._recovered()
        if (self._buffer or self._waiting) and self._flush_call is None:
            self._flush_call = self.reactor.callLater(0, self._flush)

    def _write_buffer(self) -> bool:
        """Write what was appended; False (records kept, nothing torn left) if it failed."""
        if not self._buffer:
            return True
        data = frames(self._buffer, self._buffered)
        written = 0
        try:
            if self._torn:
                self.ops.truncate(self._fd, self._end)
                self._torn = False
            view = memoryview(data)
            while written < len(data):
                n = self.ops.write(self._fd, view[written:])
                if n <= 0:
                    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
                written += n
        except OSError as e:
            if written:
                self._torn = True
                try:  # cut the partial frame now: a crash must not find it (mid-log later)
                    self.ops.truncate(self._fd, self._end)
                    self._torn = False
                except OSError:
                    pass  # cut before the next write, which waits for it
            self._trouble(why("write", self._log_path(self._gen), e))
            return False
        self._end += len(data)
        if self.policy == "always":
            self._written.extend(self._buffer)
        self._buffer.clear()
        self._buffered = 0
        return True

    def _write_pending(self) -> None:
        """Write what was appended.  Under everysec and no, that is all the barriers waiting
        need: they fire."""
        if self._write_buffer() and self.policy != "always":
            waiting, self._waiting = self._waiting, []
            for waiter in waiting:
                waiter.callback(None)

    def _flush(self) -> None:
        self._flush_call = None
        if self.unavailable is not None or self._fd is None:
            return  # the probe writes
        self._write_pending()
        if self.policy == "always" and not self._syncing and self._waiting \
                and self.unavailable is None:
            self._group_fsync()

    def _probe(self) -> None:
        """Retry what failed: write what is pending, fsync it, and go on if that worked."""
        self._retry_call = None
        if self._fd is None or self._closed is not None:
            return
        if self._syncing:  # its end decides; look again after it
            self._trouble(self.unavailable or "an fsync is still running")
            return
        if not self._write_buffer():
            return  # _trouble scheduled the next try
        if self.policy == "always":
            self._group_fsync()
            return
        gen = self._gen

        def synced(result):
            if isinstance(result, Failure):
                self._trouble(why("fsync", self._log_path(gen), result.value))
                return
            if gen == self._gen and not self._write_buffer():
                return  # what came in meanwhile failed: _trouble tries again later
            waiting, self._waiting = self._waiting, []
            for waiter in waiting:
                waiter.callback(None)
            self._recovered()

        self._fsync(self._fd).addBoth(synced)

    def _fsync(self, fd: int) -> defer.Deferred:
        """fsync(fd) the blocking way, tracked in _inflight until it returns."""
        if self.on_fsync is None:
            d = self._blocking(self.ops.fsync, fd)
        else:
            d = self._blocking(self._timed_fsync, fd).addCallback(self._fsync_took)
        if not d.called:
            returned: defer.Deferred = defer.Deferred()
            self._inflight.append(returned)

            def gone(result):
                self._inflight.remove(returned)
                returned.callback(None)
                return result

            d.addBoth(gone)
        return d

    def _timed_fsync(self, fd: int) -> float:
        """fsync(fd), in the blocking call's thread; the seconds it took (not the wait for
        a thread)."""
        start = time.perf_counter()
        self.ops.fsync(fd)
        return time.perf_counter() - start

    def _fsync_took(self, seconds: float) -> None:
        if self.on_fsync is not None:
            self.on_fsync(seconds)

    def _quiet(self) -> defer.Deferred:
        """Fires once the fsyncs running now have returned."""
        return defer.DeferredList(list(self._inflight))

    def _group_fsync(self) -> None:
        batch, self._waiting = self._waiting, []
        self._syncing = True
        gen, end, count = self._gen, self._end, len(self._written)

        def settle(result):
            self._syncing = False
            if isinstance(result, Failure):
                reason = why("fsync", self._log_path(gen), result.value)
                if gen == self._gen and self._fd is not None:
                    # What it covered may be gone from the page cache: cut back to the last
                    # good fsync and write it all again; its waiters wait for that.
                    self._buffer[:0] = self._written
                    self._buffered += sum(map(len, self._written))
                    self._written = []
                    self._end = self._synced
                    self._torn = True
                    self._waiting[:0] = batch
                else:  # an older log, being compacted away: its records cannot be rewritten
                    for waiter in batch:
                        waiter.errback(StorageUnavailable(reason))
                self._trouble(reason)
                return
            if gen == self._gen:
                self._synced = max(self._synced, end)
                del self._written[:count]
            for waiter in batch:
                waiter.callback(None)
            if self.unavailable is not None:
                if not self._buffer and not self._torn:
                    self._recovered()
                elif self._retry_call is None and self._closed is None:
                    self._probe_in(0)
            elif self._waiting and self._fd is not None:
                if self._write_buffer():  # what came in meanwhile
                    self._group_fsync()

        self._fsync(self._fd).addBoth(settle)

    def _fsync_now(self) -> defer.Deferred:
        if self.unavailable is not None or self._fd is None:
            return defer.succeed(None)  # the probe syncs
        self._write_pending()
        if self.unavailable is not None:
            return defer.succeed(None)
        gen = self._gen

        def failed(failure):
            self._trouble(why("fsync", self._log_path(gen), failure.value))

        return self._fsync(self._fd).addErrback(failed)

    def sync(self) -> defer.Deferred:
        if self.unavailable is not None:
            return defer.fail(StorageUnavailable(self.unavailable))
        return self._fsync_now()

    def compact(self, snapshot: bytes) -> defer.Deferred:
        done: defer.Deferred = defer.Deferred()
        if self._compacting is not None:
            self._compacting.append(done)
            return done
        refused = self._cannot_compact()
        if refused is not None:
            return refused
        if not self._write_buffer():
            return defer.fail(StorageUnavailable(self.unavailable))
        old_gen, old_fd = self._gen, self._fd
        new_gen = old_gen + 1
        old = (self._end, self._synced, self._torn, self._written)
        # Until CURRENT names the new generation, recovery reads the old snapshot, the old
        # log and then this one.
        try:
            self._open(new_gen)
        except OSError as e:
            self._fd = old_fd
            self._end, self._synced, self._torn, self._written = old
            reason = why("start", self._log_path(new_gen), e)
            self._pause_compactions(reason)
            return defer.fail(StorageUnavailable(reason))
        self._compacting = [done]
        # The appends (always) and barriers still waiting have their records in the old log:
        # they fire once it is synced.  Appends from here on go to the next log.
        old_waiting, self._waiting = self._waiting, []
        self._gen = new_gen
        self.appended = 0
        self.bytes_since_compaction = 0

        def synced(result):
            if isinstance(result, Failure):
                # Written to a log being compacted away: they cannot be written again there.
                reason = why("fsync", self._log_path(old_gen), result.value)
                for waiter in old_waiting:
                    waiter.errback(StorageUnavailable(reason))
                self._trouble(reason)
                return result
            for waiter in old_waiting:
                waiter.callback(None)
            return self._blocking(self._write_compaction, snapshot, old_gen, new_gen)

        d = self._fsync(old_fd)
        d.addBoth(synced)
        d.addBoth(self._compacted, old_fd, new_gen, len(snapshot))
        return done

    def _compacted(self, result, old_fd: int, new_gen: int, size: int) -> None:
        if isinstance(result, Failure):
            if result.check(OSError, StorageUnavailable):
                error = result.value
                self._pause_compactions(getattr(error, "reason", None)
                                        or why("write", f"snapshot.{new_gen}", error))
            else:
                self.log.failure("compaction failed; the log stays as it was", result)
        else:
            self.log.info("compacted the event log into snapshot.{gen} ({size} bytes)",
                          gen=new_gen, size=size)

        def finish(_):
            os.close(old_fd)
            waiters, self._compacting = self._compacting, None
            for waiter in waiters:
                if isinstance(result, Failure):
                    waiter.errback(result)
                else:
                    waiter.callback(None)

        # Close the old log only once no fsync that might be using it is still running.
        self._quiet().addCallback(finish)

    def _write_compaction(self, snapshot: bytes, old_gen: int, new_gen: int) -> None:
        tmp = self._path(f"snapshot.{new_gen}.tmp")
        try:
            with open(tmp, "wb") as f:
                f.write(SNAP_MAGIC + RECORD.pack(len(snapshot), zlib.crc32(snapshot))
                        + snapshot)
                f.flush()
                os.fsync(f.fileno())
        except OSError:
            try:  # give the space back
                os.unlink(tmp)
            except OSError:
                pass
            raise
        os.replace(tmp, self._path(f"snapshot.{new_gen}"))
        with open(self._path("CURRENT.tmp"), "w") as f:
            f.write(f"{new_gen}\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(self._path("CURRENT.tmp"), self._path("CURRENT"))
        _fsync_dir(self.directory)
        for gen in range(old_gen, -1, -1):
            removed = False
            for name in (f"snapshot.{gen}", f"events.{gen}.aof", f"snapshot.{gen}.tmp"):
                try:
                    os.unlink(self._path(name))
                    removed = True
                except FileNotFoundError:
                    pass
            if not removed:
                break

    def close(self) -> defer.Deferred:
        closed: defer.Deferred = defer.Deferred()
        if self._closed is not None:  # closing (callers waiting) or closed (none left)
            if self._closed:
                self._closed.append(closed)
            else:
                closed.callback(None)
            return closed
        self._closed = [closed]
        if self._flush_call is not None and self._flush_call.active():
            self._flush_call.cancel()
        self._flush_call = None
        self._stop_probing()
        if self._ticker is not None and self._ticker.running:
            self._ticker.stop()
        if self._fd is not None and not self._write_buffer():
            # A last try failed: what is pending is lost with the process, and was never
            # acknowledged; whoever waits for it is told.
            failed = StorageUnavailable(self.unavailable or "closed")
            self._buffer.clear()
            waiting, self._waiting = self._waiting, []
            for d in waiting:
                d.errback(failed)
        waiting, self._waiting = self._waiting, []
        pending = list(self._inflight)
        if self._compacting is not None:
            compacted: defer.Deferred = defer.Deferred()
            self._compacting.append(compacted)
            pending.append(compacted)

        def finish(_):
            fd, self._fd = self._fd, None
            error = None
            if fd is not None:
                try:
                    self.ops.fsync(fd)
                except OSError as e:
                    error = StorageUnavailable(why("fsync", self._log_path(self._gen), e))
                    self.log.warn("closing the event log: {why}", why=error.reason)
                os.close(fd)
            for d in waiting:
                if error is None:
                    d.callback(None)
                else:
                    d.errback(error)
            waiters, self._closed = self._closed, []
            for d in waiters:
                d.callback(None)

        # After the running fsyncs and compaction (which still use the files), the last
        # fsync here: a stopping master waits for it anyway.
        defer.DeferredList(pending, consumeErrors=True).addCallback(finish)
        return closed

    def describe(self) -> dict:
        size = 0
        for name in os.listdir(self.directory):
            if name.startswith(("events.", "snapshot.")):
                size += os.path.getsize(self._path(name))
        return {"backend": "aof", "directory": self.directory, "fsync": self.policy,
                "generation": self._gen, "bytes": size,
                "records_since_compaction": self.appended}


def check(directory: str, fix: bool = False) -> tuple[list[str], bool]:
    """`titan aof check`: what the log holds and what is wrong; with `fix`, truncate each
    damaged log at its last good record.  Returns (lines to print, healthy)."""
    lines = []
    healthy = True
    aof = AOFPersistence(directory)
    try:
        gen = aof._current()
    except CorruptLog as e:
        return [str(e)], False
    try:
        snap = aof.read_snapshot(gen)
        lines.append(f"snapshot.{gen}: " + ("none" if snap is None else f"{len(snap)} bytes, ok"))
    except CorruptLog as e:
        lines.append(str(e))
        healthy = False
    found = False
    while os.path.exists(aof._log_path(gen)):
        found = True
        path = aof._log_path(gen)
        log = LogFile(path)
        count = len(log.records())
        if log.problem:
            healthy = False
            lost = len(log.data) - log.good_end
            lines.append(f"{path}: {count} good records, then {log.problem} at byte "
                         f"{log.good_end} ({lost} bytes after it)")
            if fix and log.problem == "not a Titan event log":
                lines.append(f"{path}: left alone (not a Titan event log: move it away)")
            elif fix:
                # good_end is 0 only for a torn magic: an empty file, which load() restarts.
                with open(path, "r+b") as f:
                    f.truncate(log.good_end)
                    os.fsync(f.fileno())
                lines.append(f"{path}: truncated to {log.good_end} bytes "
                             f"({count} records kept, {lost} bytes dropped)")
        else:
            lines.append(f"{path}: {count} records, ok")
        gen += 1
    if not found:
        lines.append(f"{directory}: no event log")
    return lines, healthy
