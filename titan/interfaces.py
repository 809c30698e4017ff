"""The pluggable parts of Titan, as zope interfaces.

Each kind has a factory interface that Twisted's plugin system finds in the `titan.plugins`
package (`twisted.plugin.getPlugins(IPersistenceFactory, titan.plugins)`): built-ins and
third-party modules alike.  The config names a plugin by its `name`.
"""
from __future__ import annotations

from zope.interface import Attribute, Interface


class IPersistence(Interface):
    """Where the master's events go before they take effect, and where recovery reads them.

    Records are opaque bytes (encoded events).  `compact(snapshot)` replaces everything
    appended before the call by `snapshot`; records appended after it follow it.
    """

    def load():
        """Read what is stored: `(snapshot or None, iterable of records after it)`.

        Called once, before any append.  Repairs a torn tail (with a warning); raises
        `CorruptLog` for damage it must not repair silently."""

    def append(record):
        """Store one record.  Returns a Deferred that fires once it is as durable as the
        fsync policy promises (at once for `everysec` and `no`: see `barrier`)."""

    def barrier():
        """A Deferred that fires once every record appended so far is as durable as the
        policy promises: on disk for `always`, out of the process (written to the operating
        system, committed) for `everysec` and `no`.  The master sends no reply before it,
        and no DISPATCH or KILL to a worker: a crash of the process cannot take back what a
        reply reported or what a worker was given."""

    def compact(snapshot):
        """Start a compaction: `snapshot` (bytes) stands for every record appended so far.
        Returns a Deferred that fires when the compacted files are in place; appends go on
        meanwhile."""

    def sync():
        """Make every appended record durable now; a Deferred."""

    def close():
        """Sync and release the files; a Deferred."""

    def describe():
        """A dict for people: backend, where, sizes, policy."""

    unavailable = Attribute(
        "None while records are being stored, else why not (one line, e.g. 'cannot write "
        "/data/log/events.0.aof: No space left on device').  A write that failed or was cut "
        "short is never acknowledged: its records stay pending (nothing torn is left in the "
        "log) and the backend retries them with backoff until they are stored; the "
        "Deferreds of `append` and `barrier` that cover them wait meanwhile.")

    def watch(callback):
        """Call `callback(reason)` each time `unavailable` changes: a reason when storing
        stops working, None once the pending records are stored again."""


class StorageUnavailable(Exception):
    """Records could not be stored: `reason` says why.  Appends and barriers fail with it
    only when the backend is closed with records it could not store."""

    def __init__(self, reason: str) -> None:
        super().__init__(f"storage unavailable: {reason}")
        self.reason = reason


class IPersistenceFactory(Interface):
    name = Attribute("The name the config uses, e.g. 'aof'.")
    description = Attribute("One line for `titan plugins`.")

    def build(data_dir, options):
        """An IPersistence storing under `data_dir`, with the config's `options` dict.

        `options["reactor"]`, when present, is the reactor to schedule writes with (the
        master's own: a test's fake clock); otherwise the global one."""


class IRouter(Interface):
    """One link of the routing chain: narrows or orders the workers that could take a job.

    Pure: no I/O; it must not change what it is given (records are the scheduler's own)."""

    name = Attribute("The name the config's `router:` list uses.")
    description = Attribute("One line for `titan plugins`.")

    def route(job, candidates, context):
        """The candidates (live workers with a free slot: .name, .tags, .slots, .running,
        .completed) that may take `job` (.job_id, .spec with .tags, .affinity, ...), best
        first.  `context.parent_workers(job)` names the workers that ran its parents.
        An empty list: not now (the job waits)."""

    def explain(job, workers):
        """Why `job` cannot run on any of the live `workers`, in words, or None."""


class IRouterFactory(Interface):
    name = Attribute("The name the config uses.")
    description = Attribute("One line for `titan plugins`.")

    def build(options):
        """An IRouter."""


class IAutoscaler(Interface):
    """Pure decision logic: from what waits and who works, which workers to start or retire."""

    name = Attribute("The name the config's `autoscaler: {name: ...}` uses.")

    def evaluate(view, now):
        """A list of `titan.core.autoscale.SpawnWorker` / `RetireWorker` decisions for the
        `ScaleView` `view` at time `now`, each with the reason it was taken."""


class IAutoscalerFactory(Interface):
    name = Attribute("The name the config uses.")
    description = Attribute("One line for `titan plugins`.")

    def build(options):
        """An IAutoscaler configured from the config's `autoscaler:` section (a dict)."""


class CorruptLog(Exception):
    """Damage in the middle of a log: start-up stops rather than lose what follows it."""

    def __init__(self, path: str, offset: int, problem: str) -> None:
        super().__init__(f"{path} is damaged at byte {offset}: {problem}; see what can be "
                         f"saved with `titan aof check {path.rsplit('/', 1)[0]}` and repair "
                         f"it with `titan aof check --fix`")
        self.path = path
        self.offset = offset
