"""SQLite (stdlib sqlite3, WAL) as a second event-log backend.

All database work happens on one dedicated thread (a connection belongs to its thread), never
on the reactor's.  Appends are batched: one transaction per turn of the reactor.
"""
from __future__ import annotations

import os
import sqlite3
from typing import Optional

from twisted.internet import defer, threads
from twisted.logger import Logger
from twisted.python.threadpool import ThreadPool
from zope.interface import implementer

from titan.interfaces import CorruptLog, IPersistence

SYNCHRONOUS = {"always": "FULL", "everysec": "NORMAL", "no": "OFF"}
SCHEMA = """
CREATE TABLE IF NOT EXISTS events (id INTEGER PRIMARY KEY, data BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS snapshot (id INTEGER PRIMARY KEY CHECK (id = 1),
                                     upto INTEGER NOT NULL, data BLOB NOT NULL);
"""


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
        self._db: Optional[sqlite3.Connection] = None
        self._buffer: list[bytes] = []
        self._waiting: list[defer.Deferred] = []
        self._flush_call = None
        self._last_id = 0
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

    def _insert(self, records: list[bytes]) -> None:
        db = self._db
        db.execute("BEGIN")
        db.executemany("INSERT INTO events (data) VALUES (?)", [(r,) for r in records])
        db.execute("COMMIT")

    def _compact(self, snapshot: bytes, upto: int) -> None:
        db = self._db
        db.execute("BEGIN")
        db.execute("INSERT OR REPLACE INTO snapshot (id, upto, data) VALUES (1, ?, ?)",
                   (upto, snapshot))
        db.execute("DELETE FROM events WHERE id <= ?", (upto,))
        db.execute("COMMIT")

    # -- IPersistence ----------------------------------------------------------------------

    def load(self):
        os.makedirs(self.directory, exist_ok=True)
        try:
            db = sqlite3.connect(self.path)
            db.executescript(SCHEMA)
            row = db.execute("SELECT upto, data FROM snapshot WHERE id = 1").fetchone()
            upto, snapshot = (row[0], bytes(row[1])) if row else (0, None)
            records = [bytes(r[0]) for r in
                       db.execute("SELECT data FROM events WHERE id > ? ORDER BY id", (upto,))]
            self._last_id = db.execute("SELECT COALESCE(MAX(id), 0) FROM events").fetchone()[0]
            self._last_id = max(self._last_id, upto)
            db.close()
        except sqlite3.DatabaseError as e:
            raise CorruptLog(self.path, 0, f"SQLite says: {e}") from None
        self._pool.start()
        self.reactor.addSystemEventTrigger("during", "shutdown", self._pool.stop)
        self._run(self._connect)
        return snapshot, records

    def append(self, record: bytes) -> defer.Deferred:
        self._buffer.append(record)
        self._last_id += 1
        self.appended += 1
        self.bytes_since_compaction += len(record)
        if self._flush_call is None:
            self._flush_call = self.reactor.callLater(0, self._flush)
        if self.policy == "always":
            d: defer.Deferred = defer.Deferred()
            self._waiting.append(d)
            return d
        return defer.succeed(None)

    def _flush(self) -> defer.Deferred:
        self._flush_call = None
        batch, self._buffer = self._buffer, []
        waiting, self._waiting = self._waiting, []
        if not batch:
            return defer.succeed(None)
        d = self._run(self._insert, batch)

        def done(result):
            for w in waiting:
                w.callback(None)

        def failed(failure):
            self.log.failure("could not store {n} events", failure, n=len(batch))
            for w in waiting:
                w.errback(failure)

        return d.addCallbacks(done, failed)

    def sync(self) -> defer.Deferred:
        if self._flush_call is not None and self._flush_call.active():
            self._flush_call.cancel()
        return self._flush()

    def compact(self, snapshot: bytes) -> defer.Deferred:
        self.sync()
        upto = self._last_id  # the single database thread runs the inserts first
        self.appended = 0
        self.bytes_since_compaction = 0
        return self._run(self._compact, snapshot, upto)

    def close(self) -> defer.Deferred:
        d = self.sync()

        def shut(_):
            return self._run(lambda: self._db and self._db.close())

        d.addCallback(shut)
        d.addBoth(lambda r: (self._pool.stop() if self._pool.started else None, r)[1])
        return d

    def describe(self) -> dict:
        size = sum(os.path.getsize(self.path + s) for s in ("", "-wal")
                   if os.path.exists(self.path + s))
        return {"backend": "sqlite", "path": self.path, "fsync": self.policy, "bytes": size,
                "records_since_compaction": self.appended}
