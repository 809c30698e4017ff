"""The built-in routers: pure functions of a job and the workers that could take it.

A chain of routers (config `router: [capability, affinity, least-loaded]`) narrows or orders
the candidates — live workers with a free slot — and the job goes to the first one left.
A router sees records it must treat as read-only.
"""
from __future__ import annotations

from typing import Optional

from zope.interface import implementer

from titan.interfaces import IRouter

GENERAL = "GENERAL"  # the reference's capability of a plain worker: no specialisation


def parse_affinity(value: Optional[str]) -> tuple[Optional[str], bool]:
    """`affinity` is `parent` (the worker that ran a parent: data locality), a worker name,
    or either behind `strict:` (wait for it rather than run elsewhere); bare `strict` means
    `strict:parent`."""
    if not value:
        return None, False
    value = value.strip()
    if value == "strict":
        return "parent", True
    if value.startswith("strict:"):
        return value[len("strict:"):] or "parent", True
    return value, False


@implementer(IRouter)
class Capability:
    name = "capability"
    description = ("Strict: a job runs only where every tag it needs (GPU, HIGH_MEM, ...) is; "
                   "best fit: workers with fewer tags it does not need first.")

    def route(self, job, candidates, context):
        need = job.spec.tags
        if need:
            fit = [w for w in candidates if need <= w.tags]
        elif getattr(context, "tagged_workers", 1) and any(w.tags for w in candidates):
            fit = candidates
        else:
            return candidates  # nobody has tags: nothing to narrow
        if len(fit) > 1:
            # Best fit: keep the GPU box for GPU jobs while plainer workers have room.  Every
            # worker that fits has the tags the job needs, so the fewest tags is the fewest
            # the job does not need; a worker tagged GENERAL (the reference's word for a
            # plain one) counts as plain.
            sizes = [len(w.tags) - (GENERAL in w.tags) for w in fit]
            least = min(sizes)
            if max(sizes) != least:
                fit = [w for w, n in zip(fit, sizes) if n == least]
        return fit

    def explain(self, job, workers):
        need = job.spec.tags
        if need and not any(need <= w.tags for w in workers):
            return f"no live worker has the tags {','.join(sorted(need))}"
        return None


@implementer(IRouter)
class Affinity:
    name = "affinity"
    description = ("Prefer the worker that ran the job's parent, or one named by the job's "
                   "affinity; strict: waits for it.")

    def route(self, job, candidates, context):
        target, strict = parse_affinity(job.spec.affinity)
        if target is None:
            return candidates
        names = context.parent_workers(job) if target == "parent" else {target}
        preferred = [w for w in candidates if w.name in names]
        if preferred or strict:
            return preferred
        return candidates

    def explain(self, job, workers):
        target, strict = parse_affinity(job.spec.affinity)
        if strict:
            return f"waiting for the worker of its affinity ({target})"
        return None


@implementer(IRouter)
class LeastLoaded:
    name = "least-loaded"
    description = "Fewest running jobs per slot first; ties go to fewer completed jobs."

    def route(self, job, candidates, context):
        if len(candidates) < 2:
            return candidates
        best = min(candidates, key=load_rank)
        # The best first; the rest as they were (only the first is taken).
        return [best, *(w for w in candidates if w is not best)]

    def explain(self, job, workers):
        return None


def load_rank(w) -> tuple:
    """How loaded a worker is (least first): running jobs per slot, then jobs completed,
    then join order.  The scheduler caches it on the record (`rank`)."""
    return (len(w.running) / w.slots, w.completed, w.seq)


DEFAULT_CHAIN = (Capability(), Affinity(), LeastLoaded())
