"""The pure scheduler core, driven by `task.Clock`: events in, decisions out.

The `Harness` applies events at `clock.seconds()`, keeps every decision, and carries out
`SetTimer` decisions with `clock.callLater`, so retry backoffs and delays are fired by the
clock exactly as the master service fires them with the reactor.  Ticks (heartbeat checks)
come from a `LoopingCall` on the same clock.
"""
from __future__ import annotations

import collections
import random
import time

from twisted.internet.task import Clock, LoopingCall
from twisted.trial.unittest import SynchronousTestCase

from titan.core import events as ev
from titan.core.model import JobSpec, JobState, RunState, WorkerState
from titan.core.scheduler import (STOPPED_WITH_RUN, Scheduler, SubmitError, job_view,
                                  service_view, worker_view)


class Harness:
    def __init__(self, tick_interval: float = 1.0, **options) -> None:
        self.clock = Clock()
        options.setdefault("heartbeat_timeout", 10.0)
        self.s = Scheduler(**options)
        self.log: list = []  # every decision, in order
        self.timers: dict = {}
        self.ticker = LoopingCall(self.apply, ev.Tick())
        self.ticker.clock = self.clock
        self.tick_interval = tick_interval

    # -- the loop ------------------------------------------------------------------------

    def apply(self, event) -> list:
        out = self.s.apply(event, self.clock.seconds())
        self.log.extend(out)
        for d in list(out):
            if isinstance(d, ev.Propose):  # as the master does: record, then apply
                out.extend(self.apply(d.event))
            elif isinstance(d, ev.SetTimer):
                old = self.timers.pop(d.key, None)
                if old is not None and old.active():
                    old.cancel()
                self.timers[d.key] = self.clock.callLater(
                    max(0.0, d.at - self.clock.seconds()), self._fire, d.key)
        return out

    def recording(self) -> list:
        """The events applied from now on, with their times: what a master's log holds."""
        events: list = []
        real_apply = self.s.apply

        def apply(event, now):
            events.append((event, now))
            return real_apply(event, now)
        self.s.apply = apply
        return events

    def _fire(self, key) -> None:
        self.timers.pop(key, None)
        self.apply(ev.TimerFired(key))

    def start_ticking(self) -> None:
        self.ticker.start(self.tick_interval, now=False)

    def advance(self, seconds: float, beating=()) -> None:
        """Let `seconds` pass in steps of the tick interval; `beating` workers heartbeat."""
        end = self.clock.seconds() + seconds
        while self.clock.seconds() < end - 1e-9:
            for worker_id in beating:
                self.apply(ev.WorkerHeartbeat(worker_id))
            self.clock.advance(min(self.tick_interval, end - self.clock.seconds()))

    # -- events --------------------------------------------------------------------------

    def submit(self, job_id: str, command=("true",), **kw) -> list:
        event = ev.JobSubmitted(JobSpec(job_id=job_id, command=command, **kw))
        self.s.validate(event)
        return self.apply(event)

    def join(self, worker_id: str, slots: int = 1, tags=(), running=(), finished=()) -> list:
        return self.apply(ev.WorkerJoined(
            worker_id=worker_id, name=f"name-{worker_id}", host="127.0.0.1",
            tags=frozenset(tags), slots=slots, running=tuple(running),
            finished=tuple(finished)))

    def finish(self, job_id: str, exit_code=0, reason=None, worker_id=None,
               attempt=None) -> list:
        job = self.s.jobs[job_id]
        return self.apply(ev.JobFinished(
            job_id, worker_id if worker_id is not None else job.worker_id,
            attempt if attempt is not None else job.attempt, exit_code, reason))

    def cancel(self, job_id: str) -> list:
        return self.apply(ev.CancelRequested(job_id))

    def disconnect(self, worker_id: str) -> list:
        return self.apply(ev.WorkerDisconnected(worker_id))

    # -- looking -------------------------------------------------------------------------

    def job(self, job_id: str):
        return self.s.jobs[job_id]

    def state(self, job_id: str) -> JobState:
        return self.s.jobs[job_id].state

    def waiting(self, job_id: str):
        return self.s.waiting_reason(job_id, self.clock.seconds())

    def running_on(self, worker_id: str) -> set:
        return set(self.s.workers[worker_id].running)


def dispatched(decisions) -> list:
    return [(d.job_id, d.worker_id, d.attempt) for d in decisions
            if isinstance(d, ev.Dispatch)]


def kills(decisions) -> list:
    return [(d.job_id, d.worker_id, d.attempt) for d in decisions if isinstance(d, ev.Kill)]


def timers(decisions) -> list:
    return [d for d in decisions if isinstance(d, ev.SetTimer)]


class DispatchOrderTests(SynchronousTestCase):
    def test_priority_first_then_fifo(self):
        h = Harness()
        for job_id, priority in [("a", 0), ("b", 5), ("c", 0), ("d", 5), ("e", 1), ("f", -1)]:
            h.submit(job_id, priority=priority)
        self.assertEqual(dispatched(h.log), [])
        h.join("w1", slots=1)
        order = []
        while True:
            running = [j for j in h.s.jobs.values() if j.state is JobState.RUNNING]
            if not running:
                break
            self.assertEqual(len(running), 1)
            order.append(running[0].job_id)
            h.finish(running[0].job_id)
        self.assertEqual(order, ["b", "d", "e", "a", "c", "f"])
        self.assertEqual([j for j, _, _ in dispatched(h.log)], order)

    def test_slots_per_worker(self):
        h = Harness()
        h.join("w1", slots=2)
        for n in range(5):
            h.submit(f"j{n}")
        self.assertEqual(dispatched(h.log), [("j0", "w1", 1), ("j1", "w1", 1)])
        self.assertEqual(h.state("j2"), JobState.PENDING)
        self.assertEqual(h.waiting("j2"), "waiting for a free slot")
        for n in range(5):
            self.assertLessEqual(len(h.running_on("w1")), 2)
            running = sorted(j.job_id for j in h.s.jobs.values() if j.state is JobState.RUNNING)
            self.assertLessEqual(len(running), 2)
            out = h.finish(running[0])
            if n < 3:
                self.assertEqual(dispatched(out), [(f"j{n + 2}", "w1", 1)])
            else:
                self.assertEqual(dispatched(out), [])
        self.assertTrue(all(j.state is JobState.COMPLETED for j in h.s.jobs.values()))
        self.assertEqual(h.running_on("w1"), set())

    def test_least_loaded_worker_ties_by_join_order(self):
        h = Harness()
        h.join("small", slots=2)
        h.join("big", slots=4)
        chosen = []
        for n in range(7):
            out = h.submit(f"j{n}")
            chosen.append(dispatched(out)[0][1] if dispatched(out) else None)
        # loads before each choice: 0/0 tie -> small; .5/0; .5/.25; .5/.5 tie -> small;
        # 1/.5; 1/.75; both full.
        self.assertEqual(chosen, ["small", "big", "big", "small", "big", "big", None])
        self.assertEqual(h.waiting("j6"), "waiting for a free slot")
        # A slot frees on the big worker: the waiting job goes there.
        out = h.finish("j1")
        self.assertEqual(dispatched(out), [("j6", "big", 1)])

    def test_join_order_tie_break_is_not_name_order(self):
        h = Harness()
        h.join("zz", slots=1)
        h.join("aa", slots=1)
        out = h.submit("j")
        self.assertEqual(dispatched(out), [("j", "zz", 1)])


class CapabilityTests(SynchronousTestCase):
    def test_gpu_job_waits_without_blocking_plain_jobs(self):
        h = Harness()
        h.submit("train", tags=["gpu"], priority=10)
        h.submit("plain")
        self.assertEqual(h.waiting("plain"), "no live worker")
        h.join("cpu", slots=1)
        self.assertEqual(dispatched(h.log), [("plain", "cpu", 1)])
        self.assertEqual(h.state("train"), JobState.PENDING)
        self.assertEqual(h.waiting("train"), "no live worker has the tags GPU")
        # The CPU worker frees up: still no place for the GPU job, and another plain job runs.
        h.submit("plain2")
        h.finish("plain")
        self.assertEqual(h.state("train"), JobState.PENDING)
        self.assertEqual(dispatched(h.log)[-1], ("plain2", "cpu", 1))
        out = h.join("gpu-box", slots=1, tags=["Gpu", "cuda"])
        self.assertEqual(dispatched(out), [("train", "gpu-box", 1)])
        self.assertEqual(h.waiting("train"), None)

    def test_tags_are_case_insensitive(self):
        h = Harness()
        h.join("w", slots=1, tags=["gpu"])
        out = h.submit("j", tags=["GpU"])
        self.assertEqual(dispatched(out), [("j", "w", 1)])
        self.assertEqual(worker_view(h.s.workers["w"], 0)["tags"], ["GPU"])

    def test_tags_given_as_a_string(self):
        self.assertEqual(JobSpec(job_id="j", command=("true",), tags="gpu").tags,
                         frozenset({"GPU"}))
        self.assertEqual(JobSpec(job_id="j", command=("true",), tags=" gpu, Cuda ,").tags,
                         frozenset({"GPU", "CUDA"}))
        h = Harness()
        h.apply(ev.WorkerJoined(worker_id="w", name="w", host="h", tags="gpu", slots=1))
        self.assertEqual(h.s.workers["w"].tags, frozenset({"GPU"}))

    def test_job_needs_every_tag(self):
        h = Harness()
        h.join("w", slots=1, tags=["GPU"])
        h.submit("j", tags=["gpu", "big-mem"])
        self.assertEqual(h.state("j"), JobState.PENDING)
        self.assertEqual(h.waiting("j"), "no live worker has the tags BIG-MEM,GPU")


class HeartbeatTests(SynchronousTestCase):
    def test_silent_worker_declared_dead_and_jobs_move(self):
        h = Harness(heartbeat_timeout=10.0)
        h.start_ticking()
        h.join("w1", slots=1)
        h.join("w2", slots=1)
        h.submit("j1")
        h.submit("j2")
        self.assertEqual(dispatched(h.log), [("j1", "w1", 1), ("j2", "w2", 1)])
        h.finish("j2")
        h.advance(10, beating=["w2"])
        self.assertEqual(h.s.workers["w1"].state, WorkerState.ALIVE)
        self.assertEqual(h.state("j1"), JobState.RUNNING)
        h.advance(1, beating=["w2"])
        self.assertNotIn("w1", h.s.workers)
        self.assertIn(ev.WorkerChanged("w1", WorkerState.DEAD, "no heartbeat for 11.0s"), h.log)
        self.assertEqual(h.job("j1").worker_id, "w2")
        self.assertEqual(h.job("j1").attempt, 2)
        self.assertEqual(h.job("j1").failures, 0)  # not the job's fault
        self.assertEqual(dispatched(h.log)[-1], ("j1", "w2", 2))
        self.assertEqual(h.s.workers["w2"].state, WorkerState.ALIVE)

    def test_disconnected_worker_keeps_jobs_until_timeout(self):
        h = Harness(heartbeat_timeout=10.0)
        h.start_ticking()
        h.join("w1", slots=4)
        h.join("w2", slots=1)
        h.submit("j1")
        self.assertEqual(dispatched(h.log), [("j1", "w1", 1)])
        out = h.disconnect("w1")
        self.assertEqual(out, [ev.WorkerChanged("w1", WorkerState.DISCONNECTED, "connection lost")])
        h.submit("j2")
        h.submit("j3")
        # w1 has three free slots but no connection: nothing new goes there.
        self.assertEqual(dispatched(h.log)[1:], [("j2", "w2", 1)])
        self.assertEqual(h.state("j3"), JobState.PENDING)
        h.advance(9, beating=["w2"])
        self.assertEqual(h.state("j1"), JobState.RUNNING)
        self.assertEqual(h.job("j1").worker_id, "w1")
        self.assertEqual(h.s.workers["w1"].state, WorkerState.DISCONNECTED)
        h.advance(3, beating=["w2"])
        self.assertNotIn("w1", h.s.workers)
        self.assertEqual(h.state("j1"), JobState.PENDING)
        self.assertIn("lost", h.job("j1").reason)
        # j1 was submitted first, so it takes the next free slot ahead of j3.
        out = h.finish("j2")
        self.assertEqual(dispatched(out), [("j1", "w2", 2)])

    def test_reconnecting_worker_keeps_its_jobs(self):
        h = Harness(heartbeat_timeout=10.0)
        h.start_ticking()
        h.join("w1", slots=3)
        h.submit("j1")
        h.submit("j2")
        h.advance(1, beating=["w1"])
        h.disconnect("w1")
        h.submit("j3")
        self.assertEqual(h.state("j3"), JobState.PENDING)
        h.advance(5)
        out = h.join("w1", slots=3, running=[ev.JobReport("j1", 1), ev.JobReport("j2", 1)])
        self.assertEqual(kills(out), [])
        self.assertEqual(dispatched(out), [("j3", "w1", 1)])
        h.advance(20, beating=["w1"])
        self.assertEqual(h.s.workers["w1"].state, WorkerState.ALIVE)
        for job_id in ("j1", "j2", "j3"):
            self.assertEqual(h.state(job_id), JobState.RUNNING)
            self.assertEqual(h.job(job_id).attempt, 1)
        # Every job was dispatched exactly once.
        self.assertEqual(sorted(j for j, _, _ in dispatched(h.log)), ["j1", "j2", "j3"])
        self.assertEqual(h.running_on("w1"), {"j1", "j2", "j3"})

    def test_reconnecting_worker_that_lost_a_job_gives_it_back(self):
        h = Harness()
        h.join("w1", slots=2)
        h.join("w2", slots=1)
        h.submit("j1")  # w1
        h.submit("j2")  # w2
        h.submit("j3")  # w1
        h.disconnect("w1")
        out = h.join("w1", slots=2, running=[ev.JobReport("j3", 1)])
        # j1 is not there any more (the worker restarted): run it again, no retry spent.
        self.assertEqual(dispatched(out), [("j1", "w1", 2)])
        self.assertEqual(h.job("j1").failures, 0)
        self.assertEqual(h.state("j3"), JobState.RUNNING)

    def test_requeue_order_on_reconnect_follows_submission(self):
        h = Harness()
        h.join("w1", slots=12)
        names = [f"job-{n:02d}-{'x' * n}" for n in range(12)]
        for name in names:
            h.submit(name)
        h.disconnect("w1")
        h.join("w1", slots=0)  # forgot everything, takes no work for now
        self.assertEqual({h.state(n) for n in names}, {JobState.PENDING})
        out = h.join("w1", slots=12)
        self.assertEqual([job for job, _, _ in dispatched(out)], names)

    def test_requeued_job_adopted_when_dead_worker_returns(self):
        h = Harness(heartbeat_timeout=10.0)
        h.start_ticking()
        h.join("w1", slots=1)
        h.submit("j1")
        h.advance(12)
        self.assertNotIn("w1", h.s.workers)
        self.assertEqual(h.state("j1"), JobState.PENDING)
        self.assertEqual(h.waiting("j1"), "no live worker")
        out = h.join("w1", slots=1, running=[ev.JobReport("j1", 1)])
        self.assertEqual(dispatched(out), [])
        self.assertEqual(kills(out), [])
        job = h.job("j1")
        self.assertEqual((job.state, job.worker_id, job.attempt), (JobState.RUNNING, "w1", 1))
        self.assertEqual(h.running_on("w1"), {"j1"})
        # The stale queue entry must not dispatch it again when a slot shows up.
        h.join("w2", slots=1)
        h.submit("j2")
        self.assertEqual(dispatched(h.log), [("j1", "w1", 1), ("j2", "w2", 1)])
        h.finish("j1")
        self.assertEqual(h.state("j1"), JobState.COMPLETED)

    def test_finished_report_on_reconnect_completes_job(self):
        h = Harness()
        h.join("w1", slots=1)
        h.submit("j1")
        h.submit("j2")
        h.disconnect("w1")
        out = h.join("w1", slots=1, finished=[ev.JobReport("j1", 1, 0)])
        self.assertIn(ev.JobEnded("j1", JobState.COMPLETED), out)
        self.assertEqual(h.job("j1").exit_code, 0)
        self.assertEqual(dispatched(out), [("j2", "w1", 1)])
        self.assertEqual(h.s.workers["w1"].completed, 1)

    def test_finished_report_after_being_declared_dead_completes_job(self):
        h = Harness(heartbeat_timeout=10.0)
        h.start_ticking()
        h.join("w1", slots=1)
        h.submit("j1")
        h.advance(12)
        self.assertEqual(h.state("j1"), JobState.PENDING)
        out = h.join("w1", slots=1, finished=[ev.JobReport("j1", 1, 0)])
        self.assertEqual(h.state("j1"), JobState.COMPLETED)
        self.assertEqual(dispatched(out), [])

    def test_failed_report_on_reconnect_counts_as_failure(self):
        h = Harness()
        h.join("w1", slots=1)
        h.submit("j1")
        h.disconnect("w1")
        h.join("w1", slots=1, finished=[ev.JobReport("j1", 1, 2)])
        self.assertEqual((h.state("j1"), h.job("j1").exit_code), (JobState.FAILED, 2))

    def test_duplicate_report_of_old_attempt_is_not_counted_again(self):
        # attempt 1 fails on w1 (its ack is lost, so w1 will say so again), attempt 2 runs
        # on w2, w2 dies; w1 comes back repeating attempt 1's failure.
        h = Harness(heartbeat_timeout=10.0)
        h.start_ticking()
        h.join("w1", slots=2)
        h.submit("blocker")
        h.submit("j1", retries=1)
        self.assertEqual(h.job("j1").worker_id, "w1")
        h.finish("j1", exit_code=1)
        h.submit("filler")  # takes w1's free slot
        h.join("w2", slots=1)
        h.advance(5, beating=["w1", "w2"])
        self.assertEqual((h.job("j1").worker_id, h.job("j1").attempt), ("w2", 2))
        h.advance(12, beating=["w1"])
        self.assertNotIn("w2", h.s.workers)
        self.assertEqual(h.state("j1"), JobState.PENDING)
        h.disconnect("w1")
        h.join("w1", slots=2, running=[ev.JobReport("blocker", 1), ev.JobReport("filler", 1)],
               finished=[ev.JobReport("j1", 1, 1)])
        self.assertEqual(h.job("j1").failures, 1)
        self.assertEqual(h.state("j1"), JobState.PENDING)
        # ... while the lost attempt's own report does count.
        h.join("w2", slots=1, finished=[ev.JobReport("j1", 2, 0)])
        self.assertEqual(h.state("j1"), JobState.COMPLETED)

    def test_old_attempt_reported_running_is_killed_not_adopted(self):
        h = Harness(heartbeat_timeout=10.0)
        h.start_ticking()
        h.join("w1", slots=1)
        h.submit("j1", retries=1)
        h.finish("j1", exit_code=1)  # attempt 1 over
        h.advance(5, beating=["w1"])
        self.assertEqual(h.job("j1").attempt, 2)
        h.advance(12)
        self.assertEqual(h.state("j1"), JobState.PENDING)
        # A confused worker says attempt 1 still runs: that is not the attempt we lost.
        out = h.join("w1", slots=1, running=[ev.JobReport("j1", 1)])
        self.assertEqual(kills(out), [("j1", "w1", 1)])
        self.assertEqual(h.state("j1"), JobState.PENDING)


class ReconcileTests(SynchronousTestCase):
    def test_unknown_job_reported_running_is_killed(self):
        h = Harness()
        out = h.join("w1", slots=2, running=[ev.JobReport("ghost", 3)])
        self.assertEqual(out.count(ev.Kill("w1", "ghost", 3, "unknown to the master")), 1)
        self.assertNotIn("ghost", h.s.jobs)

    def test_terminal_job_reported_running_is_killed_and_holds_slot(self):
        h = Harness()
        h.join("w1", slots=1)
        h.submit("j1")
        h.finish("j1")
        h.disconnect("w1")
        out = h.join("w1", slots=1, running=[ev.JobReport("j1", 1)])
        self.assertEqual(kills(out), [("j1", "w1", 1)])
        self.assertIn(ev.Kill("w1", "j1", 1, "already COMPLETED"), out)
        h.submit("j2")
        self.assertEqual(h.state("j2"), JobState.PENDING)  # the process still holds the slot
        out = h.finish("j1", exit_code=None, reason="killed by signal 15", worker_id="w1",
                       attempt=1)
        self.assertEqual(h.state("j1"), JobState.COMPLETED)
        self.assertEqual(h.job("j1").exit_code, 0)
        self.assertEqual(dispatched(out), [("j2", "w1", 1)])

    def test_job_running_elsewhere_reported_by_returning_worker_is_killed(self):
        h = Harness(heartbeat_timeout=10.0)
        h.start_ticking()
        h.join("w1", slots=1)
        h.join("w2", slots=1)
        h.submit("j1")
        h.advance(12, beating=["w2"])
        self.assertEqual((h.job("j1").worker_id, h.job("j1").attempt), ("w2", 2))
        out = h.join("w1", slots=1, running=[ev.JobReport("j1", 1)])
        self.assertEqual(kills(out), [("j1", "w1", 1)])
        self.assertEqual((h.job("j1").worker_id, h.job("j1").attempt), ("w2", 2))


class CancelTests(SynchronousTestCase):
    def test_cancel_pending(self):
        h = Harness()
        h.submit("j1")
        out = h.cancel("j1")
        self.assertEqual(out, [ev.JobEnded("j1", JobState.CANCELLED)])
        h.join("w1", slots=4)
        h.submit("j2")
        self.assertEqual(dispatched(h.log), [("j2", "w1", 1)])
        self.assertEqual(h.state("j1"), JobState.CANCELLED)
        self.assertEqual(h.waiting("j1"), None)

    def test_cancel_delayed(self):
        h = Harness()
        h.join("w1", slots=1)
        h.submit("j1", delay=5)
        h.clock.advance(2)
        h.cancel("j1")
        h.clock.advance(10)
        self.assertEqual(dispatched(h.log), [])
        self.assertEqual(h.state("j1"), JobState.CANCELLED)

    def test_cancel_running(self):
        h = Harness()
        h.join("w1", slots=1)
        h.submit("j1")
        h.submit("j2")
        out = h.cancel("j1")
        self.assertEqual(out, [ev.Kill("w1", "j1", 1, "cancelled by request"),
                               ev.JobEnded("j1", JobState.CANCELLED)])
        self.assertEqual(h.state("j1"), JobState.CANCELLED)
        # The process has not exited yet: its slot is still taken.
        self.assertEqual(h.running_on("w1"), {"j1"})
        self.assertEqual(h.state("j2"), JobState.PENDING)
        h.apply(ev.WorkerHeartbeat("w1"))
        self.assertEqual(h.state("j2"), JobState.PENDING)
        out = h.finish("j1", exit_code=None, reason="killed by signal 15")
        self.assertEqual(h.state("j1"), JobState.CANCELLED)
        self.assertEqual(dispatched(out), [("j2", "w1", 1)])

    def test_cancel_terminal_changes_nothing(self):
        h = Harness()
        h.join("w1", slots=1)
        h.submit("j1")
        h.finish("j1")
        self.assertEqual(h.cancel("j1"), [])
        self.assertEqual(h.state("j1"), JobState.COMPLETED)
        h.submit("j2")
        h.cancel("j2")
        self.assertEqual(h.cancel("j2"), [])
        self.assertEqual(h.job("j2").reason, "cancelled by request")
        self.assertEqual(h.cancel("nope"), [])


class FailureTests(SynchronousTestCase):
    def test_failure_without_retries(self):
        h = Harness()
        h.join("w1", slots=1)
        h.submit("j1")
        out = h.finish("j1", exit_code=3)
        self.assertEqual(out, [ev.JobEnded("j1", JobState.FAILED)])
        job = h.job("j1")
        self.assertEqual((job.state, job.exit_code, job.reason), (JobState.FAILED, 3, "exit 3"))
        h.clock.advance(100)
        self.assertEqual(len(dispatched(h.log)), 1)

    def test_retries_then_dead(self):
        h = Harness()
        h.join("w1", slots=1)
        h.submit("j1", retries=2)
        delays = []
        for attempt in (1, 2):
            self.assertEqual(h.job("j1").attempt, attempt)
            out = h.finish("j1", exit_code=1)
            self.assertEqual(h.state("j1"), JobState.PENDING)
            self.assertEqual(dispatched(out), [])  # the slot is free, but backoff first
            [timer] = timers(out)
            delay = timer.at - h.clock.seconds()
            self.assertGreater(delay, 0)
            delays.append(delay)
            self.assertIn(f"retry {attempt} of 2", h.waiting("j1"))
            h.clock.advance(delay - 0.01)
            self.assertEqual(h.state("j1"), JobState.PENDING)
            h.clock.advance(timer.at - h.clock.seconds())
            self.assertEqual(h.state("j1"), JobState.RUNNING)
            self.assertEqual(dispatched(h.log)[-1], ("j1", "w1", attempt + 1))
        self.assertGreater(delays[1], delays[0])
        out = h.finish("j1", exit_code=1)
        self.assertEqual(out, [ev.JobEnded("j1", JobState.DEAD)])
        job = h.job("j1")
        self.assertEqual((job.state, job.failures, job.exit_code), (JobState.DEAD, 3, 1))
        h.clock.advance(1000)
        self.assertEqual(len(dispatched(h.log)), 3)

    def test_backoff_grows_and_respects_cap(self):
        for seed in range(40):
            h = Harness(backoff_base=1.0, backoff_cap=8.0, rng=random.Random(seed))
            h.join("w1", slots=1)
            h.submit("j1", retries=8)
            delays = []
            for _ in range(8):
                [timer] = timers(h.finish("j1", exit_code=1))
                delays.append(timer.at - h.clock.seconds())
                h.clock.advance(delays[-1])
                self.assertEqual(h.state("j1"), JobState.RUNNING)
            for d in delays:
                self.assertGreater(d, 0)
                self.assertLessEqual(d, 8.0, (seed, delays))
            uncapped = delays[:4]  # 1, 2, 4, 8 before jitter
            self.assertEqual(uncapped, sorted(uncapped), (seed, delays))
            self.assertEqual(len(set(uncapped)), 4, (seed, delays))

    def test_timeout_counts_as_failure(self):
        h = Harness()
        h.join("w1", slots=1)
        h.submit("j1", timeout=1)
        h.finish("j1", exit_code=None, reason="timeout after 1s")
        job = h.job("j1")
        self.assertEqual((job.state, job.exit_code, job.reason),
                         (JobState.FAILED, None, "timeout after 1s"))
        h.submit("j2", timeout=1, retries=1)
        out = h.finish("j2", exit_code=None, reason="timeout after 1s")
        self.assertEqual(h.state("j2"), JobState.PENDING)
        self.assertEqual(h.job("j2").failures, 1)
        self.assertEqual(len(timers(out)), 1)
        self.assertIn("timeout after 1s", h.waiting("j2"))

    def test_exit_zero_with_reason_is_not_success(self):
        h = Harness()
        h.join("w1", slots=1)
        h.submit("j1")
        h.finish("j1", exit_code=0, reason="spawn failed: no such file")
        self.assertEqual(h.state("j1"), JobState.FAILED)


class DelayTests(SynchronousTestCase):
    def test_delayed_job_waits_for_the_clock(self):
        h = Harness()
        h.join("w1", slots=1)
        h.clock.advance(100)
        out = h.submit("j1", delay=5)
        self.assertEqual(timers(out), [ev.SetTimer(("ready", "j1", 0), 105.0)])
        h.clock.advance(4.9)
        self.assertEqual(dispatched(h.log), [])
        self.assertEqual(h.waiting("j1"), "delayed; due in 0.1s")
        self.assertEqual(job_view(h.s, h.job("j1"), h.clock.seconds())["ready_at"], 105.0)
        h.clock.advance(0.1)
        self.assertEqual(dispatched(h.log), [("j1", "w1", 1)])
        self.assertEqual(h.job("j1").started_at, 105.0)

    def test_delayed_job_keeps_its_priority_place(self):
        h = Harness()
        h.submit("late", delay=5, priority=9)
        h.submit("now")
        h.join("w1", slots=1)
        self.assertEqual(dispatched(h.log), [("now", "w1", 1)])
        h.clock.advance(6)
        h.submit("after")
        h.finish("now")
        self.assertEqual(dispatched(h.log)[-1], ("late", "w1", 1))


class StaleReportTests(SynchronousTestCase):
    def test_reports_from_old_attempt_or_other_worker_are_ignored(self):
        h = Harness(heartbeat_timeout=10.0)
        h.start_ticking()
        h.join("w1", slots=1)
        h.join("w2", slots=1)
        h.join("w3", slots=1)
        h.submit("j1")
        h.advance(12, beating=["w2", "w3"])
        job = h.job("j1")
        self.assertEqual((job.worker_id, job.attempt), ("w2", 2))
        before = h.s.workers["w3"].completed
        started_at = job.started_at
        h.clock.advance(0.5)
        for stale in [ev.JobFinished("j1", "w1", 1, 0),   # the dead worker, old attempt
                      ev.JobFinished("j1", "w2", 1, 1),   # right worker, old attempt
                      ev.JobFinished("j1", "w3", 2, 1),   # right attempt, wrong worker
                      ev.JobStarted("j1", "w3", 2)]:
            out = h.apply(stale)
            self.assertEqual(out, [], stale)
            self.assertEqual((job.state, job.worker_id, job.attempt),
                             (JobState.RUNNING, "w2", 2))
            self.assertEqual(h.running_on("w2"), {"j1"})
        self.assertEqual(h.s.workers["w3"].completed, before)
        self.assertEqual(job.started_at, started_at)
        h.apply(ev.JobStarted("j1", "w2", 2))
        self.assertEqual(job.started_at, h.clock.seconds())
        h.apply(ev.JobFinished("j1", "w2", 2, 0))
        self.assertEqual(h.state("j1"), JobState.COMPLETED)

    def test_report_for_unknown_job_or_worker_is_harmless(self):
        h = Harness()
        self.assertEqual(h.apply(ev.JobFinished("nope", "w9", 1, 0)), [])
        self.assertEqual(h.apply(ev.WorkerHeartbeat("w9")), [])
        self.assertEqual(h.apply(ev.WorkerDisconnected("w9")), [])
        self.assertEqual(h.apply(ev.TimerFired(("ready", "nope", 0))), [])


class ValidateTests(SynchronousTestCase):
    def assertRefused(self, s, spec, *words):
        with self.assertRaises(SubmitError) as caught:
            s.validate(ev.JobSubmitted(spec))
        for word in words:
            self.assertIn(word, str(caught.exception))

    def test_refusals_name_the_job(self):
        s = Scheduler()
        self.assertRefused(s, JobSpec(job_id="empty-cmd", command=()), "empty-cmd")
        self.assertRefused(s, JobSpec(job_id="blank-cmd", command=("",)), "blank-cmd")
        self.assertRefused(s, JobSpec(job_id="neg", command=("true",), retries=-1),
                           "neg", "retries")
        self.assertRefused(s, JobSpec(job_id="neg-delay", command=("true",), delay=-1),
                           "neg-delay", "delay")
        self.assertRefused(s, JobSpec(job_id="zero-t", command=("true",), timeout=0),
                           "zero-t", "timeout")
        self.assertEqual(s.jobs, {})

    def test_duplicate_id(self):
        s = Scheduler()
        event = ev.JobSubmitted(JobSpec(job_id="dup", command=("true",)))
        s.validate(event)
        s.apply(event, 0.0)
        self.assertRefused(s, JobSpec(job_id="dup", command=("false",)), "dup", "taken")
        self.assertEqual(s.jobs["dup"].spec.command, ("true",))

    def test_good_job_passes(self):
        Scheduler().validate(ev.JobSubmitted(JobSpec(
            job_id="ok", command=("sh", "-c", "true"), retries=2, delay=1, timeout=3)))


def scripted_run(h: Harness) -> list:
    """A busy little history: tags, priorities, retries, a dead worker, a reconnect."""
    h.start_ticking()
    h.join("a", slots=2)
    h.join("b", slots=1, tags=["gpu"])
    for n in range(12):
        h.submit(f"j{n}", priority=n % 3, retries=n % 2 * 2,
                 tags=["gpu"] if n % 5 == 0 else [], delay=n % 4)
    for step in range(40):
        running = sorted((j.seq, j.job_id) for j in h.s.jobs.values()
                         if j.state is JobState.RUNNING)
        if running:
            _, job_id = running[step % len(running)]
            h.finish(job_id, exit_code=step % 3)
        if step == 10:
            h.cancel("j7")
        beating = ["a", "b"] if step < 15 or step > 30 else ["b"]
        if step == 31:
            h.join("a", slots=2, running=[ev.JobReport("j3", 1)])
        h.advance(1, beating=beating)
    return h.log


class DeterminismTests(SynchronousTestCase):
    def test_same_events_same_decisions(self):
        first = scripted_run(Harness())
        second = scripted_run(Harness())
        self.assertEqual(first, second)
        self.assertGreater(len(dispatched(first)), 12)
        self.assertTrue(timers(first))
        self.assertTrue(any(isinstance(d, ev.WorkerChanged) and d.state is WorkerState.DEAD
                            for d in first))

    def test_replaying_the_applied_events_gives_the_same_decisions(self):
        h = Harness()
        events = h.recording()
        log = scripted_run(h)
        fresh = Scheduler(heartbeat_timeout=10.0)
        replayed = []
        for event, now in events:
            replayed.extend(fresh.apply(event, now))
        self.assertEqual(replayed, log)
        self.assertEqual({k: (j.state, j.attempt) for k, j in fresh.jobs.items()},
                         {k: (j.state, j.attempt) for k, j in h.s.jobs.items()})

    def test_replay_reaches_the_same_state_as_apply_and_decides_the_same_after(self):
        from titan.core.scheduler import snapshot
        h = Harness()
        events = h.recording()
        scripted_run(h)
        applied = Scheduler(heartbeat_timeout=10.0)
        for event, now in events:
            applied.apply(event, now)
        replayed = Scheduler(heartbeat_timeout=10.0)
        self.assertEqual(replayed.replay((now, event) for event, now in events), len(events))
        self.assertEqual(replayed.replayed, len(events))
        self.assertEqual(snapshot(replayed), snapshot(applied))
        self.assertEqual(snapshot(replayed), snapshot(h.s))
        # Replaying announced nothing, and took nothing away from what comes next.
        for s in (applied, replayed):
            s.apply(ev.WorkerJoined("w9", "w9", "h", frozenset(), 2), 500.0)
        after = []
        for n in range(4):
            spec = JobSpec(job_id=f"after-{n}", command=("true",))
            decided = replayed.apply(ev.JobSubmitted(spec), 501.0)
            self.assertEqual(decided, applied.apply(ev.JobSubmitted(spec), 501.0))
            after += decided
        self.assertEqual(snapshot(replayed), snapshot(applied))
        self.assertIn("after-0", [job_id for job_id, _, _ in dispatched(after)])
        job = replayed.jobs["after-0"]
        self.assertIn(ev.JobEnded("after-0", JobState.COMPLETED), replayed.apply(
            ev.JobFinished("after-0", job.worker_id, job.attempt, 0), 502.0))

    def test_a_replay_that_breaks_off_says_how_far_it_got(self):
        h = Harness()
        events = h.recording()
        scripted_run(h)

        def broken():
            for i, (event, now) in enumerate(events):
                if i == 7:
                    raise ValueError("record 8 is bad")
                yield now, event

        fresh = Scheduler(heartbeat_timeout=10.0)
        self.assertRaises(ValueError, fresh.replay, broken())
        self.assertEqual(fresh.replayed, 7)
        self.assertEqual(fresh.apply(ev.WorkerJoined("w9", "w9", "h", frozenset(), 1), 1.0)[0],
                         ev.WorkerChanged("w9", WorkerState.ALIVE, "joined"))


class ScaleTests(SynchronousTestCase):
    def test_twenty_thousand_jobs_ten_workers(self):
        s = Scheduler()
        count = 20_000
        started = time.perf_counter()
        work = collections.deque()
        for n in range(10):
            work.extend(s.apply(ev.WorkerJoined(f"w{n}", f"w{n}", "h", frozenset(), 4), 0.0))
        for n in range(count):
            e = ev.JobSubmitted(JobSpec(job_id=f"j{n}", command=("true",), priority=n % 7))
            s.validate(e)
            work.extend(s.apply(e, 0.0))
        dispatches = 0
        while work:
            d = work.popleft()
            if isinstance(d, ev.Dispatch):
                dispatches += 1
                work.extend(s.apply(ev.JobFinished(d.job_id, d.worker_id, d.attempt, 0), 1.0))
        elapsed = time.perf_counter() - started
        self.assertEqual(dispatches, count)
        self.assertTrue(all(j.state is JobState.COMPLETED for j in s.jobs.values()))
        self.assertEqual(len(s.jobs), count)
        self.assertEqual(sum(w.completed for w in s.workers.values()), count)
        self.assertTrue(all(w.completed > 0 and not w.running for w in s.workers.values()))
        self.assertLess(elapsed, 30.0)


class PipelineServiceTests(SynchronousTestCase):
    """Services inside a DAG run (docs/pipelines.md, "Services in a pipeline")."""

    def setUp(self):
        self.h = Harness()
        self.h.join("w1", slots=4)

    def run_dag(self, jobs) -> list:
        from titan.core.dag import parse_dag
        return self.h.apply(ev.DagSubmitted("r", parse_dag({"name": "r", "jobs": jobs})))

    def report(self, job_id, state, **status) -> list:
        job = self.h.job(job_id)
        return self.h.apply(ev.ServiceReported(job_id, job.worker_id, job.attempt,
                                               dict(status, state=state)))

    def etl(self):
        return self.run_dag([
            {"id": "api", "type": "service", "command": ["serve"], "port": 8080},
            {"id": "load", "command": ["load"], "depends_on": ["api"]},
            {"id": "report", "command": ["report"], "depends_on": ["load"]}])

    def test_dependents_start_once_the_service_is_up_and_a_port_means_a_tcp_check(self):
        self.assertEqual(dispatched(self.etl()), [("r/api", "w1", 1)])
        self.assertEqual(self.h.job("r/api").spec.health, "tcp")  # readiness by default
        self.assertEqual(dispatched(self.report("r/api", "STARTING", port=8080)), [])
        self.assertEqual(self.h.waiting("r/load"), "waiting for api to be up")
        self.assertEqual(dispatched(self.report("r/api", "RUNNING", port=8080)),
                         [("r/load", "w1", 1)])
        self.assertIs(self.h.s.runs["r"].state, RunState.RUNNING)

    def test_the_run_ends_with_its_jobs_and_stops_the_services_they_needed(self):
        self.etl()
        self.report("r/api", "RUNNING", port=8080)
        self.h.finish("r/load")
        out = self.h.finish("r/report")
        run = self.h.s.runs["r"]
        self.assertIs(run.state, RunState.COMPLETED)
        self.assertEqual(kills(out), [("r/api", "w1", 1)])
        [kill] = [d for d in out if isinstance(d, ev.Kill)]
        self.assertEqual(kill.reason, STOPPED_WITH_RUN)
        api = self.h.job("r/api")
        self.assertIs(api.state, JobState.COMPLETED)
        self.assertEqual(api.reason, "stopped: its run ended")
        self.assertEqual(run.counts[JobState.COMPLETED], 3)
        self.assertIn(ev.JobEnded("r/api", JobState.COMPLETED), out)
        view = service_view(self.h.s, api, self.h.clock.seconds())
        self.assertEqual((view["state"], view["reason"]), ("STOPPED", "stopped: its run ended"))
        # The worker's report of the killed process changes nothing, and frees the slot.
        self.h.apply(ev.JobFinished("r/api", "w1", 1, None, "killed: stopped"))
        self.assertIs(api.state, JobState.COMPLETED)
        self.assertEqual(self.h.running_on("w1"), set())

    def test_healthy_is_none_without_a_check_and_the_worker_s_word_with_one(self):
        self.run_dag([{"id": "plain", "type": "service", "command": ["serve"]},
                      {"id": "checked", "type": "service", "command": ["serve"], "port": 8080}])
        for job_id in ("r/plain", "r/checked"):
            self.report(job_id, "RUNNING", healthy=False, port=8080)
        now = self.h.clock.seconds()
        self.assertIsNone(service_view(self.h.s, self.h.job("r/plain"), now)["healthy"])
        self.assertIs(service_view(self.h.s, self.h.job("r/checked"), now)["healthy"], False)
        self.report("r/checked", "RUNNING", healthy=True, port=8080)
        self.assertIs(service_view(self.h.s, self.h.job("r/checked"), now)["healthy"], True)

    def test_a_job_waiting_for_a_service_and_a_job_names_only_what_it_waits_for(self):
        self.run_dag([{"id": "api", "type": "service", "command": ["serve"]},
                      {"id": "build", "command": ["make"]},
                      {"id": "use", "command": ["use"], "depends_on": ["api", "build"]}])
        self.assertEqual(self.h.waiting("r/use"), "waiting for api to be up, build")
        self.report("r/api", "RUNNING")
        self.assertEqual(self.h.waiting("r/use"), "waiting for build")

    def test_a_dependent_that_fails_ends_the_run_failed_and_stops_the_service(self):
        self.etl()
        self.report("r/api", "RUNNING", port=8080)
        out = self.h.finish("r/load", exit_code=1)
        self.assertIs(self.h.s.runs["r"].state, RunState.FAILED)
        self.assertEqual(self.h.state("r/report"), JobState.CANCELLED)
        self.assertEqual(kills(out), [("r/api", "w1", 1)])

    def test_a_service_that_fails_before_it_is_up_fails_the_run(self):
        self.etl()
        self.h.finish("r/api", exit_code=2, reason="crash loop: 5 restarts in 60s")
        run = self.h.s.runs["r"]
        self.assertIs(run.state, RunState.FAILED)
        self.assertEqual(self.h.job("r/load").reason, "cancelled: api FAILED")

    def test_a_service_that_dies_after_it_was_up_leaves_running_dependents_alone(self):
        self.etl()
        self.report("r/api", "RUNNING", port=8080)
        out = self.h.finish("r/api", exit_code=2, reason="crash loop")
        self.assertEqual(kills(out), [])
        self.assertIs(self.h.state("r/load"), JobState.RUNNING)  # it ends as it ends
        self.h.finish("r/load")
        self.h.finish("r/report")
        self.assertIs(self.h.s.runs["r"].state, RunState.FAILED)  # the service failed

    def test_a_service_no_job_needs_is_the_runs_product_and_keeps_running(self):
        self.run_dag([{"id": "build", "command": ["make"]},
                      {"id": "web", "type": "service", "command": ["serve"],
                       "depends_on": ["build"]}])
        self.h.finish("r/build")
        web = self.h.job("r/web")
        self.assertIsNone(web.spec.health)  # no port: up once started
        run = self.h.s.runs["r"]
        self.assertIs(run.state, RunState.RUNNING)  # it waits for the service to be up
        out = self.report("r/web", "RUNNING")
        self.assertIs(run.state, RunState.COMPLETED)
        self.assertEqual(kills(out), [])
        self.assertIs(web.state, JobState.RUNNING)
        # Retention leaves a run alone while a service of it runs ...
        self.h.apply(ev.Forget((), ("r",)))
        self.assertIn("r", self.h.s.runs)
        # ... and it is stopped like any job: cancelling the run stops it.
        out = self.h.apply(ev.RunCancelRequested("r", "cancelled by bob"))
        self.assertEqual(kills(out), [("r/web", "w1", 1)])
        self.assertIs(web.state, JobState.CANCELLED)
        self.assertIs(run.state, RunState.COMPLETED)  # what it was when it ended
        self.h.apply(ev.Forget((), ("r",)))
        self.assertNotIn("r", self.h.s.runs)

    def test_a_service_marked_persist_stays_up_after_the_run(self):
        self.run_dag([
            {"id": "api", "type": "service", "command": ["serve"], "persist": True},
            {"id": "load", "command": ["load"], "depends_on": ["api"]}])
        self.report("r/api", "RUNNING")
        out = self.h.finish("r/load")
        self.assertIs(self.h.s.runs["r"].state, RunState.COMPLETED)
        self.assertEqual(kills(out), [])
        self.assertIs(self.h.state("r/api"), JobState.RUNNING)

    def test_persist_is_for_services(self):
        from titan.core.dag import parse_dag
        for job, message in (
                ({"id": "a", "command": ["x"], "persist": True},
                 "job a: persist is for a service (type: service)"),
                ({"id": "a", "type": "service", "command": ["x"], "persist": "yes"},
                 "job a: persist must be true or false, not 'yes'")):
            e = self.assertRaises(SubmitError, parse_dag, {"name": "r", "jobs": [job]})
            self.assertEqual(str(e), message)

    def test_cancelling_a_running_run_cancels_its_services(self):
        self.etl()
        self.report("r/api", "RUNNING", port=8080)
        out = self.h.apply(ev.RunCancelRequested("r", "cancelled by bob"))
        self.assertEqual(sorted(kills(out)), [("r/api", "w1", 1), ("r/load", "w1", 1)])
        self.assertIs(self.h.state("r/api"), JobState.CANCELLED)
        self.assertIs(self.h.s.runs["r"].state, RunState.CANCELLED)

    def test_a_snapshot_restores_what_the_run_still_waits_for(self):
        from titan.core.scheduler import restore, snapshot
        self.etl()
        self.report("r/api", "RUNNING", port=8080)
        self.h.finish("r/load")
        s = Scheduler()
        restore(s, snapshot(self.h.s))
        self.assertEqual(s.runs["r"].left, 1)  # report; not the service, which is up
        job = s.jobs["r/report"]
        s.apply(ev.JobFinished("r/report", job.worker_id, job.attempt, 0, None), 100.0)
        self.assertIs(s.runs["r"].state, RunState.COMPLETED)
