"""The cluster token: what every structured connection shows in its hello."""
from __future__ import annotations

import hmac
import os
import secrets
import sys
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


# -- secrets in a process's environment and command line ----------------------------------
# A job runs as its worker's user: it may read the worker's /proc/PID/cmdline (so may every
# local user: `ps`) and /proc/PID/environ.  Secrets therefore never travel on a command line,
# and what a worker gives its jobs never holds them (docs/security.md).

def is_secret_env(name: str) -> bool:
    """Whether an environment variable holds a cluster secret a job must not inherit."""
    return name.startswith("TITAN_") and (
        name.endswith(("_TOKEN", "_TOKEN_FILE")) or "PASSWORD" in name)


def without_secrets(env: dict) -> dict:
    return {k: v for k, v in env.items() if not is_secret_env(k)}


def read_token_file(path: str) -> str:
    """The token in `path` (its first line), or ValueError saying what is wrong with it."""
    try:
        with open(os.path.expanduser(path), encoding="ascii") as f:
            token = f.readline().strip()
    except OSError as e:
        raise ValueError(f"--token-file {path}: cannot read it: {e.strerror or e}") from None
    except UnicodeDecodeError:
        raise ValueError(f"--token-file {path}: not a token (not ASCII text)") from None
    if not token:
        raise ValueError(f"--token-file {path}: the file is empty")
    return token


def _own_blocks() -> list[tuple[int, int]]:
    """The address ranges of this process's initial argv and environment strings (what
    /proc/self/cmdline and /proc/self/environ show)."""
    with open("/proc/self/stat", "rb") as f:
        stat = f.read()
    fields = stat[stat.rindex(b")") + 2:].split()  # fields[0] is field 3 of proc(5)
    arg_start, arg_end, env_start, env_end = (int(x) for x in fields[45:49])
    return [(arg_start, arg_end), (env_start, env_end)]


def blank_in_own_process(secret: str, variable: str = "TITAN_TOKEN") -> int:
    """Overwrite with NULs the copies of `secret` in this process's initial argv (an argument
    that is the secret, or `--token=SECRET`) and environment block (`VARIABLE=SECRET`), so
    that /proc/PID/cmdline and /proc/PID/environ no longer show it; returns how many were
    blanked.  Nothing else is touched: other arguments and variables stay as they are.
    (os.environ is a copy made at start-up: remove the variable from it as well.)  Linux
    only; elsewhere, or without /proc, it does nothing."""
    if not secret or not sys.platform.startswith("linux"):
        return 0
    import ctypes
    try:
        blocks = _own_blocks()
    except (OSError, ValueError, IndexError):
        return 0
    value = secret.encode()
    wanted = ({value, b"--token=" + value}, {variable.encode() + b"=" + value})
    count = 0
    for (start, end), entries in zip(blocks, wanted):
        if not start or end <= start:
            continue
        at = 0
        for entry in ctypes.string_at(start, end - start).split(b"\0"):
            if entry in entries:
                # Only the secret's bytes: the name (and `--token=`) stay readable.
                ctypes.memset(start + at + len(entry) - len(value), 0, len(value))
                count += 1
            at += len(entry) + 1
    return count
