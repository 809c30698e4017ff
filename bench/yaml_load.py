"""How long `titan run FILE` takes to read a big pipeline: YAML text to a validated spec.

    .venv/bin/python bench/yaml_load.py [N ...]      # default: 1000 10000

For each size, a pipeline of N jobs (a command each, every tenth with env and tags, each
depending on one or two earlier jobs) is written to a temporary file, then read with
`load_pipeline(path).to_spec()` -- parsing, checking every key, ids, parents and cycles --
three times; the best and median seconds are printed.  Target: 10,000 jobs in 0.3 s or less.
"""
from __future__ import annotations

import os
import statistics
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from titan.sdk.pipeline import load_pipeline  # noqa: E402


def pipeline_text(n: int) -> str:
    lines = ["version: '1.0'", f"name: bench-{n}", "project: false", "jobs:"]
    for i in range(n):
        lines.append(f"  - id: step-{i}")
        lines.append(f"    command: [python3, -c, 'print({i})']")
        if i:
            parents = sorted({f"step-{i - 1}", f"step-{i // 2}"})
            lines.append(f"    depends_on: [{', '.join(parents)}]")
        if i % 10 == 0:
            lines.append("    env: {STEP: '%d', DEBUG: 'yes'}" % i)
            lines.append("    tags: [cpu]")
            lines.append("    retries: 2")
            lines.append("    timeout: 5m")
    return "\n".join(lines) + "\n"


def main(argv: list[str]) -> None:
    sizes = [int(a) for a in argv] or [1000, 10000]
    with tempfile.TemporaryDirectory() as tmp:
        for n in sizes:
            path = os.path.join(tmp, f"bench-{n}.yaml")
            with open(path, "w") as f:
                f.write(pipeline_text(n))
            times = []
            for _ in range(3):
                start = time.perf_counter()
                spec = load_pipeline(path).to_spec()
                times.append(time.perf_counter() - start)
            assert len(spec["jobs"]) == n
            print(f"{n:6d} jobs: best {min(times):.3f} s, median {statistics.median(times):.3f} s "
                  f"({os.path.getsize(path) / 1e6:.2f} MB of YAML)")


if __name__ == "__main__":
    main(sys.argv[1:])
