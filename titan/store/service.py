"""`twistd titan-store`: the listener, the append-only file, the expiry sweep.

On start the data dir is locked, the append-only file (titan.persistence.aof, under
<data_dir>/aof) is loaded — a snapshot, then the journal records after it, replayed at the
times they were written — and the store starts listening; the bound port goes into
<data_dir>/store.port.  While it runs, the commands that change data are journalled and
appended once per turn of the reactor; the file is compacted (a snapshot of the data
replaces it) once it has grown by `compact_after_bytes` and by more than the last snapshot.
"""
from __future__ import annotations

import fcntl
import os
import time
from typing import Optional

from twisted.application.service import MultiService
from twisted.internet import defer
from twisted.internet.task import LoopingCall
from twisted.logger import Logger
from twisted.python.failure import Failure

from titan.interfaces import CorruptLog
from titan.persistence.aof import AOFPersistence
from titan.datadir import write_file
from titan.listener import ListenerService
from titan.store.commands import Store
from titan.store.config import StoreConfig
from titan.store.server import StoreFactory

PORT_FILE = "store.port"
LOCK_FILE = "LOCK"
SWEEP_LIMIT = 20000  # keys removed per sweep before the reactor gets a turn


class StoreService(MultiService):
    log = Logger()

    def __init__(self, config: StoreConfig = StoreConfig(), reactor=None,
                 clock=time.time) -> None:
        super().__init__()
        if reactor is None:
            from twisted.internet import reactor
        self.reactor = reactor
        self.config = config
        self.data_dir = os.path.abspath(os.path.expanduser(config.data_dir))
        password = config.password.encode() if config.password else None
        self.store = Store(password=password, clock=clock)
        self.store.on_journal = self._schedule_flush
        self.store.on_rewrite = self._rewrite_command
        self.store.info_hooks.update({
            "Server": self._info_server, "Clients": self._info_clients,
            "Memory": self._info_memory, "Persistence": self._info_persistence,
            "Stats": self._info_stats})
        self.store.config_values.update({
            "appendonly": "yes", "appendfsync": config.fsync, "save": "",
            "databases": "1", "maxclients": str(config.max_clients),
            "proto-max-bulk-len": str(config.max_bulk_bytes)})
        self.factory = StoreFactory(self.store, max_bulk=config.max_bulk_bytes,
                                    max_clients=config.max_clients,
                                    pubsub_buffer_bytes=config.pubsub_buffer_bytes,
                                    hold_writes=config.fsync == "always",
                                    auth_timeout=config.auth_timeout, reactor=reactor)
        self.listener = ListenerService(reactor, config.listen, self.factory, self._listening,
                                        who="titan-store")
        self.listener.setServiceParent(self)
        self.aof: Optional[AOFPersistence] = None
        self._lock_fd: Optional[int] = None
        self._flush_call = None
        self._compacting: Optional[defer.Deferred] = None
        self._snapshot_bytes = 0
        self.compactions = 0
        self.last_compaction_ok = True
        self._sweeper = LoopingCall(self._sweep)
        self._sweeper.clock = reactor
        self._sweep_again = None
        self.port: Optional[int] = None

    # -- life cycle ------------------------------------------------------------------------

    def _prepare(self) -> None:
        if self.aof is not None:
            return
        os.makedirs(self.data_dir, mode=0o700, exist_ok=True)
        self._lock()
        self.aof = AOFPersistence(os.path.join(self.data_dir, "aof"), self.config.fsync,
                                  reactor=self.reactor)
        start = time.perf_counter()
        try:
            snapshot, records = self.aof.load()
        except CorruptLog as e:
            raise SystemExit(f"titan-store: cannot start: {e}")
        store = self.store
        db = store.db
        if snapshot is not None:
            db.restore(snapshot)
            self._snapshot_bytes = len(snapshot)
        count = 0
        try:
            for i, record in enumerate(records):
                count += store.replay(record)
        except Exception as e:
            raise SystemExit(f"titan-store: cannot start: record {i} of the append-only "
                             f"file in {self.aof.directory} cannot be replayed: {e}")
        db.tick()
        while db.sweep(1 << 30)[1]:
            pass
        if snapshot is not None or count:
            self.log.info("titan-store loaded {keys} keys ({commands} commands replayed) in "
                          "{seconds:.3f}s", keys=db.dbsize(), commands=count,
                          seconds=time.perf_counter() - start)

    def _lock(self) -> None:
        path = os.path.join(self.data_dir, LOCK_FILE)
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            other = os.read(fd, 32).decode(errors="replace").strip() or "?"
            os.close(fd)
            raise SystemExit(f"titan-store: {self.data_dir} is in use by another titan-store "
                             f"(pid {other})")
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._lock_fd = fd

    def privilegedStartService(self) -> None:
        self._prepare()
        super().privilegedStartService()

    def startService(self) -> None:
        self._prepare()
        super().startService()
        self._sweeper.start(self.config.sweep_interval, now=False)

    def stopService(self):
        if self._sweeper.running:
            self._sweeper.stop()
        if self._sweep_again is not None and self._sweep_again.active():
            self._sweep_again.cancel()
        stopped = defer.maybeDeferred(super().stopService)
        for client in list(self.factory.clients):
            client.transport.loseConnection()
        try:
            os.unlink(os.path.join(self.data_dir, PORT_FILE))
        except OSError:
            pass

        def close(_):
            if self._flush_call is not None and self._flush_call.active():
                self._flush_call.cancel()
            self._flush()
            self.store.on_journal = None  # nothing more is written
            closing = self.aof.close() if self.aof is not None else defer.succeed(None)
            return closing.addBoth(self._unlock)

        return stopped.addBoth(close)

    def _unlock(self, result):
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None
        return result

    def _listening(self, port) -> None:
        address = port.getHost()
        self.port = getattr(address, "port", None)
        write_file(self.data_dir, PORT_FILE,
                   f"{self.port if self.port is not None else address}\n")
        self.log.info("titan-store listening on {address}, data in {data_dir} (fsync "
                      "{fsync})", address=address, data_dir=self.data_dir,
                      fsync=self.config.fsync)

    # -- the journal -----------------------------------------------------------------------

    def _schedule_flush(self) -> None:
        if self._flush_call is None:
            self._flush_call = self.reactor.callLater(0, self._flush)

    def _flush(self) -> None:
        self._flush_call = None
        record = self.store.take_journal()
        seq, waiters = self.factory.take_waiters()
        if record is None:
            for w in waiters:
                w.release(seq)
            return
        d = self.aof.append(record)
        if waiters:
            d.addCallbacks(self._release, self._write_failed, callbackArgs=(seq, waiters),
                           errbackArgs=(waiters,))
        aof = self.aof
        if self._compacting is None and \
                aof.bytes_since_compaction > self.config.compact_after_bytes and \
                aof.bytes_since_compaction > self._snapshot_bytes:
            self.compact()

    @staticmethod
    def _release(_, seq: int, waiters) -> None:
        for w in waiters:
            w.release(seq)

    def _write_failed(self, failure: Failure, waiters) -> None:
        self.log.failure("the append-only file could not be synced; the clients waiting "
                         "for it are disconnected", failure)
        for w in waiters:
            w._held = None
            w.transport.abortConnection()

    def compact(self) -> defer.Deferred:
        """Write a snapshot of the data in place of the log so far (BGREWRITEAOF)."""
        if self._compacting is not None:
            return self._compacting
        if self._flush_call is not None and self._flush_call.active():
            self._flush_call.cancel()
            self._flush_call = None
        self._flush()  # the snapshot stands for every record appended before it
        if self._compacting is not None:  # _flush started one
            return self._compacting
        start = time.perf_counter()
        snapshot = self.store.db.snapshot()
        self._snapshot_bytes = len(snapshot)
        self.log.info("titan-store compacting: a snapshot of {keys} keys, {size} bytes, "
                      "made in {seconds:.3f}s", keys=self.store.db.dbsize(),
                      size=len(snapshot), seconds=time.perf_counter() - start)
        d = self.aof.compact(snapshot)
        self._compacting = d

        def done(result):
            self._compacting = None
            self.compactions += 1
            self.last_compaction_ok = not isinstance(result, Failure)
            return result

        d.addBoth(done)
        d.addErrback(lambda f: self.log.failure("compaction failed", f))
        return d

    def _rewrite_command(self) -> str:
        if self._compacting is not None:
            return "Background append only file rewriting already in progress"
        self.compact()
        return "Background append only file rewriting started"

    # -- expiry ----------------------------------------------------------------------------

    def _sweep(self) -> None:
        self._sweep_again = None
        db = self.store.db
        db.tick()
        _, more = db.sweep(SWEEP_LIMIT)
        if more:  # many keys at once: go on after the reactor has had a turn
            self._sweep_again = self.reactor.callLater(0, self._sweep)

    # -- INFO ------------------------------------------------------------------------------

    def _info_server(self) -> list:
        return [("tcp_port", self.port or 0), ("data_dir", self.data_dir)]

    def _info_clients(self) -> list:
        return [("connected_clients", len(self.factory.clients)),
                ("maxclients", self.config.max_clients)]

    def _info_memory(self) -> list:
        try:
            with open("/proc/self/statm") as f:
                rss = int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
        except (OSError, ValueError, IndexError):
            rss = 0
        return [("used_memory_rss", rss)]

    def _info_persistence(self) -> list:
        aof = self.aof
        described = aof.describe() if aof is not None else {}
        return [("aof_enabled", 1), ("aof_fsync", self.config.fsync),
                ("aof_rewrite_in_progress", int(self._compacting is not None)),
                ("aof_rewrites", self.compactions),
                ("aof_last_bgrewrite_status", "ok" if self.last_compaction_ok else "err"),
                ("aof_current_size", described.get("bytes", 0)),
                ("aof_generation", described.get("generation", 0))]

    def _info_stats(self) -> list:
        return [("total_connections_received", self.factory.connections_received)]
