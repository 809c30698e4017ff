"""`titan up`: a master and N workers on 127.0.0.1, in the foreground; Ctrl-C stops them all."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from typing import Optional

from titan.auth import load_or_create_token
from titan.datadir import DataDirInUse, DataDirLock, holder
from titan.errors import TitanError
from titan.store.config import load_or_create_password
from titan.testing.processes import die_with_parent, read_port, tail


def _twist(plugin: str, args: list[str], log_file: str) -> list[str]:
    return [sys.executable, "-m", "twisted", "--log-format=text", f"--log-file={log_file}",
            plugin, *args]


def run_up(workers: int = 1, port: int = 9090, data_dir: str = "~/.titan",
           slots: int = 4, ready_timeout: float = 15.0, store_port: Optional[int] = None) -> int:
    if workers < 0:
        raise TitanError("--workers must be 0 or more")
    home = os.path.abspath(os.path.expanduser(data_dir))
    master_dir = os.path.join(home, "master")
    store_dir = os.path.join(home, "store")
    log_dir = os.path.join(home, "logs")
    # Before anything is touched: a cluster already running on this dir keeps its files.
    lock = _take_home(home, [master_dir, store_dir] +
                      [os.path.join(home, f"worker-{i}") for i in range(1, workers + 1)])
    try:
        return _run(home, master_dir, store_dir, log_dir, workers, port, slots,
                    ready_timeout, store_port)
    finally:
        lock.release()


def _take_home(home: str, dirs: list[str]) -> DataDirLock:
    """Hold `home` for this `titan up`, once nobody else holds it or a dir under it."""
    try:
        lock = DataDirLock.acquire(home, "titan-up")
    except DataDirInUse as e:
        raise TitanError(f"up: {e}") from None
    for path in dirs:
        other = holder(path)
        if other is not None:
            lock.release()
            raise TitanError(f"up: {other}")
    return lock


def _run(home: str, master_dir: str, store_dir: str, log_dir: str,
         workers: int, port: int, slots: int, ready_timeout: float,
         store_port: Optional[int]) -> int:
    os.makedirs(log_dir, mode=0o700, exist_ok=True)
    token = load_or_create_token(master_dir)
    # The token goes by environment, never on a command line (`ps` shows those to every
    # local user); the processes blank it from theirs, and workers give it to no job.
    env = dict(os.environ, TITAN_TOKEN=token)
    # The store's password (issue 15): for the store and the master only, by environment.
    store_env = {"TITAN_STORE_PASSWORD": load_or_create_password(store_dir)}
    children: list[tuple[str, subprocess.Popen, str]] = []

    def start(name: str, plugin: str, args: list[str],
              extra_env: Optional[dict] = None) -> subprocess.Popen:
        log_file = os.path.join(log_dir, f"{name}.log")
        proc = subprocess.Popen(_twist(plugin, args, log_file), env=dict(env, **extra_env or {}),
                                stdin=subprocess.DEVNULL, preexec_fn=die_with_parent)
        children.append((name, proc, log_file))
        return proc

    stopping = False

    def stop(signum=None, frame=None) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)
    try:
        for stale in (os.path.join(master_dir, "master.port"),
                      os.path.join(master_dir, "web.port"),
                      os.path.join(store_dir, "store.port")):
            try:
                os.unlink(stale)
            except OSError:
                pass
        if store_port is None:
            store_port = 0 if port == 0 else 6379
        store = start("store", "titan-store",
                      ["--listen", f"tcp:{store_port}:interface=127.0.0.1",
                       "--data-dir", store_dir], store_env)
        store_bound = read_port(store_dir, store, ready_timeout, name="store.port")
        if store_bound is None:
            print(f"titan up: the store did not start; its log ({children[0][2]}) ends:\n"
                  f"{tail(children[0][2])}", file=sys.stderr)
            return 1
        # The web API (docs/web.md) on 8080, or on a port of the OS's with --port 0.
        web_port = 0 if port == 0 else 8080
        master = start("master", "titan-master",
                       ["--listen", f"tcp:{port}:interface=127.0.0.1", "--data-dir", master_dir,
                        "--http", f"tcp:{web_port}:interface=127.0.0.1",
                        "--store", f"redis://127.0.0.1:{store_bound}/0"], store_env)
        bound = read_port(master_dir, master, ready_timeout)
        if bound is None:
            print(f"titan up: the master did not start; its log ({children[1][2]}) ends:\n"
                  f"{tail(children[1][2])}", file=sys.stderr)
            return 1
        web_bound = read_port(master_dir, master, 2, name="web.port")
        dashboard = _login_link(master_dir, web_bound)
        for i in range(1, workers + 1):
            start(f"worker-{i}", "titan-worker",
                  ["--master", f"127.0.0.1:{bound}", "--slots", str(slots),
                   "--name", f"worker-{i}", "--data-dir", os.path.join(home, f"worker-{i}")])
        # "Up" means a job submitted now finds every worker: wait until they have registered.
        missing = _await_workers(bound, token, [f"worker-{i}" for i in range(1, workers + 1)],
                                 ready_timeout, children)
        if missing:
            name = missing[0]
            log_file = next(log for n, _, log in children if n == name)
            print(f"titan up: {', '.join(missing)} did not join the master; the log of "
                  f"{name} ({log_file}) ends:\n{tail(log_file)}", file=sys.stderr)
            return 1
        _banner(bound, workers, slots, home, master_dir, log_dir, store_bound, store_dir,
                dashboard)
        while not stopping:
            for name, proc, log_file in list(children):
                if proc.poll() == 0 and name.startswith("worker-"):
                    # A worker drained from the dashboard or `titan workers drain` leaves
                    # cleanly: the rest goes on without it.
                    print(f"titan up: {name} left (drained)", file=sys.stderr)
                    children.remove((name, proc, log_file))
                elif proc.poll() is not None:
                    print(f"titan up: {name} exited with status {proc.returncode}; its log "
                          f"({log_file}) ends:\n{tail(log_file)}", file=sys.stderr)
                    return 1
            time.sleep(0.2)
        print("\ntitan up: stopping", file=sys.stderr)
        return 0
    finally:
        _stop_all([proc for _, proc, _ in reversed(children)])


def _await_workers(port: int, token: str, names: list[str], timeout: float,
                   children: list) -> list[str]:
    """The names among `names` that have not registered with the master by `timeout`
    (sooner if a child exits: its log says why)."""
    if not names:
        return []
    from titan.sdk.client import Client
    deadline = time.monotonic() + timeout
    missing = list(names)
    while time.monotonic() < deadline:
        try:
            with Client(master=f"127.0.0.1:{port}", token=token) as client:
                alive = {w.get("name") for w in client.workers() if w.get("state") == "ALIVE"}
        except TitanError:
            alive = set()
        missing = [n for n in names if n not in alive]
        if not missing or any(proc.poll() is not None for _, proc, _ in children):
            return missing
        time.sleep(0.1)
    return missing


def _stop_all(procs: list[subprocess.Popen], grace: float = 10.0) -> None:
    for proc in procs:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + grace
    for proc in procs:
        try:
            proc.wait(max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _login_link(master_dir: str, web_port: Optional[int]) -> str:
    """The dashboard's URL with the one-time login code the master wrote (web.login): the
    link opens one browser session, once; the token itself never goes in a URL."""
    if web_port is None:
        return "off (web.enabled: false)"
    try:
        with open(os.path.join(master_dir, "web.login")) as f:
            code = f.read().strip()
    except OSError:
        code = ""
    base = f"http://127.0.0.1:{web_port}"
    return f"{base}/login?code={code} (one-time link)" if code else base


def _banner(port: int, workers: int, slots: int, home: str, master_dir: str,
            log_dir: str, store_port: int, store_dir: str = "",
            dashboard: str = "off") -> None:
    default = os.path.join(os.path.expanduser("~"), ".titan")
    env_hint = "" if home == default else f"export TITAN_DATA_DIR={home}; "
    port_hint = "" if port == 9090 else f"export TITAN_PORT={port}; "
    print(f"""Titan is up.
  master    127.0.0.1:{port}
  dashboard {dashboard}
  workers   {workers} x {slots} slots
  store     127.0.0.1:{store_port} (TitanStore, password in {store_dir}/password:
            REDISCLI_AUTH=$(cat {store_dir}/password) redis-cli -p {store_port})
  data      {home}
  logs      {log_dir}/master.log, store.log, worker-N.log
From another shell (the `titan` command is in .venv/bin of the checkout):
  {port_hint}{env_hint}titan submit --wait -- python3 -c 'print("hi")'
  Clients on this machine read the token from {master_dir}/token;
  elsewhere: export TITAN_TOKEN=$(cat {master_dir}/token)
Ctrl-C stops everything.""", flush=True)


