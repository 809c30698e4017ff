"""The reference implementation's text requests against a live master with real workers."""
from __future__ import annotations

import base64
import io
import socket
import struct
import textwrap
import zipfile

from titan.protocols import legacy as L
from titan.sdk.legacy_client import LegacyClient, LegacyError
from tests.acceptance.helpers import ClusterTestCase, LegacyChecks



def py(source: str) -> bytes:
    return textwrap.dedent(source).encode()


class LegacyTests(LegacyChecks, ClusterTestCase):
    workers = 2
    slots = 8
    cluster_options = {"master_extra": "  text_frames: on\n"}  # off by default

    def setUp(self) -> None:
        super().setUp()
        self.c = LegacyClient("127.0.0.1", self.cluster.port)

    # -- DAGs --------------------------------------------------------------------------------

    def test_diamond_of_python_scripts(self):
        step = py("""\
            import os, sys, time
            print("step", sys.argv[1], "job", os.environ["TITAN_JOB_ID"].split("/")[1])
            time.sleep(0.2)
            """)
        body = L.dag_body([
            L.run_payload("dia-a", "step.py", step, args="a"),
            L.run_payload("dia-b", "step.py", step, args="b", parents=["dia-a"]),
            L.run_payload("dia-c", "step.py", step, args="c", parents=["DAG-dia-a"]),
            L.run_payload("dia-d", "step.py", step, args="d", parents=["dia-b", "dia-c"]),
        ])
        self.assertEqual(self.c.submit_dag(body), "DAG_ACCEPTED")
        states = self.wait_ended(*(f"DAG-dia-{n}" for n in "abcd"))
        self.assertEqual(set(states.values()), {"COMPLETED"}, states)
        self.assertEqual(self.c.get_logs("DAG-dia-d"), "step d job dia-d\n")
        a, b, c, d = (self.structured(f"DAG-dia-{n}") for n in "abcd")
        self.assertGreaterEqual(b["started_at"], a["finished_at"])
        self.assertGreaterEqual(c["started_at"], a["finished_at"])
        self.assertGreaterEqual(d["started_at"], max(b["finished_at"], c["finished_at"]))

    def test_fan_out_and_in(self):
        leaf = py("import sys; print('leaf', sys.argv[1])")
        jobs = [L.run_payload("fan-root", "root.py", py("print('root')"))]
        jobs += [L.run_payload(f"fan-{i}", "leaf.py", leaf, args=str(i), parents=["fan-root"])
                 for i in range(15)]
        jobs.append(L.run_payload("fan-sink", "sink.sh", b"echo sink\n",
                                  parents=[f"fan-{i}" for i in range(15)]))
        self.assertEqual(self.c.submit_dag(jobs), "DAG_ACCEPTED")
        refs = ["DAG-fan-root", *(f"DAG-fan-{i}" for i in range(15)), "DAG-fan-sink"]
        states = self.wait_ended(*refs)
        self.assertEqual(set(states.values()), {"COMPLETED"}, states)
        self.assertEqual(self.c.get_logs("DAG-fan-7"), "leaf 7\n")
        self.assertEqual(self.c.get_logs("DAG-fan-sink"), "sink\n")
        sink = self.structured("DAG-fan-sink")
        self.assertGreaterEqual(sink["started_at"], max(
            self.structured(f"DAG-fan-{i}")["finished_at"] for i in range(15)))

    def test_chain_of_twenty(self):
        link = py("import sys; print('link', sys.argv[1])")
        jobs = [L.run_payload(f"chain-{i}", "link.py", link, args=str(i),
                              parents=[f"chain-{i - 1}"] if i else [])
                for i in range(20)]
        self.assertEqual(self.c.submit_dag(jobs), "DAG_ACCEPTED")
        states = self.wait_ended(*(f"DAG-chain-{i}" for i in range(20)), timeout=120)
        self.assertEqual(set(states.values()), {"COMPLETED"}, states)
        for i in range(1, 20):
            self.assertGreaterEqual(self.structured(f"DAG-chain-{i}")["started_at"],
                                    self.structured(f"DAG-chain-{i - 1}")["finished_at"])

    def test_priority_delay_and_requirement(self):
        self.c.submit_dag([L.run_payload("late", "late.py", py("print('late')"),
                                         priority=9, delay_ms=1500)])
        self.assertEqual(self.wait_ended("DAG-late")["DAG-late"], "COMPLETED")
        job = self.structured("DAG-late")
        self.assertEqual(job["priority"], 9)
        self.assertGreaterEqual(job["started_at"] - job["submitted_at"], 1.4)
        # No worker has GPU: the job waits, and says so.
        self.c.submit_dag([L.run_payload("gpu-job", "g.py", b"print(1)", requirement="GPU")])
        # A job submitted after it runs and ends: the scheduler placed work (and got a slot
        # back) while the GPU job waited, and left it waiting.
        self.c.submit_dag([L.run_payload("after-gpu", "a.py", b"print(1)")])
        self.assertEqual(self.wait_ended("DAG-after-gpu")["DAG-after-gpu"], "COMPLETED")
        self.assertEqual(self.c.get_job_status("DAG-gpu-job"), "PENDING")
        gpu = self.structured("DAG-gpu-job")
        self.assertEqual(gpu["tags"], ["GPU"])
        self.assertEqual(gpu["waiting"], "no live worker has the tags GPU")
        self.assertEqual(self.c.cancel_job("DAG-gpu-job"), "CANCELLED")

    def test_unicode_and_separators_in_args(self):
        script = py("""\
            import sys
            print("args:", sys.argv[1:])
            print("héllo wörld ✓ 日本語")
            """)
        job = L.run_payload("uni", "ünï.py", script, args="'a ; b' \"c | d\" e;f ✓ '日本'")
        tail = L.run_payload("uni-after", "t.py", py("print('after')"), parents=["uni"])
        self.assertEqual(self.c.submit_dag([job, tail]), "DAG_ACCEPTED")
        self.assertEqual(set(self.wait_ended("DAG-uni", "DAG-uni-after").values()),
                         {"COMPLETED"})
        self.assertEqual(self.c.get_logs("DAG-uni"),
                         "args: ['a ; b', 'c | d', 'e;f', '✓', '日本']\nhéllo wörld ✓ 日本語\n")

    def test_reply_lengths_are_bytes(self):
        self.c.submit_dag([L.run_payload("bytes", "b.py", py("print('✓' * 1000)"))])
        self.wait_ended("DAG-bytes")
        with socket.create_connection(("127.0.0.1", self.cluster.port), timeout=10) as s:
            s.sendall(struct.pack("!BBBBI", 1, 0x16, 0, 0, 9) + b"DAG-bytes")
            data = b""
            while True:
                chunk = s.recv(65536)
                if not chunk:
                    break
                data += chunk
        version, op, flags, _, length = struct.unpack("!BBBBI", data[:8])
        self.assertEqual((version, op, flags), (1, 0x50, 0))
        self.assertEqual(length, len(data) - 8)
        self.assertEqual(data[8:].decode(), "✓" * 1000 + "\n")

    def test_a_cycle_is_an_error_with_the_reason(self):
        jobs = [L.run_payload("cy-a", "a.py", b"1", parents=["cy-c"]),
                L.run_payload("cy-b", "b.py", b"1", parents=["cy-a"]),
                L.run_payload("cy-c", "c.py", b"1", parents=["cy-b"])]
        with self.assertRaises(LegacyError) as caught:
            self.c.submit_dag(jobs)
        self.assertEqual(caught.exception.text, "ERROR: cycle: cy-a -> cy-b -> cy-c -> cy-a")
        self.assertEqual(self.c.get_job_status("DAG-cy-a"), "NULL")
        with self.assertRaises(LegacyError) as caught:
            self.c.submit_dag("cy-x|RUN_PAYLOAD|x.py||%%%|GENERAL|1|0|[]")
        self.assertEqual(caught.exception.text,
                         "ERROR: job cy-x: the content of x.py is not valid base64")

    def test_cascade_shows_cancelled(self):
        self.c.submit_dag([
            L.run_payload("cas-fail", "f.py", py("import sys; print('boom'); sys.exit(3)")),
            L.run_payload("cas-child", "c.py", b"print(1)", parents=["cas-fail"]),
            L.run_payload("cas-grandchild", "g.py", b"print(1)", parents=["cas-child"]),
        ])
        states = self.wait_ended("DAG-cas-fail", "DAG-cas-child", "DAG-cas-grandchild")
        # As the reference: run again 3 times, then DEAD (and what depends on it cancelled).
        self.assertEqual(states, {"DAG-cas-fail": "DEAD", "DAG-cas-child": "CANCELLED",
                                  "DAG-cas-grandchild": "CANCELLED"})
        self.assertEqual(self.structured("cas-fail")["attempt"], 4)
        self.assertTrue(self.c.get_logs("DAG-cas-fail").endswith("boom\n"))

    def test_cancel_a_running_job(self):
        self.c.submit_job(L.run_payload("sleeper", "s.py",
                                        py("import time; print('up', flush=True); "
                                           "time.sleep(60)")))
        self.wait_for(lambda: self.c.get_job_status("DAG-sleeper") == "RUNNING", 20,
                      "the sleeper to run")
        self.assertEqual(self.c.cancel_job("DAG-sleeper"), "CANCELLED")
        self.assertEqual(self.c.get_job_status("DAG-sleeper"), "CANCELLED")
        with self.assertRaises(LegacyError) as caught:
            self.c.cancel_job("DAG-never-was")
        self.assertEqual(caught.exception.text, "NOT_FOUND")

    def test_submit_job(self):
        content = base64.b64encode(b"import sys; print(sys.argv[1:])").decode()
        self.assertEqual(self.c.submit_job(f"single|RUN_PAYLOAD|one.py|x y|{content}|GENERAL|2"),
                         "JOB_ACCEPTED")
        self.assertEqual(self.wait_ended("DAG-single")["DAG-single"], "COMPLETED")
        self.assertEqual(self.c.get_logs("single"), "['x', 'y']\n")

    def test_a_job_calls_the_master_itself(self):
        script = py("""\
            import os
            from titan.sdk.legacy_client import LegacyClient
            c = LegacyClient()  # TITAN_HOST / TITAN_PORT, as the reference SDK reads them
            print(c.get_job_status("DAG-caller"))
            """)
        self.c.submit_dag([L.run_payload("caller", "caller.py", script)])
        self.assertEqual(self.wait_ended("DAG-caller")["DAG-caller"], "COMPLETED")
        self.assertEqual(self.c.get_logs("DAG-caller"), "RUNNING\n")

    def test_the_reference_sdk_gate_is_a_titan_gate(self):
        # What the reference SDK's submit_dag sends for TitanJob(..., hitl_message=...).
        gate_script = base64.b64encode(b"# the SDK's hitl_gate.py").decode()
        self.c.submit_dag([
            L.run_payload("train", "train.py", py("print('trained')")),
            f"hitl-gate-train|RUN_PAYLOAD|hitl_gate.py|hitl-gate-train 600 Publish it?|"
            f"{gate_script}|GENERAL|1|0|[train]",
            L.run_payload("publish", "publish.py", py("print('published')"),
                          parents=["hitl-gate-train"]),
        ])
        self.assertEqual(self.wait_ended("DAG-train")["DAG-train"], "COMPLETED")
        self.wait_for(lambda: self.structured("hitl-gate-train")["state"] == "WAITING_APPROVAL",
                      20, "the gate to wait")
        self.assertEqual(self.c.get_job_status("DAG-hitl-gate-train"), "RUNNING")
        self.assertEqual(self.c.get_job_status("DAG-publish"), "PENDING")
        with self.cluster.client() as client:
            client.approve("hitl-gate-train", "looks good", by="alice")
        states = self.wait_ended("DAG-hitl-gate-train", "DAG-publish")
        self.assertEqual(set(states.values()), {"COMPLETED"})
        self.assertEqual(self.structured("hitl-gate-train")["message"], "Publish it?")
        self.assertEqual(self.c.get_logs("DAG-publish"), "published\n")

    # -- files, archives, services --------------------------------------------------------

    def test_assets_and_deployed_scripts(self):
        data = "naïve ✓\n".encode() + bytes(range(256))
        self.assertEqual(self.c.upload_asset("blob ✓.bin", data), "UPLOAD_SUCCESS")
        self.assertEqual(self.c.fetch_asset("blob ✓.bin"), data)
        with self.assertRaises(LegacyError) as caught:
            self.c.fetch_asset("missing.bin")
        self.assertEqual(caught.exception.text, "ERROR_NOT_FOUND")
        self.assertEqual(self.c.deploy_script("deployed.py", py("print('deployed')")),
                         "DEPLOY_SUCCESS")
        self.c.submit_dag("dep|RUN_PAYLOAD|deployed.py|||GENERAL|1|0|[]")
        self.assertEqual(self.wait_ended("DAG-dep")["DAG-dep"], "COMPLETED")
        self.assertEqual(self.c.get_logs("DAG-dep"), "deployed\n")

    def test_project_zip_with_args(self):
        buf = io.BytesIO()
        with zipfile.ZipFile(buf, "w") as z:
            z.writestr("src/main.py", textwrap.dedent("""\
                import sys
                from helper import greet
                print(greet(sys.argv[1:]), open("data/input.txt").read().strip())
                open("output.txt", "w").write("kept")
                """))
            z.writestr("src/helper.py", "def greet(args):\n    return 'hello %s' % args\n")
            z.writestr("data/input.txt", "from the zip ✓\n")
        self.assertEqual(self.c.upload_asset("proj.zip", buf.getvalue()), "UPLOAD_SUCCESS")
        self.c.submit_dag([L.run_archive("arch", "proj.zip/src/main.py", "one 'two three'"),
                           L.run_archive("arch-2", "proj.zip/src/main.py", "again",
                                         parents=["arch"])])
        states = self.wait_ended("DAG-arch", "DAG-arch-2")
        self.assertEqual(set(states.values()), {"COMPLETED"}, self.c.get_logs("DAG-arch"))
        self.assertEqual(self.c.get_logs("DAG-arch"),
                         "hello ['one', 'two three'] from the zip ✓\n")
        self.assertEqual(self.c.get_logs("DAG-arch-2"), "hello ['again'] from the zip ✓\n")
        with self.assertRaises(LegacyError) as caught:
            self.c.submit_dag([L.run_archive("arch-x", "proj.zip/src/nope.py")])
        self.assertEqual(caught.exception.text, "ERROR: job arch-x: proj.zip has no file "
                                                "src/nope.py")

    def test_deploy_a_service_then_stop_it(self):
        server = py("""\
            import os, socket
            s = socket.socket()
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind(("127.0.0.1", int(os.environ["PORT"])))
            s.listen(5)
            print("listening", flush=True)
            while True:
                conn, _ = s.accept()
                conn.sendall(b"hi from the service\\n")
                conn.close()
            """)
        port = _free_port()
        self.assertEqual(self.c.submit_dag([L.deploy_payload("svc", "svc.py", server,
                                                             port=port)]), "DAG_ACCEPTED")

        answers = _greeting(port)
        self.assertEqual(self.wait_for(answers, 30, "the service to answer"),
                         b"hi from the service\n")
        self.assertEqual(self.c.get_job_status("DAG-svc"), "RUNNING")
        self.assertIn("DAG-svc", [s for w in self.c.stats_json()["workers"]
                                  for s in w["services"]])
        self.assertEqual(self.c.stop("DAG-svc"), "STOPPED: DAG-svc")
        self.assertEqual(self.c.get_job_status("DAG-svc"), "CANCELLED")
        self.wait_for(lambda: answers() is None, 20, "the service to stop")
        with self.assertRaises(LegacyError) as caught:
            self.c.stop("DAG-svc")
        self.assertEqual(caught.exception.text,
                         "ERROR: Service DAG-svc is not running (CANCELLED)")

    def test_parallel_jobs_of_one_zip_share_no_workspace_and_keep_every_line(self):
        buf = io.BytesIO()
        with zipfile.ZipFile(buf, "w") as z:
            z.writestr("job.py", textwrap.dedent("""\
                import sys, time
                me = sys.argv[1]
                open("shared-name.txt", "w").write(me)
                for i in range(2000):
                    print(me, i)
                time.sleep(0.3)
                print("mine:", open("shared-name.txt").read())
                """))
        self.assertEqual(self.c.upload_asset("par.zip", buf.getvalue()), "UPLOAD_SUCCESS")
        names = [f"par-{i}" for i in range(6)]
        self.c.submit_dag([L.run_archive(n, "par.zip/job.py", n) for n in names])
        states = self.wait_ended(*(f"DAG-{n}" for n in names))
        self.assertEqual(set(states.values()), {"COMPLETED"})
        for n in names:
            expected = "".join(f"{n} {i}\n" for i in range(2000)) + f"mine: {n}\n"
            self.assertEqual(self.c.get_logs(f"DAG-{n}"), expected)

    def test_a_service_from_a_project_zip(self):
        buf = io.BytesIO()
        with zipfile.ZipFile(buf, "w") as z:
            z.writestr("app/server.py", textwrap.dedent("""\
                import os, socket, sys
                from greeting import text
                s = socket.socket()
                s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                s.bind(("127.0.0.1", int(os.environ["PORT"])))
                s.listen(5)
                print("serving", sys.argv[1:], flush=True)
                while True:
                    conn, _ = s.accept()
                    conn.sendall((text() + " " + open("conf/name.txt").read()).encode())
                    conn.close()
                """))
            z.writestr("app/greeting.py", "def text():\n    return 'hi from the zip'\n")
            z.writestr("conf/name.txt", "svc ✓")
        self.assertEqual(self.c.upload_asset("svc.zip", buf.getvalue()), "UPLOAD_SUCCESS")
        port = _free_port()
        self.assertEqual(self.c.submit_dag([L.start_archive_service(
            "zsvc", "svc.zip/app/server.py", "--mode 'fast lane'", port=port)]),
            "DAG_ACCEPTED")

        answers = _greeting(port)
        self.assertEqual(self.wait_for(answers, 30, "the zipped service to answer"),
                         "hi from the zip svc ✓".encode())
        self.assertEqual(self.c.get_job_status("DAG-zsvc"), "RUNNING")
        self.wait_for(lambda: "serving" in self.c.get_logs("DAG-zsvc"), 10, "its output")
        self.assertEqual(self.c.get_logs("DAG-zsvc"), "serving ['--mode', 'fast lane']\n")
        self.assertEqual(self.c.stop("DAG-zsvc"), "STOPPED: DAG-zsvc")
        self.wait_for(lambda: answers() is None, 20, "the service to stop")
        self.assertEqual(self.c.get_job_status("DAG-zsvc"), "CANCELLED")

    # -- the rest ----------------------------------------------------------------------------

    def test_stats(self):
        stats = self.c.stats_json()
        self.assertEqual(stats["active_workers"], 2)
        self.assertEqual(sorted(w["name"] for w in stats["workers"]), ["w1", "w2"])

    def test_stats_as_the_references_dashboard_reads_them(self):
        """B12: each worker's port and its recent jobs; queue_size counts only jobs ready
        and waiting for a slot (here: none, though a job waits for its parent)."""
        self.c.submit_dag([
            L.run_payload("st-slow", "slow.py", py("import time; time.sleep(3)")),
            L.run_payload("st-after", "a.py", b"print(1)", parents=["st-slow"])])
        self.wait_for(lambda: self.c.get_job_status("DAG-st-slow") == "RUNNING", 20,
                      "st-slow to run")
        stats = self.c.stats_json()
        self.assertEqual(stats["queue_size"], 0)
        self.assertGreaterEqual(stats["jobs"]["PENDING"], 1)  # st-after, blocked
        ports = [w["port"] for w in stats["workers"]]
        self.assertTrue(all(isinstance(p, int) and p > 0 for p in ports), ports)
        self.assertEqual(len(set(ports)), 2)
        running = [h for w in stats["workers"] for h in w["history"]
                   if h["id"] == "DAG-st-slow"]
        self.assertEqual([h["status"] for h in running], ["RUNNING"])
        self.assertTrue(running[0]["time"].endswith("ms"))
        self.assertEqual(self.wait_ended("DAG-st-after")["DAG-st-after"], "COMPLETED")
        stats = self.c.stats_json()
        done = {h["id"]: h for w in stats["workers"] for h in w["history"]}
        self.assertEqual(done["DAG-st-slow"]["status"], "COMPLETED")
        self.assertGreaterEqual(int(done["DAG-st-slow"]["time"][:-2]), 2900)
        self.assertGreater(done["DAG-st-after"]["completed_at"],
                           done["DAG-st-slow"]["completed_at"])
        self.assertTrue(all(len(w["history"]) <= 10 for w in stats["workers"]))
        text = self.c.stats()
        self.assertIn("--- TITAN SYSTEM MONITOR ---", text)
        self.assertIn("Active Workers:    2", text)

    def test_store_ops(self):
        """This cluster's master has no store: each KV op is an error that says so (with a
        store they work: tests/acceptance/test_legacy_store.py)."""
        for call in (lambda: self.c.kv_set("legacy:k", "v|1 ✓"),
                     lambda: self.c.kv_get("legacy:k"),
                     lambda: self.c.kv_sadd("legacy:s", "m"),
                     lambda: self.c.kv_smembers("legacy:s")):
            with self.assertRaises(LegacyError) as caught:
                call()
            self.assertEqual(caught.exception.text, "ERROR: the store is not configured")

    def test_unknown_status_is_null(self):
        self.assertEqual(self.c.get_job_status("DAG-no-such-job"), "NULL")
        with self.assertRaises(LegacyError) as caught:
            self.c.get_logs("DAG-no-such-job")
        self.assertEqual(caught.exception.text, "ERROR: no job DAG-no-such-job")


def _greeting(port: int):
    """A probe: what a service on `port` says to a new connection (None: nobody there)."""
    def answers():
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=2) as conn:
                return conn.recv(100)
        except OSError:
            return None
    return answers


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
