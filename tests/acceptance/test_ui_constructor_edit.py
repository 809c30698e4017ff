"""The constructor's editing, as a person edits (issue 18; the page's own tests beside
test_ui_constructor.py, which draws, deploys, imports, exports and keeps drafts):

- a step dragged from the palette onto the canvas with the mouse (HTML5 drag and drop,
  carried out by Chromium's own input through selenium's ActionChains) is added where it is
  dropped; a bad duration typed into its properties is marked by the master's own parser
  (POST /api/v1/pipelines/validate): the problem names the step and the key, in the words
  `titan run` prints, the node is marked invalid, and a good duration clears both; a click
  on a problem selects its step;
- the keyboard: Ctrl+C / Ctrl+V pastes copies of the selected steps with the edge between
  them, Ctrl+D duplicates, Delete deletes the selection (but not while typing in a field,
  where Backspace edits the text), and one Ctrl+Z undoes a whole burst of typing in a field.
"""
from __future__ import annotations

import re
import time

from selenium.webdriver.common.action_chains import ActionChains
from selenium.webdriver.common.keys import Keys

from titan.sdk.pipeline import Pipeline, PipelineError
from tests.acceptance.browser import BrowserTestCase



class ConstructorEditingTests(BrowserTestCase):
    workers = 1
    slots = 2
    timeout = 120

    # -- the page ----------------------------------------------------------------------

    def fresh_page(self) -> None:
        """A new, empty pipeline, reached from the navigation like a person does."""
        self.goto("/runs")
        self.find("[data-testid=nav-new-pipeline]").click()
        self.find("[data-testid=constructor-canvas]")
        self.until(lambda: self.nodes() == set(), 10, "an empty canvas")

    def problems(self) -> list[tuple[str, str, str]]:
        return [(p.get_attribute("data-step"), p.get_attribute("data-key"), p.text)
                for p in self.find_all("[data-testid=problem]")]

    def click_node(self, step: str) -> None:
        node = self.find(f"[data-testid='cnode-{step}']")
        ActionChains(self.browser).move_to_element(node).click().perform()
        self.until(lambda: self.find("[data-testid=prop-id]").get_attribute("value") == step,
                   10, f"the properties of {step}")

    def click_canvas(self) -> None:
        """A click on the canvas's empty top left: nothing selected, no field focused."""
        canvas = self.find("[data-testid=constructor-canvas]")
        ActionChains(self.browser).move_to_element_with_offset(
            canvas, -canvas.size["width"] // 2 + 30, -canvas.size["height"] // 2 + 80
        ).click().perform()

    def connect(self, source: str, target: str) -> None:
        out = self.find(f"[data-testid='handle-out-{source}']")
        into = self.find(f"[data-testid='handle-in-{target}']")
        actions = ActionChains(self.browser).move_to_element(out).click_and_hold()
        for _ in range(4):
            actions.move_by_offset(10, 3)
        actions.move_to_element(into).move_by_offset(1, 0).move_by_offset(-1, 0)
        actions.release().perform()
        self.until(lambda: (source, target) in self.edges(), 10, f"the edge {source} -> {target}")

    # -- the tests -----------------------------------------------------------------------

    def test_a_dropped_step_and_a_bad_duration_the_master_marks(self):
        self.fresh_page()
        canvas = self.find("[data-testid=constructor-canvas]")
        item = self.find("[data-testid=palette-script]")
        # Drop it 150 px right of and 100 px below the canvas's centre, with the mouse.
        actions = ActionChains(self.browser).move_to_element(item).click_and_hold()
        for _ in range(4):
            actions.move_by_offset(15, 5)
        actions.move_to_element_with_offset(canvas, 150, 100).move_by_offset(1, 1).release()
        actions.perform()
        self.until(lambda: self.nodes() == {"script-1"}, 10, "the dropped script step")
        node = self.find("[data-testid='cnode-script-1']")
        box = canvas.rect
        centre = (node.rect["x"] + node.rect["width"] / 2, node.rect["y"] + node.rect["height"] / 2)
        dropped_at = (box["x"] + box["width"] / 2 + 151, box["y"] + box["height"] / 2 + 101)
        self.assertLess(abs(centre[0] - dropped_at[0]), 25, (centre, dropped_at))
        self.assertLess(abs(centre[1] - dropped_at[1]), 25, (centre, dropped_at))
        self.assertEqual(node.get_attribute("data-kind"), "script")

        self.click_node("script-1")
        self.type_into("prop-file", "load.py")
        self.type_into("prop-content", "print('loaded')")
        self.type_into("prop-timeout", "5 parsecs")
        # What `titan run` prints for the same step, less its file and line.
        try:
            Pipeline.from_yaml("name: p\njobs:\n  - id: script-1\n    command: true\n"
                               "    timeout: 5 parsecs\n", path="p.yaml")
        except PipelineError as e:
            said = re.sub(r"^p\.yaml:\d+: ", "", str(e))
        else:
            self.fail("the SDK took a timeout of 5 parsecs")
        found = self.until(
            lambda: [p for p in self.problems() if p[:2] == ("script-1", "timeout")
                     and p[2].endswith(said)], 10,
            f"the master's problem with script-1's timeout: {said!r} (shown: {self.problems()})")
        self.assertEqual(len(found), 1, self.problems())
        self.assertEqual(self.find("[data-testid='cnode-script-1']").get_attribute("data-invalid"),
                         "true")

        # Nothing selected, a click on the problem selects its step again.
        self.click_canvas()
        self.until(lambda: self.find_all("[data-testid=pipeline-name]"), 5, "the pipeline's own fields")
        self.find("[data-testid=problem][data-step='script-1']").click()
        self.until(lambda: self.find("[data-testid=prop-id]").get_attribute("value") == "script-1",
                   5, "script-1 selected by its problem")

        self.type_into("prop-timeout", "5m")
        self.until(lambda: self.problems() == [], 10,
                   f"no problem left (shown: {self.problems()})")
        self.assertEqual(self.find("[data-testid='cnode-script-1']").get_attribute("data-invalid"),
                         "false")

    def test_b_keyboard_copy_paste_duplicate_delete_and_undo_of_typing(self):
        self.fresh_page()
        self.find("[data-testid=palette-job]").click()
        self.find("[data-testid=palette-job]").click()
        self.until(lambda: self.nodes() == {"job-1", "job-2"}, 10, "two jobs added by clicks")
        self.until(lambda: self.text_of("[data-testid=draft-saved]") == "saved", 10,
                   "the new draft autosaved")
        self.connect("job-1", "job-2")

        # Both selected (a click, then a Ctrl+click), copied, pasted: two new steps, their edge.
        self.click_node("job-1")
        node2 = self.find("[data-testid='cnode-job-2']")
        ActionChains(self.browser).key_down(Keys.CONTROL).click(node2).key_up(Keys.CONTROL).perform()
        self.until(lambda: self.find_all("[data-testid=pipeline-name]")
                   or not self.find_all("[data-testid=prop-id]"), 5, "two steps selected")
        self.keys("c", ctrl=True)
        self.keys("v", ctrl=True)
        self.until(lambda: len(self.nodes()) == 4, 10, "the pasted steps")
        pasted = self.nodes() - {"job-1", "job-2"}
        self.until(lambda: len(self.edges()) == 2, 10, "the pasted steps' edge")
        (copy_edge,) = self.edges() - {("job-1", "job-2")}
        self.assertEqual(set(copy_edge), pasted)

        # The pasted steps are selected: Delete deletes them, and their edge.
        self.keys(Keys.DELETE)
        self.until(lambda: self.nodes() == {"job-1", "job-2"}, 10, "the pasted steps deleted")
        self.assertEqual(self.edges(), {("job-1", "job-2")})

        # Ctrl+D duplicates the selected step.
        self.click_node("job-2")
        self.keys("d", ctrl=True)
        self.until(lambda: len(self.nodes()) == 3, 10, "a duplicate of job-2")

        # Typing in a field: Backspace edits the text, never deletes the step; the whole
        # burst is one step of the history.
        self.click_node("job-1")
        field = self.find("[data-testid=prop-command]")
        field.click()
        field.send_keys("echo hellox")
        field.send_keys(Keys.BACKSPACE)
        self.until(lambda: field.get_attribute("value") == "echo hello", 5, "the command typed")
        self.assertIn("job-1", self.nodes())
        self.until(lambda: "echo hello" in self.find("[data-testid='cnode-job-1']").text, 5,
                   "the node's summary showing the command")
        self.click_canvas()
        time.sleep(0.2)
        self.keys("z", ctrl=True)
        self.until(lambda: "echo" not in self.find("[data-testid='cnode-job-1']").text, 5,
                   "one undo taking back the whole command")
        self.assertEqual(len(self.nodes()), 3)
        self.keys("y", ctrl=True)
        self.until(lambda: "echo hello" in self.find("[data-testid='cnode-job-1']").text, 5,
                   "redo bringing it back")
