"""A full disk, then kill -9: acknowledged jobs are never lost, and none runs twice.

    sudo python bench/faults.py [--runs 2] [--clients 3] [--full 3] [--backends aof,sqlite]
                                [--fsync always,everysec] [--size-mb 16] [--json FILE]

Needs root (it mounts a tmpfs; nothing touches the machine's own disks).  For each backend ×
fsync policy, --runs times: the master's data dir is a fresh tmpfs of --size-mb MB; a real
cluster on 127.0.0.1 (titan.testing.cluster: `twistd -n` master, 2 workers × 4 slots);
--clients threads submit a stream of short jobs (SUBMIT_JOBS of 4, waiting for their
previous batch); after 1 s a filler file takes every free byte of the tmpfs and keeps it
full for --full seconds (topped up as space comes back), while the clients go on.  Then:
- even runs: the filler is deleted, and 0.5 s later the master is killed (SIGKILL);
- odd runs: the master is killed while the disk is still full, then the filler is deleted.
The master is started again on the same data dir (if it refuses to start, the run says so
and `titan aof check --fix` is run before starting it again, as an operator would).

Every job writes a marker per execution, `MARKS/<job id>/<TITAN_ATTEMPT>.<pid>` (outside
the tmpfs), so what ran is counted by the jobs themselves.  Every job id a client was given
is looked up and waited for:
- lost: an acknowledged job the master no longer knows (must be 0);
- double: a job that ran more than once (must be 0);
- unstartable: the master refused to start after the kill (must be 0);
- refused: submissions answered with an error meanwhile (storage_unavailable: expected).
Exit status 1 if lost, double or unstartable is not 0.

Runs the `titan` package the interpreter imports: run it with another checkout's
`.venv/bin/python` to measure that checkout (e.g. the commit before a fix, in a worktree).
Bounded: each run is about 15 s of wall time, 4 combinations × --runs.
"""
from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter

from experiments import Outcome, Submitter, arguments, cluster as make_cluster, \
    combinations, executions, header, table, write_json
from titan.testing.cluster import Cluster
from titan.testing.disk import fill_up

JOB = 'mkdir -p "{marks}/$TITAN_JOB_ID" && : > "{marks}/$TITAN_JOB_ID/$TITAN_ATTEMPT.$$"'


class Filler(threading.Thread):
    """Keeps a filesystem full: one file takes every free byte, topped up as space frees."""

    def __init__(self, directory: str) -> None:
        super().__init__(daemon=True)
        self.path = os.path.join(directory, "filler")
        self.stop = threading.Event()
        self.filled = threading.Event()

    def run(self) -> None:
        fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        try:
            while not self.stop.is_set():
                fill_up(fd)
                self.filled.set()
                self.stop.wait(0.05)
        finally:
            os.close(fd)

    def free(self) -> None:
        self.stop.set()
        self.join(10)
        os.unlink(self.path)


def restart(cluster: Cluster, data_dir: str) -> str:
    """Start the master again; '' if it started, else why not (then it is repaired with
    `titan aof check --fix` and started)."""
    try:
        cluster.start_master()
        return ""
    except Exception as e:  # it refused to start: say why, repair, start
        log = os.path.join(cluster.base_dir, "master.log")
        why = str(e)
        try:
            with open(log, errors="replace") as f:
                lines = [line.strip() for line in f if "cannot start" in line]
            why = lines[-1] if lines else why
        except OSError:
            pass
        cluster.cli("aof", "check", "--fix", os.path.join(data_dir, "log"))
        cluster.start_master()
        return why


def one_run(backend: str, fsync: str, clients: int, full: float, size_mb: int,
            kill_while_full: bool) -> dict:
    base = tempfile.mkdtemp(prefix=f"titan-faults-{backend}-{fsync}-")
    marks = os.path.join(base, "marks")
    os.makedirs(marks)
    data_dir = os.path.join(base, "master")
    os.makedirs(data_dir)
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size_mb}m,mode=0700", "tmpfs",
                    data_dir], check=True)
    cluster = make_cluster(base, backend, fsync)
    stop = threading.Event()
    command = JOB.format(marks=marks)
    threads = [Submitter(cluster, lambda: [["sh", "-c", command] for _ in range(4)], stop,
                         refused_pause=0.05, timeout=20.0) for _ in range(clients)]
    started = time.monotonic()
    unstartable = ""
    try:
        cluster.start()
        for t in threads:
            t.start()
        time.sleep(1.0)
        filler = Filler(data_dir)
        filler.start()
        filler.filled.wait(10)
        time.sleep(full)
        if kill_while_full:
            cluster.kill_master(signal.SIGKILL)
            filler.free()
        else:
            filler.free()
            time.sleep(0.5)
            cluster.kill_master(signal.SIGKILL)
        time.sleep(0.2)
        unstartable = restart(cluster, data_dir)
        time.sleep(1.0)
        stop.set()
        for t in threads:
            t.join(60)
        out = Outcome(cluster, threads)
        seconds = time.monotonic() - started
    finally:
        stop.set()
        cluster.stop()
        subprocess.run(["umount", "-l", data_dir], check=False)
    double = [j for j, runs in executions(marks).items() if len(runs) > 1]
    result = {
        "backend": backend, "fsync": fsync,
        "kill": "while full" if kill_while_full else "after freeing",
        "acknowledged": len(out.acked), "lost": len(out.lost), "double": len(double),
        "unfinished": len(out.unfinished), "unstartable": unstartable,
        "refused": out.refused, "reconnects": out.reconnects,
        "seconds": round(seconds, 1), "examples": {"lost": out.lost[:3], "double": double[:3]},
    }
    if not (out.lost or double or unstartable):
        shutil.rmtree(base, ignore_errors=True)
    else:
        result["kept"] = base
    return result


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    arguments(p)
    p.add_argument("--full", type=float, default=3.0, help="seconds the disk stays full (3)")
    p.add_argument("--size-mb", type=int, default=16, help="the tmpfs's size (16)")
    args = p.parse_args()
    if os.geteuid() != 0:
        print("bench/faults.py mounts a tmpfs for the master's data dir: run it as root",
              file=sys.stderr)
        return 2
    header()
    results, totals = [], {}
    for backend, fsync, n in combinations(args):
        r = one_run(backend, fsync, args.clients, args.full, args.size_mb,
                    kill_while_full=bool(n % 2))
        results.append(r)
        print(f"{backend:7} {fsync:9} run {n + 1} (kill {r['kill']}): "
              f"{r['acknowledged']:5} acknowledged, lost {r['lost']}, double "
              f"{r['double']}, unfinished {r['unfinished']}, refused {r['refused']}, "
              f"{r['seconds']} s"
              + (f"\n    did not start: {r['unstartable']}" if r["unstartable"] else "")
              + (f"  [kept {r['kept']}]" if "kept" in r else ""), flush=True)
        t = totals.setdefault((backend, fsync), Counter())
        t.update({k: r[k] for k in ("acknowledged", "lost", "double", "unfinished")})
        t["unstartable"] += bool(r["unstartable"])
        t["runs"] += 1
    table(totals, [("runs", "runs", 5), ("acked", "acknowledged", 8), ("lost", "lost", 6),
                   ("double", "double", 8), ("unstartable", "unstartable", 12),
                   ("unfinished", "unfinished", 11)])
    bad = sum(t["lost"] + t["double"] + t["unstartable"] for t in totals.values())
    write_json(args.json, results)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
