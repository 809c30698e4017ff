"""What a worker's heartbeat tells the master of its machine and its own process, for the
master's /metrics (docs/metrics.md): the worker opens no port of its own.

The process's figures are read by prometheus_client's ProcessCollector (from /proc on
Linux; elsewhere they are simply not sent), the load average and CPU count by the
standard library.  Every field is optional on the wire (docs/protocol.md, HEARTBEAT).
"""
from __future__ import annotations

import os

from prometheus_client.process_collector import ProcessCollector

# The collector's samples a heartbeat carries, and their names there.
_SAMPLES = {"process_resident_memory_bytes": "rss_bytes",
            "process_cpu_seconds_total": "cpu_seconds",
            "process_open_fds": "open_fds"}
_PROCESS = ProcessCollector(registry=None)  # this process; registered nowhere


def heartbeat_figures() -> dict[str, float]:
    """load1, cpus, rss_bytes, cpu_seconds, open_fds: those this platform tells."""
    figures: dict[str, float] = {}
    try:
        figures["load1"] = round(os.getloadavg()[0], 3)
    except OSError:  # not available here
        pass
    cpus = os.cpu_count()
    if cpus:
        figures["cpus"] = cpus
    for family in _PROCESS.collect():
        for sample in family.samples:
            key = _SAMPLES.get(sample.name)
            if key is not None:
                figures[key] = sample.value
    return figures
