"""The dashboard's runs list, approvals inbox and agent-run timeline (issue 17 §2, §4, §5), in
headless Chromium against a real master and workers: a gate approved in the inbox lets its
run go on; a rejected one cancels its dependents with the reason; the runs list filters by
state and name and shows a new run live; an agent run's stages are bars on one time axis."""
from __future__ import annotations

import os
import uuid
from urllib.parse import quote

from selenium.webdriver.support.ui import Select

from tests.acceptance.browser import BrowserTestCase
from titan.sdk import Pipeline


def tid(value: str) -> str:
    """A CSS selector for a data-testid (job ids hold a slash)."""
    return f'[data-testid="{value}"]'


class RunsUiTests(BrowserTestCase):
    workers = 1

    def setUp(self) -> None:
        super().setUp()
        self.tag = uuid.uuid4().hex[:6]
        self.client = self.cluster.client()
        self.addCleanup(self.client.close)
        self.shots = os.environ.get("TITAN_UI_SHOTS")  # a directory: keep each page's look

    def shot(self, name: str) -> None:
        if self.shots:
            self.browser.save_screenshot(os.path.join(self.shots, name + ".png"))

    def mark_page(self) -> None:
        """A flag that a page reload would lose: the views must update in place."""
        self.browser.execute_script("window.__noReload = true")

    def assert_not_reloaded(self) -> None:
        self.assertTrue(self.browser.execute_script("return window.__noReload === true"),
                        "the page was reloaded")

    def gate_run(self, name: str, question: str) -> tuple[str, str]:
        p = Pipeline(name)
        build = p.job("build", "true")
        gate = p.gate("ok", question, timeout="1h")
        migrate = p.job("migrate", "true")
        notify = p.job("notify", "true")
        build >> gate >> migrate >> notify
        run_id = self.client.submit(p)
        return run_id, run_id + "/ok"

    def test_approving_in_the_inbox_lets_the_run_go_on(self):
        run_id, gate = self.gate_run(f"ship-{self.tag}", f"Ship release {self.tag}?")
        self.open("/approvals")
        self.mark_page()
        row = self.find(tid("gate-" + gate))
        self.until(lambda: f"Ship release {self.tag}?" in row.text, what="the gate's question")
        self.assertIn(run_id, row.text)
        self.assertIn("left", self.text_of(tid("left-" + gate)))
        self.shot("approvals")
        name = self.find(tid("decider-name"))
        name.clear()
        name.send_keys("dana")
        self.find(tid("comment-" + gate)).send_keys("checked the canary")
        self.find(tid("approve-" + gate)).click()

        run = self.client.wait_run(run_id, timeout=30)
        states = {j["node"]: j["state"] for j in run["jobs"]}
        self.assertEqual((run["state"], states["migrate"], states["notify"]),
                         ("COMPLETED", "COMPLETED", "COMPLETED"))
        self.assertEqual(self.client.job(gate)["decision"]["by"], "dana")
        decided = self.find(tid("decided-" + gate))
        self.until(lambda: "checked the canary" in decided.text, what="the comment")
        self.assertIn("dana", decided.text)
        self.assertEqual(self.text_of(tid("decision-" + gate)), "approved")
        self.until(lambda: not self.find_all(tid("gate-" + gate)), what="the gate gone")
        self.assert_not_reloaded()

    def test_rejecting_cancels_the_dependents_with_the_reason(self):
        run_id, gate = self.gate_run(f"migrate-{self.tag}", "Run the migration?")
        self.open("/approvals")
        self.find(tid("comment-" + gate)).send_keys("schema not reviewed")
        self.find(tid("reject-" + gate)).click()

        run = self.client.wait_run(run_id, timeout=30)
        self.assertEqual(run["state"], "CANCELLED")
        jobs = {j["node"]: j for j in run["jobs"]}
        for node in ("migrate", "notify"):
            self.assertEqual(jobs[node]["state"], "CANCELLED")
            self.assertIn("gate ok rejected", jobs[node]["reason"])
            self.assertIn("schema not reviewed", jobs[node]["reason"])
        decided = self.find(tid("decided-" + gate))
        self.until(lambda: "schema not reviewed" in decided.text, what="the comment")
        self.assertEqual(self.text_of(tid("decision-" + gate)), "rejected")
        # The runs list shows the run CANCELLED; through it, the run's page shows why a
        # dependent did not run.
        self.open("/runs?name=" + quote(f"migrate-{self.tag}"))
        badge = self.find(tid("run-row-" + run_id) + " .badge")
        self.until(lambda: badge.text == "CANCELLED", what="the run CANCELLED")
        self.find(tid("run-link-" + run_id)).click()
        self.until(lambda: self.find(tid("run-state")).text == "CANCELLED",
                   what="the run page's state")
        reason = self.open_node("migrate", tid("job-reason"))
        self.until(lambda: "rejected" in reason.text and "schema not reviewed" in reason.text,
                   what="the dependent's reason naming the rejection")
        self.shot("rejected-reason")

    def test_runs_list_filters_and_shows_a_new_run_live(self):
        bad = self.client.submit(self._one(f"etl-{self.tag}-bad", "false"))
        good = self.client.submit(self._one(f"etl-{self.tag}-good", "true"))
        for run_id in (bad, good):
            self.client.wait_run(run_id, timeout=30)
        self.open("/runs")
        self.mark_page()
        self.find(tid("filter-name")).send_keys(f"etl-{self.tag}")
        self.until(lambda: f"name=etl-{self.tag}" in self.browser.current_url
                   and self.row_ids() == [good, bad], what="both runs, newest first")
        self.assertEqual(self.text_of(tid("run-row-" + bad) + " .badge"), "FAILED")
        Select(self.find(tid("filter-state"))).select_by_value("FAILED")
        self.until(lambda: self.row_ids() == [bad], what="only the FAILED run")
        self.assertIn("state=FAILED", self.browser.current_url)
        self.assertIn(f"name=etl-{self.tag}", self.browser.current_url)
        self.shot("runs-filtered")

        Select(self.find(tid("filter-state"))).select_by_value("")
        self.until(lambda: self.row_ids() == [good, bad], what="both runs again")
        other = self.client.submit(self._one(f"other-{self.tag}", "sleep 60"))
        new = self.client.submit(self._one(f"etl-{self.tag}-new", "sleep 60"))
        try:
            self.until(lambda: self.row_ids() == [new, good, bad],
                       what="the new run at the top (and not the one of another name)")
            badge = self.find(tid("run-row-" + new) + " .badge")
            self.until(lambda: badge.text == "RUNNING", what="the new run RUNNING")
            self.assert_not_reloaded()
            self.shot("runs-live")
        finally:
            self.client.cancel(other)
            self.client.cancel(new)

    def test_an_agent_run_is_a_timeline_of_its_stages(self):
        agent = f"agent-{self.tag}"
        stages = []

        def stage(label: str, command: str) -> str:
            run_id = self.client.submit(self._one(f"{label.lower()}-{self.tag}", command,
                                                  agent_run_id=agent, stage=label))
            stages.append(run_id)
            return run_id

        for label in ("PLAN", "EVAL"):
            self.client.wait_run(stage(label, "true"), timeout=30)
        try:
            self.open("/agent-runs")
            self.find(tid("agent-run-" + agent)).click()
            self.until(lambda: self.browser.current_url.endswith("/agent-runs/" + agent),
                       what="the agent run's page")
            self.until(lambda: len(self.bars()) == 2, what="two bars")
            self.mark_page()
            stage("SYNTH", "sleep 60")
            bars = self.until(lambda: len(self.bars()) == 3 and self.bars(),
                              what="the third stage's bar, live")
            self.assertEqual([b.get_attribute("data-testid") for b in bars],
                             ["stage-" + r for r in stages])
            starts = [b.location["x"] for b in bars]
            self.assertEqual(starts, sorted(starts), "the bars are not in time order")
            for run_id, label in zip(stages, ("PLAN", "EVAL", "SYNTH")):
                self.assertIn(label, self.text_of(tid("timeline-row-" + run_id)))
            running = self.find(tid("stage-" + stages[2]))
            self.until(lambda: running.get_attribute("data-state") == "RUNNING",
                       what="SYNTH running")
            self.assertEqual([b.get_attribute("data-state") for b in bars[:2]],
                             ["COMPLETED", "COMPLETED"])
            width = running.size["width"]
            self.until(lambda: running.size["width"] > width + 5, what="the running bar growing")
            self.assert_not_reloaded()
            self.shot("agent-run")
            self.find(tid("stage-" + stages[0])).click()
            self.until(lambda: self.browser.current_url.endswith("/runs/" + quote(stages[0], safe="")),
                       what="the PLAN run's page")
        finally:
            if len(stages) == 3:
                self.client.cancel(stages[2])

    # -- helpers -------------------------------------------------------------------------

    def _one(self, name: str, command: str, **options) -> Pipeline:
        p = Pipeline(name, **options)
        p.job("main", command)
        return p

    def row_ids(self) -> list[str]:
        return [r.get_attribute("data-testid")[len("run-row-"):]
                for r in self.find_all("[data-testid^=run-row-]")]

    def bars(self):
        return self.find_all(".agent-timeline [data-testid^=stage-]")
