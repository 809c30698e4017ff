"""The pure scheduler alone: a large layered DAG with instant completions.

    python bench/scheduler.py [--jobs 100000] [--width 100] [--workers 8] [--slots 4]

Prints µs per job (submit + dispatch + completion, all in the core) and the peak memory the
core allocated (tracemalloc).  Target: ≤ 20 µs/job for 100,000 jobs.
"""
from __future__ import annotations

import argparse
import gc
import os
import sys
import time
import tracemalloc

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from titan.core import events as ev  # noqa: E402
from titan.core.dag import parse_dag  # noqa: E402
from titan.core.scheduler import Scheduler  # noqa: E402


def layered(jobs: int, width: int) -> dict:
    """`jobs` jobs in layers of `width`; each depends on two jobs of the layer before."""
    spec = []
    for i in range(jobs):
        layer, pos = divmod(i, width)
        deps = []
        if layer:
            base = (layer - 1) * width
            deps = sorted({f"j{base + pos}", f"j{base + (pos + 1) % width}"})
        spec.append({"id": f"j{i}", "command": ["/bin/true"], "depends_on": deps})
    return {"name": "bench", "jobs": spec, "max_jobs": jobs}


def run(jobs: int, width: int, workers: int, slots: int, measure_memory: bool) -> tuple:
    """(seconds parsing the wire spec, seconds in the scheduler, peak bytes)."""
    body = layered(jobs, width)
    gc.collect()
    if measure_memory:
        tracemalloc.start()
    start = time.perf_counter()
    template = parse_dag(body)
    parsed = time.perf_counter()
    del body  # the master keeps the parsed template, not the wire body
    s = Scheduler(max_jobs_per_run=jobs)
    now = 0.0
    for w in range(workers):
        s.apply(ev.WorkerJoined(f"w{w}", f"w{w}", "bench", frozenset(), slots), now)
    dispatch = ev.Dispatch
    running = [d for d in s.apply(ev.DagSubmitted("run", template), now)
               if type(d) is dispatch]
    done = 0
    while running:
        d = running.pop()
        now += 1e-6
        for x in s.apply(ev.JobFinished(d.job_id, d.worker_id, d.attempt, 0), now):
            if type(x) is dispatch:
                running.append(x)
        done += 1
    end = time.perf_counter()
    peak = tracemalloc.get_traced_memory()[1] if measure_memory else 0
    if measure_memory:
        tracemalloc.stop()
    assert done == jobs, (done, jobs)
    assert s.runs["run"].state.value == "COMPLETED"
    return parsed - start, end - parsed, peak


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--jobs", type=int, default=100_000)
    p.add_argument("--width", type=int, default=100)
    p.add_argument("--workers", type=int, default=8)
    p.add_argument("--slots", type=int, default=4)
    p.add_argument("--repeat", type=int, default=3)
    a = p.parse_args()
    runs = [run(a.jobs, a.width, a.workers, a.slots, False) for _ in range(a.repeat)]
    parse = sorted(r[0] for r in runs)[len(runs) // 2] / a.jobs * 1e6
    core = sorted(r[1] for r in runs)[len(runs) // 2] / a.jobs * 1e6
    peak = run(a.jobs, a.width, a.workers, a.slots, True)[2]
    print(f"command: python bench/scheduler.py --jobs {a.jobs} --width {a.width} "
          f"--workers {a.workers} --slots {a.slots}")
    print(f"layered DAG of {a.jobs} jobs ({a.width} per layer, 2 parents each), "
          f"{a.workers} workers x {a.slots} slots, instant completions; medians of {a.repeat}")
    print(f"  scheduler (submit, readiness, dispatch, completion): {core:.1f} us/job "
          f"(target <= 20: {'met' if core <= 20 else 'NOT met'})")
    print(f"  parsing and validating the wire spec, before that:   {parse:.1f} us/job")
    print(f"  peak memory allocated by the core: {peak / 2**20:.0f} MiB "
          f"({peak / a.jobs:.0f} bytes/job)")


if __name__ == "__main__":
    main()
