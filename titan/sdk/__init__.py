"""Titan's Python SDK.  `Client` is blocking (plain sockets); `titan.sdk.twisted` is async."""
from titan.errors import RemoteError, TitanError
from titan.sdk.client import Client, ConnectError

__all__ = ["Client", "ConnectError", "RemoteError", "TitanError"]
