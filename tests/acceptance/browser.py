"""Headless Chromium through selenium, for the dashboard's tests (docs/web.md).

One browser per test class (`BrowserTestCase`), on the class's shared cluster; it never
reaches anything but 127.0.0.1: Chromium's background networking is off and selenium is told
where chromedriver is, so Selenium Manager fetches nothing. A failed test leaves a screenshot
and the page's text in the trial temp dir (named after the test) to look at.
"""
from __future__ import annotations

import atexit
import os
import re
import shutil
import tempfile
import time
from typing import Callable, Optional

from selenium import webdriver
from selenium.common.exceptions import (ElementClickInterceptedException,
                                        StaleElementReferenceException, WebDriverException)
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.action_chains import ActionChains
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webelement import WebElement

from tests.acceptance.helpers import ClusterTestCase

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"
FLAGS = ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
         "--disable-quic", "--no-first-run", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--disable-extensions",
         "--disable-default-apps", "--metrics-recording-only", "--mute-audio",
         "--window-size=1440,900"]
# React Flow's accessible name of an edge
EDGE_LABEL = re.compile(r"^Edge from (.+) to (.+)$")


def start_browser(width: int = 1440, height: int = 900) -> tuple[webdriver.Chrome, str]:
    """A headless Chromium and its (temporary) profile directory."""
    os.environ["SE_OFFLINE"] = "true"  # Selenium Manager: never download a driver
    profile = tempfile.mkdtemp(prefix="titan-chromium-")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--window-size={width},{height}")
    options.add_argument(f"--user-data-dir={profile}")
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(30)
    atexit.register(stop_browser, driver, profile)  # whatever happens to the test class
    return driver, profile


def stop_browser(driver: webdriver.Chrome, profile: str) -> None:
    try:
        driver.quit()
    except Exception:
        pass  # already stopped
    finally:
        shutil.rmtree(profile, ignore_errors=True)


class BrowserTestCase(ClusterTestCase):
    """A cluster (with its web face on a port of the OS's) and one logged-in browser per
    class. `self.browser` is selenium's driver; `self.open(path)` goes to a page of the app."""

    browser: Optional[webdriver.Chrome] = None
    _profile = ""

    def setUp(self) -> None:
        # Before the cluster's own cleanup (cleanups run last-added first): the browser is
        # stopped once the class's cluster has been released, not left running.
        self.addCleanup(self._maybe_stop_browser)
        super().setUp()
        cls = type(self)
        if cls.__dict__.get("browser") is None or cls._browser_cluster is not cls.cluster:
            cls.browser, cls._profile = start_browser()
            cls._browser_cluster = cls.cluster
            cls._logged_in = False

    _browser_cluster = None
    _logged_in = False

    @classmethod
    def _maybe_stop_browser(cls) -> None:
        # The class's cluster is released after its last test here: the browser goes with it.
        if cls.__dict__.get("cluster") is None and cls.__dict__.get("browser") is not None:
            stop_browser(cls.browser, cls._profile)
            cls.browser = None

    def keep_evidence(self) -> str:
        """A screenshot, the page's text and the browser's console (what the user would
        have seen) beside the test's temp dir; returns where."""
        base = os.path.abspath(self.id().rsplit(".", 1)[-1])
        try:
            self.browser.save_screenshot(base + ".png")
            with open(base + ".txt", "w") as f:
                f.write(self.browser.current_url + "\n\n")
                f.write(self.browser.find_element(By.TAG_NAME, "body").text)
                f.write("\n\n-- console --\n")
                for entry in self.browser.get_log("browser"):
                    f.write(f"{entry.get('level')} {entry.get('message')}\n")
        except WebDriverException:
            pass
        return base + ".png"

    # -- what tests use ----------------------------------------------------------------

    @property
    def base_url(self) -> str:
        return self.cluster.web_url.rstrip("/")

    def login(self) -> None:
        """Log in once per class through the login page, with the cluster token."""
        if type(self)._logged_in:
            return
        self.browser.get(self.base_url + "/")
        self.find("[data-testid=login-token]").send_keys(self.cluster.token)
        self.find("[data-testid=login-submit]").click()
        self.find("[data-testid=logout]")
        type(self)._logged_in = True

    def open(self, path: str) -> None:
        """Go to a page of the app, logged in."""
        self.login()
        self.browser.get(self.base_url + path)

    def find(self, css: str, timeout: float = 15.0) -> WebElement:
        """The first element matching `css`, once there is one (fails naming it)."""
        return self.until(lambda: (self.browser.find_elements(By.CSS_SELECTOR, css) or [None])[0],
                          timeout, f"an element {css!r}")

    def find_all(self, css: str) -> list[WebElement]:
        return self.browser.find_elements(By.CSS_SELECTOR, css)

    def text_of(self, css: str) -> str:
        return self.find(css).text

    def until(self, probe: Callable, timeout: float = 15.0, what: str = "condition"):
        """probe()'s first truthy value, polled; the test fails saying what never came and
        what the page showed."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                value = probe()
            except (StaleElementReferenceException,):
                value = None
            if value:
                return value
            if time.monotonic() > deadline:
                page = self.browser.find_element(By.TAG_NAME, "body").text
                shot = self.keep_evidence()
                self.fail(f"after {timeout:g}s still no {what}; the page at "
                          f"{self.browser.current_url} ({shot}) shows:\n{page[:3000]}")
            time.sleep(0.05)

    # Milliseconds a pointer move or key chord of ActionChains takes (selenium's 250 by
    # default; a class with many moves sets less).
    pointer_ms = 250

    def goto(self, path: str) -> None:
        """`path` within the app, as its own links go (no new document once logged in: a
        second driver.get stalls while Chromium's back/forward cache holds the last page's
        event streams, which fill the six connections a browser gives one host)."""
        if self.browser.current_url.startswith(self.base_url) and self.find_all(
                "[data-testid=logout]"):
            self.browser.execute_script(
                "history.pushState(null, '', arguments[0]);"
                "dispatchEvent(new PopStateEvent('popstate'))", path)
        else:
            self.open(path)

    def keys(self, *keys: str, ctrl: bool = False, shift: bool = False) -> None:
        """Keys pressed on the page, with Ctrl and/or Shift held."""
        actions = ActionChains(self.browser, duration=self.pointer_ms)
        held = [k for k, on in ((Keys.CONTROL, ctrl), (Keys.SHIFT, shift)) if on]
        for key in held:
            actions.key_down(key)
        actions.send_keys(*keys)
        for key in reversed(held):
            actions.key_up(key)
        actions.perform()

    def type_into(self, testid: str, value: str) -> None:
        """Replace a field's text as a person does: select it all, type over it."""
        field = self.find(f"[data-testid='{testid}']")
        field.click()
        field.send_keys(Keys.CONTROL, "a")
        field.send_keys(Keys.BACKSPACE)
        if value:
            field.send_keys(value)
        self.until(lambda: field.get_attribute("value") == value, 5,
                   f"{testid} to hold {value!r}")

    def open_node(self, node: str, shown: str, timeout: float = 15.0) -> WebElement:
        """Click a run graph's node until its panel shows `shown` (a CSS selector): a click
        that lands while the graph lays itself out again or fits the view (the node moving
        under the pointer) is lost, as a person's would be, and a person clicks again."""
        clicked = [0.0]

        def opened():
            found = self.find_all(shown)
            if not found and time.monotonic() - clicked[0] > 1.0:  # a panel takes a moment
                clicked[0] = time.monotonic()
                try:
                    self.find(f"[data-testid='node-{node}']").click()
                except ElementClickInterceptedException:
                    clicked[0] = 0.0  # the node moved under the pointer (fitting the view)
            return found[0] if found else None
        return self.until(opened, timeout, f"the panel of node {node} ({shown})")

    # -- a graph on a React Flow canvas (the constructor's) -----------------------------

    def nodes(self) -> set:
        """The constructor's nodes shown, by step id. One read of the page: a re-render
        between element reads would make them stale."""
        return {t[len("cnode-"):] for t in self.browser.execute_script(
            "return [...document.querySelectorAll(\"[data-testid^='cnode-']\")]"
            ".map(e => e.dataset.testid)")}

    def edges(self) -> set:
        """The edges drawn, (source, target), read from React Flow's edge elements (their
        accessible name "Edge from A to B"), in one read of the page."""
        found = set()
        for label in self.browser.execute_script(
                "return [...document.querySelectorAll('.react-flow__edge')]"
                ".map(e => e.getAttribute('aria-label') || '')"):
            m = EDGE_LABEL.match(label)
            self.assertIsNotNone(m, f"an edge without its ends: {label!r}")
            found.add((m.group(1), m.group(2)))
        return found
