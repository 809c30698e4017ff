"""Reloading the master's config file: `kill -HUP <master pid>` or `titan reload`.

The file the master was started with is read again, with the same command-line options
over it (titan/master/tap.py), and checked whole -- YAML, keys, values, plugin names --
before anything changes: a config that fails is refused, the one in use stays, and the
error (file:line and key) is logged and told to `titan reload`.  Then, in one turn of the
reactor, the settings that can change live are applied; the others are reported as needing
a restart (the master keeps running with their old values, and says so in `titan status`).
No connection is dropped and no job is touched.

What applies live (LIVE below): the routing chain, the autoscaler, the cluster token, the
retention bounds, the heartbeat timeout, retries' backoff, limits read per connection, and
the web settings but its listener.  A new cluster token is needed by every hello, REGISTER
and HTTP request from then on; connections open already stay open; jobs running keep their
own tokens until their attempt ends; browser sessions opened with a token that is gone end
(docs/operations.md).
"""
from __future__ import annotations

from typing import Any, Callable, Optional, Protocol

import attrs
from twisted.logger import Logger

from titan.auth import load_or_create_token
from titan.config import Config, ConfigError
from titan.errors import RemoteError, TitanError
from titan.interfaces import IAutoscalerFactory, IPersistenceFactory, IRouterFactory
from titan.plugin_registry import find

# Keys applied without a restart.  The master.* limits among them are read when a
# connection opens (titan/master/server.py): they hold for connections opened after.
LIVE = frozenset({
    "token", "router", "log_jobs",
    "master.keep_finished", "master.forget_after", "master.keep_log_bytes",
    "master.log_max_bytes", "master.heartbeat_timeout", "master.retry_backoff_base",
    "master.retry_backoff_cap", "master.max_jobs_per_run", "master.hello_timeout",
    "master.max_frame_bytes", "master.preauth_frame_bytes", "master.text_frame_bytes",
    "master.preauth_buffer_bytes", "master.send_stall_timeout",
    "master.max_send_buffer_bytes",
    "autoscaler.name", "autoscaler.min_workers", "autoscaler.max_workers",
    "autoscaler.window", "autoscaler.idle_timeout", "autoscaler.slots",
    "autoscaler.interval", "autoscaler.tags",
    "web.viewer_tokens", "web.session_ttl", "web.max_body_bytes", "web.events_window",
    "web.events_max_unread_bytes",
})
# Sections the master does not read (workers and `titan mcp` do, at their start) -- but for
# the two worker keys its autoscaler reads when it starts.
ELSEWHERE = ("worker.", "mcp.", "llm.")
MASTER_READS = frozenset({"worker.detect_tags", "worker.high_mem_gb"})
# The scheduler's settings, from the master's.
_SCHEDULER = {"master.heartbeat_timeout": "heartbeat_timeout",
              "master.retry_backoff_base": "backoff_base",
              "master.retry_backoff_cap": "backoff_cap",
              "master.max_jobs_per_run": "max_jobs_per_run",
              "master.keep_finished": "keep_finished",
              "master.forget_after": "forget_grace",
              "master.keep_log_bytes": "keep_log_bytes"}


def flatten(config: Config) -> dict[str, Any]:
    """Every setting of a config by its dotted key (`router`, `master.listen`, ...)."""
    out: dict[str, Any] = {}
    for field in attrs.fields(Config):
        if field.name in ("source", "lines"):
            continue
        value = getattr(config, field.name)
        if attrs.has(type(value)):
            for key, inner in attrs.asdict(value, recurse=False).items():
                out[f"{field.name}.{key}"] = inner
        else:
            out[field.name] = value
    return out


@attrs.frozen
class Plan:
    """What a reload does: `config` is what the master runs with after it (the new values
    of the keys in `applied`, the old ones of the rest); `restart` lists the keys that
    changed but apply only at the next start, `elsewhere` those the master does not read."""
    config: Config
    applied: tuple[str, ...] = ()
    restart: tuple[str, ...] = ()
    elsewhere: tuple[str, ...] = ()

    @property
    def changed(self) -> bool:
        return bool(self.applied or self.restart or self.elsewhere)


def plan(old: Config, new: Config) -> Plan:
    """Compare the config in use with the one just read (pure: nothing is applied)."""
    before, after = flatten(old), flatten(new)
    changed = [key for key in after if after[key] != before.get(key)]
    applied = tuple(k for k in changed if k in LIVE)
    elsewhere = tuple(k for k in changed
                      if k.startswith(ELSEWHERE) and k not in MASTER_READS)
    restart = tuple(k for k in changed if k not in applied and k not in elsewhere)
    # The running config: the old one with the live keys replaced.
    values = {k: after[k] if k in applied else before[k] for k in after}
    running = attrs.evolve(_build(old, values), source=new.source, lines=new.lines)
    return Plan(running, applied, restart, elsewhere)


def _build(template: Config, values: dict[str, Any]) -> Config:
    top: dict[str, Any] = {}
    sections: dict[str, dict] = {}
    for key, value in values.items():
        section, _, name = key.partition(".")
        if name:
            sections.setdefault(section, {})[name] = value
        else:
            top[key] = value
    for section, fields in sections.items():
        top[section] = attrs.evolve(getattr(template, section), **fields)
    return attrs.evolve(template, **top)


@attrs.frozen
class Built:
    """The plugins a new config names, built before anything is applied."""
    routers: list
    autoscaler: Any


def build(config: Config) -> Built:
    """The new config's routers and autoscaler, and a check of its persistence backend
    (applied at the next start, but a name that would stop that start is refused now).
    ConfigError naming the file, line and key if one is unknown."""
    routers = []
    for name in config.router:
        factory = _find(config, "router", IRouterFactory, name, "router")
        routers.append(_built(config, "router", name, lambda: factory.build({})))
    _find(config, "persistence.backend", IPersistenceFactory, config.persistence.backend,
          "persistence backend")
    name = config.autoscaler.name
    factory = _find(config, "autoscaler.name", IAutoscalerFactory, name, "autoscaler")
    return Built(routers, _built(config, "autoscaler.name", name,
                                 lambda: factory.build(attrs.asdict(config.autoscaler))))


def _built(config: Config, key: str, name: str, make: Callable[[], Any]) -> Any:
    """A plugin built, or ConfigError: a third party's may refuse its options."""
    try:
        return make()
    except Exception as e:
        raise ConfigError(f"{config.where(key)}: {key}: {name} could not be built: "
                          f"{e}") from None


def _find(config: Config, key: str, interface, name: str, kind: str):
    try:
        return find(interface, name, kind)
    except TitanError as e:
        raise ConfigError(f"{config.where(key)}: {key}: {e}") from None


class Master(Protocol):
    """What a reload changes of the master service (titan/master/service.py)."""
    config: Config
    token: str
    data_dir: str
    scheduler: Any
    autoscaler: Any
    web: Any
    logs: Any
    api: Any
    config_loader: Optional[Callable[[], Config]]

    def now(self) -> float: ...


class Reloader:
    log = Logger(namespace="titan.master")

    def __init__(self, master: Master) -> None:
        self.master = master
        self.reloads = 0  # applied since the start
        self.last: Optional[dict] = None  # the last attempt: at, via, ok, error / applied
        self.restart: tuple[str, ...] = ()  # changed in the file, waiting for a restart

    def reload(self, via: str) -> dict:
        """Read the config file again and apply it; RemoteError `bad_config` (the one in
        use stays) if it cannot be read, parsed, or names an unknown plugin."""
        master = self.master
        source = master.config.source
        try:
            if master.config_loader is None:
                raise ConfigError("this master was not started with options to read its "
                                  "config from again (twistd titan-master)")
            new = master.config_loader()
            built = build(new)
            token = new.token or load_or_create_token(master.data_dir)
        except (ConfigError, ValueError, OSError) as e:
            error = str(e)
            self.last = {"at": master.now(), "via": via, "ok": False, "error": error}
            self.log.error("config reload ({via}) refused, the config in use stays: {error}",
                           via=via, error=error, source=source)
            raise RemoteError("bad_config", f"config not reloaded (the one in use stays): "
                                            f"{error}") from None
        old = attrs.evolve(master.config, token=master.token)
        p = plan(old, attrs.evolve(new, token=token))
        self._apply(p, built)
        self.reloads += 1
        self.restart = p.restart
        result = {"source": new.source, "applied": list(p.applied),
                  "restart": list(p.restart), "elsewhere": list(p.elsewhere)}
        self.last = {"at": master.now(), "via": via, "ok": True, **result}
        self.log.info("config reloaded from {source} ({via}): {summary}", source=new.source,
                      via=via, summary=summary(p), applied=list(p.applied),
                      restart=list(p.restart), elsewhere=list(p.elsewhere))
        return result

    def _apply(self, p: Plan, built: Built) -> None:
        """Swap in what the plan applies.  Nothing here may fail half-way: the plugins are
        built and every value checked before."""
        master, applied = self.master, set(p.applied)
        old_token = master.token
        master.config = p.config
        settings = {name: getattr(p.config.master, key.split(".", 1)[1])
                    for key, name in _SCHEDULER.items() if key in applied}
        if "router" in applied:
            settings["routers"] = built.routers
        if settings:
            master.scheduler.reconfigure(**settings)
        if "master.log_max_bytes" in applied and master.logs is not None:
            master.logs.max_bytes = p.config.master.log_max_bytes
        if any(k.startswith("autoscaler.") for k in applied):
            master.autoscaler.reconfigure(built.autoscaler)
        token_changed = "token" in applied
        if token_changed:
            master.token = p.config.token
            master.api.token_changed(old_token)
        if master.web is not None and (token_changed or any(
                k.startswith("web.") for k in applied)):
            ended = master.web.reconfigure(p.config.web, token_changed)
            for role, count in ended.items():
                if count:
                    self.log.info("{count} {role} browser sessions ended: the token they "
                                  "were opened with is gone", count=count, role=role)

    def status(self) -> dict:
        """For `titan status`: the file, how many reloads, the last one, what waits for a
        restart."""
        return {"source": self.master.config.source, "reloads": self.reloads,
                "last": self.last, "restart": list(self.restart)}


def summary(p: Plan) -> str:
    """One line for a person: what changed and where it stands."""
    if not p.changed:
        return "nothing changed"
    parts = []
    if p.applied:
        parts.append(f"applied {', '.join(p.applied)}")
    if p.restart:
        parts.append(f"needs a restart: {', '.join(p.restart)}")
    if p.elsewhere:
        parts.append(f"not read by the master (workers and titan mcp read them at their "
                     f"start): {', '.join(p.elsewhere)}")
    return "; ".join(parts)


def reload_on_hangup(master: Any, reactor: Any = None) -> None:
    """SIGHUP reloads the config (a daemon's custom), in the reactor's loop: the handler
    only hands it over (see titan/tap.py, stop_signals_in_the_loop)."""
    import signal
    if reactor is None:
        from twisted.internet import reactor

    def reload() -> None:
        try:
            master.reload_config("SIGHUP")
        except RemoteError:
            pass  # refused: logged with its reason

    signal.signal(signal.SIGHUP, lambda signum, frame: reactor.callFromThread(reload))
