"""The run page: a DAG whose nodes change colour live, grow live, and a run cancelled from
the page. Jobs wait for a file the test creates (bounded), so every state is seen on purpose
rather than caught by timing; the page is never reloaded (a window marker must survive)."""
from __future__ import annotations

import os
import sys
import textwrap

from titan.sdk.pipeline import Pipeline
from tests.acceptance.browser import BrowserTestCase
from tests.acceptance.helpers import wait_run_ended

PY = sys.executable


class RunPageTests(BrowserTestCase):
    workers = 1
    slots = 4

    def hold(self, name: str) -> list[str]:
        """A command that runs until the test calls release(name) (at most 60 s)."""
        path = os.path.join(self.base_dir, "release-" + name)
        return ["sh", "-c", f"i=0; until [ -e '{path}' ]; do i=$((i+1)); "
                            f"[ $i -gt 600 ] && exit 3; sleep 0.1; done"]

    def release(self, *names: str) -> None:
        for name in names:
            open(os.path.join(self.base_dir, "release-" + name), "w").close()

    def open_run(self, run_id: str) -> None:
        self.goto("/runs/" + run_id)  # within the app, as a user goes
        self.until(lambda: self.find("[data-testid=run-name]").text
                   and run_id in self.text_of("[data-testid=run-header]"), 15,
                   f"the header of run {run_id}")
        self.browser.execute_script("window.__titanMarker = 'still here'")

    def node_state(self, node: str) -> str:
        return self.find(f"[data-testid='node-{node}']").get_attribute("data-state")

    def wait_states(self, want: dict[str, str], timeout: float = 20.0) -> None:
        self.until(lambda: all(self.node_state(n) == s for n, s in want.items()), timeout,
                   f"nodes in states {want}")

    def assert_not_reloaded(self) -> None:
        self.assertEqual(self.browser.execute_script("return window.__titanMarker"), "still here")
        self.assertEqual(self.browser.execute_script(
            "return performance.getEntriesByType('navigation').length"), 1)

    def test_a_diamond_turns_running_then_completed_live(self):
        p = Pipeline("diamond")
        a = p.job("a", self.hold("a"))
        b = p.job("b", self.hold("b")).after(a)
        c = p.job("c", self.hold("c")).after(a)
        p.job("d", self.hold("d")).after(b, c)
        with self.cluster.client() as client:
            run_id = client.submit(p)
            self.open_run(run_id)
            self.assertEqual(self.text_of("[data-testid=run-name]"), "diamond")
            self.wait_states({"a": "RUNNING", "b": "PENDING", "c": "PENDING", "d": "PENDING"})
            self.assertEqual(len(self.find_all(".react-flow__edge")), 4)
            self.release("a")
            self.wait_states({"a": "COMPLETED", "b": "RUNNING", "c": "RUNNING", "d": "PENDING"})
            self.release("b", "c")
            self.wait_states({"b": "COMPLETED", "c": "COMPLETED", "d": "RUNNING"})
            self.release("d")
            self.wait_states({"d": "COMPLETED"})
            self.until(lambda: self.find("[data-testid=run-state]").get_attribute("data-state")
                       == "COMPLETED", 15, "the run's header to say COMPLETED")
            self.assertEqual(self.text_of("[data-testid=count-COMPLETED]").split(), ["completed", "4"])
            self.assertFalse(self.find("[data-testid=cancel-run]").is_enabled())
            self.assertEqual(wait_run_ended(self, client, run_id, 10)["state"], "COMPLETED")
        self.assert_not_reloaded()

    def test_jobs_a_running_job_adds_appear_live(self):
        go = os.path.join(self.base_dir, "release-grow")
        p = Pipeline("growing")
        p.job("grow", [PY, "-c", textwrap.dedent(f"""\
            import os, time
            from titan.sdk import current_job
            for _ in range(600):
                if os.path.exists({go!r}):
                    break
                time.sleep(0.1)
            current_job().add_jobs([{{"id": f"grown{{i}}", "command": ["true"],
                                      "depends_on": ["grow"]}} for i in range(3)])
            """)])
        with self.cluster.client() as client:
            run_id = client.submit(p)
            self.open_run(run_id)
            self.wait_states({"grow": "RUNNING"})
            self.assertEqual(len(self.find_all("[data-testid^='node-']")), 1)
            self.release("grow")
            self.wait_states({"grow": "COMPLETED", "grown0": "COMPLETED",
                              "grown1": "COMPLETED", "grown2": "COMPLETED"})
            self.assertEqual(len(self.find_all(".react-flow__edge")), 3)
            self.until(lambda: self.find("[data-testid=run-state]").get_attribute("data-state")
                       == "COMPLETED", 15, "the run's header to say COMPLETED")
            self.assertEqual(wait_run_ended(self, client, run_id, 10)["total"], 4)
        self.assert_not_reloaded()

    def test_cancel_run_from_the_page(self):
        p = Pipeline("doomed")
        one = p.job("one", self.hold("never-one"))
        two = p.job("two", self.hold("never-two"))
        p.job("after", ["true"]).after(one, two)
        with self.cluster.client() as client:
            run_id = client.submit(p)
            self.open_run(run_id)
            self.wait_states({"one": "RUNNING", "two": "RUNNING", "after": "PENDING"})
            self.find("[data-testid=cancel-run]").click()
            self.assertIn("3 unfinished jobs", self.text_of("[data-testid=confirm-box]"))
            self.find("[data-testid=confirm]").click()
            self.wait_states({"one": "CANCELLED", "two": "CANCELLED", "after": "CANCELLED"})
            for node in ("one", "two", "after"):
                self.assertEqual(client.job(f"{run_id}/{node}")["state"], "CANCELLED")
            self.until(lambda: self.find("[data-testid=run-state]").get_attribute("data-state")
                       == "CANCELLED", 15, "the run's header to say CANCELLED")
            self.until(lambda: not self.find("[data-testid=cancel-run]").is_enabled(), 5,
                       "the cancel button to be disabled")
        self.assert_not_reloaded()
