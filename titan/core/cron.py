"""Cron expressions (croniter), in UTC: when a schedule fires next, and whether an
expression is one.  Pure functions, imported by the schedules and validation parts."""
from __future__ import annotations

from datetime import datetime, timezone


def cron_next(cron: str, after: float) -> float:
    """The first time after `after` (epoch seconds) that `cron` names, in UTC."""
    from croniter import croniter
    return croniter(cron, datetime.fromtimestamp(after, timezone.utc)).get_next(float)


def cron_valid(cron: str) -> bool:
    from croniter import croniter
    return isinstance(cron, str) and croniter.is_valid(cron)
