#!/usr/bin/env python3
"""DAG benchmark: a layered 10,000-job DAG on Titan and on Dask distributed, in one run.

    .venv/bin/python bench/dag.py [--jobs 10000] [--width 100] [--repeat 3] [--skip-dask]

The graph: `--jobs` jobs in layers of `--width`; every job of layer L > 0 depends on two
jobs of layer L-1, the one at the same position and the next one (modulo the width).
Every job runs the process /bin/true.  Both systems get the same shape: 2 worker processes
x 4 slots (threads for Dask) on 127.0.0.1, one after the other, never at the same time.

Titan: the whole graph in one SUBMIT_DAG (`Client.submit_dag(spec)`), then
`Client.wait_run(run_id)`; time = submit_dag -> wait_run returned with the run ended.
Dask: the same graph as tasks that take their two parents' results as arguments (so the
scheduler respects the edges), built with dask.delayed (or `--dask-api submit`:
client.submit with futures as arguments); time = first submit -> gather of every leaf.
jobs/s = jobs / time; the median over `--repeat` rounds is the headline figure.

Target: Titan jobs/s >= 1.5 x Dask's.  bench/README.md explains every figure printed.
"""
from __future__ import annotations

import argparse
import json
import os
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Optional

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)                   # bench/fanout.py's helpers
sys.path.insert(0, os.path.dirname(HERE))  # run from a checkout without installing

from fanout import TARGET_RATIO, TASK, fmt, load_average, say, say_host  # noqa: E402
from procstat import TICK, cluster_cpu, proc_cpu  # noqa: E402


# -- the graph -----------------------------------------------------------------------------

def parents_of(i: int, width: int) -> list[int]:
    """The indices job i depends on: the same and the next position of the layer before."""
    layer, pos = divmod(i, width)
    if not layer:
        return []
    base = (layer - 1) * width
    return sorted({base + pos, base + (pos + 1) % width})  # one parent when width == 1


def leaves(n: int, width: int) -> list[int]:
    """Jobs nothing depends on (the last layer, and the tail of the one before it when the
    last layer is partial)."""
    has_child = set()
    for i in range(max(0, n - 2 * width), n):
        has_child.update(parents_of(i, width))
    return [i for i in range(max(0, n - 2 * width), n) if i not in has_child]


def titan_spec(n: int, width: int, name: str = "bench") -> dict:
    return {"name": name, "max_jobs": n,
            "jobs": [{"id": f"j{i}", "command": list(TASK),
                      "depends_on": [f"j{p}" for p in parents_of(i, width)]}
                     for i in range(n)]}


# -- CPU accounting (/proc/PID/stat) -------------------------------------------------------

BUSY_CORES = 0.2  # other processes' CPU during a round above which the report warns


def machine_cpu() -> float:
    """CPU seconds every process on the machine has used since boot (/proc/stat)."""
    with open("/proc/stat") as f:
        ticks = [int(x) for x in f.readline().split()[1:9]]
    return (sum(ticks) - ticks[3] - ticks[4]) / TICK  # all but idle and iowait


def others_cores(machine0: float, machine1: float, ours_ms_per_job: dict, n: int,
                 elapsed: float) -> float:
    """Cores the rest of the machine used meanwhile: everything minus our own processes."""
    ours = sum(ours_ms_per_job.values()) * n / 1000.0
    return max(0.0, (machine1 - machine0 - ours) / elapsed)


def cpu_delta(before: dict, after: dict, n: int) -> dict:
    """Milliseconds of CPU per job, by component."""
    return {k: (after[k] - before[k]) * 1000.0 / n for k in before}


# -- Titan ---------------------------------------------------------------------------------

def titan_round(client, cluster, spec: dict, timeout: float) -> dict:
    n = len(spec["jobs"])
    machine0 = machine_cpu()
    cpu0 = cluster_cpu(cluster)
    wall0 = time.time()
    t0 = time.perf_counter()
    reply = client.submit_dag(spec)
    t_submitted = time.perf_counter()
    run = client.wait_run(reply["run_id"], timeout=timeout)
    t1 = time.perf_counter()
    cpu1 = cluster_cpu(cluster)
    machine1 = machine_cpu()
    done = run.get("counts", {}).get("COMPLETED", 0)
    if run["state"] != "COMPLETED" or done != n:
        raise RuntimeError(f"run {reply['run_id']} ended {run['state']} with counts "
                           f"{run.get('counts')} (wanted {n} COMPLETED)")
    # The master's own clock (time.time() on this host): when it recorded the run ended.
    master_span = run["finished_at"] - wall0
    return {"elapsed": t1 - t0, "jobs_per_s": n / (t1 - t0),
            "submit_s": t_submitted - t0, "master_span": master_span,
            "master_jobs_per_s": n / max(1e-9, master_span),
            "cpu_ms_per_job": cpu_delta(cpu0, cpu1, n),
            "others_cores": others_cores(machine0, machine1, cpu_delta(cpu0, cpu1, n), n,
                                         t1 - t0)}


def bench_titan(args) -> dict:
    from titan.testing.cluster import Cluster

    result: dict = {"rounds": []}
    spec = titan_spec(args.jobs, args.width)
    with tempfile.TemporaryDirectory(prefix="titan-bench-") as base:
        cluster = Cluster(base, workers=args.workers, slots=args.slots)
        try:
            t = time.perf_counter()
            cluster.start()
            say(f"  cluster up in {time.perf_counter() - t:.2f}s: master on {cluster.address},"
                f" {args.workers} workers x {args.slots} slots (data in {base})")
            with cluster.client() as client:
                if args.warmup:
                    titan_round(client, cluster, titan_spec(args.warmup, args.width, "warmup"),
                                args.timeout)
                for i in range(args.repeat):
                    r = titan_round(client, cluster, spec, args.timeout)
                    result["rounds"].append(r)
                    cpu = r["cpu_ms_per_job"]
                    say(f"  round {i + 1}: {r['jobs_per_s']:7.1f} jobs/s ({args.jobs} jobs in "
                        f"{r['elapsed']:.2f}s; submit_dag {r['submit_s'] * 1000:.0f} ms; run "
                        f"ended on the master's clock after {r['master_span']:.2f}s); CPU ms/job:"
                        f" master {cpu['master']:.2f}, workers {cpu['workers']:.2f} (+ guards "
                        f"{cpu['guards']:.2f}), jobs "
                        f"{cpu['jobs']:.2f}, client {cpu['client']:.2f}; other processes used "
                        f"{r['others_cores']:.2f} cores meanwhile")
        finally:
            cluster.stop()
    result["jobs_per_s"] = statistics.median(r["jobs_per_s"] for r in result["rounds"])
    result["master_jobs_per_s"] = statistics.median(
        r["master_jobs_per_s"] for r in result["rounds"])
    return result


# -- Dask ----------------------------------------------------------------------------------

def dag_task(*parents: int) -> int:
    """One Dask task: its parents' exit codes in, /bin/true's out."""
    if any(parents):
        raise RuntimeError(f"a parent failed: {parents}")
    return subprocess.run(TASK).returncode


def dask_cpu(worker_pids: list[int]) -> dict:
    workers = [proc_cpu(pid) for pid in worker_pids]
    t = os.times()  # the scheduler runs in this process too (LocalCluster), with the client
    return {"workers": sum(w[0] for w in workers), "jobs": sum(w[1] for w in workers),
            "scheduler+client": t.user + t.system}


def dask_round(client, n: int, width: int, api: str, worker_pids: list[int]) -> dict:
    import dask

    ends = leaves(n, width)
    if api == "delayed":
        task = dask.delayed(dag_task, pure=False)
        nodes: list = []
        for i in range(n):  # the graph is built before the clock starts, as Titan's spec is
            nodes.append(task(*(nodes[p] for p in parents_of(i, width))))
        machine0 = machine_cpu()
        cpu0 = dask_cpu(worker_pids)
        t0 = time.perf_counter()
        futures = client.compute([nodes[i] for i in ends])
    else:
        machine0 = machine_cpu()
        cpu0 = dask_cpu(worker_pids)
        t0 = time.perf_counter()
        nodes = []
        for i in range(n):
            nodes.append(client.submit(dag_task, *(nodes[p] for p in parents_of(i, width)),
                                       pure=False))
        futures = [nodes[i] for i in ends]
    t_submitted = time.perf_counter()
    codes = client.gather(futures)
    t1 = time.perf_counter()
    cpu1 = dask_cpu(worker_pids)
    machine1 = machine_cpu()
    if any(codes):
        raise RuntimeError(f"{sum(1 for c in codes if c)} Dask leaves failed")
    del futures, nodes
    return {"elapsed": t1 - t0, "jobs_per_s": n / (t1 - t0),
            "submit_s": t_submitted - t0, "cpu_ms_per_job": cpu_delta(cpu0, cpu1, n),
            "others_cores": others_cores(machine0, machine1, cpu_delta(cpu0, cpu1, n), n,
                                         t1 - t0)}


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
                                   local_directory=base,
                                   # CRITICAL: a worker heartbeat racing close() logs a
                                   # harmless CommClosedError traceback at ERROR; task
                                   # failures still surface through gather().
                                   silence_logs=logging.CRITICAL)
            client = Client(cluster)
            client.wait_for_workers(args.workers, timeout=60)
            worker_pids = list(client.run(os.getpid).values())
            say(f"  cluster up in {time.perf_counter() - t:.2f}s: scheduler "
                f"{cluster.scheduler_address}, {args.workers} worker processes x "
                f"{args.slots} threads")
            if args.warmup:
                dask_round(client, args.warmup, args.width, args.dask_api, worker_pids)
            for i in range(args.repeat):
                r = dask_round(client, args.jobs, args.width, args.dask_api, worker_pids)
                result["rounds"].append(r)
                cpu = r["cpu_ms_per_job"]
                say(f"  round {i + 1}: {r['jobs_per_s']:7.1f} jobs/s ({args.jobs} tasks in "
                    f"{r['elapsed']:.2f}s; submitting {r['submit_s'] * 1000:.0f} ms); CPU "
                    f"ms/task: scheduler+client {cpu['scheduler+client']:.2f}, workers "
                    f"{cpu['workers']:.2f}, jobs {cpu['jobs']:.2f}; other processes used "
                    f"{r['others_cores']:.2f} cores meanwhile")
        finally:
            if client is not None:
                client.close()
            if cluster is not None:
                cluster.close()
    result["jobs_per_s"] = statistics.median(r["jobs_per_s"] for r in result["rounds"])
    return result


# -- report --------------------------------------------------------------------------------

def median_cpu(result: dict) -> dict:
    cpus = [r["cpu_ms_per_job"] for r in result["rounds"]]
    return {k: statistics.median(c[k] for c in cpus) for k in cpus[0]}


def report(args, titan: dict, dask: Optional[dict]) -> bool:
    ratio = titan["jobs_per_s"] / dask["jobs_per_s"] if dask else None
    rows = [
        ("DAG throughput, jobs/s (median)", fmt(titan["jobs_per_s"]),
         fmt(dask and dask["jobs_per_s"]), fmt(ratio, ".2f") + ("x" if ratio else "")),
        ("  rounds, jobs/s", " ".join(f"{r['jobs_per_s']:.0f}" for r in titan["rounds"]),
         " ".join(f"{r['jobs_per_s']:.0f}" for r in (dask or {}).get("rounds", [])) or "-",
         ""),
        ("  rounds, seconds", " ".join(f"{r['elapsed']:.2f}" for r in titan["rounds"]),
         " ".join(f"{r['elapsed']:.2f}" for r in (dask or {}).get("rounds", [])) or "-", ""),
        ("  other processes, cores", " ".join(f"{r['others_cores']:.2f}"
                                               for r in titan["rounds"]),
         " ".join(f"{r['others_cores']:.2f}" for r in (dask or {}).get("rounds", [])) or "-",
         ""),
    ]
    w0 = max(len(r[0]) for r in rows) + 2
    say("")
    w1 = max(15, *(len(r[i]) + 2 for r in rows for i in (1, 2)))
    say("=" * (w0 + 2 * w1 + 13))
    say(f"{'':{w0}}{'Titan':>{w1}}{'Dask':>{w1}}{'Titan/Dask':>13}")
    for name, a, b, c in rows:
        say(f"{name:{w0}}{a:>{w1}}{b:>{w1}}{c:>13}")
    say("=" * (w0 + 2 * w1 + 13))
    say(f"Titan, run ended on the master's clock: {titan['master_jobs_per_s']:.1f} jobs/s "
        f"(median; excludes wait_run's final RUN_INFO with every job)")
    t_cpu = median_cpu(titan)
    say(f"CPU per job, ms (median over rounds; /proc/PID/stat of every process involved):")
    say(f"  Titan: master {t_cpu['master']:.2f}, workers {t_cpu['workers']:.2f}, their job "
        f"guards {t_cpu['guards']:.2f}, the jobs "
        f"{t_cpu['jobs']:.2f}, client {t_cpu['client']:.2f}; total {sum(t_cpu.values()):.2f}")
    if dask:
        d_cpu = median_cpu(dask)
        say(f"  Dask:  scheduler+client {d_cpu['scheduler+client']:.2f}, workers "
            f"{d_cpu['workers']:.2f}, the jobs {d_cpu['jobs']:.2f}; total "
            f"{sum(d_cpu.values()):.2f}")
        say(f"  Dask's CPU per job / Titan's: {sum(d_cpu.values()) / sum(t_cpu.values()):.2f}x "
            f"(what the throughput ratio tends to when both are CPU-bound on a quiet machine)")
    busy = max(r["others_cores"] for r in titan["rounds"] + (dask or {}).get("rounds", []))
    if busy > BUSY_CORES:
        say(f"warning: other processes used up to {busy:.2f} of the {os.cpu_count()} CPUs "
            f"during the rounds: the jobs/s figures (and their ratio) are lowered by that, "
            f"unevenly; CPU per job rises too, but much less")
    say("")
    say("Target:")
    ok = True
    if ratio is None:
        say(f"  DAG throughput >= {TARGET_RATIO}x Dask:  not measured (--skip-dask)")
    else:
        ok = ratio >= TARGET_RATIO
        say(f"  DAG throughput >= {TARGET_RATIO}x Dask:  {'MET' if ok else 'NOT MET'} "
            f"({ratio:.2f}x)")
    say("")
    say("Commands:")
    say(f"  this run:    {shlex.join([os.path.relpath(sys.executable)] + sys.argv)}")
    say(f"  graph:       {args.jobs} jobs in layers of {args.width}; job i of layer L>0 "
        f"depends on jobs i and (i+1) % {args.width} of layer L-1; every job "
        f"{shlex.join(TASK)}")
    say(f"  Titan:       Cluster(tmp, workers={args.workers}, slots={args.slots}).start(); "
        f"r = c.submit_dag({{'name': 'bench', 'max_jobs': {args.jobs}, 'jobs': [{{'id': 'j0', "
        f"'command': {TASK!r}, 'depends_on': [...]}}, ...]}}); c.wait_run(r['run_id'])")
    if args.dask_api == "delayed":
        how = ("t = dask.delayed(f, pure=False); nodes[i] = t(*parents); "
               "client.gather(client.compute(leaves))")
    else:
        how = ("nodes[i] = client.submit(f, *parent_futures, pure=False); "
               "client.gather(leaves)")
    say(f"  Dask:        LocalCluster(n_workers={args.workers}, threads_per_worker={args.slots}, "
        f"processes=True); f = lambda *parents: subprocess.run({TASK!r}); {how}")
    say(f"  rounds:      warm-up DAG of {args.warmup} (not counted), then "
        f"{args.repeat} x {args.jobs}")
    say_host(args.load_before)
    return ok


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--jobs", type=int, default=10_000, help="jobs in the DAG (10000)")
    p.add_argument("--width", type=int, default=100, help="jobs per layer (100)")
    p.add_argument("--repeat", type=int, default=3, help="rounds; median (3)")
    p.add_argument("--warmup", type=int, default=200,
                   help="jobs in an uncounted warm-up DAG; 0 skips it (200)")
    p.add_argument("--workers", type=int, default=2, help="worker processes (2)")
    p.add_argument("--slots", type=int, default=4, help="slots / threads per worker (4)")
    p.add_argument("--timeout", type=float, default=600.0,
                   help="seconds to wait for one Titan run (600)")
    p.add_argument("--dask-api", choices=("delayed", "submit"), default="delayed",
                   help="build the Dask graph with dask.delayed + compute, or client.submit "
                        "with futures as arguments (delayed)")
    p.add_argument("--skip-dask", action="store_true", help="measure Titan only")
    p.add_argument("--json", metavar="FILE", help="also write every figure to FILE as JSON")
    p.add_argument("--check", action="store_true",
                   help="exit with status 1 when the target is not met")
    args = p.parse_args(argv)
    if args.jobs < 1 or args.width < 1 or args.repeat < 1 or args.warmup < 0:
        p.error("--jobs, --width and --repeat must be 1 or more; --warmup 0 or more")

    load = load_average()
    if load is not None and load > 0.5 * (os.cpu_count() or 1):
        say(f"warning: load average {load:.2f} on {os.cpu_count()} CPUs before the run: both "
            f"systems are CPU-bound here, so other work on the machine lowers every figure")
    args.load_before = load
    layers = -(-args.jobs // args.width)
    say(f"Titan: {args.repeat} x a DAG of {args.jobs} jobs ({layers} layers of {args.width}) "
        f"of {shlex.join(TASK)}")
    titan = bench_titan(args)
    dask = None
    if not args.skip_dask:
        say(f"Dask distributed ({args.dask_api}): {args.repeat} x the same DAG of tasks "
            f"running subprocess.run({TASK!r})")
        dask = bench_dask(args)
    ok = report(args, titan, dask)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"args": vars(args), "titan": titan, "dask": dask}, f, indent=2)
    return 1 if args.check and not ok else 0


if __name__ == "__main__":
    sys.exit(main())
