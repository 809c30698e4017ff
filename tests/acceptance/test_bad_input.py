"""Bad input gets one clear line; the servers keep running."""
from __future__ import annotations

import os
import random
import socket
import struct
import subprocess

import msgpack

from titan.protocols.frame import encode_frame
from titan.protocols.opcodes import KNOWN_OPCODES, Op
from titan.testing.cluster import BIN
from tests.acceptance.helpers import ClusterTestCase


def _fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def _rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


class BadConfigTests(ClusterTestCase):
    workers = 0

    def _twistd(self, *args: str) -> subprocess.CompletedProcess:
        return subprocess.run([os.path.join(BIN, "twistd"), "-n", "--pidfile=", *args],
                              capture_output=True, timeout=60, cwd=self.base_dir)

    def test_unknown_key_names_file_line_and_key(self):
        path = os.path.join(self.base_dir, "bad.yaml")
        with open(path, "w") as f:
            f.write("master:\n  listen: tcp:0\n  heartbeat_timout: 3\n")
        result = self._twistd("titan-master", "--config", path)
        self.assertNotEqual(result.returncode, 0)
        self.assertIn(f"{path}:3: unknown key master.heartbeat_timout", result.stderr.decode())

    def test_wrong_type(self):
        path = os.path.join(self.base_dir, "bad-type.yaml")
        with open(path, "w") as f:
            f.write("worker:\n  slots: many\n")
        result = self._twistd("titan-worker", "--config", path, "--token", "t")
        self.assertNotEqual(result.returncode, 0)
        self.assertIn(f"{path}:2: worker.slots must be a whole number, not 'many'",
                      result.stderr.decode())

    def test_missing_config_file(self):
        result = self._twistd("titan-master", "--config", "/nonexistent/titan.yaml")
        self.assertNotEqual(result.returncode, 0)
        self.assertIn("/nonexistent/titan.yaml: cannot read the config file",
                      result.stderr.decode())

    def test_port_in_use(self):
        result = self._twistd("titan-master", "--listen",
                              f"tcp:{self.cluster.port}:interface=127.0.0.1",
                              "--data-dir", os.path.join(self.base_dir, "second"))
        self.assertNotEqual(result.returncode, 0)
        self.assertIn(f"cannot listen on tcp:{self.cluster.port}:interface=127.0.0.1",
                      result.stderr.decode() + result.stdout.decode())

    def test_twist_runs_the_same_plugins(self):
        result = subprocess.run([os.path.join(BIN, "twist"), "titan-master", "--help"],
                                capture_output=True, timeout=60)
        self.assertEqual(result.returncode, 0)
        self.assertIn(b"--listen", result.stdout)


class FrameFuzzTests(ClusterTestCase):
    workers = 1

    def _connect(self) -> socket.socket:
        s = socket.create_connection(("127.0.0.1", self.cluster.port), timeout=5)
        return s

    def _hello(self, s: socket.socket) -> None:
        s.sendall(encode_frame(Op.HELLO, msgpack.packb({"rid": 1, "token": self.cluster.token})))

    def _frames(self, rng: random.Random):
        """Random and mutated frames: the kinds of damage a stream can carry."""
        good = encode_frame(Op.SUBMIT_JOB, msgpack.packb({"rid": 7, "command": ["true"]}))
        kind = rng.randrange(7)
        if kind == 0:  # random bytes
            return bytes(rng.randrange(256) for _ in range(rng.randrange(1, 64)))
        if kind == 1:  # a good frame with one byte flipped
            b = bytearray(good)
            b[rng.randrange(len(b))] ^= 1 << rng.randrange(8)
            return bytes(b)
        if kind == 2:  # wrong version
            return struct.pack("!BBBBI", rng.choice([0, 2, 255]), Op.JOB_INFO, 1, 0, 0)
        if kind == 3:  # oversize length
            return struct.pack("!BBBBI", 1, Op.SUBMIT_JOB, 1, 0, 0xFFFFFFF0)
        if kind == 4:  # unknown opcode
            op = rng.choice([o for o in range(256) if o not in KNOWN_OPCODES])
            return encode_frame(op, b"\x80")
        if kind == 5:  # structured flag, body not msgpack
            return encode_frame(rng.choice(sorted(KNOWN_OPCODES)), b"\xc1\xc1garbage")
        return good[: rng.randrange(1, len(good))]  # truncated, then the connection closes

    def test_fuzzed_frames_leave_the_master_serving(self):
        rng = random.Random(20261128)
        master_pid = self.cluster.master.pid
        with self.cluster.client() as c:
            c.workers()  # served: our connection is open and counted in the baseline
            # (a connection of an earlier test still closing only loosens the bound below)
            fds_before = _fds(master_pid)
            rss_before = _rss_kib(master_pid)
            sent = 0
            for connection in range(60):
                s = self._connect()
                if connection % 2:
                    self._hello(s)
                try:
                    for _ in range(50):
                        s.sendall(self._frames(rng))
                        sent += 1
                except OSError:
                    pass  # the master hung up on a stream it could no longer trust
                s.close()
                # Another client is served all along.
                if connection % 10 == 0:
                    self.assertEqual(c.wait(c.submit(["true"]), timeout=30)["state"], "COMPLETED")
            job = c.wait(c.submit(["sh", "-c", "echo still here"]), timeout=30)
            self.assertEqual(job["state"], "COMPLETED")
            self.assertEqual(c.logs(job["job_id"]), b"still here\n")
            self.assertGreater(sent, 500)
            # The master closes the fuzzers' sockets as it reads their ends.
            self.wait_for(lambda: _fds(master_pid) <= fds_before + 2, 20,
                          f"the master's open files to fall back to {fds_before} + 2")
            self.assertLess(_rss_kib(master_pid) - rss_before, 50_000)
        self.assertIsNone(self.cluster.master.proc.poll())

    def test_error_frames_say_what(self):
        s = self._connect()
        s.sendall(encode_frame(Op.JOB_INFO, msgpack.packb({"rid": 1, "job_id": "x"})))
        reply = s.recv(4096)
        body = msgpack.unpackb(reply[8:])
        self.assertEqual(reply[1], Op.ERROR)
        self.assertEqual(body["code"], "hello_required")
        s.close()
        s = self._connect()
        s.sendall(struct.pack("!BBBBI", 9, Op.HELLO, 1, 0, 0))
        reply = s.recv(4096)
        self.assertEqual(reply[1], Op.ERROR)
        self.assertIn("unsupported protocol version 9", msgpack.unpackb(reply[8:])["message"])
        self.assertEqual(s.recv(4096), b"")  # and the stream is closed
        s.close()
