"""Tags a worker can see for itself: a GPU, a lot of memory."""
from __future__ import annotations

import os
import shutil
import subprocess
from typing import Callable, Optional


def gpu_count(run: Callable = subprocess.run, which: Callable = shutil.which) -> int:
    """How many devices `nvidia-smi -L` lists (0 without the tool or a device)."""
    tool = which("nvidia-smi")
    if tool is None:
        return 0
    try:
        result = run([tool, "-L"], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return 0
    if result.returncode != 0:
        return 0
    return sum(1 for line in result.stdout.splitlines() if line.startswith("GPU "))


def memory_gb(meminfo: str = "/proc/meminfo") -> Optional[float]:
    try:
        with open(meminfo) as f:
            for line in f:
                if line.startswith("MemTotal:"):
                    return int(line.split()[1]) / (1024 * 1024)
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    except (ValueError, OSError, AttributeError):
        return None


def detected_tags(high_mem_gb: float, gpus: Optional[int] = None,
                  memory: Optional[float] = None) -> set[str]:
    tags = set()
    if (gpu_count() if gpus is None else gpus) > 0:
        tags.add("GPU")
    memory = memory_gb() if memory is None else memory
    if memory is not None and memory >= high_mem_gb:
        tags.add("HIGH_MEM")
    return tags
