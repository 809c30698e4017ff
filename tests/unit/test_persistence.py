"""The event-log backends (titan.persistence) and the codec that feeds them.

One conformance suite (ConformanceMixin) runs against every backend and fsync policy; the
AOF's own promises (torn tails, damage, generations, group commit) follow, then round trips
of events and scheduler state through the master's codec.  Real reactor, real files.
"""
from __future__ import annotations

import errno
import os
import zlib

import msgpack
from twisted.internet import defer, reactor
from twisted.internet.task import Clock, deferLater
from twisted.logger import LogLevel, formatEvent, globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase, TestCase
from zope.interface.verify import verifyObject

from titan.core import events as ev
from titan.core.codec import PERSISTED, RecordError, decode_event, encode_event
from titan.core.dag import parse_dag
from titan.core.model import JobSpec, JobState
from titan.core.scheduler import Scheduler, restore, snapshot
from titan.interfaces import CorruptLog, IPersistence, IPersistenceFactory, StorageUnavailable
from titan.persistence.aof import (
    BATCH, BATCH_BYTES, LOG_MAGIC, RECORD, SNAP_MAGIC, AOFPersistence, FileOps, LogFile,
    batch_frame, check, frame)
from titan.persistence.sqlite import SQLitePersistence
from titan.plugin_registry import find, plugins


def turn() -> defer.Deferred:
    """One turn of the reactor: what append() scheduled with callLater(0) has run."""
    return deferLater(reactor, 0, lambda: None)


def records(n: int, prefix: bytes = b"r") -> list[bytes]:
    # Varied sizes, and bytes that look like framing, to catch off-by-ones.
    return [prefix + b"%d:" % i + bytes(range(i % 7)) * (i % 5) + LOG_MAGIC[: i % 9]
            for i in range(n)]


class Held:
    """A `blocking` hook for AOFPersistence that runs nothing until told to: the test
    decides when each fsync or snapshot write happens (and can make one fail)."""

    def __init__(self) -> None:
        self.calls: list[tuple] = []

    def __call__(self, f, *args) -> defer.Deferred:
        d: defer.Deferred = defer.Deferred()
        self.calls.append((f, args, d))
        return d

    def names(self) -> list[str]:
        return [f.__name__ for f, _, _ in self.calls]

    def release(self, index: int = 0, error: Exception | None = None) -> None:
        f, args, d = self.calls.pop(index)
        if error is not None:
            d.errback(error)
            return
        try:
            result = f(*args)
        except Exception as e:
            d.errback(e)
        else:
            d.callback(result)

    def release_all(self) -> None:
        while self.calls:
            self.release()


async def wait_for(condition, what: str, timeout: float = 10.0) -> None:
    """Until `condition()` holds; fails after `timeout` seconds saying `what` never came."""
    deadline = reactor.seconds() + timeout
    while not condition():
        if reactor.seconds() > deadline:
            raise AssertionError(f"{what}: not within {timeout}s")
        await deferLater(reactor, 0.005, lambda: None)


class Faults:
    """What a backend's next writes do (in-process fault injection): succeed (mode None),
    fail as on a full disk ("full"), on a file made read-only ("denied"), or ("short")
    store part of what they were given and then fail as on a full disk."""

    def __init__(self) -> None:
        self.mode: str | None = None
        self.failures = 0  # writes failed so far

    def set(self, mode: str | None) -> None:
        self.mode = mode


class FaultyOps(FileOps):
    """The AOF's system calls, failing as `faults` says: ENOSPC, EPERM, or a short write
    (half the bytes) followed by ENOSPC."""

    def __init__(self, faults: Faults) -> None:
        self.faults = faults
        self._cut = False

    def write(self, fd: int, data) -> int:
        faults = self.faults
        if faults.mode is None:
            return os.write(fd, data)
        if faults.mode == "short" and not self._cut and len(data) > 1:
            self._cut = True  # the next write fails: the disk filled up in between
            return os.write(fd, bytes(data[:len(data) // 2]))
        self._cut = False
        faults.failures += 1
        code = errno.EPERM if faults.mode == "denied" else errno.ENOSPC
        raise OSError(code, os.strerror(code))


class FaultyConnection:
    """A sqlite3 connection whose writes fail as `faults` says: "full" and "denied" fail the
    INSERT; "short" lets the INSERT in and fails the COMMIT (as a full disk does when the
    transaction's pages are written)."""

    def __init__(self, db, faults: Faults) -> None:
        self._db = db
        self._faults = faults

    def _check(self, sql: str) -> None:
        mode = self._faults.mode
        word = sql.lstrip().split(None, 1)[0].upper() if sql.strip() else ""
        if mode is None or word not in ("INSERT", "COMMIT", "DELETE"):
            return
        if mode == "short" and word != "COMMIT":
            return
        self._faults.failures += 1
        import sqlite3
        if mode == "denied":
            raise sqlite3.OperationalError("attempt to write a readonly database")
        raise sqlite3.OperationalError("database or disk is full")

    def execute(self, sql, *args):
        self._check(sql)
        return self._db.execute(sql, *args)

    def executemany(self, sql, rows):
        self._check(sql)
        return self._db.executemany(sql, rows)

    def __getattr__(self, name):
        return getattr(self._db, name)


def capture_log(case) -> list[dict]:
    """Every log event emitted during the test."""
    seen: list[dict] = []
    globalLogPublisher.addObserver(seen.append)
    case.addCleanup(globalLogPublisher.removeObserver, seen.append)
    return seen


def warnings(seen: list[dict]) -> list[str]:
    return [formatEvent(e) for e in seen if e.get("log_level") == LogLevel.warn]


# -- plugins -------------------------------------------------------------------------------

class PluginTests(SynchronousTestCase):
    def test_builtin_backends_are_found(self):
        names = [p.name for p in plugins(IPersistenceFactory)]
        self.assertIn("aof", names)
        self.assertIn("sqlite", names)
        self.assertEqual(find(IPersistenceFactory, "aof", "backend").name, "aof")

    def test_every_plugin_provides_the_factory_interface(self):
        found = plugins(IPersistenceFactory)
        self.assertTrue(found)
        for plugin in found:
            self.assertTrue(verifyObject(IPersistenceFactory, plugin))
            self.assertIsInstance(plugin.description, str)

    def test_factories_build_backends(self):
        aof = find(IPersistenceFactory, "aof", "backend").build(self.mktemp(), {"fsync": "no"})
        self.assertIsInstance(aof, AOFPersistence)
        self.assertEqual(aof.policy, "no")
        lite = find(IPersistenceFactory, "sqlite", "backend").build(self.mktemp(), {})
        self.assertIsInstance(lite, SQLitePersistence)
        self.assertEqual(lite.policy, "everysec")

    def test_backends_provide_the_interface(self):
        self.assertTrue(verifyObject(IPersistence, AOFPersistence(self.mktemp())))
        self.assertTrue(verifyObject(IPersistence, SQLitePersistence(self.mktemp())))

    def test_an_unknown_policy_is_refused(self):
        self.assertRaises(ValueError, AOFPersistence, self.mktemp(), fsync="sometimes")
        self.assertRaises(ValueError, SQLitePersistence, self.mktemp(), fsync="sometimes")


# -- what every backend promises -------------------------------------------------------------

class ConformanceMixin:
    policy = "everysec"

    def build(self, directory: str):
        raise NotImplementedError

    def setUp(self) -> None:
        self.dir = self.mktemp()
        self.opened: list = []

    async def tearDown(self) -> None:
        for backend in self.opened:
            await backend.close()

    def open(self, faults: Faults | None = None):
        """A new backend on self.dir, loaded: (backend, snapshot, records); its writes fail
        as `faults` says, and it retries them quickly."""
        backend = self.build(self.dir)
        if faults is not None:
            self.inject(backend, faults)
            backend.retry_first = backend._retry_delay = 0.01
            backend.retry_max = 0.05
        self.opened.append(backend)
        snap, recs = backend.load()
        return backend, snap, list(recs)

    async def reopen(self, backend):
        await backend.close()
        return self.open()

    def test_provides_the_interface(self):
        backend, _, _ = self.open()
        self.assertTrue(verifyObject(IPersistence, backend))

    def test_empty_directory(self):
        backend, snap, recs = self.open()
        self.assertIsNone(snap)
        self.assertEqual(recs, [])

    async def test_records_come_back_in_order(self):
        backend, _, _ = self.open()
        written = records(500)
        for r in written:
            backend.append(r)
        _, snap, recs = await self.reopen(backend)
        self.assertIsNone(snap)
        self.assertEqual(recs, written)

    async def test_appends_across_turns_and_restarts(self):
        backend, _, _ = self.open()
        written = []
        for batch in range(3):
            for r in records(20, b"b%d-" % batch):
                written.append(r)
                backend.append(r)
            await turn()
        backend, _, recs = await self.reopen(backend)
        self.assertEqual(recs, written)
        backend.append(b"after restart")
        _, _, recs = await self.reopen(backend)
        self.assertEqual(recs, written + [b"after restart"])

    async def test_append_deferreds(self):
        backend, _, _ = self.open()
        d = backend.append(b"one")
        if self.policy == "always":
            # Not durable before the write and the fsync (or commit), which need the reactor.
            self.assertNoResult(d)
            await d
            self.assertTrue(self.stored(b"one"))
        else:
            self.assertIsNone(self.successResultOf(d))

    async def test_barrier(self):
        """A barrier fires once what was appended before it can be read back by someone
        else (for `always`: once it is synced too); barriers fire in order."""
        backend, _, _ = self.open()
        self.successResultOf(backend.barrier())  # nothing appended: at once
        fired: list = []
        barriers = []
        for name in (b"one", b"two", b"three"):
            backend.append(name)
            barriers.append(backend.barrier().addCallback(
                lambda _, name=name: fired.append((name, self.stored(name)))))
        self.assertEqual(fired, [])  # the write (or commit) needs the reactor
        await defer.gatherResults(barriers)
        self.assertEqual(fired, [(b"one", True), (b"two", True), (b"three", True)])
        backend.append(b"four")
        await backend.sync()
        self.assertTrue(self.stored(b"four"))
        await backend.barrier()  # nothing new (at once, or once the syncs running return)

    def stored(self, record: bytes) -> bool:
        """Whether `record` can be read back by someone else already."""
        raise NotImplementedError

    async def test_sync(self):
        backend, _, _ = self.open()
        backend.append(b"x")
        await backend.sync()
        self.assertTrue(self.stored(b"x"))

    async def test_compaction(self):
        backend, _, _ = self.open()
        for r in records(50):
            backend.append(r)
        await backend.compact(b"state after 50")
        later = records(10, b"later")
        for r in later:
            backend.append(r)
        _, snap, recs = await self.reopen(backend)
        self.assertEqual(snap, b"state after 50")
        self.assertEqual(recs, later)

    async def test_compaction_of_nothing_new(self):
        backend, _, _ = self.open()
        await backend.compact(b"empty state")
        _, snap, recs = await self.reopen(backend)
        self.assertEqual((snap, recs), (b"empty state", []))

    async def test_compaction_while_appending(self):
        backend, _, _ = self.open()
        for r in records(100, b"before"):
            backend.append(r)
        await turn()
        for r in records(5, b"unwritten"):  # still buffered when compact() is called
            backend.append(r)
        compacted = backend.compact(b"state after 105")
        after = records(100, b"after")
        for i, r in enumerate(after):
            backend.append(r)
            if i % 25 == 0:
                await turn()
        await compacted
        _, snap, recs = await self.reopen(backend)
        self.assertEqual(snap, b"state after 105")
        self.assertEqual(recs, after)

    async def test_repeated_compactions(self):
        backend, _, _ = self.open()
        for n in range(4):
            backend.append(b"record %d" % n)
            await backend.compact(b"snapshot %d" % n)
            backend, snap, recs = await self.reopen(backend)
            self.assertEqual((snap, recs), (b"snapshot %d" % n, []))
        backend.append(b"last")
        _, snap, recs = await self.reopen(backend)
        self.assertEqual((snap, recs), (b"snapshot 3", [b"last"]))

    async def test_compactions_back_to_back(self):
        # A second compaction asked for while one runs: afterwards the log holds what the
        # snapshots do not, and nothing twice.
        backend, _, _ = self.open()
        backend.append(b"a")
        first = backend.compact(b"after a")
        backend.append(b"b")
        second = backend.compact(b"after a, b")
        backend.append(b"c")
        await defer.gatherResults([first, second])
        _, snap, recs = await self.reopen(backend)
        self.assertIn((snap, recs), [(b"after a", [b"b", b"c"]), (b"after a, b", [b"c"])])

    async def test_close_twice(self):
        backend, _, _ = self.open()
        backend.append(b"x")
        first = backend.close()
        second = backend.close()
        await first
        await second
        await backend.close()
        _, _, recs = self.open()
        self.assertEqual(recs, [b"x"])

    async def test_close_during_compaction(self):
        backend, _, _ = self.open()
        backend.append(b"x")
        backend.compact(b"state")
        backend.append(b"y")
        await backend.close()
        _, snap, recs = self.open()
        self.assertEqual((snap, recs), (b"state", [b"y"]))

    def test_describe(self):
        backend, _, _ = self.open()
        described = backend.describe()
        self.assertIsInstance(described, dict)
        self.assertEqual(described["backend"], self.backend_name)
        self.assertEqual(described["fsync"], self.policy)

    # -- a full or failing disk (issue 14): the same rule for every backend and policy --

    def inject(self, backend, faults: Faults) -> None:
        raise NotImplementedError

    async def crash(self, backend) -> None:
        """Stop `backend` as a killed process would: nothing more written, nothing closed
        cleanly."""
        raise NotImplementedError

    reasons: dict = {}

    async def outage(self, mode: str) -> None:
        """Records appended while writes fail are not acknowledged (their appends under
        `always`, and every barrier after them, wait); the backend says why once; once
        writes work again it stores them by itself, in order, once each, and the log
        reads back whole."""
        faults = Faults()
        backend, _, _ = self.open(faults)
        seen: list = []
        backend.watch(seen.append)
        before = records(20, b"before")
        for r in before:
            backend.append(r)
        await backend.barrier()
        faults.set(mode)
        during = records(30, b"during")
        acks = [backend.append(r) for r in during[:10]]
        first = backend.barrier()
        await wait_for(lambda: backend.unavailable is not None, "the failure to be seen")
        acks += [backend.append(r) for r in during[10:]]
        second = backend.barrier()
        await wait_for(lambda: faults.failures >= 4, "retries of the failed write")
        waiting = [first, second] + (acks if self.policy == "always" else [])
        for d in waiting:
            self.assertNoResult(d)
        self.assertEqual(len(seen), 1, seen)  # once per outage, not once per retry
        self.assertIn(self.reasons[mode], seen[0])
        self.assertEqual(backend.unavailable, seen[0])
        self.assertFalse(any(map(self.stored, during)))
        faults.set(None)
        await wait_for(lambda: all(d.called for d in waiting), "the records to be stored")
        for d in waiting:
            self.assertIsNone(self.successResultOf(d))
        self.assertIsNone(backend.unavailable)
        self.assertEqual(seen[1:], [None])
        after = records(5, b"after")
        for r in after:
            backend.append(r)
        _, _, recs = await self.reopen(backend)
        self.assertEqual(recs, before + during + after)

    async def test_a_full_disk_holds_records_until_it_recovers(self):
        await self.outage("full")

    async def test_a_read_only_log_holds_records_until_it_recovers(self):
        await self.outage("denied")

    async def test_a_short_write_holds_records_until_it_recovers(self):
        await self.outage("short")

    async def crash_in_outage(self, mode: str) -> None:
        faults = Faults()
        backend, _, _ = self.open(faults)
        acknowledged = records(15, b"acked")
        for r in acknowledged:
            backend.append(r)
        await backend.barrier()
        faults.set(mode)
        unacknowledged = [backend.append(r) for r in records(10, b"lost")]
        last = backend.barrier()
        await wait_for(lambda: faults.failures >= 3, "retries of the failed write")
        self.assertNoResult(last)
        await self.crash(backend)
        # Started again (the disk still full): every acknowledged record, nothing torn in
        # the middle (a damaged log would not load), none of the others.
        _, _, recs = self.open()
        self.assertEqual(recs, acknowledged)
        if self.policy == "always":
            for d in unacknowledged:
                self.assertNoResult(d)

    async def test_a_crash_during_a_full_disk_keeps_what_was_acknowledged(self):
        await self.crash_in_outage("full")

    async def test_a_crash_after_short_writes_leaves_no_torn_frame(self):
        await self.crash_in_outage("short")

    async def test_closing_during_an_outage_tells_whoever_waits(self):
        faults = Faults()
        backend, _, _ = self.open(faults)
        backend.append(b"kept")
        await backend.barrier()
        faults.set("full")
        ack = backend.append(b"never stored")
        waiting = backend.barrier()
        await wait_for(lambda: backend.unavailable is not None, "the failure to be seen")
        await backend.close()
        if self.policy == "always":
            self.failureResultOf(ack, StorageUnavailable)
        failure = self.failureResultOf(waiting, StorageUnavailable)
        self.assertIn(self.reasons["full"], str(failure.value))
        self.assertTrue(str(failure.value).startswith("storage unavailable: "))
        _, _, recs = self.open()
        self.assertEqual(recs, [b"kept"])

    async def test_no_compaction_while_records_are_pending(self):
        faults = Faults()
        backend, _, _ = self.open(faults)
        backend.append(b"a")
        await backend.barrier()
        faults.set("full")
        backend.append(b"b")
        await wait_for(lambda: backend.unavailable is not None, "the failure to be seen")
        await self.assertFailure(backend.compact(b"state"), StorageUnavailable)
        faults.set(None)
        await wait_for(lambda: backend.unavailable is None, "the recovery")
        _, snap, recs = await self.reopen(backend)
        self.assertEqual((snap, recs), (None, [b"a", b"b"]))

    async def test_counts_since_compaction(self):
        backend, _, _ = self.open()
        backend.append(b"12345")
        self.assertEqual(backend.appended, 1)
        self.assertGreaterEqual(backend.bytes_since_compaction, 5)
        await backend.compact(b"s")
        self.assertEqual((backend.appended, backend.bytes_since_compaction), (0, 0))


class AOFMixin(ConformanceMixin):
    backend_name = "aof"
    reasons = {"full": "No space left on device", "denied": "Operation not permitted",
               "short": "No space left on device"}

    def build(self, directory: str):
        return AOFPersistence(directory, fsync=self.policy)

    def inject(self, backend, faults: Faults) -> None:
        backend.ops = FaultyOps(faults)

    async def crash(self, backend) -> None:
        for call in (backend._flush_call, backend._retry_call):
            if call is not None and call.active():
                call.cancel()
        if backend._ticker is not None and backend._ticker.running:
            backend._ticker.stop()
        await backend._quiet()
        os.close(backend._fd)
        backend._fd = None
        backend._closed = []  # close() has nothing left to do

    def stored(self, record: bytes) -> bool:
        path = os.path.join(self.dir, max(n for n in os.listdir(self.dir)
                                          if n.startswith("events.")))
        return record in LogFile(path).records()


class SQLiteMixin(ConformanceMixin):
    backend_name = "sqlite"
    reasons = {"full": "database or disk is full", "denied": "readonly database",
               "short": "database or disk is full"}

    def build(self, directory: str):
        return SQLitePersistence(directory, fsync=self.policy)

    def inject(self, backend, faults: Faults) -> None:
        connect = backend.connect
        backend.connect = lambda *a, **k: FaultyConnection(connect(*a, **k), faults)

    async def crash(self, backend) -> None:
        for call in (backend._flush_call, backend._retry_call):
            if call is not None and call.active():
                call.cancel()
        if backend._ticker is not None and backend._ticker.running:
            backend._ticker.stop()
        await backend._run(backend._disconnect)  # after what its thread was doing
        backend._waiters = []  # (a killed process tells nobody)
        backend._closers = []
        backend._stop_pool()

    async def test_no_shared_memory_file(self):
        """WAL without a -shm file mapped into the process (locking_mode=EXCLUSIVE): a full
        or read-only disk is then an error SQLite reports, not a SIGBUS."""
        backend, _, _ = self.open()
        backend.append(b"x")
        await backend.sync()
        mode = await backend._run(
            lambda: backend._db.execute("PRAGMA locking_mode").fetchone()[0])
        journal = await backend._run(
            lambda: backend._db.execute("PRAGMA journal_mode").fetchone()[0])
        self.assertEqual((mode, journal), ("exclusive", "wal"))
        self.assertFalse(os.path.exists(os.path.join(self.dir, "events.sqlite-shm")))

    def stored(self, record: bytes) -> bool:
        # Through the backend's own connection: it holds the database exclusively.
        db = self.opened[-1]._db
        return db.execute("SELECT count(*) FROM events WHERE data = ?",
                          (record,)).fetchone()[0] == 1


class AOFAlwaysTests(AOFMixin, TestCase):
    policy = "always"


class AOFEverysecTests(AOFMixin, TestCase):
    policy = "everysec"


class AOFNoTests(AOFMixin, TestCase):
    policy = "no"


class SQLiteAlwaysTests(SQLiteMixin, TestCase):
    policy = "always"


class SQLiteEverysecTests(SQLiteMixin, TestCase):
    policy = "everysec"


class SQLiteNoTests(SQLiteMixin, TestCase):
    policy = "no"


# -- the AOF's own promises ------------------------------------------------------------------

class AOFFilesMixin:
    def setUp(self) -> None:
        self.dir = self.mktemp()
        self.opened: list = []

    async def tearDown(self) -> None:
        for backend in self.opened:
            await backend.close()

    def aof(self, **kw) -> AOFPersistence:
        backend = AOFPersistence(self.dir, **kw)
        self.opened.append(backend)
        return backend

    def path(self, name: str) -> str:
        return os.path.join(self.dir, name)

    async def write_log(self, recs: list[bytes]) -> None:
        """A log written one record per turn of the reactor: a frame per record."""
        backend = self.aof(fsync="no")
        backend.load()
        for r in recs:
            backend.append(r)
            await turn()
        await backend.close()

    async def write_batches(self, *batches: list[bytes]) -> list[int]:
        """A log written a batch per turn: the offset at which each batch's frame starts."""
        backend = self.aof(fsync="no")
        backend.load()
        offsets = []
        for batch in batches:
            offsets.append(self.size("events.0.aof"))
            for r in batch:
                backend.append(r)
            await turn()
        await backend.close()
        return offsets

    def write_file(self, name: str, recs: list[bytes]) -> None:
        os.makedirs(self.dir, exist_ok=True)
        with open(self.path(name), "wb") as f:
            f.write(LOG_MAGIC + b"".join(frame(r) for r in recs))

    def size(self, name: str) -> int:
        return os.path.getsize(self.path(name))


class TornTailTests(AOFFilesMixin, TestCase):
    async def assertRepaired(self, good: list[bytes], cut: int) -> None:
        seen = capture_log(self)
        snap, recs = self.aof().load()
        self.assertEqual((snap, list(recs)), (None, good))
        said = warnings(seen)
        self.assertEqual(len(said), 1, said)
        self.assertIn(f"the last {cut} bytes are an incomplete record", said[0])
        self.assertIn(self.path("events.0.aof"), said[0])
        # Repaired on disk: the next start has nothing to say, and appends follow the
        # good records.
        await self.opened[-1].close()
        self.assertEqual(self.size("events.0.aof"),
                         len(LOG_MAGIC) + sum(len(frame(r)) for r in good))
        del seen[:]
        backend = self.aof()
        self.assertEqual(list(backend.load()[1]), good)
        self.assertEqual(warnings(seen), [])
        backend.append(b"next")
        await backend.close()
        self.assertEqual(list(self.aof().load()[1]), good + [b"next"])

    async def test_last_record_cut_short(self):
        recs = records(10)
        await self.write_log(recs)
        with open(self.path("events.0.aof"), "r+b") as f:
            f.truncate(self.size("events.0.aof") - 3)
        await self.assertRepaired(recs[:-1], len(frame(recs[-1])) - 3)

    async def test_partial_header(self):
        recs = records(10)
        await self.write_log(recs)
        with open(self.path("events.0.aof"), "ab") as f:
            f.write(b"\x00\x00\x01")
        await self.assertRepaired(recs, 3)

    async def test_header_without_all_its_record(self):
        recs = records(10)
        await self.write_log(recs)
        with open(self.path("events.0.aof"), "ab") as f:
            f.write(frame(b"a record that was being written")[:RECORD.size + 4])
        await self.assertRepaired(recs, RECORD.size + 4)

    async def test_last_record_with_a_bad_checksum(self):
        recs = records(10)
        await self.write_log(recs)
        with open(self.path("events.0.aof"), "r+b") as f:
            f.seek(-1, os.SEEK_END)
            last = f.read(1)
            f.seek(-1, os.SEEK_END)
            f.write(bytes([last[0] ^ 0xFF]))
        await self.assertRepaired(recs[:-1], len(frame(recs[-1])))

    async def test_zeros_after_a_power_cut(self):
        # The file's size reached the disk but its last blocks did not.
        recs = records(10)
        await self.write_log(recs)
        with open(self.path("events.0.aof"), "ab") as f:
            f.write(bytes(4096))
        await self.assertRepaired(recs, 4096)

    async def test_magic_cut_short(self):
        os.makedirs(self.dir)
        with open(self.path("events.0.aof"), "wb") as f:
            f.write(LOG_MAGIC[:5])
        await self.assertRepaired([], 5)

    def test_not_a_log(self):
        self.write_file("events.0.aof", [])
        with open(self.path("events.0.aof"), "r+b") as f:
            f.write(b"NOTTITAN")
        e = self.assertRaises(CorruptLog, self.aof().load)
        self.assertIn("not a Titan event log", str(e))


class BatchTests(AOFFilesMixin, TestCase):
    """What one turn of the reactor appends is one write, framed as one batch."""

    async def test_a_turn_is_one_frame_and_reads_back_as_its_records(self):
        first, second = records(200, b"a"), records(3, b"b")
        offsets = await self.write_batches(first, [b"alone"], second)
        self.assertEqual(list(self.aof().load()[1]), first + [b"alone"] + second)
        with open(self.path("events.0.aof"), "rb") as f:
            data = f.read()
        self.assertEqual(data[offsets[0]:offsets[1]], batch_frame(first))
        self.assertEqual(data[offsets[1]:offsets[2]], frame(b"alone"))  # a lone record
        self.assertEqual(data[offsets[2]:], batch_frame(second))
        lines, healthy = check(self.dir)
        self.assertTrue(healthy)
        self.assertIn(f"{self.path('events.0.aof')}: 204 records, ok", lines)

    async def test_a_big_turn_is_split_into_bounded_batches(self):
        big = [b"%06d" % i + bytes(1000) for i in range(2500)]  # ~2.5 MB in one turn
        await self.write_batches(big)
        self.assertEqual(list(self.aof().load()[1]), big)
        with open(self.path("events.0.aof"), "rb") as f:
            data = f.read()
        pos, sizes = len(LOG_MAGIC), []
        while pos < len(data):
            length, _ = RECORD.unpack_from(data, pos)
            self.assertTrue(length & BATCH)
            sizes.append(length & ~BATCH)
            pos += RECORD.size + (length & ~BATCH)
        self.assertEqual(len(sizes), 3)
        self.assertTrue(all(n <= BATCH_BYTES + 4096 for n in sizes), sizes)

    async def test_a_batch_cut_short_is_dropped_whole_with_a_warning(self):
        kept, cut = records(30, b"k"), records(30, b"c")
        offsets = await self.write_batches(kept, cut)
        size = self.size("events.0.aof")
        with open(self.path("events.0.aof"), "r+b") as f:
            f.truncate(size - 10)
        seen = capture_log(self)
        self.assertEqual(list(self.aof().load()[1]), kept)
        said = warnings(seen)
        self.assertEqual(len(said), 1, said)
        self.assertIn(f"the last {size - 10 - offsets[1]} bytes are an incomplete record",
                      said[0])
        await self.opened[-1].close()
        self.assertEqual(self.size("events.0.aof"), offsets[1])

    async def test_damage_in_a_batch_stops_the_load_at_its_frame(self):
        first, hit, last = records(10, b"f"), records(10, b"h"), records(10, b"l")
        offsets = await self.write_batches(first, hit, last)
        with open(self.path("events.0.aof"), "r+b") as f:
            f.seek(offsets[1] + RECORD.size + 5)
            byte = f.read(1)
            f.seek(offsets[1] + RECORD.size + 5)
            f.write(bytes([byte[0] ^ 0x01]))
        e = self.assertRaises(CorruptLog, self.aof().load)
        self.assertEqual(e.offset, offsets[1])
        self.assertIn("checksum mismatch", str(e))
        lines, healthy = check(self.dir)
        self.assertFalse(healthy)
        self.assertIn(f"10 good records, then checksum mismatch at byte {offsets[1]}",
                      "\n".join(lines))
        check(self.dir, fix=True)
        self.assertEqual(list(self.aof().load()[1]), first)

    def test_a_batch_that_is_not_a_list_of_records_is_damage(self):
        os.makedirs(self.dir)
        import msgpack
        for payload in (msgpack.packb({"not": "a list"}), msgpack.packb([b"ok", 7]),
                        msgpack.packb([b"ok", b""]), msgpack.packb([b"ok", "text"]),
                        msgpack.packb([]), b"\xc1"):
            bad = RECORD.pack(len(payload) | BATCH, zlib.crc32(payload)) + payload
            with open(self.path("events.0.aof"), "wb") as f:
                f.write(LOG_MAGIC + frame(b"a") + bad + frame(b"b"))
            e = self.assertRaises(CorruptLog, self.aof().load)
            self.assertEqual(e.offset, len(LOG_MAGIC) + len(frame(b"a")))
            self.assertIn("a batch of records that does not decode", str(e))

    def test_an_oversized_record_is_refused(self):
        backend = self.aof()
        backend.load()

        class Huge(bytes):
            def __len__(self):
                return BATCH

        e = self.assertRaises(ValueError, backend.append, Huge(b"x"))
        self.assertIn("over the limit", str(e))


class DamageTests(AOFFilesMixin, TestCase):
    async def flipped(self) -> tuple[list[bytes], int]:
        """A log of 10 records whose 5th has a flipped bit: (records, its offset)."""
        recs = records(10)
        await self.write_log(recs)
        offset = len(LOG_MAGIC) + sum(len(frame(r)) for r in recs[:4])
        with open(self.path("events.0.aof"), "r+b") as f:
            f.seek(offset + RECORD.size + 1)
            byte = f.read(1)
            f.seek(offset + RECORD.size + 1)
            f.write(bytes([byte[0] ^ 0x10]))
        return recs, offset

    async def test_damage_in_the_middle_stops_the_load(self):
        _, offset = await self.flipped()
        e = self.assertRaises(CorruptLog, self.aof().load)
        path = self.path("events.0.aof")
        self.assertEqual((e.path, e.offset), (path, offset))
        self.assertIn(path, str(e))
        self.assertIn(f"byte {offset}", str(e))
        self.assertIn("checksum mismatch", str(e))
        self.assertIn("titan aof check", str(e))
        # Nothing was repaired or written.
        self.assertRaises(CorruptLog, self.aof().load)

    async def test_check_reports_and_fixes(self):
        recs, offset = await self.flipped()
        path = self.path("events.0.aof")
        lines, healthy = check(self.dir)
        self.assertFalse(healthy)
        text = "\n".join(lines)
        self.assertIn(f"{path}: 4 good records, then checksum mismatch at byte {offset}", text)
        self.assertEqual(self.size("events.0.aof"),
                         len(LOG_MAGIC) + sum(len(frame(r)) for r in recs))  # untouched
        lines, _ = check(self.dir, fix=True)
        self.assertIn(f"{path}: truncated to {offset} bytes", "\n".join(lines))
        self.assertEqual(self.size("events.0.aof"), offset)
        self.assertEqual(list(self.aof().load()[1]), recs[:4])
        lines, healthy = check(self.dir)
        self.assertTrue(healthy, lines)
        self.assertIn(f"{path}: 4 records, ok", lines)

    async def test_check_of_a_healthy_compacted_log(self):
        backend = self.aof()
        backend.load()
        backend.append(b"a")
        await backend.compact(b"state")
        backend.append(b"b")
        await backend.close()
        lines, healthy = check(self.dir)
        self.assertTrue(healthy, lines)
        self.assertEqual(lines, ["snapshot.1: 5 bytes, ok", f"{self.path('events.1.aof')}: "
                                                            "1 records, ok"])

    def test_check_of_nothing(self):
        os.makedirs(self.dir)
        lines, healthy = check(self.dir)
        self.assertTrue(healthy)
        self.assertIn("no event log", lines[-1])

    def test_check_fix_of_a_cut_magic_leaves_an_empty_log(self):
        os.makedirs(self.dir)
        with open(self.path("events.0.aof"), "wb") as f:
            f.write(LOG_MAGIC[:3])
        check(self.dir, fix=True)
        self.assertEqual(self.size("events.0.aof"), 0)
        self.assertEqual(self.aof().load(), (None, []))

    def test_an_empty_record_in_the_middle_is_damage(self):
        os.makedirs(self.dir)
        with open(self.path("events.0.aof"), "wb") as f:
            f.write(LOG_MAGIC + frame(b"a") + RECORD.pack(0, 0) + frame(b"b"))
        e = self.assertRaises(CorruptLog, self.aof().load)
        self.assertEqual(e.offset, len(LOG_MAGIC) + len(frame(b"a")))

    def test_empty_records_are_refused(self):
        backend = self.aof()
        backend.load()
        self.assertRaises(ValueError, backend.append, b"")

    async def test_damage_in_an_older_generation_is_not_cut(self):
        # Only the newest log can have been cut by a crash; an older one cut short is damage.
        self.write_file("events.0.aof", [b"a", b"b"])
        with open(self.path("events.0.aof"), "ab") as f:
            f.write(b"\x00\x00")
        self.write_file("events.1.aof", [b"c"])
        e = self.assertRaises(CorruptLog, self.aof().load)
        self.assertEqual(e.path, self.path("events.0.aof"))
        self.assertIn("torn", str(e))

    async def test_missing_snapshot(self):
        backend = self.aof()
        backend.load()
        backend.append(b"a")
        await backend.compact(b"state")
        await backend.close()
        os.unlink(self.path("snapshot.1"))
        e = self.assertRaises(CorruptLog, self.aof().load)
        self.assertIn(self.path("snapshot.1"), str(e))
        self.assertIn("missing", str(e))

    async def test_damaged_snapshot(self):
        backend = self.aof()
        backend.load()
        await backend.compact(b"some state")
        await backend.close()
        with open(self.path("snapshot.1"), "r+b") as f:
            f.seek(-1, os.SEEK_END)
            f.write(b"!")
        e = self.assertRaises(CorruptLog, self.aof().load)
        self.assertIn("checksum", str(e))

    async def test_missing_current(self):
        backend = self.aof()
        backend.load()
        backend.append(b"a")
        await backend.compact(b"state")
        backend.append(b"b")
        await backend.close()
        os.unlink(self.path("CURRENT"))
        e = self.assertRaises(CorruptLog, self.aof().load)
        self.assertIn("CURRENT is missing", str(e))

    async def test_missing_log_named_by_current(self):
        backend = self.aof()
        backend.load()
        await backend.compact(b"state")
        await backend.close()
        os.unlink(self.path("events.1.aof"))
        self.assertRaises(CorruptLog, self.aof().load)

    def test_garbled_current(self):
        os.makedirs(self.dir)
        with open(self.path("CURRENT"), "w") as f:
            f.write("one\n")
        self.assertRaises(CorruptLog, self.aof().load)


class GenerationTests(AOFFilesMixin, TestCase):
    """Crashes in the middle of a compaction."""

    def test_crash_before_current_names_the_new_generation(self):
        # events.1.aof was started (appends went there) but CURRENT still says 0.
        self.write_file("events.0.aof", [b"a", b"b"])
        self.write_file("events.1.aof", [b"c", b"d"])
        self.assertEqual(self.aof().load(), (None, [b"a", b"b", b"c", b"d"]))

    async def test_crash_after_the_snapshot_was_written(self):
        # snapshot.2 is in place, CURRENT still says 1: snapshot.1 and both logs count.
        os.makedirs(self.dir)
        with open(self.path("CURRENT"), "w") as f:
            f.write("1\n")
        self.write_snapshot(1, b"state 1")
        self.write_snapshot(2, b"state 2")
        self.write_file("events.1.aof", [b"b"])
        self.write_file("events.2.aof", [b"c"])
        backend = self.aof()
        self.assertEqual(backend.load(), (b"state 1", [b"b", b"c"]))
        # Appends continue the newest log, and the next compaction cleans up after both.
        backend.append(b"d")
        await backend.compact(b"state 3")
        await backend.close()
        self.assertEqual(sorted(os.listdir(self.dir)), ["CURRENT", "events.3.aof", "snapshot.3"])
        self.assertEqual(self.aof().load(), (b"state 3", []))

    def write_snapshot(self, gen: int, body: bytes) -> None:
        with open(self.path(f"snapshot.{gen}"), "wb") as f:
            f.write(SNAP_MAGIC + RECORD.pack(len(body), zlib.crc32(body)) + body)

    async def test_a_failed_compaction_leaves_a_loadable_chain(self):
        seen = capture_log(self)
        backend = self.aof(fsync="always")
        backend.load()
        backend.append(b"a")
        backend.append(b"b")

        def crash(*args):
            raise OSError(errno.ENOSPC, "No space left on device")

        backend._write_compaction = crash
        d = backend.compact(b"state")
        backend.append(b"c")
        await self.assertFailure(d, OSError)
        # One line, no traceback: the disk is full, not the program broken.
        self.assertEqual(len(self.flushLoggedErrors(OSError)), 0)
        self.assertEqual([w for w in warnings(seen) if "compaction failed" in w],
                         ["compaction failed (cannot write snapshot.1: No space left on "
                          "device); the log stays as it was; trying again in 30s"])
        backend.append(b"d")
        await backend.close()
        self.assertFalse(os.path.exists(self.path("CURRENT")))
        backend = self.aof()
        self.assertEqual(backend.load(), (None, [b"a", b"b", b"c", b"d"]))
        # and a later compaction succeeds and removes both old logs
        await backend.compact(b"state 2")
        await backend.close()
        self.assertEqual(sorted(os.listdir(self.dir)), ["CURRENT", "events.2.aof", "snapshot.2"])

    async def test_old_files_are_removed(self):
        backend = self.aof()
        backend.load()
        for n in range(3):
            backend.append(b"x")
            await backend.compact(b"state %d" % n)
        await backend.close()
        self.assertEqual(sorted(os.listdir(self.dir)), ["CURRENT", "events.3.aof", "snapshot.3"])


class GroupCommitTests(AOFFilesMixin, TestCase):
    """`always`: an append's Deferred fires after the fsync that covers its record."""

    async def test_acknowledged_after_the_fsync(self):
        held = Held()
        backend = self.aof(fsync="always", blocking=held)
        backend.load()
        acks = [backend.append(r) for r in (b"a", b"b", b"c")]
        await turn()
        self.assertEqual(held.names(), ["fsync"])  # one fsync for the three
        for d in acks:
            self.assertNoResult(d)
        more = backend.append(b"d")  # arrives during the fsync: the next group
        await turn()
        self.assertEqual(held.names(), ["fsync"])
        held.release()
        for d in acks:
            self.successResultOf(d)
        self.assertNoResult(more)
        self.assertEqual(held.names(), ["fsync"])
        held.release()
        self.successResultOf(more)
        await backend.close()

    async def test_a_failed_fsync_writes_its_group_again(self):
        # Linux may drop the pages of a failed fsync: what it covered is cut off and written
        # again, and acknowledged only by a later fsync that worked.
        held = Held()
        backend = self.aof(fsync="always", blocking=held)
        backend.retry_first = backend._retry_delay = 0.01
        backend.load()
        first = backend.append(b"a")
        await turn()
        second = backend.append(b"b")  # written during the fsync
        await turn()
        held.release(error=OSError(errno.EIO, "Input/output error"))
        self.assertNoResult(first)
        self.assertNoResult(second)
        self.assertIn("cannot fsync", backend.unavailable)
        self.assertIn("Input/output error", backend.unavailable)
        await wait_for(lambda: held.calls, "the retry's fsync")
        self.assertNoResult(first)
        held.release()
        self.successResultOf(first)
        self.successResultOf(second)
        self.assertIsNone(backend.unavailable)
        await backend.close()
        self.assertEqual(self.aof().load(), (None, [b"a", b"b"]))  # once each

    async def test_compaction_during_an_fsync(self):
        # The old log must stay open until the fsync using it returns, and the appends
        # written to it are acknowledged only once it has been synced.
        held = Held()
        backend = self.aof(fsync="always", blocking=held)
        backend.load()
        a = backend.append(b"a")
        await turn()  # written, fsync 0 (of events.0) running
        b = backend.append(b"b")
        await turn()  # written to events.0 too, waits for the next group
        compacted = backend.compact(b"state after a, b")
        c = backend.append(b"c")
        await turn()  # written to events.1
        self.assertEqual(held.names(), ["fsync", "fsync"])
        held.release(1)  # compaction's fsync of events.0
        self.successResultOf(b)
        self.assertNoResult(a)
        self.assertEqual(held.names(), ["fsync", "_write_compaction"])
        held.release(0)  # the first group's fsync, still on events.0: not closed under it
        self.successResultOf(a)
        self.assertNoResult(c)
        self.assertEqual(held.names(), ["_write_compaction", "fsync"])
        held.release(0)
        self.assertNoResult(compacted)  # events.0 closes after the fsyncs running now
        held.release(0)
        self.successResultOf(c)
        self.successResultOf(compacted)
        d = backend.close()
        held.release_all()
        await d
        self.assertEqual(self.aof().load(), (b"state after a, b", [b"c"]))

    async def test_close_waits_for_the_fsync_running(self):
        held = Held()
        backend = self.aof(fsync="always", blocking=held)
        backend.load()
        a = backend.append(b"a")
        await turn()
        b = backend.append(b"b")
        closed = backend.close()
        self.assertNoResult(closed)
        self.assertNoResult(b)
        held.release()
        self.successResultOf(a)
        self.successResultOf(b)
        self.successResultOf(closed)
        self.assertEqual(self.aof().load()[1], [b"a", b"b"])

    async def test_inline_blocking_calls(self):
        # A `blocking` hook may run the call at once: compactions still happen each time.
        backend = self.aof(fsync="always", blocking=lambda f, *a: defer.maybeDeferred(f, *a))
        backend.load()
        for n in range(3):
            d = backend.append(b"r%d" % n)
            await turn()
            self.successResultOf(d)
            self.successResultOf(backend.compact(b"state %d" % n))
        backend.append(b"last")
        await backend.close()
        self.assertEqual(self.aof().load(), (b"state 2", [b"last"]))

    def test_everysec_syncs_once_a_second(self):
        # A Clock stands for the reactor: the second passes when the test says so.
        clock = Clock()
        held = Held()
        backend = self.aof(fsync="everysec", blocking=held, reactor=clock)
        backend.load()
        self.successResultOf(backend.append(b"a"))  # everysec: acknowledged at once
        clock.advance(0)  # the group write
        clock.advance(0.99)
        self.assertEqual(held.names(), [])  # no fsync before the second is up
        clock.advance(0.01)
        self.assertEqual(held.names(), ["fsync"])
        held.release()
        clock.advance(1.0)  # and one more a second later
        self.assertEqual(held.names(), ["fsync"])
        held.release()
        d = backend.close()
        self.successResultOf(d)
        self.assertEqual(self.aof().load()[1], [b"a"])


# -- the master's codec ------------------------------------------------------------------------

SPEC = JobSpec(job_id="j1", command=("echo", "hi"), env=(("A", "1"), ("B", "2")), cwd="/tmp",
               priority=3, tags=frozenset({"gpu", "cuda"}), timeout=5.0, retries=2, delay=1.5,
               name="hello", script_name="s.py", script=b"print(1)\n\x00\xff",
               affinity="w1")
TEMPLATE = ev.RunTemplate(
    name="pipe", specs=(JobSpec("a", ["true"]),
                        JobSpec("g", [], kind="gate", message="ok?", depends_on=["a"],
                                timeout=3600.0, on_timeout="approve"),
                        JobSpec("b", ["true"], depends_on=["g"], retries=1)),
    agent_run_id="agent-7", stage="build", max_jobs=50)


def one_of_each() -> list:
    return [
        ev.JobSubmitted(SPEC),
        ev.DagSubmitted("pipe-1", TEMPLATE),
        ev.JobsAdded("pipe-1", (JobSpec("c", ["true"], depends_on=["b"]),), "pipe-1/a"),
        ev.WorkerJoined("w1", "worker one", "10.0.0.1", frozenset({"GPU"}), 4,
                        (ev.JobReport("j1", 1),),
                        (ev.JobReport("j2", 2, 0), ev.JobReport("j3", 1, None, "killed"))),
        ev.WorkerDisconnected("w1"),
        ev.WorkerLost("w1", "no heartbeat for 10s"),
        ev.MasterRestarted(),
        ev.WorkerRetiring("w1", "idle for 45s"),
        ev.ServiceReported("api.1", "w1", 1, {"state": "RUNNING", "port": 20001, "pid": 42}),
        ev.JobFinished("j1", "w1", 2, None, "timeout after 5s"),
        ev.CancelRequested("j1", "by alice"),
        ev.RunCancelRequested("pipe-1", "by bob"),
        ev.GateDecided("pipe-1/g", True, "carol", "looks fine"),
        ev.ResultSet("j1", {"rows": [1, 2.5, "three", None, True], "blob": b"\x00"}),
        ev.ScheduleAdded("nightly", "0 3 * * *", TEMPLATE),
        ev.ScheduleRemoved("nightly"),
        ev.TimerFired(("ready", "j1", 2)),
        ev.Forget(("j1", "j2"), ("pipe-1",)),
    ]


class CodecTests(SynchronousTestCase):
    def test_every_persisted_event_round_trips(self):
        events = one_of_each()
        self.assertEqual({type(e) for e in events}, set(PERSISTED))
        for event in events:
            at, back = decode_event(encode_event(event, 1234.5))
            self.assertEqual(at, 1234.5)
            self.assertEqual(back, event)
            self.assertIs(type(back), type(event))

    def test_events_that_need_no_record_are_not_persisted(self):
        for cls in (ev.WorkerHeartbeat, ev.JobStarted, ev.Tick):
            self.assertNotIn(cls, PERSISTED)

    def test_every_spec_field_round_trips_and_old_records_still_decode(self):
        from titan.core.codec import spec_from_record, spec_to_record
        service = JobSpec(job_id="api", command=("serve",), kind="service", port="auto",
                          restart="always", health="http:/ready", depends_on=("db",))
        for spec in (SPEC, service, JobSpec("plain", ["true"]), *TEMPLATE.specs):
            record = spec_to_record(spec)
            back = spec_from_record(normal(record))
            self.assertEqual(back, spec)
            self.assertEqual(back.to_wire(), spec.to_wire())
            # What logs and snapshots written before the compact form hold: the full map.
            self.assertEqual(spec_from_record(normal(spec.to_wire())), spec)
        self.assertEqual(spec_to_record(JobSpec("plain", ["true"])), ["plain", ["true"]])

    def test_garbage_is_a_record_error(self):
        for junk in (b"", b"\xc1", msgpack.packb([1.0, "NoSuchEvent"]),
                     msgpack.packb([1.0, "JobFinished", "too few"])):
            self.assertRaises(RecordError, decode_event, junk)

    def test_records_number_their_event_and_old_named_records_still_decode(self):
        from titan.core.codec import CODES, decode_events
        self.assertEqual(set(CODES), set(PERSISTED))
        self.assertEqual(len(set(CODES.values())), len(CODES))
        # Logs on disk hold these numbers: they never change.
        self.assertEqual((CODES[ev.JobSubmitted], CODES[ev.JobFinished], CODES[ev.Forget],
                          CODES[ev.ServiceReported]), (1, 2, 17, 18))
        for event in one_of_each():
            record = msgpack.unpackb(encode_event(event, 7.5), raw=False)
            self.assertEqual(record[1], CODES[type(event)])
            record[1] = type(event).__name__  # as records were written before the numbers
            named = msgpack.packb(record, use_bin_type=True)
            self.assertEqual(decode_event(named), (7.5, event))
            self.assertEqual(list(decode_events([named, named])), [(7.5, event)] * 2)

    def test_decode_events_is_decode_event_of_each_record(self):
        from titan.core.codec import decode_events
        events = one_of_each() * 300  # several chunks, the last one partial
        records = [encode_event(e, 100.0 + i) for i, e in enumerate(events)]
        self.assertEqual(list(decode_events(records)), [decode_event(r) for r in records])
        self.assertEqual(list(decode_events(iter(records[:3]))),
                         [decode_event(r) for r in records[:3]])
        self.assertEqual(list(decode_events([])), [])

    def test_decode_events_stops_at_the_bad_record_after_the_good_ones(self):
        from titan.core.codec import decode_events
        good = [encode_event(ev.JobFinished(f"j{i}", "w1", 1, 0), float(i)) for i in range(600)]
        for junk in (b"\xc1", msgpack.packb([1.0, "NoSuchEvent"]), msgpack.packb([1.0, 99]),
                     msgpack.packb([1.0, 2, "j", "w", 1, 0, None, "one too many"]),
                     b"\x93\x01",  # an array that takes its last values from the next record
                     msgpack.packb([1.0, "JobFinished", "too few"]) + b"\x01"):
            seen = []
            with self.assertRaises(RecordError):
                for at, event in decode_events(good[:520] + [junk] + good[520:]):
                    seen.append(event)
            self.assertEqual(len(seen), 520, junk)
            self.assertEqual(seen[-1], ev.JobFinished("j519", "w1", 1, 0))


def busy_scheduler() -> Scheduler:
    """Workers, standalone jobs in every state, a DAG run waiting at a gate, a schedule."""
    s = Scheduler(heartbeat_timeout=5.0, max_jobs_per_run=100)
    now = 1_700_000_000.0
    s.apply(ev.WorkerJoined("w1", "one", "h1", frozenset(), 2), now)
    s.apply(ev.WorkerJoined("w2", "two", "h2", frozenset({"GPU"}), 1), now)
    template = parse_dag({"name": "pipe", "agent_run_id": "agent-1", "stage": "s1", "jobs": [
        {"id": "a", "command": ["true"]},
        {"id": "g", "kind": "gate", "depends_on": ["a"], "message": "ship it?"},
        {"id": "b", "command": ["true"], "depends_on": ["g"]},
    ]})
    s.apply(ev.DagSubmitted("pipe-1", template), now)
    for i in range(6):
        s.apply(ev.JobSubmitted(JobSpec(f"j{i}", ["true"], priority=i % 3,
                                        retries=1 if i == 1 else 0)), now)
    s.apply(ev.JobSubmitted(JobSpec("gpu", ["train"], tags=["gpu"])), now)
    s.apply(ev.JobSubmitted(JobSpec("later", ["true"], delay=60.0)), now)
    running = {j.job_id: j for j in s.jobs.values() if j.state is JobState.RUNNING}
    now += 1
    for job_id, code in (("j0", 0), ("j1", 3)):
        if job_id in running:
            job = running[job_id]
            s.apply(ev.JobFinished(job_id, job.worker_id, job.attempt, code), now)
    s.apply(ev.ResultSet("j0", {"answer": 42}), now)
    s.apply(ev.CancelRequested("j5"), now)
    s.apply(ev.ScheduleAdded("nightly", "0 3 * * *", template), now)
    now += 1
    for job in list(s.jobs.values()):
        if job.state is JobState.RUNNING and job.job_id == "pipe-1/a":
            s.apply(ev.JobFinished(job.job_id, job.worker_id, job.attempt, 0), now)
    s.apply(ev.WorkerDisconnected("w2"), now)
    return s


def normal(data: dict) -> dict:
    """A snapshot as it comes back from disk (tuples become lists)."""
    return msgpack.unpackb(msgpack.packb(data, use_bin_type=True), raw=False,
                           strict_map_key=False)


class SnapshotTests(SynchronousTestCase):
    def test_the_busy_scheduler_is_busy(self):
        s = busy_scheduler()
        states = {j.job_id: j.state for j in s.jobs.values()}
        self.assertEqual(states["pipe-1/g"], JobState.WAITING_APPROVAL)
        self.assertEqual(states["j0"], JobState.COMPLETED)
        self.assertEqual(states["j5"], JobState.CANCELLED)
        self.assertIn(JobState.RUNNING, states.values())
        self.assertIn(JobState.PENDING, states.values())
        self.assertIn("nightly", s.schedules)
        self.assertIn("pipe-1", s.runs)

    def test_restore_gives_the_same_snapshot(self):
        s = busy_scheduler()
        data = normal(snapshot(s))
        again = Scheduler(heartbeat_timeout=5.0, max_jobs_per_run=100)
        restore(again, data)
        self.assertEqual(normal(snapshot(again)), data)

    def test_restored_scheduler_decides_the_same(self):
        s = busy_scheduler()
        again = Scheduler(heartbeat_timeout=5.0, max_jobs_per_run=100)
        restore(again, normal(snapshot(s)))
        now = 1_700_000_100.0
        follow = [ev.GateDecided("pipe-1/g", True, "dave"), ev.MasterRestarted(),
                  ev.WorkerJoined("w3", "three", "h3", frozenset({"GPU"}), 3),
                  ev.TimerFired(("ready", "later", 0)), ev.Tick()]
        for event in follow:
            now += 1
            self.assertEqual(s.apply(event, now), again.apply(event, now), event)
        self.assertEqual(normal(snapshot(again)), normal(snapshot(s)))

    def test_unknown_version_is_refused(self):
        self.assertRaises(ValueError, restore, Scheduler(), {"v": 99})
