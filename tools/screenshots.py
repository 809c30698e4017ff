"""`make screenshots`: every view of the dashboard, in headless Chromium, into docs/img/.

Starts a private cluster with `titan up --port 0` in a temporary data dir, gives it work a
user would have (a finished pipeline, a failed-and-retried one, a run waiting on an approval,
an agent run of four stages, a service, a schedule, store keys), logs the browser in with the
one-time link `titan up` printed, and saves one PNG per view.  Everything stays on 127.0.0.1.

    python tools/screenshots.py [OUT_DIR]
"""
from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, ROOT)

from selenium.webdriver.common.by import By  # noqa: E402

from titan.sdk import Client, Pipeline  # noqa: E402
from tests.acceptance.browser import start_browser, stop_browser  # noqa: E402

BIN = os.path.dirname(sys.executable)


def start_cluster(home: str) -> tuple[subprocess.Popen, str, int, str]:
    up = subprocess.Popen([os.path.join(BIN, "titan"), "up", "--workers", "2", "--port", "0",
                           "--data-dir", home], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          env={k: v for k, v in os.environ.items()
                               if not k.startswith("TITAN_") or k == "TITAN_WEB_STATIC"})
    banner = b""
    deadline = time.monotonic() + 60
    while b"Ctrl-C stops everything." not in banner and time.monotonic() < deadline:
        line = up.stdout.readline()
        if not line:
            raise SystemExit("titan up did not start:\n" + up.stderr.read().decode())
        banner += line
    text = banner.decode()
    link = re.search(r"dashboard\s+(http://127\.0\.0\.1:\d+/login\?code=\S+)", text).group(1)
    port = int(re.search(r"master\s+127\.0\.0\.1:(\d+)", text).group(1))
    with open(os.path.join(home, "master", "token")) as f:
        token = f.read().strip()
    return up, link, port, token


def populate(c: Client) -> dict:
    """Work of every kind; returns the ids the views are shot on."""
    py = sys.executable
    ids: dict = {}
    etl = Pipeline("nightly-etl")
    extract = etl.job("extract", ["sh", "-c", "echo reading 3 sources; sleep 0.3"])
    clean = [etl.job(f"clean-{n}", ["sh", "-c", f"echo cleaning {n}; sleep 0.5"])
             for n in ("orders", "users", "events")]
    join = etl.job("join", ["sh", "-c", "echo joined 12840 rows"])
    report = etl.job("report", [py, "-c", "from titan.sdk import current_job\n"
                                "current_job().set_result({'rows': 12840, 'ok': True})"])
    extract >> clean
    clean >> join
    join >> report
    ids["etl"] = c.submit(etl)

    flaky = Pipeline("model-training")
    prep = flaky.job("prepare", ["sh", "-c", "echo preparing"])
    train = flaky.job("train", ["sh", "-c", "echo 'CUDA out of memory' >&2; exit 3"],
                      retries=2)
    evaluate = flaky.job("evaluate", ["true"])
    prep >> train >> evaluate
    ids["flaky"] = c.submit(flaky)

    release = Pipeline("release")
    build = release.job("build", ["sh", "-c", "echo built v1.4.2"])
    test = release.job("test", ["sh", "-c", "echo 214 tests passed"])
    gate = release.gate("approve-deploy", "Deploy v1.4.2 to production?", timeout="8h")
    deploy = release.job("deploy", ["sh", "-c", "echo deploying"])
    build >> test >> gate >> deploy
    ids["release"] = c.submit(release)

    for stage, seconds in (("PLAN", 0.4), ("ITER", 1.2), ("EVAL", 0.6), ("SYNTH", 0.3)):
        p = Pipeline(f"research-{stage.lower()}", agent_run_id="research-42", stage=stage)
        p.job("think", ["sh", "-c", f"echo {stage}; sleep {seconds}"])
        rid = c.submit(p)
        c.wait_run(rid, timeout=60)
    ids["agent"] = "research-42"

    c.deploy("docs-site", ["python3", "-m", "http.server", "--bind", "127.0.0.1", "8765"],
             port=8765)
    cron = Pipeline("hourly-backup", schedule="0 * * * *")
    cron.job("backup", ["true"])
    c.submit(cron)
    try:
        c.store_put("model:latest", "v1.4.2")
        c.store_put("run:nightly-etl:rows", "12840")
        c.store_sadd("workers:gpu", "gpu-box-1")
    except Exception as e:  # a master without a store: the store page says so
        print(f"store: {e}", file=sys.stderr)
    for key in ("etl", "flaky"):
        c.wait_run(ids[key], timeout=60)
    return ids


def shoot(out: str) -> None:
    home = tempfile.mkdtemp(prefix="titan-shots-")
    up, link, port, token = start_cluster(home)
    driver = profile = None
    try:
        with Client(master=f"127.0.0.1:{port}", token=token) as c:
            ids = populate(c)
            base = link.split("/login")[0]
            driver, profile = start_browser(1440, 900)
            driver.get(link)  # the one-time link: a session cookie, then the app
            time.sleep(1.0)
            views = [
                ("cluster", "/", None),
                ("runs", "/runs", None),
                ("run", f"/runs/{ids['etl']}", None),
                ("run-job", f"/runs/{ids['flaky']}", "[data-testid=node-train]"),
                ("approvals", "/approvals", None),
                ("agent-run", f"/agent-runs/{ids['agent']}", None),
                ("services", "/services", None),
                ("schedules", "/schedules", None),
                ("store", "/store", "[data-testid=store-key]"),
                ("constructor", f"/new?from={ids['etl']}", "[data-testid=cnode-join]"),
                ("constructor-export", f"/new?from={ids['etl']}", "[data-testid=export]"),
            ]
            os.makedirs(out, exist_ok=True)
            for name, path, click in views:
                driver.get(base + path)
                time.sleep(1.5)  # the view loads and the live feed settles
                if click:
                    found = driver.find_elements(By.CSS_SELECTOR, click)
                    if found:
                        found[0].click()
                        time.sleep(1.5)
                target = os.path.join(out, f"{name}.png")
                driver.save_screenshot(target)
                print(target)
            driver.delete_all_cookies()
            driver.get(base + "/")
            time.sleep(1.0)
            driver.save_screenshot(os.path.join(out, "login.png"))
            print(os.path.join(out, "login.png"))
    finally:
        if driver is not None:
            stop_browser(driver, profile)
        stop_cluster(up, home)


def stop_cluster(up: subprocess.Popen, home: str) -> None:
    """Stop start_cluster's `titan up` (as Ctrl-C does) and remove its home."""
    up.send_signal(signal.SIGINT)
    try:
        up.wait(30)
    except subprocess.TimeoutExpired:
        up.kill()
    shutil.rmtree(home, ignore_errors=True)


if __name__ == "__main__":
    shoot(os.path.abspath(sys.argv[1] if len(sys.argv) > 1 else os.path.join(ROOT, "docs", "img")))
