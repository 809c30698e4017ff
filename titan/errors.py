"""Errors shared by the Twisted side and the plain-socket SDK (no Twisted imports here)."""
from __future__ import annotations


class TitanError(Exception):
    """Something a user should read: one line that says what and where."""


class RemoteError(TitanError):
    """An ERROR reply: what the other side refused, and why.

    Raised by a server handler with `close=True`, the connection closes once the reply is out.
    """

    def __init__(self, code: str, message: str, close: bool = False) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.close = close
