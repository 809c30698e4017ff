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
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter

try:
    import titan  # noqa: F401
except ImportError:  # not installed: the checkout this script is in
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    import titan  # noqa: F401

from titan.errors import RemoteError, TitanError  # noqa: E402
from titan.testing.cluster import Cluster  # noqa: E402

JOB = ': > "{marks}/$TITAN_JOB_ID/$TITAN_ATTEMPT.$$"; sleep "$1"'
SETUP = 'mkdir -p "{marks}/$TITAN_JOB_ID" && '


def checkout() -> str:
    root = os.path.dirname(os.path.dirname(os.path.abspath(titan.__file__)))
    try:
        head = subprocess.run(["git", "-C", root, "rev-parse", "--short", "HEAD"],
                              capture_output=True, text=True, timeout=10).stdout.strip()
    except OSError:
        head = "?"
    return f"{root} @ {head or '?'}"


class Submitter(threading.Thread):
    """One client: batches of 4 short jobs, riding out the master's restarts."""

    def __init__(self, cluster: Cluster, command: str, rng: random.Random,
                 stop: threading.Event) -> None:
        super().__init__(daemon=True)
        self.cluster, self.command, self.rng, self.stop = cluster, command, rng, stop
        self.acked: list[str] = []
        self.refused: Counter = Counter()
        self.reconnects = 0

    def run(self) -> None:
        client, previous = None, []
        while not self.stop.is_set():
            try:
                if client is None:
                    client = self.cluster.client()
                batch = [["sh", "-c", self.command, "job", f"0.0{self.rng.randrange(6)}"]
                         for _ in range(4)]
                ids = client.submit_many(batch)
                self.acked += ids
                if previous:
                    client.wait_many(previous, timeout=3)
                previous = ids
            except RemoteError as e:
                self.refused[e.code] += 1
                time.sleep(0.1)
            except (TitanError, OSError):
                self.reconnects += 1
                if client is not None:
                    client.close()
                client = None
                time.sleep(0.1)
        if client is not None:
            client.close()


def retrying(cluster: Cluster, call, timeout: float = 90.0):
    deadline = time.monotonic() + timeout
    while True:
        try:
            with cluster.client() as c:
                return call(c)
        except RemoteError:
            raise
        except (TitanError, OSError):
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def one_run(backend: str, fsync: str, kills: int, clients: int, seed: int) -> dict:
    base = tempfile.mkdtemp(prefix=f"titan-kills-{backend}-{fsync}-")
    marks = os.path.join(base, "marks")
    os.makedirs(marks)
    command = SETUP.format(marks=marks) + JOB.format(marks=marks)
    rng = random.Random(seed)
    cluster = Cluster(base, workers=2, slots=4, heartbeat_interval=0.3,
                      heartbeat_timeout=4.0, fixed_port=True,
                      config_extra=f"persistence:\n  backend: {backend}\n  fsync: {fsync}\n")
    started = time.monotonic()
    stop = threading.Event()
    threads = [Submitter(cluster, command, random.Random(seed * 100 + i), stop)
               for i in range(clients)]
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
        acked = [job_id for t in threads for job_id in t.acked]

        def states(c) -> dict:
            out = {}
            for job_id in acked:
                try:
                    out[job_id] = c.job(job_id)["state"]
                except RemoteError as e:
                    if e.code != "not_found":
                        raise
                    out[job_id] = None
            return out

        known = retrying(cluster, states)
        lost = sorted(j for j, s in known.items() if s is None)
        alive = [j for j, s in known.items() if s is not None]
        ended = retrying(cluster, lambda c: c.wait_many(alive, timeout=60), timeout=120)
        unfinished = [j["job_id"] for j in ended
                      if j["state"] not in ("COMPLETED", "FAILED", "DEAD", "CANCELLED")]
        failed = [j["job_id"] for j in ended if j["state"] != "COMPLETED"]
        seconds = time.monotonic() - started
    finally:
        stop.set()
        cluster.stop()
    executions, double, same_attempt = 0, [], []
    for job_id in os.listdir(marks):
        runs = os.listdir(os.path.join(marks, job_id))
        executions += len(runs)
        if len(runs) > 1:
            double.append(job_id)
            attempts = Counter(name.split(".")[0] for name in runs)
            if max(attempts.values()) > 1:
                same_attempt.append(job_id)
    ran = set(os.listdir(marks))
    never_ran = [j for j in acked if j not in ran and known.get(j) == "COMPLETED"]
    result = {
        "backend": backend, "fsync": fsync, "seed": seed, "kills": kills,
        "acknowledged": len(acked), "executions": executions, "lost": len(lost),
        "double": len(double), "same_attempt": len(same_attempt),
        "unfinished": len(unfinished), "not_completed": len(failed),
        "completed_without_a_marker": len(never_ran),
        "reconnects": sum(t.reconnects for t in threads),
        "refused": dict(sum((t.refused for t in threads), Counter())),
        "seconds": round(seconds, 1),
        "examples": {"lost": lost[:3], "double": double[:3]},
    }
    if not (lost or double or unfinished):
        shutil.rmtree(base, ignore_errors=True)
    else:
        result["kept"] = base  # for a look at the logs
    return result


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--runs", type=int, default=2, help="runs per backend and policy (2)")
    p.add_argument("--kills", type=int, default=5, help="master kill -9 per run (5)")
    p.add_argument("--clients", type=int, default=3, help="submitting clients (3)")
    p.add_argument("--backends", default="aof,sqlite")
    p.add_argument("--fsync", default="always,everysec")
    p.add_argument("--seed", type=int, default=14)
    p.add_argument("--json", metavar="FILE", help="also write every run's figures to FILE")
    args = p.parse_args()
    print(f"titan: {checkout()}")
    print(f"command: {' '.join([os.path.basename(sys.executable)] + sys.argv)}")
    print(f"host: {os.cpu_count()} CPUs, load {os.getloadavg()[0]:.2f}", flush=True)
    results, totals = [], {}
    for backend in args.backends.split(","):
        for fsync in args.fsync.split(","):
            for n in range(args.runs):
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
    print()
    print(f"{'backend':8}{'fsync':10}{'runs':>5}{'acked':>8}{'execs':>8}{'lost':>6}"
          f"{'double':>8}{'same att.':>10}{'unfinished':>11}")
    bad = 0
    for (backend, fsync), t in totals.items():
        print(f"{backend:8}{fsync:10}{t['runs']:5}{t['acknowledged']:8}{t['executions']:8}"
              f"{t['lost']:6}{t['double']:8}{t['same_attempt']:10}{t['unfinished']:11}")
        bad += t["lost"] + t["double"] + t["unfinished"]
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"checkout": checkout(), "argv": sys.argv, "runs": results}, f, indent=1)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
