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
