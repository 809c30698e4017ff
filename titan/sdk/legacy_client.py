"""A client for the reference implementation's text requests (docs/compat.md).

Blocking, plain sockets, one connection per request, as the reference's own SDK does it: a
text frame (flags 0) goes out, one text frame (ACK or ERROR) comes back, the master closes.
Methods return the reply's text (parsed where the reply has a shape: JSON stats, 1/0, sets);
an ERROR reply raises `LegacyError` with the text.  No token is shown: the master serves
text frames only where `master.text_frames` allows (by default, to its own machine).

    from titan.sdk.legacy_client import LegacyClient
    from titan.protocols.legacy import run_payload

    c = LegacyClient("127.0.0.1", 9090)
    c.submit_dag([run_payload("hello", "hello.py", b"print('hi')")])    # "DAG_ACCEPTED"
    c.get_job_status("DAG-hello")                                        # "COMPLETED", ...
"""
from __future__ import annotations

import base64
import json
import socket
import struct
from typing import Iterable, Optional, Union

from titan.errors import RemoteError
from titan.sdk.connection import master_address

HEADER = struct.Struct("!BBBBI")
VERSION = 1
ACK, ERROR = 0x50, 0x51
SUBMIT_JOB, SUBMIT_DAG, STOP, STATS, STATS_JSON = 0x03, 0x04, 0x07, 0x08, 0x09
GET_LOGS, UPLOAD_ASSET, FETCH_ASSET = 0x16, 0x53, 0x54
GET_JOB_STATUS, CANCEL_JOB, DEPLOY_SCRIPT = 0x55, 0x56, 0x57
KV_SET, KV_GET, KV_SADD, KV_SMEMBERS = 0x60, 0x61, 0x62, 0x63


class LegacyError(RemoteError):
    """An ERROR reply; `text` is the whole reply (`ERROR: ...`, `NOT_FOUND`, ...)."""

    def __init__(self, text: str) -> None:
        super().__init__("legacy", text)
        self.text = text


class LegacyClient:
    def __init__(self, host: Optional[str] = None, port: Optional[int] = None,
                 timeout: float = 30.0) -> None:
        if host is None or port is None:
            default_host, default_port = master_address()
            host = host or default_host
            port = port or default_port
        self.host = host
        self.port = int(port)
        self.timeout = timeout

    # -- the wire ---------------------------------------------------------------------------

    def request(self, opcode: int, text: Union[str, bytes] = "") -> tuple[int, str]:
        """Send one text request; return (reply opcode, reply text)."""
        body = text.encode("utf-8") if isinstance(text, str) else text
        with socket.create_connection((self.host, self.port), timeout=self.timeout) as s:
            s.sendall(HEADER.pack(VERSION, opcode, 0, 0, len(body)) + body)
            header = _recv_exactly(s, HEADER.size)
            version, reply_op, _flags, _spare, length = HEADER.unpack(header)
            if version != VERSION:
                raise LegacyError(f"ERROR: the master answered with protocol version {version}")
            return reply_op, _recv_exactly(s, length).decode("utf-8")

    def call(self, opcode: int, text: Union[str, bytes] = "") -> str:
        """The reply text of an ACK; LegacyError for an ERROR reply."""
        reply_op, reply = self.request(opcode, text)
        if reply_op != ACK:
            raise LegacyError(reply)
        return reply

    # -- jobs -------------------------------------------------------------------------------

    def submit_job(self, job: str) -> str:
        """`[ID|]JOBTYPE|...[|PRIORITY][|DELAY_MS]`, or a whole job string: `JOB_ACCEPTED`."""
        return self.call(SUBMIT_JOB, job)

    def submit_dag(self, jobs: Union[str, Iterable[str]]) -> str:
        """Job strings (a list, or already joined by ` ; `): `DAG_ACCEPTED`."""
        body = jobs if isinstance(jobs, str) else " ; ".join(jobs)
        return self.call(SUBMIT_DAG, body)

    def get_job_status(self, job_id: str) -> str:
        """PENDING, RUNNING, COMPLETED, FAILED, DEAD, CANCELLED, or NULL if unknown."""
        return self.call(GET_JOB_STATUS, job_id)

    def cancel_job(self, job_id: str) -> str:
        """`CANCELLED` (LegacyError `NOT_FOUND` for an unknown job)."""
        return self.call(CANCEL_JOB, job_id)

    def stop(self, service_id: str) -> str:
        """`STOPPED: <id>`."""
        return self.call(STOP, service_id)

    def get_logs(self, job_id: str) -> str:
        return self.call(GET_LOGS, job_id)

    def stats(self) -> str:
        return self.call(STATS)

    def stats_json(self) -> dict:
        return json.loads(self.call(STATS_JSON))

    # -- files ------------------------------------------------------------------------------

    def upload_asset(self, name: str, data: bytes) -> str:
        """`UPLOAD_SUCCESS`; the file is then what RUN_ARCHIVE `NAME/ENTRY` jobs unpack."""
        return self.call(UPLOAD_ASSET, f"{name}|{base64.b64encode(data).decode()}")

    def fetch_asset(self, name: str) -> bytes:
        """The file's bytes (LegacyError `ERROR_NOT_FOUND` if there is none)."""
        return base64.b64decode(self.call(FETCH_ASSET, name))

    def deploy_script(self, name: str, data: bytes) -> str:
        """`DEPLOY_SUCCESS`; a RUN_PAYLOAD job with no content then runs this script."""
        return self.call(DEPLOY_SCRIPT, f"{name}|{base64.b64encode(data).decode()}")

    # -- the store --------------------------------------------------------------------------

    def kv_set(self, key: str, value: str) -> str:
        return self.call(KV_SET, f"{key}|{value}")

    def kv_get(self, key: str) -> Optional[str]:
        value = self.call(KV_GET, key)
        return None if value == "NULL" else value

    def kv_sadd(self, key: str, member: str) -> int:
        return int(self.call(KV_SADD, f"{key}|{member}"))

    def kv_smembers(self, key: str) -> list[str]:
        reply = self.call(KV_SMEMBERS, key)
        return reply.split(",") if reply else []


def _recv_exactly(sock: socket.socket, n: int) -> bytes:
    chunks = []
    while n:
        chunk = sock.recv(min(n, 1 << 20))
        if not chunk:
            raise ConnectionError("the master closed the connection before its reply ended")
        chunks.append(chunk)
        n -= len(chunk)
    return b"".join(chunks)
