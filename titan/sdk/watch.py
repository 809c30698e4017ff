"""What both clients share to follow a run by its changes, and to build batch submissions.

A watcher gets the run once (WATCH_RUN), then RUN_CHANGED pushes that carry only the jobs
that moved; `RunFollower` folds them into one run dict that stays current.
"""
from __future__ import annotations

import shlex
from typing import Any, Callable, Iterable, Optional, Sequence, Union

from titan.errors import TitanError

ACTIVE = ("RUNNING", "WAITING_APPROVAL")
BATCH = 5000  # jobs per SUBMIT_JOBS / WAIT_JOBS request (well under the frame limit)


class RunFollower:
    """The run as the last push left it.

    `run` is the run's view; with `jobs`, `run["jobs"]` lists every job in the run's order,
    kept current; without, `run["active"]` lists the jobs running or waiting for approval.
    `run["changed"]` is the jobs the last update moved (all of them, for the snapshot)."""

    def __init__(self, snapshot: dict, jobs: bool = True) -> None:
        self.jobs = jobs
        self.run = dict(snapshot)
        self._at: dict[str, int] = {}
        self._active: dict[str, dict] = {}
        if jobs:
            self.run["jobs"] = list(snapshot.get("jobs") or ())
            self._at = {j["node"]: i for i, j in enumerate(self.run["jobs"])}
            self.run["changed"] = list(self.run["jobs"])
            self._active = {j["node"]: j for j in self.run["jobs"] if j["state"] in ACTIVE}
        else:
            self._active = {j["node"]: j for j in snapshot.get("active") or ()}
            self.run["changed"] = list(self._active.values())
        self.run["active"] = list(self._active.values())

    @property
    def ended(self) -> bool:
        return self.run["state"] != "RUNNING"

    def apply(self, push: dict) -> bool:
        """Fold in a RUN_CHANGED push; False for one older than what is known."""
        if push.get("run_id") != self.run["run_id"] or push["version"] < self.run["version"]:
            return False
        for key in ("state", "version", "counts", "total", "finished_at"):
            if key in push:
                self.run[key] = push[key]
        changed = push.get("jobs") or []
        active = self._active
        for job in changed:
            node = job["node"]
            if self.jobs:
                at = self._at.get(node)
                if at is None:
                    self._at[node] = len(self.run["jobs"])
                    self.run["jobs"].append(job)
                else:
                    self.run["jobs"][at] = job
            if job["state"] in ACTIVE:
                active[node] = job
            else:
                active.pop(node, None)
        self.run["changed"] = changed
        self.run["active"] = list(active.values())
        return True


def _one(item: Any, defaults: dict) -> dict:
    from titan.sdk.client import submit_body
    if isinstance(item, dict):
        options = dict(defaults, **item)
    elif isinstance(item, (str, list, tuple)):
        options = dict(defaults, command=item)
    else:
        raise TypeError(f"a job is a command (a string or a list) or a dict of submit "
                        f"options, not {type(item).__name__}")
    if "command" not in options:
        raise TypeError(f"a job needs a command: {item!r}")
    job_id = options.pop("job_id", None)
    body = submit_body(options.pop("command"), **options)
    if job_id is not None:
        body["job_id"] = job_id
    return body


def batch_bodies(items: Iterable[Any], defaults: dict) -> list[dict]:
    """SUBMIT_JOBS bodies: each item a command or a dict of `submit` options (`command`
    and any of priority, tags, timeout, retries, delay, env, cwd, name, job_id), over
    `defaults`."""
    bodies = []
    for i, item in enumerate(items):
        try:
            bodies.append(_one(item, defaults))
        except (TypeError, TitanError) as e:
            # Named by its place, as the master names a bad job of a batch.
            raise type(e)(f"jobs[{i}]: {e}") from None
    return bodies


Template = Union[str, Sequence[str], Callable[[Any], Any]]


def expand(template: Template, item: Any) -> Any:
    """The command (or submit options) `template` makes for `item`.

    - a callable: whatever it returns for the item (a command, or a dict of options);
    - a string: a shell command; `{}` (or `{item}`) is replaced by the item, shell-quoted;
      without either, the item is added as the last argument (as xargs does);
    - a list: arguments, no shell; `{}` / `{item}` in each is replaced by the item as it is;
      without either anywhere, the item is the last argument."""
    if callable(template):
        return template(item)
    text = str(item)
    if isinstance(template, str):
        quoted = shlex.quote(text)
        if "{}" in template or "{item}" in template:
            return template.replace("{item}", quoted).replace("{}", quoted)
        return f"{template} {quoted}"
    args = [str(a) for a in template]
    if any("{}" in a or "{item}" in a for a in args):
        return [a.replace("{item}", text).replace("{}", text) for a in args]
    return args + [text]


def chunks(items: list, size: int = BATCH) -> Iterable[list]:
    for start in range(0, len(items), size):
        yield items[start:start + size]


def check_ids(job_ids: Any) -> Optional[list]:
    if isinstance(job_ids, str):
        raise TypeError("wait_many takes a list of job ids, not one string")
    return list(job_ids)
