"""What `titan run --wait` shows while a run goes on (titan/follow.py), without a cluster:
runs as RunFollower folds the master's pushes, written to a StringIO."""
from __future__ import annotations

import io
import time
from unittest import mock

from twisted.trial.unittest import SynchronousTestCase

from titan.follow import Display, report_end
from titan.sdk.watch import RunFollower


def job(node: str, state: str, **extra) -> dict:
    return {"node": node, "job_id": f"r/{node}", "state": state, "worker": extra.pop("worker",
            None), "reason": None, "exit_code": None, **extra}


def snapshot(*jobs: dict, created_at: float) -> dict:
    counts: dict = {}
    for j in jobs:
        counts[j["state"]] = counts.get(j["state"], 0) + 1
    return {"run_id": "r", "state": "RUNNING", "version": 1, "total": len(jobs),
            "counts": counts, "created_at": created_at, "finished_at": None,
            "jobs": list(jobs)}


class DisplayTests(SynchronousTestCase):
    def test_on_a_terminal_one_line_with_elapsed_time_running_jobs_and_gates(self):
        err = io.StringIO()
        f = RunFollower(snapshot(*[job(f"t{i}", "RUNNING") for i in range(6)],
                                 job("done", "COMPLETED"), job("gate", "WAITING_APPROVAL"),
                                 created_at=time.time() - 75))
        d = Display("r", tty=True, err=err)
        with mock.patch("shutil.get_terminal_size", return_value=mock.Mock(columns=200)):
            d.update(f.run, first=True)
        out = err.getvalue()
        self.assertIn("gate r/gate is waiting for approval: titan approve r/gate", out)
        self.assertRegex(out, r"\[##-+\] 1/8  1:1[56]  awaiting approval: gate  "
                              r"running: t0, t1, t2, t3 \+2$")
        self.assertNotIn("t0 RUNNING", out)  # no line per job on a terminal
        # A change: the line is redrawn in place; the gate's command is not said twice.
        err.truncate(0), err.seek(0)
        f.apply({"run_id": "r", "version": 2, "state": "RUNNING",
                 "counts": {"RUNNING": 5, "COMPLETED": 1, "FAILED": 1, "WAITING_APPROVAL": 1},
                 "jobs": [job("t0", "FAILED", reason="exit 3")]})
        with mock.patch("shutil.get_terminal_size", return_value=mock.Mock(columns=50)):
            d.update(f.run, first=False)
        out = err.getvalue()
        self.assertTrue(out.startswith("\r\x1b[K["), out)
        self.assertNotIn("approve", out)
        self.assertEqual(len(out) - len("\r\x1b[K"), 49)  # cut to the terminal's width
        self.assertIn("1 failed", out)

    def test_on_a_terminal_the_line_is_redrawn_at_most_ten_times_a_second(self):
        err, now = io.StringIO(), [100.0]
        f = RunFollower(snapshot(*[job(f"t{i}", "RUNNING") for i in range(4)],
                                 created_at=time.time()))
        d = Display("r", tty=True, err=err, redraw_every=0.1, clock=lambda: now[0])
        d.update(f.run, first=True)
        self.assertIn("0/4", err.getvalue())

        def end(node: str, version: int) -> str:
            err.truncate(0), err.seek(0)
            f.apply({"run_id": "r", "version": version, "state": "RUNNING",
                     "counts": {"COMPLETED": version - 1, "RUNNING": 5 - version},
                     "jobs": [job(node, "COMPLETED")]})
            d.update(f.run, first=False)
            return err.getvalue()

        now[0] += 0.05
        self.assertEqual(end("t0", 2), "")  # held back: drawn 0.05 s ago
        now[0] += 0.06
        self.assertIn("2/4", end("t1", 3))  # due: the latest counts, not the held ones
        # A line of its own is never held back, and the progress line follows it.
        now[0] += 0.01
        err.truncate(0), err.seek(0)
        f.apply({"run_id": "r", "version": 4, "state": "RUNNING", "counts": {},
                 "jobs": [job("t2", "WAITING_APPROVAL")]})
        d.update(f.run, first=False)
        self.assertIn("gate r/t2 is waiting for approval", err.getvalue())
        # The end is never held back either: the line is cleared.
        now[0] += 0.01
        err.truncate(0), err.seek(0)
        f.apply({"run_id": "r", "version": 5, "state": "COMPLETED", "counts": {},
                 "jobs": [job("t3", "COMPLETED")]})
        d.update(f.run, first=False)
        d.end()
        self.assertEqual(err.getvalue(), "\r\x1b[K")

    def test_without_a_terminal_a_line_per_job_that_moved(self):
        err = io.StringIO()
        f = RunFollower(snapshot(job("a", "RUNNING", worker="w1"), job("b", "PENDING"),
                                 created_at=time.time() - 2))
        d = Display("r", tty=False, err=err)
        d.update(f.run, first=True)
        f.apply({"run_id": "r", "version": 2, "state": "RUNNING", "counts": {},
                 "jobs": [job("a", "FAILED", reason="exit 3"), job("b", "CANCELLED",
                                                                  reason="cancelled: a FAILED")]})
        d.update(f.run, first=False)
        self.assertEqual(err.getvalue().splitlines(),
                         ["0:02 a RUNNING on w1", "0:02 a FAILED (exit 3)",
                          "0:02 b CANCELLED (cancelled: a FAILED)"])

    def test_a_failed_run_ends_with_its_failed_jobs_last_lines_and_the_time(self):
        class Client:
            def __enter__(self):
                return self

            def __exit__(self, *exc):
                pass

            def logs(self, job_id):
                return "".join(f"{job_id} line {i}\n" for i in range(1, 15)).encode()
        run = snapshot(job("a", "FAILED", exit_code=3), job("b", "COMPLETED"),
                       created_at=100.0)
        run.update(state="FAILED", finished_at=112.5)
        err = io.StringIO()
        report_end(Client, run, err)
        lines = err.getvalue().splitlines()
        self.assertEqual(lines[0], "--- r/a FAILED (exit 3); last 10 lines of its output:")
        self.assertEqual(lines[1:11], [f"  r/a line {i}" for i in range(5, 15)])
        self.assertEqual(lines[11], "r FAILED: COMPLETED 1  FAILED 1; took 12.50s")


class StartUpTests(SynchronousTestCase):
    def test_the_client_path_builds_no_attrs_classes(self):
        """The CLI and the SDK's client start without attrs or the config (start-up is a
        tenth of a 1,000-job `titan run --wait`); the port default is the config's."""
        import subprocess
        import sys
        code = ("import sys, titan.cli, titan.follow, titan.sdk.client; "
                "print(sorted(m for m in ('attrs', 'attr', 'titan.config', 'titan.core') "
                "if m in sys.modules))")
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                             check=True).stdout
        self.assertEqual(out.strip(), "[]")
        from titan import config
        from titan.sdk import connection
        self.assertEqual(connection.DEFAULT_PORT, config.DEFAULT_PORT)
