"""The master's event log: append throughput per fsync policy, and recovery time.

    python bench/aof.py [--events 1000000] [--per-turn 100] [--rounds 3] [--appends 200000]
                        [--seconds 3] [--submitters 100] [--backend aof|sqlite] [--dir DIR]
                        [--skip-appends] [--skip-recovery] [--profile N]

1. Appends/s.  `everysec` and `no`: one loop appends --appends encoded events (JobSubmitted
   and JobFinished of standalone jobs, as the master encodes them: ~45 bytes on average)
   through the real reactor; the clock stops when sync() has returned, so the write and
   an fsync are counted.  `always`: --submitters coroutines each append and await the
   Deferred (fired after the group fsync), over and over for --seconds.
   Targets: >= 200,000/s everysec, >= 20,000/s always.
2. Recovery.  A log of --events events, written the way a master writes it (a scheduler
   applies each event and the events it leads to are recorded): 2 workers join, a DAG run of
   --dag-jobs jobs, then standalone jobs submitted and finished in turn (JobSubmitted +
   JobFinished pairs), --per-turn of them per turn of the reactor (each turn's records are
   one write, one batch frame).  Then a MasterService (MemoryReactorClock, data_dir = the
   bench dir) recovers from it exactly as at start-up (`_prepare` -> `_recover`: load,
   decode, replay), --rounds times, each from a fresh copy of the log; the median is the
   figure (this VM's speed swings by a fifth or more between runs).  Target <= 5 s for
   1,000,000 events.  The same records framed one per write (a master that never had two
   events in one turn) are recovered once more, for comparison.  Then the master compacts
   (snapshot of its state) and a fresh master recovers again: target <= 1 s.  File sizes
   before and after.
   With --profile N, the recovery from the full log runs a second time under cProfile and
   the N most expensive functions are printed.

Scale down with --events 100000 --appends 50000 for a quick run.
"""
from __future__ import annotations

import argparse
import cProfile
import io
import os
import pstats
import shutil
import sys
import tempfile
import time

import msgpack

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from twisted.internet import defer, task  # noqa: E402
from twisted.internet.testing import MemoryReactorClock  # noqa: E402

from titan.config import Config, MasterConfig, PersistenceConfig  # noqa: E402
from titan.core import events as ev  # noqa: E402
from titan.core.codec import encode_event, persisted  # noqa: E402
from titan.core.dag import parse_dag  # noqa: E402
from titan.core.model import JobSpec  # noqa: E402
from titan.core.scheduler import Scheduler, snapshot  # noqa: E402
from titan.interfaces import IPersistenceFactory  # noqa: E402
from titan.plugin_registry import find  # noqa: E402

T0 = 1_767_225_600.0  # 2026-01-01, when the bench's log starts


def build(backend: str, directory: str, policy: str):
    return find(IPersistenceFactory, backend, "persistence backend").build(
        directory, {"fsync": policy})


def turn(reactor) -> defer.Deferred:
    return task.deferLater(reactor, 0, lambda: None)


def sample_records(n: int) -> list[bytes]:
    """n encoded events, alternately JobSubmitted and JobFinished of distinct jobs."""
    out = []
    for i in range(0, n, 2):
        job_id = f"{i // 2:08x}"
        spec = JobSpec(job_id=job_id, command=("sh", "-c", f"echo job {i // 2}"))
        out.append(encode_event(ev.JobSubmitted(spec), T0 + i * 1e-3))
        out.append(encode_event(ev.JobFinished(job_id, "w1", 1, 0), T0 + i * 1e-3 + 5e-4))
    return out[:n]


def calibrate() -> float:
    """Seconds a fixed pure-Python loop (allocations, a dict, strings) takes now: this VM's
    speed swings by a fifth or more from one minute to the next, and runs compare by it."""
    start = time.perf_counter()
    d: dict = {}
    for i in range(1_000_000):
        d[i & 1023] = (i, str(i))
    return time.perf_counter() - start


def du(directory: str) -> int:
    total = 0
    for root, _, files in os.walk(directory):
        total += sum(os.path.getsize(os.path.join(root, f)) for f in files)
    return total


def mb(n: int) -> str:
    return f"{n / 1e6:.1f} MB"


# -- 1. appends ----------------------------------------------------------------------------

async def appends_loop(reactor, backend_name: str, policy: str, recs: list[bytes],
                       base: str) -> tuple[float, float]:
    """(appends/s counting until sync() returned, appends/s of the loop alone)."""
    directory = os.path.join(base, f"appends-{policy}")
    backend = build(backend_name, directory, policy)
    backend.load()
    start = time.perf_counter()
    append = backend.append
    for r in recs:
        append(r)
    looped = time.perf_counter()
    await backend.sync()
    end = time.perf_counter()
    await backend.close()
    shutil.rmtree(directory)
    return len(recs) / (end - start), len(recs) / (looped - start)


async def appends_always(reactor, backend_name: str, recs: list[bytes], submitters: int,
                         seconds: float, base: str) -> tuple[float, float, int]:
    """(appends/s, mean ms per acknowledged append, fsync groups) for `always`."""
    directory = os.path.join(base, "appends-always")
    backend = build(backend_name, directory, "always")
    backend.load()
    done = [0]
    latency = [0.0]
    stop_at = time.perf_counter() + seconds
    n = len(recs)

    async def submitter(k: int) -> None:
        i = k
        while time.perf_counter() < stop_at:
            t = time.perf_counter()
            await backend.append(recs[i % n])
            latency[0] += time.perf_counter() - t
            done[0] += 1
            i += submitters

    groups = [0]
    real = getattr(backend, "_group_fsync", None)
    if real is not None:
        def counted():
            groups[0] += 1
            real()
        backend._group_fsync = counted
    start = time.perf_counter()
    await defer.gatherResults([defer.Deferred.fromCoroutine(submitter(k))
                               for k in range(submitters)])
    elapsed = time.perf_counter() - start
    await backend.close()
    shutil.rmtree(directory)
    return done[0] / elapsed, latency[0] / max(done[0], 1) * 1e3, groups[0]


# -- 2. recovery ---------------------------------------------------------------------------

async def write_log(reactor, backend_name: str, log_dir: str, events: int,
                    dag_jobs: int, compact_after: int = 0, per_turn: int = 100) -> dict:
    """A master's log of about `events` events: what a busy master records (compacted
    whenever it has grown by `compact_after` bytes, as MasterService does, if that is set),
    `per_turn` submissions and completions per turn of the reactor (the AOF writes each
    turn's records as one batch frame)."""
    backend = build(backend_name, log_dir, "no")
    backend.load()
    s = Scheduler(max_jobs_per_run=max(dag_jobs, 1))
    clock = [T0]
    written = [0]
    running: list[ev.Dispatch] = []

    def handle(event) -> None:
        now = clock[0]
        if persisted(event):
            backend.append(encode_event(event, now))
            written[0] += 1
        for d in s.apply(event, now):
            if isinstance(d, ev.Propose):
                handle(d.event)
            elif isinstance(d, ev.Dispatch):
                running.append(d)
        # After the event took effect, as MasterService.handle does.
        if compact_after and backend.bytes_since_compaction > compact_after:
            backend.compact(msgpack.packb(snapshot(s), use_bin_type=True))

    def finish_one() -> None:
        d = running.pop(0)
        handle(ev.JobFinished(d.job_id, d.worker_id, d.attempt, 0))

    for w in range(2):
        handle(ev.WorkerJoined(f"w{w}", f"worker-{w}", "10.0.0.%d" % (w + 1), frozenset(), 8))
    if dag_jobs:
        width = 50
        jobs = []
        for i in range(dag_jobs):
            layer, pos = divmod(i, width)
            deps = [] if not layer else sorted(
                {f"j{(layer - 1) * width + pos}", f"j{(layer - 1) * width + (pos + 1) % width}"})
            jobs.append({"id": f"j{i}", "command": ["make", f"part-{i}"], "depends_on": deps})
        handle(ev.DagSubmitted("build-1", parse_dag({"name": "build", "jobs": jobs,
                                                     "max_jobs": dag_jobs})))
    i = 0
    while written[0] < events:
        clock[0] += 1e-3
        if i % 2 == 0 or not running:
            spec = JobSpec(job_id=f"{i:08x}", command=("sh", "-c", f"echo job {i}"))
            handle(ev.JobSubmitted(spec))
        else:
            finish_one()
        i += 1
        if i % per_turn == 0:
            await turn(reactor)  # the backend writes what this turn appended
    await backend.close()
    return {"events": written[0], "jobs": len(s.jobs), "state": s}


def master_for(data_dir: str, backend_name: str):
    from titan.master.service import MasterService
    config = Config(token="bench", master=MasterConfig(
        listen="tcp:0:interface=127.0.0.1", data_dir=data_dir, max_jobs_per_run=100_000),
        persistence=PersistenceConfig(backend=backend_name, fsync="no"))
    return MasterService(config, reactor=MemoryReactorClock())


def recover(data_dir: str, backend_name: str):
    """A master started from data_dir the way twistd starts one: (master, wall seconds)."""
    master = master_for(data_dir, backend_name)
    start = time.perf_counter()
    master._prepare()  # loads the log, decodes, applies every event (MasterService._recover)
    return master, time.perf_counter() - start


async def closed_recovery(data_dir: str, backend_name: str) -> tuple[float, dict]:
    """`recover`, then the master's files closed: (wall seconds, what it recovered)."""
    master, wall = recover(data_dir, backend_name)
    await master.persistence.close()
    return wall, master.recovery


async def breakdown(data_dir: str, backend_name: str) -> dict:
    """The recovery loop in three steps, timed apart: read, decode, apply."""
    import msgpack
    from titan.core.codec import decode_events
    from titan.core.scheduler import restore
    import gc
    backend = build(backend_name, os.path.join(data_dir, "log"), "no")
    gc.disable()  # as MasterService._recover does
    t0 = time.perf_counter()
    snap, records = backend.load()
    records = list(records)
    t1 = time.perf_counter()
    decoded = list(decode_events(records))
    t2 = time.perf_counter()
    s = Scheduler(max_jobs_per_run=100_000)
    if snap is not None:
        restore(s, msgpack.unpackb(snap, raw=False, strict_map_key=False))
    t3 = time.perf_counter()
    s.replay(decoded)  # as MasterService._recover does
    t4 = time.perf_counter()
    gc.enable()
    await backend.close()
    return {"load": t1 - t0, "decode": t2 - t1, "restore": t3 - t2, "apply": t4 - t3,
            "records": len(records)}


def profile_recovery(data_dir: str, backend_name: str, top: int) -> str:
    master = master_for(data_dir, backend_name)
    prof = cProfile.Profile()
    prof.enable()
    master._prepare()
    prof.disable()
    master.persistence.close()
    out = io.StringIO()
    stats = pstats.Stats(prof, stream=out)
    stats.sort_stats("tottime").print_stats(top)
    return out.getvalue()


async def recovery(reactor, a, base: str) -> None:
    data_dir = os.path.join(base, "master")
    log_dir = os.path.join(data_dir, "log")
    t = time.perf_counter()
    made = await write_log(reactor, a.backend, log_dir, a.events, a.dag_jobs,
                           per_turn=a.per_turn)
    print(f"  wrote {made['events']:,} events ({made['jobs']:,} jobs, {a.per_turn} "
          f"submissions or completions per turn of the reactor) in "
          f"{time.perf_counter() - t:.1f}s: {mb(du(log_dir))} in {log_dir}")
    del made
    single_dir = None
    if a.backend == "aof":
        # The same records, a frame each: a log written by a master that never appended two
        # events in one turn (idle most of the time), the slowest layout to read back.
        from titan.persistence.aof import LOG_MAGIC, frame
        single_dir = os.path.join(base, "single")
        os.makedirs(os.path.join(single_dir, "log"))
        backend = build(a.backend, log_dir, "no")
        _, records = backend.load()
        await backend.close()
        with open(os.path.join(single_dir, "log", "events.0.aof"), "wb") as f:
            f.write(LOG_MAGIC + b"".join(frame(r) for r in records))
        del records

    # Each round recovers a fresh copy (a start-up records MasterRestarted in the log).
    walls = []
    for _ in range(a.rounds):
        copy = os.path.join(base, "copy")
        shutil.copytree(data_dir, copy)
        wall, r = await closed_recovery(copy, a.backend)
        shutil.rmtree(copy)
        walls.append(wall)
    wall = sorted(walls)[len(walls) // 2]
    target = "MET" if wall <= 5.0 * a.events / 1_000_000 else "NOT MET"
    print(f"  recovery from the log: {wall:.2f}s wall, the median of {a.rounds} "
          f"({', '.join(f'{w:.2f}' for w in walls)}) ({r['events']:,} events, "
          f"{r['jobs']:,} jobs) -> {r['events'] / wall:,.0f} events/s   "
          f"[target <= 5 s per 1M events: {target}]")
    b = await breakdown(data_dir, a.backend)
    print(f"    of which: load {b['load']:.2f}s, decode {b['decode']:.2f}s, "
          f"apply {b['apply']:.2f}s ({b['records']:,} records)")
    if single_dir:
        wall, r = await closed_recovery(single_dir, a.backend)
        shutil.rmtree(single_dir)
        print(f"  the same log with a frame per record (no two events ever in one turn): "
              f"{wall:.2f}s wall ({r['events']:,} events, {r['jobs']:,} jobs)")
    if a.profile:
        print(f"\n  cProfile of one recovery (top {a.profile} by own time):")
        print("    " + profile_recovery(data_dir, a.backend, a.profile).replace("\n", "\n    "))

    before = du(log_dir)
    master, _ = recover(data_dir, a.backend)
    t = time.perf_counter()
    await master.compact()
    compact_s = time.perf_counter() - t
    await master.persistence.close()
    del master
    after = du(log_dir)
    master, wall = recover(data_dir, a.backend)
    r = master.recovery
    await master.persistence.close()
    target = "MET" if wall <= 1.0 else "NOT MET"
    print(f"  compaction: {compact_s:.2f}s; log {mb(before)} -> {mb(after)} "
          f"({', '.join(f'{n} {mb(os.path.getsize(os.path.join(log_dir, n)))}' for n in sorted(os.listdir(log_dir)) if not n.endswith('.tmp'))})")
    print(f"  recovery from the snapshot: {wall:.2f}s wall (snapshot: {r['snapshot']}, "
          f"{r['events']} events after it, {r['jobs']:,} jobs)   [target <= 1 s: {target}]")
    b = await breakdown(data_dir, a.backend)
    print(f"    of which: load {b['load']:.2f}s, restore {b['restore']:.2f}s, "
          f"decode+apply {b['decode'] + b['apply']:.2f}s")

    # What a master running with the default configuration leaves on disk after the same
    # events: it compacts whenever the log has grown by compact_after_bytes.
    every = PersistenceConfig().compact_after_bytes
    auto_dir = os.path.join(base, "auto")
    made = await write_log(reactor, a.backend, os.path.join(auto_dir, "log"), a.events,
                           a.dag_jobs, compact_after=every, per_turn=a.per_turn)
    master, wall = recover(auto_dir, a.backend)
    r = master.recovery
    same = "the same as" if r["jobs"] == made["jobs"] else "NOT the same as"
    await master.persistence.close()
    print(f"  a master with the default compact_after_bytes ({mb(every)}) after the same "
          f"events: {mb(du(os.path.join(auto_dir, 'log')))} on disk; recovery {wall:.2f}s "
          f"wall (snapshot: {r['snapshot']}, {r['events']:,} events after it, "
          f"{r['jobs']:,} jobs: {same} the master that wrote it)")


async def main(reactor, a) -> None:
    base = a.dir or tempfile.mkdtemp(prefix="titan-bench-aof-")
    os.makedirs(base, exist_ok=True)
    print(f"command: python bench/aof.py {' '.join(sys.argv[1:])}".rstrip())
    print(f"host: {os.cpu_count()} CPUs, Python {sys.version.split()[0]}, "
          f"backend {a.backend}, files in {base}")
    try:
        if not a.skip_appends:
            recs = sample_records(a.appends)
            size = sum(len(r) for r in recs) / len(recs)
            print(f"\nappends ({a.appends:,} records of {size:.0f} bytes on average):")
            for policy in ("everysec", "no"):
                rate, loop = await appends_loop(reactor, a.backend, policy, recs, base)
                target = ("   [target >= 200,000/s: "
                          f"{'MET' if rate >= 200_000 else 'NOT MET'}]") if policy == "everysec" else ""
                print(f"  {policy:8s} {rate:>10,.0f} appends/s until sync() returned "
                      f"(the loop alone: {loop:,.0f}/s){target}")
            rate, ms, groups = await appends_always(reactor, a.backend, recs, a.submitters,
                                                    a.seconds, base)
            per = f", {groups:,} fsync groups" if groups else ""
            print(f"  always   {rate:>10,.0f} appends/s, {a.submitters} concurrent submitters "
                  f"for {a.seconds:g}s, {ms:.2f} ms per acknowledged append{per}   "
                  f"[target >= 20,000/s: {'MET' if rate >= 20_000 else 'NOT MET'}]")
            del recs
        if not a.skip_recovery:
            print(f"\nrecovery ({a.events:,} events):")
            before = calibrate()
            await recovery(reactor, a, base)
            print(f"  the VM's speed: a fixed loop took {before:.2f}s before the recovery "
                  f"figures and {calibrate():.2f}s after (lower is quicker)")
    finally:
        if not a.keep and not a.dir:
            shutil.rmtree(base, ignore_errors=True)


def parse() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--events", type=int, default=1_000_000, help="events in the recovery log")
    p.add_argument("--dag-jobs", type=int, default=2_000, help="jobs of the DAG run in it")
    p.add_argument("--rounds", type=int, default=3,
                   help="recoveries from the full log (the median is compared to the target)")
    p.add_argument("--per-turn", type=int, default=100,
                   help="submissions or completions per turn of the reactor while writing it")
    p.add_argument("--appends", type=int, default=200_000, help="records per loop")
    p.add_argument("--seconds", type=float, default=3.0, help="length of the `always` run")
    p.add_argument("--submitters", type=int, default=100)
    p.add_argument("--backend", default="aof", choices=("aof", "sqlite"))
    p.add_argument("--dir", help="where to write (default: a temporary directory, removed)")
    p.add_argument("--keep", action="store_true", help="keep the temporary directory")
    p.add_argument("--skip-appends", action="store_true")
    p.add_argument("--skip-recovery", action="store_true")
    p.add_argument("--profile", type=int, default=0, metavar="N",
                   help="profile a recovery and print the N costliest functions")
    return p.parse_args()


if __name__ == "__main__":
    args = parse()
    task.react(lambda reactor: defer.Deferred.fromCoroutine(main(reactor, args)))
