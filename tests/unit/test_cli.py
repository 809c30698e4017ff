"""The `titan` command's own logic: argument checks, table cells, why a service is not up.

Pure: no cluster; `main()` stops at argparse before it would dial a master.
"""
from __future__ import annotations

import contextlib
import io

from twisted.trial.unittest import SynchronousTestCase

from titan import __version__
from titan import cli


def run_cli(*argv: str) -> tuple[int, str, str]:
    """main(argv) -> (status, stdout, stderr), SystemExit included."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            status = cli.main(list(argv))
        except SystemExit as e:
            status = e.code
    return status, out.getvalue(), err.getvalue()


class NumbersTests(SynchronousTestCase):
    """Negative or invalid numbers are refused by the command line, before any request."""

    def setUp(self) -> None:
        # A request would go to the client: make any attempt a failure of the test.
        def no_client(args):
            raise AssertionError("the command reached the master")
        self.patch(cli, "_client", no_client)

    def refused(self, *argv: str) -> str:
        status, out, err = run_cli(*argv)
        self.assertEqual(status, 2, err)
        return err

    def test_negative_timeout(self) -> None:
        err = self.refused("submit", "--timeout", "-5", "--", "true")
        self.assertIn("argument --timeout: -5 is out of range: must be more than 0", err)

    def test_zero_timeout(self) -> None:
        self.assertIn("must be more than 0", self.refused("submit", "--timeout", "0", "--", "x"))

    def test_not_a_number(self) -> None:
        self.assertIn("'soon' is not a number",
                      self.refused("submit", "--timeout", "soon", "--", "true"))

    def test_nan_and_inf(self) -> None:
        for value in ("nan", "inf", "-inf"):
            self.assertIn("is not a finite number",
                          self.refused("submit", f"--delay={value}", "--", "true"))

    def test_negative_retries_and_delay(self) -> None:
        self.assertIn("--retries: -1 is out of range: must be at least 0",
                      self.refused("submit", "--retries", "-1", "--", "true"))
        self.assertIn("--retries: '1.5' is not a whole number",
                      self.refused("submit", "--retries", "1.5", "--", "true"))
        self.assertIn("--delay: -2 is out of range",
                      self.refused("submit", "--delay", "-2", "--", "true"))

    def test_limits(self) -> None:
        self.assertIn("--limit: 0 is out of range: must be at least 1",
                      self.refused("jobs", "--limit", "0"))
        self.assertIn("--limit: -3 is out of range", self.refused("runs", "--limit", "-3"))

    def test_service_options(self) -> None:
        self.assertIn("--port: '70000': expected a port number (1-65535) or auto",
                      self.refused("service", "deploy", "api", "--port", "70000", "--", "x"))
        self.assertIn("--timeout: -1 is out of range",
                      self.refused("service", "deploy", "api", "--timeout", "-1", "--", "x"))

    def test_up_options(self) -> None:
        self.assertIn("--workers/-n: -1 is out of range", self.refused("up", "--workers", "-1"))
        self.assertIn("--slots: 0 is out of range", self.refused("up", "--slots", "0"))
        self.assertIn("--port/-p: 99999 is out of range: must be at least 0 and at most 65535",
                      self.refused("up", "--port", "99999"))

    def test_good_numbers_pass(self) -> None:
        args = cli.build_parser().parse_args(
            ["submit", "--timeout", "2.5", "--retries", "3", "--delay", "0", "x"])
        self.assertEqual((args.timeout, args.retries, args.delay), (2.5, 3, 0.0))


class StateTests(SynchronousTestCase):
    def test_bogus_state_names_the_states(self) -> None:
        status, _, err = run_cli("jobs", "--state", "BOGUS")
        self.assertEqual(status, 2)
        self.assertIn("no job state 'BOGUS': the states are PENDING, RUNNING, COMPLETED, "
                      "FAILED, DEAD, CANCELLED, WAITING_APPROVAL", err)

    def test_state_in_any_case(self) -> None:
        args = cli.build_parser().parse_args(["jobs", "--state", "completed"])
        self.assertEqual(args.state, "COMPLETED")


class VersionTests(SynchronousTestCase):
    def test_version(self) -> None:
        status, out, _ = run_cli("--version")
        self.assertEqual((status, out.strip()), (0, f"titan {__version__}"))


class JsonFlagTests(SynchronousTestCase):
    def test_every_listing_takes_json(self) -> None:
        parser = cli.build_parser()
        for argv in (["jobs"], ["workers"], ["schedules"], ["plugins"], ["status", "X"],
                     ["runs"], ["service", "list"]):
            self.assertTrue(parser.parse_args(argv + ["--json"]).json, argv)


class CellTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.patch(cli, "_ellipsis", lambda: "…")

    def test_newlines_never_reach_a_table(self) -> None:
        self.assertEqual(cli._cell("a\nb\r\nc\td"), "a⏎b⏎c d")

    def test_long_text_is_cut_with_an_ellipsis(self) -> None:
        cell = cli._cell("x" * 100, 60)
        self.assertEqual(len(cell), 60)
        self.assertTrue(cell.endswith("…"))
        self.assertEqual(cli._cell("short", 60), "short")

    def test_rows_stay_one_line_each(self) -> None:
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            cli._print_rows([["A", "B"], ["1", "two\nlines"]])
        self.assertEqual(out.getvalue().splitlines(), ["A  B", "1  two⏎lines"])

    def test_ascii_terminal(self) -> None:
        self.patch(cli, "_ellipsis", lambda: "...")
        self.assertEqual(cli._cell("a\nb" + "x" * 20, 10), "a|bxxxx...")


class ServiceWhyTests(SynchronousTestCase):
    def test_failed_says_its_reason(self) -> None:
        self.assertEqual(cli._service_why({"state": "FAILED", "reason": "crash loop"}),
                         "crash loop")

    def test_failing_health_check(self) -> None:
        svc = {"state": "STARTING", "health_error": "health: GET /healthz → 404"}
        self.assertEqual(cli._service_why(svc), "health: GET /healthz → 404")

    def test_restarting_says_how_it_last_ended(self) -> None:
        svc = {"state": "RESTARTING", "last_exit": "exit 2",
               "last_lines": ["usage: server", "error: invalid port '$PORT'", ""]}
        self.assertEqual(cli._service_why(svc),
                         "last exit: exit 2 (last line: error: invalid port '$PORT')")

    def test_running_and_healthy_needs_no_why(self) -> None:
        self.assertIsNone(cli._service_why({"state": "RUNNING", "health_error": None}))
