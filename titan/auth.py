"""The cluster token: what every structured connection shows in its hello."""
from __future__ import annotations

import hmac
import os
import secrets
from typing import Optional

TOKEN_FILE = "token"


def token_path(data_dir: str) -> str:
    return os.path.join(os.path.expanduser(data_dir), TOKEN_FILE)


def read_token(data_dir: str) -> Optional[str]:
    try:
        with open(token_path(data_dir), encoding="ascii") as f:
            return f.read().strip() or None
    except OSError:
        return None


def load_or_create_token(data_dir: str) -> str:
    """The token kept in `data_dir`, made on first start (readable by this user only)."""
    existing = read_token(data_dir)
    if existing:
        return existing
    token = secrets.token_urlsafe(24)
    path = token_path(data_dir)
    os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="ascii") as f:
        f.write(token + "\n")
    return token


def token_matches(expected: str, given: object) -> bool:
    return isinstance(given, str) and hmac.compare_digest(expected.encode(), given.encode())
