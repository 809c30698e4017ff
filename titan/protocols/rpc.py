"""Request/response over TITAN_PROTO frames.

One persistent connection carries many requests in flight: each request carries a `rid`
chosen by its sender, and the reply (ACK with a `result`, or ERROR with `code` and
`message`) carries the same `rid`.  Frames without a `rid` are pushes (a dispatch to a
worker, a log batch) and get no reply.

A subclass serves operation `X` by defining `op_X(self, body)`, which returns the result
(or a Deferred / coroutine of it) or raises `RemoteError`.

With `backpressure` on (the master's connections), the protocol is its transport's
streaming producer: once the replies waiting to be sent pass the transport's buffer, the
peer's requests are no longer read (nor those already read handled) until the peer has
read them; a connection whose buffer stays full for `stall_timeout` seconds, or whose
unsent bytes pass `max_send_buffer`, is closed.
"""
from __future__ import annotations

import inspect
from collections import deque
from typing import Any, Callable, Iterable, Iterator, Optional

import msgpack

from twisted.internet import defer, error
from twisted.internet.interfaces import IPushProducer
from twisted.internet.protocol import Protocol
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from titan.errors import RemoteError
from titan.protocols import codec
from titan.protocols.frame import (
    DEFAULT_MAX_BODY, FLAG_STRUCTURED, Frame, FrameDecoder, FrameError, encode_frame)
from titan.protocols.opcodes import Op, op_name


@implementer(IPushProducer)
class RpcProtocol(Protocol):
    log = Logger()
    max_body = DEFAULT_MAX_BODY
    max_text_body: Optional[int] = None  # text frames' limit; max_body when None
    request_timeout: Optional[float] = 30.0
    clock: Any = None  # an IReactorTime; the global reactor when None
    backpressure = False  # be the transport's producer (see the module's doc)
    stall_timeout: Optional[float] = 30.0
    max_send_buffer: Optional[int] = None
    paused = False

    def connectionMade(self) -> None:
        # Frames are small and often go out back to back with no reply in between (a push,
        # then a request): with Nagle's algorithm on, the second one waits for the peer's
        # delayed ACK, 40 ms on Linux.  Send every frame at once.
        set_no_delay = getattr(self.transport, "setTcpNoDelay", None)
        if set_no_delay is not None:
            set_no_delay(True)
        self._decoder = FrameDecoder(self.max_body, self.max_text_body)
        self._pending: dict[int, defer.Deferred] = {}
        self._next_rid = 1
        self._held: deque = deque()  # frames read while paused, handled on resume
        self._stall_call = None
        self._stream: Optional[Iterator[bytes]] = None  # send_stream's, while it lasts
        self._stream_done: Optional[Callable[[], None]] = None
        if self.backpressure and hasattr(self.transport, "registerProducer"):
            self.transport.registerProducer(self, True)

    def _clock(self):
        if self.clock is None:
            from twisted.internet import reactor
            return reactor
        return self.clock

    # -- inbound -------------------------------------------------------------------------

    def dataReceived(self, data: bytes) -> None:
        items = self._decoder.feed(data)
        if self.paused or self._held or self._stream is not None:
            self._held.extend(items)
            return
        self._handle_items(items)

    def _handle_items(self, items) -> None:
        for i, item in enumerate(items):
            if self.paused:  # a reply just filled the transport: the rest waits
                self._held.extend(items[i:])
                return
            if not self._handle_item(item):
                return

    def _handle_item(self, item) -> bool:
        """Handle one decoded frame or error; False once the connection is closing."""
        if isinstance(item, FrameError):
            self.frame_error(item)
            if item.fatal:
                self.close()
                return False
        else:
            # One frame a handler trips over must not cost the connection (and every
            # other request in flight on it).
            try:
                self.frame_received(item)
            except Exception:
                self.log.failure("{op} frame from {peer} failed", op=op_name(item.opcode),
                                 peer=self._peer())
        return not getattr(self.transport, "disconnecting", False)

    # -- backpressure (IPushProducer, registered on the transport) --------------------------

    def pauseProducing(self) -> None:
        """The transport's buffer is full: read no more of this peer until it drains."""
        if self.paused:
            return
        self.paused = True
        self.transport.pauseProducing()
        if self.stall_timeout is not None and self._stall_call is None:
            self._stall_call = self._clock().callLater(self.stall_timeout, self._stalled)

    def resumeProducing(self) -> None:
        was_paused, self.paused = self.paused, False
        self._cancel_stall()
        if getattr(self.transport, "disconnecting", False):
            # A closing transport with a producer waits for it: let it finish closing.
            self.transport.unregisterProducer()
            return
        if was_paused:
            self.transport.resumeProducing()
        self._pump()
        while self._held and not self.paused and self._stream is None:
            if not self._handle_item(self._held.popleft()):
                self._held.clear()
                return

    def stopProducing(self) -> None:
        self._held.clear()
        self._end_stream(done=False)

    def send_stream(self, chunks: Iterable[bytes],
                    done: Optional[Callable[[], None]] = None) -> None:
        """Write `chunks` (one frame, its header first) as the peer reads them: the next
        chunk is taken only while the transport is not paused, so a reply of any size holds
        about one chunk in memory.  Frames read meanwhile wait for its end, then `done` is
        called."""
        self._end_stream(done=False)
        self._stream = iter(chunks)
        self._stream_done = done
        self._pump()

    def _pump(self) -> None:
        while self._stream is not None and not self.paused:
            if not self.connected:
                self._end_stream(done=False)
                return
            try:
                chunk = next(self._stream)
            except StopIteration:
                self._end_stream(done=True)
                return
            except Exception:
                self.log.failure("streaming a reply to {peer} failed", peer=self._peer())
                self._end_stream(done=False)
                self.abort()
                return
            self.write(chunk)

    def _end_stream(self, done: bool) -> None:
        stream, callback = self._stream, self._stream_done
        self._stream = self._stream_done = None
        if stream is not None:
            close = getattr(stream, "close", None)  # a generator: its `finally` runs
            if close is not None:
                close()
        if done and callback is not None:
            callback()

    def _cancel_stall(self) -> None:
        if self._stall_call is not None:
            if self._stall_call.active():
                self._stall_call.cancel()
            self._stall_call = None

    def _stalled(self) -> None:
        self._stall_call = None
        if not self.paused or not self.connected:
            return
        self.send_buffer_stalled(self.stall_timeout)
        self.abort()

    def send_buffer_stalled(self, seconds: float) -> None:
        """Called before a connection whose replies went unread for `seconds` is closed."""
        self.log.warn("closing {peer}: its replies went unread for {seconds:g} s",
                      peer=self._peer(), seconds=seconds)

    def send_buffer_full(self, size: int) -> None:
        """Called before a connection with more than `max_send_buffer` bytes unsent is
        closed."""
        self.log.warn("closing {peer}: {size} bytes unsent, over the {limit}-byte limit",
                      peer=self._peer(), size=size, limit=self.max_send_buffer)

    def unsent_bytes(self) -> int:
        t = self.transport
        return getattr(t, "_tempDataLen", 0) + len(getattr(t, "dataBuffer", b"")) \
            - getattr(t, "offset", 0)

    def close(self) -> None:
        """Close once what was written has gone (a paused producer does not hold it)."""
        self._unregister()
        self.transport.loseConnection()

    def _unregister(self) -> None:
        """Stop being the transport's producer (a paused one would hold its closing)."""
        if self.backpressure and getattr(self.transport, "producer", None) is self:
            self.transport.unregisterProducer()

    def abort(self) -> None:
        """Close now, dropping whatever is unsent."""
        t = self.transport
        self._unregister()
        self._held.clear()
        abort = getattr(t, "abortConnection", None)
        (abort or t.loseConnection)()

    def write(self, data: bytes) -> None:
        """Every frame this protocol sends goes out here."""
        self.transport.write(data)
        limit = self.max_send_buffer
        if limit is not None and self.connected and self.unsent_bytes() > limit:
            self.send_buffer_full(self.unsent_bytes())
            self.abort()

    def frame_error(self, problem: FrameError) -> None:
        self.log_frame_error(problem)
        if problem.flags & FLAG_STRUCTURED:
            self.send_error(rid_of(problem.body), problem.code, problem.message)
        else:
            self.send_text(Op.ERROR, f"ERROR: {problem.message}")

    def log_frame_error(self, problem: FrameError) -> None:
        self.log.warn("bad frame from {peer}: {message}", peer=self._peer(),
                      message=problem.message, code=problem.code)

    def frame_received(self, frame: Frame) -> None:
        if not frame.structured:
            self.text_frame_received(frame)
            return
        if not self.admit_frame(frame):
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

    def admit_frame(self, frame: Frame) -> bool:
        """Whether a structured frame's body is decoded and served at all (a master serves
        nothing but the hello to a peer that has not said it)."""
        return True

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
        # A request costs one callback, none when its handler answers at once (most do, or
        # give a Deferred): two or three requests a job, on every connection of the master.
        try:
            result = handler(body)
        except Exception:
            self._answer_failure(rid, opcode, Failure())
            return
        if inspect.iscoroutine(result):
            result = defer.Deferred.fromCoroutine(result)
        if isinstance(result, defer.Deferred):
            result.addBoth(self._answer, rid, opcode)
        else:
            self._answer(result, rid, opcode)

    def _answer(self, result: Any, rid: Any, opcode: int) -> None:
        """Send the reply to a request, or the error it ended in.  A result that cannot be
        packed fails in _send_reply and is answered as "internal"; a failure to answer at
        all is logged."""
        if isinstance(result, Failure):
            self._answer_failure(rid, opcode, result)
            return
        try:
            sent = self._send_reply(rid, result)
        except Exception:
            self._answer_failure(rid, opcode, Failure())
            return
        if isinstance(sent, defer.Deferred):  # (a reply that goes out once a record is durable)
            sent.addErrback(lambda f: self._answer_failure(rid, opcode, f))

    def _answer_failure(self, rid: Any, opcode: int, failure: Failure) -> None:
        try:
            self._send_failure(rid, opcode, failure)
        except Exception:
            self.log.failure("replying to {op} failed", op=op_name(opcode))

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
                self.close()
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
        self.write(encode_frame(opcode, codec.pack(body)))

    def send_text(self, opcode: int, text: str) -> None:
        self.write(encode_frame(opcode, text.encode("utf-8"), flags=0))

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
        self.write(data)
        if timeout is not None:
            d.addTimeout(timeout, self._clock())
        return d

    def connectionLost(self, reason: Optional[Failure] = None) -> None:
        self.connected = False
        self._held.clear()
        self._end_stream(done=False)
        self._cancel_stall()
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


def rid_of(body: bytes) -> Any:
    """The `rid` of a structured body we otherwise refuse, if it has one: found by
    reading the map's keys and skipping every other value unbuilt."""
    unpacker = msgpack.Unpacker(raw=False, strict_map_key=True,
                                max_buffer_size=max(len(body), 1))
    try:
        unpacker.feed(body)
        for _ in range(unpacker.read_map_header()):
            if unpacker.unpack() == "rid":
                rid = unpacker.unpack()
                return rid if _is_rid(rid) else None
            unpacker.skip()
    except Exception:  # msgpack raises several unrelated types
        return None
    return None


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
