"""The master is kill -9'd again and again while a DAG runs; nothing is lost or run twice.

Every job appends `start`/`end` lines with its id, attempt and the time to a journal on
disk, so what really ran can be checked against what the master says.
"""
from __future__ import annotations

import os
import random
import signal
import sys
import tempfile
import textwrap
import time
from collections import defaultdict

from twisted.trial.unittest import SynchronousTestCase

from titan.errors import TitanError
from titan.sdk.pipeline import Pipeline
from titan.testing.cluster import Cluster

WIDTH, LAYERS = 25, 20
DEAD_JOB = "L2-0"  # fails every time: its descendants must never run
FLAKY = {f"L{layer}-{i}" for layer in (1, 4, 8, 13) for i in (3, 11)}  # fail once
GATED = "L10-5"  # a gate is inserted after it
GROWER = "L5-3"  # adds five children while it runs

JOB = """\
echo "start $TITAN_JOB_ID $TITAN_ATTEMPT $(date +%s.%N)" >> {journal}
sleep 0.$(( RANDOM % 3 + 1 ))$(( RANDOM % 10 ))
{fail}
echo "end $TITAN_JOB_ID $TITAN_ATTEMPT $(date +%s.%N)" >> {journal}
"""

GROW = """\
import os, time
from titan.sdk import current_job
from titan.errors import RemoteError, TitanError

def note(what):
    with open({journal!r}, "a") as f:
        f.write(f"{{what}} {{os.environ['TITAN_JOB_ID']}} {{os.environ['TITAN_ATTEMPT']}} {{time.time()}}\\n")

note("start")
me = current_job()
kids = [{{"id": f"grown-{{i}}", "depends_on": [me.node],
          "command": ["sh", "-c", {kid!r}]}} for i in range(5)]
deadline = time.time() + 90
while True:
    try:
        me.add_jobs(kids)
        break
    except RemoteError as e:
        if "used twice" in e.message:  # the master recorded it before it went down
            break
        raise
    except TitanError:  # the master is restarting: try again
        if time.time() > deadline:
            raise
        me.client.close()
        time.sleep(0.3)
note("end")
"""


def parents(node: str) -> list[str]:
    layer, i = (int(x) for x in node[1:].split("-"))
    if layer == 0:
        return []
    return sorted({f"L{layer - 1}-{i}", f"L{layer - 1}-{(i + 1) % WIDTH}"})


class CrashTests(SynchronousTestCase):
    def build(self, journal: str) -> Pipeline:
        p = Pipeline("crash", max_jobs=600)
        plain = JOB.format(journal=journal, fail="")
        for layer in range(LAYERS):
            for i in range(WIDTH):
                node = f"L{layer}-{i}"
                if node == DEAD_JOB:
                    script, retries = JOB.format(journal=journal, fail="exit 3"), 1
                elif node in FLAKY:
                    script = JOB.format(journal=journal,
                                        fail='[ "$TITAN_ATTEMPT" = 1 ] && exit 1')
                    retries = 2
                else:
                    script, retries = plain, 0
                deps = parents(node)
                if node == GROWER:
                    p.job(node, [sys.executable, "-c", GROW.format(journal=journal, kid=plain)],
                          depends_on=deps)
                else:
                    p.job(node, ["sh", "-c", script], depends_on=deps, retries=retries,
                          hitl_message="Carry on?" if node == GATED else None)
        return p

    def retrying(self, call, timeout: float = 60.0):
        """Call into the master, riding out its restarts."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                with self.cluster.client() as c:
                    return call(c)
            except TitanError as e:
                # Refusals (RemoteError, with a code) are real; a lost connection is not.
                if hasattr(e, "code") or time.monotonic() > deadline:
                    raise
                time.sleep(0.2)

    def run_with_crashes(self, kill_a_worker: bool) -> None:
        base = tempfile.mkdtemp(prefix="titan-crash-")
        journal = os.path.join(base, "journal")
        self.cluster = Cluster(base, workers=2, slots=4, heartbeat_interval=0.3,
                               heartbeat_timeout=4.0, fixed_port=True)
        self.addCleanup(self.cluster.stop)
        self.cluster.start()
        rng = random.Random(1128 + kill_a_worker)
        run_id = self.retrying(lambda c: c.submit(self.build(journal)))
        gate = f"{run_id}/{GATED}.approval"
        approved_at = None
        kills_while_running = 0
        for crash in range(10):
            time.sleep(rng.uniform(0.2, 1.2))
            if self.retrying(lambda c: c.run(run_id, jobs=False))["state"] == "RUNNING":
                kills_while_running += 1
            self.cluster.kill_master(signal.SIGKILL)
            if kill_a_worker and crash == 4:
                self.cluster.kill_worker("w2", signal.SIGKILL)
                self.cluster.start_worker("w3")
            time.sleep(rng.uniform(0.0, 0.5))
            self.cluster.start_master()
            if approved_at is None and self.retrying(lambda c: c.job(gate))["state"] \
                    == "WAITING_APPROVAL":
                self.retrying(lambda c: c.approve(gate, "after a crash", by="crash-test"))
                approved_at = time.time()
        if approved_at is None:
            self.retrying(lambda c: self.wait_state(c, gate, "WAITING_APPROVAL"), timeout=120)
            self.retrying(lambda c: c.approve(gate, "after the crashes", by="crash-test"))
        run = self.retrying(lambda c: c.wait_run(run_id, timeout=240), timeout=300)
        self.assertEqual(kills_while_running, 10)
        self.check(run, journal, exactly_once=not kill_a_worker)

    def wait_state(self, c, job: str, state: str) -> None:
        while c.job(job)["state"] != state:
            time.sleep(0.1)

    def check(self, run: dict, journal: str, exactly_once: bool) -> None:
        self.assertNotEqual(run["state"], "RUNNING")
        jobs = {j["node"]: j for j in run["jobs"]}
        self.assertEqual(len(jobs), WIDTH * LAYERS + 1 + 5)  # + the gate, + grown jobs
        starts, ends = defaultdict(list), defaultdict(list)
        with open(journal) as f:
            for line in f:
                what, job_id, attempt, at = line.split()
                node = job_id.split("/", 1)[1]
                (starts if what == "start" else ends)[node].append((int(attempt), float(at)))
        terminal = {"COMPLETED", "FAILED", "DEAD", "CANCELLED"}
        self.assertEqual({j["state"] for j in jobs.values()} - terminal, set())

        # The DEAD job and everything below it: it ran (twice: one retry), nothing else did.
        self.assertEqual(jobs[DEAD_JOB]["state"], "DEAD")
        self.assertEqual(len(starts[DEAD_JOB]), 2)
        below = {n for n, j in jobs.items() if j["state"] == "CANCELLED"}
        self.assertGreater(len(below), 20)
        for node in below:
            self.assertEqual(jobs[node]["reason"], f"cancelled: {DEAD_JOB} DEAD")
            self.assertEqual(starts[node], [], f"{node} ran although it was cancelled")

        # No job started before its parents had completed.
        checked_order = 0
        for node, job_starts in starts.items():
            deps = parents(node) if node.startswith("L") else [GROWER]
            for attempt, at in job_starts:
                for parent in deps:
                    ok_ends = [t for a, t in ends[parent]]
                    self.assertTrue(ok_ends and min(ok_ends) <= at,
                                    f"{node} started before {parent} completed")
                    checked_order += 1

        # The gate's decision survived the crashes, and its children ran after it.
        gate = jobs[f"{GATED}.approval"]
        self.assertEqual(gate["state"], "COMPLETED")
        # No job that had COMPLETED ran again.
        completed = [n for n, j in jobs.items() if j["state"] == "COMPLETED" and n in starts]
        for node in completed:
            done_at = jobs[node]["finished_at"]
            self.assertEqual([t for _, t in starts[node] if t > done_at], [],
                             f"{node} ran again after it had completed")
            if exactly_once:
                self.assertEqual(len(ends[node]), 1, f"{node} completed {len(ends[node])} times")
        for node in FLAKY - below:
            self.assertEqual(jobs[node]["state"], "COMPLETED")
            if exactly_once:  # failed once (no end line), then succeeded
                self.assertEqual([a for a, _ in starts[node]], [1, 2])
                self.assertEqual([a for a, _ in ends[node]], [2])
        grown = [n for n in jobs if n.startswith("grown-")]
        self.assertEqual(len(grown), 5)
        for node in grown:
            self.assertEqual(jobs[node]["state"], "COMPLETED")
        print(f"\ncrash test: {len(jobs)} jobs, {len(completed)} completed, {len(below)} "
              f"cancelled below the DEAD job (none ran), {checked_order} parent/child orderings "
              f"checked, {sum(len(v) for v in starts.values())} starts in the journal, "
              f"gate decided, {len(grown)} grown jobs; exactly once: {exactly_once}")

    def test_master_killed_ten_times(self):
        self.run_with_crashes(kill_a_worker=False)

    def test_master_and_a_worker_killed(self):
        self.run_with_crashes(kill_a_worker=True)
