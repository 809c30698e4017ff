#!/usr/bin/env python3
"""CPU per job of a Titan cluster: the figure that does not move with the machine's load.

    .venv/bin/python bench/cpu_per_job.py [--jobs 2000] [--repeat 3] [--mode submit|batch|run]
    PYTHONPATH=/tmp/f-base .venv/bin/python bench/cpu_per_job.py   # another tree's code

Starts the cluster of bench/fanout.py (1 master, 2 workers x 4 slots, every job runs
/bin/true), runs a warm-up, then `--repeat` rounds of `--jobs` jobs, and prints the CPU
seconds (user + system, from /proc/PID/stat) each part used per job, in milliseconds:
the master, the workers, their job guards, the jobs themselves (the workers' reaped
children: fork/exec of /bin/true) and this process (the client).  On a 2-CPU machine shared
with other work the wall-clock rate swings by a third; this does much less, so compare two
trees by running this in alternation (bench/README.md).

Modes: `submit` = `client.submit` per job then `client.wait` per job (fanout's
throughput rounds); `batch` = one `submit_many`, one `wait_many`; `run` = `titan run
PIPELINE --wait` of `--jobs` independent jobs (fanout's users' path; the client's CPU is
then the `titan` command's, bytecode cached as fanout runs it).
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

TASK = ["/bin/true"]
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # bench/procstat.py only
from procstat import cluster_cpu  # noqa: E402  (master, workers, guards, jobs, client)


def snapshot(cluster) -> dict:
    """cluster_cpu, the client with its reaped children: the `titan` commands of `run`
    mode (the cluster's processes are reaped only when it stops)."""
    cpu = cluster_cpu(cluster)
    t = os.times()
    cpu["client"] += t.children_user + t.children_system
    return cpu


def run_round(client, n: int, mode: str, command=None) -> float:
    t0 = time.perf_counter()
    if mode == "run":
        proc = subprocess.run(command[0], env=command[1], stdin=subprocess.DEVNULL,
                              capture_output=True, timeout=300)
        elapsed = time.perf_counter() - t0
        if proc.returncode != 0:
            raise RuntimeError(f"titan run --wait exited {proc.returncode}: "
                               f"{proc.stderr.decode()[-2000:]}")
        return elapsed
    if mode == "batch":
        jobs = client.wait_many(client.submit_many([TASK] * n), timeout=300)
    else:
        ids = [client.submit(TASK) for _ in range(n)]
        jobs = [client.wait(i, timeout=300) for i in ids]
    elapsed = time.perf_counter() - t0
    bad = [j for j in jobs if j["state"] != "COMPLETED"]
    if bad:
        raise RuntimeError(f"{len(bad)} of {n} jobs did not complete, e.g. {bad[0]}")
    return elapsed


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--jobs", type=int, default=2000)
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--warmup", type=int, default=200)
    p.add_argument("--mode", choices=("submit", "batch", "run"), default="submit")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--slots", type=int, default=4)
    p.add_argument("--json", metavar="FILE")
    args = p.parse_args(argv)

    import titan
    from titan.testing.cluster import Cluster
    print(f"titan from {os.path.dirname(titan.__file__)}; {args.mode} mode, "
          f"{args.repeat} x {args.jobs} jobs, {args.workers} workers x {args.slots} slots",
          flush=True)
    rounds = []
    with tempfile.TemporaryDirectory(prefix="titan-cpu-") as base:
        cluster = Cluster(base, workers=args.workers, slots=args.slots)
        try:
            cluster.start()
            command = warmup = None
            if args.mode == "run":  # the pipelines and environment of fanout's CLI rounds
                import fanout
                titan_cmd = os.path.join(os.path.dirname(sys.executable), "titan")
                env = fanout.cli_env(argparse.Namespace(no_bytecode_cache=False), cluster,
                                     base)
                command = ([titan_cmd, "run", fanout.write_pipeline(base, args.jobs),
                            "--wait"], env)
                warmup = ([titan_cmd, "run", fanout.write_pipeline(base, args.warmup),
                           "--wait"], env)
            with cluster.client() as client:
                run_round(client, args.warmup, args.mode, warmup)
                for i in range(args.repeat):
                    before = snapshot(cluster)
                    elapsed = run_round(client, args.jobs, args.mode, command)
                    after = snapshot(cluster)
                    ms = {k: (after[k] - before[k]) * 1000.0 / args.jobs for k in before}
                    ms["total"] = sum(ms.values())
                    rounds.append({"elapsed": elapsed, "ms": ms})
                    print(f"round {i + 1}: {args.jobs / elapsed:7.1f} jobs/s; CPU ms/job: "
                          + ", ".join(f"{k} {v:.3f}" for k, v in ms.items()), flush=True)
        finally:
            cluster.stop()
    med = {k: statistics.median(r["ms"][k] for r in rounds) for k in rounds[0]["ms"]}
    print("median CPU ms/job: " + ", ".join(f"{k} {v:.3f}" for k, v in med.items()))
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"args": vars(args), "rounds": rounds, "median": med}, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
