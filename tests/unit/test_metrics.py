"""The master's metrics (titan/master/metrics.py): a master on a memory reactor, driven over
its protocol as workers and clients drive it, scraped and parsed with prometheus_client's
own parsers."""
from __future__ import annotations

import os

from prometheus_client.openmetrics.parser import \
    text_string_to_metric_families as openmetrics_families
from prometheus_client.parser import text_string_to_metric_families
from twisted.internet import defer
from twisted.internet.task import Clock
from twisted.internet.testing import MemoryReactorClock
from twisted.trial.unittest import SynchronousTestCase

from titan.config import Config, MasterConfig
from titan.master.metrics import MasterMetrics
from titan.master.service import MasterService
from titan.persistence.aof import AOFPersistence
from titan.protocols.opcodes import Op
from titan.store.client import StoreClient, StoreUnavailable
from tests.unit.test_master import TOKEN, MasterCase


def scrape(master: MasterService, accept=None) -> dict:
    """{(sample name, ((label, value), ...)): value} of one scrape, parsed."""
    body, content_type = master.api.metrics(None, accept)
    assert content_type.startswith("text/plain"), content_type
    out = {}
    for family in text_string_to_metric_families(body.decode()):
        for sample in family.samples:
            out[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return out


def value(samples: dict, name: str, **labels) -> float:
    key = (name, tuple(sorted(labels.items())))
    if key not in samples:
        near = sorted(k for k in samples if k[0] == name)
        raise AssertionError(f"no sample {key}; of {name}: {near}")
    return samples[key]


class MetricsCase(MasterCase):
    """A master on a memory reactor (test_master's), with a client and workers."""


class JobMetricsTests(MetricsCase):
    def test_jobs_by_state_and_ready_jobs_by_the_tags_they_need(self):
        c = self.client()
        for body in ({"command": ["true"]}, {"command": ["true"]},
                     {"command": ["train"], "tags": ["gpu", "cuda"]},
                     {"command": ["x"], "delay": 60}):
            c.result(Op.SUBMIT_JOB, body)
        s = scrape(self.master)
        self.assertEqual(value(s, "titan_jobs", state="PENDING"), 4)
        self.assertEqual(value(s, "titan_jobs", state="RUNNING"), 0)
        # The delayed one is not ready yet; tags are sorted and upper-case, as routed.
        self.assertEqual(value(s, "titan_ready_jobs", tags=""), 2)
        self.assertEqual(value(s, "titan_ready_jobs", tags="CUDA,GPU"), 1)

        self.worker("w1", slots=2)  # takes the two plain jobs, not the GPU one
        s = scrape(self.master)
        self.assertEqual(value(s, "titan_ready_jobs", tags=""), 0)
        self.assertEqual(value(s, "titan_ready_jobs", tags="CUDA,GPU"), 1)
        self.assertEqual(value(s, "titan_jobs", state="RUNNING"), 2)

    def test_a_job_that_runs_moves_latency_duration_and_ended_counts(self):
        c = self.client()
        before = scrape(self.master)
        self.assertEqual(value(before, "titan_dispatch_latency_seconds_count"), 0)
        self.assertEqual(value(before, "titan_jobs_ended_total", state="COMPLETED"), 0)
        job_id = c.result(Op.SUBMIT_JOB, {"command": ["true"]})["job_id"]
        self.reactor.advance(0.25)  # ready, with no worker to take it yet
        self.assertEqual(value(scrape(self.master), "titan_dispatch_latency_seconds_count"), 0)
        w = self.worker("w1")  # given to it now
        self.reactor.advance(2.0)
        w.result(Op.JOB_COMPLETE, {"job_id": job_id, "attempt": 1, "exit_code": 0})
        s = scrape(self.master)
        self.assertEqual(value(s, "titan_dispatch_latency_seconds_count"), 1)
        self.assertAlmostEqual(value(s, "titan_dispatch_latency_seconds_sum"), 0.25)
        self.assertEqual(value(s, "titan_dispatch_latency_seconds_bucket", le="0.25"), 1)
        self.assertEqual(value(s, "titan_dispatch_latency_seconds_bucket", le="0.1"), 0)
        self.assertEqual(value(s, "titan_job_duration_seconds_count", state="COMPLETED"), 1)
        self.assertAlmostEqual(value(s, "titan_job_duration_seconds_sum", state="COMPLETED"),
                               2.0)
        self.assertEqual(value(s, "titan_jobs_ended_total", state="COMPLETED"), 1)
        self.assertEqual(value(s, "titan_jobs", state="COMPLETED"), 1)

    def test_a_failure_counts_by_its_end_state_and_a_cancelled_wait_has_no_duration(self):
        w = self.worker("w1")
        c = self.client()
        failing = c.result(Op.SUBMIT_JOB, {"command": ["false"]})["job_id"]
        waiting = c.result(Op.SUBMIT_JOB, {"command": ["true"]})["job_id"]  # no free slot
        self.reactor.advance(1.5)
        w.result(Op.JOB_COMPLETE, {"job_id": failing, "attempt": 1, "exit_code": 3})
        # The second one was dispatched on the freed slot; cancel a third that waits.
        third = c.result(Op.SUBMIT_JOB, {"command": ["true"]})["job_id"]
        c.result(Op.CANCEL_JOB, {"job_id": third})
        s = scrape(self.master)
        self.assertEqual(value(s, "titan_jobs_ended_total", state="FAILED"), 1)
        self.assertEqual(value(s, "titan_jobs_ended_total", state="CANCELLED"), 1)
        self.assertEqual(value(s, "titan_job_duration_seconds_count", state="FAILED"), 1)
        self.assertAlmostEqual(value(s, "titan_job_duration_seconds_sum", state="FAILED"), 1.5)
        self.assertEqual(value(s, "titan_job_duration_seconds_count", state="CANCELLED"), 0)
        self.assertEqual(self.master.scheduler.jobs[waiting].state.value, "RUNNING")

    def test_the_event_log_size_grows_with_records(self):
        before = value(scrape(self.master), "titan_event_log_bytes")
        c = self.client()
        c.result(Op.SUBMIT_JOB, {"command": ["echo", "x" * 1000]})
        s = scrape(self.master)
        self.assertGreater(value(s, "titan_event_log_bytes"), before + 1000)
        self.assertEqual(value(s, "titan_event_log_records_since_compaction"), 1)
        self.assertEqual(value(s, "titan_storage_available"), 1)

    def test_openmetrics_when_the_scraper_asks_for_it(self):
        body, content_type = self.master.api.metrics(
            None, "application/openmetrics-text; version=1.0.0,text/plain;q=0.5")
        self.assertTrue(content_type.startswith("application/openmetrics-text"), content_type)
        names = {f.name for f in openmetrics_families(body.decode())}
        self.assertIn("titan_jobs_ended", names)
        self.assertIn("titan_jobs", names)

    def test_each_master_has_its_own_registry(self):
        other = MasterService(Config(token=TOKEN, master=MasterConfig(
            listen="tcp:0:interface=127.0.0.1", data_dir=self.mktemp())),
            reactor=MemoryReactorClock())
        other.privilegedStartService()
        self.addCleanup(other.stopService)
        self.client().result(Op.SUBMIT_JOB, {"command": ["true"]})
        self.assertEqual(value(scrape(self.master), "titan_jobs", state="PENDING"), 1)
        self.assertEqual(value(scrape(other), "titan_jobs", state="PENDING"), 0)
        # The process's own figures, from the library's collector.
        self.assertGreater(value(scrape(other), "process_resident_memory_bytes"), 0)


class WorkerMetricsTests(MetricsCase):
    def test_workers_and_slots_by_state_and_each_worker_by_name(self):
        w1 = self.worker("w1", slots=2)
        self.worker("w2", slots=3)
        c = self.client()
        c.result(Op.SUBMIT_JOB, {"command": ["sleep", "9"]})
        w1.send(Op.HEARTBEAT, {"worker_id": "w1", "running": 1, "load1": 0.5, "cpus": 8,
                               "rss_bytes": 123456789, "cpu_seconds": 12.5, "open_fds": 20},
                rid=False)
        c.result(Op.DRAIN_WORKER, {"name": "w2"})
        s = scrape(self.master)
        self.assertEqual(value(s, "titan_workers", state="ALIVE"), 1)
        self.assertEqual(value(s, "titan_workers", state="DRAINING"), 1)
        self.assertEqual(value(s, "titan_slots", state="busy"), 1)
        self.assertEqual(value(s, "titan_slots", state="free"), 1)
        self.assertEqual(value(s, "titan_slots", state="unavailable"), 3)
        w1_labels = {"worker": "w1", "worker_id": "w1"}
        self.assertEqual(value(s, "titan_worker_slots", **w1_labels), 2)
        self.assertEqual(value(s, "titan_worker_busy_slots", **w1_labels), 1)
        self.assertEqual(value(s, "titan_worker_state", state="ALIVE", **w1_labels), 1)
        self.assertEqual(value(s, "titan_worker_state", state="DRAINING", **w1_labels), 0)
        self.assertEqual(value(s, "titan_worker_state", state="DRAINING", worker="w2",
                               worker_id="w2"), 1)
        # What w1's heartbeat carried; w2 sent none, so it has none of these series.
        self.assertEqual(value(s, "titan_worker_running_jobs", **w1_labels), 1)
        self.assertEqual(value(s, "titan_worker_load1", **w1_labels), 0.5)
        self.assertEqual(value(s, "titan_worker_cpus", **w1_labels), 8)
        self.assertEqual(value(s, "titan_worker_resident_memory_bytes", **w1_labels),
                         123456789)
        self.assertEqual(value(s, "titan_worker_cpu_seconds_total", **w1_labels), 12.5)
        self.assertEqual(value(s, "titan_worker_open_fds", **w1_labels), 20)
        self.assertNotIn(("titan_worker_load1", (("worker", "w2"), ("worker_id", "w2"))), s)

    def test_a_heartbeat_with_bad_figures_is_taken_and_they_are_skipped(self):
        w1 = self.worker("w1")
        w1.send(Op.HEARTBEAT, {"worker_id": "w1", "load1": "high", "cpus": True,
                               "rss_bytes": float("nan"), "open_fds": 7}, rid=False)
        s = scrape(self.master)
        labels = (("worker", "w1"), ("worker_id", "w1"))
        for name in ("titan_worker_load1", "titan_worker_cpus",
                     "titan_worker_resident_memory_bytes", "titan_worker_running_jobs"):
            self.assertNotIn((name, labels), s)
        self.assertEqual(s[("titan_worker_open_fds", labels)], 7)
        self.assertEqual(value(s, "titan_workers", state="ALIVE"), 1)

    def test_a_worker_that_comes_back_counts_as_a_reconnect(self):
        w1 = self.worker("w1")
        w1.proto.connectionLost(None)
        s = scrape(self.master)
        self.assertEqual(value(s, "titan_workers", state="DISCONNECTED"), 1)
        self.assertEqual(value(s, "titan_slots", state="unavailable"), 1)
        self.worker("w1")
        self.worker("w2")
        s = scrape(self.master)
        self.assertEqual(value(s, "titan_worker_joins_total", kind="new"), 2)
        self.assertEqual(value(s, "titan_worker_joins_total", kind="reconnect"), 1)
        self.assertEqual(value(s, "titan_workers", state="ALIVE"), 2)

    def test_a_silent_worker_given_up_counts_as_lost(self):
        self.worker("w1")
        for _ in range(7):
            self.reactor.advance(1.0)
        s = scrape(self.master)
        self.assertEqual(value(s, "titan_workers_lost_total"), 1)
        self.assertEqual(value(s, "titan_workers", state="ALIVE"), 0)
        self.assertNotIn(("titan_worker_slots", (("worker", "w1"), ("worker_id", "w1"))), s)

    def test_open_sse_streams_are_counted(self):
        self.assertEqual(value(scrape(self.master), "titan_sse_clients", stream="log"), 0)
        self.master.web.log_streams.add(object())
        s = scrape(self.master)
        self.assertEqual(value(s, "titan_sse_clients", stream="log"), 1)
        self.assertEqual(value(s, "titan_sse_clients", stream="events"), 0)


class HookTests(SynchronousTestCase):
    """The hooks the persistence and the store client offer, and what they count."""

    def metrics(self) -> MasterMetrics:
        return MasterMetrics(engine=None)  # (its state is never collected here)

    def test_the_aof_tells_how_long_each_fsync_took(self):
        directory = self.mktemp()
        os.makedirs(directory)
        taken = []
        backend = AOFPersistence(directory, "always", reactor=Clock(),
                                 blocking=lambda f, *a: defer.maybeDeferred(f, *a))
        backend.on_fsync = taken.append
        backend.load()
        self.addCleanup(backend.close)
        done = backend.append(b"record")
        backend.reactor.advance(0)
        self.successResultOf(done)
        self.assertEqual(len(taken), 1)
        self.assertGreaterEqual(taken[0], 0.0)
        self.assertLess(taken[0], 10.0)

    def test_fsyncs_and_store_commands_are_observed(self):
        m = self.metrics()
        m.fsync_took(0.002)
        m.store_command(b"get", 0.001, "ok")
        m.store_command("SET", 0.003, "error")
        m.store_command("NOT A\nCOMMAND", 0.0, "unavailable")
        s = {(x.name, tuple(sorted(x.labels.items()))): x.value
             for c in (m.fsync_seconds, m.store_commands, m.store_seconds)
             for f in c.collect() for x in f.samples}
        self.assertEqual(value(s, "titan_persistence_fsync_seconds_count"), 1)
        self.assertEqual(value(s, "titan_persistence_fsync_seconds_bucket", le="0.0025"), 1)
        self.assertEqual(value(s, "titan_store_commands_total", command="GET", outcome="ok"), 1)
        self.assertEqual(value(s, "titan_store_commands_total", command="SET",
                               outcome="error"), 1)
        self.assertEqual(value(s, "titan_store_commands_total", command="OTHER",
                               outcome="unavailable"), 1)
        self.assertEqual(value(s, "titan_store_command_seconds_count"), 3)

    def test_the_store_client_reports_each_command_and_its_outcome(self):
        reactor = MemoryReactorClock()
        client = StoreClient("redis://127.0.0.1:1/0", reactor=reactor, connect_timeout=2.0)
        seen = []
        client.on_command = lambda *args: seen.append(args)
        d = client.get("k")  # no connection comes (a memory reactor): it gives up
        reactor.advance(2.0)
        self.failureResultOf(d, StoreUnavailable)
        self.assertEqual(seen, [("GET", 2.0, "unavailable")])
        client.close()
