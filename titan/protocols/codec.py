"""Bodies of structured frames: one msgpack map each."""
from __future__ import annotations

from typing import Any

import msgpack


class BodyError(ValueError):
    """A structured body that is not a msgpack map."""


def pack(body: dict[str, Any]) -> bytes:
    return msgpack.packb(body, use_bin_type=True)


def unpack(data: bytes) -> dict[str, Any]:
    try:
        body = msgpack.unpackb(data, raw=False, strict_map_key=True)
    except Exception as e:  # msgpack raises several unrelated types
        raise BodyError(f"body is not valid msgpack: {e}") from None
    if not isinstance(body, dict):
        raise BodyError(f"body must be a msgpack map, not {type(body).__name__}")
    return body
