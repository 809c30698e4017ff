"""Pipelines: a DAG of jobs and approval gates, from a YAML file or built in Python.

Both ways in give the same `Pipeline`, and `Pipeline.to_spec()` turns it into the body the
master takes for SUBMIT_DAG::

    from titan.sdk.pipeline import Pipeline, load_pipeline

    p = Pipeline("etl")
    extract = p.job("extract", ["python3", "extract.py"], retries=2, timeout=60)
    transform = p.job("transform", "python3 transform.py")        # split like a shell
    review = p.gate("review", message="Ship it?", timeout="1h")
    load = p.script("load", path="scripts/load.py", args=["--fast"])
    extract >> transform >> review >> load
    spec = p.to_spec()

    same = load_pipeline("etc/pipelines/etl.yaml").to_spec()

Dependencies: ``a >> b`` (b runs after a; gives b), ``[a, b] >> c``, ``a >> [b, c]``,
``c << a`` (gives a), ``c << [a, b]``, or ``depends_on=["a"]`` by id (the id may name a
job added later; `to_spec` checks it).

The YAML format is the public reference's (``name``, ``project``, ``jobs`` with ``id``,
``type``, ``file``, ``args``, ``depends_on``, ``requirement``, ``priority``, ``delay``,
``affinity``, ``port``, ``hitl_message``, ``max_wait_seconds``) plus Titan's keys: top level
``schedule``, ``agent_run_id``, ``stage``, ``max_jobs``; per job ``command``, ``retries``,
``timeout``, ``env``, ``tags``, ``cwd`` and ``gate: true`` (with ``message``, ``timeout``,
``on_timeout``).  A ``file`` is read relative to the YAML file's directory.  Every error is a
`PipelineError` naming the file, the line and the key.

`Pipeline.to_yaml()` writes that format back.  A script job is written as ``file: <name>``
(its basename), so its script must sit beside the YAML file: `Pipeline.save(path)` writes
the YAML and the scripts together.
"""
from __future__ import annotations

import contextlib
import gc
import io
import math
import os
import re
import shlex
from typing import Any, Callable, Iterable, Mapping, Optional, Sequence, Union

import yaml

from titan.errors import TitanError

# zipfile and the reference's archive launcher (titan.protocols.legacy, which imports
# zipfile too) are imported where a project folder is shipped: `titan run` of a pipeline
# without file jobs never needs them, and they are ~4 ms of every command's start.

__all__ = ["Pipeline", "Job", "Gate", "PipelineError", "load_pipeline", "GATE_TIMEOUT",
           "document_message"]

GATE_TIMEOUT = 48 * 3600.0
GENERAL = "GENERAL"  # the reference's requirement for "any worker": no tag
NAME = re.compile(r"^[A-Za-z0-9_.-]+$")
JOB_TYPES = ("run", "service")
ON_TIMEOUT = ("reject", "approve")

TOP_KEYS = ("name", "project", "jobs", "schedule", "agent_run_id", "stage", "max_jobs",
            "version", "workspace")
WORKSPACES = ("job", "shared")  # each job its own directory, or one per run on each worker
JOB_KEYS = ("id", "type", "file", "args", "depends_on", "requirement", "priority", "delay",
            "affinity", "port", "hitl_message", "max_wait_seconds", "command", "retries",
            "timeout", "env", "gate", "tags", "cwd", "message", "on_timeout", "restart",
            "health", "persist")
GATE_KEYS = ("id", "gate", "depends_on", "message", "hitl_message", "timeout",
             "max_wait_seconds", "on_timeout")

DOCUMENT = "<document>"  # the path a document's problems are read from (from_document)
_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_DURATION = re.compile(r"(\d+(?:\.\d*)?|\.\d+)\s*(ms|s|m|h|d)")


class PipelineError(TitanError):
    """A pipeline that cannot be submitted: the message says where and why.  `step` (a
    job's id) and `key` name what it is about, where it has one (for the dashboard's
    constructor, which marks the step; the message is what `titan run` prints)."""

    def __init__(self, message: str, step: Optional[str] = None,
                 key: Optional[str] = None) -> None:
        super().__init__(message)
        self.step = step
        self.key = key


class _Bad(Exception):
    """A value refused; the message is what follows the key (`must be ...` or `: ...`)."""


# ---------------------------------------------------------------------------------------------
# Values: one validator per kind, shared by the builder and the YAML reader.

def _name_ok(value: Any) -> str:
    if not isinstance(value, str) or not NAME.match(value):
        raise _Bad(f"must be letters, digits, '_', '.' or '-', not {value!r}")
    return value


def _whole(value: Any, minimum: Optional[int] = None) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise _Bad(f"must be a whole number, not {value!r}")
    if minimum is not None and value < minimum:
        raise _Bad(f"must be {minimum} or more, not {value!r}")
    return value


def _seconds(value: Any, zero_ok: bool) -> float:
    """A number of seconds, or a string with units: '500ms', '2s', '5m', '1h', '1h30m'."""
    seconds: Optional[float] = None
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        seconds = float(value)
    elif isinstance(value, str):
        text = value.strip().lower()
        try:
            seconds = float(text)
        except ValueError:
            pos, total = 0, 0.0
            for match in _DURATION.finditer(text):
                if match.start() != pos and text[pos:match.start()].strip():
                    break
                total += float(match.group(1)) * _UNITS[match.group(2)]
                pos = match.end()
            else:
                if pos and not text[pos:].strip():
                    seconds = total
    if seconds is None or not math.isfinite(seconds):
        raise _Bad(f"must be a number of seconds or a duration like '500ms', '2s', '5m', "
                   f"'1h', not {value!r}")
    if seconds < 0 or (seconds == 0 and not zero_ok):
        raise _Bad(f"must be {'0 or more' if zero_ok else 'more than 0'} seconds, not {value!r}")
    return seconds


def _opt(check: Callable[[Any], Any]) -> Callable[[Any], Any]:
    return lambda value: None if value is None else check(value)


def _text(value: Any) -> str:
    if not isinstance(value, str):
        raise _Bad(f"must be a string, not {value!r}")
    return value


_STR = {str}


def _strings(value: Any, what: str = "a list of strings") -> list[str]:
    if not isinstance(value, (list, tuple)) or not set(map(type, value)) <= _STR:
        if not isinstance(value, (list, tuple)) or not all(isinstance(v, str) for v in value):
            raise _Bad(f"must be {what}, not {value!r}")
    return list(value)


def _command(value: Any) -> list[str]:
    if isinstance(value, str):
        try:
            value = shlex.split(value)
        except ValueError as e:
            raise _Bad(f": cannot split {value!r} like a shell: {e}") from None
    command = _strings(value, "a string or a list of strings")
    if not command or not command[0]:
        raise _Bad(": the command is empty")
    return command


def _args(value: Any) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str):
        try:
            return shlex.split(value)
        except ValueError as e:
            raise _Bad(f": cannot split {value!r} like a shell: {e}") from None
    return _strings(value, "a string or a list of strings")


def _tags(value: Any) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str):
        value = value.split(",")
    tags = []
    for tag in _strings(value, "a list of tags or a comma-separated string"):
        tag = tag.strip()
        if not tag or "," in tag:
            raise _Bad(f"must be a list of tags or a comma-separated string, not {value!r}")
        if tag not in tags:
            tags.append(tag)
    return tags


def _depends_on(value: Any) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str):
        value = [value]
    out = []
    for parent in _strings(value, "a job id or a list of job ids"):
        if parent not in out:
            out.append(parent)
    return out


def _env(value: Any) -> dict[str, str]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise _Bad(f"must be a mapping of names to strings, not {value!r}")
    for k, v in value.items():
        if not isinstance(k, str) or not k or "=" in k:
            raise _Bad(f": {k!r} is not a variable name")
        if not isinstance(v, str):
            raise _Bad(f".{k} must be a string, not {v!r}")
    return dict(value)


def _affinity(value: Any) -> Optional[str]:
    """Where a job would rather run: `true` (the reference's sticky flag: on the worker
    that ran its parent, as `parent`), `false`, or the router's text (`parent`, a worker's
    name, `strict:...`)."""
    if value is None or value is False:
        return None
    if value is True:
        return "parent"
    if not isinstance(value, str) or not value.strip():
        raise _Bad(f"must be true, false, parent, a worker's name or strict:..., not {value!r}")
    return value.strip()


def _port(value: Any) -> Union[int, str, None]:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        raise _Bad(f"must be a port number or a string, not {value!r}")
    if isinstance(value, int) and not 0 <= value <= 65535:
        raise _Bad(f"must be a port number (0 to 65535), not {value!r}")
    return value


def _choice(options: Sequence[str]) -> Callable[[Any], str]:
    def check(value: Any) -> str:
        if value not in options:
            raise _Bad(f"must be {' or '.join(options)}, not {value!r}")
        return value
    return check


def _schedule(value: Any) -> Optional[str]:
    if value is None:
        return None
    if not isinstance(value, str) or len(value.split()) not in (5, 6):
        raise _Bad(f"must be a cron expression of 5 or 6 fields, not {value!r}")
    try:
        from croniter import croniter
    except ImportError:  # pragma: no cover - croniter is installed with Titan
        return value
    if not croniter.is_valid(value):
        raise _Bad(f"is not a valid cron expression: {value!r}")
    return value


def _version(value: Any) -> Any:
    """The reference's `version:` label: a string or a number, read and not used."""
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise _Bad(f"must be a version label like '1.0', not {value!r}")
    return value


def _project_dir(value: Any) -> Optional[str]:
    return None if value is None else os.fspath(value)


MAX_PROJECT_ZIP = 8 * 1024 * 1024  # shipped with every job of the run: keep it small


def zip_folder(folder: str, limit: Optional[int] = None) -> bytes:
    """The folder as a zip (sorted, fixed timestamps: the same files give the same bytes),
    leaving out hidden entries and __pycache__.  Past `limit` bytes it stops there (what it
    returns is then longer than `limit`, and not a whole zip): a big folder is not read to
    the end to be refused."""
    import zipfile
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        for root, dirs, files in os.walk(folder):
            dirs[:] = sorted(d for d in dirs if not d.startswith(".") and d != "__pycache__")
            for name in sorted(files):
                if name.startswith("."):
                    continue
                path = os.path.join(root, name)
                arcname = os.path.relpath(path, folder).replace(os.sep, "/")
                info = zipfile.ZipInfo(arcname, date_time=(2020, 1, 1, 0, 0, 0))
                info.external_attr = (os.stat(path).st_mode & 0o777) << 16
                info.compress_type = zipfile.ZIP_DEFLATED
                with open(path, "rb") as f:
                    z.writestr(info, f.read())
                if limit is not None and buf.tell() > limit:
                    return buf.getvalue()
    return buf.getvalue()


# ---------------------------------------------------------------------------------------------
# The model.

class Node:
    """One entry of a pipeline: a `Job` or a `Gate`.  Operators add dependencies."""

    kind = ""

    def __init__(self, pipeline: "Pipeline", id: str, depends_on: Iterable[str]) -> None:
        self.pipeline = pipeline
        self.id = id
        self.depends_on: list[str] = list(depends_on)
        # Where the YAML said what (lines, 1-based); empty for jobs built in Python.
        self._index: Optional[int] = None
        self._line: Optional[int] = None
        self._key_lines: dict[str, int] = {}
        self._dep_lines: dict[str, int] = {}

    def after(self, *parents: Union["Node", str]) -> "Node":
        """Make this node run after `parents` (nodes or job ids); gives this node."""
        for parent in parents:
            if isinstance(parent, Node):
                if parent.pipeline is not self.pipeline:
                    raise PipelineError(
                        f"{self.pipeline._where(self, 'depends_on')}: {parent.id!r} is a job "
                        f"of pipeline {parent.pipeline.name!r}, not of {self.pipeline.name!r}")
                parent = parent.id
            elif not isinstance(parent, str):
                raise TypeError(f"a dependency is a job or a job id, not {parent!r}")
            if parent not in self.depends_on:
                self.depends_on.append(parent)
        return self

    # self >> other: other runs after self.
    def __rshift__(self, other: Any) -> Any:
        nodes = _nodes(other)
        if nodes is None:
            return NotImplemented
        for node in nodes:
            node.after(self)
        return other

    # [a, b] >> self: self runs after a and b.
    def __rrshift__(self, other: Any) -> Any:
        nodes = _nodes(other)
        if nodes is None:
            return NotImplemented
        self.after(*nodes)
        return self

    # self << other: self runs after other.
    def __lshift__(self, other: Any) -> Any:
        nodes = _nodes(other)
        if nodes is None:
            return NotImplemented
        self.after(*nodes)
        return other

    # [a, b] << self: a and b run after self.
    def __rlshift__(self, other: Any) -> Any:
        nodes = _nodes(other)
        if nodes is None:
            return NotImplemented
        for node in nodes:
            node.after(self)
        return self

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.id!r} of pipeline {self.pipeline.name!r}>"


def _nodes(value: Any) -> Optional[list[Node]]:
    if isinstance(value, Node):
        return [value]
    if isinstance(value, (list, tuple)) and all(isinstance(v, Node) for v in value):
        return list(value)
    return None


class Job(Node):
    """A command or a script to run (``kind: job``)."""

    kind = "job"

    def __init__(self, pipeline: "Pipeline", id: str, *, command: Optional[list[str]] = None,
                 script: Optional[dict] = None, depends_on: Iterable[str] = (),
                 priority: int = 0, tags: Iterable[str] = (), timeout: Optional[float] = None,
                 retries: int = 0, delay: float = 0.0, env: Optional[dict[str, str]] = None,
                 cwd: Optional[str] = None, hitl_message: Optional[str] = None,
                 max_wait_seconds: Optional[float] = None, affinity: Optional[str] = None,
                 type: str = "run", port: Union[int, str, None] = None,
                 restart: Optional[str] = None, health: Optional[str] = None,
                 persist: Optional[bool] = False) -> None:
        super().__init__(pipeline, id, depends_on)
        self.restart = restart
        self.health = health
        self.persist = bool(persist)
        self.command = command
        self.script = script
        self.priority = priority
        self.tags = list(tags)
        self.timeout = timeout
        self.retries = retries
        self.delay = delay
        self.env = dict(env or {})
        self.cwd = cwd
        self.hitl_message = hitl_message
        self.max_wait_seconds = max_wait_seconds
        self.affinity = affinity
        self.type = type
        self.port = port

    def to_spec(self) -> dict:
        script = None
        if self.script is not None:
            script = {"name": self.script["name"], "content": bytes(self.script["content"]),
                      "args": list(self.script["args"])}
        return {
            "id": self.id, "kind": "job",
            "command": list(self.command) if self.command is not None else None,
            "script": script, "depends_on": list(self.depends_on),
            "priority": self.priority, "tags": list(self.tags), "timeout": self.timeout,
            "retries": self.retries, "delay": self.delay, "env": dict(self.env),
            "cwd": self.cwd, "hitl_message": self.hitl_message,
            "max_wait_seconds": self.max_wait_seconds, "affinity": self.affinity,
            "type": self.type, "port": self.port,
            **({"restart": self.restart} if self.restart else {}),
            **({"health": self.health} if self.health else {}),
            **({"persist": True} if self.persist else {}),
        }


class Gate(Node):
    """A human approval: its children wait until someone approves (``kind: gate``)."""

    kind = "gate"

    def __init__(self, pipeline: "Pipeline", id: str, *, message: str,
                 depends_on: Iterable[str] = (), timeout: float = GATE_TIMEOUT,
                 on_timeout: str = "reject") -> None:
        super().__init__(pipeline, id, depends_on)
        self.message = message
        self.timeout = timeout
        self.on_timeout = on_timeout

    def to_spec(self) -> dict:
        return {"id": self.id, "kind": "gate", "depends_on": list(self.depends_on),
                "message": self.message, "timeout": self.timeout,
                "on_timeout": self.on_timeout}


def _gate_message(id: str) -> str:
    return f"approve {id}?"


# Builder keyword → validator (value already given in Python).
_JOB_OPTIONS: dict[str, Callable[[Any], Any]] = {
    "depends_on": _depends_on,
    "priority": _whole,
    "tags": _tags,
    "timeout": _opt(lambda v: _seconds(v, zero_ok=False)),
    "retries": lambda v: _whole(v, 0),
    "delay": lambda v: _seconds(v, zero_ok=True),
    "env": _env,
    "cwd": _opt(_text),
    "hitl_message": _opt(_text),
    "max_wait_seconds": _opt(lambda v: _seconds(v, zero_ok=False)),
    "affinity": _affinity,
    "type": _choice(JOB_TYPES),
    "port": _port,
    "restart": _opt(_choice(("always", "on-failure", "never"))),
    "health": _opt(_text),
    "persist": _opt(lambda v: _bool(v)),  # (_bool is defined further down)
}


_JOB_KEY_SET = frozenset(JOB_KEYS)
# Read as YAML types, not as the text written.
_TYPED_KEYS = frozenset({"priority", "retries", "timeout", "delay", "max_wait_seconds", "port",
                         "affinity", "persist"})


class Pipeline:
    """A named DAG of jobs and gates.  See the module docstring."""

    def __init__(self, name: str, *, agent_run_id: Optional[str] = None,
                 stage: Optional[str] = None, schedule: Optional[str] = None,
                 max_jobs: Optional[int] = None, project_dir: Optional[str] = None,
                 workspace: Optional[str] = None) -> None:
        self.path: Optional[str] = None     # the YAML file it came from, if any
        self._lines: dict[str, int] = {}
        self._nodes: list[Node] = []
        self._by_id: dict[str, Node] = {}
        self.name = self._check("name", name, _name_ok)
        self.agent_run_id = self._check("agent_run_id", agent_run_id, _opt(_name_ok))
        self.stage = self._check("stage", stage, _opt(_text))
        self.schedule = self._check("schedule", schedule, _schedule)
        self.max_jobs = self._check("max_jobs", max_jobs, _opt(lambda v: _whole(v, 1)))
        self.project_dir = _project_dir(project_dir)
        # "shared": the run's jobs share one directory on each worker (docs/pipelines.md).
        self.workspace = self._check("workspace", workspace, _opt(_choice(WORKSPACES)))

    def _check(self, key: str, value: Any, check: Callable[[Any], Any]) -> Any:
        try:
            return check(value)
        except _Bad as e:
            raise PipelineError(_join(f"pipeline {getattr(self, 'name', value)!r}: {key}",
                                      str(e))) from None

    # -- building ---------------------------------------------------------------------------

    @property
    def jobs(self) -> list[Node]:
        """The jobs and gates, in the order they were added."""
        return list(self._nodes)

    def __getitem__(self, id: str) -> Node:
        return self._by_id[id]

    def __contains__(self, id: object) -> bool:
        return id in self._by_id

    def __len__(self) -> int:
        return len(self._nodes)

    def job(self, id: str, command: Union[str, Sequence[str]], *,
            depends_on: Union[str, Iterable[Union[str, Node]]] = (), priority: int = 0,
            tags: Union[str, Iterable[str]] = (), timeout: Union[float, str, None] = None,
            retries: int = 0, delay: Union[float, str] = 0,
            env: Optional[Mapping[str, str]] = None, cwd: Optional[str] = None,
            hitl_message: Optional[str] = None,
            max_wait_seconds: Union[float, str, None] = None, affinity: Optional[str] = None,
            type: str = "run", port: Union[int, str, None] = None,
            restart: Optional[str] = None, health: Optional[str] = None,
            persist: bool = False) -> Job:
        """Add a job that runs `command` (a list, or a string split like a shell);
        `type="service"` keeps it running (with `port`, `restart`, `health`, `persist`)."""
        id = self._new_id(id)
        command = self._job_check(id, "command", command, _command)
        options = self._options(id, locals())
        return self._add(Job(self, id, command=command, **options))

    def script(self, id: str, name: Optional[str] = None,
               content: Union[bytes, str, None] = None, *, path: Optional[str] = None,
               args: Union[str, Sequence[str]] = (),
               depends_on: Union[str, Iterable[Union[str, Node]]] = (), priority: int = 0,
               tags: Union[str, Iterable[str]] = (), timeout: Union[float, str, None] = None,
               retries: int = 0, delay: Union[float, str] = 0,
               env: Optional[Mapping[str, str]] = None, cwd: Optional[str] = None,
               hitl_message: Optional[str] = None,
               max_wait_seconds: Union[float, str, None] = None, affinity: Optional[str] = None,
               type: str = "run", port: Union[int, str, None] = None) -> Job:
        """Add a job that runs a script shipped with it: `content` named `name`, or the file
        at `path` (its basename is the name unless `name` is given)."""
        id = self._new_id(id)
        if (content is None) == (path is None):
            raise PipelineError(f"{self._where(None, 'script', id)}: give content or path, "
                                "one of them")
        if path is not None:
            try:
                with open(path, "rb") as f:
                    content = f.read()
            except OSError as e:
                raise PipelineError(f"{self._where(None, 'script', id)}: cannot read {path}: "
                                    f"{e.strerror or e}") from None
            name = name or os.path.basename(path)
        if isinstance(content, str):
            content = content.encode("utf-8")
        if not isinstance(content, (bytes, bytearray)):
            raise PipelineError(f"{self._where(None, 'script', id)}: content must be bytes "
                                f"or a string, not {content!r}")
        if not isinstance(name, str) or not name or "/" in name or name in (".", ".."):
            raise PipelineError(f"{self._where(None, 'script', id)}: name must be a file "
                                f"name, not {name!r}")
        script = {"name": name, "content": bytes(content),
                  "args": self._job_check(id, "args", args, _args)}
        options = self._options(id, locals())
        return self._add(Job(self, id, script=script, **options))

    def gate(self, id: str, message: Optional[str] = None, *,
             depends_on: Union[str, Iterable[Union[str, Node]]] = (),
             timeout: Union[float, str] = GATE_TIMEOUT, on_timeout: str = "reject") -> Gate:
        """Add an approval gate: what comes after it waits until someone approves it, or
        until `timeout` (then `on_timeout` decides: reject or approve)."""
        id = self._new_id(id)
        message = self._job_check(id, "message", message, _opt(_text))
        timeout = self._job_check(id, "timeout", timeout, lambda v: _seconds(v, zero_ok=False))
        on_timeout = self._job_check(id, "on_timeout", on_timeout, _choice(ON_TIMEOUT))
        parents = self._depends_list(id, depends_on)
        return self._add(Gate(self, id, message=message or _gate_message(id),
                              depends_on=parents, timeout=timeout, on_timeout=on_timeout))

    def _new_id(self, id: Any) -> str:
        try:
            _name_ok(id)
        except _Bad as e:
            raise PipelineError(f"pipeline {self.name!r}: job id {e}") from None
        if id in self._by_id:
            raise PipelineError(f"pipeline {self.name!r}: job id {id!r} is used twice")
        return id

    def _job_check(self, id: str, key: str, value: Any, check: Callable[[Any], Any]) -> Any:
        try:
            return check(value)
        except _Bad as e:
            raise PipelineError(_join(self._where(None, key, id), str(e))) from None

    def _options(self, id: str, given: dict) -> dict:
        options = {}
        for key, check in _JOB_OPTIONS.items():
            if key == "depends_on":
                continue
            options[key] = self._job_check(id, key, given.get(key), check)
        options["depends_on"] = self._depends_list(id, given["depends_on"])
        return options

    def _depends_list(self, id: str, value: Any) -> list[str]:
        if isinstance(value, Node):
            value = [value]
        if value is not None and not isinstance(value, (str, bytes, Mapping)) \
                and isinstance(value, Iterable):
            value = [v.id if isinstance(v, Node) and v.pipeline is self else v for v in value]
        return self._job_check(id, "depends_on", value, _depends_on)

    def _add(self, node: Node) -> Node:
        self._nodes.append(node)
        self._by_id[node.id] = node
        return node

    # -- where things are, for messages -----------------------------------------------------

    def _where(self, node: Optional[Node], key: str, id: Optional[str] = None,
               line: Optional[int] = None) -> str:
        """`etl.yaml:7: jobs[1].retries` for YAML, `pipeline 'etl': job 'x': retries` else."""
        if node is not None and node._index is not None and self.path is not None:
            line = line or node._key_lines.get(key) or node._line
            return f"{self.path}:{line}: jobs[{node._index}].{key}"
        return f"pipeline {self.name!r}: job {(node.id if node else id)!r}: {key}"

    # -- output -----------------------------------------------------------------------------

    def validate(self) -> None:
        """Refuse what the master would: no jobs, duplicate ids, unknown parents, cycles."""
        if not self._nodes:
            where = f"{self.path}:{self._lines.get('jobs', 1)}: jobs" if self.path else \
                f"pipeline {self.name!r}"
            raise PipelineError(f"{where}: a pipeline needs at least one job", key="jobs")
        seen: dict[str, Node] = {}
        for node in self._nodes:
            if node.id in seen:
                raise PipelineError(f"{self._where(node, 'id')}: {node.id!r} is used twice",
                                    node.id, "id")
            seen[node.id] = node
        for node in self._nodes:
            for parent in node.depends_on:
                line = node._dep_lines.get(parent)
                if parent == node.id:
                    raise PipelineError(f"{self._where(node, 'depends_on', line=line)}: "
                                        f"{node.id!r} depends on itself", node.id,
                                        "depends_on")
                if parent not in seen:
                    raise PipelineError(f"{self._where(node, 'depends_on', line=line)}: "
                                        f"unknown job {parent!r}", node.id, "depends_on")
        cycle = _find_cycle(self._nodes, seen)
        if cycle:
            first, last = seen[cycle[0]], cycle[-2]
            where = self._where(first, "depends_on", line=first._dep_lines.get(last))
            raise PipelineError(f"{where}: cycle: {' -> '.join(cycle)}", first.id,
                                "depends_on")

    def to_spec(self) -> dict:
        """The SUBMIT_DAG body: a new dict each time."""
        with _no_gc():
            return self._to_spec()

    def _to_spec(self) -> dict:
        self.validate()
        jobs = [node.to_spec() for node in self._nodes]
        if self.project_dir is not None:
            self._ship_project(jobs)
        return {"name": self.name, "agent_run_id": self.agent_run_id, "stage": self.stage,
                "schedule": self.schedule, "max_jobs": self.max_jobs, "jobs": jobs,
                **({"workspace": self.workspace} if self.workspace else {})}

    def _ship_project(self, jobs: list[dict]) -> None:
        """`project: true`: each file job runs its file from a zip of the project folder,
        unpacked in its own workspace (so it finds its modules and data beside it)."""
        if not any(getattr(node, "script", None) and node.script.get("path")
                   for node in self._nodes):
            return  # no file job: nothing runs from the folder
        data = zip_folder(self.project_dir, limit=MAX_PROJECT_ZIP)
        if len(data) > MAX_PROJECT_ZIP:
            given = "project" in self._lines
            raise PipelineError(f"pipeline {self.name!r}: the project folder "
                                f"{self.project_dir} zips to more than "
                                f"{MAX_PROJECT_ZIP // 2**20} MB; ship big data as files the "
                                "jobs read, or run it with project: false"
                                + ("" if given else " (project is true unless the YAML says "
                                   "otherwise, as in the reference)"))
        from titan.protocols.legacy import ParseError, archive_launcher
        zip_name = f"{self.name}.zip"
        for spec, node in zip(jobs, self._nodes):
            script = getattr(node, "script", None)
            if not script or not script.get("path"):
                continue
            try:
                launcher = archive_launcher(node.id, zip_name, script["path"], data,
                                            what="project: true",
                                            keep=self.workspace == "shared")
            except ParseError as e:
                raise PipelineError(f"{self._where(node, 'file')}: {e}") from None
            spec["script"] = {"name": f"{node.id}.project.py", "content": launcher,
                              "args": list(script["args"])}

    def to_yaml(self) -> str:
        """This pipeline in the YAML format.  A script job becomes ``file: <name>``: the
        script must sit beside the YAML file (`save` puts it there)."""
        self.validate()
        self._script_files()
        top: dict[str, Any] = {"name": self.name}
        if self.project_dir is not None:
            top["project"] = True
        elif any(isinstance(node, Job) and node.script is not None for node in self._nodes):
            top["project"] = False  # what YAML assumes when project is not given is true
        for key in ("schedule", "agent_run_id", "stage", "max_jobs", "workspace"):
            if getattr(self, key) is not None:
                top[key] = getattr(self, key)
        top["jobs"] = [_job_yaml(node) for node in self._nodes]
        return yaml.safe_dump(top, sort_keys=False, default_flow_style=None,
                              allow_unicode=True, width=100)

    def save(self, path: str) -> None:
        """Write `to_yaml()` to `path` and each job's script beside it."""
        text = self.to_yaml()
        directory = os.path.dirname(path) or "."
        for name, content in self._script_files().items():
            with open(os.path.join(directory, name), "wb") as f:
                f.write(content)
        with open(path, "w", encoding="utf-8") as f:
            f.write(text)

    def _script_files(self) -> dict[str, bytes]:
        files: dict[str, bytes] = {}
        owner: dict[str, str] = {}
        for node in self._nodes:
            if isinstance(node, Job) and node.script is not None:
                name, content = node.script["name"], bytes(node.script["content"])
                if name in files and files[name] != content:
                    raise PipelineError(
                        f"pipeline {self.name!r}: jobs {owner[name]!r} and {node.id!r} have "
                        f"different scripts both named {name!r}; YAML names a script by its "
                        "file, so give them different names")
                files[name] = content
                owner.setdefault(name, node.id)
        return files

    def __repr__(self) -> str:
        return f"<Pipeline {self.name!r}: {len(self._nodes)} jobs>"

    # -- YAML in ----------------------------------------------------------------------------

    @classmethod
    def from_yaml(cls, text: str, path: str = "<pipeline>",
                  base_dir: Optional[str] = None,
                  files: Optional[Mapping[str, Union[str, bytes]]] = None) -> "Pipeline":
        """A pipeline from YAML text; `path` names it in errors, `file:` paths are read
        relative to `base_dir` (default: the directory of `path`, else the current one).
        With `files` ({file as written: its content}), scripts come from there and nothing
        is read from disk (no project folder either): what the master does for the web."""
        if base_dir is None:
            base_dir = os.getcwd() if path.startswith("<") else (os.path.dirname(path) or ".")
        with _no_gc():
            return _Reader(path, base_dir, files).pipeline(text)

    @classmethod
    def from_document(cls, document: Any,
                      files: Optional[Mapping[str, Union[str, bytes]]] = None,
                      path: str = DOCUMENT) -> "Pipeline":
        """A pipeline from a YAML-shaped document (the YAML format as plain data: what
        the dashboard's constructor sends), read by the YAML reader itself, so it is held
        to exactly the keys, values and checks of `titan run FILE`; scripts come from
        `files` only.  Errors name `path` and a line of the document written as YAML:
        `document_message` takes that place off."""
        if not isinstance(document, Mapping):
            raise PipelineError(f"{path}:1: a pipeline must be a mapping of keys (name, "
                                "jobs, ...)")
        text = yaml.safe_dump(dict(document), sort_keys=False, allow_unicode=True,
                              default_flow_style=False)
        return cls.from_yaml(text, path=path, base_dir=".", files=files or {})


@contextlib.contextmanager
def _no_gc():
    """Reading a big pipeline (or writing its spec) makes objects by the hundred thousand
    and frees none, which sets off the cyclic garbage collector's full passes again and
    again (a 10,000-job file took 4 times as long): none of it makes cycles worth looking
    for, so the collector waits until the end."""
    collecting = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if collecting:
            gc.enable()


def _join(where: str, problem: str) -> str:
    """`where must be ...`, `where: problem` or `where.key must be ...`."""
    if problem.startswith((":", ".")):
        return where + problem
    return f"{where} {problem}"


def _find_cycle(nodes: list[Node], by_id: dict[str, Node]) -> Optional[list[str]]:
    """One cycle, in run order (`a -> b` means b depends on a), starting at the job that
    comes first, ending where it started; None when there is none."""
    order = {node.id: i for i, node in enumerate(nodes)}
    state: dict[str, int] = {}   # 1: on the current path, 2: done
    for start in nodes:
        if start.id in state:
            continue
        path: list[str] = [start.id]
        state[start.id] = 1
        stack = [iter(start.depends_on)]
        while stack:
            parent = next(stack[-1], None)
            if parent is None:
                state[path.pop()] = 2
                stack.pop()
                continue
            mark = state.get(parent)
            if mark == 1:
                cycle = path[path.index(parent):]          # each depends on the next
                cycle.reverse()                            # now each runs before the next
                first = min(range(len(cycle)), key=lambda i: order[cycle[i]])
                cycle = cycle[first:] + cycle[:first]
                return cycle + [cycle[0]]
            if mark is None:
                state[parent] = 1
                path.append(parent)
                stack.append(iter(by_id[parent].depends_on))
    return None


def _job_yaml(node: Node) -> dict:
    out: dict[str, Any] = {"id": node.id}
    if isinstance(node, Gate):
        out["gate"] = True
        if node.depends_on:
            out["depends_on"] = list(node.depends_on)
        out["message"] = node.message
        if node.timeout != GATE_TIMEOUT:
            out["timeout"] = node.timeout
        if node.on_timeout != "reject":
            out["on_timeout"] = node.on_timeout
        return out
    assert isinstance(node, Job)
    if node.type != "run":
        out["type"] = node.type
    if node.script is not None:
        out["file"] = node.script["name"]
        if node.script["args"]:
            out["args"] = list(node.script["args"])
    else:
        out["command"] = list(node.command or ())
    if node.depends_on:
        out["depends_on"] = list(node.depends_on)
    defaults = {"priority": 0, "tags": [], "timeout": None, "retries": 0, "delay": 0.0,
                "env": {}, "cwd": None, "hitl_message": None, "max_wait_seconds": None,
                "affinity": None, "port": None, "restart": None, "health": None,
                "persist": False}
    for key, default in defaults.items():
        value = getattr(node, key)
        if value != default:
            out[key] = value
    return out


def load_pipeline(path: str) -> Pipeline:
    """The pipeline in the YAML file at `path`; its `file:` scripts are read beside it."""
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except OSError as e:
        raise PipelineError(f"{path}: cannot read the pipeline: {e.strerror or e}") from None
    except UnicodeDecodeError as e:
        raise PipelineError(f"{path}: cannot read the pipeline: not UTF-8 text ({e.reason} "
                            f"at byte {e.start})") from None
    return Pipeline.from_yaml(text, path=path, base_dir=os.path.dirname(path) or ".")


# ---------------------------------------------------------------------------------------------
# The YAML reader: nodes from yaml.compose keep their lines for the messages.

# libyaml's parser (C) when PyYAML was built with it, as its wheels are: its nodes keep
# their line marks too, and it reads a 10,000-job file ~15 times faster.
_NULL = "tag:yaml.org,2002:null"
_NULLS = frozenset({"", "~", "null", "Null", "NULL"})  # YAML 1.1's plain nulls
# A plain scalar whose tag nobody has asked for yet (see _Loader).
_UNRESOLVED = "!titan-unresolved"
_STR_TAG = yaml.resolver.BaseResolver.DEFAULT_SCALAR_TAG
_SEQ_TAG = yaml.resolver.BaseResolver.DEFAULT_SEQUENCE_TAG
_MAP_TAG = yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG


class _Loader(getattr(yaml, "CSafeLoader", yaml.SafeLoader)):  # type: ignore[misc]
    """SafeLoader's nodes, with the tags of plain scalars left to be found when a value is
    read as a YAML type (`_Reader.value`): the reader takes most scalars as the text that was
    written, and finding a tag (a regular expression or more) for each of them cost as much
    as libyaml's parse.  SafeLoader has no path resolvers, so the walk that keeps their
    place is skipped too."""

    def resolve(self, kind, value, implicit):
        if kind is yaml.ScalarNode:
            return _UNRESOLVED if implicit[0] else _STR_TAG  # quoted: a string
        return _SEQ_TAG if kind is yaml.SequenceNode else _MAP_TAG

    def descend_resolver(self, current_node, current_index):
        pass

    def ascend_resolver(self):
        pass


_RESOLVER = yaml.resolver.Resolver()


def _resolve_tags(node: yaml.Node) -> None:
    """Give the plain scalars under `node` the tags SafeLoader would have."""
    stack = [node]
    while stack:
        node = stack.pop()
        if type(node) is yaml.ScalarNode:
            if node.tag == _UNRESOLVED:
                node.tag = _RESOLVER.resolve(yaml.ScalarNode, node.value, (True, False))
        elif type(node) is yaml.SequenceNode:
            stack.extend(node.value)
        elif type(node) is yaml.MappingNode:
            for key, value in node.value:
                stack.append(key)
                stack.append(value)


def _texts(items: list) -> Optional[list]:
    """The texts of a sequence's items when every one is a scalar taken as written, else
    None (a null, a nested list or mapping...: the generic path says what is wrong)."""
    out = []
    for item in items:
        if type(item) is not yaml.ScalarNode:
            return None
        tag = item.tag
        if tag == _STR_TAG or (tag == _UNRESOLVED and item.value not in _NULLS):
            out.append(item.value)
        else:
            return None
    return out


def _is_null(node: yaml.Node) -> bool:
    if type(node) is not yaml.ScalarNode:
        return False
    if node.tag == _UNRESOLVED:
        return node.value in _NULLS
    return node.tag == _NULL


def _line(node: yaml.Node) -> int:
    return node.start_mark.line + 1


_JOB_WHERE = re.compile(r"jobs\[(\d+)\](?:\.([A-Za-z_]+))?")
_UNKNOWN_KEY = re.compile(r"jobs\[\d+\]: unknown key '([A-Za-z_]+)'")
_TOP_WHERE = re.compile(r"([a-z_]+)\b")
_UNKNOWN_TOP_KEY = re.compile(r"unknown key '([^']+)'")
_LINE_NOTE = re.compile(r" \((?:first at )?line \d+\)")


def document_message(error: PipelineError, path: str = DOCUMENT) -> str:
    """The message of a document's problem without the `<document>:LINE: ` the YAML
    reader puts first (the document has no lines a person wrote)."""
    message = str(error)
    prefix = f"{path}:"
    if message.startswith(prefix):
        rest = message[len(prefix):]
        number, sep, tail = rest.partition(": ")
        if sep and number.isdigit():
            message = tail
    return _LINE_NOTE.sub("", message)


class _Reader:
    def __init__(self, path: str, base_dir: str,
                 files: Optional[Mapping[str, Union[str, bytes]]] = None) -> None:
        self.path = path
        self.base_dir = base_dir
        self.files = files  # scripts by name, instead of the disk (and no project folder)
        self._constructor = yaml.constructor.SafeConstructor()
        self._jobs_node: Optional[yaml.Node] = None

    def fail(self, line: int, message: str) -> PipelineError:
        """The error, with the step and key its message names (`jobs[2].timeout ...`)."""
        step = key = None
        match = _JOB_WHERE.match(message)
        if match:
            key = match.group(2)
            unknown = _UNKNOWN_KEY.match(message)
            if unknown:
                key = unknown.group(1)
            step = self._step_id(int(match.group(1)))
        else:
            top = _TOP_WHERE.match(message)
            unknown = _UNKNOWN_TOP_KEY.match(message)
            if unknown:
                key = unknown.group(1)
            elif top and top.group(1) in TOP_KEYS:
                key = top.group(1)
        return PipelineError(f"{self.path}:{line}: {message}", step, key)

    def _step_id(self, index: int) -> Optional[str]:
        """The id written in jobs[index], if it has one (looked up only on an error)."""
        jobs = self._jobs_node
        if not isinstance(jobs, yaml.SequenceNode) or index >= len(jobs.value):
            return None
        job = jobs.value[index]
        if isinstance(job, yaml.MappingNode):
            for key_node, value_node in job.value:
                if isinstance(key_node, yaml.ScalarNode) and key_node.value == "id" and \
                        isinstance(value_node, yaml.ScalarNode) and value_node.value:
                    return value_node.value
        return None

    def pairs(self, node: yaml.MappingNode, where: str):
        seen: dict[str, int] = {}
        for key_node, value_node in node.value:
            if not isinstance(key_node, yaml.ScalarNode):
                raise self.fail(_line(key_node), f"{where or 'top level'}: keys must be "
                                "plain names")
            key = key_node.value
            if key in seen:
                raise self.fail(_line(key_node), f"{_dot(where, key)} is given twice "
                                f"(first at line {seen[key]})")
            seen[key] = _line(key_node)
            yield key_node, value_node

    def value(self, node: yaml.Node, where: str) -> Any:
        # One constructor for the whole file (making one per value cost more than the
        # parse); it keeps what it built by node, and every node is built once.
        constructor = self._constructor
        _resolve_tags(node)
        try:
            return constructor.construct_object(node, deep=True)
        except yaml.YAMLError as e:
            constructor.constructed_objects.clear()
            constructor.recursive_objects.clear()
            mark = getattr(e, "problem_mark", None) or node.start_mark
            problem = getattr(e, "problem", None) or str(e)
            raise self.fail(mark.line + 1, f"{where}: {problem}") from None

    def plain(self, node: yaml.Node, where: str) -> Any:
        """The value, where a scalar that is not null stays the text that was written
        (`id: 007` is "007", `env: {DEBUG: yes}` gives "yes"), in lists and mappings too."""
        kind = type(node)
        if kind is yaml.ScalarNode:
            # A null is `~`, `null` or nothing, unquoted.
            return None if _is_null(node) else node.value
        if kind is yaml.SequenceNode:
            items = node.value
            if all(type(item) is yaml.ScalarNode and (
                    item.tag == _STR_TAG or
                    (item.tag == _UNRESOLVED and item.value not in _NULLS))
                   for item in items):
                return [item.value for item in items]  # the usual list: texts
            return [self.plain(item, where) for item in items]
        if kind is yaml.MappingNode:
            return {self.plain(k, where): self.plain(v, where) for k, v in node.value}
        return self.value(node, where)  # pragma: no cover

    def check(self, node: yaml.Node, where: str, check: Callable[[Any], Any],
              plain: bool = True, key: Optional[str] = None) -> Any:
        """`check(value)`; `where`, or `where.key` when a key is given, names it in errors
        (put together only then: this runs for every value of every job)."""
        if plain:
            value = self.plain(node, where if key is None else f"{where}.{key}") \
                if type(node) is not yaml.ScalarNode else \
                (None if _is_null(node) else node.value)
        else:
            value = self.value(node, where if key is None else f"{where}.{key}")
        try:
            return check(value)
        except _Bad as e:
            raise self.fail(_line(node), _join(where if key is None else f"{where}.{key}",
                                               str(e))) from None

    def pipeline(self, text: str) -> Pipeline:
        try:
            try:
                root = yaml.compose(text, Loader=_Loader)
            except yaml.YAMLError:
                # Once more with PyYAML's own parser, whose messages are the ones users
                # know ("expected ..., but found ..."); libyaml's are terser.
                root = yaml.compose(text, Loader=yaml.SafeLoader)
        except yaml.YAMLError as e:
            mark = getattr(e, "problem_mark", None)
            where = f"{self.path}:{mark.line + 1}" if mark else self.path
            problem = getattr(e, "problem", None) or str(e)
            raise PipelineError(f"{where}: not valid YAML: {problem}") from None
        if root is None or _is_null(root):
            raise self.fail(1, "the pipeline is empty: it needs a name and jobs")
        if not isinstance(root, yaml.MappingNode):
            raise self.fail(_line(root), "a pipeline must be a mapping of keys (name, jobs, ...)")
        top: dict[str, Any] = {}
        lines: dict[str, int] = {}
        jobs_node: Optional[yaml.Node] = None
        # The reference's parser runs file jobs from the project folder unless told
        # `project: false`; so does Titan (a file job is then shipped with the folder).
        project = True
        top_checks = {"name": _name_ok, "agent_run_id": _opt(_name_ok), "stage": _opt(_text),
                      "schedule": _opt(_schedule), "max_jobs": _opt(lambda v: _whole(v, 1)),
                      "workspace": _opt(_choice(WORKSPACES))}
        for key_node, value_node in self.pairs(root, ""):
            key = key_node.value
            lines[key] = _line(key_node)
            if key == "jobs":
                jobs_node = self._jobs_node = value_node
            elif key == "project":
                project = self.check(value_node, key, _opt(_bool), plain=False)
                project = True if project is None else project
            elif key == "max_jobs":
                top[key] = self.check(value_node, key, top_checks[key], plain=False)
            elif key == "version":
                # The reference's files carry `version: "1.0"`; its parser ignores it.
                self.check(value_node, key, _version, plain=False)
            elif key in top_checks:
                top[key] = self.check(value_node, key, top_checks[key])
            else:
                raise self.fail(_line(key_node), f"unknown key {key!r} "
                                f"(known: {', '.join(TOP_KEYS)})")
        if top.get("name") is None:
            raise self.fail(lines.get("name", _line(root)), "name is required")
        pipeline = Pipeline(top.pop("name"), **top,
                            project_dir=self.base_dir if project and self.files is None
                            else None)
        pipeline.path = self.path
        pipeline._lines = lines
        if jobs_node is None:
            raise self.fail(_line(root), "jobs: a pipeline needs at least one job "
                            "(there is no jobs: list)")
        if _is_null(jobs_node):
            raise self.fail(_line(jobs_node), "jobs: a pipeline needs at least one job")
        if not isinstance(jobs_node, yaml.SequenceNode):
            raise self.fail(_line(jobs_node), f"jobs must be a list of jobs, not "
                            f"{self.value(jobs_node, 'jobs')!r}")
        first_line: dict[str, tuple[int, int]] = {}
        for index, job_node in enumerate(jobs_node.value):
            node = self.job(pipeline, index, job_node)
            if node.id in first_line:
                was, line = first_line[node.id]
                raise self.fail(node._key_lines["id"],
                                f"jobs[{index}].id: {node.id!r} is already the id of "
                                f"jobs[{was}] (line {line})")
            first_line[node.id] = (index, node._key_lines["id"])
            pipeline._add(node)
        if "project" not in lines and not any(
                isinstance(node, Job) and node.script is not None for node in pipeline._nodes):
            pipeline.project_dir = None  # the default, and no file job it would matter to
        pipeline.validate()
        return pipeline

    def job(self, pipeline: Pipeline, index: int, job_node: yaml.Node) -> Node:
        where = f"jobs[{index}]"
        if not isinstance(job_node, yaml.MappingNode):
            raise self.fail(_line(job_node), f"{where} must be a mapping of keys, not "
                            f"{self.value(job_node, where)!r}")
        given: dict[str, yaml.Node] = {}
        key_lines: dict[str, int] = {}
        for key_node, value_node in job_node.value:  # pairs(), inline: it runs for every key
            if type(key_node) is not yaml.ScalarNode:
                raise self.fail(_line(key_node), f"{where}: keys must be plain names")
            key = key_node.value
            line = key_node.start_mark.line + 1
            if key in given:
                raise self.fail(line, f"{where}.{key} is given twice (first at line "
                                f"{key_lines[key]})")
            if key not in _JOB_KEY_SET:
                raise self.fail(line, f"{where}: unknown key {key!r} "
                                f"(known: {', '.join(JOB_KEYS)})")
            given[key] = value_node
            key_lines[key] = line
        if "id" not in given:
            raise self.fail(_line(job_node), f"{where}: id is required")
        id = self.check(given["id"], where, _name_ok, key="id")
        is_gate = "gate" in given and self.check(given["gate"], where, _bool, False, "gate")

        def get(key: str, check: Callable[[Any], Any], plain: bool = True) -> Any:
            return self.check(given[key], where, check, plain, key)

        def one_of(a: str, b: str) -> Optional[str]:
            if a in given and b in given:
                later = max(a, b, key=lambda k: key_lines[k])
                raise self.fail(key_lines[later], f"{where}: give {a} or {b}, not both")
            return a if a in given else b if b in given else None

        depends_on, dep_lines = self.depends_on(given.get("depends_on"), where)
        if is_gate:
            for key in given:
                if key not in GATE_KEYS:
                    raise self.fail(key_lines[key], f"{where}.{key}: not allowed on a gate "
                                    f"(a gate takes {', '.join(GATE_KEYS)})")
            message_key = one_of("message", "hitl_message")
            timeout_key = one_of("timeout", "max_wait_seconds")
            message = get(message_key, _opt(_text)) if message_key else None
            node: Node = Gate(
                pipeline, id, message=message or _gate_message(id), depends_on=depends_on,
                timeout=get(timeout_key, _opt(lambda v: _seconds(v, zero_ok=False)),
                            plain=False) if timeout_key else GATE_TIMEOUT,
                on_timeout=get("on_timeout", _choice(ON_TIMEOUT)) if "on_timeout" in given
                else "reject")
            if node.timeout is None:
                node.timeout = GATE_TIMEOUT
        else:
            if "message" in given or "on_timeout" in given:
                key = "message" if "message" in given else "on_timeout"
                raise self.fail(key_lines[key], f"{where}.{key}: only for a gate "
                                "(add gate: true)")
            source = one_of("command", "file")
            if source is None:
                raise self.fail(_line(job_node), f"{where}: give command or file (the script "
                                "to run)")
            # What is not given keeps Job's default (a value given is never None here).
            options: dict[str, Any] = {}
            for key, value_node in given.items():
                check = _JOB_OPTIONS.get(key)
                if check is not None and key != "depends_on":
                    # Numbers (and affinity's true) keep their type; names, texts and lists
                    # keep what was written.
                    options[key] = self.check(value_node, where, check,
                                              key not in _TYPED_KEYS, key)
            if options.get("persist") and options.get("type") != "service":
                raise self.fail(key_lines["persist"], f"{where}.persist: only for a service "
                                "(add type: service)")
            if "requirement" in given:
                # The reference's requirement: one tag, or GENERAL (any worker).
                requirement = get("requirement", _opt(_tags))
                tags = options.setdefault("tags", [])
                for tag in requirement or ():
                    if tag.upper() != GENERAL and tag not in tags:
                        tags.append(tag)
            command = script = None
            if source == "command":
                if "args" in given:
                    raise self.fail(key_lines["args"], f"{where}.args: only with file (put "
                                    "the arguments in command)")
                words = given["command"]
                command = _texts(words.value) if type(words) is yaml.SequenceNode else None
                if not command or not command[0]:  # a string to split, or something wrong
                    command = get("command", _command)
            else:
                script = self.script(given["file"], f"{where}.file",
                                     get("args", _args) if "args" in given else [])
            node = Job(pipeline, id, command=command, script=script, depends_on=depends_on,
                       **options)
        node._index = index
        node._line = _line(job_node)
        node._key_lines = key_lines
        node._dep_lines = dep_lines
        return node

    def depends_on(self, node: Optional[yaml.Node], where: str
                   ) -> tuple[list[str], dict[str, int]]:
        if node is None:
            return [], {}
        items = node.value if type(node) is yaml.SequenceNode else [node]
        lines: dict[str, int] = {}
        if _texts(items) is not None:
            # The usual: ids as written (texts, so _depends_on has nothing to refuse).
            for item in items:
                if item.value not in lines:
                    lines[item.value] = item.start_mark.line + 1
            return list(lines), lines
        where = f"{where}.depends_on"
        parents = self.check(node, where, _depends_on)
        for parent, item in zip(parents, items):
            if parent not in lines:
                lines[parent] = item.start_mark.line + 1
        if len(parents) != len(items):  # the same parent twice: match them by text
            lines = {}
            for item in items:
                lines.setdefault(self.plain(item, where), _line(item))
        return parents, lines

    def script(self, node: yaml.Node, where: str, args: list[str]) -> dict:
        def path_ok(value: Any) -> str:
            if not isinstance(value, str) or not value.strip():
                raise _Bad(f"must be the path of a script, not {value!r}")
            return value
        relative = self.check(node, where, path_ok)
        if self.files is not None:
            # Sent with the pipeline (the web's documents): never a file of this machine.
            content = self.files.get(relative)
            if content is None:
                raise self.fail(_line(node), f"{where}: cannot read {relative}: it is not "
                                "among the pipeline's files")
            if isinstance(content, str):
                content = content.encode("utf-8")
            return {"name": os.path.basename(relative.rstrip("/")), "content": bytes(content),
                    "args": args, "path": relative}
        try:
            with open(os.path.join(self.base_dir, relative), "rb") as f:
                content = f.read()
        except OSError as e:
            raise self.fail(_line(node), f"{where}: cannot read {relative}: "
                            f"{e.strerror or e}") from None
        path = os.path.relpath(os.path.join(self.base_dir, relative), self.base_dir)
        return {"name": os.path.basename(relative.rstrip("/")), "content": content,
                "args": args, "path": path.replace(os.sep, "/")}


def _bool(value: Any) -> bool:
    if not isinstance(value, bool):
        raise _Bad(f"must be true or false, not {value!r}")
    return value


def _dot(where: str, key: str) -> str:
    return f"{where}.{key}" if where else key
