#!/usr/bin/env python3
"""ETL chain: extract -> transform -> load, the data handed over through job results.

Each step is a job of one DAG run, and each publishes what the next needs with
`current_job().set_result(...)`; the next reads it with `current_job().parent_results()`.
Nothing is shared on disk, so the steps may run on any workers, on any machines.

This file is both the driver (what you run) and the steps: the pipeline ships this very
file with each job (`Pipeline.script`), and the worker runs it with `--step NAME` under its
own Python, where `titan.sdk` is importable.

Run it against a local cluster (`make run` or `titan up` in another shell):

    .venv/bin/python examples/etl_chain.py

or against any cluster: set TITAN_HOST, TITAN_PORT and TITAN_TOKEN first.  It prints each
step's outcome and the loaded total, and exits 0 when the total is the one expected.
"""
from __future__ import annotations

import argparse
import sqlite3
import sys

REGIONS = ("north", "south", "east", "west")


# -- the steps' logic: plain functions ---------------------------------------------------

def extract_rows(count: int) -> list[dict]:
    """The "source system": `count` orders, every tenth one cancelled.  Amounts in cents."""
    return [{"id": i, "region": REGIONS[i % 4], "cents": 150 * i,
             "status": "cancelled" if i % 10 == 0 else "ok"} for i in range(1, count + 1)]


def transform_rows(rows: list[dict]) -> list[dict]:
    """Drop cancelled orders; add 20% VAT."""
    return [{"id": r["id"], "region": r["region"], "cents": r["cents"] * 6 // 5}
            for r in rows if r["status"] == "ok"]


def load_rows(rows: list[dict]) -> dict:
    """Load into a (here: in-memory) warehouse table and report what it holds."""
    db = sqlite3.connect(":memory:")
    db.execute("CREATE TABLE sales (id INTEGER PRIMARY KEY, region TEXT, cents INTEGER)")
    db.executemany("INSERT INTO sales VALUES (:id, :region, :cents)", rows)
    by_region = {region: cents for region, cents in db.execute(
        "SELECT region, SUM(cents) FROM sales GROUP BY region ORDER BY region")}
    count, total = db.execute("SELECT COUNT(*), SUM(cents) FROM sales").fetchone()
    db.close()
    return {"rows": count, "total_cents": total, "by_region": by_region}


# -- the steps, as they run inside jobs ----------------------------------------------------

def step(name: str, count: int) -> None:
    from titan.sdk import current_job
    me = current_job()
    if name == "extract":
        rows = extract_rows(count)
        me.set_result({"rows": rows})          # results are small JSON-like values (<= 64 KiB)
        print(f"extracted {len(rows)} rows")
    elif name == "transform":
        rows = me.parent_results()["extract"]["rows"]
        kept = transform_rows(rows)
        me.set_result({"rows": kept})
        print(f"kept {len(kept)} of {len(rows)} rows")
    elif name == "load":
        summary = load_rows(me.parent_results()["transform"]["rows"])
        me.set_result(summary)
        print(f"loaded {summary['rows']} rows, total {summary['total_cents'] / 100:.2f}")
    else:
        raise SystemExit(f"unknown step {name!r}")


# -- the driver ---------------------------------------------------------------------------

def build(count: int):
    from titan.sdk import Pipeline
    p = Pipeline("etl-chain")
    args = ["--rows", str(count)]
    extract = p.script("extract", path=__file__, args=["--step", "extract", *args],
                       retries=2, timeout="1m")
    transform = p.script("transform", path=__file__, args=["--step", "transform", *args],
                         retries=2, timeout="1m")
    load = p.script("load", path=__file__, args=["--step", "load", *args],
                    retries=3, timeout="2m")
    extract >> transform >> load
    return p


def drive(count: int) -> int:
    from titan.sdk import Client
    with Client() as titan:
        run_id = titan.submit(build(count))
        print(f"started run {run_id} (watch it: titan status {run_id})")
        run = titan.wait_run(run_id, timeout=300)
        for job in run["jobs"]:
            print(f"  {job['node']:<10} {job['state']:<10} attempt {job['attempt']}"
                  + (f"  ({job['reason']})" if job.get("reason") else ""))
        if run["state"] != "COMPLETED":
            print(f"run {run_id} ended {run['state']}; see: titan logs {run_id}/JOB",
                  file=sys.stderr)
            return 1
        loaded = titan.result(f"{run_id}/load")
    expected = load_rows(transform_rows(extract_rows(count)))
    print(f"loaded {loaded['rows']} rows, total {loaded['total_cents'] / 100:.2f}")
    for region, cents in sorted(loaded["by_region"].items()):
        print(f"  {region:<6} {cents / 100:>10.2f}")
    if loaded != expected:
        print(f"wrong: expected {expected}", file=sys.stderr)
        return 1
    print("ok: the total is the one expected")
    return 0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description="ETL chain on Titan: extract -> transform "
                                                 "-> load, data passed through results.")
    parser.add_argument("--rows", type=int, default=100,
                        help="how many orders to extract (default 100; results are capped "
                             "at 64 KiB, so keep it under about 1000)")
    parser.add_argument("--step", help=argparse.SUPPRESS)  # set when run as a job
    args = parser.parse_args(argv)
    if args.step:
        step(args.step, args.rows)
        return 0
    sys.stdout.reconfigure(line_buffering=True)
    from titan.errors import TitanError
    try:
        return drive(args.rows)
    except TitanError as e:
        print(f"etl_chain: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
