"""`titan run --wait` and `titan wait RUN`: follow a run by its changes until it ends.

The master sends the run once, then pushes what changed (WATCH_RUN); nothing here refetches
the run.  On a terminal the progress is one line (done/total, elapsed, the running jobs);
elsewhere one line per job that moved.  A gate waiting for approval prints the command that
approves it.  A lost master is retried with backoff (the run goes on without us); Ctrl-C
stops following, not the run, and says how to follow it again.  A failed run ends with its
failed jobs' last lines of output.
"""
from __future__ import annotations

import io
import os
import shutil
import sys
import time
from typing import Callable, Optional, TextIO

from titan.errors import TitanError

ENDED = ("COMPLETED", "FAILED", "DEAD", "CANCELLED")
TAIL_LINES = 10  # of each failed job's output, at the end of a failed run
TAIL_JOBS = 5  # failed jobs whose output is shown
BACKOFF_FIRST, BACKOFF_CAP = 0.5, 10.0
REDRAW_EVERY = 0.1  # seconds between two redraws of the progress line on a terminal


def elapsed(seconds: float) -> str:
    seconds = max(0, int(seconds))
    if seconds >= 3600:
        return f"{seconds // 3600}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"
    return f"{seconds // 60}:{seconds % 60:02d}"


def counts(run: dict) -> str:
    return "  ".join(f"{state} {n}" for state, n in sorted(run["counts"].items()))


class Display:
    """What the user sees while a run goes on."""

    def __init__(self, run_id: str, tty: bool, err: TextIO, redraw_every: float = 0.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.run_id = run_id
        self.tty = tty
        self.err = err
        # The progress line is redrawn at most this often (seconds): a change pushed per
        # job end would otherwise redraw it hundreds of times a second, which nobody can
        # read and which takes CPU from the jobs.  Lines of their own are never held back;
        # the master's tick (1 s) redraws a line held back before a quiet spell.
        self.redraw_every = redraw_every
        self.clock = clock
        self._drawn_at = float("-inf")
        self.seen: dict[str, str] = {}  # node -> last state shown (lines mode)
        self.gates: set[str] = set()  # gates whose approve command was shown
        self.line = False  # a progress line is on screen (tty)

    def _clear(self) -> str:
        if self.line:
            self.line = False
            return "\r\x1b[K"
        return ""

    def say(self, text: str) -> None:
        """A message of its own (a lost master, Ctrl-C), on a line of its own."""
        self.err.write(self._clear() + text + "\n")
        self.err.flush()

    def update(self, run: dict, first: bool) -> None:
        out = []
        stamp = elapsed(time.time() - run["created_at"])
        for job in (run["jobs"] if first else run["changed"]):
            node, state = job["node"], job["state"]
            if state == "WAITING_APPROVAL" and node not in self.gates:
                self.gates.add(node)
                ref = f"{self.run_id}/{node}"
                out.append(f"gate {ref} is waiting for approval: titan approve {ref}  "
                           f"(or titan reject {ref} -m WHY)")
                self.seen[node] = state
                continue
            if self.tty or self.seen.get(node) == state or (first and state == "PENDING"):
                continue
            self.seen[node] = state
            what = f" on {job['worker']}" if state == "RUNNING" and job.get("worker") else ""
            why = f" ({job['reason']})" if job.get("reason") and state != "RUNNING" else ""
            out.append(f"{stamp} {node} {state}{what}{why}")
        if self.tty and run["state"] == "RUNNING" and not out and self.line:
            now = self.clock()
            if now - self._drawn_at < self.redraw_every:
                return  # the line on screen stays until the next redraw is due
        text = self._clear() + "".join(line + "\n" for line in out)
        if self.tty and run["state"] == "RUNNING":
            text += self._progress(run, stamp)
            self.line = True
            self._drawn_at = self.clock()
        if text:
            self.err.write(text)
            self.err.flush()

    def _progress(self, run: dict, stamp: str) -> str:
        total = run["total"] or 1
        done = sum(n for s, n in run["counts"].items() if s in ENDED)
        width = 20
        filled = int(width * done / total)
        running = [j["node"] for j in run["active"] if j["state"] == "RUNNING"]
        gates = [j["node"] for j in run["active"] if j["state"] == "WAITING_APPROVAL"]
        parts = [f"[{'#' * filled}{'-' * (width - filled)}] {done}/{run['total']}", stamp]
        failed = sum(run["counts"].get(s, 0) for s in ("FAILED", "DEAD"))
        if failed:
            parts.append(f"{failed} failed")
        if gates:
            parts.append(f"awaiting approval: {', '.join(gates)}")
        if running:
            shown = ", ".join(running[:4])
            more = f" +{len(running) - 4}" if len(running) > 4 else ""
            parts.append(f"running: {shown}{more}")
        line = "  ".join(parts)
        return line[:max(20, self._columns() - 1)]

    def _columns(self) -> int:
        try:  # the terminal stderr is on (stdout may be a pipe); 0 when it does not say
            columns = os.get_terminal_size(self.err.fileno()).columns
        except (AttributeError, OSError, ValueError, io.UnsupportedOperation):
            columns = 0
        return columns or shutil.get_terminal_size((100, 24)).columns

    def end(self) -> None:
        if self.line:
            self.err.write("\r\x1b[K")
            self.err.flush()
            self.line = False


def follow_run(connect: Callable, run_id: str, tty: bool,
               err: Optional[TextIO] = None, snapshot: Optional[dict] = None) -> dict:
    """Follow `run_id` until it ends; returns the run with every job.

    `connect()` gives a fresh `Client` (the first one may be the connection that submitted
    the run with `watch`, and `snapshot` the run it answered).  KeyboardInterrupt is turned
    into `Detached` after saying how to follow the run again."""
    from titan.sdk.client import ConnectError
    err = err or sys.stderr
    display = Display(run_id, tty, err, redraw_every=REDRAW_EVERY)
    delay = BACKOFF_FIRST
    lost_at: Optional[float] = None
    try:
        while True:
            try:
                with connect() as titan:
                    first = True
                    given, snapshot = snapshot, None  # a reconnection asks afresh
                    for run in titan.watch_run(run_id, jobs=True, tick=1.0 if tty else None,
                                               snapshot=given):
                        if lost_at is not None:
                            display.say(f"titan: reconnected to the master after "
                                        f"{time.monotonic() - lost_at:.1f}s; following "
                                        f"{run_id} again")
                            lost_at, delay = None, BACKOFF_FIRST
                        display.update(run, first)
                        first = False
                    display.end()
                    return run
            except ConnectError as e:
                if lost_at is None:
                    lost_at = time.monotonic()
                display.say(f"titan: lost the master ({e}); the run goes on without us. "
                            f"Retrying in {delay:.1f}s (Ctrl-C to stop following)")
                time.sleep(delay)
                delay = min(BACKOFF_CAP, delay * 2)
    except KeyboardInterrupt:
        display.say(f"titan: stopped following {run_id}; the run goes on. Follow it again "
                    f"with `titan wait {run_id}`, or look with `titan status {run_id}`.")
        raise Detached(run_id) from None


class Detached(TitanError):
    """The user stopped following (Ctrl-C); the run goes on."""


def report_end(connect: Callable, run: dict, err: Optional[TextIO] = None) -> None:
    """After the table: a failed run's failed jobs' last lines, then the total time."""
    err = err or sys.stderr
    failed = [j for j in run["jobs"] if j["state"] in ("FAILED", "DEAD")]
    if failed:
        try:
            with connect() as titan:
                for job in failed[:TAIL_JOBS]:
                    data = titan.logs(job["job_id"])
                    lines = data.decode("utf-8", "replace").splitlines()[-TAIL_LINES:]
                    what = job.get("reason") or f"exit {job.get('exit_code')}"
                    err.write(f"--- {job['job_id']} {job['state']} ({what}); last "
                              f"{len(lines)} lines of its output:\n")
                    err.write("".join(f"  {line}\n" for line in lines) or "  (no output)\n")
        except TitanError as e:
            err.write(f"titan: could not read the failed jobs' output: {e}\n")
        if len(failed) > TAIL_JOBS:
            err.write(f"--- and {len(failed) - TAIL_JOBS} more failed jobs "
                      f"(titan logs {run['run_id']}/JOB)\n")
    took = ""
    if run.get("finished_at") and run.get("created_at"):
        took = f"; took {run['finished_at'] - run['created_at']:.2f}s"
    err.write(f"{run['run_id']} {run['state']}: {counts(run)}{took}\n")
    err.flush()
