"""A real Titan cluster on 127.0.0.1: `twistd -n` master and workers as child processes.

The acceptance tests and the benchmarks use it; it talks to the cluster only through the
public faces (the `titan` command, the SDK) and kills every child it started on `stop()`.
"""
from __future__ import annotations

import os
import random
import secrets
import signal
import socket
import subprocess
import sys
import time
from typing import Optional

import attrs

from titan.testing.processes import die_with_parent, read_port, tail

BIN = os.path.dirname(sys.executable)


@attrs.define(eq=False)
class Child:
    name: str
    proc: subprocess.Popen
    log_file: str

    @property
    def pid(self) -> int:
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc.poll() is None


def free_port() -> int:
    """A free port on 127.0.0.1 for a server that must keep it across restarts, chosen below
    the kernel's ephemeral range: a port the OS hands out (bind to 0) is one it may give
    again as the source port of any outgoing connection -- a worker reconnecting to the
    master, say -- while the server is down, and the server's restart then fails with
    "Address already in use"."""
    low = _ephemeral_low()
    rng = random.SystemRandom()
    for _ in range(200):
        port = rng.randrange(max(1024, low - 20000), low)
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    with socket.socket() as s:  # a crowded machine: any port at all
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _ephemeral_low() -> int:
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
            return int(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768  # Linux's default


class Cluster:
    def __init__(self, base_dir: str, workers: int = 2, slots: int = 4,
                 heartbeat_interval: float = 0.5, heartbeat_timeout: float = 3.0,
                 config_extra: str = "", fixed_port: bool = False,
                 env: Optional[dict] = None, config_top: str = "",
                 autoscaler: str = "  max_workers: 0\n", worker_extra: str = "",
                 master_extra: str = "") -> None:
        self.base_dir = os.path.abspath(base_dir)
        self.worker_count = workers
        self.slots = slots
        self.token = secrets.token_urlsafe(16)
        self.port: Optional[int] = free_port() if fixed_port else None
        # the master's web API (known once started; chosen now with fixed_port)
        self.web_port: Optional[int] = free_port() if fixed_port else None
        self.fixed_port = fixed_port
        self.extra_env = dict(env or {})
        self.master: Optional[Child] = None
        self.workers: dict[str, Child] = {}
        os.makedirs(self.base_dir, exist_ok=True)
        self.config_path = os.path.join(self.base_dir, "titan.yaml")
        with open(self.config_path, "w") as f:
            f.write(f"{config_top}master:\n  heartbeat_interval: {heartbeat_interval}\n"
                    f"  heartbeat_timeout: {heartbeat_timeout}\n"
                    f"  retry_backoff_base: 0.2\n{master_extra}"
                    f"worker:\n  kill_grace: 2\n  detect_tags: false\n{worker_extra}"
                    f"autoscaler:\n{autoscaler}"
                    f"{config_extra}")

    # -- processes -------------------------------------------------------------------------

    def _spawn(self, name: str, args: list[str]) -> Child:
        log_file = os.path.join(self.base_dir, f"{name}.log")
        cmd = [os.path.join(BIN, "twistd"), "-n", f"--logfile={log_file}", "--pidfile=", *args]
        env = dict(os.environ, TITAN_TOKEN=self.token, **self.extra_env)
        with open(log_file + ".err", "wb") as err:  # the child has its own copy
            proc = subprocess.Popen(cmd, cwd=self.base_dir, env=env, stdin=subprocess.DEVNULL,
                                    stdout=subprocess.DEVNULL, stderr=err,
                                    preexec_fn=die_with_parent)
        return Child(name, proc, log_file)

    def start(self) -> "Cluster":
        """Master and workers up; if any of them fails to come up, what did is stopped."""
        try:
            self.start_master()
            for i in range(1, self.worker_count + 1):
                self.start_worker(f"w{i}")
            self.wait_for_workers(self.worker_count)
        except BaseException:
            self.stop()
            raise
        return self

    def start_master(self) -> Child:
        data_dir = os.path.join(self.base_dir, "master")
        for name in ("master.port", "web.port"):
            try:
                os.unlink(os.path.join(data_dir, name))
            except OSError:
                pass
        port = self.port if self.fixed_port else 0
        # The web API on a port of its own too: parallel tests never meet on 8080 (with
        # fixed_port a restarted master keeps it, so an open browser page finds it again).
        web_port = self.web_port if self.fixed_port and self.web_port else 0
        self.master = self._spawn("master", [
            "titan-master", "--config", self.config_path,
            "--listen", f"tcp:{port}:interface=127.0.0.1",
            "--http", f"tcp:{web_port}:interface=127.0.0.1", "--data-dir", data_dir])
        bound = read_port(data_dir, self.master.proc, 30)
        if bound is None:
            raise RuntimeError(f"the master did not start:\n{tail(self.master.log_file)}"
                               f"{tail(self.master.log_file + '.err')}")
        self.port = bound
        # None where the config turns the web API off (web.enabled: false).
        self.web_port = read_port(data_dir, self.master.proc, 2, name="web.port")
        return self.master

    def start_worker(self, name: str, tags: str = "", slots: Optional[int] = None) -> Child:
        args = ["titan-worker", "--config", self.config_path,
                "--master", f"127.0.0.1:{self.port}", "--name", name,
                "--slots", str(slots or self.slots),
                "--data-dir", os.path.join(self.base_dir, name)]
        if tags:
            args += ["--tags", tags]
        child = self._spawn(name, args)
        self.workers[name] = child
        return child

    def wait_for_workers(self, count: int, timeout: float = 20.0) -> list:
        deadline = time.monotonic() + timeout
        with self.client() as c:
            while True:
                alive = [w for w in c.workers() if w["state"] == "ALIVE"]
                if len(alive) >= count:
                    return alive
                if time.monotonic() > deadline:
                    raise RuntimeError(f"only {len(alive)} of {count} workers joined")
                time.sleep(0.05)

    def kill_master(self, sig: int = signal.SIGKILL) -> None:
        """Kill the master (kill -9 by default); `start_master()` brings it back on the
        same data dir (and, with fixed_port, the same port the workers dial)."""
        self.master.proc.send_signal(sig)
        self.master.proc.wait(30)

    def kill_worker(self, name: str, sig: int = signal.SIGKILL) -> None:
        child = self.workers.pop(name)
        child.proc.send_signal(sig)
        child.proc.wait(10)

    def stop(self) -> None:
        children = list(self.workers.values()) + ([self.master] if self.master else [])
        for child in children:
            if child.alive():
                child.proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 10
        for child in children:
            try:
                child.proc.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                child.proc.kill()
                child.proc.wait()
        self.workers.clear()

    # -- faces -----------------------------------------------------------------------------

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def web_url(self) -> str:
        return f"http://127.0.0.1:{self.web_port}"

    def env(self) -> dict:
        return dict(os.environ, TITAN_HOST="127.0.0.1", TITAN_PORT=str(self.port),
                    TITAN_TOKEN=self.token, **self.extra_env)

    def client(self, **kwargs):
        from titan.sdk.client import Client
        return Client(master=self.address, token=kwargs.pop("token", self.token), **kwargs)

    def cli(self, *args: str, timeout: float = 60, env: Optional[dict] = None,
            input: Optional[bytes] = None) -> subprocess.CompletedProcess:
        """Run the real `titan` command against this cluster."""
        return subprocess.run([os.path.join(BIN, "titan"), *args], env=env or self.env(),
                              capture_output=True, timeout=timeout, input=input,
                              cwd=self.base_dir)
