"""The SDK refuses numbers out of range before it sends anything (issue 13, C14)."""
from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from titan.errors import TitanError
from titan.sdk.client import Client, submit_body


class SubmitBodyTests(SynchronousTestCase):
    def refused(self, **options) -> str:
        with self.assertRaises(TitanError) as caught:
            submit_body(["true"], **options)
        return str(caught.exception)

    def test_out_of_range(self) -> None:
        self.assertEqual(self.refused(timeout=-5), "timeout=-5: must be more than 0")
        self.assertEqual(self.refused(timeout=0), "timeout=0: must be more than 0")
        self.assertEqual(self.refused(retries=-1), "retries=-1: must be at least 0")
        self.assertEqual(self.refused(delay=-0.5), "delay=-0.5: must be at least 0")

    def test_not_numbers(self) -> None:
        self.assertEqual(self.refused(timeout=float("nan")), "timeout=nan: expected a finite number")
        self.assertEqual(self.refused(delay=float("inf")), "delay=inf: expected a finite number")
        self.assertEqual(self.refused(retries=1.5), "retries=1.5: expected a whole number")
        self.assertEqual(self.refused(priority="high"), "priority='high': expected a whole number")
        self.assertEqual(self.refused(retries=True), "retries=True: expected a whole number")

    def test_good_ones(self) -> None:
        body = submit_body(["true"], timeout=2.5, retries=3, delay=0, priority=-7)
        self.assertEqual((body["timeout"], body["retries"], body["delay"], body["priority"]),
                         (2.5, 3, 0, -7))

    def test_nothing_is_sent(self) -> None:
        client = Client(master="127.0.0.1:1", token="t")
        client.call = lambda *a, **k: self.fail("a request went out")
        self.assertRaises(TitanError, client.submit, ["true"], timeout=-5)
