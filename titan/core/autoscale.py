"""Reactive autoscaling, as pure decisions.

Given what waits (ready jobs per set of needed tags, and for how long), who works (each
worker's tags, slots, load, idle time, and whether the autoscaler started it) and what a
worker started here may offer (`spawnable`: the tags this machine was seen to have and the
ones the operator configured for spawning), decide which local workers to start and which
of its own to retire.  A need beyond `spawnable` never gets a worker: its jobs wait (with
their reason) for a worker that really has it.
"""
from __future__ import annotations

from typing import Optional

import attrs
from zope.interface import implementer

from titan.interfaces import IAutoscaler


@attrs.frozen
class Waiting:
    tags: frozenset
    count: int
    oldest: float  # seconds the longest-waiting job of them has been ready


@attrs.frozen
class WorkerInfo:
    worker_id: str
    name: str
    tags: frozenset
    slots: int
    busy: int
    idle_for: Optional[float]  # None while it runs something
    spawned: bool  # started by the autoscaler
    state: str


@attrs.frozen
class Pending:
    """A worker the autoscaler started that has not said hello yet."""

    name: str
    tags: frozenset
    age: float


@attrs.frozen
class ScaleView:
    waiting: tuple = ()
    workers: tuple = ()
    pending: tuple = ()
    # The tags a worker started on this machine may carry; jobs that need others get none.
    spawnable: frozenset = frozenset()


def unservable(view: ScaleView) -> list:
    """The waiting needs no worker started here could meet: (needed tags, the missing ones)."""
    return [(w.tags, w.tags - view.spawnable) for w in view.waiting
            if not w.tags <= view.spawnable]


@attrs.frozen
class SpawnWorker:
    tags: frozenset
    reason: str


@attrs.frozen
class RetireWorker:
    worker_id: str
    name: str
    reason: str


def _label(tags: frozenset) -> str:
    return ",".join(sorted(tags)) or "no tags"


@implementer(IAutoscaler)
class Reactive:
    name = "reactive"
    description = ("Start a local worker when every capable slot is busy and jobs have waited "
                   "longer than `window` (only for tags this machine has or `tags` allows); "
                   "retire its own workers idle for `idle_timeout`.")

    def __init__(self, min_workers: int = 0, max_workers: int = 4, window: float = 5.0,
                 idle_timeout: float = 45.0) -> None:
        self.min_workers = min_workers
        self.max_workers = max_workers
        self.window = window
        self.idle_timeout = idle_timeout

    def evaluate(self, view: ScaleView, now: float) -> list:
        decisions: list = []
        live = [w for w in view.workers if w.state == "ALIVE"]
        total = len(live) + len(view.pending)
        for waiting in sorted(view.waiting, key=lambda w: -w.oldest):
            if waiting.oldest < self.window or waiting.count == 0:
                continue
            need = waiting.tags
            if not need <= view.spawnable:
                continue  # this machine cannot offer it: a worker tagged so would lie
            if any(need <= w.tags and w.busy < w.slots for w in live):
                continue  # a capable slot is free: the scheduler will use it
            if any(need <= p.tags for p in view.pending):
                continue  # one is on its way
            if total >= self.max_workers:
                continue
            decisions.append(SpawnWorker(need, (
                f"{waiting.count} jobs needing {_label(need)} waited {waiting.oldest:.0f}s "
                f"with every capable slot busy")))
            total += 1
        # Never retire a worker that could take jobs that wait; jobs it could not take
        # (a GPU job, and this is no GPU box) do not keep it.
        longing = [w.tags for w in view.waiting if w.oldest >= self.window and w.count]
        idle = sorted((w for w in live if w.spawned and w.busy == 0
                       and w.idle_for is not None and w.idle_for >= self.idle_timeout
                       and not any(need <= w.tags for need in longing)),
                      key=lambda w: -w.idle_for)
        keep = len(live)
        for w in idle:
            if keep <= self.min_workers:
                break
            decisions.append(RetireWorker(w.worker_id, w.name, f"idle for {w.idle_for:.0f}s"))
            keep -= 1
        return decisions
