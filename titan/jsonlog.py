"""Logs as JSON lines: one JSON object per line, for log shippers and `jq`.

    twistd --logger titan.jsonlog.json_logger [--logfile FILE] titan-master ...
    twist --log-format json titan-master ...
    log_format: json            (in the config file: the same, without the option)

Each line is `{"time", "level", "namespace", "message", ...}` and then the event's own
fields as top-level keys: Titan logs its events with `job_id`, `run_id`, `attempt`,
`worker` (a worker's name), `worker_id`, `state`, ... (docs/operations.md).  A field whose
name is one of the four above gets a `_` after it; values JSON cannot say are written as
text.  A logged failure adds `error` (its message) and `traceback`.

Twisted's own `jsonFileLogObserver` (what `twist --log-format json` gives other plugins)
starts each record with an ASCII record separator (0x1E) and writes Twisted's internal keys
(`log_format`, `log_level` as an object, ...); a titan plugin swaps it for this observer, so
that both ways give the same lines.
"""
from __future__ import annotations

import json
import sys
from datetime import datetime, timezone
from typing import IO, Any, Optional

from twisted.logger import FileLogObserver, ILogObserver, LogEvent, formatEvent

BASE_KEYS = ("time", "level", "namespace", "message")
# Keys of events from twisted.python.log (the legacy API), said by `message` already.
_LEGACY = frozenset({"message", "format", "isError", "system", "time", "why", "failure"})
FACTORY = "titan.jsonlog.json_logger"  # what `log_format: json` names to twistd

# Where json_logger() writes: twistd's --logfile, as a titan plugin's options saw it
# (twistd ignores --logfile once --logger is given, and calls the factory with nothing).
_destination: dict[str, Any] = {"logfile": None, "nodaemon": True}


def event_as_dict(event: LogEvent) -> dict:
    """One event as the JSON object a line holds."""
    level = event.get("log_level")
    out: dict[str, Any] = {
        "time": _iso(event.get("log_time")),
        "level": getattr(level, "name", None) or ("error" if event.get("isError") else "info"),
        "namespace": event.get("log_namespace") or event.get("system") or "-",
        "message": formatEvent(event),
    }
    failure = event.get("log_failure")
    # twisted.python.log's events (and new ones a legacy observer saw first) carry these.
    legacy = "isError" in event and isinstance(event.get("message"), tuple)
    for key, value in event.items():
        if key.startswith("log_") or legacy and key in _LEGACY:
            continue
        out[f"{key}_" if key in BASE_KEYS else key] = value
    if failure is not None:
        out["error"] = failure.getErrorMessage()
        out["traceback"] = failure.getTraceback()
    return out


def event_as_line(event: LogEvent) -> str:
    return json.dumps(event_as_dict(event), default=str, ensure_ascii=False,
                      separators=(",", ":")) + "\n"


def _iso(when: Optional[float]) -> Optional[str]:
    if when is None:
        return None
    stamp = datetime.fromtimestamp(when, timezone.utc)
    return stamp.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def json_line_observer(out: IO[Any]) -> FileLogObserver:
    """An observer writing each event to `out` as one JSON line (what `twist` calls with
    its --log-file)."""
    return FileLogObserver(out, event_as_line)


def json_logger() -> ILogObserver:
    """twistd's --logger factory: JSON lines to --logfile (rotated as twistd's own log
    is), or to stdout when there is none and the process stays in the foreground."""
    path = _destination["logfile"]
    if path == "-" or (not path and _destination["nodaemon"]):
        return json_line_observer(sys.stdout)
    from twisted.python.logfile import LogFile
    return json_line_observer(LogFile.fromFullPath(path or "twistd.log"))


def choose(options: Any, log_format: str) -> None:
    """Called by a titan plugin's options (titan/tap.py) with the config's `log_format`:
    note twistd's --logfile for json_logger, and make the twistd or twist options around
    the plugin write JSON lines when the config or the command line asks for JSON."""
    parent = getattr(options, "parent", None)
    if parent is None:
        return
    if "logFile" in parent:  # twist's options
        given = parent.get("logFormat")  # only --log-format has set it yet
        if given == "json" or (given is None and log_format == "json"):
            parent["fileLogObserverFactory"] = json_line_observer
            parent["logFormat"] = "json"
        return
    _destination["logfile"] = parent.get("logfile")
    _destination["nodaemon"] = bool(parent.get("nodaemon"))
    if log_format == "json" and not parent.get("logger"):
        parent["logger"] = FACTORY  # twistd's own postOptions imports it
