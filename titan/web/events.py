"""Live events over HTTP: Server-Sent Events of what changes in the cluster, and log tails.

`ChangeHub` follows the master's change feed (`MasterApi.add_change_listener`: the keys of
the jobs, runs, workers and schedules that changed, once they are durable) while someone
subscribes, and turns it into batches: at most one per `interval` (the first change after a
quiet spell goes at once), each carrying the latest state of every thing that changed since
the batch before.  Every thing in a batch gets an id, monotonically increasing, and the
recent ones are kept in a bounded ring, so a client that lost its connection resumes with
`Last-Event-ID` and gets what it missed -- or, if that is no longer in the ring, a `reset`
event telling it to reload.

`EventsResource` serves the hub at /api/v1/events (`?run=RUN_ID`, `?kind=job,worker`);
`LogStreamResource` serves one job's output as it is written (`?offset=N`), each event's id
the byte offset after it.  Neither buffers without bound: a client that does not read is
dropped once what it left unread passes `buffer_limit`.

Wire (text/event-stream)::

    retry: 2000                        (once: how long a browser waits to reconnect)

    id: 5f3a9c01.42                    (the hub's epoch . the last thing's number)
    event: batch
    data: {"changes": [{"kind": "job", "id": "RUN/a", "run_id": "RUN", "data": {...}}]}

    event: reset                       (resume impossible: reload, then follow on)
    event: ping                        (every 15 s: proxies keep the connection open)
"""
from __future__ import annotations

import codecs
import json
import secrets
from collections import deque
from typing import Any, Callable, Iterable, Optional

from twisted.internet import defer
from twisted.logger import Logger
from twisted.web import resource, server
from zope.interface import implementer
from twisted.internet.interfaces import IPushProducer

from titan.core.scheduler import job_view, run_view, service_view

__all__ = ["ChangeHub", "EventsResource", "LogStreamResource", "Subscription",
           "DEFAULT_INTERVAL", "PING_INTERVAL", "RING_SIZE", "BUFFER_LIMIT"]

# A change reaches a client within this (p50 well under: the first change after a quiet
# spell goes at once); a browser gets at most 10 batches a second however busy the cluster.
DEFAULT_INTERVAL = 0.1
PING_INTERVAL = 15.0  # an idle stream says something this often, or proxies close it
RING_SIZE = 10_000  # things kept for Last-Event-ID resumes
BUFFER_LIMIT = 1 << 20  # bytes a client may leave unread before it is dropped
LINGER = 60.0  # the hub follows the master this long after its last subscriber left
RETRY_MS = 2000
KINDS = frozenset({"job", "gate", "service", "run", "worker", "schedule"})
LOG_CHUNK = 64 * 1024

Auth = Callable[[Any], Any]  # auth(request) -> a caller, or None (401)


class Subscription:
    """One client of the hub: what it wants (`runs`, `kinds`: None for all) and where its
    batches go: `deliver(event, event_id, data)`."""

    def __init__(self, hub: "ChangeHub", deliver: Callable[[str, Optional[str], dict], None],
                 runs: Optional[frozenset], kinds: Optional[frozenset],
                 write: Optional[Callable[[bytes], None]] = None) -> None:
        self.hub = hub
        self.deliver = deliver
        # Takes a batch already encoded as an SSE message: subscribers without a filter
        # share one encoding of it (20 browsers must not cost 20 JSON encodings).
        self.write = write
        self.runs = runs
        self.kinds = kinds

    def wants(self, item: dict) -> bool:
        return (self.kinds is None or item["kind"] in self.kinds) and (
            self.runs is None or item["run_id"] in self.runs)

    def close(self) -> None:
        self.hub.unsubscribe(self)


class ChangeHub:
    """Batches of the master's changes for many subscribers (see the module's docstring).

    `reactor` is anything with `seconds` and `callLater` (a `Clock` in tests)."""

    log = Logger()

    def __init__(self, api, reactor=None, interval: float = DEFAULT_INTERVAL,
                 ring_size: int = RING_SIZE, linger: float = LINGER) -> None:
        if reactor is None:
            reactor = api.reactor
        self.api = api
        self.reactor = reactor
        self.interval = interval
        self.linger = linger
        # Ids of another hub (a restarted master) are never taken for ours.
        self.epoch = secrets.token_hex(4)
        self._ring: deque = deque(maxlen=ring_size)  # (number, item), oldest first
        self._next = 1  # the number of the next thing
        # Every change after thing number `_floor` is in the ring: a resume from an id
        # below it has missed something (the last one evicted, or the last issued before
        # the hub began to follow the master again).
        self._floor = 1
        self._subs: set[Subscription] = set()
        self._pending: dict = {}  # (kind, key) -> None, since the last batch
        self._flush_call = None
        self._last_flush: Optional[float] = None
        self._listening = False
        self._linger_call = None
        self.batches = 0  # batches made (tests, stats)

    # -- subscribers ----------------------------------------------------------------------

    def subscribe(self, deliver: Callable[[str, Optional[str], dict], None],
                  runs: Optional[Iterable[str]] = None, kinds: Optional[Iterable[str]] = None,
                  since: Optional[str] = None,
                  write: Optional[Callable[[bytes], None]] = None) -> Subscription:
        """A new subscriber.  With `since` (a Last-Event-ID), what it missed is delivered at
        once as one batch (the latest of each thing), or a `reset` if that is not known
        any more; then every batch it wants."""
        sub = Subscription(self, deliver, frozenset(runs) if runs else None,
                           frozenset(kinds) if kinds else None, write)
        if self._linger_call is not None:
            if self._linger_call.active():
                self._linger_call.cancel()
            self._linger_call = None
        if not self._listening:
            self._listening = True
            self._floor = self._next  # changes until now went unseen: no id issued resumes
            self.api.add_change_listener(self._changed)
        self._subs.add(sub)
        if since:
            missed = self.since(since)
            if missed is None:
                deliver("reset", self.last_id(), {"reason": "the events since "
                        f"{since} are no longer known: reload, then follow on"})
            else:
                items = _latest([item for _, item in missed if sub.wants(item)])
                if items:
                    deliver("batch", self._id(missed[-1][0]), {"changes": items})
        return sub

    def unsubscribe(self, sub: Subscription) -> None:
        self._subs.discard(sub)
        if not self._subs and self._listening and self._linger_call is None:
            # Not at once: a client that reconnects soon resumes from the ring.
            self._linger_call = self.reactor.callLater(self.linger, self._stop_listening)

    def _stop_listening(self) -> None:
        """Nobody has followed for `linger` seconds: the master stops noting changes (its
        hot path pays nothing while no page is open)."""
        self._linger_call = None
        if self._subs or not self._listening:
            return
        self._listening = False
        self.api.remove_change_listener(self._changed)
        self._ring.clear()
        self._pending.clear()
        if self._flush_call is not None and self._flush_call.active():
            self._flush_call.cancel()
        self._flush_call = None

    def stop(self) -> None:
        """The master stops: end the feed (subscribers are the resource's to close)."""
        self._subs.clear()
        if self._linger_call is not None and self._linger_call.active():
            self._linger_call.cancel()
        self._linger_call = None
        if self._listening:
            self._stop_listening()

    @property
    def subscribers(self) -> int:
        return len(self._subs)

    # -- ids ------------------------------------------------------------------------------

    def _id(self, number: int) -> str:
        return f"{self.epoch}.{number}"

    def last_id(self) -> Optional[str]:
        return self._id(self._next - 1) if self._next > 1 else None

    def since(self, event_id: str) -> Optional[list]:
        """The ring's `(number, item)`s after `event_id`; None if the id is not this hub's
        or what followed it is no longer all in the ring."""
        epoch, _, number = event_id.strip().partition(".")
        if epoch != self.epoch or not (number.isascii() and number.isdigit()):
            return None
        n = int(number)
        if n < self._floor or n >= self._next or not self._listening:
            return None
        return [(m, item) for m, item in self._ring if m > n]

    # -- the feed -------------------------------------------------------------------------

    def _changed(self, changes: list) -> None:
        """The master's change feed: note them; one batch per `interval` at most."""
        pending = self._pending
        for change in changes:
            pending[change] = None
        if self._flush_call is None and pending:
            now = self.reactor.seconds()
            last = self._last_flush
            wait = 0.0 if last is None else max(0.0, last + self.interval - now)
            self._flush_call = self.reactor.callLater(wait, self._flush)

    def _flush(self) -> None:
        self._flush_call = None
        self._last_flush = self.reactor.seconds()
        pending, self._pending = self._pending, {}
        s, now = self.api.scheduler, self.api.now()
        for kind, key in list(pending):
            # A schedule's firing shows as its new run: its count and last run moved too.
            if kind == "run":
                run = s.runs.get(key)
                if run is not None and run.schedule_id is not None:
                    pending[("schedule", run.schedule_id)] = None
        items = [self._view(s, kind, key, now) for kind, key in pending]
        # What they report is sent once it is durable (it may be newer than the feed said).
        self.api.reply_ready().addCallbacks(lambda _: self._publish(items),
                                            lambda f: None)

    def _publish(self, items: list) -> None:
        if not self._listening:
            return
        ring = self._ring
        for item in items:
            if len(ring) == ring.maxlen:
                self._floor = ring[0][0]  # that one leaves: resumes from before it reset
            ring.append((self._next, item))
            self._next += 1
        self.batches += 1
        event_id = self.last_id()
        everything = {"changes": items}
        encoded = None
        for sub in list(self._subs):
            if sub.runs is None and sub.kinds is None:
                if sub.write is not None:
                    if encoded is None:
                        encoded = sse("batch", event_id, everything)
                    sub.write(encoded)
                    continue
                wanted = everything
            else:
                chosen = [item for item in items if sub.wants(item)]
                if not chosen:
                    continue
                wanted = {"changes": chosen}
            try:
                sub.deliver("batch", event_id, wanted)
            except Exception:
                self.log.failure("an events subscriber failed")
                self.unsubscribe(sub)

    def _view(self, s, kind: str, key: str, now: float) -> dict:
        """The thing as it is now: {kind, id, run_id, data} (data None: it is gone)."""
        if kind == "job":
            job = s.jobs.get(key)
            if job is None:
                return {"kind": "job", "id": key, "run_id": key.partition("/")[0]
                        if "/" in key else None, "data": None}
            spec_kind = job.spec.kind
            data = job_view(s, job, now)
            if spec_kind == "service":
                data["service"] = service_view(s, job, now)
            return {"kind": spec_kind if spec_kind in ("gate", "service") else "job",
                    "id": key, "run_id": job.run_id, "data": data}
        if kind == "run":
            run = s.runs.get(key)
            return {"kind": "run", "id": key, "run_id": key,
                    "data": run_view(s, run, now, jobs=False) if run is not None else None}
        if kind == "worker":
            w = s.workers.get(key)
            data = None
            if w is not None:
                data = self.api.worker_view(w, now)  # with spawned_by, as GET /workers
            return {"kind": "worker", "id": key, "run_id": None, "data": data}
        sc = s.schedules.get(key)
        data = None if sc is None else {
            "schedule_id": sc.schedule_id, "name": sc.name, "cron": sc.cron,
            "fired": sc.fired, "next_at": sc.next_at, "last_run_id": sc.last_run_id}
        return {"kind": kind, "id": key, "run_id": None, "data": data}


def _latest(items: list) -> list:
    """The last item of each thing, in the order of those last items."""
    last = {}
    for item in items:
        key = (item["kind"], item["id"])
        last.pop(key, None)
        last[key] = item
    return list(last.values())


# -- HTTP ---------------------------------------------------------------------------------

def sse(event: Optional[str], event_id: Optional[str], data: Any) -> bytes:
    """One Server-Sent Events message (data: one line of JSON)."""
    head = []
    if event_id is not None:
        head.append(f"id: {event_id}\n")
    if event is not None:
        head.append(f"event: {event}\n")
    return ("".join(head) + "data: " + json.dumps(data, separators=(",", ":"))
            + "\n\n").encode()


def unauthenticated(request) -> bytes:
    request.setResponseCode(401)
    request.setHeader(b"content-type", b"application/json")
    return json.dumps({"error": {"code": "unauthenticated",
                                 "message": "log in, or send Authorization: Bearer TOKEN"}}
                      ).encode()


def bad_request(request, message: str) -> bytes:
    request.setResponseCode(400)
    request.setHeader(b"content-type", b"application/json")
    return json.dumps({"error": {"code": "bad_request", "message": message}}).encode()


def _arg(request, name: bytes) -> Optional[str]:
    values = request.args.get(name)
    return values[-1].decode("utf-8", "replace") if values else None


def _list_arg(request, name: bytes) -> Optional[list]:
    out = []
    for value in request.args.get(name) or ():
        out.extend(v.strip() for v in value.decode("utf-8", "replace").split(",") if v.strip())
    return out or None


@implementer(IPushProducer)
class Stream:
    """One open text/event-stream response: writes what fits, holds what the transport
    has not taken (while it has paused us) up to `limit` bytes, and drops the client past
    that.  `on_close` runs once, whichever side ends it."""

    def __init__(self, request, reactor, limit: int = BUFFER_LIMIT,
                 ping: float = PING_INTERVAL, on_close: Callable[[], None] = lambda: None
                 ) -> None:
        self.request = request
        self.reactor = reactor
        self.limit = limit
        self.on_close = on_close
        self.paused = False
        self.held: list[bytes] = []
        self.held_bytes = 0
        self.closed = False
        self.dropped = False
        request.setHeader(b"content-type", b"text/event-stream; charset=utf-8")
        request.setHeader(b"cache-control", b"no-cache")
        request.setHeader(b"x-accel-buffering", b"no")  # nginx: do not hold it back
        request.registerProducer(self, True)
        request.notifyFinish().addBoth(self._finished)
        self._ping_every = ping
        self._ping = reactor.callLater(ping, self._send_ping)
        if getattr(request, "_disconnected", False):
            # Gone before this was rendered: its finish was told already, or never will be.
            self._close()
            return
        self.write(f"retry: {RETRY_MS}\n\n".encode())

    def write(self, data: bytes) -> None:
        if self.closed:
            return
        if self.paused:
            self.held.append(data)
            self.held_bytes += len(data)
            if self.held_bytes > self.limit:
                self.drop()
            return
        self.request.write(data)

    def send(self, event: Optional[str], event_id: Optional[str], data: Any) -> None:
        self.write(sse(event, event_id, data))

    def _send_ping(self) -> None:
        self._ping = self.reactor.callLater(self._ping_every, self._send_ping)
        self.send("ping", None, {})

    # IPushProducer: the transport pauses us while its buffer is full.
    def pauseProducing(self) -> None:
        self.paused = True

    def resumeProducing(self) -> None:
        self.paused = False
        held, self.held, self.held_bytes = self.held, [], 0
        for data in held:
            if self.closed or self.paused:
                self.held.append(data)
                self.held_bytes += len(data)
            else:
                self.request.write(data)

    def stopProducing(self) -> None:
        self._close()

    def drop(self) -> None:
        """A client that does not read: cut it off rather than hold more for it."""
        if self.closed:
            return
        self.dropped = True
        self._close()
        transport = getattr(self.request, "transport", None) or getattr(
            getattr(self.request, "channel", None), "transport", None)
        if transport is not None:
            transport.abortConnection() if hasattr(transport, "abortConnection") \
                else transport.loseConnection()
        else:
            self.finish()

    def finish(self) -> None:
        """End the response normally (a log tail whose job ended)."""
        if not self.closed:
            self._close()
            self.request.unregisterProducer()
            self.request.finish()

    def _finished(self, _) -> None:
        self._close()

    def _close(self) -> None:
        if self.closed:
            return
        self.closed = True
        self.held, self.held_bytes = [], 0
        if self._ping.active():
            self._ping.cancel()
        self.on_close()


class EventsResource(resource.Resource):
    """GET /api/v1/events: the hub's batches as Server-Sent Events.

    Query: `run` (repeatable or comma-separated: only those runs' things), `kind` (job,
    gate, service, run, worker, schedule).  `Last-Event-ID` (or `?last_event_id=`, for a
    client that cannot set headers) resumes."""

    isLeaf = True

    def __init__(self, hub: ChangeHub, auth: Auth, buffer_limit: int = BUFFER_LIMIT,
                 ping: float = PING_INTERVAL) -> None:
        super().__init__()
        self.hub = hub
        self.auth = auth
        self.buffer_limit = buffer_limit
        self.ping = ping
        self.streams: set[Stream] = set()

    def render_GET(self, request):
        if self.auth(request) is None:
            return unauthenticated(request)
        kinds = _list_arg(request, b"kind")
        if kinds:
            unknown = sorted(set(kinds) - KINDS)
            if unknown:
                return bad_request(request, f"kind: no kind {unknown[0]!r}; the kinds are "
                                   f"{', '.join(sorted(KINDS))}")
        since = request.getHeader(b"last-event-id") or _arg(request, b"last_event_id")
        if isinstance(since, bytes):
            since = since.decode("utf-8", "replace")
        sub = stream = None

        def closed():
            self.streams.discard(stream)
            if sub is not None:
                sub.close()
        stream = Stream(request, self.hub.reactor, self.buffer_limit, self.ping, closed)
        if stream.closed:  # the client went away before this was rendered
            return server.NOT_DONE_YET
        self.streams.add(stream)
        sub = self.hub.subscribe(stream.send, runs=_list_arg(request, b"run"), kinds=kinds,
                                 since=since, write=stream.write)
        if stream.closed:  # dropped while replaying
            sub.close()
        return server.NOT_DONE_YET


class LogStreamResource(resource.Resource):
    """GET /api/v1/jobs/{id}/log/stream?offset=N: the job's output from byte N as it is
    written, one `log` event per piece ({"offset": its first byte, "text": ...}, id: the
    offset after it), then an `end` event ({"state": ...}) once the job has ended and all
    of it is sent.  `Last-Event-ID` (an offset) resumes.  A piece is sent whole UTF-8
    characters only (a character cut by the chunking waits for its other bytes)."""

    isLeaf = True

    def __init__(self, api, auth: Auth, job_ref: str, buffer_limit: int = BUFFER_LIMIT,
                 ping: float = PING_INTERVAL, streams: Optional[set] = None) -> None:
        super().__init__()
        self.api = api
        self.auth = auth
        self.job_ref = job_ref
        self.buffer_limit = buffer_limit
        self.ping = ping
        # The log streams open now, this one's while it is (the face's, for /metrics).
        self.streams: set = streams if streams is not None else set()

    def render_GET(self, request):
        caller = self.auth(request)
        if caller is None:
            return unauthenticated(request)
        since = request.getHeader(b"last-event-id")
        raw = since if since is not None else _arg(request, b"offset")
        if isinstance(raw, bytes):
            raw = raw.decode("ascii", "replace")
        raw = (raw or "0").strip()
        if not (raw.isascii() and raw.isdigit()):
            return bad_request(request, f"offset: a byte offset (0 or more), not {raw!r}")
        try:
            self.api.job_info(caller, self.job_ref)
        except Exception as e:
            code = getattr(e, "code", None)
            if code is None:
                raise
            request.setResponseCode(404 if code == "not_found" else 400)
            request.setHeader(b"content-type", b"application/json")
            return json.dumps({"error": {"code": code, "message": str(e)}}).encode()
        stream = None  # (closed while being made: discard(None) does nothing)
        stream = Stream(request, self.api.reactor, self.buffer_limit, self.ping,
                        on_close=lambda: self.streams.discard(stream))
        if not stream.closed:
            self.streams.add(stream)
        defer.ensureDeferred(self._follow(caller, stream, int(raw))).addErrback(
            self._failed, stream)
        return server.NOT_DONE_YET

    async def _follow(self, caller, stream: Stream, offset: int) -> None:
        api = self.api
        wait = False
        held = 0  # bytes of a cut character at the end: wait for what follows them
        while not stream.closed:
            if stream.paused:  # the client reads slowly: read on when it has caught up
                d: defer.Deferred = defer.Deferred()
                api.reactor.callLater(0.05, d.callback, None)
                await d
                continue
            if held:
                await api.read_logs(caller, self.job_ref, offset + held, True)
                held = 0
            answer = await api.read_logs(caller, self.job_ref, offset, wait)
            await api.reply_ready()
            if stream.closed:
                return
            data: bytes = answer["data"]
            done = answer["done"]
            if data:
                text, used = _whole_chars(data, final=done)
                if used:
                    stream.send("log", str(offset + used), {"offset": offset, "text": text})
                    offset += used
                    done = done and used == len(data)
                held = len(data) - used
                wait = False
            else:
                wait = True
            if done:
                stream.send("end", str(offset), {"state": answer["state"], "offset": offset})
                stream.finish()
                return

    def _failed(self, failure, stream: Stream) -> None:
        Logger().failure("a log stream failed", failure)
        stream.send("error", None, {"message": failure.getErrorMessage()})
        stream.finish()


def _whole_chars(data: bytes, final: bool) -> tuple[str, int]:
    """`data` as text and how many of its bytes that used: all of them, but for a UTF-8
    character cut at the end (unless `final`); bytes that are no UTF-8 become U+FFFD."""
    decoder = codecs.getincrementaldecoder("utf-8")("replace")
    text = decoder.decode(data, final)
    held = len(decoder.getstate()[0])
    return text, len(data) - held
