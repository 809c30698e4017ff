"""A filesystem made full, for tests and bench/faults.py (on a small tmpfs of their own)."""
from __future__ import annotations

import errno
import os


def fill_up(fd: int) -> None:
    """Write zeros to `fd` until its filesystem has not one free byte left."""
    for chunk in (1 << 20, 1 << 12, 1):
        block = b"\0" * chunk
        while True:
            try:
                os.write(fd, block)
            except OSError as e:
                if e.errno != errno.ENOSPC:
                    raise
                break


def fill(directory: str) -> str:
    """Take every free byte of the filesystem of `directory`: the path of the file."""
    path = os.path.join(directory, "filler")
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    try:
        fill_up(fd)
    finally:
        os.close(fd)
    return path
