"""The master's metrics in Prometheus' format (docs/metrics.md), served at GET /metrics on
the web listener.

Each master has a registry of its own, never prometheus_client's global one: tests run
several masters in one process.  What the master holds now (jobs by state, the ready
queues, workers and slots, SSE clients, the event log's size, each worker's heartbeat) is
read at each scrape by `StateCollector`; what happens (a job starts or ends, an fsync, a
command to the store) is counted as it happens, through hooks the service sets:
`applied` after each event (MasterService.handle), `fsync_took` (the AOF backend's
`on_fsync`) and `store_command` (StoreClient's `on_command`).  Workers open no port: what
their heartbeats carry is exposed here, labelled with their names.
"""
from __future__ import annotations

import math
import re
from typing import Any, Iterator, Optional

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.exposition import choose_encoder
from prometheus_client.platform_collector import PlatformCollector
from prometheus_client.process_collector import ProcessCollector

from titan.core import events as ev
from titan.core.model import JobState, RunState, WorkerState

# Seconds from ready to dispatched: none on an idle cluster, hours behind a backlog.
LATENCY_BUCKETS = (.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60,
                   300, 900, 3600)
# A job's run: a shell `true` to a day's training step.
DURATION_BUCKETS = (.01, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60, 300, 900, 1800, 3600,
                    7200, 21600, 86400)
# One fsync: tens of microseconds on NVMe, seconds on a disk that is failing.
FSYNC_BUCKETS = (.0001, .00025, .0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1,
                 2.5, 10)
STORE_BUCKETS = (.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 10)

# What a worker's heartbeat may carry besides its id (docs/protocol.md: all optional, so an
# older worker's heartbeat only lacks the series), and the metric each one becomes.
HEARTBEAT_GAUGES = {
    "running": ("titan_worker_running_jobs",
                "Jobs the worker says it runs (its last heartbeat)"),
    "load1": ("titan_worker_load1", "The worker machine's load average over one minute"),
    "cpus": ("titan_worker_cpus", "CPUs of the worker's machine"),
    "rss_bytes": ("titan_worker_resident_memory_bytes",
                  "Resident memory of the titan-worker process, in bytes"),
    "open_fds": ("titan_worker_open_fds", "Open file descriptors of the titan-worker process"),
}
HEARTBEAT_COUNTERS = {
    "cpu_seconds": ("titan_worker_cpu_seconds",
                    "CPU time of the titan-worker process (user + system), in seconds"),
}
# A store command's label: its name as the master sent it, if it looks like one (the
# master sends a fixed set; a label must not grow without bound).
_COMMAND = re.compile(r"[A-Za-z][A-Za-z.]{0,23}")
_WORKER_STATES = (WorkerState.ALIVE, WorkerState.DISCONNECTED, WorkerState.DRAINING)


def _number(value: Any) -> Optional[float]:
    """A finite number from a heartbeat, else None (a bad field is skipped, not fatal)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    value = float(value)
    return value if math.isfinite(value) else None


class StateCollector:
    """What the master holds now, read at each scrape (a prometheus_client collector).

    `engine` is the master service (duck-typed: scheduler, now(), persistence,
    storage_problem, worker_link(id), web)."""

    def __init__(self, engine: Any) -> None:
        self.engine = engine

    def collect(self) -> Iterator:
        engine = self.engine
        s = engine.scheduler
        now = engine.now()
        yield from self._jobs(s)
        yield from self._workers(s, now)
        yield from self._storage(engine)
        web = getattr(engine, "web", None)
        sse = GaugeMetricFamily("titan_sse_clients", "Open Server-Sent Events streams of the "
                                "web API: the live changes (events) and job logs (log)",
                                labels=["stream"])
        counts = web.sse_clients() if web is not None else {}
        for stream in ("events", "log"):
            sse.add_metric([stream], counts.get(stream, 0))
        yield sse

    def _jobs(self, s) -> Iterator:
        by_state = dict.fromkeys(JobState, 0)
        ready: dict[frozenset, int] = {frozenset(): 0}
        pending = JobState.PENDING
        for job in s.jobs.values():
            state = job.state
            by_state[state] += 1
            if state is pending and job.queued:
                tags = job.spec.tags
                ready[tags] = ready.get(tags, 0) + 1
        jobs = GaugeMetricFamily("titan_jobs", "Jobs the master holds (not yet forgotten by "
                                 "retention), by state", labels=["state"])
        for state, n in by_state.items():
            jobs.add_metric([state.value], n)
        yield jobs
        queued = GaugeMetricFamily(
            "titan_ready_jobs", "Jobs ready to run (parents done, delay passed) that wait for "
            "a worker, by the tags they need (sorted, comma-separated; empty: none)",
            labels=["tags"])
        for tags, n in sorted((",".join(sorted(t)), n) for t, n in ready.items()):
            queued.add_metric([tags], n)
        yield queued
        runs = dict.fromkeys(RunState, 0)
        for run in s.runs.values():
            runs[run.state] += 1
        family = GaugeMetricFamily("titan_runs", "Pipeline runs the master holds, by state",
                                   labels=["state"])
        for state, n in runs.items():
            family.add_metric([state.value], n)
        yield family

    def _workers(self, s, now: float) -> Iterator:
        engine = self.engine
        by_state = dict.fromkeys(_WORKER_STATES, 0)
        slots = {"busy": 0, "free": 0, "unavailable": 0}
        labels = ["worker", "worker_id"]
        per = {
            "slots": GaugeMetricFamily("titan_worker_slots", "Slots of the worker", labels=labels),
            "busy": GaugeMetricFamily("titan_worker_busy_slots", "Slots of the worker that "
                                      "jobs hold (as the master counts them)", labels=labels),
            "age": GaugeMetricFamily("titan_worker_heartbeat_age_seconds", "Seconds since the "
                                     "master last heard from the worker", labels=labels),
            "state": GaugeMetricFamily("titan_worker_state", "1 for the worker's state, 0 for "
                                       "the others", labels=labels + ["state"]),
            "finished": CounterMetricFamily("titan_worker_jobs_finished", "Attempts the worker "
                                            "ran to an end (any exit), since it joined",
                                            labels=labels),
        }
        beats = {key: GaugeMetricFamily(name, text, labels=labels)
                 for key, (name, text) in HEARTBEAT_GAUGES.items()}
        beats.update({key: CounterMetricFamily(name, text, labels=labels)
                      for key, (name, text) in HEARTBEAT_COUNTERS.items()})
        for w in s.workers.values():
            by_state[w.state] = by_state.get(w.state, 0) + 1
            busy = len(w.running)
            free = max(0, w.slots - busy)
            slots["busy"] += busy
            slots["free" if w.state is WorkerState.ALIVE else "unavailable"] += free
            ids = [w.name, w.worker_id]
            per["slots"].add_metric(ids, w.slots)
            per["busy"].add_metric(ids, busy)
            per["age"].add_metric(ids, max(0.0, now - w.last_seen))
            for state in _WORKER_STATES:
                per["state"].add_metric(ids + [state.value], 1 if w.state is state else 0)
            per["finished"].add_metric(ids, w.completed)
            conn = engine.worker_link(w.worker_id)
            beat = getattr(conn, "last_heartbeat", None)
            if isinstance(beat, dict):
                for key, family in beats.items():
                    value = _number(beat.get(key))
                    if value is not None:
                        family.add_metric(ids, value)
        workers = GaugeMetricFamily("titan_workers", "Workers the master knows, by state "
                                    "(one given up for lost is forgotten)", labels=["state"])
        for state, n in by_state.items():
            workers.add_metric([state.value], n)
        yield workers
        family = GaugeMetricFamily(
            "titan_slots", "Slots of the known workers: busy (jobs hold them), free (on "
            "ALIVE workers) and unavailable (free, on DISCONNECTED or DRAINING ones)",
            labels=["state"])
        for state, n in slots.items():
            family.add_metric([state], n)
        yield family
        yield from per.values()
        yield from beats.values()

    def _storage(self, engine) -> Iterator:
        persistence = engine.persistence
        if persistence is not None:
            try:
                described = persistence.describe()
            except OSError:  # a file compaction just removed: the next scrape has it
                described = {}
            size = _number(described.get("bytes"))
            if size is not None:
                yield GaugeMetricFamily("titan_event_log_bytes", "Bytes of the event log on "
                                        "disk (snapshot and records since)", value=size)
            records = _number(described.get("records_since_compaction"))
            if records is not None:
                yield GaugeMetricFamily("titan_event_log_records_since_compaction",
                                        "Records appended since the last snapshot",
                                        value=records)
        yield GaugeMetricFamily("titan_storage_available", "1 while the event log can store "
                                "records, 0 while it cannot (changes are refused)",
                                value=0 if engine.storage_problem is not None else 1)


class MasterMetrics:
    """The master's registry: the collector of its state, and what is counted as it
    happens."""

    def __init__(self, engine: Any) -> None:
        self.engine = engine
        self.registry = CollectorRegistry()
        r = self.registry
        self.dispatch_latency = Histogram(
            "titan_dispatch_latency_seconds", "From a job being ready (parents done, delay "
            "or backoff passed) to the master giving it to a worker, per attempt",
            buckets=LATENCY_BUCKETS, registry=r)
        self.job_duration = Histogram(
            "titan_job_duration_seconds", "From the start of a job's last attempt to the job's "
            "end, by the state it ended in", ["state"], buckets=DURATION_BUCKETS, registry=r)
        self.jobs_ended = Counter("titan_jobs_ended", "Jobs that reached an end state, by "
                                  "that state", ["state"], registry=r)
        self.worker_joins = Counter(
            "titan_worker_joins", "Workers that registered: new (a worker process the "
            "master did not know) or reconnect (one it knew, back after a lost connection, "
            "being given up for lost or a master restart)", ["kind"], registry=r)
        self.workers_lost = Counter("titan_workers_lost", "Workers given up for lost (no "
                                    "heartbeat for master.heartbeat_timeout)", registry=r)
        self.fsync_seconds = Histogram(
            "titan_persistence_fsync_seconds", "How long one fsync of the event log took "
            "(the AOF backend)", buckets=FSYNC_BUCKETS, registry=r)
        self.store_commands = Counter(
            "titan_store_commands", "Commands the master sent to the store (TitanStore or "
            "Redis), by command and outcome: ok, error (the store refused it) or "
            "unavailable (no connection)", ["command", "outcome"], registry=r)
        self.store_seconds = Histogram(
            "titan_store_command_seconds", "From sending a command to the store to its reply",
            buckets=STORE_BUCKETS, registry=r)
        for state in JobState:  # every series from the start: rate() needs a zero first
            if state.terminal:
                self.jobs_ended.labels(state.value)
                self.job_duration.labels(state.value)
        self._seen: set[str] = set()  # workers that joined this master (their ids)
        for kind in ("new", "reconnect"):
            self.worker_joins.labels(kind)
        r.register(StateCollector(engine))
        ProcessCollector(registry=r)
        PlatformCollector(registry=r)

    # -- hooks -----------------------------------------------------------------------------

    def applied(self, event: object, decisions: list, now: float) -> None:
        """After the core applied `event` (live, not replayed) and decided `decisions`."""
        kind = type(event)
        if kind is ev.WorkerJoined:
            self._joined(event.worker_id, now)
        elif kind is ev.WorkerLost:
            self.workers_lost.inc()
        for d in decisions:
            kind = type(d)
            if kind is ev.Dispatch:
                job = self.engine.scheduler.jobs.get(d.job_id)
                if job is not None and job.queued_at is not None:
                    self.dispatch_latency.observe(max(0.0, now - job.queued_at))
            elif kind is ev.JobEnded:
                self._job_ended(d)

    def _joined(self, worker_id: str, now: float) -> None:
        """A worker registered: a reconnect if the master knew its id (a worker's id is new
        at each start of its process): its record is older than now (a lost connection,
        a master restart) or it joined this master before (given up for lost since)."""
        workers = self.engine.scheduler.workers
        w = workers.get(worker_id)
        if w is None:
            return
        known = w.joined_at < now or worker_id in self._seen
        self.worker_joins.labels("reconnect" if known else "new").inc()
        seen = self._seen
        seen.add(worker_id)
        if len(seen) > 2 * len(workers) + 16:  # ids of workers gone for good
            seen.intersection_update(workers)

    def _job_ended(self, d: ev.JobEnded) -> None:
        self.jobs_ended.labels(d.state.value).inc()
        job = self.engine.scheduler.jobs.get(d.job_id)
        # Only an attempt that was running when the job ended: not a job cancelled while
        # it waited (none, or its last attempt ended already and is kept in `attempts`).
        if job is None or not job.attempt or job.started_at is None \
                or job.finished_at is None \
                or (job.attempts and job.attempts[-1][0] == job.attempt):
            return
        self.job_duration.labels(d.state.value).observe(
            max(0.0, job.finished_at - job.started_at))

    def fsync_took(self, seconds: float) -> None:
        self.fsync_seconds.observe(seconds)

    def store_command(self, command: Any, seconds: float, outcome: str) -> None:
        if isinstance(command, bytes):
            command = command.decode("ascii", "replace")
        name = str(command).upper() if _COMMAND.fullmatch(str(command)) else "OTHER"
        self.store_commands.labels(name, outcome).inc()
        self.store_seconds.observe(seconds)

    # -- the exposition ----------------------------------------------------------------------

    def exposition(self, accept: Optional[str] = None) -> tuple[bytes, str]:
        """The registry in the format the scraper's Accept header asks for (OpenMetrics,
        or Prometheus' text format by default): (body, content type)."""
        encode, content_type = choose_encoder(accept or "")
        return encode(self.registry), content_type
