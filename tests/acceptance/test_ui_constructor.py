"""The DAG constructor, page "New pipeline" (/new, issue 18), driven as a person drives it:
real mouse drags from the palette onto the canvas and from one node's handle to another's,
clicks on nodes, typing in the properties panel, the toolbar and the keyboard.

- a diamond with a gate before its last step, drawn and deployed: the run page opens, the
  run goes as far as the gate, is approved from the job panel and completes;
  "Edit a copy" on the run page brings the same graph back into the constructor;
- the exported YAML run with `titan run --wait` and the exported Python run with `python`
  submit the graph that was drawn (same jobs, same edges), and the YAML imported again gives
  the same graph;
- etc/pipelines/etl.yaml (pasted) and a file in the public reference's format (uploaded):
  every step and edge appears, laid out left to right, none over another;
- an edge that would close a cycle is refused with a message, the graph left as it was;
- undo/redo (keys and toolbar) of adding and of deleting a step;
- a named draft is autosaved on the master: it is there after a reload, opened from the
  drafts list, and after a master restart.

The palette's drag is HTML5 drag and drop; Chromium's own input pipeline (selenium's
ActionChains, through chromedriver) carries it out, so no drag event is simulated (only a
long pasted text is put into the import field by script, as a paste would). One cluster for
the module (a fixed port, for the master restart); the pages are reached inside the app (a
second `driver.get` can stall while the back/forward cache holds the last page's streams).
"""
from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from typing import Optional

from selenium.webdriver.common.action_chains import ActionChains
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.remote.webelement import WebElement
from selenium.webdriver.support.ui import Select

from tests.acceptance.browser import BrowserTestCase
from tests.acceptance.helpers import wait_run_ended

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
# How long each pointer move of a drag takes (selenium's default, 250 ms, makes a drag a
# second or two; a person's hand is no slower than this).
MOVE_MS = 40

# A pipeline in the public reference's format: requirement, type: service with a port,
# depends_on as a string, hitl_message (a job and a gate after it), version.
REFERENCE_YAML = """\
name: refpipe
version: "1.0"
jobs:
  - id: fetch
    command: echo fetch
    requirement: GENERAL
  - id: api
    type: service
    command: python3 -m http.server {port}
    port: auto
    depends_on: fetch
  - id: train
    command: echo train
    depends_on: fetch
    hitl_message: Publish this model?
    max_wait_seconds: 4h
  - id: publish
    command: echo publish
    depends_on: [train, api]
"""
REFERENCE_NODES = {"fetch", "api", "train", "train.approval", "publish"}
REFERENCE_EDGES = {("fetch", "api"), ("fetch", "train"), ("train", "train.approval"),
                   ("train.approval", "publish"), ("api", "publish")}

ETL_NODES = {"extract", "transform", "load"}
ETL_EDGES = {("extract", "transform"), ("transform", "load")}


def run_graph(client, run_id: str) -> tuple[set, set]:
    """The job ids and the edges (parent, child) of a run, as the master has them."""
    jobs = [client.job(j["job_id"]) for j in client.run(run_id)["jobs"]]
    edges = {(parent.rsplit("/", 1)[-1], j["node"]) for j in jobs for parent in j["depends_on"]}
    return {j["node"] for j in jobs}, edges


class ConstructorTests(BrowserTestCase):
    workers = 1
    slots = 4
    timeout = 180
    cluster_options = {"fixed_port": True}
    pointer_ms = MOVE_MS

    # -- getting around ----------------------------------------------------------------

    def new_pipeline(self) -> None:
        """A fresh constructor page, reached by its link in the navigation."""
        self.goto("/runs")
        self.find("[data-testid=nav-new-pipeline]").click()
        self.until(lambda: self.browser.current_url.split("?")[0].endswith("/new"), 10,
                   "the /new page")
        self.find("[data-testid=constructor-canvas]")
        self.until(lambda: self.nodes() == set(), 10, "an empty canvas")

    # -- what the canvas shows -------------------------------------------------------

    def wait_graph(self, nodes: set, edges: set, timeout: float = 15.0) -> None:
        self.until(lambda: self.nodes() == nodes and self.edges() == edges, timeout,
                   f"the graph with nodes {sorted(nodes)} and edges {sorted(edges)} "
                   f"(shown: {sorted(self.nodes())}, {sorted(self.edges())})")

    def node(self, step: str) -> WebElement:
        return self.find(f"[data-testid='cnode-{step}']")

    def assert_laid_out(self, edges: set) -> None:
        """Every step in sight, none over another, each edge going left to right."""
        canvas = self.find("[data-testid=constructor-canvas]").rect
        boxes = {step: self.steady(self.node(step)).rect for step in self.nodes()}
        for step, b in boxes.items():
            self.assertTrue(canvas["x"] <= b["x"] and b["x"] + b["width"] <= canvas["x"] + canvas["width"]
                            and canvas["y"] <= b["y"]
                            and b["y"] + b["height"] <= canvas["y"] + canvas["height"],
                            f"{step} at {b} out of the canvas {canvas}")
            for other, o in boxes.items():
                if other != step:
                    self.assertFalse(b["x"] < o["x"] + o["width"] and o["x"] < b["x"] + b["width"]
                                     and b["y"] < o["y"] + o["height"]
                                     and o["y"] < b["y"] + b["height"], f"{step} over {other}")
        for source, target in edges:
            self.assertLess(boxes[source]["x"] + boxes[source]["width"], boxes[target]["x"],
                            f"{source} -> {target} not left to right")

    def message(self) -> str:
        found = self.find_all("[data-testid=constructor-message]")
        return found[0].text if found else ""

    # -- mouse and keyboard ----------------------------------------------------------

    def drop_step(self, kind: str, x: int, y: int) -> str:
        """Drag the palette's `kind` onto the canvas at (x, y) from its top left corner, with
        the mouse; the new step's id."""
        before = self.nodes()
        item = self.find(f"[data-testid=palette-{kind}]")
        canvas = self.find("[data-testid=constructor-canvas]")
        size = canvas.size
        actions = ActionChains(self.browser, duration=MOVE_MS)
        actions.move_to_element(item).click_and_hold()
        for _ in range(4):
            actions.move_by_offset(12, 6)
        actions.move_to_element_with_offset(canvas, x - size["width"] // 2,
                                            y - size["height"] // 2)
        actions.move_by_offset(1, 1).release().perform()
        added = self.until(lambda: self.nodes() - before, 10, f"a {kind} step dropped")
        self.assertEqual(len(added), 1, added)
        step = added.pop()
        # Where it was dropped (not beside the others, as a click on the palette puts it).
        box, origin = self.node(step).rect, canvas.rect
        drop_x, drop_y = origin["x"] + x + 1, origin["y"] + y + 1
        self.assertTrue(box["x"] <= drop_x <= box["x"] + box["width"]
                        and box["y"] <= drop_y <= box["y"] + box["height"],
                        f"{step} at {box}, dropped at {(drop_x, drop_y)}")
        return step

    def connect(self, source: str, target: str) -> None:
        """Drag from `source`'s out handle to `target`'s in handle."""
        out = self.steady(self.find(f"[data-testid='handle-out-{source}']"))
        into = self.steady(self.find(f"[data-testid='handle-in-{target}']"))
        actions = ActionChains(self.browser, duration=MOVE_MS)
        actions.move_to_element(out).click_and_hold()
        for _ in range(5):
            actions.move_by_offset(8, 4)
        actions.move_to_element(into).move_by_offset(1, 0).move_by_offset(-1, 0)
        actions.release().perform()

    def steady(self, element: WebElement) -> WebElement:
        """`element` once it has stopped moving (the page fits the graph to the canvas, in a
        short animation, after an import, a layout or a wider panel): as a person waits for
        a thing to stop before clicking it."""
        seen: list = []

        def still() -> bool:
            seen.append(element.rect)
            return len(seen) >= 3 and seen[-1] == seen[-2] == seen[-3]
        self.until(still, 5, "the graph to stop moving")
        return element

    def click_node(self, step: str) -> None:
        node = self.steady(self.node(step))
        ActionChains(self.browser, duration=MOVE_MS).move_to_element(node).click().perform()
        self.until(lambda: self.find("[data-testid=prop-id]").get_attribute("value") == step,
                   10, f"the properties of {step}")

    def set_prop(self, key: str, value: str) -> None:
        field = self.find(f"[data-testid='prop-{key}']")
        if field.tag_name == "select":
            Select(field).select_by_value(value)
        else:
            self.type_into(f"prop-{key}", value)

    def add(self, kind: str, at: tuple[int, int], step: str, **props: str) -> str:
        """A step dropped at `at`, named `step`, its properties typed in."""
        made = self.drop_step(kind, *at)
        self.click_node(made)
        self.set_prop("id", step)
        self.node(step)
        for key, value in props.items():
            self.set_prop(key, value)
        return step

    def click(self, testid: str) -> None:
        button = self.find(f"[data-testid='{testid}']")
        self.until(lambda: button.is_enabled(), 10, f"{testid} enabled")
        button.click()

    def import_text(self, text: str) -> None:
        self.click("import")
        area = self.find("[data-testid=import-text]")
        # As a paste puts it (send_keys is slow on kilobytes): the field's own value setter,
        # then an input event, which React's onChange hears.
        self.browser.execute_script(
            "const el = arguments[0];"
            "const set = Object.getOwnPropertyDescriptor(el.constructor.prototype, 'value').set;"
            "set.call(el, arguments[1]); el.dispatchEvent(new Event('input', {bubbles: true}));",
            area, text)
        area.send_keys(" ", Keys.BACKSPACE)  # and a keystroke of the person's own
        self.click("import-submit")

    def export(self) -> tuple[str, str]:
        """The YAML and the Python the export panel shows."""
        if not self.find_all("[data-testid=export-yaml]"):
            self.click("export")
        yaml_text = self.until(
            lambda: self.find("[data-testid=export-yaml]").get_attribute("textContent"), 10,
            "the exported YAML")
        python = self.until(
            lambda: self.find("[data-testid=export-python]").get_attribute("textContent"), 10,
            "the exported Python")
        return yaml_text, python

    # -- the run page ------------------------------------------------------------------

    def run_node_state(self, node: str) -> Optional[str]:
        found = self.find_all(f"[data-testid='node-{node}']")
        return found[0].get_attribute("data-state") if found else None

    def wait_run_states(self, want: dict, timeout: float = 30.0) -> None:
        self.until(lambda: all(self.run_node_state(n) == s for n, s in want.items()), timeout,
                   f"the run's nodes in states {want}")

    # -- the tests -------------------------------------------------------------------

    def draw_diamond(self) -> None:
        """a -> b, a -> c, b and c -> gate -> d, all by mouse and keyboard."""
        self.add("job", (110, 220), "a", command="true")
        self.add("job", (320, 100), "b", command="sh -c 'echo b'")
        self.add("job", (320, 340), "c", command="sh -c 'echo c'")
        self.add("gate", (530, 220), "ship", message="Ship it?")
        self.add("job", (730, 220), "d", command="true")
        for source, target in (("a", "b"), ("a", "c"), ("b", "ship"), ("c", "ship"),
                               ("ship", "d")):
            self.connect(source, target)
        self.wait_graph(DIAMOND_NODES, DIAMOND_EDGES)

    def test_a_diamond_drawn_deployed_approved_completes(self):
        self.new_pipeline()
        self.type_into("pipeline-name", "uidiamond")
        self.draw_diamond()
        self.assertEqual(self.find_all("[data-invalid=true]"), [])
        self.click("deploy")
        run_id = self.until(
            lambda: (re.match(r".*/runs/([^/?#]+)$", self.browser.current_url) or [None, None])[1],
            20, "the run page after Deploy")
        self.assertTrue(run_id.startswith("uidiamond-"), run_id)
        self.wait_run_states({"a": "COMPLETED", "b": "COMPLETED", "c": "COMPLETED",
                              "d": "PENDING"})
        # The gate waits: said by the run's counts, its node (live: a gate's change comes as
        # kind "gate") and its own panel.
        self.until(lambda: self.text_of("[data-testid=count-WAITING_APPROVAL]").split()
                   == ["waiting", "approval", "1"], 15, "one step waiting for approval")
        self.until(lambda: self.find("[data-testid='node-ship']").get_attribute("data-state")
                   == "WAITING_APPROVAL", 15, "the gate's node WAITING_APPROVAL")
        self.assertEqual(self.open_node("ship", "[data-testid=gate-message]").text,
                         "Ship it?")
        self.until(lambda: self.text_of("[data-testid=job-state]") == "WAITING_APPROVAL", 15,
                   "the gate's panel saying WAITING_APPROVAL")
        self.click("approve")
        self.wait_run_states({"d": "COMPLETED"})
        self.until(lambda: self.find("[data-testid='node-ship']").get_attribute("data-state")
                   == "COMPLETED", 15, "the gate's node COMPLETED once approved")
        self.until(lambda: self.find("[data-testid=run-state]").get_attribute("data-state")
                   == "COMPLETED", 15, "the run's header to say COMPLETED")
        with self.cluster.client() as client:
            self.assertEqual(wait_run_ended(self, client, run_id, 15)["state"], "COMPLETED")
            self.assertEqual(run_graph(client, run_id), (DIAMOND_NODES, DIAMOND_EDGES))
        # "Edit a copy": the run's pipeline back in the constructor.
        self.click("edit-copy")
        self.until(lambda: f"from={run_id}" in self.browser.current_url, 10,
                   "the constructor opened from the run")
        self.wait_graph(DIAMOND_NODES, DIAMOND_EDGES)

    def test_b_exported_yaml_and_python_submit_the_drawn_graph(self):
        self.new_pipeline()
        self.type_into("pipeline-name", "uiexport")
        self.add("job", (110, 120), "prep", command="sh -c 'echo prepared'")
        self.add("script", (110, 340), "load", file="load.py", args="--fast",
                 content="import sys; print('loading', sys.argv[1:])")
        self.add("job", (400, 220), "report", command="true", retries="1", timeout="1m")
        self.connect("prep", "report")
        self.connect("load", "report")
        nodes, edges = {"prep", "load", "report"}, {("prep", "report"), ("load", "report")}
        self.wait_graph(nodes, edges)
        yaml_text, python = self.export()
        self.assertIn("name: uiexport", yaml_text)
        self.assertIn("titan.sdk", python)

        folder = os.path.abspath(self.mktemp())
        os.makedirs(folder)
        path = os.path.join(folder, "uiexport.yaml")
        with open(path, "w") as f:
            f.write(yaml_text)
        with open(os.path.join(folder, "load.py"), "w") as f:
            f.write("import sys; print('loading', sys.argv[1:])\n")
        done = self.titan("run", "--wait", path, timeout=90)
        self.assertEqual(done.returncode, 0, done.stderr.decode(errors="replace"))
        run_id = done.stdout.decode().split()[0]
        with self.cluster.client() as client:
            self.assertEqual(run_graph(client, run_id), (nodes, edges))
            self.assertIn("loading ['--fast']", client.logs(f"{run_id}/load").decode())

        script = os.path.join(folder, "uiexport.py")
        with open(script, "w") as f:
            f.write(python)
        ran = subprocess.run([sys.executable, script], env=self.cluster.env(), cwd=folder,
                             capture_output=True, timeout=60)
        self.assertEqual(ran.returncode, 0, ran.stderr.decode(errors="replace"))
        found = re.findall(r"\buiexport-[0-9a-f]{6}\b", ran.stdout.decode())
        self.assertTrue(found, ran.stdout.decode())
        with self.cluster.client() as client:
            self.assertEqual(wait_run_ended(self, client, found[-1], 60)["state"], "COMPLETED")
            self.assertEqual(run_graph(client, found[-1]), (nodes, edges))

        # The YAML imported again gives the same graph.
        self.new_pipeline()
        self.import_text(yaml_text)
        self.wait_graph(nodes, edges)

    def test_c_import_titan_yaml_pasted_and_reference_yaml_uploaded(self):
        self.new_pipeline()
        with open(os.path.join(ROOT, "etc", "pipelines", "etl.yaml")) as f:
            self.import_text(f.read())
        self.wait_graph(ETL_NODES, ETL_EDGES)
        self.assert_laid_out(ETL_EDGES)
        self.assertEqual(self.find("[data-testid=pipeline-name]").get_attribute("value"), "etl")

        self.new_pipeline()
        path = os.path.abspath(self.mktemp() + ".yaml")
        with open(path, "w") as f:
            f.write(REFERENCE_YAML)
        self.click("import")
        self.find("[data-testid=import-file]").send_keys(path)
        self.until(lambda: "name: refpipe" in self.find("[data-testid=import-text]")
                   .get_attribute("value"), 10, "the uploaded file read into the dialog")
        self.click("import-submit")
        self.wait_graph(REFERENCE_NODES, REFERENCE_EDGES)
        self.assert_laid_out(REFERENCE_EDGES)
        self.click_node("api")
        self.assertEqual(self.find("[data-testid=prop-port]").get_attribute("value"), "auto")
        self.click_node("train.approval")
        self.assertEqual(self.find("[data-testid=prop-message]").get_attribute("value"),
                         "Publish this model?")

    def test_d_an_edge_closing_a_cycle_is_refused(self):
        self.new_pipeline()
        self.add("job", (110, 220), "first", command="true")
        self.add("job", (330, 220), "second", command="true")
        self.add("job", (570, 220), "third", command="true")
        self.connect("first", "second")
        self.connect("second", "third")
        chain = {("first", "second"), ("second", "third")}
        self.wait_graph({"first", "second", "third"}, chain)
        self.connect("third", "first")
        said = self.until(lambda: "cycle" in self.message() and self.message(), 10,
                          "a message about the refused edge")
        self.assertIn("third", said)
        self.assertIn("first", said)
        time.sleep(0.3)  # what a late edge would need to show
        self.assertEqual(self.edges(), chain)
        self.assertEqual(len(self.find_all(".react-flow__edge")), 2)

        # A duplicate id is marked on the node, and listed with its step and key.
        self.click_node("third")
        self.type_into("prop-id", "first")
        self.until(lambda: self.find_all("[data-invalid=true]"), 10, "a node marked invalid")
        problems = self.until(lambda: self.find_all("[data-testid=problem]"), 10,
                              "a problem listed")
        self.assertTrue(any(p.get_attribute("data-step") == "first" for p in problems),
                        [p.text for p in problems])

    def test_e_undo_redo_restore_the_graph(self):
        self.new_pipeline()
        self.add("job", (110, 220), "one", command="true")
        self.add("job", (350, 220), "two", command="true")
        self.connect("one", "two")
        base = ({"one", "two"}, {("one", "two")})
        self.wait_graph(*base)

        added = self.drop_step("service", 350, 420)
        grown = ({"one", "two", added}, base[1])
        self.wait_graph(*grown)
        self.click_node("one")
        self.keys("z", ctrl=True)
        self.wait_graph(*base)
        self.keys("z", ctrl=True, shift=True)
        self.wait_graph(*grown)
        self.click("undo")
        self.wait_graph(*base)
        self.click("redo")
        self.wait_graph(*grown)

        # Delete a step with the keyboard: its edge goes with it, and comes back with it.
        self.click_node("two")
        self.keys(Keys.DELETE)
        shrunk = ({"one", added}, set())
        self.wait_graph(*shrunk)
        self.keys("z", ctrl=True)
        self.wait_graph(*grown)
        self.keys("y", ctrl=True)
        self.wait_graph(*shrunk)
        self.click("undo")
        self.wait_graph(*grown)

    def test_f_a_draft_survives_a_reload_and_a_master_restart(self):
        self.new_pipeline()
        name = "uidraft-%d" % (time.time() * 1000 % 100000)
        self.type_into("draft-name", name)
        self.type_into("pipeline-name", "drafted")
        self.add("job", (110, 220), "fetch", command="echo fetch")
        self.add("gate", (350, 220), "check", message="Go on?")
        self.connect("fetch", "check")
        graph = ({"fetch", "check"}, {("fetch", "check")})
        self.wait_graph(*graph)
        self.until(lambda: "saved" in self.text_of("[data-testid=draft-saved]").lower(), 15,
                   "the draft saved")
        self.assertNotIn("unsaved", self.text_of("[data-testid=draft-saved]").lower())

        def reopen() -> None:
            # The draft's own address, in a new document.
            self.browser.get(f"{self.base_url}/new?draft={name}")
            self.find("[data-testid=constructor-canvas]")
            self.wait_graph(*graph, timeout=20)
            self.assertEqual(self.find("[data-testid=pipeline-name]").get_attribute("value"),
                             "drafted")

        # The page's address names the draft: a reload finds it.
        self.until(lambda: f"draft={name}" in self.browser.current_url, 10,
                   "the address naming the draft")
        self.browser.refresh()
        self.find("[data-testid=constructor-canvas]")
        self.wait_graph(*graph, timeout=20)
        # A new pipeline, then the draft opened from the list.
        self.click("draft-new")
        self.until(lambda: self.nodes() == set(), 10, "an empty canvas")
        self.click(f"draft-{name}")
        self.wait_graph(*graph)

        self.cluster.kill_master()
        self.cluster.start_master()
        reopen()
        self.until(lambda: self.find_all(f"[data-testid='draft-{name}']"), 15,
                   "the draft in the drafts list")
        self.assertIn(name, self.text_of("[data-testid=drafts]"))


DIAMOND_NODES = {"a", "b", "c", "ship", "d"}
DIAMOND_EDGES = {("a", "b"), ("a", "c"), ("b", "ship"), ("c", "ship"), ("ship", "d")}
