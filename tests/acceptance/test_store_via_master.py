"""Tasks on two workers share data through the master's store — here a real redis-server,
which is what swapping TitanStore for Redis amounts to (`store: {backend: redis, url: ...}`)."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import textwrap

from tests.acceptance.helpers import ClusterTestCase, wait_for
from titan.testing.cluster import free_port

REDIS_PORT = free_port()
REDIS_DIR = tempfile.mkdtemp(prefix="titan-redis-")


def start_redis(case):
    binary = shutil.which("redis-server")
    if binary is None:
        raise RuntimeError("redis-server is not installed (make test installs it)")
    proc = subprocess.Popen([binary, "--port", str(REDIS_PORT), "--bind", "127.0.0.1",
                             "--save", "", "--appendonly", "no", "--dir", REDIS_DIR],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_for(case, lambda: subprocess.run(["redis-cli", "-p", str(REDIS_PORT), "PING"],
                                          capture_output=True).stdout.strip() == b"PONG",
             10, f"redis-server to answer PING on port {REDIS_PORT}")
    return proc


class StoreThroughMasterTests(ClusterTestCase):
    workers = 2
    slots = 2
    cluster_options = {"config_extra": f"store:\n  backend: redis\n"
                                       f"  url: redis://127.0.0.1:{REDIS_PORT}/0\n"}

    def setUp(self):
        if type(self).__dict__.get("redis") is None:
            type(self).redis = start_redis(self)
            import atexit
            atexit.register(type(self).redis.kill)
        super().setUp()

    def test_a_task_on_one_worker_writes_and_a_task_on_the_other_reads(self):
        writer = textwrap.dedent("""\
            from titan.sdk import Client
            c = Client()
            c.store_put("handoff", "rows=42 ✓")
            c.store_sadd("seen", "writer")
            print("wrote")""")
        reader = textwrap.dedent("""\
            from titan.sdk import Client
            c = Client()
            print(c.store_get("handoff").decode(), sorted(c.store_smembers("seen")))""")
        with self.cluster.client() as c:
            run = c.submit_dag({"name": "handoff", "jobs": [
                {"id": "write", "command": [sys.executable, "-c", writer], "affinity": "strict:w1"},
                {"id": "read", "command": [sys.executable, "-c", reader], "depends_on": ["write"],
                 "affinity": "strict:w2"}]})["run_id"]
            result = c.wait_run(run, timeout=60)
            self.assertEqual(result["state"], "COMPLETED", result)
            self.assertEqual(c.job(f"{run}/write")["worker"], "w1")
            self.assertEqual(c.job(f"{run}/read")["worker"], "w2")
            self.assertEqual(c.logs(f"{run}/read").decode(), "rows=42 ✓ [b'writer']\n")
        got = subprocess.run(["redis-cli", "-p", str(REDIS_PORT), "GET", "handoff"],
                             capture_output=True).stdout
        self.assertEqual(got.decode(), "rows=42 ✓\n")

    def test_publish_and_subscribe_through_the_master(self):
        import threading
        got = []
        with self.cluster.client() as listener:
            def listen():
                for channel, message in listener.subscribe("news", timeout=10):
                    got.append((channel, message))
                    return
            thread = threading.Thread(target=listen)
            thread.start()
            with self.cluster.client() as c:
                # Published again until the listener is subscribed (then 1 receives it).
                self.wait_for(lambda: c.publish("news", "hello"), 10,
                              "the listener to be subscribed to news")
            thread.join(15)
        self.assertEqual(got, [("news", b"hello")])

    def test_a_master_without_a_store_says_so(self):
        from titan.testing.cluster import Cluster
        from titan.errors import RemoteError
        bare = Cluster(tempfile.mkdtemp(prefix="titan-nostore-"), workers=0)
        self.addCleanup(bare.stop)
        bare.start()
        with bare.client() as c:
            with self.assertRaises(RemoteError) as caught:
                c.store_get("x")
        self.assertEqual(caught.exception.message, "the store is not configured on this master")
