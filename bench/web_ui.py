#!/usr/bin/env python3
"""The run page of a large run in a real browser: how soon it is usable.

    TITAN_WEB_STATIC=DIR .venv/bin/python bench/web_ui.py [--jobs 10000] [--rounds 5]

Starts a cluster (1 master with its web face on 127.0.0.1, 2 workers x 4 slots), runs a DAG
of --jobs `true` jobs to its end (a tree: job i > 0 depends on job (i - 1) // 50), then, in
headless Chromium (tests/acceptance/browser.py), opens /runs/RUN_ID --rounds times, each a
fresh page load, and times from the request of the page to:

- the table's first row on screen (past 300 jobs the page lists them as a table), and
- a click on that row answered: the job's panel on screen ("interactive").

Times are wall clock on this side of WebDriver, so each includes a few ms of its polling
(every 10 ms) and round trips: an upper bound of what the user waits. A figure with
--graph N times the same for a run of N jobs drawn as a graph (past 300 jobs through the
button "Draw the graph anyway", up to 1,000; a root and chains of 20 after it), to the root's
node on screen and a click on it answered.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))


def tree(n: int, name: str):
    from titan.sdk.pipeline import Pipeline
    p = Pipeline(name, max_jobs=max(n, 1))
    for i in range(n):
        p.job(f"t{i}", ["true"], depends_on=[f"t{(i - 1) // 50}"] if i else ())
    return p


def chains(n: int, name: str):
    """A root and (n - 1) // 20 chains of about 20 jobs after it: a graph as wide as deep."""
    from titan.sdk.pipeline import Pipeline
    p = Pipeline(name, max_jobs=max(n, 1))
    k = max(1, (n - 1) // 20)
    for i in range(n):
        p.job(f"t{i}", ["true"], depends_on=[f"t{max(0, i - k)}"] if i else ())
    return p


def wait(driver, css: str, timeout: float = 30.0):
    from selenium.webdriver.common.by import By
    end = time.perf_counter() + timeout
    while True:
        found = driver.find_elements(By.CSS_SELECTOR, css)
        if found:
            return found[0]
        if time.perf_counter() > end:
            raise RuntimeError(f"no {css} after {timeout:g}s")
        time.sleep(0.01)


def login(driver, base: str, token: str) -> None:
    driver.get(base + "/")
    wait(driver, "[data-testid=login-token]").send_keys(token)
    wait(driver, "[data-testid=login-submit]").click()
    wait(driver, "[data-testid=logout]")


def open_page(driver, url: str, first: str, force_graph: bool = False) -> dict:
    """Seconds from asking for the page to the first item on screen and to a click on it
    answered (the job panel shown)."""
    driver.get("about:blank")
    t0 = time.perf_counter()
    driver.get(url)
    if force_graph:
        wait(driver, "[data-testid=show-graph]").click()
    item = wait(driver, first)
    shown = time.perf_counter() - t0
    item.click()
    wait(driver, "[data-testid=job-panel]")
    return {"shown": shown, "interactive": time.perf_counter() - t0}


def rounds(driver, url: str, first: str, n: int, force_graph: bool = False) -> list:
    out = []
    for i in range(n):
        r = open_page(driver, url, first, force_graph)
        print(f"  round {i + 1}: first item {r['shown'] * 1000:.0f} ms, interactive "
              f"{r['interactive'] * 1000:.0f} ms", flush=True)
        out.append(r)
    return out


def summary(what: str, rs: list) -> None:
    shown = statistics.median(r["shown"] for r in rs)
    inter = [r["interactive"] for r in rs]
    print(f"{what}: first item p50 {shown * 1000:.0f} ms; interactive p50 "
          f"{statistics.median(inter) * 1000:.0f} ms, max {max(inter) * 1000:.0f} ms "
          f"(target <= 2000 ms)", flush=True)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--jobs", type=int, default=10_000)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--graph", type=int, default=0, metavar="N",
                   help="also a run of N jobs drawn as a graph (N <= 1000)")
    args = p.parse_args(argv)

    import titan
    from titan.testing.cluster import Cluster
    from tests.acceptance import browser as b
    # Each round is a new page load: without the back/forward cache, the last page's event
    # streams are closed rather than kept, and never hold the connections the next one needs.
    b.FLAGS = b.FLAGS + ["--disable-features=BackForwardCache"]
    print(f"titan from {os.path.dirname(titan.__file__)}; UI from "
          f"{os.environ.get('TITAN_WEB_STATIC') or 'the package'}; load "
          f"{os.getloadavg()[0]:.2f}", flush=True)
    with tempfile.TemporaryDirectory(prefix="titan-web-ui-bench-") as base:
        cluster = Cluster(base, workers=2, slots=4)
        driver = profile = None
        try:
            cluster.start()
            with cluster.client() as client:
                t0 = time.perf_counter()
                run_id = client.submit(tree(args.jobs, "big"))
                run = client.wait_run(run_id, timeout=900)
                print(f"  {args.jobs}-job run {run_id} {run['state']} in "
                      f"{time.perf_counter() - t0:.1f} s", flush=True)
                small = None
                if args.graph:
                    small = client.submit(chains(args.graph, "graph"))
                    client.wait_run(small, timeout=900)
            driver, profile = b.start_browser()
            url = cluster.web_url.rstrip("/")
            login(driver, url, cluster.token)
            summary(f"run page of {args.jobs:,} jobs (table)",
                    rounds(driver, f"{url}/runs/{run_id}", "[data-testid=row-t0]", args.rounds))
            if small:
                summary(f"run page of {args.graph:,} jobs drawn as a graph",
                        rounds(driver, f"{url}/runs/{small}", "[data-testid=node-t0]",
                               args.rounds, force_graph=args.graph > 300))
        finally:
            if driver is not None:
                b.stop_browser(driver, profile)
            cluster.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
