"""The reference implementation's text requests: job strings, and the master's frontend."""
from __future__ import annotations

import base64
import io
import json
import os
import subprocess
import sys
import zipfile

from twisted.internet import defer
from twisted.internet.address import IPv4Address, IPv6Address, UNIXAddress
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.trial.unittest import SynchronousTestCase

from titan.config import TEXT_FRAME_OPS, Config, MasterConfig
from titan.core import dag, events as ev
from titan.master.legacy import HITL_INTERVAL
from titan.master.peer import describe_uid
from titan.master.service import MasterService
from titan.protocols import codec, legacy as L
from titan.protocols.frame import FrameDecoder, encode_frame
from titan.protocols.opcodes import Op, op_name
from titan.master.api import OPERATOR

B64 = base64.b64encode(b"print(1)").decode()


def project_zip(files: dict) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        for name, content in files.items():
            z.writestr(name, content)
    return buf.getvalue()


class SplitTests(SynchronousTestCase):
    def test_jobs_joined_by_semicolons(self):
        a = L.run_payload("a", "a.py", b"1")
        b = L.run_payload("b", "b.py", b"2", parents=["a"], affinity=True)
        self.assertEqual(L.split_dag(L.dag_body([a, b])), [a, b])
        self.assertEqual(L.split_dag(f"{a};{b};"), [a, b])
        self.assertEqual(L.split_dag(f" ; {a} ;  ; {b} ; "), [a, b])
        self.assertEqual(L.split_dag(""), [])

    def test_a_semicolon_in_args_stays_there(self):
        for args in ["'x ; y'", '"x;y"', "x ; y", "a;b;c", "end ;", "; start", "x] ; y"]:
            a = L.run_payload("a", "a.py", b"1", args=args)
            b = L.run_payload("b", "b.py", b"2")
            self.assertEqual(L.split_dag(L.dag_body([a, b])), [a, b], args)

    def test_a_semicolon_in_a_file_name_stays_there(self):
        a = L.run_payload("a", "we;ird.py", b"1")
        self.assertEqual(L.split_dag(L.dag_body([a, a.replace("a|", "b|", 1)]))[0], a)


class JobStringTests(SynchronousTestCase):
    def test_run_payload(self):
        job = L.parse_job_string(
            f"extract|RUN_PAYLOAD|extract.py|--n 3 'two words'|{B64}|GENERAL|5|1500|[]")
        self.assertEqual(job, {
            "id": "extract", "depends_on": [], "priority": 5, "delay": 1.5, "tags": [],
            "retries": 3, "workspace": "shared",
            "script": {"name": "extract.py", "content": b"print(1)",
                       "args": ["--n", "3", "two words"]}})

    def test_the_references_defaults_retries_and_a_shared_workspace(self):
        """B10, B11: a failed job runs again 3 times before it is DEAD; scripts of a DAG
        share their run's directory, archives (unpacked) and gates do not."""
        zipped = project_zip({"main.py": "print(1)"})
        assets = {"p.zip": zipped}.get
        run = L.parse_job_string(f"r|RUN_PAYLOAD|r.py||{B64}|GENERAL|0|0|[]")
        service = L.parse_job_string(f"s|DEPLOY_PAYLOAD|s.py|{B64}|8080|GENERAL|0|0|[]")
        archive = L.parse_job_string("a|RUN_ARCHIVE|p.zip/main.py||GENERAL|0|0|[]", assets)
        zservice = L.parse_job_string(
            "z|START_ARCHIVE_SERVICE|p.zip/main.py||0|GENERAL|0|0|[]", assets)
        gate = L.parse_job_string(f"g|RUN_PAYLOAD|hitl_gate.py|g 60|{B64}|GENERAL|0|0|[]")
        self.assertEqual([j.get("retries") for j in (run, service, archive, zservice, gate)],
                         [3, None, 3, None, None])
        self.assertEqual([j.get("workspace") for j in (run, service, archive, zservice, gate)],
                         ["shared", "shared", "job", "job", None])
        spec = L.parse_dag(L.dag_body([L.run_payload("x", "x.py", b"1"),
                                       L.run_payload("y", "y.py", b"1", parents=["x"])]))
        template = dag.parse_dag(spec)
        self.assertEqual([(s.retries, s.workspace) for s in template.specs],
                         [(3, "shared"), (3, "shared")])
        job = L.parse_submit_job(f"RUN_PAYLOAD|r.py||{B64}|GENERAL", new_id=lambda: "j")
        self.assertEqual((job["jobs"][0]["retries"], job["jobs"][0]["workspace"]),
                         (3, "shared"))

    def test_parents_affinity_and_requirement(self):
        job = L.parse_job_string(
            f"DAG-t|RUN_PAYLOAD|t.sh||{B64}|GPU|0|0|[a, DAG-b,]|AFFINITY")
        self.assertEqual(job["id"], "t")
        self.assertEqual(job["depends_on"], ["a", "b"])
        self.assertEqual(job["affinity"], "parent")
        self.assertEqual(job["tags"], ["GPU"])
        self.assertEqual(job["script"]["args"], [])
        self.assertEqual(L.parse_job_string(f"t|RUN_PAYLOAD|t.sh||{B64}|GPU|0|0|[]|STICKY")
                         ["affinity"], "parent")
        self.assertNotIn("affinity", L.parse_job_string(
            f"t|RUN_PAYLOAD|t.sh||{B64}|general|0|0|[]"))

    def test_pipes_in_args_are_kept(self):
        job = L.parse_job_string(f"p|RUN_PAYLOAD|p.py|a | b 'c|d'|{B64}|GENERAL|1|0|[]")
        self.assertEqual(job["script"]["args"], ["a", "|", "b", "c|d"])

    def test_unicode(self):
        content = "print('héllo wörld ✓')\n".encode()
        s = L.run_payload("u", "naïve.py", content, args="'日本語' ünï ✓")
        job = L.parse_job_string(s)
        self.assertEqual(job["script"]["name"], "naïve.py")
        self.assertEqual(job["script"]["content"], content)
        self.assertEqual(job["script"]["args"], ["日本語", "ünï", "✓"])

    def test_the_older_layout(self):
        job = L.parse_job_string(f"old|GPU|RUN_PAYLOAD|o.py|x y|{B64}|2|0|[]")
        self.assertEqual((job["tags"], job["script"]["args"], job["priority"]),
                         (["GPU"], ["x", "y"], 2))

    def test_deploy_payload_is_a_service(self):
        job = L.parse_job_string(f"web|DEPLOY_PAYLOAD|web.py|{B64}|8085|GENERAL|1|0|[]")
        self.assertEqual((job["type"], job["port"], job["script"]["name"]),
                         ("service", "8085", "web.py"))
        job = L.parse_job_string(f"web|DEPLOY_PAYLOAD|web.py|{B64}|0|GENERAL|1|0|[]")
        self.assertEqual(job["port"], "auto")
        # As in the reference, a DAG's services stay up once the DAG is done.
        self.assertIs(job["persist"], True)

    def test_archives(self):
        data = project_zip({"src/main.py": "print('hi')", "lib/util.py": ""})
        assets = {"proj.zip": data}.get
        job = L.parse_job_string(L.run_archive("r", "proj.zip/src/main.py", args="1 'a b'"),
                                 assets)
        self.assertEqual(job["script"]["name"], L.ARCHIVE_LAUNCHER)
        self.assertEqual(job["script"]["args"], ["1", "a b"])
        self.assertIn(base64.b64encode(data), job["script"]["content"])
        svc = L.parse_job_string(L.start_archive_service("s", "proj.zip/src/main.py", "--x",
                                                         port=9000), assets)
        self.assertEqual((svc["type"], svc["port"], svc["script"]["args"], svc["persist"]),
                         ("service", "9000", ["--x"], True))

    def test_errors_name_the_job_and_the_field(self):
        data = project_zip({"main.py": ""})
        cases = [
            (f"j|RUN_PAYLOAD|a.py||{B64}|GENERAL|high|0|[]", "job j: priority must be a whole"),
            (f"j|RUN_PAYLOAD|a.py||{B64}|GENERAL|1|-5|[]", "job j: delay must be 0 or more"),
            (f"j|RUN_PAYLOAD|a.py||not*base64|GENERAL|1|0|[]", "job j: the content of a.py is "
                                                               "not valid base64"),
            (f"j|RUN_THING|a.py||{B64}|GENERAL|1|0|[]", "job j: unknown job type 'RUN_THING'"),
            (f"j|RUN_PAYLOAD|a.py||{B64}|GENERAL", "job j: a job string ends with"),
            (f"j k|RUN_PAYLOAD|a.py||{B64}|GENERAL|1|0|[]", "job j k: the id 'j k' must be"),
            (f"j|RUN_PAYLOAD|a.py||{B64}|GENERAL|1|0|[a b]", "job j: parent 'a b' must be"),
            (f"j|RUN_PAYLOAD|a.py|'open|{B64}|GENERAL|1|0|[]", "job j: args \"'open\": No "
                                                               "closing quotation"),
            (f"j|RUN_PAYLOAD|a.py|{B64}|1|0|[]", "job j: RUN_PAYLOAD takes FILE|ARGS|BASE64|"),
            (f"j|DEPLOY_PAYLOAD|w.py|{B64}|99999|GENERAL|1|0|[]", "job j: port must be"),
            ("j|RUN_ARCHIVE|proj.zip/main.py||GENERAL|1|0|[]", "job j: no uploaded asset "
                                                               "proj.zip"),
            ("j|RUN_ARCHIVE|proj/main.py||GENERAL|1|0|[]", "job j: the archive entry must be "
                                                           "PROJECT.zip/PATH"),
            ("j|RUN_ARCHIVE|p.zip/../x.py||GENERAL|1|0|[]", "job j: the archive entry '../x.py'"),
            ("j|RUN_ARCHIVE|p.zip/other.py||GENERAL|1|0|[]", "job j: p.zip has no file other.py"),
            ("j|RUN_ARCHIVE|bad.zip/main.py||GENERAL|1|0|[]", "job j: bad.zip is not a zip"),
            (f"j|RUN_PAYLOAD|missing.py|||GENERAL|1|0|[]", "job j: no content for missing.py"),
        ]
        assets = {"p.zip": data, "bad.zip": b"not a zip"}.get
        for text, message in cases:
            with self.assertRaises(L.ParseError, msg=text) as caught:
                L.parse_job_string(text, assets)
            self.assertTrue(str(caught.exception).startswith(message),
                            f"{text}: {caught.exception}")

    def test_a_script_over_the_limit(self):
        with self.assertRaises(L.ParseError) as caught:
            L.parse_job_string(L.run_payload("big", "b.py", b"x" * 100), max_script_bytes=50)
        self.assertIn("job big: its script is 100 bytes, over the 50-byte limit",
                      str(caught.exception))

    def test_deployed_script_when_no_content(self):
        job = L.parse_job_string("d|RUN_PAYLOAD|w.py|a||GENERAL|1|0|[]",
                                 {"w.py": b"print(2)"}.get)
        self.assertEqual(job["script"]["content"], b"print(2)")

    def test_the_reference_sdk_gate_becomes_a_gate(self):
        gate = L.parse_job_string(
            f"hitl-gate-p|RUN_PAYLOAD|hitl_gate.py|hitl-gate-p 3600 Ship it?|{B64}|GENERAL|"
            "1|0|[p]")
        self.assertEqual(gate, {"id": "hitl-gate-p", "kind": "gate", "depends_on": ["p"],
                                "message": "Ship it?", "timeout": 3600.0,
                                "on_timeout": "reject"})
        gate = L.parse_job_string(
            f"g|RUN_PAYLOAD|hitl_gate.py|g 60 Don't ship yet|{B64}|GENERAL|1|0|[]")
        self.assertEqual(gate["message"], "Don't ship yet")
        gate = L.parse_job_string(f"g|RUN_PAYLOAD|hitl_gate.py|g|{B64}|GENERAL|1|0|[]")
        self.assertEqual((gate["timeout"], gate["message"]),
                         (L.HITL_DEFAULT_WAIT, "Awaiting human approval"))

    def test_the_dag_spec_is_titans(self):
        data = project_zip({"main.py": ""})
        body = L.dag_body([
            L.run_payload("a", "a.py", b"1", priority=3, delay_ms=250),
            L.deploy_payload("svc", "s.py", b"2", port=8123, parents=["a"]),
            L.run_archive("r", "p.zip/main.py", "x", parents=["DAG-a"], requirement="GPU"),
            f"g|RUN_PAYLOAD|hitl_gate.py|g 60 ok?|{B64}|GENERAL|1|0|[r]",
        ])
        spec = L.parse_dag(body, {"p.zip": data}.get)
        self.assertEqual(spec["name"], L.RUN_NAME)
        template = dag.parse_dag(spec)
        specs = {s.job_id: s for s in template.specs}
        self.assertEqual(set(specs), {"a", "svc", "r", "g"})
        self.assertEqual((specs["a"].priority, specs["a"].delay), (3, 0.25))
        self.assertEqual((specs["svc"].kind, specs["svc"].port), ("service", "8123"))
        self.assertEqual(specs["r"].tags, frozenset({"GPU"}))
        self.assertEqual((specs["g"].kind, specs["g"].depends_on), ("gate", ("r",)))

    def test_submit_job_forms(self):
        spec = L.parse_submit_job(f"RUN_PAYLOAD|a.py|x|{B64}|GENERAL", new_id=lambda: "gen")
        self.assertEqual(spec["jobs"][0]["id"], "gen")
        job = L.parse_submit_job(f"mine|RUN_PAYLOAD|a.py|x|{B64}|GPU|7|2000")["jobs"][0]
        self.assertEqual((job["id"], job["priority"], job["delay"], job["tags"]),
                         ("mine", 7, 2.0, ["GPU"]))
        job = L.parse_submit_job(f"mine|RUN_PAYLOAD|a.py|x|{B64}|GPU|7")["jobs"][0]
        self.assertEqual((job["priority"], job["delay"]), (7, 0.0))
        job = L.parse_submit_job(L.run_payload("full", "a.py", b"1", priority=4))["jobs"][0]
        self.assertEqual((job["id"], job["priority"]), ("full", 4))
        with self.assertRaises(L.ParseError) as caught:
            L.parse_submit_job("hello world")
        self.assertIn("expected [ID|]JOBTYPE", str(caught.exception))


class LauncherTests(SynchronousTestCase):
    """The script a RUN_ARCHIVE job ships: it unpacks the project, runs the entry, tidies."""

    def run_launcher(self, files: dict, entry: str, args: list) -> tuple:
        launcher = L.archive_launcher("j", "proj.zip", entry, project_zip(files))
        work = self.mktemp()
        os.makedirs(work)
        path = os.path.abspath(self.mktemp() + "-launcher.py")
        with open(path, "wb") as f:
            f.write(launcher)
        result = subprocess.run([sys.executable, path, *args], cwd=work, capture_output=True,
                                timeout=60)
        return result, work

    def test_runs_the_entry_with_args_from_the_project_root(self):
        result, work = self.run_launcher({
            "src/main.py": "import sys, os\nfrom helper import VALUE\n"
                           "print(VALUE, sys.argv[1:], open('data/in.txt').read())\n"
                           "open('out.txt', 'w').write('made')\nsys.exit(3)\n",
            "src/helper.py": "VALUE = 'héllo'\n",
            "data/in.txt": "input",
        }, "src/main.py", ["a b", "✓"])
        self.assertEqual(result.returncode, 3, result.stderr)
        self.assertEqual(result.stdout.decode(), "héllo ['a b', '✓'] input\n")
        # What it unpacked is gone; what the entry wrote stays.
        self.assertEqual(os.listdir(work), ["out.txt"])

    def test_shell_entries(self):
        result, work = self.run_launcher({"run.sh": "echo sh \"$@\"\n"}, "run.sh", ["x"])
        self.assertEqual((result.returncode, result.stdout), (0, b"sh x\n"), result.stderr)


# -- the frontend ---------------------------------------------------------------------------

class FakeStore:
    """The store commands the frontend uses, on dicts; `writes` lists every (key, value)
    the master wrote, and `on_get` may play a writer that comes in right after a GET."""

    def __init__(self) -> None:
        self.data: dict = {}
        self.sets: dict = {}
        self.writes: list = []
        self.on_get = None

    def _put(self, key, value) -> None:
        value = value.encode() if isinstance(value, str) else value
        self.data[key] = value
        self.writes.append((key, value))

    def set(self, key, value, nx=False, ex=None):
        if nx and key in self.data:
            return defer.succeed(False)
        self._put(key, value)
        return defer.succeed(True if nx else None)

    def get(self, key):
        value = self.data.get(key)
        if self.on_get is not None:
            self.on_get(key)
        return defer.succeed(value)

    def delete(self, *keys):
        return defer.succeed(sum(1 for k in keys if self.data.pop(k, None) is not None))

    def execute(self, command, *args):
        assert command == "GETSET", command
        old = self.data.get(args[0])
        self._put(*args)
        return defer.succeed(old)

    def sadd(self, key, member):
        members = self.sets.setdefault(key, set())
        member = member.encode() if isinstance(member, str) else member
        added = member not in members
        members.add(member)
        return defer.succeed(int(added))

    def smembers(self, key):
        return defer.succeed(set(self.sets.get(key, ())))


class FrontendTests(SynchronousTestCase):
    text_frames = "on"

    def setUp(self) -> None:
        self.reactor = MemoryReactorClock()
        self.data_dir = self.mktemp()
        config = Config(token="sesame", master=MasterConfig(
            listen="tcp:0:interface=127.0.0.1", data_dir=self.data_dir,
            text_frames=self.text_frames))
        self.master = MasterService(config, reactor=self.reactor)
        self.legacy = self.master.legacy
        # The peers of these in-memory connections run as the master's user unless a test
        # says otherwise (what titan/master/peer.py finds for a real socket).
        self.peer_uids: dict = {}
        self.patch(self.legacy, "peer_uid", lambda transport: self.peer_uids.get(
            getattr(transport.getPeer(), "port", None), self.legacy.own_uid))
        self.stderr = io.StringIO()
        self.patch(sys, "__stderr__", self.stderr)
        self.master.privilegedStartService()
        self.master.startService()
        self.addCleanup(self.master.stopService)

    def connect(self, peer=None):
        proto = self.master.listener.factory.buildProtocol(None)
        transport = StringTransport(peerAddress=peer or IPv4Address("TCP", "127.0.0.1", 40000))
        proto.makeConnection(transport)
        received = proto.dataReceived

        def data_received(data: bytes) -> None:
            received(data)
            self.reactor.advance(0)  # the turn's records are written; replies go out

        proto.dataReceived = data_received
        return proto, transport

    def replies(self, transport) -> list:
        return [(f.opcode, f.flags, f.body) for f in FrameDecoder().feed(transport.value())]

    def ask(self, op: int, text, peer=None) -> tuple[int, str]:
        proto, transport = self.connect(peer)
        body = text.encode() if isinstance(text, str) else text
        proto.dataReceived(encode_frame(op, body, flags=0))
        replies = self.replies(transport)
        self.assertEqual(len(replies), 1, replies)
        opcode, flags, data = replies[0]
        self.assertEqual(flags, 0)
        self.assertTrue(transport.disconnecting, "one request per connection")
        return opcode, data.decode("utf-8")

    def ok(self, op: int, text="") -> str:
        opcode, reply = self.ask(op, text)
        self.assertEqual(opcode, Op.ACK, reply)
        return reply

    def error(self, op: int, text="") -> str:
        opcode, reply = self.ask(op, text)
        self.assertEqual(opcode, Op.ERROR, reply)
        return reply

    def state(self, ref: str) -> str:
        return self.ok(Op.GET_JOB_STATUS, ref)

    # --

    def test_submit_dag_and_address_its_jobs(self):
        body = L.dag_body([L.run_payload("a", "a.py", b"1"),
                           L.run_payload("b", "b.py", b"2", parents=["a"])])
        self.assertEqual(self.ok(Op.SUBMIT_DAG, body), "DAG_ACCEPTED")
        key = self.legacy.job_key("DAG-b")
        self.assertTrue(key.startswith("legacy-") and key.endswith("/b"), key)
        job = self.master.scheduler.jobs[key]
        self.assertEqual((job.spec.script_name, job.spec.depends_on), ("b.py", ("a",)))
        self.assertEqual(self.state("DAG-a"), "PENDING")
        self.assertEqual(self.state("a"), "PENDING")
        self.assertEqual(self.state(key), "PENDING")
        self.assertEqual(self.state("DAG-nope"), "NULL")
        # The same id again: DAG-a is the newer job.
        self.ok(Op.SUBMIT_DAG, L.run_payload("a", "a.py", b"1"))
        self.assertNotEqual(self.legacy.job_key("DAG-a").split("/")[0], key.split("/")[0])

    def test_ids_still_resolve_after_a_restart(self):
        self.ok(Op.SUBMIT_DAG, L.run_payload("solo", "a.py", b"1"))
        key = self.legacy.job_key("DAG-solo")
        self.legacy.nodes.clear()  # what a restart loses
        self.assertEqual(self.legacy.job_key("DAG-solo"), key)

    def test_submit_job(self):
        self.assertEqual(self.ok(Op.SUBMIT_JOB, f"one|RUN_PAYLOAD|a.py|x|{B64}|GENERAL|3"),
                         "JOB_ACCEPTED")
        job = self.master.scheduler.jobs[self.legacy.job_key("DAG-one")]
        self.assertEqual((job.spec.priority, job.spec.command), (3, ("x",)))
        self.assertEqual(self.ok(Op.SUBMIT_JOB, f"RUN_PAYLOAD|a.py||{B64}|GENERAL"),
                         "JOB_ACCEPTED")

    def test_refusals_are_errors_with_the_reason(self):
        cycle = L.dag_body([L.run_payload("x", "a.py", b"1", parents=["y"]),
                            L.run_payload("y", "b.py", b"2", parents=["x"])])
        self.assertEqual(self.error(Op.SUBMIT_DAG, cycle), "ERROR: cycle: x -> y -> x")
        self.assertEqual(self.error(Op.SUBMIT_DAG, L.run_payload("x", "a.py", b"1",
                                                                 parents=["ghost"])),
                         "ERROR: job x depends on unknown job 'ghost'")
        self.assertEqual(self.error(Op.SUBMIT_DAG, "a|RUN_PAYLOAD|a.py||%%|GENERAL|1|0|[]"),
                         "ERROR: job a: the content of a.py is not valid base64")
        self.assertEqual(self.error(Op.SUBMIT_DAG, " ; "),
                         "ERROR: SUBMIT_DAG: the body holds no job string")
        self.assertEqual(self.master.scheduler.jobs, {})
        self.assertEqual(self.error(Op.HEARTBEAT, "x"),
                         "ERROR: HEARTBEAT is not served as a text frame")
        opcode, reply = self.ask(Op.STATS, b"\xff\xfe")
        self.assertEqual(opcode, Op.ERROR)
        self.assertTrue(reply.startswith("ERROR: the body is not UTF-8 text"), reply)

    def test_cancel_cascades_and_status_shows_it(self):
        self.ok(Op.SUBMIT_DAG, L.dag_body([L.run_payload("a", "a.py", b"1"),
                                           L.run_payload("b", "b.py", b"2", parents=["a"])]))
        self.assertEqual(self.ok(Op.CANCEL_JOB, "DAG-a"), "CANCELLED")
        self.assertEqual(self.state("DAG-b"), "CANCELLED")
        self.assertEqual(self.ok(Op.CANCEL_JOB, "DAG-b"), "CANCELLED")
        self.assertEqual(self.error(Op.CANCEL_JOB, "DAG-ghost"), "NOT_FOUND")

    def test_stop(self):
        self.ok(Op.SUBMIT_DAG, L.deploy_payload("web", "web.py", b"1", port=8123))
        job = self.master.scheduler.jobs[self.legacy.job_key("DAG-web")]
        self.assertEqual((job.spec.kind, job.spec.port), ("service", "8123"))
        self.assertEqual(self.ok(Op.STOP, "DAG-web"), "STOPPED: DAG-web")
        self.assertEqual(self.state("DAG-web"), "CANCELLED")
        self.assertEqual(self.error(Op.STOP, "DAG-web"),
                         "ERROR: Service DAG-web is not running (CANCELLED)")
        self.assertEqual(self.error(Op.STOP, "DAG-ghost"), "ERROR: Service DAG-ghost not found")
        self.assertEqual(self.error(Op.STOP, ""), "ERROR: Missing Service ID")

    def test_logs_are_utf8_and_lengths_are_bytes(self):
        self.ok(Op.SUBMIT_DAG, L.run_payload("a", "a.py", b"1"))
        key = self.legacy.job_key("DAG-a")
        text = "naïve ✓ 日本語\n"
        self.master.logs_received(key, [["out", text.encode()], ["err", b"\xff\n"]])
        proto, transport = self.connect()
        proto.dataReceived(encode_frame(Op.GET_LOGS, b"DAG-a", flags=0))
        raw = transport.value()
        body = (text + "\ufffd\n").encode()
        self.assertEqual(raw, encode_frame(Op.ACK, body, flags=0))
        self.assertEqual(int.from_bytes(raw[4:8], "big"), len(body))
        self.assertEqual(self.error(Op.GET_LOGS, "DAG-ghost"), "ERROR: no job DAG-ghost")

    def test_one_request_per_connection(self):
        proto, transport = self.connect()
        proto.dataReceived(encode_frame(Op.STATS_JSON, b"", flags=0) +
                           encode_frame(Op.STATS, b"", flags=0))
        replies = self.replies(transport)
        self.assertEqual(len(replies), 1)
        self.assertEqual(json.loads(replies[0][2])["active_workers"], 0)
        self.assertTrue(transport.disconnecting)

    def test_on_serves_the_masters_own_user_only(self):
        # Issue 15, 1: a peer of another uid (found from the kernel's socket tables for TCP,
        # SO_PEERCRED for a UNIX socket; injected here) is refused; so is one whose user
        # cannot be told (another machine).  The master's own user is served.
        own = self.legacy.own_uid
        self.peer_uids.update({5001: own + 1, 5002: None})
        for peer in (IPv4Address("TCP", "127.0.0.1", 5000), IPv6Address("TCP", "::1", 5000),
                     UNIXAddress(b"/tmp/s")):
            self.assertEqual(self.ask(Op.STATS, "", peer=peer)[0], Op.ACK, peer)
        opcode, reply = self.ask(Op.SUBMIT_DAG, L.run_payload("x", "x.sh", b"id"),
                                 peer=IPv4Address("TCP", "127.0.0.1", 5001))
        self.assertEqual(opcode, Op.ERROR)
        self.assertEqual(reply, "ERROR: text frames are served only to processes of the "
                                f"master's user ({describe_uid(own)}) on this machine, not to "
                                f"127.0.0.1, run by {describe_uid(own + 1)} "
                                "(master.text_frames: on)")
        opcode, reply = self.ask(Op.STATS, "", peer=IPv4Address("TCP", "10.1.2.3", 5002))
        self.assertEqual((opcode, reply), (
            Op.ERROR, "ERROR: text frames are served only to processes of the master's user "
                      f"({describe_uid(own)}) on this machine, not to 10.1.2.3, whose user "
                      "cannot be told (another machine, or a socket already closed) "
                      "(master.text_frames: on)"))
        self.assertEqual(self.master.scheduler.jobs, {})  # nothing of the refused DAG ran

    def test_on_is_loud(self):
        warning = self.legacy.warning()
        self.assertIn("text frames are on (master.text_frames: on)", warning)
        self.assertIn(f"titan-master: WARNING: {warning}\n", self.stderr.getvalue())
        proto, transport = self.connect()
        proto.dataReceived(encode_frame(Op.HELLO, codec.pack({"rid": 1, "token": "sesame"})))
        proto.dataReceived(encode_frame(Op.LIST_WORKERS, codec.pack({"rid": 2})))
        frames = FrameDecoder().feed(transport.value())
        self.assertEqual(codec.unpack(frames[-1].body)["result"]["warnings"], [warning])
        self.assertEqual(self.master.api.stats(OPERATOR)["text_frames"], "on")

    def test_only_the_configured_operations(self):
        self.patch(self.master, "config", self.master.config.override(
            "master", text_frame_ops=("GET_JOB_STATUS",)))
        self.assertEqual(self.state("DAG-x"), "NULL")
        self.assertEqual(self.error(Op.KV_SET, "k|v"),
                         "ERROR: KV_SET is not served as a text frame on this master "
                         "(master.text_frame_ops)")
        self.assertEqual(self.error(Op.SUBMIT_DAG, L.run_payload("x", "x.sh", b"id")),
                         "ERROR: SUBMIT_DAG is not served as a text frame on this master "
                         "(master.text_frame_ops)")
        self.assertEqual(self.master.scheduler.jobs, {})

    def test_the_config_names_every_operation_served(self):
        self.assertEqual({op_name(op) for op in self.legacy._handlers}, set(TEXT_FRAME_OPS))

    def test_policy_from_the_config(self):
        for value, policy in [("off", "off"), ("ON", "on"), ("on", "on"), (True, "on"),
                              (False, "off"), ("loopback", "off"), ("nonsense", "off")]:
            self.patch(self.master, "config", _Config(value))
            self.assertEqual(self.legacy.policy(), policy)

    def test_structured_frames_are_untouched(self):
        proto, transport = self.connect()
        proto.dataReceived(encode_frame(Op.HELLO, codec.pack({"rid": 1, "token": "sesame"})))
        frame = FrameDecoder().feed(transport.value())[0]
        self.assertEqual((frame.opcode, codec.unpack(frame.body)["rid"]), (Op.ACK, 1))

    def test_assets(self):
        data = "héllo ✓".encode()
        self.assertEqual(self.ok(Op.UPLOAD_ASSET,
                                 "notes ✓.txt|" + base64.b64encode(data).decode()),
                         "UPLOAD_SUCCESS")
        self.assertEqual(base64.b64decode(self.ok(Op.FETCH_ASSET, "notes ✓.txt")), data)
        self.assertEqual(self.error(Op.FETCH_ASSET, "nothing.txt"), "ERROR_NOT_FOUND")
        self.assertEqual(self.error(Op.FETCH_ASSET, "../master.port"), "ERROR_NOT_FOUND")
        self.assertEqual(self.error(Op.UPLOAD_ASSET, "../x|aGk="),
                         "ERROR: '../x' is not a plain file name")
        self.assertEqual(self.error(Op.UPLOAD_ASSET, "x|not base64!"),
                         "ERROR: the content of x is not valid base64")
        self.assertEqual(self.error(Op.UPLOAD_ASSET, "x"), "ERROR: UPLOAD_ASSET takes NAME|BASE64")
        self.assertEqual(sorted(os.listdir(os.path.join(self.data_dir, "assets"))),
                         ["notes ✓.txt"])

    def test_deployed_scripts_and_archives(self):
        self.assertEqual(self.ok(Op.DEPLOY_SCRIPT, "w.py|" + B64), "DEPLOY_SUCCESS")
        self.ok(Op.SUBMIT_DAG, "d|RUN_PAYLOAD|w.py|||GENERAL|1|0|[]")
        self.assertEqual(self.master.scheduler.jobs[self.legacy.job_key("d")].spec.script,
                         b"print(1)")
        data = project_zip({"app/main.py": "print(1)"})
        self.ok(Op.UPLOAD_ASSET, "proj.zip|" + base64.b64encode(data).decode())
        self.ok(Op.SUBMIT_DAG, L.run_archive("r", "proj.zip/app/main.py", "--fast 1"))
        spec = self.master.scheduler.jobs[self.legacy.job_key("r")].spec
        self.assertEqual((spec.script_name, spec.command), (L.ARCHIVE_LAUNCHER,
                                                            ("--fast", "1")))
        self.assertEqual(self.error(Op.SUBMIT_DAG, L.run_archive("r2", "none.zip/x.py")),
                         "ERROR: job r2: no uploaded asset none.zip (upload the project with "
                         "UPLOAD_ASSET first)")

    def test_the_store_ops_without_a_store(self):
        for op, text in [(Op.KV_SET, "k|v"), (Op.KV_GET, "k"), (Op.KV_SADD, "s|m"),
                         (Op.KV_SMEMBERS, "s")]:
            self.assertEqual(self.error(op, text), "ERROR: the store is not configured")

    def test_the_store_ops(self):
        self.master.store = store = FakeStore()
        self.assertEqual(self.ok(Op.KV_GET, "k"), "NULL")
        self.assertEqual(self.ok(Op.KV_SET, "k|a|b ✓"), "OK")
        self.assertEqual(store.data["k"], "a|b ✓".encode())
        self.assertEqual(self.ok(Op.KV_GET, "k"), "a|b ✓")
        self.assertEqual(self.ok(Op.KV_SMEMBERS, "s"), "")
        self.assertEqual(self.ok(Op.KV_SADD, "s|b"), "1")
        self.assertEqual(self.ok(Op.KV_SADD, "s|a"), "1")
        self.assertEqual(self.ok(Op.KV_SADD, "s|a"), "0")
        self.assertEqual(self.ok(Op.KV_SMEMBERS, "s"), "a,b")
        self.assertEqual(self.error(Op.KV_SET, "novalue"), "ERROR: KV_SET takes KEY|VALUE")
        self.assertEqual(self.error(Op.KV_GET, ""), "ERROR: a key is required")

    def test_stats_name_workers_and_services(self):
        proto, transport = self.connect()
        proto.dataReceived(encode_frame(Op.REGISTER, codec.pack({
            "rid": 1, "token": "sesame", "worker_id": "w1", "name": "w1", "slots": 2,
            "tags": ["GPU"]})))
        self.ok(Op.SUBMIT_DAG, L.deploy_payload("web", "web.py", b"1", port=8123))
        stats = json.loads(self.ok(Op.STATS_JSON))
        self.assertEqual(stats["active_workers"], 1)
        worker, = stats["workers"]
        self.assertEqual((worker["name"], worker["capabilities"], worker["load"],
                          worker["services"]), ("w1", "GPU", "1/2", ["DAG-web"]))
        text = self.ok(Op.STATS)
        self.assertIn("--- TITAN SYSTEM MONITOR ---", text)
        self.assertIn("[w1] Load: 1/2 (50%)", text)
        self.assertIn("Service ID: DAG-web", text)

    def test_gates_through_the_store(self):
        self.master.store = store = FakeStore()
        key = L.hitl_key
        # Left by earlier gates of these names: not these gates' decisions.
        store.data[key("review")] = b"APPROVED"
        store.data[key("veto")] = b"CLEARED"  # what the reference's SDK writes
        self.ok(Op.SUBMIT_DAG, L.dag_body([
            f"review|RUN_PAYLOAD|hitl_gate.py|review 600 Ship it?|{B64}|GENERAL|1|0|[]",
            f"veto|RUN_PAYLOAD|hitl_gate.py|veto 600 Sure?|{B64}|GENERAL|1|0|[]",
            L.run_payload("after", "a.py", b"1", parents=["review"])]))
        self.assertNotIn(key("review"), store.data)  # cleared as the run was submitted
        self.assertEqual(self.state("DAG-review"), "RUNNING")
        self.reactor.advance(HITL_INTERVAL)
        self.assertEqual(self.state("DAG-review"), "RUNNING")
        self.assertEqual(store.data[key("review")], b"WAITING")
        self.assertEqual(store.data["titan:hitl:message:review"], b"Ship it?")
        self.assertEqual(store.sets["titan:hitl:queue"], {b"review", b"veto"})
        store.data[key("review")] = b"APPROVED"
        self.master.api.decide_gate(OPERATOR, self.legacy.job_key("veto"), False, "bob", "no")
        self.reactor.advance(HITL_INTERVAL)
        self.assertEqual(self.state("DAG-review"), "COMPLETED")
        gate = self.master.api.job_info(OPERATOR, self.legacy.job_key("review"))
        self.assertEqual(gate["decision"]["by"], "store")
        # Who made it, as far as the master can tell (issue 15, 2).
        self.assertEqual(gate["decision"]["via"], "store key titan:hitl:status:review, set "
                                                  "by a write straight to the store (not "
                                                  "through the master)")
        self.assertEqual(store.data[key("veto")], b"REJECTED")
        self.reactor.advance(HITL_INTERVAL)
        self.assertEqual(store.data[key("review")], b"APPROVED")

    # -- issue 15, 2: who decides a gate, and a job never does -----------------------------

    def hello(self, token: str, peer=None):
        proto, transport = self.connect(peer)
        proto.dataReceived(encode_frame(Op.HELLO, codec.pack({"rid": 1, "token": token})))
        return proto, transport

    def call(self, proto, transport, op: int, body: dict) -> dict:
        proto.dataReceived(encode_frame(op, codec.pack({"rid": 2, **body})))
        return codec.unpack(FrameDecoder().feed(transport.value())[-1].body)

    def test_a_text_frame_kv_set_decides_a_gate_and_is_named(self):
        store = self.gated("kv")
        self.finish("DAG-kv-before")
        self.reactor.advance(HITL_INTERVAL)
        self.assertEqual(self.ok(Op.KV_SET, f"{L.hitl_key('kv')}|APPROVED"), "OK")
        self.reactor.advance(HITL_INTERVAL)
        self.assertEqual(self.state("DAG-kv"), "COMPLETED")
        decision = self.master.api.job_info(OPERATOR, self.legacy.job_key("kv"))["decision"]
        self.assertEqual((decision["approved"], decision["by"]), (True, "store"))
        self.assertEqual(decision["via"], "store key titan:hitl:status:kv, set by a text "
                                          "frame KV_SET from 127.0.0.1:40000 "
                                          f"({describe_uid(self.legacy.own_uid)})")
        self.assertEqual(store.data[L.hitl_key("kv")], b"APPROVED")

    def test_a_cluster_token_decision_names_the_credential(self):
        self.gated("ct")
        self.finish("DAG-ct-before")
        proto, transport = self.hello("sesame", IPv4Address("TCP", "127.0.0.1", 40001))
        reply = self.call(proto, transport, Op.DECIDE_GATE, {
            "job_id": self.legacy.job_key("ct"), "approved": False, "by": "alice"})
        self.assertEqual(reply["result"]["state"], "CANCELLED", reply)
        decision = self.master.api.job_info(OPERATOR, self.legacy.job_key("ct"))["decision"]
        self.assertEqual((decision["by"], decision["via"]),
                         ("alice", "cluster token from 127.0.0.1"))

    def test_a_jobs_token_may_not_write_gate_keys(self):
        from titan.auth import job_token
        store = self.gated("jt")
        job = self.master.scheduler.jobs[self.legacy.job_key("DAG-jt-before")]
        self.master.handle(ev.JobStarted(job.job_id, "w1", job.attempt))
        proto, transport = self.hello(job_token("sesame", job.job_id, job.attempt))
        for op, body in [(Op.KV_SET, {"key": L.hitl_key("jt"), "value": "APPROVED"}),
                         (Op.KV_SADD, {"key": "titan:hitl:queue", "member": "jt"})]:
            reply = self.call(proto, transport, op, body)
            self.assertEqual(reply.get("code"), "forbidden", reply)
            self.assertIn(f"a job's own token may not {op_name(op)} '{body['key']}'",
                          reply["message"])
        self.assertNotIn(L.hitl_key("jt"), store.data)
        self.assertNotIn("titan:hitl:queue", store.sets)
        # Its other keys are its own business.
        reply = self.call(proto, transport, Op.KV_SET, {"key": "mine", "value": "1"})
        self.assertNotIn("code", reply)
        self.assertEqual(store.data["mine"], b"1")

    # -- A3: a decision written by anyone is never written over ------------------------------

    def worker(self, slots: int = 2) -> None:
        proto, _ = self.connect()
        proto.dataReceived(encode_frame(Op.REGISTER, codec.pack({
            "rid": 1, "token": "sesame", "worker_id": "w1", "name": "w1", "slots": slots})))

    def finish(self, ref: str, exit_code: int = 0) -> None:
        job = self.master.scheduler.jobs[self.legacy.job_key(ref)]
        self.master.handle(ev.JobFinished(job.job_id, job.worker_id, job.attempt, exit_code))
        self.reactor.advance(0)

    def gated(self, gate: str) -> FakeStore:
        """before -> gate -> after, `before` running on w1, with a store."""
        self.master.store = store = FakeStore()
        self.worker()
        self.ok(Op.SUBMIT_DAG, L.dag_body([
            L.run_payload(f"{gate}-before", "b.py", b"1"),
            f"{gate}|RUN_PAYLOAD|hitl_gate.py|{gate} 600 Go?|{B64}|GENERAL|1|0|"
            f"[{gate}-before]",
            L.run_payload(f"{gate}-after", "a.py", b"1", parents=[gate])]))
        self.assertEqual(self.state(f"DAG-{gate}-before"), "RUNNING")
        return store

    def assertNeverOverwritten(self, store: FakeStore, key: str, decision: bytes) -> None:
        self.assertEqual([v for k, v in store.writes if k == key], [decision])

    def test_an_approval_before_the_gate_starts_decides_it_when_it_starts(self):
        store = self.gated("early")
        self.reactor.advance(HITL_INTERVAL)  # mirrorings while the parent runs
        store.data[L.hitl_key("early")] = b"APPROVED"  # KV_SET, redis-cli, a dashboard
        self.reactor.advance(HITL_INTERVAL)
        self.assertEqual(self.state("DAG-early"), "PENDING")
        self.finish("DAG-early-before")
        self.reactor.advance(HITL_INTERVAL)  # the first mirroring of the waiting gate
        self.assertEqual(self.state("DAG-early"), "COMPLETED")
        self.assertEqual(self.state("DAG-early-after"), "RUNNING")
        gate = self.master.api.job_info(OPERATOR, self.legacy.job_key("DAG-early"))
        self.assertEqual((gate["decision"]["by"], gate["decision"]["comment"]),
                         ("store", "titan:hitl:status:early set to APPROVED"))
        self.reactor.advance(HITL_INTERVAL)  # the outcome mirrored
        self.assertEqual(store.data[L.hitl_key("early")], b"APPROVED")
        self.assertNotIn((L.hitl_key("early"), b"WAITING"), store.writes)

    def test_a_rejection_right_after_the_parent_completes_is_not_lost(self):
        store = self.gated("quick")
        self.finish("DAG-quick-before")
        self.assertEqual(self.state("DAG-quick"), "RUNNING")  # waiting: not yet mirrored
        store.data[L.hitl_key("quick")] = b"REJECTED"
        self.reactor.advance(HITL_INTERVAL)
        self.assertEqual(self.state("DAG-quick"), "CANCELLED")
        self.assertEqual(self.state("DAG-quick-after"), "CANCELLED")
        self.reactor.advance(HITL_INTERVAL)
        self.assertEqual(store.data[L.hitl_key("quick")], b"REJECTED")
        self.assertNotIn((L.hitl_key("quick"), b"WAITING"), store.writes)

    def test_cleared_becomes_waiting_and_a_decision_in_between_still_counts(self):
        store = self.gated("racy")
        store.data[L.hitl_key("racy")] = b"CLEARED"  # the reference SDK's, after the submit
        key = L.hitl_key("racy")

        def approve_after_the_get(k):  # someone approves between the GET and the GETSET
            if k == key and store.data.get(k) == b"CLEARED":
                store.data[k] = b"APPROVED"
        store.on_get = approve_after_the_get
        self.finish("DAG-racy-before")
        self.reactor.advance(HITL_INTERVAL)
        self.assertEqual(self.state("DAG-racy"), "COMPLETED")
        self.reactor.advance(HITL_INTERVAL)
        self.assertEqual(store.data[key], b"APPROVED")

        # Without a decision, CLEARED becomes WAITING (the reference's dashboard lists only
        # gates that say WAITING).
        store = self.gated("calm")
        store.data[L.hitl_key("calm")] = b"CLEARED"
        self.finish("DAG-calm-before")
        self.reactor.advance(HITL_INTERVAL)
        self.assertEqual(store.data[L.hitl_key("calm")], b"WAITING")
        self.assertEqual(self.state("DAG-calm"), "RUNNING")

    def test_a_new_run_of_a_gate_is_not_decided_by_the_last_ones_outcome(self):
        store = self.gated("again")
        self.finish("DAG-again-before")
        store.data[L.hitl_key("again")] = b"APPROVED"
        self.reactor.advance(HITL_INTERVAL)
        self.assertEqual(self.state("DAG-again"), "COMPLETED")
        self.reactor.advance(HITL_INTERVAL)
        self.assertEqual(store.data[L.hitl_key("again")], b"APPROVED")
        # The same DAG again: its gate waits for a decision of its own.
        self.ok(Op.SUBMIT_DAG, L.dag_body([
            f"again|RUN_PAYLOAD|hitl_gate.py|again 600 Go?|{B64}|GENERAL|1|0|[]"]))
        self.reactor.advance(HITL_INTERVAL)
        self.assertEqual(self.state("DAG-again"), "RUNNING")
        self.assertEqual(store.data[L.hitl_key("again")], b"WAITING")

    def test_a_recovered_gate_keeps_a_decision_written_while_the_master_was_down(self):
        store = self.gated("down")
        self.finish("DAG-down-before")
        self.reactor.advance(HITL_INTERVAL)
        self.assertEqual(store.data[L.hitl_key("down")], b"WAITING")
        self.master.stopService()
        store.data[L.hitl_key("down")] = b"APPROVED"
        config = self.master.config
        self.master = MasterService(config, reactor=self.reactor)
        self.master.store = store
        self.master.privilegedStartService()
        self.master.startService()
        self.addCleanup(self.master.stopService)
        self.legacy = self.master.legacy
        self.patch(self.legacy, "peer_uid", lambda transport: self.legacy.own_uid)
        self.reactor.advance(HITL_INTERVAL)
        self.assertEqual(self.state("DAG-down"), "COMPLETED")

    def test_a_scheduled_run_clears_its_gates_keys_when_it_starts(self):
        self.master.store = store = FakeStore()
        store.data[L.hitl_key("nightly-ok")] = b"APPROVED"  # yesterday's run's outcome
        self.successResultOf(self.master.api.submit_dag(OPERATOR, {
            "name": "nightly", "schedule": "* * * * *", "jobs": [
                {"id": "nightly-ok", "kind": "gate", "message": "Go?"}]}))
        self.reactor.advance(HITL_INTERVAL)
        self.assertEqual(store.data[L.hitl_key("nightly-ok")], b"APPROVED")  # no run yet
        self.reactor.advance(61)  # the schedule fires: a run whose gate waits at once
        self.reactor.advance(HITL_INTERVAL)
        self.assertEqual(store.data[L.hitl_key("nightly-ok")], b"WAITING")
        key = self.master.scheduler.resolve("nightly-ok")
        self.assertEqual(self.master.scheduler.jobs[key].state.value, "WAITING_APPROVAL")

    # -- B8: the reference's name of a hitl_message gate -------------------------------------

    def test_a_hitl_message_gate_answers_to_the_references_name(self):
        self.master.store = store = FakeStore()
        self.worker()
        run = self.master.api.submit_dag(OPERATOR, {"name": "ref", "jobs": [
            {"id": "prep", "command": ["true"], "hitl_message": "Looks right?"},
            {"id": "train", "command": ["true"], "depends_on": ["prep"]}]})
        self.reactor.advance(0)
        run_id = self.successResultOf(run)["run_id"]
        gate = f"{run_id}/prep.approval"
        self.assertEqual(self.master.scheduler.resolve(f"{run_id}/hitl-gate-prep"), gate)
        self.assertEqual(self.master.scheduler.resolve("hitl-gate-prep"), gate)
        self.assertEqual(self.legacy.job_key("DAG-hitl-gate-prep"), gate)
        self.assertEqual(self.state("DAG-hitl-gate-prep"), "PENDING")
        self.finish(f"{run_id}/prep")
        self.assertEqual(self.state("DAG-hitl-gate-prep"), "RUNNING")
        self.reactor.advance(HITL_INTERVAL)
        for name in ("prep.approval", "hitl-gate-prep"):
            self.assertEqual(store.data[L.hitl_key(name)], b"WAITING")
            self.assertEqual(store.data["titan:hitl:message:" + name], b"Looks right?")
        self.assertEqual(store.sets["titan:hitl:queue"], {b"hitl-gate-prep"})
        store.data[L.hitl_key("hitl-gate-prep")] = b"APPROVED"  # the reference's dashboard
        self.reactor.advance(HITL_INTERVAL)
        self.assertEqual(self.state("DAG-hitl-gate-prep"), "COMPLETED")
        self.assertEqual(self.state(f"{run_id}/train"), "RUNNING")
        self.reactor.advance(HITL_INTERVAL)
        self.assertEqual(store.data[L.hitl_key("prep.approval")], b"APPROVED")
        # Titan's approve under that name too (the CLI and SDK resolve through the core).
        run = self.successResultOf(self.master.api.submit_dag(OPERATOR, {"name": "ref", "jobs": [
            {"id": "more", "command": ["true"], "hitl_message": "And this?"}]}))
        self.finish(f"{run['run_id']}/more")
        self.master.api.decide_gate(OPERATOR, f"{run['run_id']}/hitl-gate-more", True,
                                    "carol", "ok")
        self.assertEqual(self.state(f"{run['run_id']}/more.approval"), "COMPLETED")
        # Only a gate that hitl_message made answers to it.
        with self.assertRaises(dag.SubmitError):
            self.master.scheduler.resolve(f"{run['run_id']}/hitl-gate-nope")

    # -- B12: STATS_JSON as the reference's dashboard reads it -------------------------------

    def test_stats_port_history_and_queue_size(self):
        self.worker(slots=1)
        self.ok(Op.SUBMIT_DAG, L.dag_body([
            L.run_payload("s1", "a.py", b"1"),
            L.run_payload("s2", "a.py", b"1"),
            L.run_payload("s3", "a.py", b"1"),
            L.run_payload("blocked", "a.py", b"1", parents=["s1", "s2", "s3"])]))
        stats = json.loads(self.ok(Op.STATS_JSON))
        # s1 runs; s2 and s3 wait for the slot; `blocked` waits for its parents.
        self.assertEqual(stats["jobs"]["PENDING"], 3)
        self.assertEqual(stats["queue_size"], 2)
        worker, = stats["workers"]
        self.assertEqual(worker["port"], 40000)  # its end of its connection to the master
        self.assertEqual(worker["active_job"], "DAG-s1")
        self.assertEqual([(h["id"], h["status"]) for h in worker["history"]],
                         [("DAG-s1", "RUNNING")])
        s1 = self.master.scheduler.jobs[self.legacy.job_key("s1")]
        self.master.handle(ev.JobStarted(s1.job_id, "w1", s1.attempt))
        self.reactor.advance(1.5)
        self.finish("DAG-s1")
        self.reactor.advance(0.25)
        self.finish("DAG-s2", exit_code=1)  # retried: the reference's 3 retries
        stats = json.loads(self.ok(Op.STATS_JSON))
        self.assertEqual(stats["queue_size"], 0)  # s3 runs; s2 waits out its backoff
        history = stats["workers"][0]["history"]
        self.assertEqual([(h["id"], h["status"]) for h in history],
                         [("DAG-s3", "RUNNING"), ("DAG-s1", "COMPLETED")])
        self.assertEqual(history[1]["time"], "1500ms")
        self.assertEqual(history[1]["completed_at"],
                         int(self.master.scheduler.jobs[self.legacy.job_key("s1")]
                             .finished_at * 1000))
        self.assertIn("Execution Queue:   0 jobs", self.ok(Op.STATS))
        for name in ("h%d" % i for i in range(12)):
            self.ok(Op.SUBMIT_JOB, L.run_payload(name, "a.py", b"1"))
        self.finish("DAG-s3")
        for i in range(12):
            self.finish("DAG-h%d" % i)
        history = json.loads(self.ok(Op.STATS_JSON))["workers"][0]["history"]
        self.assertEqual(len(history), 10)  # the last ten, as the reference keeps
        self.assertEqual(history[-1]["id"], "DAG-h11")

class TextFramesOffTests(SynchronousTestCase):
    """Issue 15, 1 and 2: by default the token-less text frames are off, and so is the
    reference's way of deciding gates through their store keys."""

    text_frames = MasterConfig().text_frames  # the default
    setUp = FrontendTests.setUp
    connect, replies, ask, error = (FrontendTests.connect, FrontendTests.replies,
                                    FrontendTests.ask, FrontendTests.error)
    worker, finish = FrontendTests.worker, FrontendTests.finish

    def test_off_by_default_and_refused_with_the_reason(self):
        self.assertEqual(self.text_frames, "off")
        off = ("ERROR: text frames are turned off on this master (master.text_frames: off); "
               "Titan's own clients need none, and docs/compat.md says how to turn them on "
               "for the reference's")
        for op, text in [(Op.SUBMIT_DAG, L.run_payload("x", "x.sh", b"id")),
                         (Op.STATS, ""), (Op.KV_SET, "k|v"), (Op.GET_LOGS, "DAG-x")]:
            self.assertEqual(self.error(op, text), off)
        self.assertEqual(self.master.scheduler.jobs, {})
        self.assertIsNone(self.legacy.warning())
        self.assertEqual(self.stderr.getvalue(), "")  # nothing to warn of

    def test_the_store_keys_decide_nothing(self):
        self.master.store = store = FakeStore()
        self.worker()
        d = self.master.api.submit_dag(OPERATOR, {"name": "p", "jobs": [
            {"id": "review", "kind": "gate"},
            {"id": "after", "command": ["true"], "depends_on": ["review"]}]})
        self.reactor.advance(0)
        run = self.successResultOf(d)["run_id"]
        store.data[L.hitl_key("review")] = b"APPROVED"  # a job, a dashboard, anyone
        for _ in range(4):
            self.reactor.advance(HITL_INTERVAL)
        gate = self.master.api.job_info(OPERATOR, f"{run}/review")
        self.assertEqual(gate["state"], "WAITING_APPROVAL")
        self.assertEqual(store.writes, [])  # not mirrored either
        self.master.api.decide_gate(OPERATOR, f"{run}/review", True, "alice", "")
        self.reactor.advance(HITL_INTERVAL)
        self.assertEqual(self.master.api.job_info(OPERATOR, f"{run}/review")["state"], "COMPLETED")
        self.assertEqual(store.writes, [])


class _Config:
    def __init__(self, text_frames) -> None:
        self.master = self
        self.text_frames = text_frames
