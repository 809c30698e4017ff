"""Submit under kill -9: acknowledged jobs are never lost, and no job runs twice.

    python bench/kills.py [--runs 2] [--kills 5] [--clients 3] [--backends aof,sqlite]
                          [--fsync always,everysec] [--seed 14] [--json FILE]

For each backend × fsync policy, --runs times: a real cluster on 127.0.0.1 (`twistd -n`
master, 2 workers × 4 slots, titan.testing.cluster), --clients threads submitting a stream
of short jobs (SUBMIT_JOBS of 4, each client waiting for its previous batch before the next
one, so the slots stay busy without a backlog), and the master killed with SIGKILL --kills
times (0.5-1.5 s apart, restarted 0-0.3 s later on the same data dir and port).  Every job
writes a marker file per execution, `MARKS/<job id>/<TITAN_ATTEMPT>.<pid>`, so what really
ran is counted by the jobs themselves, not by the master.

Then every job id a client was given (acknowledged) is looked up and waited for:
- lost: an acknowledged job the master no longer knows (must be 0);
- double: a job with more than one execution (must be 0; nothing here fails, retries or
  loses a worker), and among them `same attempt`: two executions with one TITAN_ATTEMPT;
- unfinished: acknowledged jobs not ended 60 s after the last kill.
Exit status 1 if any of the three is not 0.

Runs the `titan` package the interpreter imports: run it with another checkout's
`.venv/bin/python` to measure that checkout (its editable install points at it), e.g. the
commit before a fix, in a worktree.  Bounded: each run is about 20 s of wall time.
"""
from __future__ import annotations

import argparse
import os
import random
import shutil
import signal
import sys
import tempfile
import threading
import time
from collections import Counter

from experiments import Outcome, Submitter, arguments, cluster as make_cluster, \
    combinations, executions, header, table, write_json

JOB = ': > "{marks}/$TITAN_JOB_ID/$TITAN_ATTEMPT.$$"; sleep "$1"'
SETUP = 'mkdir -p "{marks}/$TITAN_JOB_ID" && '


def batches(command: str, rng: random.Random):
    """A client's next batch: 4 jobs sleeping 0.00-0.05 s."""
    return lambda: [["sh", "-c", command, "job", f"0.0{rng.randrange(6)}"] for _ in range(4)]


def one_run(backend: str, fsync: str, kills: int, clients: int, seed: int) -> dict:
    base = tempfile.mkdtemp(prefix=f"titan-kills-{backend}-{fsync}-")
    marks = os.path.join(base, "marks")
    os.makedirs(marks)
    command = SETUP.format(marks=marks) + JOB.format(marks=marks)
    rng = random.Random(seed)
    cluster = make_cluster(base, backend, fsync)
    started = time.monotonic()
    stop = threading.Event()
    threads = [Submitter(cluster, batches(command, random.Random(seed * 100 + i)), stop,
                         refused_pause=0.1) for i in range(clients)]
    try:
        cluster.start()
        for t in threads:
            t.start()
        for _ in range(kills):
            time.sleep(rng.uniform(0.5, 1.5))
            cluster.kill_master(signal.SIGKILL)
            time.sleep(rng.uniform(0.0, 0.3))
            cluster.start_master()
        time.sleep(1.0)
        stop.set()
        for t in threads:
            t.join(60)
        out = Outcome(cluster, threads)
        failed = [j["job_id"] for j in out.ended if j["state"] != "COMPLETED"]
        seconds = time.monotonic() - started
    finally:
        stop.set()
        cluster.stop()
    marked = executions(marks)
    executed, double, same_attempt = 0, [], []
    for job_id, runs in marked.items():
        executed += len(runs)
        if len(runs) > 1:
            double.append(job_id)
            attempts = Counter(name.split(".")[0] for name in runs)
            if max(attempts.values()) > 1:
                same_attempt.append(job_id)
    never_ran = [j for j in out.acked if j not in marked and out.known.get(j) == "COMPLETED"]
    result = {
        "backend": backend, "fsync": fsync, "seed": seed, "kills": kills,
        "acknowledged": len(out.acked), "executions": executed, "lost": len(out.lost),
        "double": len(double), "same_attempt": len(same_attempt),
        "unfinished": len(out.unfinished), "not_completed": len(failed),
        "completed_without_a_marker": len(never_ran),
        "reconnects": out.reconnects, "refused": out.refused,
        "seconds": round(seconds, 1),
        "examples": {"lost": out.lost[:3], "double": double[:3]},
    }
    if not (out.lost or double or out.unfinished):
        shutil.rmtree(base, ignore_errors=True)
    else:
        result["kept"] = base  # for a look at the logs
    return result


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    arguments(p)
    p.add_argument("--kills", type=int, default=5, help="master kill -9 per run (5)")
    p.add_argument("--seed", type=int, default=14)
    args = p.parse_args()
    header()
    results, totals = [], {}
    for backend, fsync, n in combinations(args):
        r = one_run(backend, fsync, args.kills, args.clients, args.seed + n)
        results.append(r)
        print(f"{backend:7} {fsync:9} run {n + 1}: {r['acknowledged']:5} acknowledged, "
              f"{r['executions']:5} executions, lost {r['lost']}, double {r['double']} "
              f"(same attempt {r['same_attempt']}), unfinished {r['unfinished']}, "
              f"{r['seconds']} s" + (f"  [kept {r['kept']}]" if "kept" in r else ""),
              flush=True)
        t = totals.setdefault((backend, fsync), Counter())
        t.update({k: r[k] for k in ("acknowledged", "executions", "lost", "double",
                                    "same_attempt", "unfinished")})
        t["runs"] += 1
    table(totals, [("runs", "runs", 5), ("acked", "acknowledged", 8),
                   ("execs", "executions", 8), ("lost", "lost", 6), ("double", "double", 8),
                   ("same att.", "same_attempt", 10), ("unfinished", "unfinished", 11)])
    bad = sum(t["lost"] + t["double"] + t["unfinished"] for t in totals.values())
    write_json(args.json, results)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
