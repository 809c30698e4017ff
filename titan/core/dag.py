"""DAG specs: from the wire to a validated `RunTemplate`, and from a template to jobs.

Pure functions.  Whatever is refused raises SubmitError with a message that names the jobs
involved, and nothing of the DAG is accepted.
"""
from __future__ import annotations

import re

import attrs
from typing import Any, Iterable, Optional

from titan.core.events import RunTemplate, children_of, template_children
from titan.core.model import JobSpec

GATE_TIMEOUT = 48 * 3600.0
NAME = re.compile(r"^[A-Za-z0-9_.-]+$")
RESULT_LIMIT = 64 * 1024
GENERAL = "GENERAL"  # the reference's requirement meaning "any worker"


class SubmitError(ValueError):
    """A submission the scheduler refuses; nothing of it was accepted."""


def _number(job: str, key: str, value: Any, default: Optional[float] = None,
            allow_zero: bool = True) -> Optional[float]:
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise SubmitError(f"job {job}: {key} must be a number, not {value!r}")
    if value < 0 or (value == 0 and not allow_zero):
        raise SubmitError(f"job {job}: {key} must be {'0 or more' if allow_zero else 'positive'}")
    return float(value)


def _strings(job: str, key: str, value: Any) -> tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value, str):
        return (value,)
    if not isinstance(value, (list, tuple)) or not all(isinstance(v, str) for v in value):
        raise SubmitError(f"job {job}: {key} must be a list of strings")
    return tuple(value)


JOB_KEYS = frozenset({
    "id", "kind", "type", "command", "script", "depends_on", "priority", "tags", "requirement",
    "timeout", "retries", "delay", "env", "cwd", "hitl_message", "max_wait_seconds",
    "affinity", "port", "name", "restart", "health", "workspace",
    "persist"})
WORKSPACES = ("job", "shared")  # a job's own directory, or its run's (on each worker)
RESTART_POLICIES = ("always", "on-failure", "never")
GATE_KEYS = frozenset({"id", "kind", "depends_on", "message", "timeout", "on_timeout", "name"})


def _workspace(where: str, value: Any) -> Optional[str]:
    if value is not None and value not in WORKSPACES:
        raise SubmitError(f"{where}: workspace must be {' or '.join(WORKSPACES)}, "
                          f"not {value!r}")
    return "shared" if value == "shared" else None


def _workspace_of(node: str, value: Any) -> Optional[str]:
    # The usual job says nothing: no message to format for it.
    return None if value is None else _workspace(f"job {node}", value)


def parse_job(raw: Any, index: int,
              workspace: Optional[str] = None) -> tuple[JobSpec, Optional[dict]]:
    """One job of a DAG from its wire form; also its HITL gate request, if any.
    `workspace`: the DAG's default for jobs that do not say."""
    if not isinstance(raw, dict):
        raise SubmitError(f"jobs[{index}] must be a map")
    known = GATE_KEYS if raw.get("kind") == "gate" else JOB_KEYS
    if not known.issuperset(raw):  # one pass in C for the usual job; the list on a refusal
        unknown = sorted(str(k) for k in raw if k not in known)
        raise SubmitError(f"jobs[{index}] ({raw.get('id')}): unknown key "
                          f"{', '.join(map(repr, unknown))} (known: {', '.join(sorted(known))})")
    node = raw.get("id")
    if not isinstance(node, str) or not NAME.match(node):
        raise SubmitError(f"jobs[{index}]: id must be letters, digits, '_', '.' or '-', "
                          f"not {node!r}")
    kind = raw.get("kind") or "job"
    depends_on = _strings(node, "depends_on", raw.get("depends_on"))
    if kind == "gate":
        on_timeout = raw.get("on_timeout") or "reject"
        if on_timeout not in ("reject", "approve"):
            raise SubmitError(f"job {node}: on_timeout must be reject or approve")
        timeout = _number(node, "timeout", raw.get("timeout"), GATE_TIMEOUT, allow_zero=False)
        return JobSpec(job_id=node, command=(), kind="gate", depends_on=depends_on,
                       message=str(raw.get("message") or f"approve {node}?"), timeout=timeout,
                       on_timeout=on_timeout), None
    if kind not in ("job", "service"):
        raise SubmitError(f"job {node}: kind must be job, service or gate, not {kind!r}")
    kind = "service" if raw.get("type") == "service" else kind
    if (raw.get("type") or "run") not in ("run", "service"):
        raise SubmitError(f"job {node}: type must be run or service, not {raw.get('type')!r}")
    service = service_options(node, raw) if kind == "service" else {}
    persist = raw.get("persist")
    if persist is not None and not isinstance(persist, bool):
        raise SubmitError(f"job {node}: persist must be true or false, not {persist!r}")
    if persist and kind != "service":
        raise SubmitError(f"job {node}: persist is for a service (type: service)")
    if persist:
        service["persist"] = True
    if service and service["port"] is not None and service["health"] is None:
        # A pipeline's service counts as up for its dependents once it is: with a port,
        # once the port takes connections (docs/pipelines.md, services in pipelines).
        service["health"] = "tcp"
    script = raw.get("script")
    command = raw.get("command")
    if isinstance(command, str):
        command = ["sh", "-c", command]
    script_name = script_content = None
    if script is not None:
        if command:
            raise SubmitError(f"job {node}: give a command or a script, not both")
        if not isinstance(script, dict) or not isinstance(script.get("name"), str) \
                or not isinstance(script.get("content"), (bytes, str)):
            raise SubmitError(f"job {node}: script must have a name and a content")
        script_name = script["name"].rsplit("/", 1)[-1]
        content = script["content"]
        script_content = content.encode() if isinstance(content, str) else content
        command = list(_strings(node, "script.args", script.get("args")))
    else:
        command = list(_strings(node, "command", command))
        if not command or not command[0]:
            raise SubmitError(f"job {node}: command is empty")
    env = raw.get("env") or {}
    if not isinstance(env, dict) or env and not all(isinstance(k, str) and isinstance(v, str)
                                                    for k, v in env.items()):
        raise SubmitError(f"job {node}: env must map names to strings")
    retries = raw.get("retries") or 0
    if isinstance(retries, bool) or not isinstance(retries, int) or retries < 0:
        raise SubmitError(f"job {node}: retries must be a whole number, 0 or more")
    priority = raw.get("priority") or 0
    if isinstance(priority, bool) or not isinstance(priority, int):
        raise SubmitError(f"job {node}: priority must be a whole number")
    tags = list(_strings(node, "tags", raw.get("tags")))
    # The reference's requirement: a tag, or GENERAL for any worker (no tag at all).
    requirement = raw.get("requirement")
    if requirement is not None:
        tags.extend(t for t in _strings(node, "requirement", requirement)
                    if t.strip().upper() != GENERAL)
    spec = JobSpec(
        job_id=node, command=command, env=tuple(sorted(env.items())) if env else (),
        cwd=raw.get("cwd"), priority=priority, tags=tags,
        timeout=_number(node, "timeout", raw.get("timeout"), None, allow_zero=False),
        retries=retries, delay=_number(node, "delay", raw.get("delay"), 0.0) or 0.0,
        depends_on=depends_on, script_name=script_name, script=script_content,
        affinity=raw.get("affinity"), kind=kind,
        workspace=_workspace_of(node, raw.get("workspace") or workspace), **service)
    gate = None
    if raw.get("hitl_message"):
        gate = {"message": str(raw["hitl_message"]),
                "timeout": _number(node, "max_wait_seconds", raw.get("max_wait_seconds"),
                                   GATE_TIMEOUT, allow_zero=False)}
    return spec, gate


def service_options(node: str, raw: dict) -> dict:
    """A service's port, restart policy and health check, checked."""
    port = raw.get("port")
    if port is not None:
        if isinstance(port, bool) or not (port == "auto" or (isinstance(port, int)
                                                             and 0 < port < 65536)
                                          or (isinstance(port, str) and port.isdigit()
                                              and 0 < int(port) < 65536)):
            raise SubmitError(f"job {node}: port must be auto or a port number, not {port!r}")
        port = str(port)
    restart = raw.get("restart") or "on-failure"
    if restart not in RESTART_POLICIES:
        raise SubmitError(f"job {node}: restart must be one of {', '.join(RESTART_POLICIES)}, "
                          f"not {restart!r}")
    health = raw.get("health")
    if health is not None and not (health == "tcp" or (isinstance(health, str)
                                                        and health.startswith("http:/"))):
        raise SubmitError(f"job {node}: health must be tcp or http:/PATH, not {health!r}")
    if health is not None and port is None:
        raise SubmitError(f"job {node}: a health check needs a port")
    return {"port": port, "restart": restart, "health": health}


# The gate a job's `hitl_message` asks for is `<id>.approval` in Titan; the reference's SDK
# names it `hitl-gate-<id>` (its own TitanJob id, which is also its store key).  Both names
# address it: `reference_gate_name` gives the second, `approval_gate_node` goes back.
APPROVAL_SUFFIX = ".approval"
REFERENCE_GATE_PREFIX = "hitl-gate-"


def reference_gate_name(spec: JobSpec) -> Optional[str]:
    """`hitl-gate-<id>` for the gate that `hitl_message` put after job <id>, else None."""
    if spec.kind != "gate" or len(spec.depends_on) != 1:
        return None
    parent = spec.depends_on[0]
    if spec.job_id != parent + APPROVAL_SUFFIX:
        return None
    return REFERENCE_GATE_PREFIX + parent


def approval_gate_node(name: str) -> Optional[str]:
    """`<id>.approval` for the reference's `hitl-gate-<id>`, else None (the caller checks
    that it is a gate after <id>, with `reference_gate_name`)."""
    if not name.startswith(REFERENCE_GATE_PREFIX) or len(name) == len(REFERENCE_GATE_PREFIX):
        return None
    return name[len(REFERENCE_GATE_PREFIX):] + APPROVAL_SUFFIX


def with_hitl_gates(specs: list[JobSpec], gates: dict[str, dict]) -> list[JobSpec]:
    """Insert an approval gate after each job that asked for one; its children wait on it."""
    if not gates:
        return specs
    taken = {s.job_id for s in specs}
    gate_of: dict[str, str] = {}
    for node in gates:
        name = node + APPROVAL_SUFFIX
        while name in taken:
            name += "_"
        taken.add(name)
        gate_of[node] = name
    out = []
    for spec in specs:
        parents = tuple(gate_of.get(p, p) for p in spec.depends_on)
        out.append(spec if parents == spec.depends_on else
                   attrs.evolve(spec, depends_on=parents))
        if spec.job_id in gate_of:
            g = gates[spec.job_id]
            out.append(JobSpec(job_id=gate_of[spec.job_id], command=(),
                               kind="gate", depends_on=(spec.job_id,), message=g["message"],
                               timeout=g["timeout"]))
    return out


def parse_jobs(raw_jobs: Any, workspace: Optional[str] = None) -> list[JobSpec]:
    if not isinstance(raw_jobs, (list, tuple)) or not raw_jobs:
        raise SubmitError("a DAG needs a non-empty list of jobs")
    specs, gates = [], {}
    for i, raw in enumerate(raw_jobs):
        spec, gate = parse_job(raw, i, workspace)
        specs.append(spec)
        if gate:
            gates[spec.job_id] = gate
    return with_hitl_gates(specs, gates)


def parse_dag(body: dict) -> RunTemplate:
    name = body.get("name") or "dag"
    if not isinstance(name, str) or not NAME.match(name):
        raise SubmitError(f"DAG name must be letters, digits, '_', '.' or '-', not {name!r}")
    specs = parse_jobs(body.get("jobs"), _workspace("the DAG", body.get("workspace")))
    children = check_graph(specs, known=())
    max_jobs = body.get("max_jobs")
    if max_jobs is not None and (isinstance(max_jobs, bool) or not isinstance(max_jobs, int)
                                 or max_jobs < 1):
        raise SubmitError("max_jobs must be a whole number, 1 or more")
    agent_run_id = body.get("agent_run_id")
    if agent_run_id is not None and (not isinstance(agent_run_id, str)
                                     or not NAME.match(agent_run_id)):
        raise SubmitError(f"agent_run_id must be letters, digits, '_', '.' or '-'")
    stage = body.get("stage")
    template = RunTemplate(name=name, specs=tuple(specs), agent_run_id=agent_run_id,
                           stage=str(stage) if stage is not None else None, max_jobs=max_jobs)
    template_children(template, children)  # worked out for the check: kept for the runs
    return template


def check_graph(specs: Iterable[JobSpec], known: Iterable[str]) -> dict[str, tuple[str, ...]]:
    """Refuse duplicate ids, unknown parents and cycles among `specs` (whose parents may
    also be the `known` nodes of a run that already exists); `children_of(specs)` if all
    is well."""
    specs = list(specs)
    known = set(known)
    seen: dict[str, int] = {}
    for spec in specs:
        if spec.job_id in seen or spec.job_id in known:
            raise SubmitError(f"job id {spec.job_id!r} is used twice")
        seen[spec.job_id] = 1
    for spec in specs:
        for parent in spec.depends_on:
            if parent == spec.job_id:
                raise SubmitError(f"job {spec.job_id} depends on itself")
            if parent not in seen and parent not in known:
                raise SubmitError(f"job {spec.job_id} depends on unknown job {parent!r}")
    # Kahn's algorithm over the new jobs; known jobs cannot depend on new ones.
    parents_left = {s.job_id: sum(1 for p in s.depends_on if p in seen) for s in specs}
    children = children_of(specs)  # only new nodes are looked up: known ones never get ready
    ready = [n for n, c in parents_left.items() if c == 0]
    done = 0
    while ready:
        node = ready.pop()
        done += 1
        for child in children.get(node, ()):
            parents_left[child] -= 1
            if parents_left[child] == 0:
                ready.append(child)
    if done < len(specs):
        raise SubmitError(f"cycle: {' -> '.join(_a_cycle(specs, parents_left))}")
    return children


def _a_cycle(specs: list[JobSpec], parents_left: dict[str, int]) -> list[str]:
    """One cycle among the jobs Kahn's algorithm could not order, in dependency order."""
    stuck = {n for n, c in parents_left.items() if c > 0}
    parents = {s.job_id: [p for p in s.depends_on if p in stuck]
               for s in specs if s.job_id in stuck}
    node = min(stuck)
    path: list[str] = []
    index: dict[str, int] = {}
    while node not in index:
        index[node] = len(path)
        path.append(node)
        node = parents[node][0]
    cycle = path[index[node]:] + [node]
    return list(reversed(cycle))
