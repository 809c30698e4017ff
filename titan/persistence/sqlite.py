"""SQLite (stdlib sqlite3, WAL) as a second event-log backend.

All database work happens on one dedicated thread (a connection belongs to its thread), never
on the reactor's.  Appends are batched: one transaction per turn of the reactor.

Records get their ids here, on the reactor's thread, not from SQLite: after a compaction
deletes every row, SQLite would start again at id 1, under the snapshot's `upto`.

In WAL mode `synchronous=NORMAL` syncs the WAL only at checkpoints, so for `everysec` a
checkpoint runs once a second when something was committed; `sync()` checkpoints with
`synchronous=FULL` whatever the policy.
"""
from __future__ import annotations

import os
import sqlite3
from typing import Optional

from twisted.internet import defer, threads
from twisted.internet.task import LoopingCall
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.python.threadpool import ThreadPool
from zope.interface import implementer

from titan.interfaces import CorruptLog, IPersistence

SYNCHRONOUS = {"always": "FULL", "everysec": "NORMAL", "no": "OFF"}
SCHEMA = """
CREATE TABLE IF NOT EXISTS events (id INTEGER PRIMARY KEY, data BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS snapshot (id INTEGER PRIMARY KEY CHECK (id = 1),
                                     upto INTEGER NOT NULL, data BLOB NOT NULL);
"""


def _nothing() -> None:
    pass


@implementer(IPersistence)
class SQLitePersistence:
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
        self._buffer: list[tuple[int, bytes]] = []
        self._waiting: list[defer.Deferred] = []
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

    def _connect(self) -> None:
        db = sqlite3.connect(self.path, isolation_level=None)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute(f"PRAGMA synchronous={SYNCHRONOUS[self.policy]}")
        db.executescript(SCHEMA)
        self._db = db

    def _insert(self, rows: list[tuple[int, bytes]]) -> None:
        db = self._db
        db.execute("BEGIN")
        db.executemany("INSERT INTO events (id, data) VALUES (?, ?)", rows)
        db.execute("COMMIT")

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
        db = self._db
        db.execute("BEGIN")
        db.execute("INSERT OR REPLACE INTO snapshot (id, upto, data) VALUES (1, ?, ?)",
                   (upto, snapshot))
        db.execute("DELETE FROM events WHERE id <= ?", (upto,))
        db.execute("COMMIT")

    def _disconnect(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None

    # -- IPersistence ----------------------------------------------------------------------

    def load(self):
        os.makedirs(self.directory, exist_ok=True)
        try:
            db = sqlite3.connect(self.path)
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
        self._last_id = max(last, upto)
        self._pool.start()
        self._shutdown_trigger = self.reactor.addSystemEventTrigger(
            "during", "shutdown", self._stop_pool)
        self._run(self._connect).addErrback(
            lambda f: self.log.failure("cannot open {path}", f, path=self.path))
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
        if not self._unsynced:
            return None
        self._unsynced = False
        return self._run(self._checkpoint, False).addErrback(
            lambda f: self.log.failure("checkpoint failed", f))

    def append(self, record: bytes) -> defer.Deferred:
        self._last_id += 1
        self._buffer.append((self._last_id, record))
        self.appended += 1
        self.bytes_since_compaction += len(record)
        if self._flush_call is None:
            self._flush_call = self.reactor.callLater(0, self._flush)
        if self.policy == "always":
            d: defer.Deferred = defer.Deferred()
            self._waiting.append(d)
            return d
        return defer.succeed(None)

    def barrier(self) -> defer.Deferred:
        if self._buffer:  # fires with the insert of the buffered batch
            d: defer.Deferred = defer.Deferred()
            self._waiting.append(d)
            return d
        if self._inserting:  # the one database thread gets to this after those inserts
            return self._run(_nothing)
        return defer.succeed(None)

    def _flush(self) -> defer.Deferred:
        self._flush_call = None
        batch, self._buffer = self._buffer, []
        waiting, self._waiting = self._waiting, []
        if not batch:
            for w in waiting:
                w.callback(None)
            return defer.succeed(None)
        self._inserting += 1
        d = self._run(self._insert, batch)
        self._unsynced = True

        def done(result):
            self._inserting -= 1
            for w in waiting:
                w.callback(None)

        def failed(failure):
            self._inserting -= 1
            self.log.failure("could not store {n} events", failure, n=len(batch))
            for w in waiting:
                w.errback(failure)

        return d.addCallbacks(done, failed)

    def sync(self) -> defer.Deferred:
        if self._flush_call is not None and self._flush_call.active():
            self._flush_call.cancel()
        d = self._flush()
        if not self._pool.started:  # never loaded
            return d
        # The single database thread runs this after the inserts above.
        return self._run(self._checkpoint, True)

    def compact(self, snapshot: bytes) -> defer.Deferred:
        self.sync()
        upto = self._last_id  # the single database thread runs the inserts first
        self.appended = 0
        self.bytes_since_compaction = 0
        return self._run(self._compact, snapshot, upto)

    def close(self) -> defer.Deferred:
        done: defer.Deferred = defer.Deferred()
        if self._closers is not None:  # closing (callers waiting) or closed (none left)
            if self._closers:
                self._closers.append(done)
            else:
                done.callback(None)
            return done
        self._closers = [done]
        if self._ticker is not None and self._ticker.running:
            self._ticker.stop()
        if not self._pool.started:  # never loaded
            self._closed(None)
            return done
        d = self.sync()
        d.addBoth(lambda _: self._run(self._disconnect))
        d.addBoth(self._closed)
        return done

    def _closed(self, result) -> None:
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
