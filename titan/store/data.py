"""TitanStore's keyspace: strings, sets, hashes and lists with expiry times.  Pure: no I/O,
no reactor; time comes from the clock it is given.

Values are plain Python objects: bytes (string), set (set), dict (hash), deque (list).  An
empty set, hash or list does not exist: the last member leaving deletes the key, as in Redis.

Time stands still between ticks: `tick()` reads the clock into `now` (milliseconds since
the epoch) and every command until the next tick sees that time.  The server ticks once per
batch of commands it reads; replay sets `now` to the times recorded in the log, so that each
command sees again the time it first ran at.  Expiry times are absolute (ms since the
epoch), so they mean the same after a restart.

A key is expired once `now` is past its expiry time.  It is removed lazily, when a command
looks at it, and actively by `sweep()`, which takes keys off a heap of expiry times.
"""
from __future__ import annotations

import heapq
import re
import time
from collections import deque
from functools import lru_cache
from itertools import islice
from typing import Callable, Iterable, Optional

import msgpack

WRONGTYPE = "WRONGTYPE Operation against a key holding the wrong kind of value"
NOT_INTEGER = "ERR value is not an integer or out of range"
OVERFLOW = "ERR increment or decrement would overflow"
INT64_MIN = -2 ** 63
INT64_MAX = 2 ** 63 - 1
# SCAN keeps the key list of this many iterations in progress (the oldest is dropped).
MAX_SCANS = 64
SNAPSHOT_VERSION = 1
_SET_EXT = 1
_LIST_EXT = 2


class CommandError(Exception):
    """An error reply; str(e) is the message with its prefix (ERR, WRONGTYPE...)."""


class WrongType(CommandError):
    def __init__(self) -> None:
        super().__init__(WRONGTYPE)


TYPE_NAMES = {bytes: "string", set: "set", dict: "hash", deque: "list"}


class Database:
    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self.clock = clock
        self.data: dict = {}
        self.expires: dict = {}  # key -> absolute expiry time, ms
        self._heap: list = []    # (expiry time, key), possibly stale: checked on pop
        self.now = 0
        # The server skips the tick of a batch while no key has an expiry time (nothing
        # then depends on the time) and marks `now` stale instead; what needs the time
        # (a relative expiry, a key getting one) calls current(), which ticks.
        self.stale = False
        self.expired_keys = 0    # removed because they expired (stats)
        self._scans: dict = {}   # scan id -> key list
        self._scan_seq = 0
        self.tick()

    def tick(self) -> int:
        # (+1 µs: 1700000000.101 * 1000 is 1700000000100.9999 in floating point)
        self.now = int(self.clock() * 1000 + 0.001)
        self.stale = False
        return self.now

    def current(self) -> int:
        """`now`, read from the clock first if the server left it stale (see below)."""
        if self.stale:
            self.tick()
        return self.now

    # -- keys ------------------------------------------------------------------------------

    def lookup(self, key: bytes):
        """The value of a live key, or None (an expired key is removed on the way)."""
        v = self.data.get(key)
        if v is not None and self.expires:
            when = self.expires.get(key)
            if when is not None and when < self.now:
                self._remove(key)
                self.expired_keys += 1
                return None
        return v

    def _typed(self, key: bytes, kind: type):
        v = self.data.get(key)
        if v is None:
            return None
        if self.expires:
            when = self.expires.get(key)
            if when is not None and when < self.now:
                self._remove(key)
                self.expired_keys += 1
                return None
        if type(v) is not kind:
            raise WrongType()
        return v

    def _remove(self, key: bytes) -> None:
        del self.data[key]
        if self.expires:
            self.expires.pop(key, None)

    def exists(self, key: bytes) -> bool:
        return self.lookup(key) is not None

    def type_of(self, key: bytes) -> str:
        v = self.lookup(key)
        return "none" if v is None else TYPE_NAMES[type(v)]

    def delete(self, keys: Iterable[bytes]) -> int:
        count = 0
        for key in keys:
            if self.lookup(key) is not None:
                self._remove(key)
                count += 1
        return count

    def count_existing(self, keys: Iterable[bytes]) -> int:
        return sum(1 for key in keys if self.lookup(key) is not None)

    def dbsize(self) -> int:
        return len(self.data)

    def flush(self) -> None:
        self.data = {}
        self.expires = {}
        self._heap = []
        self._scans = {}

    # -- expiry ----------------------------------------------------------------------------

    def _set_expire(self, key: bytes, when: int) -> None:
        if self.stale:
            self.tick()  # from now on commands look at expiry times, so at the time
        self.expires[key] = when
        heap = self._heap
        heapq.heappush(heap, (when, key))
        if len(heap) > 2 * len(self.expires) + 4096:  # mostly stale entries: rebuild
            self._heap = [(w, k) for k, w in self.expires.items()]
            heapq.heapify(self._heap)

    def expire_at(self, key: bytes, when: int, nx: bool = False, xx: bool = False,
                  gt: bool = False, lt: bool = False) -> int:
        """Set the expiry time (ms); 1 if set, 0 if the key does not exist or a condition
        (NX: has none; XX: has one; GT/LT: later/earlier than the current one, no expiry
        counting as forever) fails.  A time not after `now` deletes the key (1)."""
        if self.lookup(key) is None:
            return 0
        current = self.expires.get(key)
        if nx and current is not None:
            return 0
        if xx and current is None:
            return 0
        if gt and (current is None or when <= current):
            return 0
        if lt and current is not None and when >= current:
            return 0
        if when <= self.current():
            self._remove(key)
            return 1
        self._set_expire(key, when)
        return 1

    def persist(self, key: bytes) -> int:
        if self.lookup(key) is None or key not in self.expires:
            return 0
        del self.expires[key]
        return 1

    def pttl(self, key: bytes) -> int:
        """Milliseconds left; -2: no such key; -1: no expiry."""
        if self.lookup(key) is None:
            return -2
        when = self.expires.get(key)
        if when is None:
            return -1
        return max(0, when - self.now)

    def expire_time(self, key: bytes) -> Optional[int]:
        return self.expires.get(key) if self.lookup(key) is not None else None

    def sweep(self, limit: int = 10000) -> tuple[int, bool]:
        """Remove keys whose time has passed, at most `limit`; (removed, more left)."""
        heap = self._heap
        expires = self.expires
        data = self.data
        now = self.now
        removed = 0
        pop = heapq.heappop
        while heap and heap[0][0] < now:
            if removed >= limit:
                self.expired_keys += removed
                return removed, True
            when, key = pop(heap)
            if expires.get(key) == when:
                del expires[key]
                del data[key]
                removed += 1
        self.expired_keys += removed
        return removed, False

    # -- strings ---------------------------------------------------------------------------

    def get(self, key: bytes) -> Optional[bytes]:
        return self._typed(key, bytes)

    def set(self, key: bytes, value: bytes, expire_at: Optional[int] = None,
            keep_ttl: bool = False) -> None:
        """Overwrite whatever the key holds; the expiry goes unless `keep_ttl`."""
        if keep_ttl:
            self.lookup(key)  # an expired key's time must not carry over
        self.data[key] = value
        if expire_at is not None:
            self._set_expire(key, expire_at)
        elif not keep_ttl and self.expires:
            self.expires.pop(key, None)

    def incrby(self, key: bytes, delta: int) -> int:
        v = self._typed(key, bytes)
        if v is None:
            value = delta
        else:
            current = to_int(v)
            if current is None:
                raise CommandError(NOT_INTEGER)
            value = current + delta
        if not INT64_MIN <= value <= INT64_MAX:
            raise CommandError(OVERFLOW)
        self.data[key] = b"%d" % value  # the expiry stays
        return value

    def append(self, key: bytes, value: bytes) -> int:
        v = self._typed(key, bytes)
        v = value if v is None else v + value
        self.data[key] = v
        return len(v)

    # -- sets ------------------------------------------------------------------------------

    def sadd(self, key: bytes, members: Iterable[bytes]) -> int:
        s = self._typed(key, set)
        if s is None:
            s = self.data[key] = set()
        before = len(s)
        s.update(members)
        return len(s) - before

    def srem(self, key: bytes, members: Iterable[bytes]) -> int:
        s = self._typed(key, set)
        if s is None:
            return 0
        before = len(s)
        s.difference_update(members)
        if not s:
            self._remove(key)
        return before - len(s)

    def smembers(self, key: bytes) -> set:
        """The set itself (do not change it), or an empty set."""
        s = self._typed(key, set)
        return s if s is not None else set()

    def sismember(self, key: bytes, member: bytes) -> bool:
        s = self._typed(key, set)
        return s is not None and member in s

    def scard(self, key: bytes) -> int:
        s = self._typed(key, set)
        return len(s) if s is not None else 0

    # -- hashes ----------------------------------------------------------------------------

    def hset(self, key: bytes, pairs: Iterable[tuple[bytes, bytes]]) -> int:
        h = self._typed(key, dict)
        if h is None:
            h = self.data[key] = {}
        before = len(h)
        h.update(pairs)
        return len(h) - before

    def hget(self, key: bytes, field: bytes) -> Optional[bytes]:
        h = self._typed(key, dict)
        return h.get(field) if h is not None else None

    def hgetall(self, key: bytes) -> dict:
        """The hash itself (do not change it), or an empty dict."""
        h = self._typed(key, dict)
        return h if h is not None else {}

    def hdel(self, key: bytes, fields: Iterable[bytes]) -> int:
        h = self._typed(key, dict)
        if h is None:
            return 0
        removed = 0
        for f in fields:
            if h.pop(f, None) is not None:
                removed += 1
        if not h:
            self._remove(key)
        return removed

    def hincrby(self, key: bytes, field: bytes, delta: int) -> int:
        h = self._typed(key, dict)
        if h is None:
            h = self.data[key] = {}
        v = h.get(field)
        if v is None:
            value = delta
        else:
            current = to_int(v)
            if current is None:
                raise CommandError("ERR hash value is not an integer")
            value = current + delta
        if not INT64_MIN <= value <= INT64_MAX:
            raise CommandError(OVERFLOW)
        h[field] = b"%d" % value
        return value

    # -- lists -----------------------------------------------------------------------------

    def push(self, key: bytes, values: Iterable[bytes], left: bool) -> int:
        d = self._typed(key, deque)
        if d is None:
            d = self.data[key] = deque()
        if left:
            d.extendleft(values)
        else:
            d.extend(values)
        return len(d)

    def pop(self, key: bytes, count: Optional[int], left: bool):
        """One value (count None) or a list of up to `count`; None if there is no list."""
        d = self._typed(key, deque)
        if d is None:
            return None
        take = d.popleft if left else d.pop
        if count is None:
            value = take()
        else:
            value = [take() for _ in range(min(count, len(d)))]
        if not d:
            self._remove(key)
        return value

    def lrange(self, key: bytes, start: int, stop: int) -> list:
        d = self._typed(key, deque)
        if d is None:
            return []
        n = len(d)
        if start < 0:
            start = max(n + start, 0)
        if stop < 0:
            stop = n + stop
        if stop >= n:
            stop = n - 1
        if start > stop or start >= n:
            return []
        if start > n // 2:  # nearer the end: walk from there
            return list(islice(reversed(d), n - 1 - stop, n - start))[::-1]
        return list(islice(d, start, stop + 1))

    def llen(self, key: bytes) -> int:
        d = self._typed(key, deque)
        return len(d) if d is not None else 0

    def lindex(self, key: bytes, index: int) -> Optional[bytes]:
        d = self._typed(key, deque)
        if d is None:
            return None
        try:
            return d[index]
        except IndexError:
            return None

    # -- iteration -------------------------------------------------------------------------

    def keys(self, pattern: bytes = b"*") -> list:
        match = glob_matcher(pattern)
        lookup = self.lookup
        if match is None:
            return [k for k in list(self.data) if lookup(k) is not None]
        return [k for k in list(self.data) if match(k) and lookup(k) is not None]

    def scan(self, cursor: int, pattern: Optional[bytes] = None, count: int = 10,
             kind: Optional[str] = None) -> tuple[int, list]:
        """One step of an iteration: (next cursor, keys); cursor 0 starts and ends it.

        Every key that exists for the whole iteration is returned exactly once; keys added
        or removed meanwhile may or may not be.  An iteration walks a list of the keys
        taken when it started (`count` of them per step, so a step with a pattern may
        return none); the lists of the MAX_SCANS latest iterations are kept, and an
        unknown cursor carries on over a fresh list from the same position."""
        match = glob_matcher(pattern) if pattern is not None else None
        scan_id, pos = cursor >> 32, cursor & 0xFFFFFFFF
        keys = self._scans.pop(scan_id, None) if scan_id else None
        if keys is None:
            if cursor == 0 and len(self.data) <= count:
                return 0, self._filter(list(self.data), match, kind)
            keys = list(self.data)
            self._scan_seq = self._scan_seq % 0x7FFFFFFF + 1
            scan_id = self._scan_seq
        chunk = keys[pos:pos + count]
        pos += count
        if pos >= len(keys):
            return 0, self._filter(chunk, match, kind)
        self._scans[scan_id] = keys
        if len(self._scans) > MAX_SCANS:
            del self._scans[next(iter(self._scans))]
        return (scan_id << 32) | pos, self._filter(chunk, match, kind)

    def _filter(self, keys: list, match, kind: Optional[str]) -> list:
        out = []
        for k in keys:
            if match is not None and not match(k):
                continue
            v = self.lookup(k)
            if v is None:
                continue
            if kind is not None and TYPE_NAMES[type(v)] != kind:
                continue
            out.append(k)
        return out

    # -- snapshots -------------------------------------------------------------------------

    def snapshot(self) -> bytes:
        """Everything, as bytes (msgpack): what compaction writes."""
        return msgpack.packb([SNAPSHOT_VERSION, self.data, self.expires],
                             default=_pack_ext, use_bin_type=True)

    def restore(self, blob: bytes) -> None:
        """Replace the contents with a snapshot's.  Keys whose time has passed come back
        too (the log replayed after a snapshot runs at the times it was written, when they
        may still have been alive); `sweep()` removes them once the clock is current."""
        version, data, expires = msgpack.unpackb(blob, ext_hook=_unpack_ext,
                                                 strict_map_key=False, raw=False)
        if version != SNAPSHOT_VERSION:
            raise ValueError(f"unknown snapshot version {version!r}")
        self.flush()
        self.data = data
        self.expires = expires
        self._heap = [(w, k) for k, w in expires.items()]
        heapq.heapify(self._heap)


def _pack_ext(obj):
    if isinstance(obj, set):
        return msgpack.ExtType(_SET_EXT, msgpack.packb(list(obj), use_bin_type=True))
    if isinstance(obj, deque):
        return msgpack.ExtType(_LIST_EXT, msgpack.packb(list(obj), use_bin_type=True))
    raise TypeError(f"cannot store {type(obj).__name__}")


def _unpack_ext(code: int, payload: bytes):
    if code == _SET_EXT:
        return set(msgpack.unpackb(payload))
    if code == _LIST_EXT:
        return deque(msgpack.unpackb(payload))
    return msgpack.ExtType(code, payload)


def to_int(v: bytes) -> Optional[int]:
    """The signed 64-bit integer a string holds, written as Redis requires, or None."""
    if v.isdigit():
        if v[0] == 48 and len(v) > 1:
            return None
        n = int(v)
        return n if n <= INT64_MAX else None
    if len(v) > 1 and v[0] == 45 and v[1:].isdigit() and v[1] != 48:
        n = int(v)
        return n if n >= INT64_MIN else None
    return None


# -- glob patterns (KEYS, SCAN MATCH, PSUBSCRIBE) -----------------------------------------

@lru_cache(maxsize=1024)
def glob_matcher(pattern: bytes) -> Optional[Callable[[bytes], bool]]:
    """A function telling whether a key matches a Redis glob pattern (None: matches all).

    `*` any run, `?` any one byte, `[abc]` `[^abc]` `[a-z]` a class, `\\x` x itself."""
    if pattern == b"*":
        return None
    if not any(c in pattern for c in b"*?[\\"):
        return pattern.__eq__
    regex = re.compile(glob_to_regex(pattern), re.DOTALL)
    fullmatch = regex.fullmatch
    return lambda key: fullmatch(key) is not None


def _lit(c: int) -> bytes:
    return b"\\x%02x" % c


def glob_to_regex(pattern: bytes) -> bytes:
    out = []
    i = 0
    n = len(pattern)
    while i < n:
        c = pattern[i]
        if c == 42:  # *
            while i + 1 < n and pattern[i + 1] == 42:
                i += 1
            out.append(b".*")
        elif c == 63:  # ?
            out.append(b".")
        elif c == 91:  # [
            i += 1
            negate = i < n and pattern[i] == 94
            if negate:
                i += 1
            items = []
            while i < n and pattern[i] != 93:
                if pattern[i] == 92 and i + 1 < n:  # \x inside a class
                    i += 1
                    items.append(_lit(pattern[i]))
                elif i + 2 < n and pattern[i + 1] == 45:  # a-z (either way round)
                    lo, hi = sorted((pattern[i], pattern[i + 2]))
                    items.append(_lit(lo) + b"-" + _lit(hi))
                    i += 2
                else:
                    items.append(_lit(pattern[i]))
                i += 1
            # An unclosed class ends with the pattern, as in Redis.
            if items:
                out.append(b"[" + (b"^" if negate else b"") + b"".join(items) + b"]")
            else:
                out.append(b"." if negate else b"(?!)")
        elif c == 92 and i + 1 < n:  # \x
            i += 1
            out.append(_lit(pattern[i]))
        else:
            out.append(_lit(c))
        i += 1
    return b"".join(out)
