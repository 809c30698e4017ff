"""The reference implementation's store requests (KV_SET, KV_GET, KV_SADD, KV_SMEMBERS) and
its store-key approvals, against a live master whose store is a real TitanStore
(`twistd -n titan-store`), with real workers.

What a user would see is checked from both sides: through the text frames (LegacyClient, the
reference SDK's wire format) and straight in the store with `redis-cli`.
"""
from __future__ import annotations

import atexit
import base64
import os
import shutil
import subprocess
import tempfile
import textwrap
import time

from tests.acceptance.helpers import ClusterTestCase, LegacyChecks
from titan.protocols import legacy as L
from titan.sdk.legacy_client import LegacyClient, LegacyError
from titan.testing.cluster import BIN, free_port
from titan.testing.processes import die_with_parent, read_port, tail

GATE_SCRIPT = base64.b64encode(b"# the reference SDK's hitl_gate.py").decode()


def py(source: str) -> bytes:
    return textwrap.dedent(source).encode()


def gate_job(gate: str, parents: list, wait: int = 600, message: str = "Ship it?") -> str:
    """What the reference SDK's submit_dag sends for TitanJob(..., hitl_message=...)."""
    return (f"{gate}|RUN_PAYLOAD|hitl_gate.py|{gate} {wait} {message}|{GATE_SCRIPT}|GENERAL|"
            f"1|0|[{','.join(parents)}]")


def start_store() -> tuple[subprocess.Popen, int]:
    """A titan-store on 127.0.0.1 (the OS picks the port; the store writes it to its data
    dir), its append-only file in a temp dir; killed when the test process exits."""
    if shutil.which("redis-cli") is None:
        raise RuntimeError("redis-cli is not installed (make test installs it)")
    base = tempfile.mkdtemp(prefix="titan-legacy-store-")
    data_dir = os.path.join(base, "data")
    log_file = os.path.join(base, "store.log")
    proc = subprocess.Popen(
        [os.path.join(BIN, "twistd"), "-n", f"--logfile={log_file}", "--pidfile=",
         "titan-store", "--listen", "tcp:0:interface=127.0.0.1", "--data-dir", data_dir],
        cwd=base, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
        stderr=open(log_file + ".err", "wb"), preexec_fn=die_with_parent)

    def stop():
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
    atexit.register(stop)
    port = read_port(data_dir, proc, 30, name="store.port")
    if port is None:
        stop()
        raise RuntimeError(f"titan-store did not start:\n{tail(log_file)}"
                           f"{tail(log_file + '.err')}")
    deadline = time.monotonic() + 10
    while redis_cli(port, "PING") != "PONG\n":
        if time.monotonic() > deadline:
            raise RuntimeError(f"titan-store does not answer PING:\n{tail(log_file)}")
        time.sleep(0.05)
    return proc, port


def redis_cli(port: int, *args: str) -> str:
    """What `redis-cli -p PORT ARGS...` prints (raw: not a terminal)."""
    done = subprocess.run(["redis-cli", "-h", "127.0.0.1", "-p", str(port), *args],
                          capture_output=True, timeout=15)
    return done.stdout.decode("utf-8")


class WithStore:
    """A mixin for a ClusterTestCase: the class's master uses a titan-store of its own,
    started before the class's cluster (`store_port`; `extra_master` adds master settings)."""
    store_proc = None
    store_port = 0
    extra_master = ""

    def setUp(self) -> None:
        cls = type(self)
        if cls.__dict__.get("store_proc") is None:
            cls.store_proc, cls.store_port = start_store()
            cls.cluster_options = dict(cls.cluster_options, config_extra=(
                f"store:\n  url: redis://127.0.0.1:{cls.store_port}/0\n"))
            if cls.extra_master:
                cls.cluster_options["master_extra"] = cls.extra_master
        super().setUp()


class LegacyStoreTests(WithStore, LegacyChecks, ClusterTestCase):
    """Workers w1 (tag LEFT) and w2 (tag RIGHT): the reference's REQUIREMENT field pins a
    job to one of them (its job strings cannot name a worker)."""

    workers = 0  # started with tags below
    slots = 4
    extra_master = "  text_frames: on\n"  # off by default

    def setUp(self) -> None:
        cls = type(self)
        super().setUp()
        if not cls.__dict__.get("tagged_workers"):
            self.cluster.start_worker("w1", tags="LEFT")
            self.cluster.start_worker("w2", tags="RIGHT")
            self.cluster.wait_for_workers(2)
            cls.tagged_workers = True
        self.c = LegacyClient("127.0.0.1", self.cluster.port)

    # -- helpers -----------------------------------------------------------------------------

    def redis(self, *args: str) -> str:
        return redis_cli(self.store_port, *args)

    def wait_key(self, key: str, value: str, timeout: float = 20.0) -> None:
        seen = []

        def holds():
            seen[:] = [self.redis("GET", key)]
            return seen[0] == value + "\n"
        self.wait_for(holds, timeout, f"{key} to be {value} in the store (it is {seen})")

    def mirror_goes_round(self, witness: str, whole: bool = True) -> None:
        """Returns once a mirroring of the gates that began after this call has written the
        outcome of the gates that ended before it (whole=False), or has gone through every
        waiting gate's key (whole=True).

        Each mirroring (every half second) first writes the outcome of the gates that ended
        before it began, then goes through the waiting gates.  The proof is a witness: a
        gate alone in its run, which a mirroring begun after the submission lists as
        WAITING.  For a whole mirroring, REJECTED written to the witness's key then decides
        it in a later mirroring, so the first one is over.  (A wait for the event, not a
        fixed sleep: the mirror may run late on a loaded machine.)"""
        with self.cluster.client() as client:
            run = client.submit_dag({"name": witness, "jobs": [
                {"id": witness, "kind": "gate", "message": "a witness of the mirror"}]})["run_id"]
            self.wait_key(L.hitl_key(witness), "WAITING")
            if not whole:
                client.reject(f"{run}/{witness}", "done witnessing")
                return
            self.assertEqual(self.redis("SET", L.hitl_key(witness), "REJECTED"), "OK\n")
            self.wait_for(lambda: client.job(f"{run}/{witness}")["state"] == "CANCELLED", 20,
                          f"the witness gate {witness} to be rejected through its key")

    def submit_gated(self, gate: str, child: str, **gate_options) -> None:
        """before -> gate -> child, and wait until the store shows the gate WAITING."""
        before = f"{gate}-before"
        self.assertEqual(self.c.submit_dag([
            L.run_payload(before, "before.py", py("print('before')")),
            gate_job(gate, [before], **gate_options),
            L.run_payload(child, "child.py", py(f"print('{child} ran')"), parents=[gate]),
        ]), "DAG_ACCEPTED")
        self.wait_key(L.hitl_key(gate), "WAITING")
        self.assertEqual(self.structured(gate)["state"], "WAITING_APPROVAL")
        self.assertEqual(self.c.get_job_status(f"DAG-{gate}"), "RUNNING")
        self.assertEqual(self.c.get_job_status(f"DAG-{child}"), "PENDING")

    # -- KV ----------------------------------------------------------------------------------

    def test_kv_ops_round_trip_and_live_in_the_store(self):
        value = "héllo | wörld ✓ 日本語 | a=b,c"
        self.assertEqual(self.c.kv_set("legacy:greeting", value), "OK")
        self.assertEqual(self.c.kv_get("legacy:greeting"), value)
        self.assertEqual(self.redis("GET", "legacy:greeting"), value + "\n")
        # Overwritten, and an empty value is a value, not an absent key.
        self.assertEqual(self.c.kv_set("legacy:greeting", "second"), "OK")
        self.assertEqual(self.c.kv_get("legacy:greeting"), "second")
        self.assertEqual(self.c.kv_set("legacy:empty", ""), "OK")
        self.assertEqual(self.c.kv_get("legacy:empty"), "")
        self.assertEqual(self.redis("EXISTS", "legacy:empty"), "1\n")
        # Absent: None here, nothing in the store.
        self.assertIsNone(self.c.kv_get("legacy:absent"))
        self.assertEqual(self.redis("EXISTS", "legacy:absent"), "0\n")
        # Keys are used as given (the reference hid them under `user:`).
        self.assertEqual(self.redis("EXISTS", "user:legacy:greeting"), "0\n")
        # What others write to the store, the text frames read.
        self.assertEqual(self.redis("SET", "legacy:from-cli", "ünïcode ✓"), "OK\n")
        self.assertEqual(self.c.kv_get("legacy:from-cli"), "ünïcode ✓")

        self.assertEqual(self.c.kv_sadd("legacy:set", "b ✓"), 1)
        self.assertEqual(self.c.kv_sadd("legacy:set", "a|1"), 1)
        self.assertEqual(self.c.kv_sadd("legacy:set", "a|1"), 0)
        self.assertEqual(sorted(self.c.kv_smembers("legacy:set")), ["a|1", "b ✓"])
        self.assertEqual(sorted(self.redis("SMEMBERS", "legacy:set").splitlines()),
                         ["a|1", "b ✓"])
        self.assertEqual(self.redis("SADD", "legacy:set", "c"), "1\n")
        self.assertEqual(self.c.kv_sadd("legacy:set", "c"), 0)
        self.assertEqual(sorted(self.c.kv_smembers("legacy:set")), ["a|1", "b ✓", "c"])
        self.assertEqual(self.c.kv_smembers("legacy:no-such-set"), [])

    def test_kv_errors_say_what_is_wrong(self):
        for call, text in [
                (lambda: self.c.call(0x60, "no-separator"), "ERROR: KV_SET takes KEY|VALUE"),
                (lambda: self.c.call(0x60, "|value"), "ERROR: KV_SET takes KEY|VALUE"),
                (lambda: self.c.call(0x62, "no-separator"), "ERROR: KV_SADD takes KEY|MEMBER"),
                (lambda: self.c.call(0x61, ""), "ERROR: a key is required"),
                (lambda: self.c.call(0x63, ""), "ERROR: a key is required")]:
            with self.assertRaises(LegacyError) as caught:
                call()
            self.assertEqual(caught.exception.text, text)
        # The store's own refusal comes back as an ERROR that says so.
        self.c.kv_sadd("legacy:a-set", "m")
        with self.assertRaises(LegacyError) as caught:
            self.c.kv_get("legacy:a-set")
        self.assertEqual(caught.exception.text, "ERROR: WRONGTYPE Operation against a key "
                                                "holding the wrong kind of value")
        self.assertEqual(self.c.kv_set("legacy:ok-after", "yes"), "OK")

    def test_kv_hand_off_between_jobs_on_two_workers(self):
        writer = py("""\
            from titan.sdk.legacy_client import LegacyClient
            c = LegacyClient()  # TITAN_HOST / TITAN_PORT, as the reference SDK reads them
            print(c.kv_set("handoff:rows", "rows=42 | ✓"))
            print(c.kv_sadd("handoff:seen", "writer"))
            """)
        reader = py("""\
            import sys
            from titan.sdk.legacy_client import LegacyClient
            c = LegacyClient()
            print(sys.argv[1], c.kv_get("handoff:rows"), c.kv_smembers("handoff:seen"))
            """)
        self.assertEqual(self.c.submit_dag([
            L.run_payload("kv-write", "write.py", writer, requirement="LEFT"),
            L.run_payload("kv-read", "read.py", reader, args="reader", requirement="RIGHT",
                          parents=["kv-write"]),
            # |AFFINITY: where the parent ran (w1), though any worker would do.
            L.run_payload("kv-near", "read.py", reader, args="near", parents=["kv-write"],
                          affinity=True),
        ]), "DAG_ACCEPTED")
        states = self.wait_ended("DAG-kv-write", "DAG-kv-read", "DAG-kv-near")
        self.assertEqual(set(states.values()), {"COMPLETED"},
                         (states, self.c.get_logs("DAG-kv-read")))
        self.assertEqual(self.c.get_logs("DAG-kv-write"), "OK\n1\n")
        self.assertEqual(self.c.get_logs("DAG-kv-read"), "reader rows=42 | ✓ ['writer']\n")
        self.assertEqual(self.c.get_logs("DAG-kv-near"), "near rows=42 | ✓ ['writer']\n")
        self.assertEqual(self.structured("kv-write")["worker"], "w1")
        self.assertEqual(self.structured("kv-read")["worker"], "w2")
        self.assertEqual(self.structured("kv-near")["worker"], "w1")
        self.assertEqual(self.redis("GET", "handoff:rows"), "rows=42 | ✓\n")
        self.assertEqual(self.redis("SMEMBERS", "handoff:seen"), "writer\n")

    # -- approval gates through the store ----------------------------------------------------

    def test_a_gate_approved_through_the_store_key(self):
        gate = "hitl-gate-ship"
        self.submit_gated(gate, "ship", message="Ship it? ✓")
        self.assertEqual(self.redis("GET", f"titan:hitl:message:{gate}"), "Ship it? ✓\n")
        self.assertIn(gate, self.redis("SMEMBERS", "titan:hitl:queue").splitlines())
        self.assertTrue(self.redis("GET", f"titan:hitl:ts:{gate}").strip().isdigit())
        self.mirror_goes_round("witness-ship-waits")  # which read WAITING: it decides nothing
        self.assertEqual(self.structured(gate)["state"], "WAITING_APPROVAL")
        self.assertEqual(self.redis("GET", L.hitl_key(gate)), "WAITING\n")

        self.assertEqual(self.redis("SET", L.hitl_key(gate), "APPROVED"), "OK\n")
        states = self.wait_ended(f"DAG-{gate}", "DAG-ship", timeout=30)
        self.assertEqual(states, {f"DAG-{gate}": "COMPLETED", "DAG-ship": "COMPLETED"})
        self.assertEqual(self.c.get_logs("DAG-ship"), "ship ran\n")
        view = self.structured(gate)
        self.assertEqual(view["state"], "COMPLETED")
        self.assertEqual({k: view["decision"][k] for k in ("approved", "by", "comment")},
                         {"approved": True, "by": "store",
                          "comment": f"titan:hitl:status:{gate} set to APPROVED"})
        self.assertGreaterEqual(self.structured("ship")["started_at"], view["finished_at"])
        shown = self.titan("status", gate)
        self.assertIn(f"approved by store: titan:hitl:status:{gate} set to APPROVED",
                      shown.stdout.decode(), shown.stderr.decode())
        # Who wrote it, as far as the master can tell (issue 15, 2).
        self.assertIn(f"  via:       store key titan:hitl:status:{gate}, set by a write "
                      "straight to the store (not through the master)\n", shown.stdout.decode())
        self.mirror_goes_round("witness-ship-done", whole=False)  # which wrote the outcome back
        self.assertEqual(self.redis("GET", L.hitl_key(gate)), "APPROVED\n")

    def test_a_gate_rejected_through_the_store_key(self):
        gate = "hitl-gate-veto"
        self.submit_gated(gate, "vetoed")
        # KV_SET, as the reference's dashboard does it.
        self.assertEqual(self.c.kv_set(L.hitl_key(gate), "REJECTED"), "OK")
        states = self.wait_ended(f"DAG-{gate}", "DAG-vetoed", timeout=30)
        self.assertEqual(states, {f"DAG-{gate}": "CANCELLED", "DAG-vetoed": "CANCELLED"})
        view = self.structured(gate)
        self.assertEqual((view["decision"]["approved"], view["decision"]["by"]),
                         (False, "store"))
        self.assertEqual(view["reason"],
                         f"rejected by store: titan:hitl:status:{gate} set to REJECTED")
        child = self.structured("vetoed")
        self.assertEqual(child["reason"], f"cancelled: gate {gate} rejected by store: "
                                          f"titan:hitl:status:{gate} set to REJECTED")
        self.assertIsNone(child["started_at"])
        shown = self.titan("status", "vetoed")
        self.assertIn(f"cancelled: gate {gate} rejected by store", shown.stdout.decode())
        self.assertEqual(self.c.get_logs("DAG-vetoed"), "")  # it never ran
        self.mirror_goes_round("witness-veto-done", whole=False)  # which wrote the outcome back
        self.assertEqual(self.c.kv_get(L.hitl_key(gate)), "REJECTED")

    def test_titan_decisions_are_mirrored_to_the_key(self):
        approved, rejected, timed_out = "hitl-gate-ok", "hitl-gate-no", "hitl-gate-late"
        # A decision left over from an earlier gate of the same id decides nothing.
        self.assertEqual(self.redis("SET", L.hitl_key(approved), "APPROVED"), "OK\n")
        self.submit_gated(approved, "after-ok")
        self.mirror_goes_round("witness-ok-waits")  # which read WAITING: it decides nothing
        self.assertEqual(self.structured(approved)["state"], "WAITING_APPROVAL")
        self.assertEqual(self.redis("GET", L.hitl_key(approved)), "WAITING\n")

        done = self.titan("approve", approved, "-m", "fine", "--by", "alice")
        self.assertEqual(done.returncode, 0, done.stderr.decode())
        self.wait_key(L.hitl_key(approved), "APPROVED")
        self.assertEqual(self.wait_ended("DAG-after-ok")["DAG-after-ok"], "COMPLETED")
        self.assertEqual(self.structured(approved)["decision"]["by"], "alice")

        self.submit_gated(rejected, "after-no")
        with self.cluster.client() as client:
            client.reject(rejected, "not now", by="bob")
        self.wait_key(L.hitl_key(rejected), "REJECTED")
        self.assertEqual(self.wait_ended("DAG-after-no")["DAG-after-no"], "CANCELLED")

        self.submit_gated(timed_out, "after-late", wait=3)
        self.wait_key(L.hitl_key(timed_out), "TIMEOUT", timeout=30)
        self.assertEqual(self.wait_ended("DAG-after-late")["DAG-after-late"], "CANCELLED")
        self.assertEqual(self.structured(timed_out)["decision"]["by"], "timeout")


    def test_a_gate_decided_before_it_was_mirrored_still_shows_its_outcome(self):
        gate = "hitl-gate-quick"
        # An earlier gate of that id left REJECTED behind: the new outcome must replace it.
        self.assertEqual(self.redis("SET", L.hitl_key(gate), "REJECTED"), "OK\n")
        with self.cluster.client() as client:
            run = client.submit_dag({"name": "quick", "jobs": [
                {"id": gate, "kind": "gate", "message": "ok?"},
                {"id": "quick-child", "command": ["true"], "depends_on": [gate]}]})["run_id"]
            # Approved the moment it waits: well inside the mirror's half-second period.
            client.approve(f"{run}/{gate}", "at once", by="erin")
            self.assertEqual(client.wait_run(run, timeout=30)["state"], "COMPLETED")
        self.wait_key(L.hitl_key(gate), "APPROVED")


    def test_a_gate_a_run_grows_does_not_take_an_earlier_gates_decision(self):
        gate = "hitl-gate-grown"
        # An earlier gate of that id was approved: its key still says so.
        self.assertEqual(self.redis("SET", L.hitl_key(gate), "APPROVED"), "OK\n")
        with self.cluster.client() as client:
            run = client.submit_dag({"name": "grows", "jobs": [
                {"id": "grows-hold", "kind": "gate", "message": "keeps the run going"}]})["run_id"]
            client.add_jobs(run, [{"id": gate, "kind": "gate", "message": "grown: ok?"},
                                  {"id": "grown-child", "command": ["true"],
                                   "depends_on": [gate]}])
            self.wait_key(L.hitl_key(gate), "WAITING")  # cleared, then mirrored as waiting
            self.mirror_goes_round("grows-witness")
            self.assertEqual(client.job(f"{run}/{gate}")["state"], "WAITING_APPROVAL")
            self.assertEqual(client.job(f"{run}/grown-child")["state"], "PENDING")
            # A decision written now is this gate's.
            self.assertEqual(self.redis("SET", L.hitl_key(gate), "APPROVED"), "OK\n")
            self.wait_for(lambda: client.job(f"{run}/grown-child")["state"] == "COMPLETED",
                          20, "the grown gate's child to run once the gate is approved")
            client.reject(f"{run}/grows-hold", "done")

    # -- A3: an approval written by anyone is never lost, whatever the timing ------------------

    def gated_by_parent(self, gate: str, parent_source: str) -> None:
        """parent -> gate -> child, where the parent itself writes to the gate's key."""
        self.assertEqual(self.c.submit_dag([
            L.run_payload(f"{gate}-parent", "parent.py", py(parent_source)),
            gate_job(gate, [f"{gate}-parent"]),
            L.run_payload(f"{gate}-child", "child.py", py("print('child ran')"),
                          parents=[gate]),
        ]), "DAG_ACCEPTED")

    def test_an_approval_before_the_gate_starts_decides_it_when_it_starts(self):
        gate = "hitl-gate-early"
        self.gated_by_parent(gate, f"""\
            import time
            from titan.sdk.legacy_client import LegacyClient
            print(LegacyClient().kv_set("titan:hitl:status:{gate}", "APPROVED"))
            time.sleep(1.5)  # three mirrorings while the gate has not started
            """)
        states = self.wait_ended(f"DAG-{gate}", f"DAG-{gate}-child", timeout=30)
        self.assertEqual(states, {f"DAG-{gate}": "COMPLETED",
                                  f"DAG-{gate}-child": "COMPLETED"})
        view = self.structured(gate)
        self.assertEqual((view["decision"]["by"], view["decision"]["comment"]),
                         ("store", f"titan:hitl:status:{gate} set to APPROVED"))
        self.assertEqual(self.redis("GET", L.hitl_key(gate)), "APPROVED\n")

    def decided_as_the_parent_ends(self, gate: str, verdict: str) -> dict:
        """The parent writes `verdict` to the gate's key as the last thing it does: the gate
        starts waiting a moment later, well inside the mirror's half-second period.  The
        states the gate and its child end in; the key keeps the verdict."""
        self.gated_by_parent(gate, f"""\
            from titan.sdk.legacy_client import LegacyClient
            print(LegacyClient().kv_set("titan:hitl:status:{gate}", "{verdict}"))
            """)
        states = self.wait_ended(f"DAG-{gate}", f"DAG-{gate}-child", timeout=30)
        self.assertEqual(self.redis("GET", L.hitl_key(gate)), f"{verdict}\n")
        return states

    def test_an_approval_right_after_the_parent_completes_is_not_lost(self):
        gate = "hitl-gate-prompt"
        states = self.decided_as_the_parent_ends(gate, "APPROVED")
        self.assertEqual(states, {f"DAG-{gate}": "COMPLETED",
                                  f"DAG-{gate}-child": "COMPLETED"})
        self.assertEqual(self.structured(gate)["decision"]["by"], "store")

    def test_a_rejection_right_after_the_parent_completes_is_not_lost(self):
        gate = "hitl-gate-nay"
        states = self.decided_as_the_parent_ends(gate, "REJECTED")
        self.assertEqual(states, {f"DAG-{gate}": "CANCELLED",
                                  f"DAG-{gate}-child": "CANCELLED"})

    # -- B8: a Titan pipeline's hitl_message gate, under the reference's name -----------------

    def test_a_hitl_message_gate_is_approved_under_the_references_name(self):
        with self.cluster.client() as client:
            run = client.submit_dag({"name": "refgate", "jobs": [
                {"id": "prep", "command": ["true"], "hitl_message": "Looks right?"},
                {"id": "train", "command": ["true"], "depends_on": ["prep"]}]})["run_id"]
        gate = "hitl-gate-prep"
        self.wait_key(L.hitl_key(gate), "WAITING")
        self.assertEqual(self.redis("GET", f"titan:hitl:message:{gate}"), "Looks right?\n")
        self.assertIn(gate, self.redis("SMEMBERS", "titan:hitl:queue").splitlines())
        self.assertEqual(self.c.get_job_status(f"DAG-{gate}"), "RUNNING")
        shown = self.titan("status", f"{run}/{gate}")
        self.assertEqual(shown.returncode, 0, shown.stderr.decode())
        self.assertIn("prep.approval", shown.stdout.decode())
        self.assertEqual(self.redis("SET", L.hitl_key(gate), "APPROVED"), "OK\n")
        with self.cluster.client() as client:
            self.assertEqual(client.wait_run(run, timeout=30)["state"], "COMPLETED")
        self.assertEqual(self.c.get_job_status(f"DAG-{gate}"), "COMPLETED")
        self.wait_key(L.hitl_key("prep.approval"), "APPROVED")

    # -- B11: the reference's DAGs share their run's directory on a worker -------------------

    def test_a_reference_dag_shares_its_workspace_on_a_worker(self):
        write = py("""\
            import os
            open("rows.csv", "w").write("a,b\\n1,2\\n")
            print(os.path.basename(os.getcwd()))
            """)
        read = py("""\
            import os
            print(open("rows.csv").read().splitlines() if os.path.exists("rows.csv")
                  else "no rows.csv here")
            """)
        self.assertEqual(self.c.submit_dag([
            L.run_payload("ws-write", "write.py", write, requirement="LEFT"),
            L.run_payload("ws-read", "read.py", read, requirement="LEFT",
                          parents=["ws-write"]),
            # Another worker: it has the run's directory too, but not w1's files.
            L.run_payload("ws-elsewhere", "read.py", read, requirement="RIGHT",
                          parents=["ws-write"]),
        ]), "DAG_ACCEPTED")
        states = self.wait_ended("DAG-ws-write", "DAG-ws-read", "DAG-ws-elsewhere")
        self.assertEqual(set(states.values()), {"COMPLETED"})
        run = self.structured("ws-write")["job_id"].split("/")[0]
        self.assertEqual(self.c.get_logs("DAG-ws-write"), f"{run}\n")
        self.assertEqual(self.c.get_logs("DAG-ws-read"), "['a,b', '1,2']\n")
        self.assertEqual(self.c.get_logs("DAG-ws-elsewhere"), "no rows.csv here\n")


class LegacyStoreDownTests(ClusterTestCase):
    """The master's store is named but nothing answers there."""

    workers = 0
    dead_port = free_port()  # handed out, then released: nothing listens on it
    cluster_options = {"config_extra": f"store:\n  url: redis://127.0.0.1:{dead_port}/0\n",
                       "master_extra": "  text_frames: on\n"}

    def test_a_store_that_does_not_answer_is_an_error_that_says_so(self):
        c = LegacyClient("127.0.0.1", self.cluster.port)
        started = time.monotonic()
        with self.assertRaises(LegacyError) as caught:
            c.kv_set("legacy:k", "v")
        self.assertTrue(caught.exception.text.startswith(
            f"ERROR: the store is unavailable: no connection to the store at "
            f"127.0.0.1:{self.dead_port} within 10s"), caught.exception.text)
        # The master gives up after its 10 s; the bound leaves room for a loaded machine
        # (the client's own 30 s timeout would be another error than the one above).
        self.assertLess(time.monotonic() - started, 25)
        # The master is fine otherwise.
        self.assertEqual(c.get_job_status("DAG-nothing"), "NULL")
