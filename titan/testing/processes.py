"""Process plumbing shared by `titan up`, the acceptance tests and the benchmarks."""
from __future__ import annotations

import ctypes
import os
import signal
import subprocess
import time
from typing import Optional

PR_SET_PDEATHSIG = 1


def die_with_parent() -> None:
    """preexec_fn: the child gets SIGTERM when its parent dies (Linux), so nothing is orphaned."""
    try:
        ctypes.CDLL(None).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    except (OSError, AttributeError):
        pass


def read_port(data_dir: str, proc: Optional[subprocess.Popen], timeout: float,
              name: str = "master.port") -> Optional[int]:
    """The port a server wrote into its data dir once listening; None if it died or timed
    out."""
    path = os.path.join(data_dir, name)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with open(path) as f:
                text = f.read().strip()
            if text:
                return int(text)
        except (OSError, ValueError):
            pass
        if proc is not None and proc.poll() is not None:
            return None
        time.sleep(0.02)
    return None


def tail(path: str, lines: int = 15) -> str:
    try:
        with open(path, errors="replace") as f:
            return "".join(f.readlines()[-lines:])
    except OSError:
        return "(no log)"
