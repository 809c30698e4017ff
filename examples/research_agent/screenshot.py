"""Shoot the research agent's timeline for docs/agents.md: docs/img/agent-research.png.

Starts a private `titan up` (tools/screenshots.py's), runs the agent offline with run.py,
opens /agent-runs/ID in headless Chromium and saves the page.  Everything on 127.0.0.1.

    .venv/bin/python examples/research_agent/screenshot.py [OUT.png]
"""
from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.join(ROOT, "tools"))

from screenshots import start_cluster, stop_cluster  # noqa: E402
from tests.acceptance.browser import start_browser, stop_browser  # noqa: E402


def main(out: str) -> int:
    home = tempfile.mkdtemp(prefix="titan-research-shot-")
    up, link, port, token = start_cluster(home)
    driver = profile = None
    try:
        env = {k: v for k, v in os.environ.items() if not k.startswith("TITAN_")}
        env.update(TITAN_HOST="127.0.0.1", TITAN_PORT=str(port), TITAN_TOKEN=token)
        done = subprocess.run([sys.executable, os.path.join(HERE, "run.py"),
                               "How do B-trees stay balanced?", "--n", "4", "--gate",
                               "--approve", "--agent-run-id", "research-btrees"],
                              env=env, capture_output=True, timeout=300)
        sys.stdout.write(done.stdout.decode())
        if done.returncode:
            sys.stderr.write(done.stderr.decode())
            return 1
        base = link.split("/login")[0]
        driver, profile = start_browser(1440, 520)
        driver.get(link)
        time.sleep(1.0)
        driver.get(base + "/agent-runs/research-btrees")
        time.sleep(2.0)
        driver.save_screenshot(out)
        print(out)
        return 0
    finally:
        if driver is not None:
            stop_browser(driver, profile)
        stop_cluster(up, home)


if __name__ == "__main__":
    sys.exit(main(os.path.abspath(sys.argv[1] if len(sys.argv) > 1 else
                                  os.path.join(ROOT, "docs", "img", "agent-research.png"))))
