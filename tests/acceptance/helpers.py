"""Shared set-up for acceptance tests: one real cluster per test class, waits that say what
they waited for, and a journal of what really ran (for exactly-once checks)."""
from __future__ import annotations

import atexit
import os
import shlex
import subprocess
import tempfile
import time
from typing import Any, Callable, Iterable, Optional, Sequence, Union

import attrs
from twisted.python.reflect import prefixedMethodNames
from twisted.trial.unittest import SynchronousTestCase

from titan.errors import RemoteError, TitanError
from titan.testing.cluster import Cluster

ENDED = {"COMPLETED", "FAILED", "DEAD", "CANCELLED"}


# -- one cluster per class, stopped when the class is over ---------------------------------

# The class whose cluster is up in this process (at most one: trial runs the tests of a
# process one after the other, and with -j each process gets a share of every class).
_live: Optional[type] = None


def release_class_cluster(keep: Optional[type] = None) -> None:
    """Stop the cluster of the class that had one in this process, unless it is `keep`'s:
    a test of another class has started, so that class is over here (trial has no class
    fixtures; the tests of a class run one after the other in each process)."""
    global _live
    cls, _live = _live, None
    if cls is None or cls is keep:
        _live = cls
        return
    cluster = cls.__dict__.get("cluster")
    cls.cluster = None  # a later test of the class (trial --order) starts a new one
    if cluster is not None:
        cluster.stop()


atexit.register(release_class_cluster)

# Any test of another class ends a class here, not only a ClusterTestCase's: a class's
# cluster must not sit idle under the unit tests or a test that makes its own cluster.
_run = SynchronousTestCase.run


def _run_releasing(self: SynchronousTestCase, result: Any) -> Any:
    release_class_cluster(keep=type(self))
    return _run(self, result)


SynchronousTestCase.run = _run_releasing  # type: ignore[method-assign]


class ClusterTestCase(SynchronousTestCase):
    """Tests of a class share one cluster, started by the first of them to run in this
    process and stopped when the last of them has run here, when a test of another class
    starts here (with -j2 the class may be shared between two processes) or, failing
    both, when the process exits (its processes get SIGTERM when their parent goes)."""

    workers = 2
    slots = 4
    cluster_options: dict = {}
    cluster: Cluster
    _ran_here = 0

    def setUp(self) -> None:
        global _live
        cls = type(self)
        release_class_cluster(keep=cls)
        if cls.__dict__.get("cluster") is None:
            cls.base_dir = tempfile.mkdtemp(prefix="titan-acceptance-")
            cls._ran_here = 0
            cls.cluster = Cluster(cls.base_dir, workers=cls.workers, slots=cls.slots,
                                  **cls.cluster_options)
            try:
                cls.cluster.start()  # which stops what it started if it fails
            except BaseException:
                cls.cluster = None
                raise
            _live = cls
        self.addCleanup(self._one_more_ran)

    @classmethod
    def _one_more_ran(cls) -> None:
        cls._ran_here += 1
        if cls._ran_here >= len(prefixedMethodNames(cls, "test")):
            release_class_cluster()  # every test of the class ran in this process

    def titan(self, *args: str, **kwargs):
        """The `titan` command's result; if it has not ended by its timeout (`titan run
        --wait` on a run that is stuck, say), the test fails naming the jobs not ended."""
        try:
            return self.cluster.cli(*args, **kwargs)
        except subprocess.TimeoutExpired as e:
            with self.cluster.client() as c:
                stuck = jobs_not_ended(c)
            said = (e.stderr or b"").decode(errors="replace")
            self.fail(f"titan {' '.join(args)} still running after {e.timeout:g}s; it said:\n"
                      f"{said}\njobs not ended:\n{stuck}")

    def wait_for(self, predicate, timeout: float = 20.0, what: Union[str, Callable] = "condition",
                 **kwargs):
        return wait_for(self, predicate, timeout, what, **kwargs)


# -- waits -----------------------------------------------------------------------------------

def _short(value: Any, limit: int = 600) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + f"... ({len(text)} characters)"


def wait_for(case, predicate, timeout: float = 20.0, what: Union[str, Callable] = "condition",
             *, interval: float = 0.05):
    """predicate()'s value once it is true; `case` fails after `timeout` seconds, saying
    what it waited for and the last value seen (`what` may be a function: called then, it
    can describe the state at the time)."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            said = what() if callable(what) else what
            case.fail(f"timed out after {timeout:g}s waiting for {said} "
                      f"(last value: {_short(value)})")
        time.sleep(interval)


def describe_jobs(client, jobs: Iterable[dict]) -> str:
    """One line per job: its state, attempts, worker, and why it waits or ended so."""
    lines = []
    for job in jobs:
        if "waiting" not in job:  # a run's short view of its jobs: ask for the whole job
            try:
                job = client.job(job["job_id"])
            except TitanError:
                pass
        line = (f"  {job['job_id']}: {job['state']}, attempt {job.get('attempt')}, "
                f"worker {job.get('worker') or job.get('worker_id') or '-'}")
        if job.get("waiting"):
            line += f", waiting: {job['waiting']}"
        if job.get("reason"):
            line += f", reason: {job['reason']}"
        lines.append(line)
    return "\n".join(lines)


def jobs_not_ended(client, limit: int = 1000) -> str:
    """describe_jobs for every job of the cluster not ended (for a failure's message)."""
    try:
        stuck = [j for j in client.jobs(limit=limit) if j["state"] not in ENDED]
    except TitanError as e:
        return f"  (cannot list the jobs: {e})"
    return describe_jobs(client, stuck) if stuck else "  (none)"


def wait_ended(case, client, ids: Union[str, Sequence[str]], timeout: float = 60.0) -> list:
    """The jobs (as the SDK's wait returns them) once every one has ended; after `timeout`
    seconds `case` fails naming each job not ended with its state, attempt, worker and
    waiting reason."""
    ids = [ids] if isinstance(ids, str) else list(ids)
    jobs = client.wait_many(ids, timeout=timeout)
    stuck = [j for j in jobs if j["state"] not in ENDED]
    if stuck:
        case.fail(f"{len(stuck)} of {len(jobs)} jobs not ended after {timeout:g}s:\n"
                  + describe_jobs(client, stuck))
    return jobs


def wait_run_ended(case, client, run_id: str, timeout: float = 60.0) -> dict:
    """The run with its jobs once it has ended; after `timeout` seconds `case` fails naming
    each of its jobs not ended with its state, attempt, worker and waiting reason."""
    run = client.wait_run(run_id, timeout=timeout)
    if run["state"] == "RUNNING":
        stuck = [j for j in run["jobs"] if j["state"] not in ENDED]
        case.fail(f"run {run_id} not ended after {timeout:g}s ({run['counts']}); "
                  f"{len(stuck)} jobs not ended:\n" + describe_jobs(client, stuck))
    return run


def retrying(cluster: Cluster, call: Callable, timeout: float = 60.0):
    """call(client) with a new client, again while the master cannot be reached (it is
    restarting) for up to `timeout` seconds; its refusals (RemoteError) are real."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            with cluster.client() as c:
                return call(c)
        except TitanError as e:
            if isinstance(e, RemoteError) or time.monotonic() > deadline:
                raise
        time.sleep(0.2)  # the step of a loop bounded by its deadline


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie is dead for our purposes.
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(") ", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def read_pid(path: str, timeout: float = 10.0) -> int:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with open(path) as f:
                text = f.read().strip()
            if text:
                return int(text)
        except (OSError, ValueError):
            pass
        time.sleep(0.02)
    raise AssertionError(f"no pid in {path}")


class LegacyChecks:
    """For tests that talk to the master as the reference SDK does (`self.c`, a
    LegacyClient) and look at the result the Titan way."""

    def wait_ended(self, *refs: str, timeout: float = 60.0) -> dict:
        states: dict = {}

        def ended():
            for ref in refs:
                if states.get(ref) not in ENDED:
                    states[ref] = self.c.get_job_status(ref)
            return all(states[r] in ENDED for r in refs)
        self.wait_for(ended, timeout, f"{', '.join(refs)} to end (now {states})")
        return states

    def structured(self, ref: str) -> dict:
        """The job as Titan's own client sees it (its bare id: unique in these tests)."""
        from titan.protocols import legacy
        with self.cluster.client() as client:
            return client.job(legacy.node_of(ref))


# -- what really ran ---------------------------------------------------------------------

@attrs.frozen
class Entry:
    what: str  # "start", or "end": ran to its end with exit status 0
    attempt: int
    worker: str  # the worker's name
    at: float


class Journal:
    """What really ran, to check against what the master says: a job wrapped by `sh()`
    appends a line to a file named after it (one folder per run) when it starts, and one
    when its script has run to its end with status 0."""

    def __init__(self, root: str) -> None:
        self.root = root
        os.makedirs(root, exist_ok=True)

    def note(self, what: str) -> str:
        """A shell line that journals `what` for the job running it (in a shell where
        `sh()` has set $journal)."""
        return f'echo "{what} $TITAN_ATTEMPT $TITAN_WORKER_ID $(date +%s.%N)" >> "$journal"'

    def sh(self, script: Union[str, Sequence[str]]) -> list[str]:
        """The command that runs `script` (shell text, or an argv) between two notes; it
        exits with the script's status."""
        if not isinstance(script, str):
            script = shlex.join(script)
        return ["sh", "-c", f'journal={shlex.quote(self.root)}/"$TITAN_JOB_ID"\n'
                            'mkdir -p "${journal%/*}"\n'  # the run's folder
                            f"{self.note('start')}\n( {script}\n)\nrc=$?\n"
                            f"[ $rc = 0 ] && {self.note('end')}\nexit $rc\n"]

    def entries(self, job_id: str) -> list[Entry]:
        try:
            with open(os.path.join(self.root, job_id)) as f:
                lines = f.read().splitlines()
        except FileNotFoundError:
            return []
        entries = []
        for line in lines:
            what, attempt, worker_id, at = line.split()
            entries.append(Entry(what, int(attempt), worker_id.rsplit("-", 1)[0], float(at)))
        return entries

    def starts(self, job_id: str) -> list[Entry]:
        return [e for e in self.entries(job_id) if e.what == "start"]

    def ends(self, job_id: str) -> list[Entry]:
        return [e for e in self.entries(job_id) if e.what == "end"]

    def check_exactly_once(self, case, jobs: Iterable[dict],
                           killed: Optional[dict[str, float]] = None) -> dict:
        """Every attempt started at most once; a job that ended COMPLETED ran to its end
        exactly once, in its last attempt, and did not start after it finished; a job not
        COMPLETED never ran to its end.  The one exception: an attempt that ran to its end
        on a worker killed since (`killed`: name -> time of the kill), which may have died
        before it could report it, so that the job ran again.  Returns counts for a
        summary line."""
        killed = killed or {}
        counts = {"jobs": 0, "completed": 0, "starts": 0, "lost with a worker": 0}
        for job in jobs:
            job_id, entries = job["job_id"], self.entries(job["job_id"])
            starts = [e.attempt for e in entries if e.what == "start"]
            twice = sorted({a for a in starts if starts.count(a) > 1})
            case.assertEqual(twice, [], f"{job_id}: attempts {twice} started twice: {entries}")
            ends = [e for e in entries if e.what == "end"]
            counted = [e for e in ends if job["state"] == "COMPLETED"
                       and e.attempt == job["attempt"]]
            lost = [e for e in ends if e not in counted and e.worker in killed
                    and e.at <= killed[e.worker]]
            extra = [e for e in ends if e not in counted and e not in lost]
            if job["state"] == "COMPLETED":
                case.assertEqual(len(counted), 1,
                                 f"{job_id} COMPLETED in attempt {job['attempt']}, which ran "
                                 f"to its end {len(counted)} times: {entries}")
                case.assertEqual(extra, [], f"{job_id} COMPLETED in attempt {job['attempt']}, "
                                            f"but other attempts ran to their end: {entries}")
                late = [e for e in entries if e.what == "start" and job.get("finished_at")
                        and e.at > job["finished_at"]]
                case.assertEqual(late, [], f"{job_id} started again after it completed")
                counts["completed"] += 1
            else:
                case.assertEqual(extra, [], f"{job_id} is {job['state']} but ran to its end: "
                                            f"{entries}")
            counts["jobs"] += 1
            counts["starts"] += len(starts)
            counts["lost with a worker"] += len(lost)
        return counts

    def check_after_restart(self, case, cluster: Cluster, job_ids: Sequence[str]) -> dict:
        """check_exactly_once for jobs that had ended before a restart of the master: they
        do not run again.  Anything the master would wrongly send again goes to a worker as
        soon as it is back, before a job submitted after that: once that one has run, the
        journal has the truth."""
        cluster.wait_for_workers(len(cluster.workers))
        with cluster.client() as c:
            jobs = [c.job(j) for j in job_ids]  # before the next one may get them forgotten
            [after] = wait_ended(case, c, c.submit(self.sh("true")), 30)
        case.assertEqual(after["state"], "COMPLETED", after)
        return self.check_exactly_once(case, jobs + [after])
