"""GET /metrics on a real master's web listener (issue 20, metrics): scraped over HTTP as
Prometheus would, with the cluster token or a viewer token, parsed with prometheus_client's
own parser; the values move as real jobs run on real workers, whose series reach it
through their heartbeats (no port on the workers)."""
from __future__ import annotations

import urllib.error
import urllib.request
from typing import Optional

from prometheus_client.parser import text_string_to_metric_families

from titan.errors import RemoteError
from tests.acceptance import test_legacy_store as legacy
from tests.acceptance.helpers import ClusterTestCase, wait_ended

VIEWER = "metrics-viewer-token-0123456789"


class Scraping:
    """GET /metrics as Prometheus does it, for a ClusterTestCase."""

    def get(self, path: str, token: Optional[str] = None, timeout: float = 30):
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        request = urllib.request.Request(self.cluster.web_url + path, headers=headers)
        return urllib.request.urlopen(request, timeout=timeout)

    def scrape(self, token: Optional[str] = None) -> dict:
        """{(name, ((label, value), ...)): value}, as prometheus_client parses the answer."""
        with self.get("/metrics", token or self.cluster.token) as response:
            self.assertEqual(response.status, 200)
            self.assertTrue(response.headers["content-type"].startswith("text/plain"),
                            response.headers["content-type"])
            text = response.read().decode()
        out = {}
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                out[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
        return out

    def value(self, samples: dict, name: str, **labels) -> float:
        key = (name, tuple(sorted(labels.items())))
        if key not in samples:
            self.fail(f"no sample {key} in the scrape; of {name}: "
                      f"{sorted(k for k in samples if k[0] == name)}")
        return samples[key]


class MetricsTests(Scraping, ClusterTestCase):
    workers = 2
    slots = 2
    timeout = 120
    cluster_options = {"config_extra": f"web:\n  viewer_tokens: [{VIEWER}]\n"}

    def test_the_values_move_as_jobs_run(self):
        before = self.scrape()
        names = ["titan_jobs_ended_total", "titan_job_duration_seconds_count",
                 "titan_dispatch_latency_seconds_count"]
        with self.cluster.client() as c:
            ids = [c.submit(["sh", "-c", "sleep 0.3"]) for _ in range(3)]
            jobs = wait_ended(self, c, ids)
        self.assertEqual({j["state"] for j in jobs}, {"COMPLETED"})
        after = self.scrape()
        for name in names:
            labels = {} if "dispatch" in name else {"state": "COMPLETED"}
            self.assertEqual(self.value(after, name, **labels),
                             self.value(before, name, **labels) + 3, name)
        # Each ran at least its 0.3 s of sleep; the log grew by their records.
        grew = self.value(after, "titan_job_duration_seconds_sum", state="COMPLETED") \
            - self.value(before, "titan_job_duration_seconds_sum", state="COMPLETED")
        self.assertGreaterEqual(grew, 0.9)
        self.assertGreater(self.value(after, "titan_event_log_bytes"),
                           self.value(before, "titan_event_log_bytes"))
        self.assertGreaterEqual(self.value(after, "titan_jobs", state="COMPLETED"), 3)
        self.assertEqual(self.value(after, "titan_storage_available"), 1)

    def test_each_worker_is_there_by_name_with_what_its_heartbeat_carries(self):
        def both():
            s = self.scrape()
            return s if all(("titan_worker_resident_memory_bytes",
                             (("worker", name), ("worker_id", wid))) in s
                            for name, wid in self.worker_ids().items()) else None
        s = self.wait_for(both, 20, "both workers' heartbeat figures in /metrics")
        self.assertEqual(self.value(s, "titan_workers", state="ALIVE"), 2)
        self.assertEqual(self.value(s, "titan_slots", state="busy")
                         + self.value(s, "titan_slots", state="free"), 4)
        for name, wid in self.worker_ids().items():
            labels = {"worker": name, "worker_id": wid}
            self.assertEqual(self.value(s, "titan_worker_slots", **labels), 2)
            self.assertEqual(self.value(s, "titan_worker_state", state="ALIVE", **labels), 1)
            self.assertGreater(self.value(s, "titan_worker_resident_memory_bytes", **labels),
                               1_000_000)
            self.assertGreaterEqual(self.value(s, "titan_worker_cpus", **labels), 1)
            self.assertGreater(self.value(s, "titan_worker_cpu_seconds_total", **labels), 0)
            self.assertLess(self.value(s, "titan_worker_heartbeat_age_seconds", **labels), 3)

    def worker_ids(self) -> dict[str, str]:
        with self.cluster.client() as c:
            return {w["name"]: w["worker_id"] for w in c.workers() if w["state"] == "ALIVE"}

    def test_a_scrape_needs_a_token_and_a_viewer_token_will_do(self):
        for token in (None, "wrong"):
            with self.assertRaises(urllib.error.HTTPError) as caught:
                self.get("/metrics", token).close()
            self.assertEqual(caught.exception.code, 401, token)
            self.assertEqual(caught.exception.headers["www-authenticate"], 'Bearer realm="titan"')
            self.assertIn(b"Authorization: Bearer", caught.exception.read())
        s = self.scrape(VIEWER)  # Prometheus with a read-only token
        self.assertIn(("titan_jobs", (("state", "PENDING"),)), s)

    def test_an_open_event_stream_is_counted_until_it_closes(self):
        def events() -> float:
            return self.value(self.scrape(), "titan_sse_clients", stream="events")
        self.wait_for(lambda: events() == 0, 20, "no event stream open")
        stream = self.get("/api/v1/events", self.cluster.token)
        try:
            self.assertEqual(stream.status, 200)
            self.wait_for(lambda: events() == 1, 20, "the open stream counted")
        finally:
            stream.close()
        self.wait_for(lambda: events() == 0, 20, "the closed stream no longer counted")


class StoreMetricsTests(Scraping, legacy.WithStore, ClusterTestCase):
    """A master with a titan-store: the commands it sends there, by command and outcome."""
    workers = 1
    timeout = 120

    def test_the_commands_the_master_sends_to_the_store_are_counted(self):
        def count(samples: dict, command: str, outcome: str) -> float:
            return samples.get(("titan_store_commands_total",
                                (("command", command), ("outcome", outcome))), 0.0)
        before = self.scrape()
        with self.cluster.client() as c:
            c.store_put("metrics:k", "v")
            self.assertEqual(c.store_get("metrics:k"), b"v")
            with self.assertRaises(RemoteError) as refused:  # WRONGTYPE
                c.store_sadd("metrics:k", "m")
            self.assertEqual(refused.exception.code, "store_error")
        after = self.scrape()
        self.assertEqual(count(after, "SET", "ok") - count(before, "SET", "ok"), 1)
        self.assertEqual(count(after, "GET", "ok") - count(before, "GET", "ok"), 1)
        self.assertEqual(count(after, "SADD", "error") - count(before, "SADD", "error"), 1)
        self.assertGreaterEqual(self.value(after, "titan_store_command_seconds_count")
                                - self.value(before, "titan_store_command_seconds_count"), 3)
