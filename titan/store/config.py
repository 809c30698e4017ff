"""The `store:` section of the config file (titan/config.py reads and checks it, like
every section; etc/titan.yaml describes each key)."""
from __future__ import annotations

import os
from typing import Optional

import attrs

DEFAULT_STORE_PORT = 6379
BACKENDS = ("titanstore", "redis")
FSYNC = ("always", "everysec", "no")


@attrs.frozen
class StoreConfig:
    # Master side: which store the master uses (titanstore: the titan-store process at
    # `url`; redis: a Redis or Valkey server at `url`).
    backend: str = "titanstore"
    # redis://[:password@]host:port[/0]; null: the master has no store (client_url()
    # derives a URL from `listen` and `password` for a client on this machine).
    url: Optional[str] = None
    # titan-store side.
    listen: str = f"tcp:{DEFAULT_STORE_PORT}:interface=127.0.0.1"
    data_dir: str = os.path.join("~", ".titan", "store")
    password: Optional[str] = None
    fsync: str = "everysec"
    # Compact the append-only file once it has grown by this much (and by more than the
    # last snapshot's size).
    compact_after_bytes: int = 64 * 1024 * 1024
    # Largest bulk string a request may carry (Redis: proto-max-bulk-len).
    max_bulk_bytes: int = 512 * 1024 * 1024
    max_clients: int = 10000
    # With a password: a client that has not AUTHed this many seconds after connecting is
    # disconnected (until then it may send 16 KiB bulk strings and 10 arguments).
    auth_timeout: float = 10.0
    # A subscriber whose unsent messages pass this is disconnected (Redis's
    # client-output-buffer-limit for pubsub clients).
    pubsub_buffer_bytes: int = 32 * 1024 * 1024
    # How often expired keys are swept out, seconds.
    sweep_interval: float = 0.1

    def client_url(self) -> str:
        """Where a client finds this store: `url`, else loopback at the `listen` port."""
        if self.url:
            return self.url
        port = DEFAULT_STORE_PORT
        for part in self.listen.split(":")[1:2]:
            if part.isdigit():
                port = int(part)
        auth = f":{self.password}@" if self.password else ""
        return f"redis://{auth}127.0.0.1:{port}/0"


CHOICES = {"backend": BACKENDS, "fsync": FSYNC}
PASSWORD_FILE = "password"


def load_or_create_password(data_dir: str) -> str:
    """The store password kept in `data_dir/password` (mode 0600), made on first use: what
    `titan up` gives its store and its master (by environment, never a command line)."""
    path = os.path.join(os.path.abspath(os.path.expanduser(data_dir)), PASSWORD_FILE)
    try:
        with open(path, encoding="ascii") as f:
            existing = f.read().strip()
        if existing:
            return existing
    except OSError:
        pass
    import secrets
    password = secrets.token_urlsafe(24)
    os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
    tmp = f"{path}.{os.getpid()}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="ascii") as f:
        f.write(password + "\n")
    os.replace(tmp, path)
    return password
