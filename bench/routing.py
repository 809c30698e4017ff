"""Routing cost in the pure core: 1,000 simulated workers, 10,000 queued jobs.

    python bench/routing.py [--workers 1000] [--jobs 10000] [--slots 2]

Every worker fills up, the rest of the jobs queue; then jobs complete one at a time and each
completion routes the next job through the default chain (capability, affinity,
least-loaded).  Prints µs per dispatch (target ≤ 50), and the same with a fifth of the jobs
needing a GPU tag that only a tenth of the workers have.
"""
from __future__ import annotations

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from titan.core import events as ev  # noqa: E402
from titan.core.model import JobSpec  # noqa: E402
from titan.core.scheduler import Scheduler  # noqa: E402


def run(workers: int, jobs: int, slots: int, gpu: bool) -> float:
    s = Scheduler(max_jobs_per_run=jobs)
    now = 0.0
    for i in range(workers):
        tags = frozenset({"GPU"}) if gpu and i % 10 == 0 else frozenset()
        s.apply(ev.WorkerJoined(f"w{i}", f"w{i}", "bench", tags, slots), now)
    running = []
    for i in range(jobs):
        tags = ("GPU",) if gpu and i % 5 == 0 else ()
        out = s.apply(ev.JobSubmitted(JobSpec(job_id=f"j{i}", command=("true",), tags=tags)),
                      now)
        running.extend(d for d in out if isinstance(d, ev.Dispatch))
    queued = jobs - len(running)
    dispatched = 0
    start = time.perf_counter()
    while running:
        d = running.pop(0)
        now += 1e-6
        out = s.apply(ev.JobFinished(d.job_id, d.worker_id, d.attempt, 0), now)
        new = [x for x in out if isinstance(x, ev.Dispatch)]
        dispatched += len(new)
        running.extend(new)
    elapsed = time.perf_counter() - start
    assert dispatched == queued, (dispatched, queued)
    return elapsed / max(1, dispatched) * 1e6


def burst() -> None:
    """A real cluster: one 2-slot worker, 20 three-second jobs; seconds from saturation (every
    slot busy and jobs waiting) to the first job on a worker the autoscaler started."""
    import tempfile
    from titan.testing.cluster import Cluster
    window = 1.0
    c = Cluster(tempfile.mkdtemp(prefix="titan-burst-"), workers=1, slots=2,
                autoscaler=f"  max_workers: 4\n  window: {window}\n  interval: 0.2\n"
                           "  idle_timeout: 5\n  slots: 2\n")
    try:
        c.start()
        with c.client() as t:
            jobs = [t.submit(["sleep", "3"]) for _ in range(20)]
            saturated = t.job(jobs[2])["submitted_at"]  # the first job that had to wait
            first = None
            while first is None:
                for j in jobs:
                    info = t.job(j)
                    if (info["worker"] or "").startswith("auto-") and info["started_at"]:
                        first = min(first or info["started_at"], info["started_at"])
                time.sleep(0.05)
            print(f"  burst: {first - saturated:.2f} s from saturation to a new worker's first "
                  f"job (window {window:g} s, so {first - saturated - window:.2f} s to start "
                  f"the worker)")
    finally:
        c.stop()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--workers", type=int, default=1000)
    p.add_argument("--jobs", type=int, default=10_000)
    p.add_argument("--slots", type=int, default=2)
    p.add_argument("--no-burst", action="store_true", help="skip the real-cluster burst")
    a = p.parse_args()
    print(f"command: python bench/routing.py --workers {a.workers} --jobs {a.jobs} "
          f"--slots {a.slots}")
    for gpu in (False, True):
        us = sorted(run(a.workers, a.jobs, a.slots, gpu) for _ in range(3))[1]
        label = "with GPU jobs and GPU workers" if gpu else "plain jobs"
        print(f"  {label:32} {us:6.1f} us per completion + dispatch "
              f"(target <= 50: {'met' if us <= 50 else 'NOT met'})")
    if not a.no_burst:
        burst()


if __name__ == "__main__":
    main()
