"""A worker's reports of jobs that end while its hello is on its way are not held back.

Found with issue 14, part 3: after a master restart, the master told a reconnecting worker
to stop a job (an attempt it did not know) before it answered the worker's REGISTER; the job
ended before that answer, its report waited for the next reconnect, and the master kept the
job's slot taken (and the job PENDING) for good.
"""
from __future__ import annotations

from twisted.internet import defer, task
from twisted.trial.unittest import SynchronousTestCase

from titan.config import Config, WorkerConfig
from titan.core.model import JobSpec
from titan.protocols.opcodes import Op
from titan.worker.service import RunningJob, WorkerService


class FakeConnection:
    """The worker's connection to the master: requests wait until the test answers."""

    def __init__(self) -> None:
        self.calls: list[tuple[int, dict, defer.Deferred]] = []
        self.pushes: list[tuple[int, dict]] = []

    def call(self, opcode: int, body: dict, timeout=None) -> defer.Deferred:
        d: defer.Deferred = defer.Deferred()
        self.calls.append((opcode, body, d))
        return d

    def push(self, opcode: int, body: dict) -> None:
        self.pushes.append((opcode, body))


class ReportsAtRegistrationTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = task.Clock()
        config = Config(token="t", worker=WorkerConfig(
            name="w1", data_dir=self.mktemp(), detect_tags=False))
        self.worker = WorkerService(config, "t", reactor=self.clock)
        self.addCleanup(lambda: self.worker._heartbeat and self.worker._heartbeat.running
                        and self.worker._heartbeat.stop())

    def running(self, job_id: str, attempt: int) -> RunningJob:
        job = RunningJob(job_id=job_id, spec=JobSpec(job_id=job_id, command=("true",)),
                         attempt=attempt, workdir=self.mktemp(), own_workdir=False)
        self.worker.jobs[job_id] = job
        return job

    def test_a_job_that_ends_during_the_hello_is_reported_after_it(self):
        job = self.running("b", 1)
        conn = FakeConnection()
        self.worker.connected(conn)
        [(op, hello, answer)] = conn.calls
        self.assertEqual((op, hello["running"]), (Op.REGISTER, [{"job_id": "b", "attempt": 1}]))
        job.chunks.append(["out", b"bye\n"])
        self.worker._exited(job, None, "killed: already PENDING")  # before the answer
        self.assertEqual(len(conn.calls), 1)
        answer.callback({"heartbeat_interval": 1.0})
        self.assertEqual([(op, body["job_id"], body["attempt"], body["reason"])
                          for op, body, _ in conn.calls[1:]],
                         [(Op.JOB_COMPLETE, "b", 1, "killed: already PENDING")])
        self.assertNotIn("logs", conn.calls[1][1])
        self.assertIn((Op.LOG_BATCH, {"job_id": "b", "attempt": 1,
                                      "chunks": [["out", b"bye\n"]]}), conn.pushes)
        conn.calls[1][2].callback({})
        self.assertEqual(self.worker.unacked, {})

    def test_reports_in_the_hello_are_not_sent_twice(self):
        job = self.running("a", 1)
        self.worker._exited(job, 0, None)  # no master: kept for the hello
        conn = FakeConnection()
        self.worker.connected(conn)
        [(op, hello, answer)] = conn.calls
        self.assertEqual([r["job_id"] for r in hello["finished"]], ["a"])
        answer.callback({"heartbeat_interval": 1.0})
        self.assertEqual(len(conn.calls), 1)
        self.assertEqual(self.worker.unacked, {})
