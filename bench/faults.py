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
import errno
import json
import os
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

JOB = 'mkdir -p "{marks}/$TITAN_JOB_ID" && : > "{marks}/$TITAN_JOB_ID/$TITAN_ATTEMPT.$$"'


def checkout() -> str:
    root = os.path.dirname(os.path.dirname(os.path.abspath(titan.__file__)))
    try:
        head = subprocess.run(["git", "-C", root, "rev-parse", "--short", "HEAD"],
                              capture_output=True, text=True, timeout=10).stdout.strip()
    except OSError:
        head = "?"
    return f"{root} @ {head or '?'}"


class Submitter(threading.Thread):
    """One client: batches of 4 short jobs, riding out errors and the master's restart."""

    def __init__(self, cluster: Cluster, command: str, stop: threading.Event) -> None:
        super().__init__(daemon=True)
        self.cluster, self.command, self.stop = cluster, command, stop
        self.acked: list[str] = []
        self.refused: Counter = Counter()
        self.reconnects = 0

    def run(self) -> None:
        client, previous = None, []
        while not self.stop.is_set():
            try:
                if client is None:
                    client = self.cluster.client(timeout=20.0)
                ids = client.submit_many([["sh", "-c", self.command] for _ in range(4)])
                self.acked += ids
                if previous:
                    client.wait_many(previous, timeout=3)
                previous = ids
            except RemoteError as e:
                self.refused[e.code] += 1
                time.sleep(0.05)
            except (TitanError, OSError):
                self.reconnects += 1
                if client is not None:
                    client.close()
                client = None
                time.sleep(0.1)
        if client is not None:
            client.close()


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
                for chunk in (1 << 20, 1 << 12, 1):
                    block = b"\0" * chunk
                    while True:
                        try:
                            os.write(fd, block)
                        except OSError as e:
                            if e.errno != errno.ENOSPC:
                                raise
                            break
                self.filled.set()
                self.stop.wait(0.05)
        finally:
            os.close(fd)

    def free(self) -> None:
        self.stop.set()
        self.join(10)
        os.unlink(self.path)


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
    cluster = Cluster(base, workers=2, slots=4, heartbeat_interval=0.3,
                      heartbeat_timeout=4.0, fixed_port=True,
                      config_extra=f"persistence:\n  backend: {backend}\n  fsync: {fsync}\n")
    stop = threading.Event()
    threads = [Submitter(cluster, JOB.format(marks=marks), stop) for _ in range(clients)]
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
        ended = retrying(cluster, lambda c: c.wait_many(alive, timeout=60), timeout=120) \
            if alive else []
        unfinished = [j["job_id"] for j in ended
                      if j["state"] not in ("COMPLETED", "FAILED", "DEAD", "CANCELLED")]
        seconds = time.monotonic() - started
    finally:
        stop.set()
        cluster.stop()
        subprocess.run(["umount", "-l", data_dir], check=False)
    double = [j for j in os.listdir(marks) if len(os.listdir(os.path.join(marks, j))) > 1]
    result = {
        "backend": backend, "fsync": fsync,
        "kill": "while full" if kill_while_full else "after freeing",
        "acknowledged": len(acked), "lost": len(lost), "double": len(double),
        "unfinished": len(unfinished), "unstartable": unstartable,
        "refused": dict(sum((t.refused for t in threads), Counter())),
        "reconnects": sum(t.reconnects for t in threads),
        "seconds": round(seconds, 1), "examples": {"lost": lost[:3], "double": double[:3]},
    }
    if not (lost or double or unstartable):
        shutil.rmtree(base, ignore_errors=True)
    else:
        result["kept"] = base
    return result


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--runs", type=int, default=2, help="runs per backend and policy (2)")
    p.add_argument("--clients", type=int, default=3, help="submitting clients (3)")
    p.add_argument("--full", type=float, default=3.0, help="seconds the disk stays full (3)")
    p.add_argument("--size-mb", type=int, default=16, help="the tmpfs's size (16)")
    p.add_argument("--backends", default="aof,sqlite")
    p.add_argument("--fsync", default="always,everysec")
    p.add_argument("--json", metavar="FILE", help="also write every run's figures to FILE")
    args = p.parse_args()
    if os.geteuid() != 0:
        print("bench/faults.py mounts a tmpfs for the master's data dir: run it as root",
              file=sys.stderr)
        return 2
    print(f"titan: {checkout()}")
    print(f"command: {' '.join([os.path.basename(sys.executable)] + sys.argv)}")
    print(f"host: {os.cpu_count()} CPUs, load {os.getloadavg()[0]:.2f}", flush=True)
    results, totals = [], {}
    for backend in args.backends.split(","):
        for fsync in args.fsync.split(","):
            for n in range(args.runs):
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
    print()
    print(f"{'backend':8}{'fsync':10}{'runs':>5}{'acked':>8}{'lost':>6}{'double':>8}"
          f"{'unstartable':>12}{'unfinished':>11}")
    bad = 0
    for (backend, fsync), t in totals.items():
        print(f"{backend:8}{fsync:10}{t['runs']:5}{t['acknowledged']:8}{t['lost']:6}"
              f"{t['double']:8}{t['unstartable']:12}{t['unfinished']:11}")
        bad += t["lost"] + t["double"] + t["unstartable"]
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"checkout": checkout(), "argv": sys.argv, "runs": results}, f, indent=1)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
