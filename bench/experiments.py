"""What bench/kills.py and bench/faults.py share: a cluster per backend × fsync policy,
clients submitting a stream of short jobs while the master is hurt, and the accounting of
what the clients were told against what the jobs themselves say ran.

Every job writes a marker per execution, `MARKS/<job id>/<TITAN_ATTEMPT>.<pid>`, so what
ran is counted by the jobs, not by the master.  Every job id a client was given
(acknowledged) is then looked up and waited for: `lost` ones the master no longer knows,
`double` ones that ran more than once.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import threading
import time
from collections import Counter
from typing import Callable, Optional

try:
    import titan  # noqa: F401
except ImportError:  # not installed: the checkout this script is in
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    import titan  # noqa: F401

from titan.errors import RemoteError, TitanError  # noqa: E402
from titan.testing.cluster import Cluster  # noqa: E402

ENDED = ("COMPLETED", "FAILED", "DEAD", "CANCELLED")


def checkout() -> str:
    root = os.path.dirname(os.path.dirname(os.path.abspath(titan.__file__)))
    try:
        head = subprocess.run(["git", "-C", root, "rev-parse", "--short", "HEAD"],
                              capture_output=True, text=True, timeout=10).stdout.strip()
    except OSError:
        head = "?"
    return f"{root} @ {head or '?'}"


def arguments(p: argparse.ArgumentParser) -> None:
    """The options both scripts take."""
    p.add_argument("--runs", type=int, default=2, help="runs per backend and policy (2)")
    p.add_argument("--clients", type=int, default=3, help="submitting clients (3)")
    p.add_argument("--backends", default="aof,sqlite")
    p.add_argument("--fsync", default="always,everysec")
    p.add_argument("--json", metavar="FILE", help="also write every run's figures to FILE")


def header() -> None:
    print(f"titan: {checkout()}")
    print(f"command: {' '.join([os.path.basename(sys.executable)] + sys.argv)}")
    print(f"host: {os.cpu_count()} CPUs, load {os.getloadavg()[0]:.2f}", flush=True)


def combinations(args):
    """(backend, fsync, n) for every run the options ask for."""
    for backend in args.backends.split(","):
        for fsync in args.fsync.split(","):
            for n in range(args.runs):
                yield backend, fsync, n


def table(totals: dict, columns: list) -> None:
    """The totals per (backend, fsync), a row each; `columns`: (title, key, width)."""
    print()
    print(f"{'backend':8}{'fsync':10}" + "".join(f"{title:>{w}}" for title, _, w in columns))
    for (backend, fsync), t in totals.items():
        print(f"{backend:8}{fsync:10}" + "".join(f"{t[key]:{w}}" for _, key, w in columns))


def write_json(path: Optional[str], results: list) -> None:
    if path:
        with open(path, "w") as f:
            json.dump({"checkout": checkout(), "argv": sys.argv, "runs": results}, f, indent=1)


def cluster(base: str, backend: str, fsync: str) -> Cluster:
    """2 workers × 4 slots on 127.0.0.1; the master restarts on the same port."""
    return Cluster(base, workers=2, slots=4, heartbeat_interval=0.3,
                   heartbeat_timeout=4.0, fixed_port=True,
                   config_extra=f"persistence:\n  backend: {backend}\n  fsync: {fsync}\n")


class Submitter(threading.Thread):
    """One client: batches of 4 short jobs (each waiting for the previous batch), riding
    out errors and the master's restarts.  `batch()` gives the next batch's commands."""

    def __init__(self, cluster: Cluster, batch: Callable[[], list], stop: threading.Event,
                 refused_pause: float, **client) -> None:
        super().__init__(daemon=True)
        self.cluster, self.batch, self.stop = cluster, batch, stop
        self.refused_pause, self.client_options = refused_pause, client
        self.acked: list[str] = []
        self.refused: Counter = Counter()
        self.reconnects = 0

    def run(self) -> None:
        client, previous = None, []
        while not self.stop.is_set():
            try:
                if client is None:
                    client = self.cluster.client(**self.client_options)
                ids = client.submit_many(self.batch())
                self.acked += ids
                if previous:
                    client.wait_many(previous, timeout=3)
                previous = ids
            except RemoteError as e:
                self.refused[e.code] += 1
                time.sleep(self.refused_pause)
            except (TitanError, OSError):
                self.reconnects += 1
                if client is not None:
                    client.close()
                client = None
                time.sleep(0.1)
        if client is not None:
            client.close()


def retrying(cluster: Cluster, call, timeout: float = 90.0):
    """call(client) on a fresh connection, again until it works or `timeout` passes."""
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


class Outcome:
    """What became of the jobs the clients were given, once they stopped."""

    def __init__(self, cluster: Cluster, threads: list) -> None:
        self.acked = [job_id for t in threads for job_id in t.acked]
        self.refused = dict(sum((t.refused for t in threads), Counter()))
        self.reconnects = sum(t.reconnects for t in threads)
        # state by job id, None for a job the master does not know (lost)
        self.known = retrying(cluster, self._states)
        self.lost = sorted(j for j, s in self.known.items() if s is None)
        alive = [j for j, s in self.known.items() if s is not None]
        self.ended = retrying(cluster, lambda c: c.wait_many(alive, timeout=60),
                              timeout=120) if alive else []
        self.unfinished = [j["job_id"] for j in self.ended if j["state"] not in ENDED]

    def _states(self, c) -> dict:
        out = {}
        for job_id in self.acked:
            try:
                out[job_id] = c.job(job_id)["state"]
            except RemoteError as e:
                if e.code != "not_found":
                    raise
                out[job_id] = None
        return out


def executions(marks: str) -> dict:
    """The markers each job left: job id -> [`<attempt>.<pid>`, ...]."""
    return {job_id: os.listdir(os.path.join(marks, job_id)) for job_id in os.listdir(marks)}
