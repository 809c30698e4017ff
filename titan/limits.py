"""What a server keeps bounded against peers that misbehave (docs/security.md, "Limits
against hostile clients"): its connections, by kind and by peer, its file descriptors, and
the log lines bad peers cause.

`ConnectionLimits` and `EpisodeLog` are pure (times are given, nothing is closed here): the
master's factory (titan/master/server.py) carries out what they decide.
"""
from __future__ import annotations

from collections import OrderedDict
from typing import Any, Hashable, Optional

# Descriptors a server keeps for itself beyond its connections: its log files, the event
# log, job logs being appended, the store's connection, pipes to the workers it spawns.
FD_RESERVE = 64


def raise_fd_limit() -> tuple[int, int]:
    """Raise this process's soft RLIMIT_NOFILE to its hard limit; (soft, hard) after."""
    try:
        import resource
    except ImportError:  # not on a POSIX system
        return (-1, -1)
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY:
        want = max(soft, 1 << 20) if soft != resource.RLIM_INFINITY else soft
    else:
        want = hard
    if soft != want:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
            soft = want
        except (ValueError, OSError):
            pass
    return soft, hard


def connection_cap(configured: int, fd_soft_limit: int, reserve: int = FD_RESERVE) -> int:
    """The most connections a server may hold: what it is configured for, kept below its
    descriptor limit with `reserve` descriptors to spare."""
    if fd_soft_limit <= 0:
        return configured
    return max(1, min(configured, fd_soft_limit - reserve))


class Refused(Exception):
    """A connection the limits do not let in (`code`, `message` for its error frame)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


class ConnectionLimits:
    """Connections by kind: `pending` (not yet authenticated), `client`, `worker`.

    - in all at most `max_connections`; a new connection past it takes the place of the
      oldest pending one (or is refused when none is pending);
    - at most `max_pending` pending, and `max_pending_per_host` from one peer address:
      past either, the oldest pending one (of that peer first) makes room;
    - clients at most `max_connections - worker_reserve`: that much room is always left
      for workers.
    """

    def __init__(self, max_connections: int, max_pending: int, max_pending_per_host: int,
                 worker_reserve: int) -> None:
        self.max_connections = max_connections
        self.max_pending = max(1, min(max_pending, max_connections))
        self.max_pending_per_host = max(1, max_pending_per_host)
        self.worker_reserve = min(worker_reserve, max_connections - 1)
        self.pending: "OrderedDict[Any, str]" = OrderedDict()  # oldest first
        self.pending_by_host: dict[str, "OrderedDict[Any, None]"] = {}
        self.kind: dict[Any, str] = {}
        self.clients = 0
        self.workers = 0

    @property
    def max_clients(self) -> int:
        return max(1, self.max_connections - self.worker_reserve)

    @property
    def total(self) -> int:
        return len(self.kind)

    def connected(self, conn: Hashable, host: str) -> list:
        """Count a new connection as pending: the pending ones it evicts (to be closed), or
        Refused when there is no room."""
        evict = []
        if self.total >= self.max_connections:
            if not self.pending:
                raise Refused("busy", f"the master has {self.total} connections, its limit "
                                      "(master.max_connections): try again later")
            evict.append(self._oldest_pending())
        mine = self.pending_by_host.get(host)
        if mine is not None and len(mine) - _count(evict, mine) >= self.max_pending_per_host:
            evict.append(next(c for c in mine if c not in evict))
        elif len(self.pending) - len(evict) >= self.max_pending:
            evict.append(next(c for c in self.pending if c not in evict))
        for old in evict:
            self.gone(old)
        self.pending[conn] = host
        self.pending_by_host.setdefault(host, OrderedDict())[conn] = None
        self.kind[conn] = "pending"
        return evict

    def _oldest_pending(self):
        return next(iter(self.pending))

    def authenticated(self, conn: Hashable, kind: str) -> None:
        """`conn` said its hello as a `client` or `worker` (Refused: no room for clients)."""
        old = self.kind.get(conn)
        if old == kind or old is None:
            return
        if kind == "client" and self.clients >= self.max_clients:
            raise Refused("busy", f"the master serves {self.clients} clients, its limit "
                                  "(master.max_connections less master.worker_reserve): "
                                  "try again later")
        self._drop(conn, old)
        self.kind[conn] = kind
        if kind == "client":
            self.clients += 1
        else:
            self.workers += 1

    def gone(self, conn: Hashable) -> None:
        old = self.kind.pop(conn, None)
        if old is not None:
            self._drop(conn, old)

    def _drop(self, conn, kind: str) -> None:
        if kind == "pending":
            host = self.pending.pop(conn, None)
            mine = self.pending_by_host.get(host)
            if mine is not None:
                mine.pop(conn, None)
                if not mine:
                    del self.pending_by_host[host]
        elif kind == "client":
            self.clients -= 1
        elif kind == "worker":
            self.workers -= 1

    def describe(self) -> dict:
        return {"pending": len(self.pending), "clients": self.clients,
                "workers": self.workers, "max_connections": self.max_connections}


def _count(items: list, within) -> int:
    return sum(1 for c in items if c in within)


class EpisodeLog:
    """Warnings about peers, said once per peer and kind per episode.

    The first `note` of a (peer, kind) is logged; the ones after it within `quiet` seconds
    of the last are only counted, and one line says how many once the episode is over (at
    the next note after it, or at `sweep`).  At most `max_keys` episodes are tracked.
    """

    def __init__(self, log, quiet: float = 60.0, max_keys: int = 4096) -> None:
        self.log = log
        self.quiet = quiet
        self.max_keys = max_keys
        self._episodes: "OrderedDict[tuple, list]" = OrderedDict()  # key -> [first, last, n]

    def note(self, now: float, host: str, kind: str, format: str, /, **fields: Any) -> bool:
        """Log `format` unless this peer's episode of `kind` is under way; True if logged."""
        key = (host, kind)
        episode = self._episodes.get(key)
        if episode is not None:
            if now - episode[1] <= self.quiet:
                episode[1] = now
                episode[2] += 1
                self._episodes.move_to_end(key)
                return False
            self._end(key)
        while len(self._episodes) >= self.max_keys:
            self._end(next(iter(self._episodes)))
        self._episodes[key] = [now, now, 0]
        self.log.warn(format + " (logged once per peer: repeats within {quiet:g} s are "
                      "counted)", quiet=self.quiet, **fields)
        return True

    def sweep(self, now: float) -> None:
        """End the episodes quiet for `quiet` seconds (their counts are logged)."""
        for key in [k for k, e in self._episodes.items() if now - e[1] > self.quiet]:
            self._end(key)

    def _end(self, key: tuple) -> None:
        first, last, count = self._episodes.pop(key)
        if count:
            self.log.warn("{count} more of {kind!r} from {host} in {seconds:.0f} s (not "
                          "logged one by one)", count=count, kind=key[1], host=key[0],
                          seconds=last - first)

    def active(self, host: Optional[str] = None) -> int:
        if host is None:
            return len(self._episodes)
        return sum(1 for h, _ in self._episodes if h == host)
