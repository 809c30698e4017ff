"""The master is kill -9'd again and again while a DAG runs; nothing is lost or run twice.

Every job journals (tests.acceptance.helpers.Journal) each start and each run to its end,
with its attempt, its worker and the time, so what really ran can be checked against what
the master says: each job that COMPLETED ran to its end exactly once.
"""
from __future__ import annotations

import os
import random
import signal
import sys
import tempfile
import time

from twisted.trial.unittest import SynchronousTestCase

from titan.sdk.pipeline import Pipeline
from titan.testing.cluster import Cluster
from tests.acceptance.helpers import ENDED, Journal, retrying, wait_for, wait_run_ended

WIDTH, LAYERS = 25, 20
DEAD_JOB = "L2-0"  # fails every time: its descendants must never run
FLAKY = {f"L{layer}-{i}" for layer in (1, 4, 8, 13) for i in (3, 11)}  # fail once
GATED = "L10-5"  # a gate is inserted after it
GROWER = "L5-3"  # adds five children while it runs

# What each job does (the journal's notes go around it): runs a little while, so that the
# kills find jobs running.
JOB = """\
sleep 0.$(( RANDOM % 3 + 1 ))$(( RANDOM % 10 ))
{fail}
"""

GROW = """\
import time
from titan.sdk import current_job
from titan.errors import RemoteError, TitanError

me = current_job()
kids = [{{"id": f"grown-{{i}}", "depends_on": [me.node],
          "command": {kid!r}}} for i in range(5)]
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
"""


def parents(node: str) -> list[str]:
    layer, i = (int(x) for x in node[1:].split("-"))
    if layer == 0:
        return []
    return sorted({f"L{layer - 1}-{i}", f"L{layer - 1}-{(i + 1) % WIDTH}"})


class CrashTests(SynchronousTestCase):
    def build(self, journal: Journal) -> Pipeline:
        p = Pipeline("crash", max_jobs=600)
        plain = journal.sh(JOB.format(fail=""))
        for layer in range(LAYERS):
            for i in range(WIDTH):
                node = f"L{layer}-{i}"
                if node == DEAD_JOB:
                    command, retries = journal.sh(JOB.format(fail="exit 3")), 1
                elif node in FLAKY:
                    command = journal.sh(JOB.format(
                        fail='if [ "$TITAN_ATTEMPT" = 1 ]; then exit 1; fi'))
                    retries = 2
                else:
                    command, retries = plain, 0
                deps = parents(node)
                if node == GROWER:
                    p.job(node, journal.sh([sys.executable, "-c", GROW.format(kid=plain)]),
                          depends_on=deps)
                else:
                    p.job(node, command, depends_on=deps, retries=retries,
                          hitl_message="Carry on?" if node == GATED else None)
        return p

    def run_with_crashes(self, kill_a_worker: bool) -> None:
        base = tempfile.mkdtemp(prefix="titan-crash-")
        journal = Journal(os.path.join(base, "journal"))
        # heartbeat_timeout: a registered worker tries to reconnect at least once per
        # heartbeat_interval (plus jitter), so the live one is never given up for lost while
        # the master restarts (it was, when its backoff could reach 6 s: the job it had
        # finished but not yet reported ran again).
        self.cluster = Cluster(base, workers=2, slots=4, heartbeat_interval=0.3,
                               heartbeat_timeout=4.0, fixed_port=True)
        self.addCleanup(self.cluster.stop)
        self.cluster.start()
        rng = random.Random(1128 + kill_a_worker)
        run_id = retrying(self.cluster, lambda c: c.submit(self.build(journal)))
        gate = f"{run_id}/{GATED}.approval"
        approved_at = None
        kills_while_running = 0
        killed: dict[str, float] = {}
        for crash in range(10):
            # Random kill timing is what this test is about: not a wait for anything.
            time.sleep(rng.uniform(0.2, 1.2))
            if retrying(self.cluster, lambda c: c.run(run_id, jobs=False))["state"] == "RUNNING":
                kills_while_running += 1
            self.cluster.kill_master(signal.SIGKILL)
            if kill_a_worker and crash == 4:
                self.cluster.kill_worker("w2", signal.SIGKILL)
                killed["w2"] = time.time()  # its jobs died with it (kill_worker reaped it)
                self.cluster.start_worker("w3")
            time.sleep(rng.uniform(0.0, 0.5))  # the master stays down a random while
            self.cluster.start_master()
            if approved_at is None and retrying(self.cluster, lambda c: c.job(gate))["state"] \
                    == "WAITING_APPROVAL":
                retrying(self.cluster, lambda c: c.approve(gate, "after a crash", by="crash-test"))
                approved_at = time.time()
        if approved_at is None:
            def waiting() -> bool:
                job = retrying(self.cluster, lambda c: c.job(gate))
                return job["state"] == "WAITING_APPROVAL" or job["state"] in ENDED and job
            found = wait_for(self, waiting, 120, "the gate to wait for approval")
            self.assertIs(found, True, f"the gate ended without a decision: {found}")
            retrying(self.cluster, lambda c: c.approve(gate, "after the crashes", by="crash-test"))
        run = retrying(self.cluster, lambda c: wait_run_ended(self, c, run_id, timeout=240),
                       timeout=300)
        self.assertEqual(kills_while_running, 10)
        self.check(run, journal, killed)

    def check(self, run: dict, journal: Journal, killed: dict[str, float]) -> None:
        jobs = {j["node"]: j for j in run["jobs"]}
        self.assertEqual(len(jobs), WIDTH * LAYERS + 1 + 5)  # + the gate, + grown jobs
        self.assertEqual({j["state"] for j in jobs.values()} - ENDED, set())
        starts = {n: journal.starts(j["job_id"]) for n, j in jobs.items()}
        ends = {n: journal.ends(j["job_id"]) for n, j in jobs.items()}

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
            if not job_starts:  # the gate, and the jobs below the DEAD one
                continue
            deps = parents(node) if node.startswith("L") else [GROWER]
            for start in job_starts:
                for parent in deps:
                    ok_ends = [e.at for e in ends[parent]]
                    self.assertTrue(ok_ends and min(ok_ends) <= start.at,
                                    f"{node} started before {parent} completed")
                    checked_order += 1

        # The gate's decision survived the crashes, and its children ran after it.
        self.assertEqual(jobs[f"{GATED}.approval"]["state"], "COMPLETED")
        # Every job that COMPLETED ran to its end once, in its last attempt, and never
        # again; no attempt started twice; none that did not complete ran to its end.
        # Only an attempt that ended on the killed worker before its kill may have gone
        # unreported, and so have run again.
        once = journal.check_exactly_once(
            self, [j for j in jobs.values() if j["kind"] != "gate"], killed)
        for node in FLAKY - below:
            self.assertEqual(jobs[node]["state"], "COMPLETED")
            if not killed:  # attempt 1 failed (no end line), then one succeeded; when
                # attempt 1's dispatch was taken back (recorded, not sent before a kill), the
                # job's only run is attempt 2, which succeeds at once
                first = starts[node][0].attempt
                self.assertEqual(len(starts[node]), 2 if first == 1 else 1, starts[node])
                self.assertEqual([e.attempt for e in ends[node]], [starts[node][-1].attempt])
        if not killed:  # no worker lost: a job that needed no retry started only once
            # (in attempt 1, or a later one: a dispatch the master recorded but had not sent
            # when it was killed is taken back when the worker says it never had it)
            for node, job in jobs.items():
                if job["state"] == "COMPLETED" and starts[node] and node not in FLAKY:
                    self.assertEqual(len(starts[node]), 1,
                                     f"{node} started again: {starts[node]}")
        grown = [n for n in jobs if n.startswith("grown-")]
        self.assertEqual(len(grown), 5)
        for node in grown:
            self.assertEqual(jobs[node]["state"], "COMPLETED")
        print(f"\ncrash test: {len(jobs)} jobs, {once['completed']} completed exactly once, "
              f"{len(below)} cancelled below the DEAD job (none ran), {checked_order} "
              f"parent/child orderings checked, {once['starts']} starts in the journal, "
              f"{once['lost with a worker']} ends lost with the killed worker, gate decided, "
              f"{len(grown)} grown jobs")

    def test_master_killed_ten_times(self):
        self.run_with_crashes(kill_a_worker=False)

    def test_master_and_a_worker_killed(self):
        self.run_with_crashes(kill_a_worker=True)
