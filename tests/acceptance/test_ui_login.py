"""The dashboard's door: a wrong token is refused with a message; the cluster token opens it;
a reload keeps the session (the cookie), and logging out closes it."""
from __future__ import annotations

from tests.acceptance.browser import BrowserTestCase


class LoginTests(BrowserTestCase):
    workers = 1

    def test_a_wrong_token_is_refused_and_the_right_one_lets_in(self):
        b = self.browser
        b.delete_all_cookies()
        b.get(self.base_url + "/runs")
        self.find("[data-testid=login-token]").send_keys("not-the-token")
        self.find("[data-testid=login-submit]").click()
        self.assertIn("wrong token", self.text_of("[data-testid=error]"))
        token = self.find("[data-testid=login-token]")
        token.clear()
        token.send_keys(self.cluster.token)
        self.find("[data-testid=login-submit]").click()
        self.assertEqual(self.text_of("[data-testid=role]"), "operator")
        # The token is never kept by the page: only the HttpOnly cookie is.
        self.assertNotIn(self.cluster.token, b.execute_script(
            "return document.cookie + JSON.stringify(localStorage) + "
            "JSON.stringify(sessionStorage)"))
        b.refresh()
        self.find("[data-testid=logout]").click()
        self.find("[data-testid=login-token]")
        b.refresh()
        self.find("[data-testid=login-token]")
        type(self)._logged_in = False


class MasterRestartTests(BrowserTestCase):
    """An open page lives through a master restart: the live feed reconnects by itself and
    the session is still good (docs/web.md: sessions are saved in the data dir)."""
    workers = 1
    cluster_options = {"fixed_port": True}

    def test_the_page_reconnects_and_stays_logged_in(self):
        self.open("/")
        self.until(lambda: "live" == self.text_of("[data-testid=live]").split()[-1],
                   what="the live feed connected")
        self.browser.execute_script("window.__notReloaded = true")
        self.cluster.kill_master()
        self.until(lambda: "reconnecting" in self.text_of("[data-testid=live]"),
                   what="the page noticing the master is gone")
        self.cluster.start_master()
        self.until(lambda: self.text_of("[data-testid=live]").endswith("live"), 30,
                   what="the live feed back after the restart")
        self.assertTrue(self.browser.execute_script("return window.__notReloaded === true"))
        self.find("[data-testid=nav-runs]").click()
        self.find("[data-testid=logout]")
        self.assertFalse(self.find_all("[data-testid=login-token]"))
