#!/usr/bin/env python3
"""The web face's cost and speed: live events (SSE) against the master's throughput, GET of a
large finished run, and the latency from a change to a subscribed client.

    .venv/bin/python bench/web.py [--jobs 1000] [--rounds 3] [--clients 20] [--big 10000]

Starts the cluster of bench/fanout.py (1 master, 2 workers x 4 slots, /bin/true jobs; web on
127.0.0.1 only) and measures:

1. fan-out rounds (fanout.py's /bin/true jobs, --jobs of them as one run of independent
   jobs, so that a run view has something to follow; submit, then wait_run), alternating
   "none" and "subscribed" (--clients streams on /api/v1/events reading everything, plus one
   following the round's run with ?run=RUN_ID, all held by one helper process so their CPU
   is neither the master's nor this client's): master throughput (jobs over the time from
   the submit to the last job's finish on the master's clock) and master CPU per job (/proc,
   10 ms ticks: 0.01 ms/job at 1,000 jobs), medians and the ratio;
2. GET /api/v1/runs/{id} (the run page's first request) and ?limit=10000 (its whole graph)
   of a finished --big-job run, 20 each over one keep-alive connection: wall p50 on loopback
   and the master's CPU per request (/proc), the closest to "at the server" from outside;
3. latency from a job's state change (the master's started_at/finished_at) to a subscribed
   client over --changes changes, one job at a time with a pause past the batch window.
"""
from __future__ import annotations

import argparse
import http.client
import json
import os
import queue
import selectors
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from urllib.parse import urlsplit

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from fanout import TASK, percentile  # noqa: E402
from procstat import proc_cpu  # noqa: E402



# -- the helper process: SSE streams ------------------------------------------------------

def open_stream(url: str, token: str, query: str = "") -> socket.socket:
    parts = urlsplit(url)
    s = socket.create_connection((parts.hostname, parts.port), timeout=10)
    s.sendall((f"GET /api/v1/events{query} HTTP/1.1\r\nHost: {parts.netloc}\r\n"
               f"Authorization: Bearer {token}\r\nAccept: text/event-stream\r\n\r\n").encode())
    return s


def helper_streams(url: str, token: str, n: int) -> int:
    """Hold n streams reading everything; a line `run RUN_ID` on stdin opens one more that
    follows that run; EOF on stdin ends.  Prints the bytes read per stream at the end."""
    sel = selectors.DefaultSelector()
    streams = []
    for _ in range(n):
        s = open_stream(url, token)
        s.setblocking(False)
        sel.register(s, selectors.EVENT_READ, len(streams))
        streams.append(0)
    sel.register(sys.stdin, selectors.EVENT_READ, "stdin")
    print("ready", flush=True)
    while True:
        for key, _ in sel.select(timeout=1.0):
            if key.data == "stdin":
                line = sys.stdin.readline()
                if not line:
                    print(json.dumps({"bytes": streams}), flush=True)
                    return 0
                if line.startswith("run "):
                    s = open_stream(url, token, "?run=" + line.split()[1])
                    s.setblocking(False)
                    sel.register(s, selectors.EVENT_READ, len(streams))
                    streams.append(0)
                    print("following", flush=True)
                continue
            try:
                data = key.fileobj.recv(1 << 16)
            except BlockingIOError:
                continue
            if not data:
                sel.unregister(key.fileobj)
                continue
            streams[key.data] += len(data)


def helper_latency(url: str, token: str) -> int:
    """One stream of job changes: prints, per job change seen, its delay in seconds from the
    master's stamp of that change (same host: same clock) to its arrival here."""
    s = open_stream(url, token, "?kind=job")
    s.settimeout(None)
    buf = b""
    print("ready", flush=True)
    while True:
        data = s.recv(1 << 16)
        if not data:
            return 0
        now = time.time()
        buf += data
        while b"\n\n" in buf:
            event, buf = buf.split(b"\n\n", 1)
            for line in event.split(b"\n"):
                if not line.startswith(b"data:"):
                    continue
                try:
                    body = json.loads(line[5:])
                except ValueError:
                    continue
                for item in body.get("changes", ()) if isinstance(body, dict) else ():
                    d = item.get("data") or {}
                    stamp = {"RUNNING": d.get("started_at"),
                             "COMPLETED": d.get("finished_at")}.get(d.get("state"))
                    if stamp:
                        print(json.dumps([item["id"], d["state"], now - stamp]), flush=True)


def spawn_helper(*args: str) -> subprocess.Popen:
    p = subprocess.Popen([sys.executable, os.path.abspath(__file__), *args],
                         stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    if p.stdout.readline().strip() != "ready":
        raise RuntimeError("the SSE helper did not start")
    return p


# -- measurements -------------------------------------------------------------------------

def fan_out(n: int, name: str):
    """fanout.py's workload as one run, so that a run view has something to follow: n
    independent /bin/true jobs."""
    from titan.sdk.pipeline import Pipeline
    p = Pipeline(name)
    for i in range(n):
        p.job(f"t{i}", TASK)
    return p


def fanout_round(cluster, client, n: int, helper) -> dict:
    pipeline = fan_out(n, "fanout")
    wall0 = time.time()
    t0 = time.perf_counter()
    cpu0 = proc_cpu(cluster.master.pid)[0]
    run_id = client.submit(pipeline)
    if helper is not None:  # the run view opens once the run exists, as a user's would
        helper.stdin.write(f"run {run_id}\n")
        helper.stdin.flush()
        helper.stdout.readline()
    run = client.wait_run(run_id, timeout=300)
    elapsed = time.perf_counter() - t0
    cpu = proc_cpu(cluster.master.pid)[0] - cpu0
    jobs = run["jobs"]
    bad = [j for j in jobs if j["state"] != "COMPLETED"]
    if bad or len(jobs) != n:
        raise RuntimeError(f"{len(bad)} of {len(jobs)} jobs did not complete, e.g. {bad[:1]}")
    span = max(j["finished_at"] for j in jobs) - wall0
    return {"tasks_per_s": n / elapsed, "master_tasks_per_s": n / max(1e-9, span),
            "master_cpu_ms_per_job": cpu * 1000.0 / n}


def throughput(args, cluster, client) -> dict:
    out: dict = {"none": [], "subscribed": []}
    client.wait_run(client.submit(fan_out(200, "warm-up")), timeout=300)
    t_end = time.monotonic() + args.round_budget
    for i in range(args.rounds):
        for mode in (("none", "subscribed") if i % 2 == 0 else ("subscribed", "none")):
            helper = None
            if mode == "subscribed":
                helper = spawn_helper("--helper-streams", cluster.web_url, cluster.token,
                                      str(args.clients))
            try:
                r = fanout_round(cluster, client, args.jobs, helper)
            finally:
                if helper is not None:
                    helper.stdin.close()
                    r_bytes = helper.stdout.readline()
                    helper.wait(timeout=30)
            if helper is not None:
                r["bytes_per_stream"] = json.loads(r_bytes)["bytes"]
            out[mode].append(r)
            print(f"  round {i + 1} {mode:10s}: {r['master_tasks_per_s']:7.1f} tasks/s on the "
                  f"master ({r['tasks_per_s']:.1f} seen by the client), master CPU "
                  f"{r['master_cpu_ms_per_job']:.3f} ms/job"
                  + (f", min bytes read by a stream {min(r['bytes_per_stream'])}"
                     if helper is not None else ""), flush=True)
        if time.monotonic() > t_end:
            print(f"  (stopped after {i + 1} round pairs: --round-budget)")
            break
    med = {m: {k: statistics.median(r[k] for r in rs) for k in
               ("tasks_per_s", "master_tasks_per_s", "master_cpu_ms_per_job")}
           for m, rs in out.items()}
    med["ratio"] = med["subscribed"]["master_tasks_per_s"] / med["none"]["master_tasks_per_s"]
    return {"rounds": out, "median": med}


def big_run_gets(args, cluster, client) -> dict:
    run_id = client.submit(fan_out(args.big, "big"))
    run = client.wait_run(run_id, timeout=600)
    if run["state"] != "COMPLETED":
        raise RuntimeError(f"the {args.big}-job run ended {run['state']}")
    parts = urlsplit(cluster.web_url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=30)
    headers = {"Authorization": f"Bearer {cluster.token}"}
    out = {"run_id": run_id}
    for name, path in (("run", f"/api/v1/runs/{run_id}"),
                       ("graph", f"/api/v1/runs/{run_id}?offset=0&limit=10000")):
        walls, size = [], 0
        cpu0 = proc_cpu(cluster.master.pid)[0]
        for _ in range(args.gets):
            t0 = time.perf_counter()
            conn.request("GET", path, headers=headers)
            resp = conn.getresponse()
            body = resp.read()
            walls.append(time.perf_counter() - t0)
            if resp.status != 200:
                raise RuntimeError(f"GET {path}: {resp.status} {body[:200]!r}")
            size = len(body)
        cpu = proc_cpu(cluster.master.pid)[0] - cpu0
        out[name] = {"path": path, "bytes": size, "p50_ms": percentile(walls, 50) * 1000,
                     "max_ms": max(walls) * 1000,
                     "master_cpu_ms_per_get": cpu * 1000 / args.gets}
        print(f"  GET {path}: {size} bytes, p50 {out[name]['p50_ms']:.1f} ms, max "
              f"{out[name]['max_ms']:.1f} ms, master CPU {out[name]['master_cpu_ms_per_get']:.1f}"
              f" ms per GET", flush=True)
    conn.close()
    return out


def latency(args, cluster, client) -> dict:
    helper = spawn_helper("--helper-latency", cluster.web_url, cluster.token)
    samples: list[float] = []
    lines: queue.Queue = queue.Queue()  # the helper's lines, read by a thread: bounded waits
    threading.Thread(target=lambda: [lines.put(x) for x in helper.stdout], daemon=True).start()
    try:
        t_end = time.monotonic() + 120
        while len(samples) < args.changes and time.monotonic() < t_end:
            job_id = client.submit(TASK)
            client.wait(job_id, timeout=60)
            # A pause past the window: each change then starts a batch of its own or waits
            # for the window it falls in, as in a quiet cluster watched by a user.
            time.sleep(args.pause)
            while True:  # what the helper printed for this job (RUNNING, COMPLETED, or one)
                try:
                    line = lines.get(timeout=10)
                except queue.Empty:
                    raise RuntimeError(f"no COMPLETED of {job_id} on the stream in 10 s")
                ref, state, delay = json.loads(line)
                samples.append(delay)
                if ref == job_id and state == "COMPLETED":
                    break
    finally:
        helper.terminate()
        helper.wait(timeout=30)
    samples = samples[:args.changes]
    return {"n": len(samples), "p50_ms": percentile(samples, 50) * 1000,
            "p95_ms": percentile(samples, 95) * 1000, "max_ms": max(samples) * 1000}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--jobs", type=int, default=1000, help="jobs per fan-out round")
    p.add_argument("--rounds", type=int, default=3, help="pairs of rounds (none, subscribed)")
    p.add_argument("--round-budget", type=float, default=300.0,
                   help="seconds after which no new pair of rounds starts")
    p.add_argument("--clients", type=int, default=20)
    p.add_argument("--big", type=int, default=10_000, help="jobs of the finished run read")
    p.add_argument("--gets", type=int, default=20)
    p.add_argument("--changes", type=int, default=100)
    p.add_argument("--pause", type=float, default=0.15)
    p.add_argument("--skip", action="append", default=[],
                   choices=("throughput", "gets", "latency"))
    p.add_argument("--window", type=float,
                   help="web.events_window for the master (default: the config's default)")
    p.add_argument("--json", metavar="FILE")
    p.add_argument("--helper-streams", nargs=3, help=argparse.SUPPRESS)
    p.add_argument("--helper-latency", nargs=2, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.helper_streams:
        url, token, n = args.helper_streams
        return helper_streams(url, token, int(n))
    if args.helper_latency:
        return helper_latency(*args.helper_latency)

    import titan
    from titan.testing.cluster import Cluster
    print(f"titan from {os.path.dirname(titan.__file__)}; load {os.getloadavg()[0]:.2f}",
          flush=True)
    result: dict = {"args": vars(args)}
    with tempfile.TemporaryDirectory(prefix="titan-web-bench-") as base:
        extra = f"web:\n  events_window: {args.window}\n" if args.window else ""
        # Its web listener is tcp:0 on 127.0.0.1 (titan/testing/cluster.py).
        cluster = Cluster(base, workers=2, slots=4, config_extra=extra)
        try:
            cluster.start()
            print(f"  master on {cluster.address}, web on {cluster.web_url}", flush=True)
            with cluster.client() as client:
                if "throughput" not in args.skip:
                    t = result["throughput"] = throughput(args, cluster, client)
                    m = t["median"]
                    print(f"throughput (median): none {m['none']['master_tasks_per_s']:.1f} "
                          f"tasks/s, {m['none']['master_cpu_ms_per_job']:.3f} ms CPU/job; "
                          f"{args.clients}+1 subscribed "
                          f"{m['subscribed']['master_tasks_per_s']:.1f} tasks/s, "
                          f"{m['subscribed']['master_cpu_ms_per_job']:.3f} ms CPU/job; ratio "
                          f"{m['ratio']:.3f} (target >= 0.90)", flush=True)
                if "latency" not in args.skip:
                    lat = result["latency"] = latency(args, cluster, client)
                    print(f"latency change -> SSE client over {lat['n']}: p50 "
                          f"{lat['p50_ms']:.2f} ms, p95 {lat['p95_ms']:.2f} ms, max "
                          f"{lat['max_ms']:.1f} ms (target p50 <= 100 ms)", flush=True)
                if "gets" not in args.skip:
                    result["gets"] = big_run_gets(args, cluster, client)
        finally:
            cluster.stop()
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
