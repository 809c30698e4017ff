"""SQLite (stdlib sqlite3, WAL) as a second event-log backend.

All database work happens on one dedicated thread (a connection belongs to its thread), never
on the reactor's.  Appends are batched: one transaction per turn of the reactor.

Records get their ids here, on the reactor's thread, not from SQLite: after a compaction
deletes every row, SQLite would start again at id 1, under the snapshot's `upto`.

In WAL mode `synchronous=NORMAL` syncs the WAL only at checkpoints, so for `everysec` a
checkpoint runs once a second when something was committed; `sync()` checkpoints with
`synchronous=FULL` whatever the policy.

The connection holds the database in `locking_mode=EXCLUSIVE` (one master per data dir
anyway): WAL then keeps its index in the process's memory instead of a `-shm` file mapped
into it, so a shared-memory file that cannot be written (a full or read-only disk) is an
error SQLite reports, not a SIGBUS that kills the master without a word.

A batch that fails to commit (`database or disk is full`, a read-only file) is rolled back and
kept: its records, and every batch queued behind it, stay pending and unacknowledged while
`unavailable` says why, and a probe commits them again with backoff (ids are given here, so
the retried rows take their places in the log).  Waiters fire only once every record up to
theirs is committed.
"""
from __future__ import annotations

import os
import sqlite3
from contextlib import contextmanager
from typing import Optional

from twisted.internet import defer, threads
from twisted.internet.task import LoopingCall
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.python.threadpool import ThreadPool
from zope.interface import implementer

from titan.interfaces import CorruptLog, IPersistence, StorageUnavailable
from titan.persistence.availability import Availability, why

SYNCHRONOUS = {"always": "FULL", "everysec": "NORMAL", "no": "OFF"}
SCHEMA = """
CREATE TABLE IF NOT EXISTS events (id INTEGER PRIMARY KEY, data BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS snapshot (id INTEGER PRIMARY KEY CHECK (id = 1),
                                     upto INTEGER NOT NULL, data BLOB NOT NULL);
"""




class _HeldBack(Exception):
    """A batch queued behind one that failed: not tried, so that the log keeps its order."""


@contextmanager
def _transaction(db):
    """BEGIN ... COMMIT, rolled back if anything in it fails."""
    try:
        db.execute("BEGIN")
        yield db
        db.execute("COMMIT")
    except BaseException:
        try:
            db.execute("ROLLBACK")
        except sqlite3.Error:
            pass  # rolled back already
        raise


@implementer(IPersistence)
class SQLitePersistence(Availability):
    log = Logger()

    def __init__(self, directory: str, fsync: str = "everysec", reactor=None) -> None:
        if fsync not in SYNCHRONOUS:
            raise ValueError(f"fsync must be one of always, everysec, no, not {fsync!r}")
        if reactor is None:
            from twisted.internet import reactor
        self.reactor = reactor
        self.directory = directory
        self.path = os.path.join(directory, "events.sqlite")
        self.policy = fsync
        self._pool = ThreadPool(1, 1, name="titan-sqlite")
        self._shutdown_trigger = None
        self._db: Optional[sqlite3.Connection] = None
        self.connect = sqlite3.connect  # how the database thread opens it (tests wrap it)
        self._buffer: list[tuple[int, bytes]] = []
        # (id, Deferred): fires once every record up to that id is committed.
        self._waiters: list[tuple[int, defer.Deferred]] = []
        self._done_upto = 0  # the last id of the last batch the database thread finished
        self._failed: list[tuple[int, bytes]] = []  # rows that failed or were held back
        self._broken = False  # (database thread) a batch failed: hold back the next ones
        self._init_availability()
        self._checkpoint_trouble = False
        self._flush_call = None
        self._ticker: Optional[LoopingCall] = None
        self._unsynced = False  # committed since the last checkpoint (everysec)
        self._closers: Optional[list[defer.Deferred]] = None  # who waits for close
        self._last_id = 0
        self._inserting = 0  # batches handed to the database thread and not yet committed
        self.appended = 0
        self.bytes_since_compaction = 0

    def _run(self, f, *args) -> defer.Deferred:
        return threads.deferToThreadPool(self.reactor, self._pool, f, *args)

    # -- on the database thread ------------------------------------------------------------

    def _open_db(self):
        # EXCLUSIVE before the first access in WAL mode: no -shm file, no mmap (see above).
        db = self.connect(self.path, isolation_level=None, check_same_thread=False)
        try:
            db.execute("PRAGMA locking_mode=EXCLUSIVE")
            db.execute("PRAGMA journal_mode=WAL")
        except BaseException:
            db.close()
            raise
        return db

    def _connect(self) -> None:
        db = self._open_db()
        try:
            db.execute(f"PRAGMA synchronous={SYNCHRONOUS[self.policy]}")
            db.executescript(SCHEMA)
        except BaseException:
            db.close()
            raise
        self._db = db

    def _write(self, sql: str, rows: list[tuple[int, bytes]]) -> None:
        if self._db is None:
            self._connect()
        with _transaction(self._db) as db:
            db.executemany(sql, rows)

    def _insert(self, rows: list[tuple[int, bytes]]) -> None:
        if self._broken:
            raise _HeldBack()
        try:
            self._write("INSERT INTO events (id, data) VALUES (?, ?)", rows)
        except BaseException:
            self._broken = True
            raise

    def _insert_again(self, rows: list[tuple[int, bytes]]) -> None:
        # OR REPLACE: a COMMIT that reported a failure may have stored its rows all the same.
        self._write("INSERT OR REPLACE INTO events (id, data) VALUES (?, ?)", rows)
        self._broken = False

    def _checkpoint(self, full: bool) -> None:
        db = self._db
        if full and self.policy != "always":
            db.execute("PRAGMA synchronous=FULL")
        try:
            db.execute("PRAGMA wal_checkpoint(PASSIVE)")
        finally:
            if full and self.policy != "always":
                db.execute(f"PRAGMA synchronous={SYNCHRONOUS[self.policy]}")

    def _compact(self, snapshot: bytes, upto: int) -> None:
        if self._broken:
            raise StorageUnavailable("records before the snapshot are not stored yet")
        with _transaction(self._db) as db:
            db.execute("INSERT OR REPLACE INTO snapshot (id, upto, data) VALUES (1, ?, ?)",
                       (upto, snapshot))
            db.execute("DELETE FROM events WHERE id <= ?", (upto,))

    def _disconnect(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None

    # -- IPersistence ----------------------------------------------------------------------

    def load(self):
        os.makedirs(self.directory, exist_ok=True)
        try:
            db = self._open_db()
            try:
                db.executescript(SCHEMA)
                row = db.execute("SELECT upto, data FROM snapshot WHERE id = 1").fetchone()
                upto, snapshot = (row[0], bytes(row[1])) if row else (0, None)
                records = [bytes(r[0]) for r in db.execute(
                    "SELECT data FROM events WHERE id > ? ORDER BY id", (upto,))]
                last = db.execute("SELECT COALESCE(MAX(id), 0) FROM events").fetchone()[0]
            finally:
                db.close()
        except sqlite3.DatabaseError as e:
            raise CorruptLog(self.path, 0, f"SQLite says: {e}") from None
        self._last_id = self._done_upto = max(last, upto)
        self._pool.start()
        self._shutdown_trigger = self.reactor.addSystemEventTrigger(
            "during", "shutdown", self._stop_pool)
        # If it fails, the first insert opens it again (and reports why it cannot).
        self._run(self._connect).addErrback(lambda f: None)
        if self.policy == "everysec":
            self._ticker = LoopingCall(self._tick)
            self._ticker.clock = self.reactor
            self._ticker.start(1.0, now=False).addErrback(
                lambda f: self.log.failure("the once-a-second checkpoint stopped", f))
        return snapshot, records

    def _stop_pool(self) -> None:
        if self._pool.started:
            self._pool.stop()

    def _tick(self) -> Optional[defer.Deferred]:
        if not self._unsynced or self.unavailable is not None:
            return None
        self._unsynced = False

        def checked(result):
            if isinstance(result, Failure):
                if not self._checkpoint_trouble:  # one line per spell of failures
                    self._checkpoint_trouble = True
                    self.log.warn("cannot checkpoint {path}: {why}; the WAL keeps the "
                                  "commits meanwhile", path=self.path,
                                  why=result.getErrorMessage())
                self._unsynced = True
            elif self._checkpoint_trouble:
                self._checkpoint_trouble = False
                self.log.info("checkpoints of {path} work again", path=self.path)

        return self._run(self._checkpoint, False).addBoth(checked)

    # -- availability (see titan.persistence.availability) ---------------------------------

    def _closing(self) -> bool:
        return self._closers is not None

    def _probe(self) -> None:
        """Commit what failed again, in id order, with what was appended since."""
        self._retry_call = None
        if self._closers is not None:
            return
        if self._inserting:  # batches still on their way back: look again after them
            self._probe_in(self._retry_delay)
            return
        rows = list(self._pending())
        if not rows:
            self._recovered()
            return
        self._inserting += 1

        def stored(_):
            self._inserting -= 1
            self._unsynced = True
            del self._failed[:len(rows)]
            self._done_upto = max(self._done_upto, rows[-1][0])
            if not self._failed:
                self._recovered()
            self._fire()
            if self._buffer and self._flush_call is None:
                self._flush_call = self.reactor.callLater(0, self._flush)

        def failed(failure):
            self._inserting -= 1
            self._trouble(why("write", self.path, failure.value))

        self._run(self._insert_again, rows).addCallbacks(stored, failed)

    def _pending(self) -> list[tuple[int, bytes]]:
        """Every row not committed (failed, held back or buffered), in id order: _failed."""
        self._failed.extend(self._buffer)
        self._buffer = []
        self._failed.sort()
        return self._failed

    def _stored_through(self) -> int:
        """Every record up to this id is committed."""
        if self._failed:
            return min(self._done_upto, self._failed[0][0] - 1)
        return self._done_upto

    def _fire(self) -> None:
        through = self._stored_through()
        waiters = self._waiters
        n = 0
        while n < len(waiters) and waiters[n][0] <= through:
            n += 1
        if n:
            ready = waiters[:n]
            del waiters[:n]
            for _, d in ready:
                d.callback(None)

    # -- appends ---------------------------------------------------------------------------

    def append(self, record: bytes) -> defer.Deferred:
        self._last_id += 1
        self._buffer.append((self._last_id, record))
        self.appended += 1
        self.bytes_since_compaction += len(record)
        if self._flush_call is None:
            self._flush_call = self.reactor.callLater(0, self._flush)
        if self.policy == "always":
            d: defer.Deferred = defer.Deferred()
            self._waiters.append((self._last_id, d))
            return d
        return defer.succeed(None)

    def barrier(self) -> defer.Deferred:
        if self._last_id <= self._stored_through():
            return defer.succeed(None)
        d: defer.Deferred = defer.Deferred()
        self._waiters.append((self._last_id, d))
        return d

    def _flush(self) -> defer.Deferred:
        self._flush_call = None
        batch, self._buffer = self._buffer, []
        if not batch:
            self._fire()
            return defer.succeed(None)
        if self.unavailable is not None:  # the probe commits them
            self._failed.extend(batch)
            return defer.succeed(None)
        self._inserting += 1
        d = self._run(self._insert, batch)
        self._unsynced = True

        def done(result):
            self._inserting -= 1
            self._done_upto = max(self._done_upto, batch[-1][0])
            self._fire()

        def failed(failure):
            self._inserting -= 1
            self._done_upto = max(self._done_upto, batch[-1][0])
            self._failed.extend(batch)
            self._failed.sort()
            if not failure.check(_HeldBack):
                self._trouble(why("write", self.path, failure.value))
            elif self.unavailable is None:  # (its cause is reported by the batch before)
                self._trouble("a batch before it failed")

        return d.addCallbacks(done, failed)

    def sync(self) -> defer.Deferred:
        if self._flush_call is not None and self._flush_call.active():
            self._flush_call.cancel()
        self._flush_call = None
        d = self._flush()
        if self.unavailable is not None:
            return defer.fail(StorageUnavailable(self.unavailable))
        if not self._pool.started:  # never loaded
            return d
        # The single database thread runs this after the inserts above.
        return self._run(self._checkpoint, True)

    def compact(self, snapshot: bytes) -> defer.Deferred:
        refused = self._cannot_compact()
        if refused is not None:
            return refused
        self.sync().addErrback(lambda _: None)
        upto = self._last_id  # the single database thread runs the inserts first
        appended, size = self.appended, self.bytes_since_compaction
        self.appended = 0
        self.bytes_since_compaction = 0

        def failed(failure):
            self.appended += appended
            self.bytes_since_compaction += size
            self._pause_compactions(failure.getErrorMessage())
            return failure

        return self._run(self._compact, snapshot, upto).addErrback(failed)

    def close(self) -> defer.Deferred:
        done: defer.Deferred = defer.Deferred()
        if self._closers is not None:  # closing (callers waiting) or closed (none left)
            if self._closers:
                self._closers.append(done)
            else:
                done.callback(None)
            return done
        self._closers = [done]
        self._stop_probing()
        if self._ticker is not None and self._ticker.running:
            self._ticker.stop()
        if not self._pool.started:  # never loaded
            self._closed(None)
            return done
        if self.unavailable is not None:  # a last try
            rows, self._failed = self._pending(), []

            def last(_):
                self._done_upto = max(self._done_upto, rows[-1][0])
                self._fire()

            d = self._run(self._insert_again, rows).addCallback(last) if rows \
                else defer.succeed(None)
            d.addErrback(lambda _: None)  # what waits for them is told, in _closed
        else:
            d = self.sync()
        d.addBoth(lambda _: self._run(self._disconnect))
        d.addBoth(self._closed)
        return done

    def _closed(self, result) -> None:
        # Whoever still waits waits for records that were never stored: told so.
        waiters, self._waiters = self._waiters, []
        failed = StorageUnavailable(self.unavailable or "the event log was closed")
        for _, d in waiters:
            d.errback(failed)
        self._stop_pool()
        if self._shutdown_trigger is not None:
            self.reactor.removeSystemEventTrigger(self._shutdown_trigger)
            self._shutdown_trigger = None
        waiters, self._closers = self._closers, []
        for d in waiters:
            if isinstance(result, Failure):
                d.errback(result)
            else:
                d.callback(None)

    def describe(self) -> dict:
        size = sum(os.path.getsize(self.path + s) for s in ("", "-wal")
                   if os.path.exists(self.path + s))
        return {"backend": "sqlite", "path": self.path, "fsync": self.policy, "bytes": size,
                "records_since_compaction": self.appended}
