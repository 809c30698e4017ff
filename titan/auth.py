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


# Job-scoped tokens: each running job gets one in TITAN_TOKEN.  It names the job and the
# attempt and is signed with the cluster token, so the master checks it without storing it;
# it opens the door only while that attempt runs, and only to what a job may do.

def job_token(cluster_token: str, job_id: str, attempt: int) -> str:
    return f"job:{job_id}:{attempt}:{_mac(cluster_token, job_id, attempt)}"


def parse_job_token(cluster_token: str, token: object) -> Optional[tuple[str, int]]:
    """(job id, attempt) if `token` is a valid job token, else None."""
    if not isinstance(token, str) or not token.startswith("job:"):
        return None
    try:
        job_id, attempt, mac = token[4:].rsplit(":", 2)
        attempt_no = int(attempt)
    except ValueError:
        return None
    if not hmac.compare_digest(mac.encode(), _mac(cluster_token, job_id, attempt_no).encode()):
        return None
    return job_id, attempt_no


def _mac(cluster_token: str, job_id: str, attempt: int) -> str:
    return hmac.new(cluster_token.encode(), f"{job_id}:{attempt}".encode(),
                    "sha256").hexdigest()[:32]
