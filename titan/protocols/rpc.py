"""Request/response over TITAN_PROTO frames.

One persistent connection carries many requests in flight: each request carries a `rid`
chosen by its sender, and the reply (ACK with a `result`, or ERROR with `code` and
`message`) carries the same `rid`.  Frames without a `rid` are pushes (a dispatch to a
worker, a log batch) and get no reply.

A subclass serves operation `X` by defining `op_X(self, body)`, which returns the result
(or a Deferred / coroutine of it) or raises `RemoteError`.
"""
from __future__ import annotations

import inspect
from typing import Any, Callable, Optional

from twisted.internet import defer, error
from twisted.internet.protocol import Protocol
from twisted.logger import Logger
from twisted.python.failure import Failure

from titan.errors import RemoteError
from titan.protocols import codec
from titan.protocols.frame import (
    DEFAULT_MAX_BODY, FLAG_STRUCTURED, Frame, FrameDecoder, FrameError, encode_frame)
from titan.protocols.opcodes import Op, op_name


class RpcProtocol(Protocol):
    log = Logger()
    max_body = DEFAULT_MAX_BODY
    request_timeout: Optional[float] = 30.0
    clock: Any = None  # an IReactorTime; the global reactor when None

    def connectionMade(self) -> None:
        # Frames are small and often go out back to back with no reply in between (a push,
        # then a request): with Nagle's algorithm on, the second one waits for the peer's
        # delayed ACK, 40 ms on Linux.  Send every frame at once.
        set_no_delay = getattr(self.transport, "setTcpNoDelay", None)
        if set_no_delay is not None:
            set_no_delay(True)
        self._decoder = FrameDecoder(self.max_body)
        self._pending: dict[int, defer.Deferred] = {}
        self._next_rid = 1

    def _clock(self):
        if self.clock is None:
            from twisted.internet import reactor
            return reactor
        return self.clock

    # -- inbound -------------------------------------------------------------------------

    def dataReceived(self, data: bytes) -> None:
        for item in self._decoder.feed(data):
            if isinstance(item, FrameError):
                self.frame_error(item)
                if item.fatal:
                    self.transport.loseConnection()
                    return
            else:
                # One frame a handler trips over must not cost the connection (and every
                # other request in flight on it).
                try:
                    self.frame_received(item)
                except Exception:
                    self.log.failure("{op} frame from {peer} failed", op=op_name(item.opcode),
                                     peer=self._peer())

    def frame_error(self, problem: FrameError) -> None:
        self.log.warn("bad frame from {peer}: {message}", peer=self._peer(),
                      message=problem.message, code=problem.code)
        if problem.flags & FLAG_STRUCTURED:
            self.send_error(_rid_of(problem.body), problem.code, problem.message)
        else:
            self.send_text(Op.ERROR, f"ERROR: {problem.message}")

    def frame_received(self, frame: Frame) -> None:
        if not frame.structured:
            self.text_frame_received(frame)
            return
        try:
            body = codec.unpack(frame.body)
        except codec.BodyError as e:
            self.send_error(None, "bad_body", f"{op_name(frame.opcode)}: {e}")
            return
        rid = body.get("rid")
        if frame.opcode in (Op.ACK, Op.ERROR):
            self._reply_received(frame.opcode, rid, body)
        elif rid is None:
            self.push_received(frame.opcode, body)
        else:
            self.request_received(frame.opcode, rid, body)

    def text_frame_received(self, frame: Frame) -> None:
        self.send_text(Op.ERROR, "ERROR: text frames are not served on this connection")

    def push_received(self, opcode: int, body: dict) -> None:
        handler = self._handler(opcode)
        if handler is None:
            self.log.warn("ignored push {op} from {peer}", op=op_name(opcode), peer=self._peer())
            return
        d = _call(handler, body)
        d.addErrback(lambda f: self.log.failure("push {op} failed", f, op=op_name(opcode)))

    def request_received(self, opcode: int, rid: Any, body: dict) -> None:
        handler = self._handler(opcode)
        if handler is None:
            self.send_error(rid, "unsupported", f"{op_name(opcode)} is not served here")
            return
        d = _call(handler, body)
        # A result that cannot be packed fails in _send_reply and is answered as "internal".
        d.addCallback(lambda result: self._send_reply(rid, result))
        d.addErrback(lambda f: self._send_failure(rid, opcode, f))
        d.addErrback(lambda f: self.log.failure("replying to {op} failed", f,
                                                op=op_name(opcode)))

    def _handler(self, opcode: int) -> Optional[Callable]:
        try:
            name = Op(opcode).name
        except ValueError:
            return None
        return getattr(self, f"op_{name}", None)

    def _send_reply(self, rid: Any, result: Any) -> None:
        if self.connected:
            self.send_frame(Op.ACK, {"rid": rid, "result": result})

    def _send_failure(self, rid: Any, opcode: int, failure: Failure) -> None:
        if not self.connected:
            return
        if failure.check(RemoteError):
            self.send_error(rid, failure.value.code, failure.value.message)
            if failure.value.close:
                self.transport.loseConnection()
            return
        self.log.failure("{op} failed", failure, op=op_name(opcode))
        self.send_error(rid, "internal", f"{op_name(opcode)} failed: {failure.getErrorMessage()}")

    def _reply_received(self, opcode: int, rid: Any, body: dict) -> None:
        # Our rids are ints; anything else (even an unhashable list) answers nothing of ours.
        d = self._pending.pop(rid, None) if _is_rid(rid) else None
        if d is None:
            if opcode == Op.ERROR:
                self.error_pushed(body)
            return
        if opcode == Op.ACK:
            d.callback(body.get("result"))
        else:
            d.errback(RemoteError(str(body.get("code", "error")), str(body.get("message", ""))))

    def error_pushed(self, body: dict) -> None:
        """An ERROR that answers no request of ours (a frame we sent was refused)."""
        self.log.warn("peer {peer} reported: {message}", peer=self._peer(),
                      message=body.get("message"), code=body.get("code"))

    # -- outbound ------------------------------------------------------------------------

    def send_frame(self, opcode: int, body: dict) -> None:
        self.transport.write(encode_frame(opcode, codec.pack(body)))

    def send_text(self, opcode: int, text: str) -> None:
        self.transport.write(encode_frame(opcode, text.encode("utf-8"), flags=0))

    def send_error(self, rid: Any, code: str, message: str) -> None:
        self.send_frame(Op.ERROR, {"rid": rid, "code": code, "message": message})

    def push(self, opcode: int, body: dict) -> None:
        self.send_frame(opcode, body)

    def call(self, opcode: int, body: Optional[dict] = None,
             timeout: Optional[float] = -1) -> defer.Deferred:
        """Send a request; the Deferred fires with the result or fails with RemoteError."""
        if timeout == -1:
            timeout = self.request_timeout
        if not self.connected:
            return defer.fail(error.ConnectionLost(f"{op_name(opcode)}: not connected"))
        rid = self._next_rid
        self._next_rid += 1
        message = dict(body or {})
        message["rid"] = rid
        data = encode_frame(opcode, codec.pack(message))  # may raise: nothing is pending yet
        d: defer.Deferred = defer.Deferred(lambda _: self._pending.pop(rid, None))
        self._pending[rid] = d
        self.transport.write(data)
        if timeout is not None:
            d.addTimeout(timeout, self._clock())
        return d

    def connectionLost(self, reason: Optional[Failure] = None) -> None:
        self.connected = False
        why = reason.getErrorMessage() if reason is not None else "connection closed"
        pending, self._pending = self._pending, {}
        for d in pending.values():
            d.errback(error.ConnectionLost(f"connection lost before the reply: {why}"))

    def _peer(self) -> str:
        try:
            p = self.transport.getPeer()
            return f"{p.host}:{p.port}"
        except Exception:
            return "?"


def _is_rid(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _rid_of(body: bytes) -> Any:
    """The `rid` of a structured body we otherwise refuse, if it has one."""
    try:
        rid = codec.unpack(body).get("rid")
    except codec.BodyError:
        return None
    return rid if _is_rid(rid) else None


def _call(handler: Callable, body: dict) -> defer.Deferred:
    try:
        result = handler(body)
    except Exception:
        return defer.fail()
    if inspect.iscoroutine(result):
        return defer.Deferred.fromCoroutine(result)
    if isinstance(result, defer.Deferred):
        return result
    return defer.succeed(result)
