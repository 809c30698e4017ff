"""Where the master is and which token to show it: arguments, then environment, then files."""
from __future__ import annotations

import os
from typing import Optional

from titan.errors import TitanError

# titan.config (attrs, YAML) and titan.auth (hmac, secrets: OpenSSL's start-up, ~3 ms) are
# imported only when they are needed: every CLI command and SDK client goes through here,
# and most are given their token (TITAN_TOKEN) and never read the config.
DEFAULT_PORT = 9090  # titan.config.DEFAULT_PORT


def master_address(master: Optional[str] = None) -> tuple[str, int]:
    """`--master HOST:PORT`, else TITAN_HOST / TITAN_PORT, else 127.0.0.1:9090."""
    if master:
        host, sep, port = master.rpartition(":")
        if not sep or not port.isdigit():
            raise TitanError(f"--master {master!r}: expected HOST:PORT")
        return host.strip("[]") or "127.0.0.1", int(port)
    host = os.environ.get("TITAN_HOST") or "127.0.0.1"
    port = os.environ.get("TITAN_PORT") or str(DEFAULT_PORT)
    if not port.isdigit():
        raise TitanError(f"TITAN_PORT={port!r} is not a port number")
    return host, int(port)


def cluster_token(token: Optional[str] = None) -> Optional[str]:
    """`--token`, else TITAN_TOKEN, else the token a local master keeps in its data dir."""
    if token:
        return token
    if os.environ.get("TITAN_TOKEN"):
        return os.environ["TITAN_TOKEN"]
    from titan.auth import read_token
    data_dir = os.environ.get("TITAN_DATA_DIR")
    if data_dir:
        found = read_token(os.path.join(data_dir, "master"))
        if found:
            return found
    from titan.config import MasterConfig
    return read_token(MasterConfig().data_dir)
