"""Recovery: a master's log cut after any event, then the same workers' accounts.

A small DAG (a diamond a -> b, c -> d, then e; b fails once and retries) and a standalone
job run to the end on two workers.  The events the master would have appended are kept,
encoded as its log holds them.  For every cut k (the master died once record k was
durable), a fresh scheduler replays the first k records exactly as `MasterService._recover`
does (from the log alone, or from a snapshot taken half-way and the records after it),
records MasterRestarted, arms the timers its state implies; then the workers come back and
report what they really did, as `WorkerService.connected` does (attempts they run, ends not
yet acknowledged), and everything is driven to its end.  Each job must complete exactly
once: accepted once, run to exit 0 once, never dispatched after it did, never left behind.
The workers' accounts vary (CutEveryEventTests): all acknowledged, every end said again,
running attempts ended meanwhile, DISPATCHes that never left, a worker that never returns,
a log that lost its last record (fsync everysec), and a second crash after the first.

The workers are simulated (`FakeWorker`): they run what DISPATCH decisions send them, stop
what KILL decisions name, and end attempts with scripted exit codes, so "what they really
did" does not come from the scheduler under test.

Then the master's handling of a restart case by case (RestartTests, RepeatedReportTests),
and the master service itself stopped and started on its data dir (MasterRestartTests).
"""
from __future__ import annotations

import collections
from typing import Callable, Optional

import msgpack
from twisted.internet.testing import MemoryReactorClock
from twisted.trial.unittest import SynchronousTestCase

from titan.core import events as ev
from titan.core.codec import decode_events, encode_event, persisted
from titan.core.dag import parse_dag
from titan.core.model import JobState, RunState, WorkerState
from titan.core.scheduler import pending_timers, restore, snapshot
from titan.config import Config, MasterConfig, PersistenceConfig
from titan.master.service import MasterService
from titan.persistence.aof import LogFile
from titan.protocols.opcodes import Op
from tests.unit.test_master import TOKEN, Peer
from tests.unit.test_scheduler import Harness, dispatched, kills

RUN = "dia-1"
DAG = {"name": "dia", "jobs": [
    {"id": "a", "command": ["true"]},
    {"id": "b", "command": ["true"], "depends_on": ["a"], "retries": 1},
    {"id": "c", "command": ["true"], "depends_on": ["a"]},
    {"id": "d", "command": ["true"], "depends_on": ["b", "c"]},
    {"id": "e", "command": ["true"], "depends_on": ["d"]},
]}
JOBS = [f"{RUN}/{n}" for n in "abcde"] + ["s"]
WORKERS = ("w1", "w2")
OPTIONS = dict(heartbeat_timeout=10.0, backoff_base=1.0, backoff_cap=1.0)
OUTAGE = 3.0  # seconds the master is down
RECONNECT = 1.0  # seconds after the restart that the workers are back


def exit_code(job_id: str, attempt: int) -> int:
    """What an attempt's process exits with: b's first attempt fails, all else succeeds."""
    return 1 if (job_id, attempt) == (f"{RUN}/b", 1) else 0


class FakeWorker:
    """What a worker process holds: attempts running, finished attempts reported."""

    def __init__(self, worker_id: str, slots: int = 1) -> None:
        self.worker_id = worker_id
        self.slots = slots
        self.running: dict[str, int] = {}  # job -> attempt, in the order they started
        self.finished: list[ev.JobReport] = []  # every attempt it ended, in order
        self.outbox: list[ev.JobReport] = []  # ended (killed), not yet told to the master
        self.last_started: set[tuple[str, int]] = set()  # by the master's last record

    def copy(self) -> "FakeWorker":
        other = FakeWorker(self.worker_id, self.slots)
        other.running = dict(self.running)
        other.finished = list(self.finished)
        other.last_started = set(self.last_started)
        return other

    def joined(self, running=(), finished=()) -> ev.WorkerJoined:
        """The REGISTER a worker sends, as the master turns it into an event."""
        return ev.WorkerJoined(worker_id=self.worker_id, name=f"name-{self.worker_id}",
                               host="127.0.0.1", tags=frozenset(), slots=self.slots,
                               running=tuple(running), finished=tuple(finished))


class World:
    """A scheduler (in a Harness, whose clock fires its timers and ticks) and the workers
    it talks to.  Every event applied goes through `_apply`: the persisted ones are kept as
    log records, and the decisions are carried out at once to the fake workers."""

    def __init__(self, h: Harness, workers: dict[str, FakeWorker], label: str = "") -> None:
        self.h = h
        self.workers = workers
        self.connected: set[str] = set()
        self.label = label
        self.records: list[bytes] = []
        # [k - 1]: the state once record k is applied; the workers then (what they run and
        # what they ended); the completions announced so far.
        self.snapshots: list[bytes] = []
        self.truth: list[dict[str, FakeWorker]] = []
        self.successes: collections.Counter = collections.Counter()  # job -> exits 0
        self.executions: collections.Counter = collections.Counter()  # (job, attempt) -> runs
        self.completions: collections.Counter = collections.Counter()  # JobEnded COMPLETED
        self.completions_at: list[collections.Counter] = []
        self.violations: list[str] = []
        self.said: dict = {}  # after a restart: what each worker said when it came back
        self.withheld = 0  # attempts dispatched whose frames never left (or that died)
        self._real_apply = h.s.apply
        h.s.apply = self._apply

    def _apply(self, event, now):
        if persisted(event):
            for w in self.workers.values():
                w.last_started.clear()
        out = self._real_apply(event, now)
        for d in out:
            if isinstance(d, ev.Dispatch):
                self._dispatch(d)
            elif isinstance(d, ev.Kill):
                w = self.workers.get(d.worker_id)
                if w is not None and d.worker_id in self.connected \
                        and w.running.get(d.job_id) == d.attempt:
                    del w.running[d.job_id]
                    report = ev.JobReport(d.job_id, d.attempt, None, f"killed: {d.reason}")
                    w.finished.append(report)
                    w.outbox.append(report)
            elif isinstance(d, ev.JobEnded) and d.state is JobState.COMPLETED:
                self.completions[d.job_id] += 1
        if persisted(event):
            self.records.append(encode_event(event, now))
            self.snapshots.append(msgpack.packb(snapshot(self.h.s), use_bin_type=True))
            self.truth.append({k: w.copy() for k, w in self.workers.items()})
            self.completions_at.append(collections.Counter(self.completions))
        return out

    def _dispatch(self, d: ev.Dispatch) -> None:
        if self.successes[d.job_id]:
            self.violations.append(
                f"{self.label}: DISPATCH of {d.job_id} attempt {d.attempt} to {d.worker_id}, "
                f"but the job already ran to exit 0 (the master has it "
                f"{self.h.s.jobs[d.job_id].state.value})")
        w = self.workers.get(d.worker_id)
        if w is None or d.worker_id not in self.connected:
            return  # the frame has no connection to go on
        if len(w.running) >= w.slots:
            self.violations.append(f"{self.label}: DISPATCH of {d.job_id} to {d.worker_id}, "
                                   f"whose slots are all taken ({sorted(w.running)})")
        w.running[d.job_id] = d.attempt
        w.last_started.add((d.job_id, d.attempt))
        self.executions[(d.job_id, d.attempt)] += 1

    # -- what the world does -------------------------------------------------------------

    def join(self, worker_id: str, running=(), finished=()) -> None:
        self.connected.add(worker_id)
        self.h.apply(self.workers[worker_id].joined(running, finished))

    def end_one(self) -> bool:
        """The oldest attempt still running ends with its scripted exit code (and is
        reported at once); or a killed attempt's report goes.  False if nothing ran."""
        for worker_id in sorted(self.connected):
            w = self.workers[worker_id]
            if w.outbox:
                r = w.outbox.pop(0)
                self.h.apply(ev.JobFinished(r.job_id, worker_id, r.attempt, r.exit_code,
                                            r.reason))
                return True
        for worker_id in sorted(self.connected):
            w = self.workers[worker_id]
            if w.running:
                job_id, attempt = next(iter(w.running.items()))
                self.end(w, job_id, attempt)
                self.h.apply(ev.JobFinished(job_id, worker_id, attempt,
                                            exit_code(job_id, attempt)))
                return True
        return False

    def end(self, w: FakeWorker, job_id: str, attempt: int) -> ev.JobReport:
        """`w`'s attempt of `job_id` exits (told to the master or not: the caller says)."""
        del w.running[job_id]
        code = exit_code(job_id, attempt)
        if code == 0:
            self.successes[job_id] += 1
        report = ev.JobReport(job_id, attempt, code)
        w.finished.append(report)
        return report

    def drive(self, limit: float = 60.0) -> None:
        """Run until every job has ended: attempts end one by one; when none runs, time
        passes (timers, ticks) with the connected workers beating."""
        start = self.h.clock.seconds()
        for _ in range(1000):
            if self.end_one():
                continue
            if all(j.state.terminal for j in self.h.s.jobs.values()) and self.h.s.jobs:
                return
            if self.h.clock.seconds() - start > limit:
                return
            self.h.advance(1.0, beating=sorted(self.connected))


def live_world() -> World:
    """The run without a crash: w1 joins, the DAG and `s` are submitted, w2 joins."""
    h = Harness(**OPTIONS)
    world = World(h, {w: FakeWorker(w) for w in WORKERS}, "live")
    world.join("w1")
    h.clock.advance(0.5)
    h.apply(ev.DagSubmitted(RUN, parse_dag(DAG)))
    h.submit("s")
    h.clock.advance(0.5)
    world.join("w2")
    world.drive()
    return world


class LiveRunTests(SynchronousTestCase):
    """The run the cuts are taken from is what it should be (else they prove nothing)."""

    def test_the_live_run(self):
        world = live_world()
        s = world.h.s
        self.assertEqual({j: s.jobs[j].state for j in JOBS},
                         dict.fromkeys(JOBS, JobState.COMPLETED))
        self.assertEqual(s.runs[RUN].state, RunState.COMPLETED)
        self.assertEqual(s.jobs[f"{RUN}/b"].failures, 1)
        self.assertEqual(world.successes, collections.Counter(JOBS))
        self.assertEqual(world.violations, [])
        kinds = [type(e).__name__ for _, e in decode_events(world.records)]
        # Both workers, a retry's timer, and every kind of end (b: a failure first).
        self.assertEqual(collections.Counter(kinds), collections.Counter(
            WorkerJoined=2, DagSubmitted=1, JobSubmitted=1, JobFinished=7, TimerFired=1))
        self.assertTrue(any(len(w.running) for t in world.truth for w in t.values()
                            if w.worker_id == "w2"))


# -- recovery --------------------------------------------------------------------------------

def recover(records: list[bytes], snap: Optional[bytes], workers: dict[str, FakeWorker],
            label: str, completions: collections.Counter) -> World:
    """A master that died once `records` were durable (after `snap`, if given), started
    again: what `MasterService._recover` does.  `completions`: those announced before."""
    h = Harness(**OPTIONS)
    if records:
        h.clock.advance(decode_at(records[-1]) + OUTAGE)
    if snap is not None:
        restore(h.s, msgpack.unpackb(snap, raw=False, strict_map_key=False))
    count = h.s.replay(decode_events(records))
    world = World(h, workers, label)
    world.completions.update(completions)
    if snap is not None or count:
        h.apply(ev.MasterRestarted())
    arm_pending_timers(h)
    h.start_ticking()
    return world


def arm_pending_timers(h: Harness) -> None:
    """What the master does after a replay: arm the timers the recovered state holds."""
    for timer in pending_timers(h.s):
        h.timers[timer.key] = h.clock.callLater(
            max(0.0, timer.at - h.clock.seconds()), h._fire, timer.key)


def decode_at(record: bytes) -> float:
    [(at, _)] = list(decode_events([record]))
    return at


def submitted(live: World, k: int) -> list[str]:
    """The jobs whose submission is among the first k records (their clients were told)."""
    out = []
    for _, e in decode_events(live.records[:k]):
        if isinstance(e, ev.DagSubmitted):
            out += [f"{e.run_id}/{spec.job_id}" for spec in e.template.specs]
        elif isinstance(e, ev.JobSubmitted):
            out.append(e.spec.job_id)
    return out


# Each returns, for the workers of the recovered `world` (as they were at the crash), the
# ones that come back and what each says: worker id -> (running reports, finished reports).
# An attempt that ends while the master is down counts as run in `world`.
def acknowledged(world: World) -> dict:
    """Every report was acknowledged: the workers say what they run."""
    return {w.worker_id: ([ev.JobReport(j, a) for j, a in w.running.items()], [])
            for w in world.workers.values()}


def unacknowledged(world: World) -> dict:
    """No acknowledgement reached them: every end they ever reported is said again."""
    return {w.worker_id: ([ev.JobReport(j, a) for j, a in w.running.items()],
                          list(w.finished)) for w in world.workers.values()}


def ended_meanwhile(world: World) -> dict:
    """What ran at the crash ended while the master was down (kept until acknowledged)."""
    out = {}
    for w in world.workers.values():
        ended = [world.end(w, j, a) for j, a in list(w.running.items())]
        out[w.worker_id] = ([], ended)
    return out


def undelivered(world: World) -> dict:
    """The DISPATCH frames decided by the last record never left (they wait for its
    barrier): the attempts started by it are not there."""
    out = {}
    for w in world.workers.values():
        for job_id, attempt in list(w.running.items()):
            if (job_id, attempt) in w.last_started:
                del w.running[job_id]
                world.executions[(job_id, attempt)] -= 1
                world.withheld += 1
        out[w.worker_id] = ([ev.JobReport(j, a) for j, a in w.running.items()], [])
    return out


def w2_never_returns(world: World) -> dict:
    """w2's machine is gone (its attempts with it); w1 comes back."""
    world.withheld = len(world.workers["w2"].running)
    world.workers["w2"].running.clear()  # its attempts died with it
    w1 = world.workers["w1"]
    return {"w1": ([ev.JobReport(j, a) for j, a in w1.running.items()], [])}


VARIANTS: dict[str, Callable] = {
    "acknowledged": acknowledged, "unacknowledged": unacknowledged,
    "ended-meanwhile": ended_meanwhile, "undelivered": undelivered,
    "w2-never-returns": w2_never_returns,
}


class CutEveryEventTests(SynchronousTestCase):
    """The required property: for every cut, every job completes exactly once."""

    live: Optional[World] = None

    def setUp(self) -> None:
        if CutEveryEventTests.live is None:
            CutEveryEventTests.live = live_world()
        self.live = CutEveryEventTests.live
        self.worlds: list[World] = []

    def reported(self, running: bool = False, code: Optional[int] = None) -> int:
        """In how many of the cuts tried some worker came back saying an attempt runs
        (`running`), or saying an attempt ended with exit `code`: a variant that never says
        anything proves nothing."""
        n = 0
        for world in self.worlds:
            said = list(world.said.values())
            if running and any(r for r, _ in said) or code is not None and any(
                    f.exit_code == code for _, fs in said for f in fs):
                n += 1
        return n

    @staticmethod
    def lost(world: World, worker_id: str) -> bool:
        """Did the restarted master give `worker_id` up (no heartbeat)?"""
        return any(isinstance(d, ev.Propose) and isinstance(d.event, ev.WorkerLost)
                   and d.event.worker_id == worker_id for d in world.h.log)

    def crash(self, k: int, variant: str, from_snapshot: bool = False,
              truth_at: Optional[int] = None,
              unacked: Optional[ev.JobFinished] = None,
              busy_first: bool = False) -> tuple[World, str]:
        """Cut the live log after record k (with `from_snapshot`: as compacted after
        record k // 2), let the workers come back as `variant` says (their state being the
        truth after record `truth_at`, k by default; `unacked`: an end its worker still
        holds and says, whatever the variant; `busy_first`: the workers that run something
        reconnect first, else in id order), drive to the end."""
        live = self.live
        t = k if truth_at is None else truth_at
        label = (f"cut k={k} of {len(live.records)} ({variant}"
                 f"{', from a snapshot' if from_snapshot else ''}"
                 f"{', busy workers first' if busy_first else ''}"
                 f"{f', workers at record {t}' if t != k else ''})")
        records, snap = live.records[:k], None
        if from_snapshot and k >= 2:
            snap, records = live.snapshots[k // 2 - 1], records[k // 2:]
        truth = live.truth[t - 1] if t else {}
        before = live.completions_at[k - 1] if k else collections.Counter()
        world = self.restart(records, snap, truth, before, variant, label, unacked,
                             busy_first)
        return world, label

    def restart(self, records: list[bytes], snap: Optional[bytes],
                truth: dict[str, FakeWorker], before: collections.Counter, variant: str,
                label: str, unacked: Optional[ev.JobFinished] = None,
                busy_first: bool = False) -> World:
        """Recover from `records` (after `snap`), the workers being as `truth` has them,
        and drive to the end.  `before`: the completions announced before the crash."""
        workers = {w: truth[w].copy() if w in truth else FakeWorker(w) for w in WORKERS}
        started = {w: set(workers[w].last_started) for w in WORKERS}
        world = recover(records, snap, workers, label, before)
        for w in WORKERS:  # as at the crash (the restart's own record cleared them)
            workers[w].last_started = started[w]
        # What ran before the crash counts as run (it is in the truth, not in this world).
        for w in workers.values():
            for r in w.finished:
                world.executions[(r.job_id, r.attempt)] += 1
                if r.exit_code == 0 and r.reason is None:
                    world.successes[r.job_id] += 1
            for j, a in w.running.items():
                world.executions[(j, a)] += 1
        said = VARIANTS[variant](world)
        world.h.advance(RECONNECT)
        if unacked is not None:
            report = ev.JobReport(unacked.job_id, unacked.attempt, unacked.exit_code,
                                  unacked.reason)
            running, finished = said[unacked.worker_id]
            if report not in finished:
                said[unacked.worker_id] = (running, finished + [report])
        order = sorted(said.items(), key=lambda item: (busy_first and not item[1][0], item[0]))
        for worker_id, (running, finished) in order:
            world.join(worker_id, running, finished)
        world.said = said
        world.drive()
        self.worlds.append(world)
        return world

    def problems(self, world: World, label: str, jobs: list[str],
                 same_attempt_twice: bool = False) -> list[str]:
        """What went wrong after this cut, each saying the cut, the job and its state.
        `same_attempt_twice`: an attempt may have run on two workers (only one counting)."""
        s = world.h.s
        problems = list(world.violations)
        for job_id in jobs:
            job = s.jobs.get(job_id)
            state = job.state.value if job else "unknown to the master"
            if job is None or job.state is not JobState.COMPLETED:
                problems.append(f"{label}: job {job_id} ended {state}, not COMPLETED"
                                + (f" ({job.reason})" if job and job.reason else ""))
            if world.completions[job_id] != 1:
                problems.append(f"{label}: job {job_id} ({state}): the master accepted "
                                f"{world.completions[job_id]} completions, not 1")
            if world.successes[job_id] != 1:
                problems.append(f"{label}: job {job_id} ({state}) ran to exit 0 "
                                f"{world.successes[job_id]} times, not once")
        for (job_id, attempt), n in sorted(world.executions.items()):
            if n > 1 and not same_attempt_twice:
                problems.append(f"{label}: job {job_id} attempt {attempt} ran {n} times")
        if any(j.startswith(RUN + "/") for j in jobs):
            run = s.runs.get(RUN)
            if run is None or run.state is not RunState.COMPLETED:
                problems.append(f"{label}: run {RUN} is "
                                f"{run.state.value if run else 'unknown'}, not COMPLETED")
        for w in world.workers.values():
            if w.worker_id in world.connected and w.running:
                problems.append(f"{label}: {w.worker_id} still runs {w.running}")
        return problems

    def assertNoProblems(self, problems: list[str]) -> None:
        self.assertEqual(problems, [], "\n" + "\n".join(problems))

    def every_cut(self, variant: str, from_snapshot: bool = False) -> None:
        problems: list[str] = []
        for k in range(len(self.live.records) + 1):
            world, label = self.crash(k, variant, from_snapshot)
            problems += self.problems(world, label, submitted(self.live, k))
        self.assertNoProblems(problems)

    def test_acknowledged(self):
        self.every_cut("acknowledged")
        self.assertGreaterEqual(self.reported(running=True), 8)

    def test_acknowledged_from_a_snapshot(self):
        self.every_cut("acknowledged", from_snapshot=True)

    def test_reports_said_again(self):
        self.every_cut("unacknowledged")
        self.assertGreaterEqual(self.reported(code=1), 6)  # b's failure said again
        self.assertGreaterEqual(self.reported(code=0), 8)

    def test_reports_said_again_from_a_snapshot(self):
        self.every_cut("unacknowledged", from_snapshot=True)

    def test_running_attempts_ended_while_the_master_was_down(self):
        self.every_cut("ended-meanwhile")
        self.assertGreaterEqual(self.reported(code=1), 1)
        self.assertGreaterEqual(self.reported(code=0), 8)

    def test_dispatches_that_never_left(self):
        self.every_cut("undelivered")
        self.assertGreaterEqual(sum(1 for world in self.worlds if world.withheld), 6)

    def test_a_worker_that_never_returns(self):
        self.every_cut("w2-never-returns")
        # Given up whenever it had jobs at the crash (they then ran on w1).
        busy = [world for world in self.worlds if world.withheld]
        self.assertGreaterEqual(len(busy), 4)
        self.assertEqual([world.label for world in busy if not self.lost(world, "w2")], [])

    def test_the_log_lost_its_last_record(self):
        """A machine crash under `fsync: everysec`: the workers acted on record k + 1 (a
        DISPATCH it decided went out), but the log holds k records (docs/semantics.md,
        "Recovery also adopts the next attempt").  Only records the workers cause (an end,
        a retry's timer): a lost submission was never answered, and its jobs are rightly
        unknown.  A lost end is one its worker still holds: one it dropped on an
        acknowledgement is lost with the log, and the job runs again (not promised).
        The worker that acted on the lost record reconnects first: if another one does, it
        may be given the attempt the log has waiting, which then runs on both with one
        number and only the first result counts (documented there); that order is checked
        for exactly-once completion only."""
        problems: list[str] = []
        tried = 0
        for k in range(len(self.live.records)):
            [(_, lost)] = list(decode_events([self.live.records[k]]))
            if not isinstance(lost, (ev.JobFinished, ev.TimerFired)):
                continue
            for variant in ("acknowledged", "unacknowledged"):
                for busy_first in (True, False):
                    world, label = self.crash(
                        k, variant, truth_at=k + 1, busy_first=busy_first,
                        unacked=lost if isinstance(lost, ev.JobFinished) else None)
                    problems += self.problems(world, label, submitted(self.live, k),
                                              same_attempt_twice=not busy_first)
                    tried += 1
        self.assertNoProblems(problems)
        self.assertEqual(tried, 4 * 8)  # 7 ends and a timer

    def test_a_second_crash_at_every_record_after_the_first(self):
        """The log of a recovered master holds MasterRestarted and the workers' accounts
        (WorkerJoined with running and finished reports): after a first crash at every
        cut (the workers saying every end again), a second one at every record that
        followed, the workers saying every end again once more, or nothing they were
        acknowledged for (the log must then hold what they said the first time)."""
        live = self.live
        problems: list[str] = []
        tried = 0
        for k in range(1, len(live.records) + 1):
            first, label = self.crash(k, "unacknowledged")
            problems += self.problems(first, label, submitted(live, k))
            for m in range(1, len(first.records) + 1):
                for variant in ("acknowledged", "unacknowledged"):
                    again = (f"{label}, then cut m={m} of {len(first.records)} after the "
                             f"restart ({variant})")
                    world = self.restart(live.records[:k] + first.records[:m], None,
                                         first.truth[m - 1], first.completions_at[m - 1],
                                         variant, again)
                    problems += self.problems(world, again, submitted(live, k))
                    tried += 1
        self.assertNoProblems(problems)
        self.assertGreater(tried, 6 * len(live.records))


# -- the master's handling of a restart, case by case ------------------------------------------

def restarted(h: Harness, log: list, outage: float = OUTAGE) -> Harness:
    """A fresh core from what `h.recording()` saw, as `MasterService._recover` builds it:
    the persisted events only, through the codec, then MasterRestarted and the timers its
    state implies; the master's ticker runs."""
    records = [encode_event(e, at) for e, at in log if persisted(e)]
    fresh = Harness(**OPTIONS)
    fresh.clock.advance(h.clock.seconds() + outage)
    if fresh.s.replay(decode_events(records)):
        fresh.apply(ev.MasterRestarted())
    arm_pending_timers(fresh)
    fresh.start_ticking()
    return fresh


def ended(decisions, job_id: str) -> list:
    return [d.state for d in decisions if isinstance(d, ev.JobEnded) and d.job_id == job_id]


class RepeatedReportTests(SynchronousTestCase):
    """A worker keeps a report until the master acknowledges it, so the master may hear it
    twice (the acknowledgement lost with a connection or a master): it counts once."""

    def test_a_failure_said_again_after_a_restart_is_one_failure(self):
        """Found by the cuts above: b's first attempt failed and was recorded, the master
        died before acknowledging it; after the restart b's retry waits in the queue (no
        worker back yet) and the repeated report was taken for the end of an attempt given
        up for lost: a second failure, DEAD with a retry left."""
        h = Harness(**OPTIONS)
        log = h.recording()
        h.join("w1")
        h.submit("b", retries=1)
        h.finish("b", exit_code=1)
        r = restarted(h, log)
        r.advance(RECONNECT)  # the retry's timer fires: b is queued, no worker to take it
        self.assertEqual((r.state("b"), r.job("b").queued, r.job("b").failures),
                         (JobState.PENDING, True, 1))
        out = r.join("w1", finished=[ev.JobReport("b", 1, 1)])
        self.assertEqual((r.state("b"), r.job("b").failures), (JobState.RUNNING, 1))
        self.assertEqual((dispatched(out), ended(out, "b")), ([("b", "w1", 2)], []))
        r.finish("b")
        self.assertEqual(r.state("b"), JobState.COMPLETED)

    def test_an_end_said_again_counts_once_in_the_workers_completed(self):
        """`completed` (titan workers, and the least-loaded tie-break) counts the attempts a
        worker ran to their end: an end said again on each reconnect is one."""
        h = Harness(**OPTIONS)
        h.join("w1")
        h.submit("a")
        h.finish("a")
        self.assertEqual(h.s.workers["w1"].completed, 1)
        for _ in range(2):  # the acknowledgement was lost twice
            h.disconnect("w1")
            h.join("w1", finished=[ev.JobReport("a", 1, 0)])
        self.assertEqual((h.state("a"), h.s.workers["w1"].completed, h.s.workers["w1"].running),
                         (JobState.COMPLETED, 1, set()))

    def test_a_late_failure_said_again_is_one_failure(self):
        """The end of an attempt given up for lost counts once it comes (the job had not run
        again); said again on a later reconnect, it is stale."""
        h = Harness(**OPTIONS)
        h.start_ticking()
        h.join("w1")
        h.join("w2")
        h.submit("x")  # keeps w1 busy
        h.submit("b", retries=1)
        self.assertEqual(h.job("b").worker_id, "w2")
        h.advance(11.0, beating=["w1"])  # w2 is lost: b waits to run again
        self.assertEqual((h.state("b"), h.job("b").queued, h.s.workers.get("w2")),
                         (JobState.PENDING, True, None))
        h.join("w2", finished=[ev.JobReport("b", 1, 1)])  # it had failed: that counts
        self.assertEqual((h.state("b"), h.job("b").failures), (JobState.PENDING, 1))
        h.disconnect("w2")  # before the acknowledgement
        h.advance(1.0, beating=["w1"])  # the retry is due: queued, w1 is busy
        self.assertEqual((h.state("b"), h.job("b").queued), (JobState.PENDING, True))
        out = h.join("w2", finished=[ev.JobReport("b", 1, 1)])
        self.assertEqual((h.state("b"), h.job("b").failures), (JobState.RUNNING, 1))
        self.assertEqual(dispatched(out), [("b", "w2", 2)])

    def test_the_late_end_of_a_lost_retry_counts(self):
        """A requeued attempt has not ended, even if an earlier attempt of the job had: the
        late end of the lost one counts (and the job does not run a third time)."""
        h = Harness(**OPTIONS)
        h.start_ticking()
        h.join("w1")
        h.join("w2")
        h.submit("x")  # keeps w1 busy
        h.submit("b", retries=1)
        h.finish("b", exit_code=1)
        h.advance(1.0, beating=["w1", "w2"])
        self.assertEqual((h.state("b"), h.job("b").worker_id, h.job("b").attempt),
                         (JobState.RUNNING, "w2", 2))
        h.advance(11.0, beating=["w1"])  # w2 is lost with attempt 2
        self.assertEqual((h.state("b"), h.job("b").queued), (JobState.PENDING, True))
        out = h.join("w2", finished=[ev.JobReport("b", 2, 0)])
        self.assertEqual((h.state("b"), h.job("b").attempt), (JobState.COMPLETED, 2))
        self.assertEqual((dispatched(out), ended(out, "b")), ([], [JobState.COMPLETED]))

    def test_an_end_said_again_counts_once(self):
        """A's end was recorded and b was let go; the report comes again on two reconnects
        and after a restart: a stays COMPLETED, announced once; b is not dispatched again."""
        h = Harness(**OPTIONS)
        log = h.recording()
        h.join("w1")
        h.apply(ev.DagSubmitted("d-1", parse_dag(
            {"name": "d", "jobs": [{"id": "a", "command": ["true"]},
                                   {"id": "b", "command": ["true"], "depends_on": ["a"]}]})))
        first = h.finish("d-1/a")
        self.assertEqual((ended(first, "d-1/a"), dispatched(first)),
                         ([JobState.COMPLETED], [("d-1/b", "w1", 1)]))
        again = ev.JobReport("d-1/a", 1, 0)
        for _ in range(2):
            h.disconnect("w1")
            out = h.join("w1", running=[ev.JobReport("d-1/b", 1)], finished=[again])
            self.assertEqual((ended(out, "d-1/a"), dispatched(out), kills(out)), ([], [], []))
            self.assertEqual((h.state("d-1/b"), h.job("d-1/b").parents_left),
                             (JobState.RUNNING, 0))
        r = restarted(h, log)
        out = r.join("w1", running=[ev.JobReport("d-1/b", 1)], finished=[again])
        self.assertEqual((ended(out, "d-1/a"), dispatched(out), kills(out)), ([], [], []))
        self.assertEqual((r.state("d-1/a"), r.state("d-1/b"), r.job("d-1/b").attempt),
                         (JobState.COMPLETED, JobState.RUNNING, 1))
        self.assertEqual(r.s.runs["d-1"].counts[JobState.COMPLETED], 1)
        out = r.finish("d-1/b")
        self.assertEqual(ended(out, "d-1/b"), [JobState.COMPLETED])
        self.assertEqual(r.s.runs["d-1"].state, RunState.COMPLETED)


class RestartTests(SynchronousTestCase):
    """What a restarted master makes of each account a returning worker can give of a job
    the log has RUNNING on it: ended, still running, or nothing (the worker restarted)."""

    def crashed(self, **b_options) -> tuple[Harness, list]:
        """w1 runs d-1/a (the parent of d-1/c), w2 runs b; then the master dies."""
        h = Harness(**OPTIONS)
        log = h.recording()
        h.join("w1")
        h.apply(ev.DagSubmitted("d-1", parse_dag(
            {"name": "d", "jobs": [{"id": "a", "command": ["true"]},
                                   {"id": "c", "command": ["true"], "depends_on": ["a"]}]})))
        h.join("w2")
        h.submit("b", **b_options)
        self.assertEqual({j: (h.job(j).worker_id, h.job(j).attempt) for j in ("d-1/a", "b")},
                         {"d-1/a": ("w1", 1), "b": ("w2", 1)})
        return h, log

    def test_the_workers_are_disconnected_and_their_jobs_still_running(self):
        h, log = self.crashed()
        r = restarted(h, log)
        changes = [(d.worker_id, d.state, d.reason) for d in r.log
                   if isinstance(d, ev.WorkerChanged)]
        self.assertEqual(changes, [("w1", WorkerState.DISCONNECTED, "master restarted"),
                                   ("w2", WorkerState.DISCONNECTED, "master restarted")])
        self.assertEqual({j: (r.state(j), r.job(j).worker_id) for j in ("d-1/a", "b")},
                         {"d-1/a": (JobState.RUNNING, "w1"), "b": (JobState.RUNNING, "w2")})
        self.assertEqual(r.waiting("d-1/c"), "waiting for a")

    def test_reported_finished(self):
        h, log = self.crashed()
        r = restarted(h, log)
        out = r.join("w1", finished=[ev.JobReport("d-1/a", 1, 0)])
        self.assertEqual(ended(out, "d-1/a"), [JobState.COMPLETED])
        self.assertEqual(dispatched(out), [("d-1/c", "w1", 1)])  # the child, not a again
        self.assertEqual(r.s.workers["w1"].completed, 1)
        out = r.join("w2", finished=[ev.JobReport("b", 1, 0)])
        self.assertEqual((ended(out, "b"), dispatched(out)), ([JobState.COMPLETED], []))

    def test_reported_failed(self):
        h, log = self.crashed(retries=1)
        r = restarted(h, log)
        out = r.join("w1", finished=[ev.JobReport("d-1/a", 1, 2)])
        self.assertEqual((r.state("d-1/a"), r.state("d-1/c"), r.job("d-1/c").reason),
                         (JobState.FAILED, JobState.CANCELLED, "cancelled: a FAILED"))
        self.assertEqual(r.s.runs["d-1"].state, RunState.FAILED)
        out = r.join("w2", finished=[ev.JobReport("b", 1, 1)])
        self.assertEqual((r.state("b"), r.job("b").failures, r.job("b").reason, dispatched(out)),
                         (JobState.PENDING, 1, "exit 1", []))  # a retry, after its backoff
        r.advance(1.0, beating=["w1", "w2"])
        self.assertEqual((r.state("b"), r.job("b").attempt), (JobState.RUNNING, 2))

    def test_reported_running(self):
        h, log = self.crashed()
        r = restarted(h, log)
        out = r.join("w1", running=[ev.JobReport("d-1/a", 1)])
        self.assertEqual((dispatched(out), kills(out)), ([], []))
        self.assertEqual((r.state("d-1/a"), r.job("d-1/a").worker_id, r.job("d-1/a").attempt),
                         (JobState.RUNNING, "w1", 1))
        self.assertEqual(r.running_on("w1"), {"d-1/a"})
        r.submit("z")  # w1's one slot is a's
        self.assertEqual((r.state("z"), r.waiting("z")),
                         (JobState.PENDING, "waiting for a free slot"))
        out = r.finish("d-1/a")
        self.assertEqual(dispatched(out), [("d-1/c", "w1", 1)])

    def test_reported_neither(self):
        """The worker restarted too: what the log has running there runs again, with the
        next attempt number and no retry spent."""
        h, log = self.crashed()
        r = restarted(h, log)
        out = r.join("w1")
        self.assertEqual(dispatched(out), [("d-1/a", "w1", 2)])
        self.assertEqual((r.job("d-1/a").failures, r.job("d-1/a").reason),
                         (0, "its worker no longer had it"))

    def test_a_job_the_log_does_not_have_is_stopped(self):
        """Its submission was lost with the crash (its client got no id): stopped."""
        h, log = self.crashed()
        r = restarted(h, log)
        out = r.join("w1", running=[ev.JobReport("d-1/a", 1), ev.JobReport("ghost", 1)])
        self.assertEqual([(d.job_id, d.attempt, d.reason) for d in out if isinstance(d, ev.Kill)],
                         [("ghost", 1, "unknown to the master")])
        self.assertEqual(r.state("d-1/a"), JobState.RUNNING)

    def test_a_worker_that_never_returns(self):
        """Each worker gets a full heartbeat timeout from the restart, however long the
        master was down; then its jobs run elsewhere, no retry spent."""
        h, log = self.crashed()
        r = restarted(h, log, outage=30.0)  # longer than the timeout
        r.join("w1", running=[ev.JobReport("d-1/a", 1)])
        r.advance(9.0, beating=["w1"])
        w2 = r.s.workers.get("w2")
        self.assertEqual((r.state("b"), w2.state if w2 else "given up already"),
                         (JobState.RUNNING, WorkerState.DISCONNECTED))
        r.advance(2.0, beating=["w1"])
        self.assertNotIn("w2", r.s.workers)
        self.assertEqual((r.state("b"), r.job("b").reason, r.job("b").failures),
                         (JobState.PENDING, "worker name-w2 lost: no heartbeat for 11.0s", 0))
        self.assertEqual(dispatched(r.finish("d-1/a")), [("d-1/c", "w1", 1)])  # older
        self.assertEqual(dispatched(r.finish("d-1/c")), [("b", "w1", 2)])
        r.finish("b")
        self.assertEqual((r.state("b"), r.job("b").attempt), (JobState.COMPLETED, 2))

    def test_a_worker_back_after_its_jobs_were_given_up(self):
        """Lost, then back with b's end while b still waits to run again: the end counts."""
        h, log = self.crashed()
        r = restarted(h, log)
        r.join("w1", running=[ev.JobReport("d-1/a", 1)])
        r.advance(11.0, beating=["w1"])
        self.assertEqual((r.state("b"), r.job("b").queued), (JobState.PENDING, True))
        out = r.join("w2", finished=[ev.JobReport("b", 1, 0)])
        self.assertEqual((ended(out, "b"), dispatched(out)), ([JobState.COMPLETED], []))
        self.assertEqual(r.job("b").attempt, 1)


class MasterRestartTests(SynchronousTestCase):
    """The master service itself stopped and started again on its data dir (in-process, a
    memory reactor): `_recover` replays its log, records MasterRestarted, and a worker's
    REGISTER (its running and finished jobs, as `WorkerService.connected` sends them) is
    what the core hears."""

    def setUp(self) -> None:
        self.reactor = MemoryReactorClock()
        # fsync "no": the log's writes happen in the reactor's turn, no thread to wait for.
        self.config = Config(token=TOKEN, master=MasterConfig(
            listen="tcp:0:interface=127.0.0.1", data_dir=self.mktemp(),
            heartbeat_interval=1.0, heartbeat_timeout=5.0),
            persistence=PersistenceConfig(fsync="no"))
        self.master = self.start()

    def start(self) -> MasterService:
        master = MasterService(self.config, reactor=self.reactor)
        master.privilegedStartService()
        master.startService()
        self.addCleanup(self.stop, master)
        return master

    def stop(self, master: MasterService) -> None:
        if master.running:
            stopped = master.stopService()
            self.reactor.advance(0)  # its log is closed in that turn
            self.successResultOf(stopped)

    def restart(self) -> None:
        self.stop(self.master)
        self.master = self.start()
        self.reactor.advance(0)  # the turn's records are written

    def worker(self, worker_id: str, running=(), finished=()) -> Peer:
        peer = Peer(self.master)
        peer.result(Op.REGISTER, {"token": TOKEN, "worker_id": worker_id, "name": worker_id,
                                  "slots": 1, "running": list(running),
                                  "finished": list(finished)})
        return peer

    def client(self) -> Peer:
        peer = Peer(self.master)
        peer.result(Op.HELLO, {"token": TOKEN})
        return peer

    def dispatched(self, peer: Peer) -> list:
        return dispatches(peer.frames())

    def complete(self, peer: Peer, job_id: str, attempt: int) -> list:
        """A worker's JOB_COMPLETE (exit 0), acknowledged; the DISPATCHes that came with
        the acknowledgement."""
        rid = peer.send(Op.JOB_COMPLETE, {"job_id": job_id, "attempt": attempt,
                                          "exit_code": 0})
        frames = peer.frames()
        self.assertIn((Op.ACK, rid), [(op, b.get("rid")) for op, b in frames])
        return dispatches(frames)

    def info(self, job_id: str) -> tuple:
        job = self.client().result(Op.JOB_INFO, {"job_id": job_id})
        return job["state"], job["worker_id"], job["attempt"]

    def test_a_restart_keeps_every_job_once(self):
        w1, w2, c = self.worker("w1"), self.worker("w2"), self.client()
        for job_id in ("a", "b", "c"):
            c.result(Op.SUBMIT_JOB, {"job_id": job_id, "command": ["true"]})
        self.assertEqual((self.dispatched(w1), self.dispatched(w2)), ([("a", 1)], [("b", 1)]))
        self.assertEqual(self.complete(w1, "a", 1), [("c", 1)])

        self.restart()
        self.assertEqual(self.master.recovery["events"], 6)  # 2 joins, 3 jobs, 1 end
        self.assertEqual([w.state for w in self.master.scheduler.workers.values()],
                         [WorkerState.DISCONNECTED] * 2)
        log = LogFile(f"{self.master.data_dir}/log/events.0.aof").records()
        self.assertIsInstance(decode_at_event(log[-1]), ev.MasterRestarted)
        self.assertEqual([self.info(j) for j in "abc"], [
            ("COMPLETED", "w1", 1), ("RUNNING", "w2", 1), ("RUNNING", "w1", 1)])

        # w1 ended c while the master was down; a's acknowledgement got through, but it
        # says a again as well (a report said twice counts once).
        w1 = self.worker("w1", finished=[
            {"job_id": "c", "attempt": 1, "exit_code": 0, "reason": None,
             "logs": [["out", b"done\n"]]},
            {"job_id": "a", "attempt": 1, "exit_code": 0, "reason": None}])
        self.assertEqual(self.dispatched(w1), [])
        self.assertEqual(self.info("c"), ("COMPLETED", "w1", 1))
        logs = self.client().result(Op.GET_LOGS, {"job_id": "c", "offset": 0})
        self.assertEqual(logs["data"], b"done\n")
        self.assertEqual(self.master.scheduler.workers["w1"].state, WorkerState.ALIVE)

        # w2 never comes back: b waits a full heartbeat timeout, then runs on w1.
        for _ in range(4):
            self.reactor.advance(1.0)
            w1.send(Op.HEARTBEAT, {}, rid=False)
        self.assertEqual(self.info("b"), ("RUNNING", "w2", 1))
        self.assertEqual(self.dispatched(w1), [])
        for _ in range(2):
            self.reactor.advance(1.0)
            w1.send(Op.HEARTBEAT, {}, rid=False)
        self.assertEqual(self.dispatched(w1), [("b", 2)])
        self.assertEqual(self.complete(w1, "b", 2), [])
        self.assertEqual([self.info(j)[0] for j in "abc"], ["COMPLETED"] * 3)

    def test_a_returning_worker_keeps_what_it_runs(self):
        w1, c = self.worker("w1"), self.client()
        c.result(Op.SUBMIT_JOB, {"job_id": "a", "command": ["true"]})
        c.result(Op.SUBMIT_JOB, {"job_id": "b", "command": ["true"]})
        self.assertEqual(self.dispatched(w1), [("a", 1)])
        self.restart()
        w1 = self.worker("w1", running=[{"job_id": "a", "attempt": 1}])
        self.assertEqual(w1.frames(), [])  # no DISPATCH, no KILL
        self.assertEqual(self.info("a"), ("RUNNING", "w1", 1))
        self.assertEqual(self.complete(w1, "a", 1), [("b", 1)])
        self.assertEqual(self.info("a"), ("COMPLETED", "w1", 1))

    def test_a_retry_waiting_at_the_restart_runs(self):
        """The timers the log's state implies are armed again: b failed once and waits
        for its retry when the master restarts; the retry runs once its backoff is over."""
        w1, c = self.worker("w1"), self.client()
        c.result(Op.SUBMIT_JOB, {"job_id": "b", "command": ["false"], "retries": 1})
        self.assertEqual(self.dispatched(w1), [("b", 1)])
        w1.result(Op.JOB_COMPLETE, {"job_id": "b", "attempt": 1, "exit_code": 1})
        self.restart()
        w1 = self.worker("w1")
        self.assertEqual((self.info("b"), self.dispatched(w1)), (("PENDING", None, 1), []))
        again = []
        for _ in range(3):  # the backoff is at most 1 s (retry_backoff_base)
            self.reactor.advance(1.0)
            w1.send(Op.HEARTBEAT, {}, rid=False)
            again += self.dispatched(w1)
        self.assertEqual(again, [("b", 2)])
        self.assertEqual(self.info("b"), ("RUNNING", "w1", 2))


def dispatches(frames: list) -> list:
    return [(b["job_id"], b["attempt"]) for op, b in frames if op == Op.DISPATCH]


def decode_at_event(record: bytes):
    [(_, event)] = list(decode_events([record]))
    return event
