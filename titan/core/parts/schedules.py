"""Schedules: cron expressions that start a DAG run from a template each time they fire.

A schedule arms one timer (`SetTimer(("cron", id, fired))`) for its next firing; the timers
part hands the fired timer back to `_fire`.  Calls `_dag_submitted` (runs).
"""
from __future__ import annotations

from datetime import datetime, timezone

from titan.core import events as ev
from titan.core.cron import cron_next
from titan.core.model import Schedule
from titan.core.parts.base import CoreState, Decisions


class Schedules(CoreState):
    def _schedule_added(self, e: ev.ScheduleAdded, now: float, out: Decisions) -> None:
        sched = Schedule(schedule_id=e.schedule_id, name=e.template.name, cron=e.cron,
                         template=e.template, created_at=now)
        self.schedules[e.schedule_id] = sched
        self._arm(sched, now, out)

    def _schedule_removed(self, e: ev.ScheduleRemoved, now: float, out: Decisions) -> None:
        self.schedules.pop(e.schedule_id, None)

    def _arm(self, sched: Schedule, after: float, out: Decisions) -> None:
        sched.next_at = cron_next(sched.cron, after)
        out.append(ev.SetTimer(("cron", sched.schedule_id, sched.fired), sched.next_at))

    def _fire(self, sched: Schedule, now: float, out: Decisions) -> None:
        at = sched.next_at or now
        stamp = datetime.fromtimestamp(at, timezone.utc).strftime("%Y%m%dT%H%M%S")
        run_id = f"{sched.name}-{stamp}"
        while run_id in self.runs:
            run_id += "x"
        sched.fired += 1
        sched.last_run_id = run_id
        self._dag_submitted(ev.DagSubmitted(run_id, sched.template), now, out,
                            schedule_id=sched.schedule_id)
        # Runs missed while the master was busy or down are not made up one by one: the
        # next firing is the first one after now.
        self._arm(sched, max(now, at), out)
