"""Live events (titan/web/events.py): the master's change feed, the hub's batches, ids and
resumes, filters, slow clients, pings, and log tails -- on a MasterService with a fake
clock, served through a real twisted.web Site over StringTransport."""
from __future__ import annotations

import json

from twisted.internet.testing import StringTransport
from twisted.web import server

from titan.master.api import OPERATOR
from titan.protocols.opcodes import Op
from titan.web import events
from titan.web.events import ChangeHub, EventsResource, LogStreamResource

from tests.unit.test_master import HeldPersistence, MasterCase

ANYONE = object()  # what the auth callable returns for a good request


def auth(request):
    header = request.getHeader(b"authorization")
    return ANYONE if header == b"Bearer sesame" else None


def dechunk(data: bytes) -> tuple[bytes, bytes]:
    """An HTTP/1.1 response's head and its chunked body, joined."""
    head, _, rest = data.partition(b"\r\n\r\n")
    if b"transfer-encoding: chunked" not in head.lower():
        return head, rest
    body = b""
    while rest:
        size, _, rest = rest.partition(b"\r\n")
        n = int(size, 16)
        if n == 0:
            break
        body, rest = body + rest[:n], rest[n + 2:]
    return head, body


def parse_sse(body: bytes) -> list[dict]:
    """The messages of an event stream: {"id", "event", "data", "retry"} as present."""
    out = []
    for block in body.decode().split("\n\n"):
        if not block.strip():
            continue
        msg: dict = {}
        for line in block.split("\n"):
            field, _, value = line.partition(": ")
            msg[field] = json.loads(value) if field == "data" else value
        out.append(msg)
    return out


class Client:
    """One HTTP connection to a Site, over a StringTransport."""

    def __init__(self, site: server.Site, path: str, headers: dict = None,
                 bearer: bool = True) -> None:
        self.transport = StringTransport()
        self.channel = site.buildProtocol(None)
        self.channel.makeConnection(self.transport)
        lines = [f"GET {path} HTTP/1.1", "Host: test"]
        if bearer:
            lines.append("Authorization: Bearer sesame")
        lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
        self.channel.dataReceived(("\r\n".join(lines) + "\r\n\r\n").encode())

    def head_body(self) -> tuple[bytes, bytes]:
        return dechunk(self.transport.value())

    def messages(self, event: str = None) -> list[dict]:
        msgs = parse_sse(self.head_body()[1])
        return [m for m in msgs if event is None or m.get("event") == event]

    def changes(self) -> list[list[dict]]:
        return [m["data"]["changes"] for m in self.messages("batch")]

    def hang_up(self) -> None:
        from twisted.internet.error import ConnectionDone
        from twisted.python.failure import Failure
        self.channel.connectionLost(Failure(ConnectionDone()))


class WebCase(MasterCase):
    interval = 0.1

    def setUp(self) -> None:
        super().setUp()
        self.api = self.master.api
        self.hub = ChangeHub(self.api, self.reactor, interval=self.interval, ring_size=50,
                             linger=60.0)
        self.addCleanup(self.hub.stop)
        self.resource = EventsResource(self.hub, auth, buffer_limit=4096)
        self.site = server.Site(self.resource, reactor=self.reactor)

    def connect(self, path: str = "/api/v1/events", **kw) -> Client:
        client = Client(self.site, path, **kw)
        self.reactor.advance(0)
        return client

    def submit(self, **body) -> str:
        body.setdefault("command", ["true"])
        d = self.api.submit(OPERATOR, body)
        self.reactor.advance(0)
        return self.successResultOf(d)["job_id"]

    def dag(self, name: str, jobs: list) -> str:
        d = self.api.submit_dag(OPERATOR, {"name": name, "jobs": jobs})
        self.reactor.advance(0)
        return self.successResultOf(d)["run_id"]


class ChangeFeedTests(WebCase):
    """MasterService.add_change_listener through MasterApi."""

    def test_each_change_once_per_turn_after_the_turn(self):
        heard = []
        self.api.add_change_listener(heard.append)
        w = self.worker("w1")
        d = self.api.submit(OPERATOR, {"command": ["true"]})
        self.assertEqual(heard[1:], [])  # not within the turn that made it
        self.reactor.advance(0)
        job_id = self.successResultOf(d)["job_id"]
        self.assertEqual(heard[-1], [("job", job_id), ("worker", "w1")])
        w.result(Op.JOB_COMPLETE, {"job_id": job_id, "attempt": 1, "exit_code": 0})
        self.assertEqual(heard[-1], [("job", job_id), ("worker", "w1")])
        run_id = self.dag("r", [{"id": "a", "command": ["true"]},
                                {"id": "g", "kind": "gate", "depends_on": ["a"]}])
        self.assertIn(("run", run_id), heard[-1])
        self.assertIn(("job", f"{run_id}/a"), heard[-1])
        # A gate that starts waiting moves in its run only (no dispatch, no end).
        w.result(Op.JOB_COMPLETE, {"job_id": f"{run_id}/a", "attempt": 1, "exit_code": 0})
        self.assertIn(("job", f"{run_id}/g"), heard[-1])
        self.assertEqual(self.master.scheduler.jobs[f"{run_id}/g"].state.value,
                         "WAITING_APPROVAL")

    def test_changes_are_told_once_durable(self):
        held = self.master.persistence = HeldPersistence(self.master.persistence)
        heard = []
        self.api.add_change_listener(heard.append)
        d = self.api.submit(OPERATOR, {"command": ["true"]})
        self.reactor.advance(0)
        self.assertEqual(heard, [])
        held.release()
        self.assertEqual(heard, [[("job", self.successResultOf(d)["job_id"])]])

    def test_nothing_noted_without_listeners(self):
        heard = []
        self.api.add_change_listener(heard.append)
        self.api.remove_change_listener(heard.append)
        self.api.submit(OPERATOR, {"command": ["true"]})
        # Within the turn of the change: nothing noted, nothing scheduled.
        self.assertEqual((self.master._changes, self.master._changes_call), ({}, None))
        self.reactor.advance(0)
        self.assertEqual(heard, [])

    def test_a_standalone_jobs_retry_is_a_change(self):
        # RUNNING -> PENDING of a job outside a run is announced by no decision.
        w = self.worker("w1")
        job_id = self.submit(retries=1)
        heard = []
        self.api.add_change_listener(heard.append)
        w.result(Op.JOB_COMPLETE, {"job_id": job_id, "attempt": 1, "exit_code": 3})
        self.assertIn(("job", job_id), heard[-1])
        self.assertEqual(self.master.scheduler.jobs[job_id].state.value, "PENDING")


class HubTests(WebCase):
    def test_many_changes_in_a_window_are_one_batch_with_the_last_state(self):
        w = self.worker("w1")
        client = self.connect()
        job_id = self.submit()  # the first change after a quiet spell goes at once
        [first] = client.changes()
        self.assertEqual({(c["kind"], c["id"], c["data"]["state"]) for c in first},
                         {("job", job_id, "RUNNING"), ("worker", "w1", "ALIVE")})
        w.result(Op.JOB_COMPLETE, {"job_id": job_id, "attempt": 1, "exit_code": 0})
        second = self.submit()  # dispatched to w1 now that it is free
        w.result(Op.JOB_COMPLETE, {"job_id": second, "attempt": 1, "exit_code": 7})
        self.assertEqual(len(client.changes()), 1)  # held: within the window
        self.reactor.advance(0.1)
        batches = client.changes()
        self.assertEqual(len(batches), 2)
        states = {(c["kind"], c["id"]): c["data"]["state"] for c in batches[1]}
        self.assertEqual(states, {("job", job_id): "COMPLETED", ("job", second): "FAILED",
                                  ("worker", "w1"): "ALIVE"})
        self.assertEqual(len(batches[1]), 3)  # each thing once
        self.assertEqual([c["data"]["busy"] for c in batches[1] if c["kind"] == "worker"],
                         [0])

    def test_a_batch_reports_nothing_before_it_is_durable(self):
        client = self.connect()
        self.submit(tags="nowhere")  # the leading batch: the next waits for the window
        job_id = self.submit(tags="nowhere")
        held = self.master.persistence = HeldPersistence(self.master.persistence)
        self.api.cancel(OPERATOR, job_id)  # read by the batch below, not yet durable
        self.reactor.advance(0.1)
        self.assertEqual(len(client.changes()), 1)
        held.release()
        self.assertEqual([c["data"]["state"] for c in client.changes()[-1]
                          if c["id"] == job_id], ["CANCELLED"])

    def test_ids_increase_and_a_resume_gets_what_was_missed(self):
        w = self.worker("w1")
        client = self.connect()
        a = self.submit()
        self.reactor.advance(0.1)
        [m1] = client.messages("batch")
        client.hang_up()
        self.assertEqual(self.hub.subscribers, 0)
        w.result(Op.JOB_COMPLETE, {"job_id": a, "attempt": 1, "exit_code": 0})
        self.reactor.advance(0.1)
        b = self.submit(tags="nowhere")  # stays PENDING
        self.reactor.advance(0.1)
        again = self.connect(headers={"Last-Event-ID": m1["id"]})
        [m2] = again.messages("batch")
        epoch, _, n1 = m1["id"].partition(".")
        self.assertEqual(m2["id"].partition(".")[0], epoch)
        self.assertGreater(int(m2["id"].partition(".")[2]), int(n1))
        got = {(c["kind"], c["id"]): c["data"]["state"] for c in m2["data"]["changes"]}
        self.assertEqual(got, {("job", a): "COMPLETED", ("worker", "w1"): "ALIVE",
                               ("job", b): "PENDING"})
        # Live ones follow the replay, with higher ids.
        self.api.cancel(OPERATOR, b)
        self.reactor.advance(0.1)
        m3 = again.messages("batch")[-1]
        self.assertGreater(int(m3["id"].partition(".")[2]), int(m2["id"].partition(".")[2]))
        self.assertEqual([c["data"]["state"] for c in m3["data"]["changes"]], ["CANCELLED"])
        # A resume from the newest id has nothing to replay.
        third = self.connect(headers={"Last-Event-ID": m3["id"]})
        self.assertEqual(third.messages("batch"), [])
        self.assertEqual(third.messages("reset"), [])

    def test_a_resume_from_too_long_ago_is_told_to_reload(self):
        client = self.connect()
        self.submit(tags="nowhere")
        self.reactor.advance(0.1)
        [m1] = client.messages("batch")
        for _ in range(60):  # the ring keeps 50 things
            self.submit(tags="nowhere")
            self.reactor.advance(0.1)
        late = self.connect(headers={"Last-Event-ID": m1["id"]})
        [reset] = late.messages("reset")
        self.assertEqual(late.messages("batch"), [])
        self.assertEqual(reset["id"], self.hub.last_id())
        # One still within the ring resumes.
        recent = client.messages("batch")[-20]
        self.assertEqual(self.connect(headers={"Last-Event-ID": recent["id"]})
                         .messages("reset"), [])
        # And an id of another master (restarted) or garbage resets too.
        for bad in ("0badc0de.3", "nonsense"):
            self.assertEqual(len(self.connect(headers={"Last-Event-ID": bad})
                                 .messages("reset")), 1)

    def test_a_resume_needs_every_thing_after_its_id(self):
        self.connect()
        for _ in range(60):  # one thing each (a job that stays PENDING); the ring keeps 50
            self.submit(tags="nowhere")
            self.reactor.advance(0.1)
        epoch = self.hub.epoch
        self.assertEqual([n for n, _ in self.hub.since(f"{epoch}.10")], list(range(11, 61)))
        self.assertIsNone(self.hub.since(f"{epoch}.9"))  # thing 10 is gone from the ring
        self.assertIsNone(self.hub.since(f"{epoch}.\u00b2"))  # a digit to str.isdigit, not int
        self.assertEqual(self.hub.since(f"{epoch}.60"), [])
        self.assertIsNone(self.hub.since(f"{epoch}.61"))

    def test_ids_issued_before_the_hub_stopped_following_do_not_resume(self):
        client = self.connect()
        self.submit(tags="nowhere")
        [m1] = client.messages("batch")
        client.hang_up()
        self.reactor.advance(60)  # the hub stops following the master
        self.submit(tags="nowhere")  # unseen by the hub
        again = self.connect(headers={"Last-Event-ID": m1["id"]})
        self.assertEqual(len(again.messages("reset")), 1)

    def test_filter_by_run_and_by_kind(self):
        self.worker("w1")
        runs = self.connect("/api/v1/events?run=RUNX")  # not there yet: nothing matches
        workers = self.connect("/api/v1/events?kind=worker")
        r1 = self.dag("r1", [{"id": "a", "command": ["true"]}, {"id": "g", "kind": "gate",
                                                              "depends_on": ["a"]}])
        self.dag("r2", [{"id": "b", "command": ["true"]}])
        self.reactor.advance(0.1)
        only_r1 = self.connect(f"/api/v1/events?run={r1}")
        self.api.cancel(OPERATOR, r1)
        self.reactor.advance(0.1)
        self.assertEqual(runs.changes(), [])
        kinds = {c["kind"] for batch in workers.changes() for c in batch}
        self.assertEqual(kinds, {"worker"})
        seen = [(c["kind"], c["id"]) for batch in only_r1.changes() for c in batch]
        self.assertEqual(set(seen), {("run", r1), ("job", f"{r1}/a"), ("gate", f"{r1}/g")})
        self.assertEqual(self.connect("/api/v1/events?kind=bogus").head_body()[0]
                         .split(b"\r\n")[0], b"HTTP/1.1 400 Bad Request")

    def test_clients_without_a_filter_share_one_encoding_of_a_batch(self):
        clients = [self.connect() for _ in range(3)]
        encoded = []
        real = events.sse
        self.patch(events, "sse", lambda *a: encoded.append(a[0]) or real(*a))
        job_id = self.submit(tags="nowhere")
        self.assertEqual(encoded, ["batch"])
        for client in clients:
            self.assertEqual([c["id"] for b in client.changes() for c in b], [job_id])

    def test_a_schedule_added_fired_and_removed(self):
        client = self.connect("/api/v1/events?kind=schedule")
        d = self.api.submit_dag(OPERATOR, {"name": "tick", "schedule": "* * * * *",
                                           "jobs": [{"id": "a", "command": ["true"]}]})
        self.reactor.advance(0)
        schedule_id = self.successResultOf(d)["schedule_id"]
        self.reactor.advance(61)  # it fires within the minute
        self.reactor.advance(0.1)
        self.api.remove_schedule(OPERATOR, schedule_id)
        self.reactor.advance(0.1)
        seen = [(c["id"], c["data"] and c["data"]["fired"]) for b in client.changes()
                for c in b]
        self.assertEqual(seen, [(schedule_id, 0), (schedule_id, 1), (schedule_id, None)])

    def test_a_client_that_does_not_read_is_dropped(self):
        client = self.connect()
        self.assertEqual(self.hub.subscribers, 1)
        client.transport.producer.pauseProducing()  # its send buffer is full
        for _ in range(40):
            self.submit(tags="nowhere", name="x" * 100)
            self.reactor.advance(0.1)
            if client.transport.disconnecting:
                break
        self.assertTrue(client.transport.disconnecting)
        [stream] = list(self.resource.streams) or [None]
        self.assertIsNone(stream)  # forgotten, with what it held
        self.assertEqual(self.hub.subscribers, 0)

    def test_a_paused_client_that_catches_up_gets_everything(self):
        client = self.connect()
        client.transport.producer.pauseProducing()
        job_id = self.submit(tags="nowhere")
        self.reactor.advance(0.1)
        self.assertEqual(client.changes(), [])
        client.transport.producer.resumeProducing()
        self.assertEqual([c["id"] for b in client.changes() for c in b], [job_id])
        self.assertFalse(client.transport.disconnecting)

    def test_ping_every_15_seconds_and_retry_hint(self):
        client = self.connect()
        self.assertEqual(client.messages()[0], {"retry": "2000"})
        head = client.head_body()[0]
        self.assertIn(b"content-type: text/event-stream", head.lower())
        self.reactor.advance(14.9)
        self.assertEqual(client.messages("ping"), [])
        self.reactor.advance(0.1)
        self.assertEqual(len(client.messages("ping")), 1)
        self.reactor.advance(15)
        self.assertEqual(len(client.messages("ping")), 2)

    def test_disconnect_unsubscribes_and_the_master_stops_noting_after_a_while(self):
        client = self.connect()
        self.assertEqual(len(self.master._change_listeners), 1)
        client.hang_up()
        self.assertEqual((self.hub.subscribers, self.resource.streams), (0, set()))
        self.reactor.advance(59)
        self.assertEqual(len(self.master._change_listeners), 1)  # a reconnect may resume
        self.reactor.advance(1)
        self.assertEqual(self.master._change_listeners, [])
        self.submit()
        self.assertEqual(self.master._changes, {})

    def test_a_client_gone_before_its_request_is_rendered_is_not_subscribed(self):
        from twisted.web.test.requesthelper import DummyChannel
        request = server.Request(DummyChannel(), False)
        request.requestHeaders.setRawHeaders(b"authorization", [b"Bearer sesame"])
        request.args = {}
        request._disconnected = True
        self.assertEqual(self.resource.render_GET(request), server.NOT_DONE_YET)
        self.assertEqual((self.hub.subscribers, self.resource.streams), (0, set()))
        self.assertEqual([c for c in self.reactor.getDelayedCalls()
                          if getattr(c.func, "__name__", "") == "_send_ping"], [])

    def test_no_token_is_401_json(self):
        client = self.connect(bearer=False)
        head, body = client.head_body()
        self.assertEqual(head.split(b"\r\n")[0], b"HTTP/1.1 401 Unauthorized")
        self.assertEqual(json.loads(body)["error"]["code"], "unauthenticated")
        self.assertEqual(self.hub.subscribers, 0)


class LogStreamTests(WebCase):
    def setUp(self) -> None:
        super().setUp()
        self.w = self.worker("w1")
        self.job_id = self.submit()

    def stream(self, query: str = "", **kw) -> Client:
        site = server.Site(LogStreamResource(self.api, auth, self.job_id, buffer_limit=4096),
                           reactor=self.reactor)
        client = Client(site, f"/api/v1/jobs/{self.job_id}/log/stream{query}", **kw)
        self.reactor.advance(0)
        return client

    def log(self, data: bytes) -> None:
        self.w.send(Op.LOG_BATCH, {"job_id": self.job_id, "attempt": 1,
                                   "chunks": [["out", data]]}, rid=False)

    def test_output_streams_with_offsets_and_ends_with_the_job(self):
        self.log(b"one\n")
        client = self.stream()
        self.log("two \u00e9".encode()[:-1])  # a character cut in two
        self.log("\u00e9".encode()[1:] + b"\n")
        self.w.result(Op.JOB_COMPLETE, {"job_id": self.job_id, "attempt": 1, "exit_code": 0})
        self.reactor.advance(0)
        logs = client.messages("log")
        self.assertEqual([(m["id"], m["data"]["offset"], m["data"]["text"]) for m in logs],
                         [("4", 0, "one\n"), ("8", 4, "two "), ("11", 8, "\u00e9\n")])
        [end] = client.messages("end")
        self.assertEqual(end["data"], {"state": "COMPLETED", "offset": 11})
        self.assertTrue(client.transport.value().endswith(b"0\r\n\r\n"))  # response over

    def test_a_client_that_does_not_drain_is_not_read_for(self):
        client = self.stream()
        client.transport.producer.pauseProducing()
        for i in range(3):
            self.log(b"x" * 1000)
            self.reactor.advance(0.05)
        self.assertEqual(client.messages("log"), [])
        # The piece read before the pause is held for it; nothing more is read meanwhile.
        stream = client.channel._channel._requestProducer
        self.assertLess(stream.held_bytes, 1100)
        client.transport.producer.resumeProducing()
        self.reactor.advance(0.05)
        self.assertEqual(sum(len(m["data"]["text"]) for m in client.messages("log")), 3000)

    def test_an_offset_or_last_event_id_resumes(self):
        self.log(b"abcdef")
        self.w.result(Op.JOB_COMPLETE, {"job_id": self.job_id, "attempt": 1, "exit_code": 0})
        self.reactor.advance(0)
        [m] = self.stream("?offset=2").messages("log")
        self.assertEqual((m["id"], m["data"]), ("6", {"offset": 2, "text": "cdef"}))
        [m] = self.stream(headers={"Last-Event-ID": "4"}).messages("log")
        self.assertEqual(m["data"]["text"], "ef")
        for bad in ("?offset=x", "?offset=%C2%B2"):  # "²" is a digit to str.isdigit
            self.assertEqual(self.stream(bad).head_body()[0].split(b"\r\n")[0],
                             b"HTTP/1.1 400 Bad Request", bad)

    def test_unknown_job_is_404_and_no_token_401(self):
        self.job_id = "nosuchjob"
        self.assertEqual(self.stream().head_body()[0].split(b"\r\n")[0],
                         b"HTTP/1.1 404 Not Found")
        self.assertEqual(self.stream(bearer=False).head_body()[0].split(b"\r\n")[0],
                         b"HTTP/1.1 401 Unauthorized")
