"""The scheduler's parts: one concern each, composed by `titan.core.scheduler.Scheduler`.

Each part is a mixin class over the state every part shares (`base.CoreState`: jobs, runs,
workers, the clock of the event being applied, the runs that moved).  The composed
`Scheduler` is one object, so a part calls another through `self` at the cost of a plain
method call: the hot paths (dispatch, a job's end, a state change) pay nothing for the
split.  A part's docstring says which methods of other parts it calls; its own tests
(tests/unit/test_core_parts.py) compose it with `CoreState` and stand-ins for those.

    part        its concern                                         imports (and model)
    base        shared state, hot constants                         -
    jobs        one job's life: admit, start, end, retry, cancel    base, events
    runs        DAG runs: add jobs, release, cascade, run end       base, events
    gates       approval gates: wait, decide, time out              base, events, dag
    services    services in pipelines: up, stopped with the run     base, events
    workers     join, adopt, heartbeats, loss, requeue              base, events
    placement   ready queues, routers, dispatch                     base, events, ready, routing
    retention   finished jobs and runs, log bytes, forgetting       base, events
    schedules   cron firings                                        base, events, cron
    timers      delays, retries' backoff, gate timeouts, cron       base, events
    validation  refusing an event before it is recorded             base, events, dag, cron
    views       what clients see (waiting reasons, views)           base, dag
    snapshot    the state as plain data and back                    base, codec

Parts never import one another (except `base`); only titan/core/scheduler.py imports them
all (views and snapshot name `Scheduler` for type checkers only); test_core_parts checks.
Pure code: no reactor, no I/O, time only as the `now` of the event.
"""
