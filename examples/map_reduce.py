#!/usr/bin/env python3
"""Map/reduce fan-out: split -> N map jobs in parallel -> reduce.

`split` cuts the numbers 1..M into N ranges and publishes them as its result; map job i
sums the squares of range i and publishes its partial sum; `reduce` runs once every map
job has COMPLETED, adds up its parents' results (`current_job().parent_results()`) and
publishes the answer.  The driver checks it against the closed form M(M+1)(2M+1)/6.

This file is both the driver (what you run) and the jobs' code: the pipeline ships this
very file with each job (`Pipeline.script`), and the worker runs it with `--step ...`.

Run it against a local cluster (`make run` or `titan up` in another shell):

    .venv/bin/python examples/map_reduce.py          # N = 20 map jobs
    .venv/bin/python examples/map_reduce.py 100      # N = 100

or against any cluster: set TITAN_HOST, TITAN_PORT and TITAN_TOKEN first.  It prints the
answer and exits 0 when it is right.
"""
from __future__ import annotations

import argparse
import sys
import time


def ranges(numbers: int, maps: int) -> list[list[int]]:
    """1..numbers cut into `maps` contiguous [first, last] ranges (some may be empty)."""
    size, extra = divmod(numbers, maps)
    out, first = [], 1
    for i in range(maps):
        last = first + size + (1 if i < extra else 0) - 1
        out.append([first, last])
        first = last + 1
    return out


# -- the jobs -------------------------------------------------------------------------------

def step(args) -> None:
    from titan.sdk import current_job
    me = current_job()
    if args.step == "split":
        shards = ranges(args.numbers, args.maps)
        me.set_result({"shards": shards})
        print(f"split 1..{args.numbers} into {len(shards)} ranges")
    elif args.step == "map":
        first, last = me.parent_results()["split"]["shards"][args.shard]
        partial = sum(n * n for n in range(first, last + 1))
        me.set_result({"shard": args.shard, "sum": partial})
        print(f"shard {args.shard}: {first}..{last} -> {partial}")
    elif args.step == "reduce":
        parts = me.parent_results()               # {"map-0": {...}, "map-1": {...}, ...}
        total = sum(part["sum"] for part in parts.values())
        me.set_result({"total": total, "maps": len(parts)})
        print(f"reduced {len(parts)} partial sums: {total}")
    else:
        raise SystemExit(f"unknown step {args.step!r}")


# -- the driver -------------------------------------------------------------------------------

def build(maps: int, numbers: int):
    from titan.sdk import Pipeline
    p = Pipeline("map-reduce", max_jobs=maps + 2)
    common = [str(maps), "--numbers", str(numbers)]
    split = p.script("split", path=__file__, args=["--step", "split", *common])
    mappers = [p.script(f"map-{i}", path=__file__, retries=1, timeout="5m",
                        args=["--step", "map", "--shard", str(i), *common])
               for i in range(maps)]
    reduce = p.script("reduce", path=__file__, args=["--step", "reduce", *common])
    split >> mappers >> reduce
    return p


def drive(maps: int, numbers: int) -> int:
    from titan.sdk import Client
    started = time.monotonic()
    with Client() as titan:
        run_id = titan.submit(build(maps, numbers))
        print(f"started run {run_id}: split -> {maps} map jobs -> reduce "
              f"(watch it: titan status {run_id})")
        run = titan.wait_run(run_id, timeout=600)
        print(f"run {run_id} {run['state']}: "
              + ", ".join(f"{n} {state}" for state, n in sorted(run["counts"].items()))
              + f" in {time.monotonic() - started:.1f}s")
        if run["state"] != "COMPLETED":
            for job in run["jobs"]:
                if job["state"] != "COMPLETED":
                    print(f"  {job['node']}: {job['state']} {job.get('reason') or ''}",
                          file=sys.stderr)
            return 1
        answer = titan.result(f"{run_id}/reduce")
    expected = numbers * (numbers + 1) * (2 * numbers + 1) // 6
    print(f"sum of squares of 1..{numbers} over {answer['maps']} map jobs = {answer['total']}")
    if answer["total"] != expected or answer["maps"] != maps:
        print(f"wrong: expected {expected} from {maps} map jobs", file=sys.stderr)
        return 1
    print(f"ok: matches n(n+1)(2n+1)/6 = {expected}")
    return 0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description="Map/reduce fan-out on Titan.")
    parser.add_argument("maps", nargs="?", type=int, default=20,
                        help="how many map jobs (default 20)")
    parser.add_argument("--numbers", type=int, default=1_000_000,
                        help="sum the squares of 1..NUMBERS (default 1000000, at most "
                             "2000000: results are msgpack, whose integers are 64-bit)")
    parser.add_argument("--step", help=argparse.SUPPRESS)   # set when run as a job
    parser.add_argument("--shard", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.step:
        step(args)
        return 0
    if args.maps < 1:
        parser.error("N must be 1 or more")
    if not 1 <= args.numbers <= 2_000_000:
        parser.error("--numbers must be from 1 to 2000000")
    sys.stdout.reconfigure(line_buffering=True)
    from titan.errors import TitanError
    try:
        return drive(args.maps, args.numbers)
    except TitanError as e:
        print(f"map_reduce: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
