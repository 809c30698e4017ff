"""CPU time of a Titan cluster's processes, read from /proc (bench/dag.py, bench/cpu_per_job.py).

No imports of titan and no sys.path changes: a benchmark run with PYTHONPATH=<worktree>
keeps measuring that tree."""
from __future__ import annotations

import os

TICK = os.sysconf("SC_CLK_TCK")


def proc_cpu(pid: int) -> tuple[float, float]:
    """(own utime+stime, reaped children's cutime+cstime) of a process, in seconds."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return (0.0, 0.0)
    # fields[0] is field 3 (state): utime, stime, cutime, cstime are fields 14-17.
    utime, stime, cutime, cstime = (int(x) for x in fields[11:15])
    return ((utime + stime) / TICK, (cutime + cstime) / TICK)


def live_children(pid: int) -> list[int]:
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            return [int(x) for x in f.read().split()]
    except OSError:
        return []


def cluster_cpu(cluster) -> dict:
    master = proc_cpu(cluster.master.pid)
    workers = [proc_cpu(w.pid) for w in cluster.workers.values()]
    # A worker's long-lived child is its job guard (titan/worker/executor.py); jobs that
    # have ended are reaped and counted in the worker's cutime/cstime.
    guards = [proc_cpu(c)[0] for w in cluster.workers.values() for c in live_children(w.pid)]
    t = os.times()
    return {"master": master[0], "workers": sum(w[0] for w in workers), "guards": sum(guards),
            "jobs": sum(w[1] for w in workers), "client": t.user + t.system}
