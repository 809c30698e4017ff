"""The dashboard's cluster, services and store pages (issue 17 §1, §6, §8) in headless Chromium,
on one cluster whose master has a real titan-store: the workers with their slots and, live,
the job each one runs; a worker started from the page joins (`titan workers` lists it) and
drains away; a service restarted by its button; a key the SDK wrote, found by pattern."""
from __future__ import annotations

import sys

from selenium.webdriver.common.by import By

from tests.acceptance import test_legacy_store as legacy  # (the module: not its tests)
from tests.acceptance.browser import BrowserTestCase


class ClusterPagesTests(legacy.WithStore, BrowserTestCase):
    workers = 2
    slots = 2

    def row(self, testid: str):
        found = self.find_all(f"[data-testid='{testid}']")
        return found[0] if found else None

    def stop_service(self, name: str) -> None:
        with self.cluster.client() as c:
            if c.service(name)["state"] not in ("STOPPED", "CANCELLED", "FAILED", "DEAD"):
                c.stop_service(name)
            self.wait_for(lambda: c.service(name)["pid"] is None, 30, f"{name} to stop")

    def test_workers_with_their_slots_and_a_running_job_under_its_worker_live(self):
        self.open("/")
        for name in ("w1", "w2"):
            self.until(lambda: self.row(f"slots-{name}") and
                       self.row(f"slots-{name}").text.strip() == "0/2",
                       what=f"worker {name} with 0/2 slots busy")
        with self.cluster.client() as c:
            alive = [w for w in c.workers() if w["state"] != "DEAD"]
        total = f"{sum(w['busy'] for w in alive)}/{sum(w['slots'] for w in alive)}"
        self.until(lambda: self.text_of("[data-testid=summary-slots]").replace(" ", "") == total,
                   what=f"{total} slots busy in the summary")
        with self.cluster.client() as c:
            job_id = c.submit(["sleep", "60"])
            worker = self.wait_for(lambda: c.job(job_id).get("worker"), what="the job to start")
            link = f"[data-testid='jobs-{worker}'] a[href='/jobs/{job_id}']"
            # No reload: the page learns it from the live feed.
            self.find(link, timeout=10)
            self.assertEqual(self.text_of(f"[data-testid='slots-{worker}']"), "1/2")
            c.cancel(job_id)
        self.until(lambda: not self.find_all(link), 10, f"{job_id} gone from {worker}'s row")
        self.until(lambda: self.row(f"slots-{worker}").text.strip() == "0/2", 10,
                   f"{worker} back to 0/2")

    def test_start_a_worker_from_the_page_then_drain_it(self):
        self.open("/")
        self.find("[data-testid=start-worker]").click()
        self.find("[data-testid=worker-tags]").send_keys("GPU")
        slots = self.find("[data-testid=worker-slots]")
        slots.clear()
        slots.send_keys("2")
        self.find("[data-testid=start-worker-submit]").click()

        def gpu_row():
            for row in self.find_all("tr[data-testid^='worker-']"):
                if "GPU" in [t.text for t in row.find_elements(By.CSS_SELECTOR, ".tag")]:
                    return row
            return None
        row = self.until(gpu_row, 30, "a worker tagged GPU in the table")
        name = row.get_attribute("data-testid")[len("worker-"):]
        self.addCleanup(self.titan, "workers", "drain", name)  # if the page's drain failed
        self.assertEqual(self.text_of(f"[data-testid='slots-{name}']"), "0/2")
        self.assertIn("dashboard", row.text)
        listing = self.titan("workers").stdout.decode()
        line = [ln for ln in listing.splitlines() if name in ln]
        self.assertTrue(line and "GPU" in line[0] and "0/2" in line[0], listing)

        self.find(f"[data-testid='drain-{name}']").click()
        self.find("[data-testid=confirm]").click()
        # Idle, it leaves at once: DRAINING (if the page sees it) then DEAD or gone.
        self.until(lambda: (lambda r: r is None or r.get_attribute("data-state") == "DEAD")(
            self.row(f"worker-{name}")), 30, f"{name} to leave the cluster")
        with self.cluster.client() as c:
            self.wait_for(lambda: all(w["state"] == "DEAD" for w in c.workers()
                                      if w["name"] == name), 30, f"{name} gone for the master")

    def test_restart_button_restarts_the_service(self):
        code = "import time\nprint('serving', flush=True)\ntime.sleep(600)"
        with self.cluster.client() as c:
            c.deploy("uisvc", [sys.executable, "-c", code])
            self.addCleanup(self.stop_service, "uisvc")
            first = self.wait_for(lambda: (lambda s: s if s["state"] == "RUNNING" and s["pid"]
                                           else None)(c.service("uisvc")), 60,
                                  "the service to run with a pid")
            self.open("/services")
            self.until(lambda: self.row("restarts-uisvc") and
                       self.row("restarts-uisvc").text == "0", what="uisvc with 0 restarts")
            self.find("[data-testid=restart-uisvc]").click()
            self.until(lambda: self.row("restarts-uisvc").text == "1", 30,
                       "the page to show 1 restart")
            again = self.wait_for(lambda: (lambda s: s if s["pid"] and s["pid"] != first["pid"]
                                           else None)(c.service("uisvc")), 30, "a new process")
            self.assertEqual((again["restarts"], again["state"]), (1, "RUNNING"))
            self.until(lambda: self.row("service-uisvc").get_attribute("data-state") == "RUNNING",
                       30, "uisvc RUNNING again on the page")

    def test_store_key_found_by_pattern_and_its_value_shown(self):
        with self.cluster.client() as c:
            c.store_put("uitest:greeting", "hello from the SDK")
            c.store_put("other:greeting", "not this one")
            c.store_sadd("uitest:colours", "red")
            c.store_sadd("uitest:colours", "blue")
        self.open("/store")
        pattern = self.find("[data-testid=store-pattern]")
        pattern.clear()
        pattern.send_keys("uitest:*")
        self.find("[data-testid=store-search]").click()
        key = "[data-testid=store-key][data-key='uitest:greeting']"
        self.find(key)
        self.until(lambda: "2 keys matching" in self.text_of("[data-testid=store-count]"),
                   what="two keys matching uitest:*")
        self.assertEqual(self.find_all("[data-testid=store-key][data-key='other:greeting']"), [])
        self.find(key).click()
        self.until(lambda: self.text_of("[data-testid=store-text]") == "hello from the SDK",
                   what="the string's value")
        self.find("[data-testid=store-key][data-key='uitest:colours']").click()
        self.until(lambda: self.text_of("[data-testid=store-set]").split() == ["0", "blue", "1", "red"],
                   what="the set's members, sorted")
