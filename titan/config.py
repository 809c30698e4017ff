"""The YAML config file, as frozen attrs.

Unknown keys and wrong types are errors that name the file, the line and the key.  Options
given on a command line override the file (`Config.override`).
"""
from __future__ import annotations

import os
from typing import Any, Optional

import attrs
import yaml

from titan.store.config import StoreConfig

DEFAULT_PORT = 9090
# What the reference's clients (its SDK, CLI and dashboard) send as text frames: everything
# the master serves that way (titan/master/legacy.py), and the most `text_frame_ops` allows.
TEXT_FRAME_OPS = ("SUBMIT_JOB", "SUBMIT_DAG", "STOP", "STATS", "STATS_JSON", "GET_LOGS",
                  "UPLOAD_ASSET", "FETCH_ASSET", "GET_JOB_STATUS", "CANCEL_JOB",
                  "DEPLOY_SCRIPT", "KV_SET", "KV_GET", "KV_SADD", "KV_SMEMBERS")
DEFAULT_HOME = os.path.join("~", ".titan")


class ConfigError(ValueError):
    pass


@attrs.frozen
class MasterConfig:
    listen: str = f"tcp:{DEFAULT_PORT}:interface=127.0.0.1"
    data_dir: str = os.path.join(DEFAULT_HOME, "master")
    heartbeat_interval: float = 2.0
    heartbeat_timeout: float = 10.0
    max_frame_bytes: int = 16 * 1024 * 1024
    retry_backoff_base: float = 1.0
    retry_backoff_cap: float = 60.0
    max_jobs_per_run: int = 10_000
    keep_finished: int = 10_000  # finished jobs remembered (oldest forgotten first)
    forget_after: float = 60.0  # ...but each for at least this many seconds after it ends
    # Job output: at most log_max_bytes kept per attempt (the rest is cut, with a line that
    # says so); past keep_log_bytes of output in all, the oldest finished jobs are forgotten
    # (logs and all) as past keep_finished.
    log_max_bytes: int = 50 * 1024 * 1024
    keep_log_bytes: int = 10 * 1024 * 1024 * 1024
    # off | on: the reference SDK's token-less text requests (docs/compat.md); when on, only
    # from processes of the master's own user on this machine, and only these operations.
    text_frames: str = "off"
    text_frame_ops: tuple[str, ...] = TEXT_FRAME_OPS
    # Limits against hostile clients (docs/security.md): before its hello a peer may send
    # frames of preauth_frame_bytes (text frames: text_frame_bytes, where they are served)
    # and must say it within hello_timeout seconds; connections in all, not yet
    # authenticated, and from one address not yet authenticated; room kept for workers.
    preauth_frame_bytes: int = 64 * 1024
    text_frame_bytes: int = 16 * 1024 * 1024
    preauth_buffer_bytes: int = 64 * 1024 * 1024
    hello_timeout: float = 10.0
    max_connections: int = 4096
    max_pending_connections: int = 256
    max_pending_per_host: int = 64
    worker_reserve: int = 256
    # A connection whose replies stay unread this long, or pile up past this, is closed.
    send_stall_timeout: float = 30.0
    max_send_buffer_bytes: int = 64 * 1024 * 1024


@attrs.frozen
class WorkerConfig:
    master: str = f"127.0.0.1:{DEFAULT_PORT}"
    name: Optional[str] = None
    tags: tuple[str, ...] = ()
    slots: int = 4
    data_dir: str = os.path.join(DEFAULT_HOME, "worker")
    log_batch_interval: float = 0.05
    kill_grace: float = 5.0
    detect_tags: bool = True
    high_mem_gb: float = 64.0
    port_range: str = "20000-29999"
    restart_backoff_base: float = 1.0
    restart_backoff_cap: float = 30.0
    crash_loop_restarts: int = 5
    crash_loop_window: float = 60.0
    health_interval: float = 2.0
    health_grace: float = 10.0
    # How a job's processes are held, so that all of them end with it (setsid included):
    # cgroup (one cgroup v2 per job), tracking (session, group, parent, environment mark),
    # auto (cgroup where the worker can make one).  docs/security.md
    contain: str = "auto"


@attrs.frozen
class PersistenceConfig:
    backend: str = "aof"
    fsync: str = "everysec"
    # ~300,000 events of a busy master: what a restart replays at most after its snapshot.
    compact_after_bytes: int = 12 * 1024 * 1024


DEFAULT_ROUTERS = ("capability", "affinity", "least-loaded")


@attrs.frozen
class AutoscalerConfig:
    name: str = "reactive"
    min_workers: int = 0
    max_workers: int = 4
    window: float = 5.0
    idle_timeout: float = 45.0
    slots: int = 2
    interval: float = 1.0
    # Tags a worker it starts may carry beyond the ones this machine is seen to have.
    tags: tuple[str, ...] = ()


@attrs.frozen
class WebConfig:
    """The HTTP face (titan/web/, docs/web.md): the dashboard's JSON API."""
    enabled: bool = True
    listen: str = "tcp:8080:interface=127.0.0.1"
    # Tokens that may read everything and change nothing (403 on every change).
    viewer_tokens: tuple[str, ...] = ()
    # A browser session (the cookie a login gives) ends this many seconds after the login.
    session_ttl: float = 12 * 3600.0
    # The largest request body accepted, in bytes (413 beyond).
    max_body_bytes: int = 1024 * 1024
    # The live events (titan/web/events.py's ChangeHub): seconds between two batches to a
    # subscriber, things kept for Last-Event-ID resumes, and the bytes a subscriber may
    # leave unread before it is dropped.
    events_window: float = 0.1
    events_ring: int = 10_000
    events_max_unread_bytes: int = 1 << 20


@attrs.frozen
class McpConfig:
    """`titan mcp` (titan/mcp/, docs/agents.md): what its tools may do."""
    # Whether MCP clients may approve or reject approval gates (decide_gate).  Off: a gate
    # an AI assistant can approve itself is no gate.  `titan mcp --allow-gate-decisions`
    # and TITAN_MCP_ALLOW_GATE_DECISIONS=1 turn it on whatever the file says.
    allow_gate_decisions: bool = False


@attrs.frozen
class LlmConfig:
    """The chat model jobs use (titan.agents, docs/agents.md).  A worker hands these to its
    jobs as TITAN_LLM_PROVIDER, _BASE_URL, _MODEL and _API_KEY (the key read from
    `api_key_file` at start); the worker's own environment wins over the file."""
    provider: Optional[str] = None
    base_url: Optional[str] = None
    model: Optional[str] = None
    api_key_file: Optional[str] = None


@attrs.frozen
class Config:
    token: Optional[str] = None
    router: tuple[str, ...] = DEFAULT_ROUTERS
    master: MasterConfig = MasterConfig()
    worker: WorkerConfig = WorkerConfig()
    persistence: PersistenceConfig = PersistenceConfig()
    autoscaler: AutoscalerConfig = AutoscalerConfig()
    store: StoreConfig = StoreConfig()
    web: WebConfig = WebConfig()
    mcp: McpConfig = McpConfig()
    llm: LlmConfig = LlmConfig()
    # text | json: what twistd and twist write to their log (titan/jsonlog.py); a
    # --logger or --log-format given on their command line wins.
    log_format: str = "text"
    # A line per job as it is dispatched and ends (master) and starts and exits (worker),
    # with job_id, run_id, attempt and worker.  Off: only failures, run ends and workers
    # coming and going (on, a job costs ~0.06 ms more of the master's CPU and ~0.12 ms of
    # its worker's: a fifth more for a flood of tiny jobs; docs/operations.md).
    log_jobs: bool = False
    source: str = "<defaults>"
    # The line each key was given on (`section.key`, `router`): what a reload's refusal
    # names (titan/master/reload.py).  Not part of the config's value.
    lines: dict = attrs.field(factory=dict, eq=False, repr=False)

    def where(self, key: str) -> str:
        """`FILE:LINE` of a key as given (the file alone for a default)."""
        line = self.lines.get(key)
        return f"{self.source}:{line}" if line else self.source

    def override(self, section: str, **values: Any) -> "Config":
        """This config with the given keys of one section replaced (None means: keep)."""
        values = {k: v for k, v in values.items() if v is not None}
        if section == "":
            return attrs.evolve(self, **values)
        return attrs.evolve(self, **{section: attrs.evolve(getattr(self, section), **values)})


_SECTIONS = {"master": MasterConfig, "worker": WorkerConfig, "persistence": PersistenceConfig,
             "autoscaler": AutoscalerConfig, "store": StoreConfig, "web": WebConfig,
             "mcp": McpConfig, "llm": LlmConfig}
_CHOICES = {"persistence.fsync": ("always", "everysec", "no"),
            "worker.contain": ("auto", "cgroup", "tracking"),
            "store.backend": ("titanstore", "redis"), "store.fsync": ("always", "everysec", "no"),
            "master.text_frames": ("off", "on"), "master.text_frame_ops": TEXT_FRAME_OPS,
            "log_format": ("text", "json")}
# Values that were valid once and mean something else now: the error says what to write.
_GONE = {("master.text_frames", "loopback"):
         "master.text_frames: loopback is gone: text frames are off unless `on`, which serves "
         "them to processes of the master's own user on this machine only (docs/compat.md)"}
_TOP = {"token": Optional[str], "router": tuple[str, ...], "log_format": str,
        "log_jobs": bool}
# Every number must be above 0, except these, which may be 0.
_MAY_BE_ZERO = frozenset({"worker.kill_grace", "autoscaler.min_workers",
                          "autoscaler.max_workers", "master.worker_reserve"})
# Numbers with bounds of their own (inclusive), beyond "above 0": a window near the SSE
# ping (15 s) would leave a live view stale for that long, and a drop limit under 64 KiB
# would drop the subscribers of a busy run (a batch of a few hundred jobs' states).
_BOUNDS = {"web.events_window": (0.01, 10.0),
           "web.events_max_unread_bytes": (64 * 1024, 1 << 30)}


def load_config(path: Optional[str]) -> Config:
    if path is None:
        return Config()
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except OSError as e:
        raise ConfigError(f"{path}: cannot read the config file: {e.strerror or e}") from None
    except UnicodeDecodeError as e:
        raise ConfigError(f"{path}: cannot read the config file: not UTF-8 text ({e.reason} "
                          f"at byte {e.start})") from None
    return parse_config(text, path)


def parse_config(text: str, path: str = "<config>") -> Config:
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark else path
        problem = getattr(e, "problem", None) or str(e)
        raise ConfigError(f"{where}: not valid YAML: {problem}") from None
    if root is None:
        return Config(source=path)
    if not isinstance(root, yaml.MappingNode):
        raise ConfigError(f"{path}:{root.start_mark.line + 1}: the config must be a mapping")
    top: dict[str, Any] = {}
    sections: dict[str, Any] = {}
    lines: dict[str, int] = {}
    for key_node, value_node in _pairs(root, path, ""):
        key = key_node.value
        if key in _SECTIONS:
            sections[key] = _section(_SECTIONS[key], value_node, path, key, lines)
        elif key in _TOP:
            top[key] = _convert(_TOP[key], value_node, path, key)
            _check_choice(key, top[key], value_node, path)
            lines[key] = value_node.start_mark.line + 1
        else:
            known = ", ".join(sorted([*_SECTIONS, *_TOP]))
            raise ConfigError(f"{path}:{key_node.start_mark.line + 1}: unknown key {key!r} "
                              f"(known: {known})")
    return Config(source=path, lines=lines, **top, **sections)


def _pairs(node: yaml.MappingNode, path: str, where: str):
    seen = set()
    for key_node, value_node in node.value:
        if not isinstance(key_node, yaml.ScalarNode):
            raise ConfigError(f"{path}:{key_node.start_mark.line + 1}: {where or 'top level'}: "
                              "keys must be plain names")
        if key_node.value in seen:
            raise ConfigError(f"{path}:{key_node.start_mark.line + 1}: "
                              f"{_dotted(where, key_node.value)} is given twice")
        seen.add(key_node.value)
        yield key_node, value_node


def _dotted(section: str, key: str) -> str:
    return f"{section}.{key}" if section else key


def _section(cls: type, node: yaml.Node, path: str, name: str,
             lines: Optional[dict] = None):
    if isinstance(node, yaml.ScalarNode) and node.tag.endswith(":null"):
        return cls()
    if not isinstance(node, yaml.MappingNode):
        raise ConfigError(f"{path}:{node.start_mark.line + 1}: {name}: expected a mapping of keys")
    fields = attrs.fields_dict(attrs.resolve_types(cls))
    values = {}
    for key_node, value_node in _pairs(node, path, name):
        key = key_node.value
        if key not in fields:
            known = ", ".join(fields)
            raise ConfigError(f"{path}:{key_node.start_mark.line + 1}: unknown key "
                              f"{name}.{key} (known in {name}: {known})")
        values[key] = _convert(fields[key].type, value_node, path, f"{name}.{key}")
        _check_choice(f"{name}.{key}", values[key], value_node, path)
        if lines is not None:
            lines[f"{name}.{key}"] = value_node.start_mark.line + 1
    return cls(**values)


def _check_choice(key: str, value: Any, node: yaml.Node, path: str) -> None:
    choices = _CHOICES.get(key)
    gone = _GONE.get((key, value))
    if gone:
        raise ConfigError(f"{path}:{node.start_mark.line + 1}: {gone}")
    many = isinstance(value, tuple)
    wrong = [v for v in (value if many else (value,)) if v not in choices] if choices else []
    if wrong:
        raise ConfigError(f"{path}:{node.start_mark.line + 1}: {key} must be "
                          f"{'among' if many else 'one of'} {', '.join(choices)}, "
                          f"not {wrong[0]!r}")


def _convert(kind: Any, node: yaml.Node, path: str, key: str) -> Any:
    line = node.start_mark.line + 1
    optional = kind in (Optional[str], Optional[float], Optional[int])
    value = _construct(node, path, key)
    if value is None:
        if optional:
            return None
        raise ConfigError(f"{path}:{line}: {key} must not be empty")
    base = {Optional[str]: str, Optional[float]: float, Optional[int]: int}.get(kind, kind)
    if base is str:
        # A string is what was written: `token: 0123` is "0123" (not 83), `name: yes` is "yes".
        if isinstance(node, yaml.ScalarNode) and isinstance(value, (str, int, float, bool)):
            return node.value
    elif base is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return _in_range(value, path, line, key)
    elif base is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return _in_range(float(value), path, line, key)
    elif base is bool:
        if isinstance(value, bool):
            return value
    elif base == tuple[str, ...]:
        if isinstance(node, yaml.ScalarNode) and isinstance(value, str):
            return tuple(t.strip() for t in node.value.split(",") if t.strip())
        if isinstance(node, yaml.SequenceNode) and all(
                isinstance(item, yaml.ScalarNode) and item.value.strip()
                and isinstance(v, (str, int, float, bool)) for item, v in zip(node.value, value)):
            return tuple(item.value.strip() for item in node.value)
    names = {str: "a string", int: "a whole number", float: "a number", bool: "true or false",
             tuple[str, ...]: "a list of strings"}
    raise ConfigError(f"{path}:{line}: {key} must be {names.get(base, base)}, not {value!r}")


def _in_range(value: float, path: str, line: int, key: str) -> float:
    if key in _MAY_BE_ZERO:
        if not value >= 0:
            raise ConfigError(f"{path}:{line}: {key} must be 0 or more, not {value!r}")
    elif not value > 0:
        raise ConfigError(f"{path}:{line}: {key} must be more than 0, not {value!r}")
    bounds = _BOUNDS.get(key)
    if bounds and not bounds[0] <= value <= bounds[1]:
        low, high = (int(b) if b == int(b) else b for b in bounds)
        raise ConfigError(f"{path}:{line}: {key} must be between {low} and {high}, "
                          f"not {value!r}")
    return value


def _construct(node: yaml.Node, path: str, key: str) -> Any:
    loader = yaml.SafeLoader("")
    try:
        return loader.construct_object(node, deep=True)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None) or node.start_mark
        problem = getattr(e, "problem", None) or str(e)
        raise ConfigError(f"{path}:{mark.line + 1}: {key}: {problem}") from None
    finally:
        loader.dispose()
