"""The state every part of the scheduler shares, and the constants the hot paths read."""
from __future__ import annotations

from titan.core.model import TERMINAL_STATES, DagRun, JobRecord, JobState, Schedule, \
    WorkerRecord, WorkerState

Decisions = list

# The hot paths read these as globals: cheaper than an attribute of the enum class.
_PENDING = JobState.PENDING
_RUNNING = JobState.RUNNING
_COMPLETED = JobState.COMPLETED
_TERMINAL = TERMINAL_STATES
_ALIVE = WorkerState.ALIVE
# Why a service some job of its run needed ended when the run did.
STOPPED_WITH_RUN = "stopped: its run ended"


def _live(run: DagRun) -> int:
    """How many jobs of the run have not ended (services still up, once it has ended)."""
    return len(run.jobs) - sum(run.counts.get(state, 0) for state in _TERMINAL)


def _span(seconds: float) -> str:
    seconds = int(round(seconds))
    if seconds >= 3600:
        return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
    if seconds >= 60:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds}s"


class CoreState:
    """What the parts share: the records, the counters that number them, and what the
    event being applied has moved so far (`apply` turns it into RunChanged decisions)."""

    jobs: dict[str, JobRecord]
    workers: dict[str, WorkerRecord]
    runs: dict[str, DagRun]
    agent_runs: dict[str, list[str]]
    schedules: dict[str, Schedule]
    nodes: dict[str, tuple[str, ...]]

    def _init_core(self) -> None:
        self.jobs = {}
        self.workers = {}
        self.runs = {}
        self.agent_runs = {}  # agent run id -> its DAG runs, in order
        self.schedules = {}
        # Node id -> its keys in every run, oldest first.  Tuples (strings only: the garbage
        # collector does not walk them); a node is in a new run far less often than read.
        self.nodes = {}
        self._seq = 0
        self._worker_seq = 0
        self._run_seq = 0
        self._now = 0.0
        self._dirty_runs: dict[str, DagRun] = {}
        # Jobs of runs whose state moved (or that joined a running run) in this event: each
        # RunChanged names its own, so a watcher is told what changed, not the whole run.
        self._moved: list[JobRecord] = []
        self._announce = True  # False while replaying: see Scheduler.replay()
        self.replayed = 0

    def _run_changed(self, run: DagRun, out: Decisions) -> None:
        self._dirty_runs[run.run_id] = run

    def _by_seq(self, job_ids) -> list[str]:
        """Job ids in submission order (unknown ones last, by id): never a set's hash order,
        so the decisions do not depend on PYTHONHASHSEED."""
        return sorted(job_ids, key=lambda j: (0, self.jobs[j].seq, j) if j in self.jobs
                      else (1, 0, j))


