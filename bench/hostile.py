#!/usr/bin/env python3
"""Hostile clients against a master on 127.0.0.1 (issue 15, part 3): the master's resident
memory and a bystander's latency during each attack.

    .venv/bin/python bench/hostile.py [--only preauth,slowloris,replies,logs] [--seconds 10]

Run it with the venv of the tree to measure (it imports `titan` from there: the "before"
figures come from a worktree of the older commit, `/tmp/base/.venv/bin/python
bench/hostile.py`).  One master and one worker (titan.testing.cluster), `text_frames: on`
(the reference's GET_LOGS is one of the attacks); 2,000 delayed jobs make LIST_JOBS replies
large and one job's 15 MB of output makes GET_LOGS replies large.  Each attack is bounded
in connections, bytes and seconds:

- preauth:   32 connections each send a 16 MiB frame before any HELLO (the header, then
             the body), and hold it `--seconds`.
- slowloris: the master's descriptor limit is set to 1,024 (prlimit); 1,100 connections
             each trickle a valid HELLO header and body, one byte a second, for
             `--seconds`, reopening the ones closed (at most 5,000 connections in all).
- replies:   one client with the token sends 400 LIST_JOBS (limit 10,000) and reads
             nothing for `--seconds` (its receive buffer 4 KiB).
- logs:      40 connections each send a text GET_LOGS of the 15 MB log and read nothing.

During each: the master's peak RSS (VmRSS, sampled every 50 ms); a bystander client with
an open connection timing `stats()` every 50 ms; a new client every 200 ms timing connect +
HELLO + `stats()` (failures counted); the lines the master logged meanwhile (and how
many say a connection was closed for replies left unread).  Printed as a table and as JSON
(--json FILE).
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import socket
import statistics
import struct
import sys
import tempfile
import threading
import time

from titan.protocols import codec
from titan.protocols.frame import encode_frame
from titan.protocols.legacy import run_payload
from titan.protocols.opcodes import Op
from titan.sdk.client import Client
from titan.testing.cluster import Cluster

ATTACKS = ("preauth", "slowloris", "replies", "logs")


def rss_kb(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def small_socket(port: int, timeout: float = 5.0) -> socket.socket:
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    s.settimeout(timeout)
    s.connect(("127.0.0.1", port))
    return s


class Watch:
    """Samples the master's RSS and two bystanders' latencies while an attack runs."""

    def __init__(self, cluster: Cluster) -> None:
        self.cluster = cluster
        self.pid = cluster.master.pid
        self.stop = threading.Event()
        self.rss: list[int] = []
        self.held: list[float] = []
        self.fresh: list[float] = []
        self.fresh_failures = 0
        self.held_failures = 0
        self.errors: list[str] = []
        self.threads = [threading.Thread(target=f, daemon=True)
                        for f in (self._rss, self._held, self._fresh)]

    def __enter__(self):
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        for t in self.threads:
            t.join(30)

    def _rss(self):
        while not self.stop.is_set():
            try:
                self.rss.append(rss_kb(self.pid))
            except OSError:
                pass
            time.sleep(0.05)

    def _held(self):
        client = Client(self.cluster.address, token=self.cluster.token, timeout=60)
        client.stats()
        while not self.stop.is_set():
            t0 = time.perf_counter()
            try:
                client.stats()
                self.held.append(time.perf_counter() - t0)
            except Exception as e:
                self.held_failures += 1
                self.errors.append(f"held: {e}")
                client.close()
                client = Client(self.cluster.address, token=self.cluster.token, timeout=60)
            time.sleep(0.05)
        client.close()

    def _fresh(self):
        while not self.stop.is_set():
            t0 = time.perf_counter()
            try:
                with Client(self.cluster.address, token=self.cluster.token, timeout=20) as c:
                    c.stats()
                self.fresh.append(time.perf_counter() - t0)
            except Exception as e:
                self.fresh_failures += 1
                self.errors.append(f"fresh: {e}")
            time.sleep(0.2)

    def summary(self) -> dict:
        def ms(values, q):
            if not values:
                return None
            values = sorted(values)
            return round(1000 * values[min(len(values) - 1, int(q * len(values)))], 1)
        return {"rss_peak_mb": round(max(self.rss or [0]) / 1024, 1),
                "held_p50_ms": ms(self.held, 0.5), "held_max_ms": ms(self.held, 1.0),
                "held_failures": self.held_failures,
                "fresh_p50_ms": ms(self.fresh, 0.5), "fresh_max_ms": ms(self.fresh, 1.0),
                "fresh_ok": len(self.fresh), "fresh_failures": self.fresh_failures,
                "errors": sorted(set(e[:120] for e in self.errors))[:5]}


def attack_preauth(cluster: Cluster, seconds: float) -> dict:
    size = 16 * 1024 * 1024
    body = b"\x00" * (1024 * 1024)
    socks, sent, refused = [], 0, 0
    deadline = time.monotonic() + seconds

    def one():
        nonlocal sent, refused
        try:
            s = small_socket(cluster.port, timeout=seconds)
            socks.append(s)
            s.sendall(struct.pack("!BBBBI", 1, Op.HELLO, 1, 0, size))
            for _ in range(16):
                s.sendall(body)
                sent += len(body)
        except OSError:
            refused += 1
    threads = [threading.Thread(target=one, daemon=True) for _ in range(32)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(max(0.1, deadline - time.monotonic()))
    time.sleep(max(0.0, deadline - time.monotonic()))
    for s in socks:
        s.close()
    return {"connections": 32, "bytes_sent_mb": round(sent / 2**20), "cut_off": refused}


def attack_slowloris(cluster: Cluster, seconds: float, count: int = 1100) -> dict:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < count + 200:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, count + 500), hard))
    resource.prlimit(cluster.master.pid, resource.RLIMIT_NOFILE, (1024, 1024))
    # Each connection trickles a HELLO of 60,000 bytes (valid, under any frame limit): its
    # header, then its body, one byte a second.
    stream = struct.pack("!BBBBI", 1, Op.HELLO, 1, 0, 60_000) + b"\x00" * 60_000
    socks: list = [None] * count
    sent = [0] * count
    opened = closed = failed = 0
    deadline = time.monotonic() + seconds
    budget = 5000
    while time.monotonic() < deadline:
        for i in range(count):
            s = socks[i]
            if s is not None:
                try:
                    sent[i] += s.send(stream[sent[i]:sent[i] + 1])
                    continue
                except BlockingIOError:
                    continue  # still connecting (in the master's backlog)
                except OSError:
                    closed += 1
                    s.close()
                    socks[i] = None
            if opened >= budget or time.monotonic() >= deadline:
                continue
            try:
                s = socket.socket()
                s.setblocking(False)
                s.connect_ex(("127.0.0.1", cluster.port))
                socks[i] = s
                sent[i] = 0
                opened += 1
            except OSError:
                failed += 1
        time.sleep(1.0)
    open_at_end = sum(1 for s in socks if s is not None)
    for s in socks:
        if s is not None:
            s.close()
    return {"connections_opened": opened, "closed_by_master": closed,
            "open_at_end": open_at_end, "connect_errors": failed}


def attack_replies(cluster: Cluster, seconds: float) -> dict:
    s = small_socket(cluster.port)
    hello = encode_frame(Op.HELLO, codec.pack({"rid": 1, "token": cluster.token}))
    s.sendall(hello)
    time.sleep(0.2)
    sent = 0
    s.setblocking(False)
    data = b"".join(encode_frame(Op.LIST_JOBS, codec.pack({"rid": 2 + i, "limit": 10000}))
                    for i in range(400))
    view = memoryview(data)
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:  # (whether the master closed it: its log says)
        if sent < len(data):
            try:
                sent += s.send(view[sent:])
            except OSError:
                pass
        time.sleep(0.05)
    s.close()
    return {"requests_sent": sent * 400 // len(data)}


def attack_logs(cluster: Cluster, seconds: float, job: str) -> dict:
    socks = []
    for _ in range(40):
        s = small_socket(cluster.port)
        s.sendall(encode_frame(Op.GET_LOGS, job.encode(), flags=0))
        socks.append(s)
    time.sleep(seconds)
    for s in socks:
        s.close()
    return {"connections": 40}


def prepare(cluster: Cluster) -> str:
    with Client(cluster.address, token=cluster.token) as c:
        ids = c.submit_many([["true"]] * 2000, delay=3600.0)
        assert len(ids) == 2000
    # A job with 15 MB of output, submitted the reference's way so that its id is known.
    script = b"import sys\nfor _ in range(150): sys.stdout.write('x' * 99999 + '\\n')\n"
    payload = run_payload("loud", "loud.py", script)
    s = small_socket(cluster.port)
    s.sendall(encode_frame(Op.SUBMIT_DAG, payload.encode(), flags=0))
    s.recv(4096)
    s.close()
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        s = small_socket(cluster.port)
        s.sendall(encode_frame(Op.GET_JOB_STATUS, b"DAG-loud", flags=0))
        reply = b""
        while len(reply) < 8 or len(reply) < 8 + struct.unpack("!I", reply[4:8])[0]:
            chunk = s.recv(4096)
            if not chunk:
                break
            reply += chunk
        s.close()
        if b"COMPLETED" in reply:
            return "DAG-loud"
        time.sleep(0.5)
    raise SystemExit(f"the loud job did not complete: {reply!r}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--only", default=",".join(ATTACKS))
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    import titan
    print(f"titan from {os.path.dirname(titan.__file__)}", flush=True)
    results = {}
    for name in args.only.split(","):
        base = tempfile.mkdtemp(prefix=f"titan-hostile-{name}-")
        cluster = Cluster(base, workers=1, slots=2, master_extra="  text_frames: on\n")
        cluster.start()
        try:
            job = prepare(cluster)
            time.sleep(1.0)
            with Watch(cluster) as idle:
                time.sleep(2.0)
            log_path = cluster.master.log_file
            log_before = os.path.getsize(log_path)
            with Watch(cluster) as w:
                if name == "preauth":
                    info = attack_preauth(cluster, args.seconds)
                elif name == "slowloris":
                    info = attack_slowloris(cluster, args.seconds)
                elif name == "replies":
                    info = attack_replies(cluster, args.seconds)
                else:
                    info = attack_logs(cluster, args.seconds, job)
            alive = cluster.master.alive()
            time.sleep(0.5)  # (the master's last lines about it reach its log)
            with open(log_path, "rb") as f:
                f.seek(log_before)
                logged = f.read()
            info["master_log_lines"] = logged.count(b"\n")
            info["master_log_bytes"] = len(logged)
            info["closed_unread"] = logged.count(b"went unread")
            results[name] = {"idle": idle.summary(), "attack": w.summary(), "info": info,
                             "master_alive": alive}
            print(json.dumps({name: results[name]}), flush=True)
        finally:
            cluster.stop()
    print()
    print(f"{'attack':10} {'idle RSS':>9} {'peak RSS':>9} {'held p50/max ms':>18} "
          f"{'new client p50/max ms':>22} {'new ok/failed':>14} {'log lines':>10}")
    for name, r in results.items():
        a, i = r["attack"], r["idle"]
        print(f"{name:10} {i['rss_peak_mb']:>8}M {a['rss_peak_mb']:>8}M "
              f"{str(a['held_p50_ms']) + '/' + str(a['held_max_ms']):>18} "
              f"{str(a['fresh_p50_ms']) + '/' + str(a['fresh_max_ms']):>22} "
              f"{str(a['fresh_ok']) + '/' + str(a['fresh_failures']):>14} "
              f"{r['info']['master_log_lines']:>10}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1)


if __name__ == "__main__":
    main()
