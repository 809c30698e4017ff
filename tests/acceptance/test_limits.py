"""Limits against hostile clients on a real master (issue 15, part 3; docs/security.md):
what a peer sees over TCP, and that workers and clients keep working."""
from __future__ import annotations

import os
import socket
import struct
import time

from titan.protocols import codec
from titan.protocols.frame import FrameDecoder
from titan.protocols.opcodes import Op

from tests.acceptance.helpers import ClusterTestCase, Journal, wait_ended


def read_frames(sock: socket.socket, timeout: float) -> tuple[list, bool]:
    """Frames the master sends until it closes the connection (True) or `timeout`."""
    sock.settimeout(0.2)
    decoder = FrameDecoder(64 * 1024 * 1024)
    frames: list = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            data = sock.recv(65536)
        except socket.timeout:
            continue
        except ConnectionResetError:
            return frames, True
        if not data:
            return frames, True
        frames += decoder.feed(data)
    return frames, False


class PreauthTests(ClusterTestCase):
    workers = 1
    cluster_options = {"master_extra": "  hello_timeout: 1.5\n"}

    def connect(self) -> socket.socket:
        sock = socket.create_connection(("127.0.0.1", self.cluster.port), timeout=5)
        self.addCleanup(sock.close)
        return sock

    def test_a_connection_that_says_nothing_is_closed_at_the_deadline(self):
        sock = self.connect()
        start = time.monotonic()
        sock.sendall(b"\x01\x01")  # a slowloris' first bytes of a header
        frames, closed = read_frames(sock, 10)
        took = time.monotonic() - start
        self.assertTrue(closed, "the master kept the connection")
        self.assertGreater(took, 1.0)
        self.assertLess(took, 6.0)
        body = codec.unpack(frames[0].body)
        self.assertEqual((frames[0].opcode, body["code"]), (Op.ERROR, "hello_timeout"))
        with self.cluster.client() as c:  # everybody else is served as before
            self.assertEqual(len(c.workers()), 1)

    def test_a_large_frame_before_hello_is_refused_at_its_header(self):
        sock = self.connect()
        sock.sendall(struct.pack("!BBBBI", 1, Op.HELLO, 1, 0, 16 * 1024 * 1024))
        frames, closed = read_frames(sock, 5)
        self.assertTrue(closed)
        body = codec.unpack(frames[0].body)
        self.assertEqual(body["code"], "too_large")
        self.assertIn("before HELLO (master.preauth_frame_bytes)", body["message"])

    def test_a_request_before_hello_is_refused_with_its_rid(self):
        sock = self.connect()
        body = codec.pack({"rid": 41, "command": ["true"]})
        sock.sendall(struct.pack("!BBBBI", 1, Op.SUBMIT_JOB, 1, 0, len(body)) + body)
        frames, closed = read_frames(sock, 5)
        self.assertTrue(closed)
        reply = codec.unpack(frames[0].body)
        self.assertEqual((reply["rid"], reply["code"]), (41, "hello_required"))
        with self.cluster.client() as c:
            self.assertEqual(c.jobs(), [])


class WorkerRegisterTests(ClusterTestCase):
    """A worker that comes back with the output of jobs that ended while its master was
    down sends a REGISTER over the pre-auth frame limit: it says HELLO first."""

    workers = 1
    cluster_options = {"fixed_port": True}

    def test_output_kept_while_the_master_was_down_arrives(self):
        go = os.path.join(self.cluster.base_dir, "go")
        script = (f"import os, sys, time\n"
                  f"while not os.path.exists({go!r}): time.sleep(0.05)\n"
                  f"sys.stdout.write('y' * 300000); sys.stdout.flush()\n")
        journal = Journal(os.path.join(self.cluster.base_dir, "journal"))
        with self.cluster.client() as c:
            job = c.submit(journal.sh(["python3", "-c", script]))
            self.wait_for(lambda: c.status(job) == "RUNNING", 20, "the job to start")
        self.cluster.kill_master()
        open(go, "w").close()  # the job ends while the master is down; its output waits
        self.wait_for(lambda: journal.ends(job), 20, "the job to end")
        self.cluster.start_master()
        with self.cluster.client() as c:
            [ended] = wait_ended(self, c, job, 30)
            self.assertEqual(ended["state"], "COMPLETED", ended)
            self.assertEqual(c.logs(job), b"y" * 300000)
        # Reported, not run again: the one run that ended while the master was down.
        journal.check_after_restart(self, self.cluster, [job])
        self.assertEqual(len(journal.starts(job)), 1)
        with open(self.cluster.master.log_file) as f:
            self.assertNotIn("too_large", f.read())


class TextFrameLimitTests(ClusterTestCase):
    """The reference's clients send no hello: where text frames are on, their uploads have
    master.text_frame_bytes, not the pre-auth limit."""

    workers = 0
    cluster_options = {"master_extra": "  text_frames: on\n"}

    def test_an_upload_larger_than_the_preauth_limit_is_served(self):
        from titan.sdk.legacy_client import LegacyClient
        c = LegacyClient("127.0.0.1", self.cluster.port)
        data = bytes(range(256)) * 4096  # 1 MiB: 1.4 MB of base64
        self.assertEqual(c.upload_asset("big.bin", data), "UPLOAD_SUCCESS")
        self.assertEqual(c.fetch_asset("big.bin"), data)

    def test_a_text_frame_over_its_own_limit_is_refused_at_its_header(self):
        sock = socket.create_connection(("127.0.0.1", self.cluster.port), timeout=5)
        self.addCleanup(sock.close)
        sock.sendall(struct.pack("!BBBBI", 1, Op.UPLOAD_ASSET, 0, 0, 17 * 1024 * 1024))
        frames, closed = read_frames(sock, 5)
        self.assertTrue(closed)
        self.assertEqual(frames[0].body, b"ERROR: UPLOAD_ASSET text frame of 17825792 bytes "
                         b"is over the 16777216-byte limit (master.text_frame_bytes)")
