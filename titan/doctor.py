"""`titan doctor`: checks this machine and the cluster, and says what to fix.

Each check is ok, warn or fail, with what it saw and, unless ok, what to do.  The machine:
Python, Twisted and Titan's pinned dependencies, the data dirs and the token file
(0700/0600), the ports the config names, cgroups for the worker's jobs.  The cluster, when
its master answers: the token, the master's version, the store through the master, the
web listener, the workers, and each worker's clock against the master's (from its
heartbeats' `time`).  The exit status is 1 if a check failed.
"""
from __future__ import annotations

import errno
import json
import os
import socket
import stat
import sys
from typing import Any, Callable, Iterable, Optional

import attrs

from titan import __version__
from titan.errors import RemoteError, TitanError

OK, WARN, FAIL = "ok", "warn", "fail"
DISTRIBUTION = "titan-orchestrator"
SKEW_WARN = 1.0  # seconds between a worker's clock and the master's
SKEW_FAIL = 60.0
START_MASTER = ("start it: `twistd -n titan-master --config FILE` (or as a service: "
                "docs/operations.md), or `titan up` for a cluster on this machine")


@attrs.frozen
class Check:
    scope: str  # "machine" or "cluster"
    name: str
    status: str
    detail: str
    fix: str = ""


# -- the machine -------------------------------------------------------------------------

def check_python(version: tuple = tuple(sys.version_info[:3]),
                 needs: tuple = (3, 10)) -> Check:
    said = ".".join(map(str, version))
    if tuple(version[:2]) >= needs:
        return Check("machine", "python", OK, f"{said} ({sys.executable})")
    return Check("machine", "python", FAIL, f"{said}: titan needs {'.'.join(map(str, needs))} "
                 "or later", "install a newer Python and titan into it")


def pinned(requires: Iterable[str]) -> dict[str, str]:
    """name -> version of the `name==version` requirements (markers and extras left out)."""
    out = {}
    for req in requires:
        if ";" in req:
            continue  # an extra's (test, bench) or a platform's
        name, sep, version = req.partition("==")
        if sep:
            out[name.strip().lower()] = version.strip()
    return out


def check_packages(requires: Iterable[str], installed: Callable[[str], Optional[str]]
                   ) -> list[Check]:
    """Twisted on a line of its own, then the other pinned dependencies."""
    pins = pinned(requires)
    out, wrong = [], []
    for name, wanted in sorted(pins.items()):
        have = installed(name)
        if have != wanted:
            wrong.append(f"{name} {have or 'missing'} (pinned {wanted})")
        if name == "twisted":
            out.append(Check("machine", "twisted", OK if have == wanted else WARN,
                             f"{have or 'missing'}" + ("" if have == wanted
                                                       else f", titan pins {wanted}"),
                             "" if have == wanted else _reinstall()))
    others = [w for w in wrong if not w.startswith("twisted ")]
    out.append(Check("machine", "titan", OK if not others else WARN,
                     f"{__version__}" + (f"; not as pinned: {', '.join(others)}" if others
                                         else f", {len(pins)} pinned dependencies as pinned"),
                     _reinstall() if others else ""))
    return out


def _reinstall() -> str:
    return "reinstall titan in its own virtualenv: pip install -e . (or make install)"


def check_data_dir(path: str, name: str, token: bool = False) -> list[Check]:
    """The dir is 0700 and, for the master's, its token file 0600 (docs/security.md); one
    not made yet is fine: the process makes it at its first start."""
    path = os.path.abspath(os.path.expanduser(path))
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return [Check("machine", name, OK, f"{path} not made yet (made at the first start)")]
    except OSError as e:
        return [Check("machine", name, FAIL, f"{path}: {e.strerror or e}",
                      "run doctor as the user the process runs as")]
    if not stat.S_ISDIR(st.st_mode):
        return [Check("machine", name, FAIL, f"{path} is not a directory",
                      f"move it away, or name another dir (data_dir in the config)")]
    out = []
    mode = stat.S_IMODE(st.st_mode)
    if mode & 0o077:
        out.append(Check("machine", name, WARN, f"{path} is {mode:04o}: other users may read it",
                         f"chmod 700 {path}"))
    elif not os.access(path, os.W_OK | os.X_OK):
        out.append(Check("machine", name, FAIL, f"{path}: not writable by this user",
                         "run as the dir's owner, or chown it"))
    else:
        out.append(Check("machine", name, OK, f"{path} (0700)"))
    if token:
        out.append(check_token_file(os.path.join(path, "token")))
    return out


def check_token_file(path: str) -> Check:
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return Check("machine", "token file", OK, f"{path} not made yet (the master makes one "
                     "at its first start unless the config or TITAN_TOKEN gives it)")
    except OSError as e:
        return Check("machine", "token file", FAIL, f"{path}: {e.strerror or e}",
                     "run doctor as the master's user")
    mode = stat.S_IMODE(st.st_mode)
    if mode & 0o077:
        return Check("machine", "token file", FAIL, f"{path} is {mode:04o}: other users may "
                     "read the cluster token", f"chmod 600 {path}, then change the token "
                     "(it may have been read): docs/operations.md")
    return Check("machine", "token file", OK, f"{path} (0600)")


def parse_endpoint(description: str) -> Optional[tuple[str, int]]:
    """(interface, port) of a `tcp:PORT[:interface=HOST]` server endpoint (ssl: too), or
    None for other kinds."""
    kind, _, rest = description.partition(":")
    if kind not in ("tcp", "ssl"):
        return None
    port, interface = None, ""
    for part in rest.split(":"):
        key, sep, value = part.partition("=")
        if not sep and port is None:
            port = key
        elif key == "port":
            port = value
        elif key == "interface":
            interface = value
    if port is None or not port.isdigit():
        return None
    return interface, int(port)


def port_in_use(interface: str, port: int) -> Optional[str]:
    """Why `port` cannot be listened on (None: it can), as a listener would try it."""
    family = socket.AF_INET6 if ":" in interface else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as Twisted's listeners
        try:
            s.bind((interface or ("::" if family == socket.AF_INET6 else "0.0.0.0"), port))
        except OSError as e:
            if e.errno == errno.EADDRINUSE:
                return "in use"
            return e.strerror or str(e)
    return None


def check_port(name: str, key: str, description: str, ours: bool,
               in_use: Callable[[str, int], Optional[str]] = port_in_use) -> Check:
    """A listener's port: free, or held by the master that answered (`ours`)."""
    parsed = parse_endpoint(description)
    if parsed is None:
        return Check("machine", name, OK, f"{description}: not a TCP port (not checked)")
    interface, port = parsed
    where = f"{interface or '*'}:{port}"
    if port == 0:
        return Check("machine", name, OK, f"{where}: any free port ({key})")
    problem = in_use(interface, port)
    if problem is None:
        return Check("machine", name, OK, f"{where} free")
    if ours:
        return Check("machine", name, OK, f"{where} in use by the master")
    return Check("machine", name, FAIL, f"{where}: {problem}, and not by a master that "
                 "answers", f"stop what holds it (ss -ltnp 'sport = :{port}'), or set "
                 f"{key} to another port")


def check_cgroups(home: Optional[Callable[[], tuple]] = None,
                  probe: Optional[Callable[[str], bool]] = None) -> Check:
    """Whether a worker here can hold each job in a cgroup of its own (worker.contain:
    auto picks it), else it tracks a job's processes (docs/security.md)."""
    if not sys.platform.startswith("linux"):
        return Check("machine", "cgroups", WARN, f"not Linux ({sys.platform}): a worker "
                     "tracks its jobs' processes", "")
    if home is None:
        from titan.worker.executor import _cgroup2_home as home
    try:
        _, path = home()
    except OSError as e:
        return Check("machine", "cgroups", WARN, f"no cgroup v2 for jobs ({e}): a worker "
                     "tracks its jobs' processes instead",
                     "run the worker under systemd with Delegate=yes (docs/operations.md)")
    try:
        killable = (probe or probe_cgroup)(path)
    except OSError as e:
        return Check("machine", "cgroups", WARN, f"cannot make a cgroup under {path} "
                     f"({e.strerror or e}): a worker tracks its jobs' processes instead",
                     "run the worker under systemd with Delegate=yes (docs/operations.md)")
    if not killable:
        return Check("machine", "cgroups", WARN, "cgroup v2 without cgroup.kill (Linux before "
                     "5.14): a worker tracks its jobs' processes instead", "")
    return Check("machine", "cgroups", OK, f"a worker can hold each job in a cgroup under "
                 f"{path}")


def probe_cgroup(path: str) -> bool:
    """Make and remove a cgroup under `path` (as a worker makes its jobs'): whether it has
    cgroup.kill.  OSError if it cannot be made."""
    probe = os.path.join(path, f"titan-doctor-{os.getpid()}")
    os.mkdir(probe)
    try:
        return os.path.exists(os.path.join(probe, "cgroup.kill"))
    finally:
        os.rmdir(probe)


# -- the cluster ---------------------------------------------------------------------------

def check_cluster(client: Any, where: str, store_configured: bool,
                  web: Optional[Callable[[dict], Check]] = None) -> list[Check]:
    """The checks that ask the master (`client`: a titan.sdk Client, not yet connected).
    The first one says whether it answered; the rest need it."""
    from titan.sdk.client import ConnectError
    try:
        stats = client.stats()
    except ConnectError as e:
        said = e.detail if where in e.detail else f"{where}: {e.detail}"
        return [Check("cluster", "master", FAIL, said, START_MASTER)]
    except TitanError as e:
        text = str(e)
        if "token" in text:
            return [Check("cluster", "master", FAIL, text, "use the master's token: "
                          "TITAN_TOKEN, --token-file, or the token file in its data dir")]
        return [Check("cluster", "master", FAIL, text, START_MASTER)]
    version = (client.hello or {}).get("version")
    out = [Check("cluster", "master", OK, f"{where} answers; token accepted"),
           Check("cluster", "version", OK if version == __version__ else WARN,
                 f"master {version}, this titan {__version__}",
                 "" if version == __version__ else "run the same titan everywhere")]
    for warning in stats.get("warnings") or ():
        out.append(Check("cluster", "master says", WARN, warning, ""))
    config = stats.get("config") or {}
    if config.get("restart"):
        out.append(Check("cluster", "config", WARN, f"{config.get('source')}: changed, "
                         f"applied at the next start: {', '.join(config['restart'])}",
                         "restart the master when convenient"))
    last = config.get("last")
    if last and not last.get("ok"):
        out.append(Check("cluster", "config", WARN, f"the last reload was refused: "
                         f"{last.get('error')}", "fix the file, then titan reload"))
    out.append(_store(client, store_configured))
    if web is not None:
        out.append(web(stats))
    out.extend(check_workers(client.workers()))
    return out


def _store(client: Any, configured: bool) -> Check:
    try:
        client.store_get("titan:doctor")
    except RemoteError as e:
        if e.code == "no_store":
            return Check("cluster", "store", WARN if configured else OK,
                         "the master has no store" + (", but this config names one"
                                                      if configured else " (none configured)"),
                         "restart the master with this config" if configured else "")
        return Check("cluster", "store", FAIL, f"through the master: {e.message}",
                     "start the store (twistd titan-store, or redis-server), or fix store.url "
                     "and store.password in the master's config")
    return Check("cluster", "store", OK, "reachable through the master")


def check_workers(workers: list) -> list[Check]:
    out = []
    alive = [w for w in workers if w.get("state") == "ALIVE"]
    gone = [w for w in workers if w.get("state") in ("DISCONNECTED", "DEAD")]
    if not alive:
        out.append(Check("cluster", "workers", WARN, "no worker is connected: jobs wait",
                         "start one: `twistd -n titan-worker --master HOST:PORT` with the "
                         "cluster token (TITAN_TOKEN or --token-file)"))
    else:
        slots = sum(w.get("slots") or 0 for w in alive)
        out.append(Check("cluster", "workers", OK, f"{len(alive)} connected, {slots} slots"))
    if gone:
        names = ", ".join(f"{w['name']} ({w['state']})" for w in gone)
        out.append(Check("cluster", "workers lost", WARN, names,
                         "see the worker's log; it dials again by itself while it runs"))
    for w in alive:
        out.append(check_skew(w))
    return out


def check_skew(worker: dict) -> Check:
    name = f"clock {worker.get('name')}"
    offset = worker.get("clock_offset")
    if offset is None:
        return Check("cluster", name, WARN, "the worker does not report its clock (a titan "
                     "older than the master's?)", "upgrade the worker")
    ahead = "ahead of" if offset >= 0 else "behind"
    text = f"{abs(offset):.3f}s {ahead} the master's"
    if abs(offset) <= SKEW_WARN:
        return Check("cluster", name, OK, text)
    return Check("cluster", name, FAIL if abs(offset) > SKEW_FAIL else WARN, text,
                 "keep the clocks in sync (timedatectl set-ntp true, chrony): times in logs "
                 "and job records come from both")


def check_web(base_url: str, token: Optional[str], timeout: float = 5.0) -> Check:
    """The web API answers, and takes the token (GET /api/v1/cluster)."""
    import urllib.error
    import urllib.request
    request = urllib.request.Request(base_url + "/api/v1/cluster",
                                     headers={"Authorization": f"Bearer {token or ''}"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as answer:
            answer.read()
    except urllib.error.HTTPError as e:
        if e.code == 401:
            return Check("cluster", "web", FAIL, f"{base_url}: the token is refused",
                         "use the master's token")
        return Check("cluster", "web", FAIL, f"{base_url}: HTTP {e.code}", "see the master's log")
    except (urllib.error.URLError, OSError) as e:
        why = getattr(e, "reason", e)
        return Check("cluster", "web", FAIL, f"{base_url}: {why}",
                     "check web.enabled and web.listen in the master's config")
    return Check("cluster", "web", OK, f"{base_url} answers")


# -- the command -------------------------------------------------------------------------

def _installed(name: str) -> Optional[str]:
    from importlib import metadata
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def _requires() -> list[str]:
    from importlib import metadata
    try:
        return metadata.requires(DISTRIBUTION) or []
    except metadata.PackageNotFoundError:
        return []


def _read_port(data_dir: str, name: str) -> Optional[int]:
    try:
        with open(os.path.join(os.path.abspath(os.path.expanduser(data_dir)), name)) as f:
            return int(f.read().strip())
    except (OSError, ValueError):
        return None


def gather(args) -> list[Check]:
    from titan.config import ConfigError, load_config
    from titan.sdk.client import Client
    from titan.sdk.connection import cluster_token
    from titan.auth import read_token
    checks = [check_python(), *check_packages(_requires(), _installed)]
    try:
        config = load_config(getattr(args, "config", None))
    except ConfigError as e:
        checks.append(Check("machine", "config", FAIL, str(e), "fix the file (titan doctor "
                            "--config FILE reads it as the master would)"))
        from titan.config import Config
        config = Config()
    else:
        if config.source != "<defaults>":
            checks.append(Check("machine", "config", OK, f"{config.source} reads"))
    mc, wc = config.master, config.worker
    home = os.environ.get("TITAN_DATA_DIR")
    if home and getattr(args, "config", None) is None:  # `titan up --data-dir DIR`'s
        mc = attrs.evolve(mc, data_dir=os.path.join(home, "master"))
        wc = attrs.evolve(wc, data_dir=os.path.join(home, "worker-1"))
    checks += check_data_dir(mc.data_dir, "master data dir", token=True)
    checks += check_data_dir(wc.data_dir, "worker data dir")
    checks.append(check_cgroups())
    # The master: --master or TITAN_HOST/TITAN_PORT, else the port a master here wrote in
    # its data dir, else the config's listener.
    master = args.master
    listen = parse_endpoint(mc.listen)
    if not master and not os.environ.get("TITAN_HOST") and not os.environ.get("TITAN_PORT"):
        port = _read_port(mc.data_dir, "master.port") or (listen[1] if listen else None)
        if port:
            master = f"{(listen[0] if listen else '') or '127.0.0.1'}:{port}"
    token = cluster_token(args.token) if (args.token or os.environ.get("TITAN_TOKEN")) \
        else config.token or read_token(mc.data_dir) or cluster_token(None)
    client = Client(master=master, token=token, timeout=10.0, name="titan-doctor")
    where = f"{client.host}:{client.port}"

    def web(stats: dict) -> Check:
        port = stats.get("web_port")  # the master says where (None: off)
        if port is None and "web_port" not in stats:  # an older master: the config's
            parsed = parse_endpoint(config.web.listen)
            port = _read_port(mc.data_dir, "web.port") or (parsed[1] if parsed else None)
        if port is None:
            return Check("cluster", "web", OK, "off (web.enabled: false)")
        return check_web(f"http://{client.host}:{port}", token)

    try:
        cluster = check_cluster(client, where, bool(config.store.url), web)
    finally:
        client.close()
    answered = cluster[0].status == OK
    local = client.host in ("127.0.0.1", "localhost", "::1")
    checks.append(check_port("master port", "master.listen", mc.listen,
                             answered and local and (listen or ("", 0))[1] == client.port))
    if config.web.enabled:
        web_port = _read_port(mc.data_dir, "web.port")
        parsed = parse_endpoint(config.web.listen)
        checks.append(check_port("web port", "web.listen", config.web.listen,
                                 answered and local and parsed is not None
                                 and web_port == parsed[1]))
    return checks + cluster


def report(checks: list[Check]) -> str:
    width = max(len(c.name) for c in checks) + 2
    lines, scope = [], None
    for c in checks:
        if c.scope != scope:
            scope = c.scope
            lines.append("this machine" if scope == "machine" else "the cluster")
        lines.append(f"  {c.status:<5} {c.name:<{width}}{c.detail}")
        if c.fix and c.status != OK:
            lines.append(f"  {'':<5} {'':<{width}}→ {c.fix}")
    failed = sum(c.status == FAIL for c in checks)
    warned = sum(c.status == WARN for c in checks)
    lines.append(f"{failed} failed, {warned} warnings, {len(checks) - failed - warned} ok")
    return "\n".join(lines)


def run_doctor(args) -> int:
    checks = gather(args)
    failed = any(c.status == FAIL for c in checks)
    if getattr(args, "json", False):
        print(json.dumps({"ok": not failed, "checks": [attrs.asdict(c) for c in checks]},
                         indent=2))
    else:
        print(report(checks))
    return 1 if failed else 0
