"""The keyspace (titan.store.data.Database) with a fake clock: types, expiry (lazy, swept,
conditions), iteration, glob patterns, snapshots."""
from __future__ import annotations

from collections import deque

from hypothesis import given, settings, strategies as st
from twisted.internet.task import Clock
from twisted.trial import unittest

from titan.store.data import (
    MAX_SCANS, NOT_INTEGER, OVERFLOW, CommandError, Database, WrongType, glob_matcher,
    to_int)

START = 1_700_000_000.0  # seconds since the epoch


def make_db() -> tuple[Database, Clock]:
    clock = Clock()
    clock.advance(START)
    return Database(clock.seconds), clock


def later(db: Database, clock: Clock, seconds: float) -> None:
    clock.advance(seconds)
    db.tick()


class StringTests(unittest.TestCase):
    def test_set_get_delete(self):
        db, _ = make_db()
        self.assertIsNone(db.get(b"k"))
        db.set(b"k", b"v")
        self.assertEqual(db.get(b"k"), b"v")
        self.assertTrue(db.exists(b"k"))
        self.assertEqual(db.type_of(b"k"), "string")
        self.assertEqual(db.count_existing([b"k", b"k", b"nope"]), 2)
        self.assertEqual(db.delete([b"k", b"k", b"nope"]), 1)
        self.assertEqual(db.type_of(b"k"), "none")
        self.assertEqual(db.dbsize(), 0)

    def test_binary_keys_and_values(self):
        db, _ = make_db()
        key, value = bytes(range(256)), b"\x00\r\n\xff" * 100
        db.set(key, value)
        self.assertEqual(db.get(key), value)

    def test_incrby(self):
        db, _ = make_db()
        self.assertEqual(db.incrby(b"n", 5), 5)
        self.assertEqual(db.incrby(b"n", -7), -2)
        self.assertEqual(db.get(b"n"), b"-2")
        db.set(b"n", b"9223372036854775806")
        self.assertEqual(db.incrby(b"n", 1), 2 ** 63 - 1)
        with self.assertRaises(CommandError) as e:
            db.incrby(b"n", 1)
        self.assertEqual(str(e.exception), OVERFLOW)
        for bad in [b"abc", b"01", b" 1", b"+1", b"1.5", b""]:
            db.set(b"n", bad)
            with self.assertRaises(CommandError) as e:
                db.incrby(b"n", 1)
            self.assertEqual(str(e.exception), NOT_INTEGER)
            self.assertEqual(db.get(b"n"), bad)

    def test_to_int(self):
        self.assertEqual(to_int(b"-9223372036854775808"), -2 ** 63)
        self.assertIsNone(to_int(b"9223372036854775808"))
        self.assertIsNone(to_int(b"-0"))

    def test_wrong_type(self):
        db, _ = make_db()
        db.sadd(b"s", [b"a"])
        for call in [lambda: db.get(b"s"), lambda: db.incrby(b"s", 1),
                     lambda: db.hget(b"s", b"f"), lambda: db.push(b"s", [b"x"], True),
                     lambda: db.lrange(b"s", 0, -1), lambda: db.hset(b"s", [(b"f", b"v")]),
                     lambda: db.append(b"s", b"x")]:
            self.assertRaises(WrongType, call)
        db.set(b"s", b"now a string")  # SET overwrites whatever was there
        self.assertEqual(db.get(b"s"), b"now a string")
        self.assertRaises(WrongType, db.smembers, b"s")


class CollectionTests(unittest.TestCase):
    def test_sets(self):
        db, _ = make_db()
        self.assertEqual(db.sadd(b"s", [b"a", b"b", b"a"]), 2)
        self.assertEqual(db.sadd(b"s", [b"b", b"c"]), 1)
        self.assertEqual(db.smembers(b"s"), {b"a", b"b", b"c"})
        self.assertTrue(db.sismember(b"s", b"a"))
        self.assertFalse(db.sismember(b"nope", b"a"))
        self.assertEqual(db.scard(b"s"), 3)
        self.assertEqual(db.srem(b"s", [b"a", b"z"]), 1)
        self.assertEqual(db.srem(b"s", [b"b", b"c"]), 2)
        self.assertFalse(db.exists(b"s"))  # the last member took the key with it
        self.assertEqual(db.smembers(b"s"), set())

    def test_hashes(self):
        db, _ = make_db()
        self.assertEqual(db.hset(b"h", [(b"f1", b"v1"), (b"f2", b"v2")]), 2)
        self.assertEqual(db.hset(b"h", [(b"f1", b"x")]), 0)
        self.assertEqual(db.hget(b"h", b"f1"), b"x")
        self.assertEqual(db.hgetall(b"h"), {b"f1": b"x", b"f2": b"v2"})
        self.assertEqual(db.hincrby(b"h", b"n", 3), 3)
        self.assertRaises(CommandError, db.hincrby, b"h", b"f1", 1)
        self.assertEqual(db.hdel(b"h", [b"f1", b"f2", b"n", b"zz"]), 3)
        self.assertFalse(db.exists(b"h"))

    def test_lists(self):
        db, _ = make_db()
        self.assertEqual(db.push(b"l", [b"a", b"b"], left=False), 2)
        self.assertEqual(db.push(b"l", [b"x", b"y"], left=True), 4)
        self.assertEqual(db.lrange(b"l", 0, -1), [b"y", b"x", b"a", b"b"])
        self.assertEqual(db.lindex(b"l", -1), b"b")
        self.assertIsNone(db.lindex(b"l", 9))
        self.assertEqual(db.pop(b"l", None, left=True), b"y")
        self.assertEqual(db.pop(b"l", 2, left=False), [b"b", b"a"])
        self.assertEqual(db.pop(b"l", 5, left=False), [b"x"])
        self.assertFalse(db.exists(b"l"))
        self.assertIsNone(db.pop(b"l", None, left=True))
        self.assertEqual(db.llen(b"l"), 0)

    @settings(max_examples=300, deadline=None)
    @given(st.integers(0, 30), st.integers(-40, 40), st.integers(-40, 40))
    def test_lrange_is_redis_slicing(self, n, start, stop):
        db, _ = make_db()
        items = [b"%d" % i for i in range(n)]
        if items:
            db.push(b"l", items, left=False)
        # Redis: negative from the end, clamped; stop inclusive.
        s = max(n + start, 0) if start < 0 else start
        e = n + stop if stop < 0 else stop
        e = min(e, n - 1)
        expected = items[s:e + 1] if s <= e and s < n else []
        self.assertEqual(db.lrange(b"l", start, stop), expected)


class ExpiryTests(unittest.TestCase):
    def test_set_with_expiry_then_lazy_removal(self):
        db, clock = make_db()
        db.set(b"k", b"v", expire_at=db.now + 1500)
        self.assertEqual(db.pttl(b"k"), 1500)
        later(db, clock, 1.5)
        self.assertEqual(db.get(b"k"), b"v")  # alive at exactly its time, as in Redis
        self.assertEqual(db.pttl(b"k"), 0)
        later(db, clock, 0.001)
        self.assertIsNone(db.get(b"k"))
        self.assertEqual(db.pttl(b"k"), -2)
        self.assertEqual(db.dbsize(), 0)
        self.assertEqual(db.expired_keys, 1)

    def test_time_stands_still_between_ticks(self):
        db, clock = make_db()
        db.set(b"k", b"v", expire_at=db.now + 10)
        clock.advance(60)
        self.assertEqual(db.get(b"k"), b"v")
        db.tick()
        self.assertIsNone(db.get(b"k"))

    def test_every_type_expires(self):
        db, clock = make_db()
        db.sadd(b"s", [b"a"])
        db.hset(b"h", [(b"f", b"v")])
        db.push(b"l", [b"x"], left=True)
        for key in (b"s", b"h", b"l"):
            self.assertEqual(db.expire_at(key, db.now + 1000), 1)
        later(db, clock, 2)
        self.assertEqual(db.smembers(b"s"), set())
        self.assertEqual(db.hgetall(b"h"), {})
        self.assertEqual(db.lrange(b"l", 0, -1), [])

    def test_overwrite_clears_expiry_unless_kept(self):
        db, clock = make_db()
        db.set(b"k", b"v", expire_at=db.now + 1000)
        db.set(b"k", b"w", keep_ttl=True)
        self.assertEqual(db.pttl(b"k"), 1000)
        db.set(b"k", b"x")
        self.assertEqual(db.pttl(b"k"), -1)
        db.set(b"k", b"v", expire_at=db.now + 1000)
        self.assertEqual(db.incrby(b"n", 1), 1)
        db.expire_at(b"n", db.now + 1000)
        db.incrby(b"n", 1)
        self.assertEqual(db.pttl(b"n"), 1000)  # INCR keeps the expiry
        later(db, clock, 2)
        db.set(b"k", b"new", keep_ttl=True)  # a dead key's time does not carry over
        self.assertEqual(db.get(b"k"), b"new")
        self.assertEqual(db.pttl(b"k"), -1)

    def test_expire_conditions(self):
        db, _ = make_db()
        now = db.now
        self.assertEqual(db.expire_at(b"nope", now + 10), 0)
        db.set(b"k", b"v")
        self.assertEqual(db.expire_at(b"k", now + 100, xx=True), 0)
        self.assertEqual(db.expire_at(b"k", now + 100, gt=True), 0)  # none is forever
        self.assertEqual(db.expire_at(b"k", now + 100, lt=True), 1)
        self.assertEqual(db.expire_at(b"k", now + 50, nx=True), 0)
        self.assertEqual(db.expire_at(b"k", now + 50, gt=True), 0)
        self.assertEqual(db.expire_at(b"k", now + 500, gt=True), 1)
        self.assertEqual(db.expire_at(b"k", now + 600, lt=True), 0)
        self.assertEqual(db.expire_at(b"k", now + 60, xx=True), 1)
        self.assertEqual(db.expire_time(b"k"), now + 60)
        self.assertEqual(db.persist(b"k"), 1)
        self.assertEqual(db.persist(b"k"), 0)
        self.assertEqual(db.pttl(b"k"), -1)
        self.assertEqual(db.expire_at(b"k", now), 1)  # not in the future: gone at once
        self.assertFalse(db.exists(b"k"))

    def test_sweep(self):
        db, clock = make_db()
        for i in range(100):
            db.set(b"k%d" % i, b"v", expire_at=db.now + 1000 * (1 + i % 4))
        db.set(b"keep", b"v")
        db.set(b"k0", b"v", expire_at=db.now + 100_000)   # a later time than first set
        db.set(b"k1", b"v")                                # no longer expires
        later(db, clock, 2.5)
        removed, more = db.sweep(limit=10)
        self.assertEqual((removed, more), (10, True))
        removed, more = db.sweep()
        self.assertEqual((removed, more), (38, False))
        self.assertEqual(len(db.data), 100 + 1 - 48)
        self.assertTrue(db.exists(b"k0"))
        self.assertTrue(db.exists(b"k1"))
        later(db, clock, 10)
        db.sweep()
        self.assertEqual(sorted(db.data), [b"k0", b"k1", b"keep"])
        self.assertEqual(db.expired_keys, 98)

    def test_heap_of_stale_entries_is_rebuilt(self):
        db, _ = make_db()
        for i in range(20000):
            db.set(b"k", b"v", expire_at=db.now + 1000 + i)
        self.assertLess(len(db._heap), 4096 + 10)

    def test_stale_time_is_read_when_it_matters(self):
        db, clock = make_db()
        clock.advance(30)
        db.stale = True  # as the server leaves it while no key expires
        self.assertEqual(db.current(), int((START + 30) * 1000))
        db.stale = True
        clock.advance(5)
        db.set(b"k", b"v")
        db.expire_at(b"k", int((START + 40) * 1000))  # a key gets a time: now is read
        self.assertFalse(db.stale)
        self.assertEqual(db.pttl(b"k"), 5000)


class ScanTests(unittest.TestCase):
    def full_scan(self, db: Database, **kw) -> list:
        cursor, seen, steps = 0, [], 0
        while True:
            cursor, keys = db.scan(cursor, **kw)
            seen.extend(keys)
            steps += 1
            if cursor == 0:
                return seen

    def test_small_keyspace_in_one_step(self):
        db, _ = make_db()
        for k in (b"a", b"b", b"c"):
            db.set(k, b"1")
        self.assertEqual(db.scan(0), (0, [b"a", b"b", b"c"]))

    def test_every_stable_key_exactly_once_while_others_change(self):
        db, _ = make_db()
        for i in range(1000):
            db.set(b"stable:%d" % i, b"v")
        for i in range(300):
            db.set(b"gone:%d" % i, b"v")
        cursor, seen, i = 0, [], 0
        while True:
            cursor, keys = db.scan(cursor, count=37)
            seen.extend(keys)
            db.set(b"new:%d" % i, b"v")
            db.delete([b"gone:%d" % i])
            i += 1
            if cursor == 0:
                break
        stable = [k for k in seen if k.startswith(b"stable:")]
        self.assertEqual(len(stable), 1000)
        self.assertEqual(len(set(stable)), 1000)

    def test_match_type_count(self):
        db, _ = make_db()
        for i in range(50):
            db.set(b"s:%d" % i, b"v")
            db.sadd(b"set:%d" % i, [b"m"])
        self.assertEqual(len(self.full_scan(db, pattern=b"s:*", count=7)), 50)
        self.assertEqual(sorted(self.full_scan(db, kind="set", count=1000)),
                         sorted(b"set:%d" % i for i in range(50)))
        cursor, keys = db.scan(0, pattern=b"nothing*", count=5)
        self.assertNotEqual(cursor, 0)  # a step may find nothing and still go on
        self.assertEqual(keys, [])

    def test_old_iterations_are_dropped_and_unknown_cursors_go_on(self):
        db, _ = make_db()
        for i in range(100):
            db.set(b"k%d" % i, b"v")
        cursors = [db.scan(0, count=10)[0] for _ in range(MAX_SCANS + 5)]
        self.assertEqual(len(db._scans), MAX_SCANS)
        cursor, keys = db.scan(cursors[0], count=10)  # forgotten: a fresh list, same place
        self.assertEqual(len(keys), 10)
        self.assertNotEqual(cursor, 0)

    def test_keys(self):
        db, clock = make_db()
        for k in (b"user:1", b"user:2", b"job:1"):
            db.set(k, b"v")
        db.set(b"user:3", b"v", expire_at=db.now + 10)
        later(db, clock, 1)
        self.assertEqual(sorted(db.keys(b"user:*")), [b"user:1", b"user:2"])
        self.assertEqual(sorted(db.keys()), [b"job:1", b"user:1", b"user:2"])


class GlobTests(unittest.TestCase):
    CASES = [
        (b"*", b"", True), (b"*", b"anything", True),
        (b"a*", b"abc", True), (b"a*", b"bac", False),
        (b"*c", b"abc", True), (b"a*c", b"ac", True), (b"a**c", b"abbbc", True),
        (b"a?c", b"abc", True), (b"a?c", b"ac", False),
        (b"[ab]x", b"bx", True), (b"[ab]x", b"cx", False),
        (b"[^ab]x", b"cx", True), (b"[^ab]x", b"ax", False),
        (b"[a-c]", b"b", True), (b"[c-a]", b"b", True), (b"[a-c]", b"d", False),
        (b"\\*", b"*", True), (b"\\*", b"a", False), (b"[\\]]", b"]", True),
        (b"a\\?", b"a?", True), (b"a\\?", b"ab", False),
        (b"job:*:state", b"job:42:state", True), (b"job:*:state", b"job:42:log", False),
        (b"x.y", b"xzy", False), (b"(a|b)", b"(a|b)", True),
        (b"a[b", b"ab", True),  # an unclosed class ends with the pattern, as in Redis
        (b"[]", b"a", False), (b"\xff*", b"\xff\x00\n", True),
    ]

    def test_cases(self):
        for pattern, text, expected in self.CASES:
            match = glob_matcher(pattern)
            got = True if match is None else match(text)
            self.assertEqual(got, expected, (pattern, text))


class SnapshotTests(unittest.TestCase):
    def test_round_trip(self):
        db, clock = make_db()
        db.set(b"s", b"\x00bytes")
        db.sadd(b"set", [b"a", b"\xff"])
        db.hset(b"h", [(b"f", b"v"), (b"\x00", b"")])
        db.push(b"l", [b"1", b"2", b"3"], left=False)
        db.set(b"t", b"v", expire_at=db.now + 5000)
        blob = db.snapshot()
        copy, _ = make_db()
        copy.restore(blob)
        self.assertEqual(copy.data, db.data)
        self.assertIsInstance(copy.data[b"l"], deque)
        self.assertIsInstance(copy.data[b"set"], set)
        self.assertEqual(copy.expires, db.expires)
        self.assertEqual(copy.pttl(b"t"), 5000)

    def test_expired_keys_come_back_until_swept(self):
        db, clock = make_db()
        db.set(b"t", b"v", expire_at=db.now + 1000)
        blob = db.snapshot()
        copy, copy_clock = make_db()
        copy_clock.advance(5)
        copy.restore(blob)
        self.assertIn(b"t", copy.data)  # the log after it may still need it alive
        copy.tick()
        copy.sweep()
        self.assertEqual(copy.data, {})

    def test_unknown_version(self):
        import msgpack
        db, _ = make_db()
        self.assertRaises(ValueError, db.restore, msgpack.packb([99, {}, {}]))
