#!/usr/bin/env python3
"""TitanStore against redis-server, with redis-benchmark, on 127.0.0.1, in one run.

    .venv/bin/python bench/store.py [--requests 100000] [--repeat 3] [--tests set,get,sadd,lpush]
                                    [--clients 50] [--fsync everysec] [--json FILE]

Both servers are started here on ephemeral loopback ports: `twistd -n titan-store` (its
append-only file on, fsync `--fsync`) and `redis-server --save '' --appendonly no`.  For
each pipeline depth (1: one request per round trip, and 16: `-P 16`) and each round,
`redis-benchmark -t TESTS -n REQUESTS -c CLIENTS -q --csv` runs against one server and then
the other (the order alternates between rounds), never both at once.  The figure per test
is the median requests/s over the rounds; ratio = TitanStore / Redis.

Also shown: the CPU time each server spent per request (user + system, from /proc), which
moves less than requests/s when other work shares the machine.

Targets (from the issue): SET unpipelined >= 50,000 requests/s, and >= 0.3 x redis-server.
Needs redis-server and redis-benchmark (Debian package redis-server).
"""
from __future__ import annotations

import argparse
import csv
import io
import json
import os
import platform
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))

from titan.testing.processes import die_with_parent, read_port, tail  # noqa: E402

BIN = os.path.dirname(sys.executable)
TARGET_SET_RPS = 50_000
TARGET_RATIO = 0.3


def need(binary: str) -> str:
    path = shutil.which(binary)
    if path is None:
        sys.exit(f"bench/store.py: {binary} is not installed (Debian package redis-server: "
                 f"apt-get install -y redis-server)")
    return path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def start_titan(base: str, fsync: str) -> tuple[subprocess.Popen, int]:
    data_dir = os.path.join(base, "titan-store")
    log = os.path.join(base, "titan-store.log")
    proc = subprocess.Popen(
        [os.path.join(BIN, "twistd"), "-n", f"--logfile={log}", "--pidfile=", "titan-store",
         "--listen", "tcp:0:interface=127.0.0.1", "--data-dir", data_dir, "--fsync", fsync],
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
        stderr=open(log + ".err", "wb"), preexec_fn=die_with_parent)
    port = read_port(data_dir, proc, 30, name="store.port")
    if port is None:
        sys.exit(f"titan-store did not start:\n{tail(log)}{tail(log + '.err')}")
    return proc, port


def start_redis(base: str) -> tuple[subprocess.Popen, int]:
    port = free_port()
    proc = subprocess.Popen(
        [need("redis-server"), "--port", str(port), "--bind", "127.0.0.1", "--save", "",
         "--appendonly", "no", "--dir", base, "--logfile", os.path.join(base, "redis.log")],
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        preexec_fn=die_with_parent)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1) as s:
                s.sendall(b"PING\r\n")
                if s.recv(16):
                    return proc, port
        except OSError:
            time.sleep(0.05)
    sys.exit("redis-server did not start")


def benchmark(port: int, pid: int, tests: str, requests: int, clients: int,
              pipeline: int) -> dict:
    """{test: (requests/s, CPU µs per request of the server)} for one redis-benchmark run,
    one test at a time (so that the CPU time is per test)."""
    out = {}
    for test in tests.split(","):
        before = cpu_seconds(pid)
        done = subprocess.run(
            [need("redis-benchmark"), "-h", "127.0.0.1", "-p", str(port), "-t", test,
             "-n", str(requests), "-c", str(clients), "-P", str(pipeline), "-q", "--csv"],
            capture_output=True, timeout=600, text=True)
        spent = cpu_seconds(pid) - before
        rows = [r for r in csv.reader(io.StringIO(done.stdout)) if r and r[0] != "test"]
        if done.returncode != 0 or not rows:
            sys.exit(f"redis-benchmark failed on port {port}:\n{done.stdout}{done.stderr}")
        for row in rows:
            out[row[0]] = (float(row[1]), spent / requests * 1e6)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=100_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--tests", default="set,get,sadd,lpush")
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--fsync", default="everysec", choices=("always", "everysec", "no"))
    parser.add_argument("--json", help="also write the figures to this file")
    args = parser.parse_args()
    need("redis-benchmark")
    base = tempfile.mkdtemp(prefix="titan-bench-store-")
    titan, titan_port = start_titan(base, args.fsync)
    redis, redis_port = start_redis(base)
    servers = {"titan": (titan_port, titan.pid), "redis": (redis_port, redis.pid)}
    print(f"TitanStore (fsync {args.fsync}) vs redis-server {redis_version()} on 127.0.0.1; "
          f"{platform.python_implementation()} {platform.python_version()}, "
          f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f} at start")
    print(f"redis-benchmark -t {args.tests} -n {args.requests} -c {args.clients} -q, "
          f"{args.repeat} round(s) each, median shown\n")
    results: dict = {}
    try:
        for pipeline in (1, 16):
            runs: dict = {"titan": [], "redis": []}
            for r in range(args.repeat):
                order = ["titan", "redis"] if r % 2 == 0 else ["redis", "titan"]
                for name in order:
                    port, pid = servers[name]
                    runs[name].append(benchmark(port, pid, args.tests, args.requests,
                                                args.clients, pipeline))
            results[pipeline] = {}
            for test in runs["titan"][0]:
                row = {}
                for name in ("titan", "redis"):
                    row[name] = statistics.median(run[test][0] for run in runs[name])
                    row[name + "_cpu_us"] = statistics.median(run[test][1]
                                                              for run in runs[name])
                row["ratio"] = row["titan"] / row["redis"]
                results[pipeline][test] = row
    finally:
        for proc in (titan, redis):
            proc.send_signal(signal.SIGTERM)
            proc.wait(30)
    print(f"{'test':<8}{'pipeline':>9}{'TitanStore/s':>15}{'Redis/s':>12}{'ratio':>8}"
          f"{'Titan CPU/req':>15}{'Redis CPU/req':>15}")
    for pipeline, rows in results.items():
        for test, row in rows.items():
            print(f"{test:<8}{pipeline:>9}{row['titan']:>15,.0f}{row['redis']:>12,.0f}"
                  f"{row['ratio']:>8.2f}{row['titan_cpu_us']:>13.1f}µs"
                  f"{row['redis_cpu_us']:>13.1f}µs")
    set_row = results[1].get("SET")
    if set_row:
        print(f"\ntargets: SET unpipelined {set_row['titan']:,.0f}/s (target "
              f">= {TARGET_SET_RPS:,}): {'met' if set_row['titan'] >= TARGET_SET_RPS else 'NOT met'}"
              f"; ratio {set_row['ratio']:.2f} (target >= {TARGET_RATIO}): "
              f"{'met' if set_row['ratio'] >= TARGET_RATIO else 'NOT met'}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"fsync": args.fsync, "requests": args.requests,
                       "clients": args.clients, "repeat": args.repeat,
                       "results": {str(p): rows for p, rows in results.items()}}, f, indent=2)


def redis_version() -> str:
    out = subprocess.run([need("redis-server"), "--version"], capture_output=True, text=True)
    for word in out.stdout.split():
        if word.startswith("v="):
            return word[2:]
    return "?"


if __name__ == "__main__":
    main()
