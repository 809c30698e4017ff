#!/usr/bin/env python3
"""Fan-out benchmark: Titan against Dask distributed on the same machine, in one run.

    .venv/bin/python bench/fanout.py [--jobs 1000] [--repeat 3] [--latency 100] [--skip-dask]

Both systems get the same shape: 2 worker processes x 4 slots (threads for Dask) on
127.0.0.1, and every task runs the process /bin/true.  The two clusters run one after the
other, never at the same time, so they do not compete for the CPUs.

Throughput: a warm-up batch (not counted), then `--jobs` tasks submitted as fast as one
client can, then all of them waited for.  tasks/s = jobs / (first submit -> last task seen
complete by the client); the median over `--repeat` rounds is the headline figure.
Latency: `--latency` single tasks one after another, each timed by the client from just
before submit to the moment it knows the task COMPLETED (Titan: submit + wait; Dask:
submit + result).

The users' paths, on the same Titan cluster (--skip-paths leaves them out): the SDK's batch
submit (submit_many, then wait_many) and `titan run --wait` of a YAML fan-out of `--jobs`
jobs, timed from starting the command to its exit, without a terminal and on a pty.  The
command runs with its bytecode cached, as an installed `titan` does (`--no-bytecode-cache`:
in the environment as it is).

Targets (issue 13): Titan tasks/s >= 1.5 x Dask's on each path, and Titan p50 latency <= 2 ms.
bench/README.md explains every figure printed.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Callable, Optional

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))  # run from a checkout without installing

TASK = ["/bin/true"]
TARGET_RATIO = 1.5
TARGET_P50_MS = 2.0


# -- figures -------------------------------------------------------------------------------

def percentile(values: list[float], q: float) -> float:
    """Linear-interpolation percentile (numpy's default), q in [0, 100]."""
    s = sorted(values)
    if not s:
        return float("nan")
    pos = (len(s) - 1) * q / 100.0
    lo = int(pos)
    hi = min(lo + 1, len(s) - 1)
    return s[lo] + (s[hi] - s[lo]) * (pos - lo)


def latency_summary(samples_s: list[float]) -> dict:
    ms = [x * 1000.0 for x in samples_s]
    return {"n": len(ms), "p50_ms": percentile(ms, 50), "p95_ms": percentile(ms, 95),
            "min_ms": min(ms), "max_ms": max(ms), "mean_ms": statistics.fmean(ms)}


def say(*args) -> None:
    print(*args, flush=True)


def load_average() -> Optional[float]:
    try:
        return os.getloadavg()[0]
    except OSError:
        return None


# -- Titan ---------------------------------------------------------------------------------

def titan_round(client, n: int) -> dict:
    """Submit n jobs back to back, then wait for every one; times as the client sees them."""
    wall0 = time.time()
    t0 = time.perf_counter()
    ids = [client.submit(TASK) for _ in range(n)]
    t_submitted = time.perf_counter()
    jobs = [client.wait(job_id, timeout=300) for job_id in ids]
    t1 = time.perf_counter()
    bad = [j for j in jobs if j["state"] != "COMPLETED"]
    if bad:
        raise RuntimeError(f"{len(bad)} of {n} jobs did not complete, e.g. {bad[0]}")
    # The master's own clock (reactor.seconds() = time.time() on this host): when the last
    # job was recorded COMPLETED, without the client's trailing WAIT_JOB round trips.
    last_finish = max(j["finished_at"] for j in jobs)
    return {"elapsed": t1 - t0, "tasks_per_s": n / (t1 - t0),
            "submit_per_s": n / (t_submitted - t0),
            "master_span": last_finish - wall0,
            "master_tasks_per_s": n / max(1e-9, last_finish - wall0)}


def titan_latency(client, n: int) -> list[float]:
    samples = []
    for _ in range(n):
        t0 = time.perf_counter()
        job = client.wait(client.submit(TASK), timeout=60)
        samples.append(time.perf_counter() - t0)
        if job["state"] != "COMPLETED":
            raise RuntimeError(f"latency job did not complete: {job}")
    return samples


def batch_round(client, n: int) -> dict:
    """The SDK's batch submit: one request for n jobs, then one long poll for all of them."""
    t0 = time.perf_counter()
    ids = client.submit_many([TASK] * n)
    t_submitted = time.perf_counter()
    jobs = client.wait_many(ids, timeout=300)
    t1 = time.perf_counter()
    bad = [j for j in jobs if j["state"] != "COMPLETED"]
    if bad:
        raise RuntimeError(f"{len(bad)} of {n} batch jobs did not complete, e.g. {bad[0]}")
    return {"elapsed": t1 - t0, "tasks_per_s": n / (t1 - t0),
            "submit_per_s": n / max(1e-9, t_submitted - t0)}


def write_pipeline(base: str, n: int) -> str:
    """A YAML pipeline of n independent jobs running TASK (what a user's fan-out looks like)."""
    path = os.path.join(base, f"fanout-{n}.yaml")
    with open(path, "w") as f:
        f.write(f"name: fanout\njobs:\n")
        for i in range(n):
            f.write(f"  - id: task-{i}\n    command: {json.dumps(TASK)}\n")
    return path


def cli_env(args, cluster, base: str) -> dict:
    """The environment the `titan` command runs in: the cluster's, with a bytecode cache.

    A user's installed `titan` has its modules compiled (pip writes the .pyc files).  This
    checkout may not (an editable install, PYTHONDONTWRITEBYTECODE set, as in these
    sessions): then each `titan` process compiled every module of the package again, ~25
    ms of a run that a user never pays.  The cache goes under the benchmark's temporary
    directory (PYTHONPYCACHEPREFIX), not into the source tree; --no-bytecode-cache keeps the
    environment as it is."""
    env = cluster.env()
    if not args.no_bytecode_cache:
        env.pop("PYTHONDONTWRITEBYTECODE", None)
        env["PYTHONPYCACHEPREFIX"] = os.path.join(base, "pycache")
    return env


def cli_round(cluster, path: str, n: int, tty: bool, env: dict) -> dict:
    """`titan run PIPELINE --wait` as a user types it: from starting the command to its
    exit.  With `tty`, stdout and stderr are a terminal (a pty, read as it comes)."""
    import pty
    import threading

    cmd = [os.path.join(os.path.dirname(sys.executable), "titan"), "run", path, "--wait"]
    t0 = time.perf_counter()
    if tty:
        leader, follower = pty.openpty()
        proc = subprocess.Popen(cmd, env=env, stdin=subprocess.DEVNULL, stdout=follower,
                                stderr=follower)
        os.close(follower)
        chunks: list[bytes] = []

        def drain():
            while True:
                try:
                    data = os.read(leader, 65536)
                except OSError:
                    return
                if not data:
                    return
                chunks.append(data)
        reader = threading.Thread(target=drain, daemon=True)
        reader.start()
        # A blocking wait: Popen.wait(timeout) polls, sleeping up to 50 ms between looks,
        # which added ~25 ms on average to each terminal round.  The timer is the timeout.
        killer = threading.Timer(300, proc.kill)
        killer.start()
        try:
            code = proc.wait()
        finally:
            killer.cancel()
        t1 = time.perf_counter()
        reader.join(10)
        os.close(leader)
        out = b"".join(chunks).decode("utf-8", "replace")
    else:
        proc = subprocess.run(cmd, env=env, stdin=subprocess.DEVNULL, capture_output=True,
                              timeout=300)
        t1 = time.perf_counter()
        code = proc.returncode
        out = proc.stdout.decode() + proc.stderr.decode()
    if code != 0:
        raise RuntimeError(f"titan run --wait exited {code}: {out[-2000:]}")
    run_id = out.split()[0]
    with cluster.client() as client:
        run = client.run(run_id, jobs=False)
    return {"elapsed": t1 - t0, "tasks_per_s": n / (t1 - t0),
            "run_span": run["finished_at"] - run["created_at"],
            "output_bytes": len(out)}


def python_startup(env: dict) -> float:
    """How long `titan --help` takes: the interpreter and the CLI's imports, nothing else."""
    t0 = time.perf_counter()
    subprocess.run([os.path.join(os.path.dirname(sys.executable), "titan"), "--help"],
                   capture_output=True, check=True, env=env)
    return time.perf_counter() - t0


def write_one(base: str) -> str:
    path = os.path.join(base, "one.yaml")
    with open(path, "w") as f:
        f.write(f"name: one\njobs:\n  - id: t\n    command: {json.dumps(TASK)}\n")
    return path


PATH_LATENCY = (("batch", "submit_many + wait_many of 1 job"),
                ("watch_run", "1-job run: submit_dag(watch=True) + watch_run, as titan run --wait"),
                ("cli", "`titan run one.yaml --wait`, process start to exit"))


def bench_titan(args) -> dict:
    from titan.testing.cluster import Cluster

    result: dict = {"rounds": []}
    with tempfile.TemporaryDirectory(prefix="titan-bench-") as base:
        cluster = Cluster(base, workers=args.workers, slots=args.slots)
        try:
            t = time.perf_counter()
            cluster.start()
            say(f"  cluster up in {time.perf_counter() - t:.2f}s: master on {cluster.address},"
                f" {args.workers} workers x {args.slots} slots (data in {base})")
            with cluster.client() as client:
                if args.warmup:
                    titan_round(client, args.warmup)
                for i in range(args.repeat):
                    r = titan_round(client, args.jobs)
                    result["rounds"].append(r)
                    say(f"  round {i + 1}: {r['tasks_per_s']:7.1f} tasks/s "
                        f"({args.jobs} jobs in {r['elapsed']:.2f}s; submits alone "
                        f"{r['submit_per_s']:.0f}/s; last completion on the master's clock "
                        f"after {r['master_span']:.2f}s)")
                if not args.skip_paths:
                    paths = user_paths(args, cluster, client, base)
                    result.update(paths)
                if args.latency:
                    for _ in range(min(10, args.latency)):  # warm the single-job path
                        client.wait(client.submit(TASK), timeout=60)
                    result["latency"] = latency_summary(titan_latency(client, args.latency))
                    lat = result["latency"]
                    say(f"  latency over {lat['n']}: p50 {lat['p50_ms']:.2f} ms, "
                        f"p95 {lat['p95_ms']:.2f} ms")
                    if not args.skip_paths:
                        result["path_latency"] = path_latencies(args, cluster, client, base)
                        for key, name in PATH_LATENCY:
                            lat = result["path_latency"][key]
                            say(f"  latency, {name}, over {lat['n']}: p50 "
                                f"{lat['p50_ms']:.2f} ms, p95 {lat['p95_ms']:.2f} ms")
        finally:
            cluster.stop()
    result["tasks_per_s"] = statistics.median(r["tasks_per_s"] for r in result["rounds"])
    result["master_tasks_per_s"] = statistics.median(
        r["master_tasks_per_s"] for r in result["rounds"])
    return result


def path_latencies(args, cluster, client, base: str) -> dict:
    """One job at a time through each user path: p50/p95 of submit -> known COMPLETED."""
    n = args.latency
    one = {"name": "one", "jobs": [{"id": "t", "command": TASK}]}

    def batch():
        [job] = client.wait_many(client.submit_many([TASK]), timeout=60)
        return job["state"]

    def watched():
        submitted = client.submit_dag(one, watch=True)
        for run in client.watch_run(submitted["run_id"], snapshot=submitted["run"]):
            pass
        return run["state"]
    out = {}
    for key, fn in (("batch", batch), ("watch_run", watched)):
        for _ in range(min(10, n)):
            fn()
        samples = []
        for _ in range(n):
            t0 = time.perf_counter()
            state = fn()
            samples.append(time.perf_counter() - t0)
            if state != "COMPLETED":
                raise RuntimeError(f"a {key} latency job ended {state}")
        out[key] = latency_summary(samples)
    # The command itself, once per process: the interpreter and imports are most of it.
    cmd = [os.path.join(os.path.dirname(sys.executable), "titan"), "run", write_one(base),
           "--wait"]
    env = cli_env(args, cluster, base)
    samples = []
    for _ in range(max(3, min(20, n // 5))):
        t0 = time.perf_counter()
        subprocess.run(cmd, env=env, capture_output=True, check=True, timeout=60)
        samples.append(time.perf_counter() - t0)
    out["cli"] = latency_summary(samples)
    return out


def user_paths(args, cluster, client, base: str) -> dict:
    """The paths users take, on the same cluster: the SDK's batch submit, and `titan run
    --wait` of a YAML fan-out without and with a terminal."""
    out: dict = {}
    n = args.jobs
    env = cli_env(args, cluster, base)
    # The first `titan run` fills the bytecode cache (and is not counted).
    subprocess.run([os.path.join(os.path.dirname(sys.executable), "titan"), "run",
                    write_one(base), "--wait"], env=env, capture_output=True, check=True,
                   timeout=60)
    say(f"  the CLI starts in {python_startup(env) * 1000:.0f} ms (titan --help; "
        + ("modules compiled at every start, as the environment says)"
           if args.no_bytecode_cache else "bytecode cached, as installed)"))
    rounds = []
    for i in range(args.repeat):
        r = batch_round(client, n)
        rounds.append(r)
        say(f"  batch round {i + 1}: {r['tasks_per_s']:7.1f} tasks/s (submit_many of {n} "
            f"at {r['submit_per_s']:.0f}/s, then wait_many)")
    out["batch"] = {"rounds": rounds,
                    "tasks_per_s": statistics.median(r["tasks_per_s"] for r in rounds)}
    path = write_pipeline(base, n)
    for key, tty in (("cli_pipe", False), ("cli_tty", True)):
        rounds = []
        for i in range(args.repeat):
            r = cli_round(cluster, path, n, tty, env)
            rounds.append(r)
            say(f"  titan run --wait ({'terminal' if tty else 'no terminal'}) round {i + 1}: "
                f"{r['tasks_per_s']:7.1f} tasks/s ({n} jobs, {r['elapsed']:.2f}s from start to "
                f"exit; the run itself {r['run_span']:.2f}s on the master's clock)")
        out[key] = {"rounds": rounds,
                    "tasks_per_s": statistics.median(r["tasks_per_s"] for r in rounds),
                    "run_span": statistics.median(r["run_span"] for r in rounds)}
    return out


# -- Dask ----------------------------------------------------------------------------------

def run_true(_i=None) -> int:
    """The Dask task: the same process every Titan job runs."""
    return subprocess.run(TASK).returncode


def dask_round(client, n: int, offset: int) -> dict:
    from distributed import wait

    t0 = time.perf_counter()
    futures = client.map(run_true, range(offset, offset + n), pure=False)
    t_submitted = time.perf_counter()
    wait(futures)
    codes = client.gather(futures)
    t1 = time.perf_counter()
    if any(codes):
        raise RuntimeError(f"{sum(1 for c in codes if c)} Dask tasks failed")
    del futures
    return {"elapsed": t1 - t0, "tasks_per_s": n / (t1 - t0),
            "submit_per_s": n / max(1e-9, t_submitted - t0)}


def bench_dask(args) -> dict:
    import logging

    from distributed import Client, LocalCluster

    result: dict = {"rounds": []}
    cluster = client = None
    with tempfile.TemporaryDirectory(prefix="dask-bench-") as base:
        try:
            t = time.perf_counter()
            cluster = LocalCluster(n_workers=args.workers, threads_per_worker=args.slots,
                                   processes=True, host="127.0.0.1", dashboard_address=None,
                                   local_directory=base, silence_logs=logging.ERROR)
            client = Client(cluster)
            client.wait_for_workers(args.workers, timeout=60)
            say(f"  cluster up in {time.perf_counter() - t:.2f}s: scheduler "
                f"{cluster.scheduler_address}, {args.workers} worker processes x "
                f"{args.slots} threads")
            if args.warmup:
                dask_round(client, args.warmup, 0)
            for i in range(args.repeat):
                r = dask_round(client, args.jobs, (i + 1) * args.jobs)
                result["rounds"].append(r)
                say(f"  round {i + 1}: {r['tasks_per_s']:7.1f} tasks/s "
                    f"({args.jobs} tasks in {r['elapsed']:.2f}s)")
            if args.latency:
                for _ in range(min(10, args.latency)):
                    client.submit(run_true, pure=False).result()
                samples = []
                for _ in range(args.latency):
                    t0 = time.perf_counter()
                    code = client.submit(run_true, pure=False).result()
                    samples.append(time.perf_counter() - t0)
                    if code:
                        raise RuntimeError("a Dask latency task failed")
                result["latency"] = latency_summary(samples)
                lat = result["latency"]
                say(f"  latency over {lat['n']}: p50 {lat['p50_ms']:.2f} ms, "
                    f"p95 {lat['p95_ms']:.2f} ms")
        finally:
            if client is not None:
                client.close()
            if cluster is not None:
                cluster.close()
    result["tasks_per_s"] = statistics.median(r["tasks_per_s"] for r in result["rounds"])
    return result


# -- report --------------------------------------------------------------------------------

def fmt(value: Optional[float], spec: str = ".1f") -> str:
    return "-" if value is None else format(value, spec)


def report(args, titan: dict, dask: Optional[dict]) -> bool:
    t_lat = titan.get("latency") or {}
    d_lat = (dask or {}).get("latency") or {}
    ratio = titan["tasks_per_s"] / dask["tasks_per_s"] if dask else None
    rows = [
        ("throughput, tasks/s (median)", fmt(titan["tasks_per_s"]),
         fmt(dask and dask["tasks_per_s"]), fmt(ratio, ".2f") + ("x" if ratio else "")),
        ("  rounds, tasks/s", " ".join(f"{r['tasks_per_s']:.0f}" for r in titan["rounds"]),
         " ".join(f"{r['tasks_per_s']:.0f}" for r in (dask or {}).get("rounds", [])) or "-",
         ""),
        ("latency p50, ms", fmt(t_lat.get("p50_ms"), ".2f"), fmt(d_lat.get("p50_ms"), ".2f"), ""),
        ("latency p95, ms", fmt(t_lat.get("p95_ms"), ".2f"), fmt(d_lat.get("p95_ms"), ".2f"), ""),
        ("latency min / max, ms",
         f"{fmt(t_lat.get('min_ms'), '.2f')} / {fmt(t_lat.get('max_ms'), '.2f')}",
         f"{fmt(d_lat.get('min_ms'), '.2f')} / {fmt(d_lat.get('max_ms'), '.2f')}"
         if d_lat else "-", ""),
    ]
    for key, name in (("batch", "batch submit, tasks/s (median)"),
                      ("cli_pipe", "titan run --wait, no tty, tasks/s"),
                      ("cli_tty", "titan run --wait, on a tty, tasks/s")):
        if key in titan:
            value = titan[key]["tasks_per_s"]
            r = value / dask["tasks_per_s"] if dask else None
            rows.append((name, fmt(value), fmt(dask and dask["tasks_per_s"]),
                         fmt(r, ".2f") + ("x" if r else "")))
    w0 = max(len(r[0]) for r in rows) + 2
    say("")
    say("=" * 72)
    say(f"{'':{w0}}{'Titan':>14}{'Dask':>14}{'Titan/Dask':>14}")
    for name, a, b, c in rows:
        say(f"{name:{w0}}{a:>14}{b:>14}{c:>14}")
    say("=" * 72)
    say(f"Titan, last completion on the master's clock: {titan['master_tasks_per_s']:.1f} "
        f"tasks/s (median; excludes the client's trailing WAIT_JOB round trips)")
    say("")
    say("Targets:")
    ok = True
    if ratio is None:
        say(f"  throughput >= {TARGET_RATIO}x Dask:  not measured (--skip-dask)")
    else:
        met = ratio >= TARGET_RATIO
        ok &= met
        say(f"  throughput >= {TARGET_RATIO}x Dask:  {'MET' if met else 'NOT MET'} "
            f"({ratio:.2f}x)")
    for key, name in (("batch", "batch submit"), ("cli_pipe", "titan run --wait, no tty"),
                      ("cli_tty", "titan run --wait, tty")):
        if key in titan and dask:
            r = titan[key]["tasks_per_s"] / dask["tasks_per_s"]
            met = r >= TARGET_RATIO
            ok &= met
            say(f"  {name} >= {TARGET_RATIO}x Dask:  {'MET' if met else 'NOT MET'} ({r:.2f}x)")
    for key, name in PATH_LATENCY[:2]:
        lat = titan.get("path_latency", {}).get(key)
        if lat:
            met = lat["p50_ms"] <= TARGET_P50_MS
            ok &= met
            say(f"  p50 <= {TARGET_P50_MS:g} ms, {key}:  {'MET' if met else 'NOT MET'} "
                f"({lat['p50_ms']:.2f} ms)")
    if titan.get("path_latency"):
        say(f"  (a whole `titan run --wait` of one job: p50 "
            f"{titan['path_latency']['cli']['p50_ms']:.0f} ms, most of it starting Python)")
    if t_lat:
        met = t_lat["p50_ms"] <= TARGET_P50_MS
        ok &= met
        say(f"  Titan p50 <= {TARGET_P50_MS:g} ms:        {'MET' if met else 'NOT MET'} "
            f"({t_lat['p50_ms']:.2f} ms)")
    else:
        say(f"  Titan p50 <= {TARGET_P50_MS:g} ms:        not measured (--latency 0)")
    say("")
    say("Commands:")
    say(f"  this run:    {shlex.join([os.path.relpath(sys.executable)] + sys.argv)}")
    say(f"  every task:  {shlex.join(TASK)}")
    say(f"  Titan:       Cluster(tmp, workers={args.workers}, slots={args.slots}).start() "
        f"(titan/testing/cluster.py: twistd -n titan-master / titan-worker on 127.0.0.1); "
        f"blocking titan.sdk.Client: ids = [c.submit({TASK!r}) for _ in range({args.jobs})]; "
        f"[c.wait(i) for i in ids]; latency: c.wait(c.submit({TASK!r})); batch: "
        f"c.wait_many(c.submit_many([{TASK!r}] * {args.jobs})); CLI: titan run "
        f"fanout-{args.jobs}.yaml --wait ({args.jobs} independent jobs of {TASK!r}), "
        f"stdout/stderr captured by pipes, then on a pty, "
        + ("in the environment as it is" if args.no_bytecode_cache else
           "bytecode cached (PYTHONPYCACHEPREFIX in the temporary directory)"))
    say(f"  Dask:        LocalCluster(n_workers={args.workers}, threads_per_worker={args.slots}, "
        f"processes=True); fs = client.map(lambda i: subprocess.run({TASK!r}), "
        f"range({args.jobs}), pure=False); wait(fs); gather(fs); latency: "
        f"client.submit(f, pure=False).result()")
    latency = (f"{args.latency} sequential tasks after {min(10, args.latency)} warm-up ones"
               if args.latency else "skipped")
    say(f"  rounds:      warm-up {args.warmup} (not counted), then {args.repeat} x {args.jobs}; "
        f"latency: {latency}")
    say_host(args.load_before)
    return ok


def say_host(load_before) -> None:
    """The closing line every benchmark prints: where it ran, and how busy the machine was."""
    load = load_average()
    say(f"  host:        {platform.node()}, {os.cpu_count()} CPUs, Python "
        f"{platform.python_version()}, {platform.platform()}; load average "
        f"{fmt(load_before, '.2f')} before, {fmt(load, '.2f')} after")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--jobs", type=int, default=1000, help="tasks per throughput round (1000)")
    p.add_argument("--repeat", type=int, default=3, help="throughput rounds; median (3)")
    p.add_argument("--warmup", type=int, default=50, help="uncounted warm-up tasks (50)")
    p.add_argument("--latency", type=int, default=100,
                   help="sequential tasks for the latency figures; 0 skips (100)")
    p.add_argument("--workers", type=int, default=2, help="worker processes (2)")
    p.add_argument("--slots", type=int, default=4, help="slots / threads per worker (4)")
    p.add_argument("--skip-dask", action="store_true", help="measure Titan only")
    p.add_argument("--skip-paths", action="store_true",
                   help="leave out the users' paths (batch submit, titan run --wait)")
    p.add_argument("--no-bytecode-cache", action="store_true",
                   help="run the titan command in the environment as it is (with "
                        "PYTHONDONTWRITEBYTECODE set, each start compiles the package)")
    p.add_argument("--json", metavar="FILE", help="also write every figure to FILE as JSON")
    p.add_argument("--check", action="store_true",
                   help="exit with status 1 when a target is not met")
    args = p.parse_args(argv)
    if args.jobs < 1 or args.repeat < 1 or args.warmup < 0 or args.latency < 0:
        p.error("--jobs and --repeat must be 1 or more; --warmup and --latency 0 or more")

    load = load_average()
    if load is not None and load > 0.5 * (os.cpu_count() or 1):
        say(f"warning: load average {load:.2f} on {os.cpu_count()} CPUs before the run: both "
            f"systems are CPU-bound here, so other work on the machine lowers every figure")
    args.load_before = load
    say(f"Titan: {args.repeat} x {args.jobs} jobs of {shlex.join(TASK)}")
    titan = bench_titan(args)
    dask = None
    if not args.skip_dask:
        say(f"Dask distributed: {args.repeat} x {args.jobs} tasks of subprocess.run("
            f"{TASK!r})")
        dask = bench_dask(args)
    ok = report(args, titan, dask)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"args": vars(args), "titan": titan, "dask": dask}, f, indent=2)
    return 1 if args.check and not ok else 0


if __name__ == "__main__":
    sys.exit(main())
