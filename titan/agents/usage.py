"""Where a job's model calls are counted, so that its agent run can sum them.

Every call made through `titan.agents.chat_model()` (or a `Metered` model) adds its reply's
usage to the process's `Meter`.  Inside a Titan job (TITAN_JOB_ID is set) the meter also
keeps the running total of this process in the store, through the master, after each call:

    titan:usage:job:<job_id>:<attempt>:<pid>   JSON: this process's totals (see below)
    titan:usage:agent:<agent_run_id>           a set of those keys, for the job's agent run
    titan:usage:run:<run_id>                   a set of those keys, for the job's DAG run

The JSON: `{"agent_run_id", "stage", "run_id", "job_id", "attempt", "calls", "tokens_in",
"tokens_out", "latency", "cost", "models": {model: calls}}`.  Each key has one writer (one
process of one attempt), so nothing is lost to a race, and a retried attempt's spending
stays counted.  `summarize(client, agent_run_id=...)` (or `run_id=...`) reads a set's keys
back and sums them per stage and in total: what `titan runs AGENT_RUN_ID` can show.

The agent run and stage are the job's DAG run's (`agent_run_id` and `stage` of the
pipeline): the worker puts them in the job's environment (TITAN_AGENT_RUN_ID, TITAN_STAGE);
a job started without them (an older worker) asks the master once per process.  Outside a job nothing is written; the
process's totals are still on `meter().totals`.  The keys live in the cluster's store
(`titan up` starts one; a master without a `store:` section has none): a failure to write,
that one included, is reported once on stderr (the job's log) and never fails the call.
"""
from __future__ import annotations

import json
import os
import sys
import threading
from typing import Any, Callable, Optional

import attrs
from zope.interface import implementer

from titan.agents.base import Reply
from titan.agents.interfaces import IChatModel

PREFIX = "titan:usage:"


@attrs.define
class Totals:
    calls: int = 0
    tokens_in: int = 0
    tokens_out: int = 0
    latency: float = 0.0
    cost: float = 0.0
    models: dict = attrs.Factory(dict)

    def add(self, reply: Reply) -> None:
        self.calls += 1
        self.tokens_in += int(reply.usage.tokens_in)
        self.tokens_out += int(reply.usage.tokens_out)
        self.latency += float(reply.latency)
        self.cost += float(reply.cost)
        self.models[reply.model] = self.models.get(reply.model, 0) + 1

    def merge(self, data: dict) -> None:
        self.calls += int(data.get("calls", 0))
        self.tokens_in += int(data.get("tokens_in", 0))
        self.tokens_out += int(data.get("tokens_out", 0))
        self.latency += float(data.get("latency", 0.0))
        self.cost += float(data.get("cost", 0.0))
        for model, n in (data.get("models") or {}).items():
            self.models[model] = self.models.get(model, 0) + int(n)

    def as_dict(self) -> dict:
        return {"calls": self.calls, "tokens_in": self.tokens_in,
                "tokens_out": self.tokens_out, "latency": round(self.latency, 6),
                "cost": round(self.cost, 8), "models": dict(self.models)}


def _job_client():
    from titan.sdk.client import Client
    return Client(name="titan-job")


class Meter:
    """Counts the calls of this process; inside a job, keeps them in the store."""

    def __init__(self, environ: Optional[dict] = None,
                 client_factory: Callable[[], Any] = _job_client) -> None:
        self.environ = os.environ if environ is None else environ
        self.client_factory = client_factory
        self.totals = Totals()
        self._lock = threading.Lock()
        self._client = None
        self._where: Optional[dict] = None
        self._indexed = False
        self._warned: set = set()

    def _locate(self) -> Optional[dict]:
        """This job's identity (None outside a job), asked of the master once."""
        env = self.environ
        job_id = env.get("TITAN_JOB_ID")
        if not job_id:
            return None
        if self._where is None:
            run_id = env.get("TITAN_RUN_ID") or None
            where = {"job_id": job_id, "attempt": int(env.get("TITAN_ATTEMPT") or 1),
                     "run_id": run_id, "agent_run_id": env.get("TITAN_AGENT_RUN_ID") or None,
                     "stage": env.get("TITAN_STAGE") or None}
            if run_id and not (where["agent_run_id"] and where["stage"]):
                run = self._connection().run(run_id, jobs=False)
                where["agent_run_id"] = where["agent_run_id"] or run.get("agent_run_id")
                where["stage"] = where["stage"] or run.get("stage")
            self._where = where
        return self._where

    def _connection(self):
        if self._client is None:
            self._client = self.client_factory()
        return self._client

    def key(self) -> Optional[str]:
        where = self._locate()
        if where is None:
            return None
        return f"{PREFIX}job:{where['job_id']}:{where['attempt']}:{os.getpid()}"

    def add(self, reply: Reply) -> None:
        with self._lock:
            self.totals.add(reply)
            try:
                self._write()
            except Exception as e:  # never fail the model call for its accounting
                why = f"{type(e).__name__}: {e}"
                if why not in self._warned:
                    self._warned.add(why)
                    print(f"titan.agents: cannot record the model's usage: {why}",
                          file=sys.stderr, flush=True)

    def _write(self) -> None:
        where = self._locate()
        if where is None:
            return
        key = self.key()
        client = self._connection()
        client.store_put(key, json.dumps({**where, **self.totals.as_dict()},
                                         sort_keys=True))
        if not self._indexed:
            if where["agent_run_id"]:
                client.store_sadd(f"{PREFIX}agent:{where['agent_run_id']}", key)
            if where["run_id"]:
                client.store_sadd(f"{PREFIX}run:{where['run_id']}", key)
            self._indexed = True


_meter: Optional[Meter] = None
_meter_lock = threading.Lock()


def meter() -> Meter:
    """This process's meter (made on first use)."""
    global _meter
    with _meter_lock:
        if _meter is None:
            _meter = Meter()
        return _meter


@implementer(IChatModel)
class Metered:
    """A chat model whose every reply is added to a meter (this process's by default)."""

    def __init__(self, inner, meter_: Optional[Meter] = None) -> None:
        self.inner = inner
        self._meter = meter_

    @property
    def name(self) -> str:
        return self.inner.name

    @property
    def model(self) -> str:
        return self.inner.model

    def chat(self, messages, **options) -> Reply:
        reply = self.inner.chat(messages, **options)
        (self._meter or meter()).add(reply)
        return reply


def summarize(client, agent_run_id: Optional[str] = None,
              run_id: Optional[str] = None) -> dict:
    """The recorded usage of an agent run (or of one DAG run): `{"total": {...}, "stages":
    {stage: {...}}, "jobs": {job_id: {...}}}`, each a dict of `Totals` fields.  A job
    without a stage counts under the stage ''."""
    if (agent_run_id is None) == (run_id is None):
        raise ValueError("give agent_run_id or run_id")
    index = f"{PREFIX}agent:{agent_run_id}" if agent_run_id else f"{PREFIX}run:{run_id}"
    total, stages, jobs = Totals(), {}, {}
    for key in sorted(client.store_smembers(index)):
        key = key.decode() if isinstance(key, bytes) else key
        raw = client.store_get(key)
        if raw is None:
            continue
        data = json.loads(raw)
        total.merge(data)
        stages.setdefault(data.get("stage") or "", Totals()).merge(data)
        jobs.setdefault(data.get("job_id") or "", Totals()).merge(data)
    return {"total": total.as_dict(),
            "stages": {s: t.as_dict() for s, t in sorted(stages.items())},
            "jobs": {j: t.as_dict() for j, t in sorted(jobs.items())}}
