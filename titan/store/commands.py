"""The commands: arguments in, a RESP2 reply out, with the replies and errors Redis gives.

`Store.execute(session, args)` looks a command up, checks its arity, authentication and
subscription state, runs it against the Database and the pub/sub Hub and returns the
encoded reply.  Pure: the Twisted server (server.py) feeds it parsed requests; tests feed
it directly.

Every command that changes the data is recorded in `Store.journal` in a canonical form with
absolute times (SET ... PXAT t, PEXPIREAT, SET ... KEEPTTL for INCR), each run preceded by
the time it ran at (an int): replaying the journal through `Store.replay()` rebuilds the
same data.  The service writes it to the append-only file once per turn of the reactor.
"""
from __future__ import annotations

import os
import time
from collections import deque
from typing import Callable, Optional

import msgpack

from titan.store.data import (
    INT64_MAX, INT64_MIN, NOT_INTEGER, CommandError, Database, WrongType, glob_matcher)
from titan.store.pubsub import Hub
from titan.store.resp import (
    EMPTY_ARRAY, EMPTY_BULK, NIL, NIL_ARRAY, NULL3, OK, PONG, Simple, bulk, bulk_or_nil,
    bulks, encode, error, integer, parse_int)

REDIS_VERSION = "7.0.0"  # what INFO and HELLO report, for clients that look
TITAN_STORE_VERSION = "1.0.0"

# flags
NOAUTH = 1    # may run before AUTH
PUBSUB = 2    # may run on a connection in subscribed mode
WRITE = 4
READ = 8
ADMIN = 16

NOAUTH_REPLY = b"-NOAUTH Authentication required.\r\n"
SYNTAX = "ERR syntax error"
SUBSCRIBED_ONLY = ("ERR Can't execute '{}': only (P|S)SUBSCRIBE / (P|S)UNSUBSCRIBE / PING / "
                   "QUIT / RESET are allowed in this context")
WRONGPASS = b"-WRONGPASS invalid username-password pair or user is disabled.\r\n"


class Session:
    """What a command knows of the connection it came on.  The server's protocol is one;
    this base class collects pushed messages in `pushed` (for tests and replay)."""

    def __init__(self, authenticated: bool = True) -> None:
        self.authenticated = authenticated
        self.name: Optional[bytes] = None
        self.channels: dict = {}
        self.patterns: dict = {}
        self.closing = False   # QUIT: reply, then close
        self.gated = not authenticated
        self.id = 0
        self.address = ""
        self.pushed: list = []
        self.set_protocol(2)

    def set_protocol(self, version: int) -> None:
        """RESP2 or RESP3 (HELLO 3): how nulls, maps, sets and pushes are written."""
        self.resp3 = version == 3
        self.nil = NULL3 if self.resp3 else NIL
        self.nil_array = NULL3 if self.resp3 else NIL_ARRAY
        self.push_kind = b">" if self.resp3 else b"*"
        self.regate()

    def push(self, data: bytes) -> None:
        self.pushed.append(data)

    def regate(self) -> None:
        # In RESP3 a subscribed connection may run any command (pushes are told apart).
        self.gated = not self.authenticated or (
            not self.resp3 and bool(self.channels or self.patterns))


def _arity_error(name: str) -> bytes:
    return b"-ERR wrong number of arguments for '%b' command\r\n" % name.encode()


def unknown_command(args: list) -> bytes:
    shown = ""
    for a in args[1:]:
        if len(shown) >= 128:
            break
        shown += "'%s' " % _c_str(a)[:128 - len(shown)]
    return error("ERR unknown command '%s', with args beginning with: %s"
                 % (_c_str(args[0])[:128], shown))


def _c_str(b: bytes) -> str:
    """As C's %s shows it: up to the first NUL."""
    return b.split(b"\0", 1)[0].decode("utf-8", "surrogateescape")


def _int(b: bytes) -> int:
    v = parse_int(b)
    if v is None:
        raise CommandError(NOT_INTEGER)
    return v


def _nothing(*args) -> None:
    pass


class Store:
    """The data, the subscriptions, the password and the command table."""

    def __init__(self, db: Optional[Database] = None, password: Optional[bytes] = None,
                 clock: Callable[[], float] = time.time) -> None:
        self.db = db if db is not None else Database(clock)
        self.hub = Hub()
        self.password = password
        self.journal: list = []
        self.on_journal: Optional[Callable[[], None]] = None  # journal became non-empty
        self.on_rewrite: Optional[Callable[[], str]] = None   # BGREWRITEAOF
        self.info_hooks: dict[str, Callable[[], list]] = {}   # section -> [(key, value)]
        self.config_values: dict[str, str] = {}
        self.replaying = False
        self.commands_processed = 0
        self.started = time.time()
        self._logged_at = None
        self.table = self._build_table()

    # -- the journal -----------------------------------------------------------------------

    def log(self, args: list) -> None:
        """Journal a change (canonical form), after the time it ran at if that matters:
        a stale `now` means no key had an expiry time, so the command did not depend on
        the time (see Database.stale)."""
        journal = self.journal
        db = self.db
        if not journal:
            if self.on_journal is not None:
                self.on_journal()
            if db.stale:
                self._logged_at = None
            else:
                journal.append(db.now)
                self._logged_at = db.now
        elif not db.stale and db.now != self._logged_at:
            journal.append(db.now)
            self._logged_at = db.now
        journal.append(args)

    def take_journal(self) -> Optional[bytes]:
        """The journal since the last call, as one record (msgpack), or None if empty."""
        if not self.journal:
            return None
        journal, self.journal = self.journal, []
        return msgpack.packb(journal, use_bin_type=True)

    def replay(self, record: bytes) -> int:
        """Run a journal record again; how many commands it held."""
        items = msgpack.unpackb(record, raw=False)
        session = Session()
        db = self.db
        count = 0
        self.replaying = True
        self.log = _nothing  # the replayed commands are journalled already
        db.stale = False
        try:
            for item in items:
                if isinstance(item, int):
                    db.now = item
                else:
                    reply = self.execute(session, item)
                    if reply[:1] == b"-":
                        raise ValueError(f"replaying {item[:1]!r} failed: "
                                         f"{reply.decode(errors='replace').strip()}")
                    count += 1
        finally:
            self.replaying = False
            del self.log
        return count

    # -- dispatch --------------------------------------------------------------------------

    def execute(self, session: Session, args: list) -> bytes:
        entry = self.table.get(args[0])
        if entry is None:
            entry = self.table.get(args[0].lower())
            if entry is None:
                return unknown_command(args)
        handler, arity, flags, name = entry
        n = len(args)
        if (n != arity) if arity > 0 else (n < -arity):
            return _arity_error(name)
        if session.gated:
            if not session.authenticated and not flags & NOAUTH:
                return NOAUTH_REPLY
            if (session.channels or session.patterns) and not flags & PUBSUB \
                    and not session.resp3:
                return error(SUBSCRIBED_ONLY.format(name))
        try:
            return handler(session, args)
        except CommandError as e:
            return error(str(e))

    def _build_table(self) -> dict:
        R, W, N, P, A = READ, WRITE, NOAUTH, PUBSUB, ADMIN
        spec = {
            # connection
            "ping": (self.ping, -1, P), "echo": (self.echo, 2, 0),
            "quit": (self.quit, -1, N | P), "reset": (self.reset, 1, N | P),
            "auth": (self.auth, -2, N), "hello": (self.hello, -1, N),
            "select": (self.select, 2, 0), "client": (self.client, -2, 0),
            "command": (self.command, -1, 0), "info": (self.info, -1, 0),
            "config": (self.config, -2, A), "time": (self.time_, 1, 0),
            "dbsize": (self.dbsize, 1, R), "flushdb": (self.flushdb, -1, W),
            "flushall": (self.flushdb, -1, W), "bgrewriteaof": (self.bgrewriteaof, 1, A),
            # keys
            "del": (self.del_, -2, W), "unlink": (self.del_, -2, W),
            "exists": (self.exists, -2, R), "type": (self.type_, 2, R),
            "expire": (self.expire, -3, W), "pexpire": (self.expire, -3, W),
            "expireat": (self.expire, -3, W), "pexpireat": (self.expire, -3, W),
            "ttl": (self.ttl, 2, R), "pttl": (self.ttl, 2, R),
            "expiretime": (self.expiretime, 2, R), "pexpiretime": (self.expiretime, 2, R),
            "persist": (self.persist, 2, W), "keys": (self.keys, 2, R),
            "scan": (self.scan, -2, R),
            # strings
            "get": (self.get, 2, R), "set": (self.set, -3, W),
            "setnx": (self.setnx, 3, W), "setex": (self.setex, 4, W),
            "psetex": (self.setex, 4, W), "getset": (self.getset, 3, W),
            "getdel": (self.getdel, 2, W), "mget": (self.mget, -2, R),
            "mset": (self.mset, -3, W), "incr": (self.incr, 2, W),
            "decr": (self.incr, 2, W), "incrby": (self.incrby, 3, W),
            "decrby": (self.incrby, 3, W), "append": (self.append, 3, W),
            "strlen": (self.strlen, 2, R),
            # sets
            "sadd": (self.sadd, -3, W), "srem": (self.srem, -3, W),
            "smembers": (self.smembers, 2, R), "sismember": (self.sismember, 3, R),
            "smismember": (self.smismember, -3, R), "scard": (self.scard, 2, R),
            # hashes
            "hset": (self.hset, -4, W), "hmset": (self.hset, -4, W),
            "hsetnx": (self.hsetnx, 4, W), "hget": (self.hget, 3, R),
            "hmget": (self.hmget, -3, R), "hgetall": (self.hgetall, 2, R),
            "hdel": (self.hdel, -3, W), "hlen": (self.hlen, 2, R),
            "hexists": (self.hexists, 3, R), "hincrby": (self.hincrby, 4, W),
            "hkeys": (self.hkeys, 2, R), "hvals": (self.hvals, 2, R),
            # lists
            "lpush": (self.push, -3, W), "rpush": (self.push, -3, W),
            "lpop": (self.pop, -2, W), "rpop": (self.pop, -2, W),
            "lrange": (self.lrange, 4, R), "llen": (self.llen, 2, R),
            "lindex": (self.lindex, 3, R),
            # pub/sub
            "publish": (self.publish, 3, 0), "subscribe": (self.subscribe, -2, P),
            "unsubscribe": (self.unsubscribe, -1, P), "psubscribe": (self.psubscribe, -2, P),
            "punsubscribe": (self.punsubscribe, -1, P), "pubsub": (self.pubsub, -2, 0),
        }
        table = {}
        self.command_specs = {}
        for name, (handler, arity, flags) in spec.items():
            entry = (handler, arity, flags, name)
            self.command_specs[name] = entry
            for variant in (name, name.upper(), name.capitalize()):
                table[variant.encode()] = entry
        return table

    # -- connection ------------------------------------------------------------------------

    def ping(self, s: Session, args: list) -> bytes:
        if len(args) > 2:
            return _arity_error("ping")
        if (s.channels or s.patterns) and not s.resp3:
            return b"*2\r\n$4\r\npong\r\n" + (bulk(args[1]) if len(args) == 2 else EMPTY_BULK)
        return bulk(args[1]) if len(args) == 2 else PONG

    def echo(self, s: Session, args: list) -> bytes:
        return bulk(args[1])

    def quit(self, s: Session, args: list) -> bytes:
        s.closing = True
        return OK

    def reset(self, s: Session, args: list) -> bytes:
        self.drop_session(s)
        s.name = None
        s.authenticated = self.password is None
        s.regate()
        return b"+RESET\r\n"

    def _check_password(self, s: Session, user: Optional[bytes], password: bytes) -> bool:
        if user is not None and user != b"default":
            return False
        if self.password is None:
            return user is not None  # the default user has no password
        return password == self.password

    def auth(self, s: Session, args: list) -> bytes:
        if len(args) > 3:
            return error(SYNTAX)
        if len(args) == 2 and self.password is None:
            return error("ERR AUTH <password> called without any password configured for "
                         "the default user. Are you sure your configuration is correct?")
        user = args[1] if len(args) == 3 else None
        if not self._check_password(s, user, args[-1]):
            return WRONGPASS
        s.authenticated = True
        s.regate()
        return OK

    def hello(self, s: Session, args: list) -> bytes:
        i = 1
        if len(args) > 1:
            version = parse_int(args[1])
            if version is None:
                return error("ERR Protocol version is not an integer or out of range")
            if version not in (2, 3):
                return error("NOPROTO unsupported protocol version")
            i = 2
        else:
            version = None
        name = None
        authed = False
        while i < len(args):
            opt = args[i].lower()
            if opt == b"auth" and i + 2 < len(args):
                if not self._check_password(s, args[i + 1], args[i + 2]):
                    return WRONGPASS
                authed = True
                i += 3
            elif opt == b"setname" and i + 1 < len(args):
                name = args[i + 1]
                i += 2
            else:
                return error(f"ERR Syntax error in HELLO option '{_c_str(args[i])}'")
        if not s.authenticated and not authed:
            return error("NOAUTH HELLO must be called with the client already authenticated, "
                         "otherwise the HELLO AUTH <user> <pass> option can be used to "
                         "authenticate the client and select the RESP protocol version at "
                         "the same time")
        if authed:
            s.authenticated = True
            s.regate()
        if name is not None:
            s.name = name or None
        if version is not None:
            s.set_protocol(version)
        return encode({b"server": b"redis", b"version": REDIS_VERSION.encode(),
                       b"proto": 3 if s.resp3 else 2, b"id": s.id, b"mode": b"standalone",
                       b"role": b"master", b"modules": []}, s.resp3)

    def select(self, s: Session, args: list) -> bytes:
        if _int(args[1]) != 0:
            return error("ERR DB index is out of range")
        return OK

    def client(self, s: Session, args: list) -> bytes:
        sub = args[1].lower()
        n = len(args)
        if sub == b"setname":
            if n != 3:
                return _arity_error("client|setname")
            name = args[2]
            if any(c < 33 or c > 126 for c in name):
                return error("ERR Client names cannot contain spaces, newlines or special "
                             "characters.")
            s.name = name or None
            return OK
        if sub == b"getname":
            if n != 2:
                return _arity_error("client|getname")
            return bulk_or_nil(s.name, s.nil)
        if sub == b"id":
            if n != 2:
                return _arity_error("client|id")
            return integer(s.id)
        if sub == b"setinfo":
            if n != 4:
                return _arity_error("client|setinfo")
            return OK
        if sub in (b"list", b"info"):
            return bulk(b"id=%d addr=%b name=%b db=0 sub=%d psub=%d\n" % (
                s.id, s.address.encode(), s.name or b"", len(s.channels), len(s.patterns)))
        if sub in (b"no-evict", b"no-touch"):
            return OK
        return error(f"ERR unknown subcommand '{_c_str(args[1])[:128]}'. Try CLIENT HELP.")

    def command(self, s: Session, args: list) -> bytes:
        """Enough for redis-cli and client libraries: names, arities, flags."""
        if len(args) == 1:
            return encode([self._command_entry(e) for e in self.command_specs.values()])
        sub = args[1].lower()
        if sub == b"count":
            return integer(len(self.command_specs))
        if sub == b"list":
            return encode([name.encode() for name in self.command_specs])
        if sub == b"info":
            return encode([self._command_entry(self.command_specs[a.lower().decode()])
                           if a.lower().decode("latin-1") in self.command_specs else None
                           for a in args[2:]])
        if sub == b"docs":
            return EMPTY_ARRAY
        return error(f"ERR unknown subcommand '{_c_str(args[1])[:128]}'. Try COMMAND HELP.")

    @staticmethod
    def _command_entry(entry) -> list:
        _, arity, flags, name = entry
        words = []
        if flags & WRITE:
            words.append(b"write")
        if flags & READ:
            words.append(b"readonly")
        if flags & PUBSUB:
            words.append(b"pubsub")
        if flags & NOAUTH:
            words.append(b"no-auth")
        keyed = bool(flags & (READ | WRITE)) and name not in ("dbsize", "flushdb", "flushall",
                                                              "keys", "scan")
        step = 2 if name in ("mset",) else 1
        last = -1 if arity < 0 and keyed and name in ("del", "unlink", "exists", "mget",
                                                      "mset") else (1 if keyed else 0)
        return [name.encode(), arity, [Simple(w.decode()) for w in words], int(keyed), last,
                step if keyed else 0]

    def time_(self, s: Session, args: list) -> bytes:
        now = time.time()
        return bulks([b"%d" % int(now), b"%d" % int((now % 1) * 1_000_000)])

    def info(self, s: Session, args: list) -> bytes:
        wanted = {a.lower().decode("latin-1") for a in args[1:]}
        everything = not wanted or wanted & {"all", "everything", "default"}
        lines = []
        for section, pairs in self._info_sections():
            if everything or section.lower() in wanted:
                if lines:
                    lines.append("")
                lines.append(f"# {section}")
                lines.extend(f"{k}:{v}" for k, v in pairs)
        text = "\r\n".join(lines) + ("\r\n" if lines else "")
        return bulk(text.encode())

    def _info_sections(self) -> list:
        db = self.db
        sections = [
            ("Server", [("redis_version", REDIS_VERSION),
                        ("titan_store_version", TITAN_STORE_VERSION),
                        ("redis_mode", "standalone"), ("process_id", os.getpid()),
                        ("uptime_in_seconds", int(time.time() - self.started))]),
            ("Clients", []),
            ("Memory", []),
            ("Persistence", [("loading", 0)]),
            ("Stats", [("total_commands_processed", self.commands_processed),
                       ("expired_keys", db.expired_keys),
                       ("pubsub_channels", len(self.hub.channels)),
                       ("pubsub_patterns", len(self.hub.patterns))]),
        ]
        for i, (name, pairs) in enumerate(sections):
            hook = self.info_hooks.get(name)
            if hook is not None:
                sections[i] = (name, pairs + hook())
        keyspace = []
        if db.data:
            keyspace.append(("db0", f"keys={len(db.data)},expires={len(db.expires)},"
                                    f"avg_ttl=0"))
        sections.append(("Keyspace", keyspace))
        return sections

    def config(self, s: Session, args: list) -> bytes:
        sub = args[1].lower()
        if sub == b"get":
            if len(args) < 3:
                return _arity_error("config|get")
            out = {}
            for pattern in args[2:]:
                match = glob_matcher(pattern.lower())
                for k, v in self.config_values.items():
                    if match is None or match(k.encode()):
                        out[k.encode()] = v.encode()
            return encode(out, s.resp3)
        if sub == b"resetstat":
            self.commands_processed = 0
            return OK
        return error(f"ERR unknown subcommand '{_c_str(args[1])[:128]}'. Try CONFIG HELP.")

    def dbsize(self, s: Session, args: list) -> bytes:
        return integer(self.db.dbsize())

    def flushdb(self, s: Session, args: list) -> bytes:
        if len(args) > 2 or (len(args) == 2 and args[1].lower() not in (b"async", b"sync")):
            return error(SYNTAX)
        self.db.flush()
        self.log([b"FLUSHDB"])
        return OK

    def bgrewriteaof(self, s: Session, args: list) -> bytes:
        if self.on_rewrite is None:
            return error("ERR this store keeps no append-only file")
        return b"+" + self.on_rewrite().encode() + b"\r\n"

    # -- keys ------------------------------------------------------------------------------

    def del_(self, s: Session, args: list) -> bytes:
        n = self.db.delete(args[1:])
        if n:
            self.log([b"DEL", *args[1:]])
        return integer(n)

    def exists(self, s: Session, args: list) -> bytes:
        return integer(self.db.count_existing(args[1:]))

    def type_(self, s: Session, args: list) -> bytes:
        return b"+" + self.db.type_of(args[1]).encode() + b"\r\n"

    def expire(self, s: Session, args: list) -> bytes:
        name = args[0].lower()
        nx = xx = gt = lt = False
        for opt in args[3:]:
            o = opt.lower()
            if o == b"nx":
                nx = True
            elif o == b"xx":
                xx = True
            elif o == b"gt":
                gt = True
            elif o == b"lt":
                lt = True
            else:
                return error(f"ERR Unsupported option {_c_str(opt)}")
        if nx and (xx or gt or lt):
            return error("ERR NX and XX, GT or LT options at the same time are not compatible")
        if gt and lt:
            return error("ERR GT and LT options at the same time are not compatible")
        when = _int(args[2])
        seconds = name in (b"expire", b"expireat")
        if seconds:
            if when > INT64_MAX // 1000 or when < -(INT64_MAX // 1000):
                return error(f"ERR invalid expire time in '{name.decode()}' command")
            when *= 1000
        now = self.db.current()
        if name in (b"expire", b"pexpire"):
            if when > INT64_MAX - now:
                return error(f"ERR invalid expire time in '{name.decode()}' command")
            when += now
        key = args[1]
        done = self.db.expire_at(key, when, nx, xx, gt, lt)
        if done:
            if when <= now:
                self.log([b"DEL", key])
            else:
                self.log([b"PEXPIREAT", key, b"%d" % when])
        return integer(done)

    def ttl(self, s: Session, args: list) -> bytes:
        ms = self.db.pttl(args[1])
        if ms < 0 or args[0].lower() == b"pttl":
            return integer(ms)
        return integer((ms + 500) // 1000)

    def expiretime(self, s: Session, args: list) -> bytes:
        db = self.db
        if not db.exists(args[1]):
            return integer(-2)
        when = db.expire_time(args[1])
        if when is None:
            return integer(-1)
        return integer(when if args[0].lower() == b"pexpiretime" else when // 1000)

    def persist(self, s: Session, args: list) -> bytes:
        done = self.db.persist(args[1])
        if done:
            self.log([b"PERSIST", args[1]])
        return integer(done)

    def keys(self, s: Session, args: list) -> bytes:
        return bulks(self.db.keys(args[1]))

    def scan(self, s: Session, args: list) -> bytes:
        c = args[1]
        if not c.isdigit() or int(c) > 0xFFFFFFFFFFFFFFFF:
            return error("ERR invalid cursor")
        cursor = int(c)
        pattern = kind = None
        count = 10
        i = 2
        n = len(args)
        while i < n:
            opt = args[i].lower()
            if i + 1 >= n:
                return error(SYNTAX)
            if opt == b"count":
                count = _int(args[i + 1])
                if count < 1:
                    return error(SYNTAX)
            elif opt == b"match":
                pattern = args[i + 1]
            elif opt == b"type":
                kind = args[i + 1].lower().decode("latin-1")
            else:
                return error(SYNTAX)
            i += 2
        cursor, keys = self.db.scan(cursor, pattern, count, kind)
        return b"*2\r\n" + bulk(b"%d" % cursor) + bulks(keys)

    # -- strings ---------------------------------------------------------------------------

    def get(self, s: Session, args: list) -> bytes:
        db = self.db
        v = db.data.get(args[1])
        if v is None:
            return s.nil
        if db.expires or type(v) is not bytes:
            v = db.get(args[1])  # expiry, type: the full path
            if v is None:
                return s.nil
        return b"$%d\r\n%b\r\n" % (len(v), v)

    def set(self, s: Session, args: list) -> bytes:
        key = args[1]
        value = args[2]
        db = self.db
        if len(args) == 3:  # the common case, inline
            db.data[key] = value
            if db.expires:
                db.expires.pop(key, None)
            self.log(args)
            return OK
        nx = xx = get = keep = False
        unit = None
        amount = None
        i = 3
        n = len(args)
        while i < n:
            o = args[i].upper()
            if o == b"NX" and not xx:
                nx = True
            elif o == b"XX" and not nx:
                xx = True
            elif o == b"GET":
                get = True
            elif o == b"KEEPTTL" and unit is None:
                keep = True
            elif o in (b"EX", b"PX", b"EXAT", b"PXAT") and unit is None and not keep \
                    and i + 1 < n:
                unit = o
                amount = args[i + 1]
                i += 1
            else:
                return error(SYNTAX)
            i += 1
        when = None
        if unit is not None:
            when = self._expire_arg(amount, unit, "set")
        old = db.get(key) if get else None  # WRONGTYPE before anything changes
        exists = db.exists(key) if (nx or xx) else None
        if (nx and exists) or (xx and not exists):
            return bulk_or_nil(old, s.nil) if get else s.nil
        db.set(key, value, when, keep)
        if when is not None:
            self.log([b"SET", key, value, b"PXAT", b"%d" % when])
        elif keep:
            self.log([b"SET", key, value, b"KEEPTTL"])
        else:
            self.log([b"SET", key, value])
        return bulk_or_nil(old, s.nil) if get else OK

    def _expire_arg(self, amount: bytes, unit: bytes, command: str) -> int:
        ms = _int(amount)
        bad = CommandError(f"ERR invalid expire time in '{command}' command")
        if ms <= 0 or (unit in (b"EX", b"EXAT") and ms > INT64_MAX // 1000):
            raise bad
        if unit in (b"EX", b"EXAT"):
            ms *= 1000
        if unit in (b"EX", b"PX"):
            ms += self.db.current()
            if ms > INT64_MAX:
                raise bad
        return ms

    def setnx(self, s: Session, args: list) -> bytes:
        if self.db.exists(args[1]):
            return integer(0)
        self.db.set(args[1], args[2])
        self.log([b"SET", args[1], args[2]])
        return integer(1)

    def setex(self, s: Session, args: list) -> bytes:
        name = args[0].lower().decode()
        when = self._expire_arg(args[2], b"EX" if name == "setex" else b"PX", name)
        self.db.set(args[1], args[3], when)
        self.log([b"SET", args[1], args[3], b"PXAT", b"%d" % when])
        return OK

    def getset(self, s: Session, args: list) -> bytes:
        old = self.db.get(args[1])
        self.db.set(args[1], args[2])
        self.log([b"SET", args[1], args[2]])
        return bulk_or_nil(old, s.nil)

    def getdel(self, s: Session, args: list) -> bytes:
        old = self.db.get(args[1])
        if old is not None:
            self.db.delete([args[1]])
            self.log([b"DEL", args[1]])
        return bulk_or_nil(old, s.nil)

    def mget(self, s: Session, args: list) -> bytes:
        lookup = self.db.lookup
        values = []
        for key in args[1:]:
            v = lookup(key)
            values.append(v if type(v) is bytes else None)
        return bulks(values, s.nil)

    def mset(self, s: Session, args: list) -> bytes:
        if len(args) % 2 == 0:
            return _arity_error("mset")
        db = self.db
        for i in range(1, len(args), 2):
            db.set(args[i], args[i + 1])
        self.log(args)
        return OK

    def _incr(self, key: bytes, delta: int) -> bytes:
        value = self.db.incrby(key, delta)
        self.log([b"SET", key, b"%d" % value, b"KEEPTTL"])
        return integer(value)

    def incr(self, s: Session, args: list) -> bytes:
        return self._incr(args[1], 1 if args[0].lower() == b"incr" else -1)

    def incrby(self, s: Session, args: list) -> bytes:
        delta = _int(args[2])
        if args[0].lower() == b"decrby":
            if delta == INT64_MIN:
                return error("ERR decrement would overflow")
            delta = -delta
        return self._incr(args[1], delta)

    def append(self, s: Session, args: list) -> bytes:
        n = self.db.append(args[1], args[2])
        self.log([b"APPEND", args[1], args[2]])
        return integer(n)

    def strlen(self, s: Session, args: list) -> bytes:
        v = self.db.get(args[1])
        return integer(0 if v is None else len(v))

    # -- sets ------------------------------------------------------------------------------

    def sadd(self, s: Session, args: list) -> bytes:
        n = self.db.sadd(args[1], args[2:])
        if n:
            self.log(args)
        return integer(n)

    def srem(self, s: Session, args: list) -> bytes:
        n = self.db.srem(args[1], args[2:])
        if n:
            self.log(args)
        return integer(n)

    def smembers(self, s: Session, args: list) -> bytes:
        return bulks(list(self.db.smembers(args[1])), kind=b"~" if s.resp3 else b"*")

    def sismember(self, s: Session, args: list) -> bytes:
        return integer(int(self.db.sismember(args[1], args[2])))

    def smismember(self, s: Session, args: list) -> bytes:
        members = self.db.smembers(args[1])
        return b"*%d\r\n" % (len(args) - 2) + b"".join(
            integer(int(m in members)) for m in args[2:])

    def scard(self, s: Session, args: list) -> bytes:
        return integer(self.db.scard(args[1]))

    # -- hashes ----------------------------------------------------------------------------

    def hset(self, s: Session, args: list) -> bytes:
        if len(args) % 2:
            return _arity_error(args[0].lower().decode())
        n = self.db.hset(args[1], zip(args[2::2], args[3::2]))
        self.log(args)
        return OK if args[0].lower() == b"hmset" else integer(n)

    def hsetnx(self, s: Session, args: list) -> bytes:
        h = self.db.hgetall(args[1])
        if args[2] in h:
            return integer(0)
        self.db.hset(args[1], [(args[2], args[3])])
        self.log([b"HSET", args[1], args[2], args[3]])
        return integer(1)

    def hget(self, s: Session, args: list) -> bytes:
        return bulk_or_nil(self.db.hget(args[1], args[2]), s.nil)

    def hmget(self, s: Session, args: list) -> bytes:
        h = self.db.hgetall(args[1])
        return bulks([h.get(f) for f in args[2:]], s.nil)

    def hgetall(self, s: Session, args: list) -> bytes:
        h = self.db.hgetall(args[1])
        flat = []
        for k, v in h.items():
            flat.append(k)
            flat.append(v)
        if s.resp3:
            return b"%%%d\r\n" % len(h) + bulks(flat)[len(b"*%d\r\n" % len(flat)):]
        return bulks(flat)

    def hdel(self, s: Session, args: list) -> bytes:
        n = self.db.hdel(args[1], args[2:])
        if n:
            self.log(args)
        return integer(n)

    def hlen(self, s: Session, args: list) -> bytes:
        return integer(len(self.db.hgetall(args[1])))

    def hexists(self, s: Session, args: list) -> bytes:
        return integer(int(args[2] in self.db.hgetall(args[1])))

    def hincrby(self, s: Session, args: list) -> bytes:
        delta = _int(args[3])
        value = self.db.hincrby(args[1], args[2], delta)
        self.log([b"HSET", args[1], args[2], b"%d" % value])
        return integer(value)

    def hkeys(self, s: Session, args: list) -> bytes:
        return bulks(list(self.db.hgetall(args[1])))

    def hvals(self, s: Session, args: list) -> bytes:
        return bulks(list(self.db.hgetall(args[1]).values()))

    # -- lists -----------------------------------------------------------------------------

    def push(self, s: Session, args: list) -> bytes:
        n = self.db.push(args[1], args[2:], args[0][0] in b"lL")
        self.log(args)
        return integer(n)

    def pop(self, s: Session, args: list) -> bytes:
        if len(args) > 3:
            return _arity_error(args[0].lower().decode())
        count = None
        if len(args) == 3:
            count = parse_int(args[2])
            if count is None:
                raise CommandError(NOT_INTEGER)
            if count < 0:
                return error("ERR value is out of range, must be positive")
        left = args[0][0] in b"lL"
        db = self.db
        if count == 0:  # Redis answers without popping, but after its checks
            v = db.lookup(args[1])
            if v is None:
                return s.nil_array
            if type(v) is not deque:
                raise WrongType()
            return EMPTY_ARRAY
        value = db.pop(args[1], count, left)
        if value is None:
            return s.nil if count is None else s.nil_array
        self.log(args)
        return bulk(value) if count is None else bulks(value)

    def lrange(self, s: Session, args: list) -> bytes:
        start = _int(args[2])
        stop = _int(args[3])
        return bulks(self.db.lrange(args[1], start, stop))

    def llen(self, s: Session, args: list) -> bytes:
        return integer(self.db.llen(args[1]))

    def lindex(self, s: Session, args: list) -> bytes:
        return bulk_or_nil(self.db.lindex(args[1], _int(args[2])), s.nil)

    # -- pub/sub ---------------------------------------------------------------------------

    def publish(self, s: Session, args: list) -> bytes:
        return integer(self.hub.publish(args[1], args[2]))

    def _count(self, s: Session) -> int:
        return len(s.channels) + len(s.patterns)

    def subscribe(self, s: Session, args: list) -> bytes:
        out = []
        for channel in args[1:]:
            if channel not in s.channels:
                s.channels[channel] = None
                self.hub.subscribe(s, channel)
            out.append(s.push_kind + b"3\r\n$9\r\nsubscribe\r\n" + bulk(channel)
                       + integer(self._count(s)))
        s.regate()
        return b"".join(out)

    def unsubscribe(self, s: Session, args: list) -> bytes:
        channels = args[1:] or list(s.channels)
        if not channels:
            return (s.push_kind + b"3\r\n$11\r\nunsubscribe\r\n" + s.nil
                    + integer(self._count(s)))
        out = []
        for channel in channels:
            if s.channels.pop(channel, 0) is None:
                self.hub.unsubscribe(s, channel)
            out.append(s.push_kind + b"3\r\n$11\r\nunsubscribe\r\n" + bulk(channel)
                       + integer(self._count(s)))
        s.regate()
        return b"".join(out)

    def psubscribe(self, s: Session, args: list) -> bytes:
        out = []
        for pattern in args[1:]:
            if pattern not in s.patterns:
                s.patterns[pattern] = None
                self.hub.psubscribe(s, pattern)
            out.append(s.push_kind + b"3\r\n$10\r\npsubscribe\r\n" + bulk(pattern)
                       + integer(self._count(s)))
        s.regate()
        return b"".join(out)

    def punsubscribe(self, s: Session, args: list) -> bytes:
        patterns = args[1:] or list(s.patterns)
        if not patterns:
            return (s.push_kind + b"3\r\n$12\r\npunsubscribe\r\n" + s.nil
                    + integer(self._count(s)))
        out = []
        for pattern in patterns:
            if s.patterns.pop(pattern, 0) is None:
                self.hub.punsubscribe(s, pattern)
            out.append(s.push_kind + b"3\r\n$12\r\npunsubscribe\r\n" + bulk(pattern)
                       + integer(self._count(s)))
        s.regate()
        return b"".join(out)

    def pubsub(self, s: Session, args: list) -> bytes:
        sub = args[1].lower()
        hub = self.hub
        if sub == b"channels" and len(args) <= 3:
            match = glob_matcher(args[2]) if len(args) == 3 else None
            return bulks([c for c in hub.channels if match is None or match(c)])
        if sub == b"numsub":
            out = []
            for channel in args[2:]:
                out += [channel, len(hub.channels.get(channel, ()))]
            return encode(out)
        if sub == b"numpat" and len(args) == 2:
            return integer(len(hub.patterns))
        return error(f"ERR unknown subcommand or wrong number of arguments for "
                     f"'{_c_str(args[1])[:128]}'. Try PUBSUB HELP.")

    def drop_session(self, s: Session) -> None:
        """Forget a connection's subscriptions (it closed, or RESET)."""
        for channel in s.channels:
            self.hub.unsubscribe(s, channel)
        for pattern in s.patterns:
            self.hub.punsubscribe(s, pattern)
        s.channels = {}
        s.patterns = {}
        s.regate()
