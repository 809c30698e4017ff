"""Placement: the ready queues, the chain of routers, and dispatch.

A job whose parents have completed and whose delay has passed joins a ready queue
(`_enqueue`); `_dispatch` gives the best queued jobs to live workers with a free slot, as
the routers choose, and `_start` marks them RUNNING.  `_refresh` keeps the index of free
workers in step with a worker record.  The routers see this object as their context
(`parent_workers`, `tagged_workers`).

Calls no other part: `_start` moves a job PENDING -> RUNNING inline (what jobs._set_state
would do for that move), since it runs once per dispatch.
"""
from __future__ import annotations

import heapq
from operator import attrgetter
from typing import Iterable, Optional

from titan.core import events as ev
from titan.core.model import JobRecord, WorkerRecord
from titan.core.parts.base import _ALIVE, _PENDING, _RUNNING, CoreState, Decisions
from titan.core.ready import ReadyQueue
from titan.core.routing import DEFAULT_CHAIN, Affinity, Capability, LeastLoaded, \
    load_rank, parse_affinity

_BUILT_IN_ROUTERS = (Capability, Affinity, LeastLoaded)
_RANK = attrgetter("rank")
_PLAIN_QUEUE = (frozenset(), None)  # the queue of jobs that need no tags and no worker
_SEQ_SPAN = 1 << 48  # more jobs than a master will ever number: priority outranks seq


class Placement(CoreState):
    def _init_placement(self, routers: Optional[Iterable]) -> None:
        self.use_routers(routers)
        self._free: dict[str, WorkerRecord] = {}  # live workers with a free slot
        self._with_tags: set = set()  # workers that carry tags
        self._tagged = 0
        # Ready jobs, one queue per set of required tags: a job that no worker can take
        # never blocks jobs with other needs.  Entries are (order, push, job): order puts
        # higher priorities first, then submission order, in one number (one comparison);
        # push tells apart two entries of one job (a stale one and a new one), so the
        # comparison never reaches the record.  An entry is stale once its job left the
        # queue (dispatched, cancelled, forgotten): dropped when it reaches the head.
        self._queues: dict[tuple, ReadyQueue] = {}
        self._pushes = 0

    def use_routers(self, routers: Optional[Iterable]) -> None:
        """Route with this chain from the next dispatch on (a config reload changes it; the
        ready queues do not depend on it)."""
        self.routers = tuple(routers) if routers is not None else DEFAULT_CHAIN
        # With only the built-in routers, a job that needs no tags and names no worker,
        # while no worker has tags, goes to the least-loaded free worker (or the first one):
        # the chain would say the same, this says it without building candidate lists.
        self._plain_routing = all(type(r) in _BUILT_IN_ROUTERS for r in self.routers)
        self._least_loaded = any(type(r) is LeastLoaded for r in self.routers)

    def parent_workers(self, job: JobRecord) -> set:
        """Names of the workers that ran `job`'s parents (for affinity routing)."""
        if not job.run_id:
            return set()
        prefix = job.run_id + "/"
        names = set()
        for p in job.spec.depends_on:
            parent = self.jobs.get(prefix + p)
            if parent is not None and parent.worker_name:
                names.add(parent.worker_name)
        return names

    def _enqueue(self, job: JobRecord) -> None:
        # One queue per set of needs: a job that must wait for particular workers (tags, a
        # strict affinity) never holds up jobs that need something else.
        job.queued = True
        job.queued_at = self._now
        spec = job.spec
        if spec.affinity:
            target, strict = parse_affinity(spec.affinity)
            key = (spec.tags, target if strict else None)
        elif spec.tags:
            key = (spec.tags, None)
        else:
            key = _PLAIN_QUEUE
        queue = self._queues.get(key)
        if queue is None:
            queue = self._queues[key] = ReadyQueue()
        self._pushes += 1
        queue.push((job.seq - spec.priority * _SEQ_SPAN, self._pushes, job))

    @staticmethod
    def _head(queue: ReadyQueue) -> Optional[JobRecord]:
        """The first job of a queue that is still waiting, dropping stale entries."""
        while queue:
            job = queue.first()[2]
            if job.queued and job.state is _PENDING:
                return job
            queue.pop()
        return None

    @property
    def tagged_workers(self) -> int:
        """How many workers carry tags (0 lets routers skip tag work)."""
        return self._tagged

    def _refresh(self, w: WorkerRecord) -> None:
        """Keep the index of live workers with a free slot in step with `w`."""
        if w.running:
            w.idle_since = None
        elif w.idle_since is None:
            w.idle_since = self._now
        if w.state is _ALIVE and len(w.running) < w.slots \
                and self.workers.get(w.worker_id) is w:
            self._free[w.worker_id] = w
            w.rank = load_rank(w)
        else:
            self._free.pop(w.worker_id, None)
        if w.tags and (w.worker_id in self.workers) != (w.worker_id in self._with_tags):
            if w.worker_id in self.workers:
                self._with_tags.add(w.worker_id)
            else:
                self._with_tags.discard(w.worker_id)
            self._tagged = len(self._with_tags)

    def _dispatch(self, now: float, out: Decisions) -> None:
        queues, free = self._queues, self._free
        if not queues or not free:
            return
        if len(queues) == 1:
            # One kind of need (the usual case): take its queue in order.
            for key, queue in queues.items():
                break
            # queue.first() and queue.pop(), inline: this loop runs once per dispatch.
            heap, run = queue.heap, queue.run
            heappop, popleft = heapq.heappop, run.popleft
            plain = self._plain_routing and not self._tagged
            while free:
                if heap and (not run or heap[0] < run[0]):
                    in_heap, job = True, heap[0][2]
                elif run:
                    in_heap, job = False, run[0][2]
                else:
                    del queues[key]
                    return
                if not job.queued or job.state is not _PENDING:  # a stale entry
                    if in_heap:
                        heappop(heap)
                    else:
                        popleft()
                    continue
                spec = job.spec
                if plain and not spec.tags and not spec.affinity:
                    # _choose's plain case, inline.
                    if len(free) == 1 or not self._least_loaded:
                        worker = next(iter(free.values()))
                    else:
                        worker = min(free.values(), key=_RANK)
                else:
                    worker = self._choose(job)
                    if worker is None:
                        return
                if in_heap:
                    heappop(heap)
                else:
                    popleft()
                self._start(job, worker, now, out)
                if not heap and not run:
                    del queues[key]
                    return
            return
        stuck: set = set()  # queues whose head no worker takes now (slots only fill up here)
        while self._free and self._queues:
            best: Optional[tuple] = None
            for key, queue in list(self._queues.items()):
                if key in stuck:
                    continue
                job = self._head(queue)
                if job is None:
                    del self._queues[key]
                    continue
                entry = queue.first()
                if best is not None and entry >= best[0]:
                    continue
                worker = self._choose(job)
                if worker is None:
                    stuck.add(key)
                else:
                    best = (entry, queue, job, worker)
            if best is None:
                return
            _, queue, job, worker = best
            queue.pop()
            self._start(job, worker, now, out)

    def _choose(self, job: JobRecord) -> Optional[WorkerRecord]:
        spec = job.spec
        if self._plain_routing and not spec.tags and not spec.affinity and not self._tagged:
            if self._least_loaded:
                return min(self._free.values(), key=_RANK)
            return next(iter(self._free.values()))
        candidates = list(self._free.values())
        for router in self.routers:
            candidates = router.route(job, candidates, self)
            if not candidates:
                return None
        return candidates[0]

    def _start(self, job: JobRecord, worker: WorkerRecord, now: float, out: Decisions) -> None:
        job.queued = False
        job.attempt += 1
        worker_id = worker.worker_id
        job.worker_id = worker_id
        job.worker_name = worker.name
        job.started_at = now
        job.exit_code = None  # the new attempt's, once it reports (the last one's is in history)
        running = worker.running
        running.add(job.job_id)
        # _refresh(worker), inline: the worker came from _free (alive, a member), so only
        # its slot count and rank move.
        worker.idle_since = None
        if len(running) < worker.slots:
            worker.rank = load_rank(worker)
        else:
            self._free.pop(worker_id, None)
        if self._announce:
            out.append(ev.Dispatch(worker_id, job.job_id, job.attempt, job.spec, job.run_id))
        # _set_state(job, RUNNING), inline: PENDING -> RUNNING ends nothing, cascades nothing.
        old = job.state
        job.state = _RUNNING
        if job.run_id:
            run = self.runs.get(job.run_id)
            if run is not None:
                counts = run.counts
                counts[old] -= 1
                counts[_RUNNING] = counts.get(_RUNNING, 0) + 1
                self._dirty_runs[run.run_id] = run
                self._moved.append(job)
