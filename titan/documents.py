"""Pipelines as documents: the YAML format as plain data, for the web's constructor.

A document is a pipeline written in the YAML format's keys as JSON (`name`, `schedule`,
`agent_run_id`, `stage`, `jobs: [{id, command | file + args, depends_on, ...}]`), with the
scripts' texts beside it in `files` ({file as written: text}).  It is read by the YAML
reader itself (`Pipeline.from_document`), then checked by the master's own DAG parser
(`parse_dag`): a document is refused exactly where `titan run FILE` would refuse the same
pipeline, with the same message (less the file's line, which a document does not have).

The other way, `document_of` writes a list of job specs (a parsed pipeline's, or a run's
jobs as they are now) as a document in Titan's keys: the reference's shorthands come out
normalised (a job's `hitl_message` is the job and its gate step `ID.approval`),
`depends_on` is always a list, defaults are left out.  Submitting that document gives the
same DAG.

Pure: no reactor, no disk (scripts come from `files` only, never the master's disk).
"""
from __future__ import annotations

import re
import time
from typing import Any, Iterable, Mapping, Optional

from titan.core.dag import GATE_TIMEOUT, SubmitError, parse_dag
from titan.core.model import JobSpec
from titan.sdk.pipeline import DOCUMENT, Pipeline, PipelineError, document_message

MAX_PROBLEMS = 20  # problems one check reports at most (each found once the one before is fixed)
# Seconds of the master's time one check may take looking for problems past the first (each
# is another read of the whole document, in the master's reactor).
PROBLEMS_BUDGET = 0.2

# The keys a step may have (the YAML format's), to tell a key in a master's message.
STEP_KEYS = frozenset({
    "id", "type", "file", "args", "depends_on", "requirement", "priority", "delay",
    "affinity", "port", "hitl_message", "max_wait_seconds", "command", "retries", "timeout",
    "env", "gate", "tags", "cwd", "message", "on_timeout", "restart", "health", "persist",
    "script", "kind"})
_SUBMIT_PATTERNS = [
    (re.compile(r"job id '(?P<step>[^']+)' is used twice"), "id"),
    (re.compile(r"job (?P<step>\S+) depends on"), "depends_on"),
    (re.compile(r"cycle: (?P<step>\S+) ->"), "depends_on"),
    (re.compile(r"job (?P<step>\S+): (?:a |an )?(?P<key>[a-z_]+)"), None),
    (re.compile(r"jobs\[\d+\] \((?P<step>[^)]*)\): unknown key '(?P<key>[^']+)'"), None),
    (re.compile(r"(?P<key>max_jobs|agent_run_id) must"), None),
    (re.compile(r"DAG (?P<key>name) must"), None),
    (re.compile(r"the DAG: (?P<key>workspace) must"), None),
]


class PipelineProblems(Exception):
    """A pipeline refused: `problems` [{step, key, message}], the first one first."""

    def __init__(self, problems: list[dict]) -> None:
        super().__init__(problems[0]["message"] if problems else "bad pipeline")
        self.problems = problems


def problem(message: str, step: Optional[str] = None, key: Optional[str] = None) -> dict:
    return {"step": step, "key": key, "message": message}


def pipeline_problem(error: PipelineError, document: bool) -> dict:
    message = document_message(error) if document else str(error)
    return problem(message, getattr(error, "step", None), getattr(error, "key", None))


def submit_problem(error: SubmitError) -> dict:
    """The master's refusal (titan/core/dag.py), with the step and key its message names."""
    message = str(error)
    for pattern, key in _SUBMIT_PATTERNS:
        match = pattern.match(message)
        if match:
            found = match.groupdict()
            key = found.get("key", key)
            if key is not None and key not in STEP_KEYS and key not in (
                    "name", "max_jobs", "agent_run_id", "workspace"):
                key = None
            if key == "script":
                key = "file"
            return problem(message, found.get("step") or None, key)
    return problem(message)


def check_files(files: Any) -> dict[str, str]:
    """`files` as sent: {name: text}, else ValueError saying what is wrong."""
    if files is None:
        return {}
    if not isinstance(files, Mapping):
        raise ValueError(f"'files' must be an object of file names to texts, not "
                         f"{type(files).__name__}")
    for name, text in files.items():
        if not isinstance(name, str) or not isinstance(text, str):
            raise ValueError(f"'files' must map file names to texts: {name!r} does not")
    return dict(files)


# -- reading: a document or YAML text, to the spec the master takes ---------------------------

def spec_of(pipeline: Pipeline) -> dict:
    """The SUBMIT_DAG body of a pipeline read from a document or the web's YAML (it ships
    no project folder: its scripts came from `files`)."""
    return pipeline.to_spec()


def check_spec(spec: dict):
    """The master's own DAG checks (SUBMIT_DAG's); the RunTemplate, or SubmitError."""
    return parse_dag(spec)


def read_document(document: Any, files: Mapping[str, str]) -> tuple[Pipeline, dict]:
    """(pipeline, spec) of a document, or PipelineProblems with the first problem `titan
    run` would print for the same pipeline."""
    try:
        pipeline = Pipeline.from_document(document, files)
        spec = spec_of(pipeline)
    except PipelineError as e:
        raise PipelineProblems([pipeline_problem(e, document=True)]) from None
    try:
        check_spec(spec)
    except SubmitError as e:
        raise PipelineProblems([submit_problem(e)]) from None
    return pipeline, spec


def problems_of(document: Any, files: Mapping[str, str],
                limit: int = MAX_PROBLEMS, budget: float = PROBLEMS_BUDGET) -> list[dict]:
    """Every problem of a document, up to `limit`: the first `titan run` would print, then
    the one it would print once that one is out of the way (the key dropped, or a step
    whose id is wrong left out), and so on, while `budget` seconds last (the first is
    always there).  [] when it would be submitted."""
    problems: list[dict] = []
    current = document
    deadline = time.monotonic() + budget
    while len(problems) < limit and (not problems or time.monotonic() < deadline):
        try:
            read_document(current, files)
            return problems
        except PipelineProblems as e:
            found = e.problems[0]
        if found in problems:
            return problems
        problems.append(found)
        current = _without(current, found)
        if current is None:
            return problems
    return problems


def _without(document: Any, found: dict) -> Optional[dict]:
    """The document without what `found` is about, to look for the next problem; None
    when nothing sensible is left to check."""
    if not isinstance(document, Mapping):
        return None
    doc = dict(document)
    step, key = found.get("step"), found.get("key")
    jobs = doc.get("jobs")
    if step is None:
        if key in (None, "jobs") or key not in doc:
            return None
        if key == "name":
            doc["name"] = "pipeline"
        else:
            del doc[key]
        return doc
    if not isinstance(jobs, list):
        return None
    index = next((i for i, job in enumerate(jobs)
                  if isinstance(job, Mapping) and job.get("id") == step), None)
    if index is None:
        return None
    if key == "id" and sum(1 for job in jobs if isinstance(job, Mapping)
                           and job.get("id") == step) > 1:
        # A duplicate id: the later one is set aside (a stand-in keeps the others'
        # places, so their messages say jobs[N] as in the document), and the check goes on.
        index = max(i for i, job in enumerate(jobs)
                    if isinstance(job, Mapping) and job.get("id") == step)
        doc["jobs"] = jobs[:index] + [_stand_in(jobs, index)] + jobs[index + 1:]
        return doc
    job = dict(jobs[index])
    if key is not None and key != "id" and key in job:
        del job[key]
        if key == "file":  # a script step without its file: a placeholder command
            job.pop("args", None)
            job["command"] = "true"
        elif key == "command" and "file" not in job:
            job["command"] = "true"
        if key == "gate":
            job = {k: v for k, v in job.items() if k in ("id", "depends_on")}
            job["command"] = "true"
    elif key is None or key == "id" or key not in job:
        # Nothing to drop but the step itself: a stand-in takes its place, and the edges
        # to it go.
        doc["jobs"] = [_stand_in(jobs, i) if i == index else _drop_parent(j, step)
                       for i, j in enumerate(jobs)]
        return doc
    doc["jobs"] = jobs[:index] + [job] + jobs[index + 1:]
    return doc


def _stand_in(jobs: list, index: int) -> dict:
    """A step no other names, in place of one set aside."""
    taken = {job.get("id") for job in jobs if isinstance(job, Mapping)}
    name = f"_set_aside_{index}"
    while name in taken:
        name += "_"
    return {"id": name, "command": "true"}


def _drop_parent(job: Any, parent: str) -> Any:
    if not isinstance(job, Mapping):
        return job
    parents = job.get("depends_on")
    if parents == parent:
        return {k: v for k, v in job.items() if k != "depends_on"}
    if isinstance(parents, list) and parent in parents:
        return dict(job, depends_on=[p for p in parents if p != parent])
    return job


def parse_yaml(text: str, files: Mapping[str, str], name: str = "pipeline.yaml"
               ) -> dict:
    """YAML text (Titan's format or the reference's) as a document in Titan's keys:
    {"document", "files", "missing"}.  A `file:` not among `files` is read as empty and
    named in `missing` (the constructor asks for it); anything else `titan run` would
    refuse raises PipelineProblems with its message (`NAME:LINE: ...`)."""
    missing: list[str] = []

    class Lenient(dict):
        def get(self, key, default=None):
            if key in self:
                return dict.get(self, key)
            if key not in missing:
                missing.append(key)
            return ""
    try:
        pipeline = Pipeline.from_yaml(text, path=name, base_dir=".", files=Lenient(files))
        spec = spec_of(pipeline)
    except PipelineError as e:
        raise PipelineProblems([pipeline_problem(e, document=False)]) from None
    try:
        template = check_spec(spec)
    except SubmitError as e:
        raise PipelineProblems([submit_problem(e)]) from None
    paths = {node.id: node.script.get("path") or node.script["name"]
             for node in pipeline.jobs if getattr(node, "script", None)}
    out = document_of(template.name, template.specs, agent_run_id=template.agent_run_id,
                      stage=template.stage, max_jobs=template.max_jobs,
                      schedule=pipeline.schedule, workspace=pipeline.workspace, paths=paths)
    out["files"] = {k: v for k, v in out["files"].items() if k not in missing}
    out["missing"] = missing
    return out


# -- writing: job specs as a document ---------------------------------------------------------

def _number(value: float) -> Any:
    return int(value) if float(value).is_integer() else value


def document_of(name: str, specs: Iterable[JobSpec], *, agent_run_id: Optional[str] = None,
                stage: Optional[str] = None, max_jobs: Optional[int] = None,
                schedule: Optional[str] = None, workspace: Optional[str] = None,
                paths: Optional[Mapping[str, str]] = None) -> dict:
    """{"document", "files"}: the specs as a document in Titan's YAML keys."""
    paths = paths or {}
    files: dict[str, str] = {}
    jobs = []
    shared = workspace == "shared"
    for spec in specs:
        jobs.append(_step(spec, files, paths))
        shared = shared or spec.workspace == "shared"
    document: dict[str, Any] = {"name": name}
    for key, value in (("schedule", schedule), ("agent_run_id", agent_run_id),
                       ("stage", stage), ("max_jobs", max_jobs)):
        if value is not None:
            document[key] = value
    if shared:
        document["workspace"] = "shared"
    document["jobs"] = jobs
    return {"document": document, "files": files}


def _step(spec: JobSpec, files: dict[str, str], paths: Mapping[str, str]) -> dict:
    step: dict[str, Any] = {"id": spec.job_id}
    if spec.kind == "gate":
        step["gate"] = True
        step["depends_on"] = list(spec.depends_on)
        step["message"] = spec.message or f"approve {spec.job_id}?"
        if spec.timeout is not None and spec.timeout != GATE_TIMEOUT:
            step["timeout"] = _number(spec.timeout)
        if spec.on_timeout != "reject":
            step["on_timeout"] = spec.on_timeout
        return step
    if spec.kind == "service":
        step["type"] = "service"
    if spec.script_name is not None:
        name = paths.get(spec.job_id) or spec.script_name
        text = (spec.script or b"").decode("utf-8", "replace")
        if name in files and files[name] != text:
            name = f"{spec.job_id}/{spec.script_name}"  # another script of that name
        files[name] = text
        step["file"] = name
        if spec.command:
            step["args"] = list(spec.command)
    else:
        step["command"] = list(spec.command)
    step["depends_on"] = list(spec.depends_on)
    if spec.tags:
        step["tags"] = sorted(spec.tags)
    if spec.retries:
        step["retries"] = spec.retries
    if spec.timeout is not None:
        step["timeout"] = _number(spec.timeout)
    if spec.priority:
        step["priority"] = spec.priority
    if spec.delay:
        step["delay"] = _number(spec.delay)
    if spec.affinity:
        step["affinity"] = spec.affinity
    if spec.env:
        step["env"] = dict(spec.env)
    if spec.cwd is not None:
        step["cwd"] = spec.cwd
    if spec.kind == "service":
        if spec.port is not None:
            step["port"] = int(spec.port) if str(spec.port).isdigit() else spec.port
        if spec.health is not None:
            step["health"] = spec.health
        if spec.restart and spec.restart != "on-failure":
            step["restart"] = spec.restart
        if spec.persist:
            step["persist"] = True
    return step


__all__ = ["DOCUMENT", "PipelineProblems", "check_files", "document_of", "parse_yaml",
           "problems_of", "read_document"]
