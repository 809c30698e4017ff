"""Events as plain data: what a persistence backend stores and recovery replays.

A record is a msgpack array `[at, type, field, ...]`; `at` is the time the event was applied.
Records decode with arrays as tuples (one allocation each, and what specs hold anyway).
Pure code (msgpack only).
"""
from __future__ import annotations

from itertools import chain, islice
from typing import Any, Callable, Iterable, Iterator, Optional

import attrs
import msgpack

from titan.core import events as ev
from titan.core.model import JobSpec


_EMPTY: frozenset = frozenset()
_setattr = object.__setattr__
# Every field but the first two, with its default: a record carries only what differs.
_OPTIONAL = tuple((a.name, a.default) for a in attrs.fields(JobSpec)[2:])


def spec_to_record(spec: JobSpec) -> list:
    """`[job_id, command]`, plus a map of the fields that are not at their defaults:
    a standalone job's spec is ~30 bytes instead of ~300, and decodes ~3x faster."""
    extra = {}
    for name, default in _OPTIONAL:
        value = getattr(spec, name)
        if value != default:
            extra[name] = (dict(value) if name == "env" else
                           sorted(value) if name == "tags" else
                           list(value) if name == "depends_on" else value)
    if extra:
        return [spec.job_id, list(spec.command), extra]
    return [spec.job_id, list(spec.command)]


def spec_from_record(d) -> JobSpec:
    """A JobSpec from a record this master wrote (so already validated and normalised):
    fields set directly, without the converters `JobSpec.from_wire` runs — recovery builds
    one per job, and this is most of what it costs.  Takes `spec_to_record`'s arrays and
    the full maps older logs and snapshots hold."""
    if type(d) is tuple or type(d) is list:
        return _spec_from_array(d)
    spec = object.__new__(JobSpec)
    _setattr(spec, "job_id", d["job_id"])
    _setattr(spec, "command", tuple(d["command"]))
    env = d.get("env")
    _setattr(spec, "env", tuple(sorted(env.items())) if env else ())
    _setattr(spec, "cwd", d.get("cwd"))
    _setattr(spec, "priority", d.get("priority") or 0)
    tags = d.get("tags")
    _setattr(spec, "tags", frozenset(tags) if tags else _EMPTY)
    _setattr(spec, "timeout", d.get("timeout"))
    _setattr(spec, "retries", d.get("retries") or 0)
    _setattr(spec, "delay", d.get("delay") or 0.0)
    _setattr(spec, "name", d.get("name"))
    deps = d.get("depends_on")
    _setattr(spec, "depends_on", tuple(deps) if deps else ())
    _setattr(spec, "kind", d.get("kind") or "job")
    _setattr(spec, "message", d.get("message"))
    _setattr(spec, "on_timeout", d.get("on_timeout") or "reject")
    _setattr(spec, "script_name", d.get("script_name"))
    _setattr(spec, "script", d.get("script"))
    _setattr(spec, "affinity", d.get("affinity"))
    _setattr(spec, "port", d.get("port"))
    _setattr(spec, "restart", d.get("restart") or "on-failure")
    _setattr(spec, "health", d.get("health"))
    _setattr(spec, "workspace", d.get("workspace"))
    _setattr(spec, "persist", bool(d.get("persist")))
    return spec


def _compile_spec_builder():
    """`_spec_from_array`, generated from JobSpec's fields (as attrs generates __init__):
    straight-line slot stores, the cheapest way CPython has to fill an instance without
    the converters -- recovery builds one per submitted job."""
    env: dict[str, Any] = {"new": object.__new__, "JobSpec": JobSpec, "fix": _fix_extra}
    lines = ["def build(r):", "    o = new(JobSpec)", "    o.job_id = r[0]",
             "    c = r[1]", "    o.command = c if type(c) is tuple else tuple(c)"]
    for name, default in _OPTIONAL:
        env[f"default_{name}"] = default
        lines.append(f"    o.{name} = default_{name}")
    lines += ["    if len(r) > 2:",
              "        for name, value in r[2].items():",
              "            setattr(o, name, fix(name, value))",
              "    return o"]
    exec("\n".join(lines), env)  # noqa: S102 - our own text, from attrs.fields
    return env["build"]


def _fix_extra(name: str, value: Any) -> Any:
    if name == "env":
        return tuple(sorted(value.items()))
    if name == "tags":
        return frozenset(value)
    if name == "depends_on":
        return tuple(value)
    return value


_spec_from_array = _compile_spec_builder()


def template_to_wire(t: ev.RunTemplate) -> dict:
    return {"name": t.name, "specs": [spec_to_record(s) for s in t.specs],
            "agent_run_id": t.agent_run_id, "stage": t.stage, "max_jobs": t.max_jobs}


def template_from_wire(d: dict) -> ev.RunTemplate:
    return ev.RunTemplate(name=d["name"], specs=tuple(spec_from_record(s) for s in d["specs"]),
                          agent_run_id=d.get("agent_run_id"), stage=d.get("stage"),
                          max_jobs=d.get("max_jobs"))


def _as_lists(value: Any) -> Any:
    """What a client sent, as it sent it: records decode arrays as tuples (cheaper, and
    what specs hold); data that is the client's own gets its lists back."""
    if type(value) is tuple:
        return [_as_lists(v) for v in value]
    if type(value) is dict:
        return {k: _as_lists(v) for k, v in value.items()}
    return value


def _reports_out(reports) -> list:
    return [[r.job_id, r.attempt, r.exit_code, r.reason] for r in reports]


def _reports_in(items) -> tuple:
    return tuple(ev.JobReport(*r) for r in items)


_ident = (lambda v: v, lambda v: v)
# How each kind of field goes to the wire and back.
_KINDS: dict[str, tuple[Callable[[Any], Any], Callable[[Any], Any]]] = {
    "plain": _ident,
    "spec": (spec_to_record, spec_from_record),
    "specs": (lambda v: [spec_to_record(s) for s in v],
              lambda v: tuple(spec_from_record(s) for s in v)),
    "template": (template_to_wire, template_from_wire),
    "reports": (_reports_out, _reports_in),
    "tags": (sorted, frozenset),
    "key": (list, tuple),
    "data": (lambda v: v, _as_lists),  # a client's own values (a result, a service's status)
}

# The events that change what the master must remember, and their fields' kinds.  Heartbeats,
# ticks and start notices are not here: they change nothing that recovery needs (a missed
# heartbeat shows up as a recorded WorkerLost).
PERSISTED: dict[type, tuple[str, ...]] = {
    ev.JobSubmitted: ("spec",),
    ev.DagSubmitted: ("plain", "template"),
    ev.JobsAdded: ("plain", "specs", "plain"),
    ev.WorkerJoined: ("plain", "plain", "plain", "tags", "plain", "reports", "reports"),
    ev.WorkerDisconnected: ("plain",),
    ev.WorkerLost: ("plain", "plain"),
    ev.MasterRestarted: (),
    ev.WorkerRetiring: ("plain", "plain"),
    ev.JobFinished: ("plain",) * 5,
    ev.CancelRequested: ("plain", "plain"),
    ev.RunCancelRequested: ("plain", "plain"),
    ev.GateDecided: ("plain",) * 5,  # records of 4 (before `via`) decode too
    ev.ResultSet: ("plain", "data"),
    ev.ScheduleAdded: ("plain", "plain", "template"),
    ev.ScheduleRemoved: ("plain",),
    ev.TimerFired: ("key",),
    ev.Forget: ("key", "key"),
    ev.ServiceReported: ("plain", "plain", "plain", "data"),
}
_NAMES = {cls: cls.__name__ for cls in PERSISTED}
_BY_NAME = {name: cls for cls, name in _NAMES.items()}
# Each event's number in a record (older records name the class: both decode).  A number is
# a cached small int where a name is a new string to allocate and hash per record.  Never
# renumber: logs on disk hold these.
CODES: dict[type, int] = {
    ev.JobSubmitted: 1, ev.JobFinished: 2, ev.DagSubmitted: 3, ev.JobsAdded: 4,
    ev.WorkerJoined: 5, ev.WorkerDisconnected: 6, ev.WorkerLost: 7, ev.MasterRestarted: 8,
    ev.WorkerRetiring: 9, ev.CancelRequested: 10, ev.RunCancelRequested: 11,
    ev.GateDecided: 12, ev.ResultSet: 13, ev.ScheduleAdded: 14, ev.ScheduleRemoved: 15,
    ev.TimerFired: 16, ev.Forget: 17, ev.ServiceReported: 18,
}
_FIELDS = {cls: [f.name for f in attrs.fields(cls)] for cls in PERSISTED}


class RecordError(ValueError):
    """A record that does not decode to an event."""


def persisted(event: object) -> bool:
    return type(event) in PERSISTED


def encode_event(event: object, at: float) -> bytes:
    cls = type(event)
    kinds = PERSISTED[cls]
    values = [_KINDS[k][0](getattr(event, name)) for name, k in zip(_FIELDS[cls], kinds)]
    return msgpack.packb([at, CODES[cls], *values], use_bin_type=True)


# Per event class: None when every field is plain (built from the values as they are), else
# the decoder of each field.
_DECODERS = {cls: (None if all(k == "plain" for k in kinds)
                   else tuple(_KINDS[k][1] for k in kinds))
             for cls, kinds in PERSISTED.items()}


def _decoder(cls: type, decoders: Optional[tuple]) -> Callable[[list], object]:
    """How a record's fields (`rec[2:]`) become a `cls` event."""
    if decoders is None:
        return lambda rec: cls(*rec[2:])
    if len(decoders) == 1:
        (only,) = decoders
        return lambda rec: cls(only(rec[2]))
    return lambda rec: cls(*(f(v) for f, v in zip(decoders, rec[2:])))


_BUILD = {name: _decoder(cls, _DECODERS[cls]) for name, cls in _BY_NAME.items()}


# The two records of every job's life, built without the generic decoder's calls: the
# event's slots stored directly (these classes have no converters or validators to run).

def _job_submitted(rec: tuple, _new=object.__new__, _cls=ev.JobSubmitted,
                   _array=_spec_from_array) -> object:
    spec = rec[2]
    e = _new(_cls)
    e.spec = _array(spec) if type(spec) is tuple else spec_from_record(spec)
    return e


def _job_finished(rec: tuple, _new=object.__new__, _cls=ev.JobFinished) -> object:
    e = _new(_cls)
    e.job_id, e.worker_id, e.attempt, e.exit_code, e.reason = rec[2:7]
    if len(rec) != 7:
        raise ValueError(f"JobFinished has 5 fields, not {len(rec) - 2}")
    return e


_BUILD["JobSubmitted"] = _job_submitted
_BUILD["JobFinished"] = _job_finished
for _cls, _code in CODES.items():
    _BUILD[_code] = _BUILD[_NAMES[_cls]]
_unpackb = msgpack.unpackb


def decode_event(record: bytes) -> tuple[float, object]:
    try:
        rec = _unpackb(record, raw=False, strict_map_key=False, use_list=False)
        return rec[0], _BUILD[rec[1]](rec)
    except Exception as e:
        raise RecordError(f"undecodable event record: {e}") from None


_CHUNK = 512  # records decoded per msgpack call by decode_events
_ARRAY32 = b"\xdd"  # msgpack: an array with a 32-bit count


def decode_events(records: Iterable[bytes]) -> Iterator[tuple[float, object]]:
    """`decode_event` of each record, in order: what recovery replays.

    Records are msgpack values, so 512 of them joined behind an array header are one msgpack
    array, which one call decodes (a call per record costs recovery a third of a second per
    million).  A chunk that does not decode exactly so (one value per record) is decoded
    record by record: the good ones come out and the bad one raises RecordError, as
    `decode_event` alone would.  Per event, the iteration is all C (chain over zip): the
    Python code runs once per chunk."""
    return chain.from_iterable(_decoded_chunks(records))


def _decoded_chunks(records: Iterable[bytes]) -> Iterator[Iterator[tuple[float, object]]]:
    it = iter(records)
    build = _BUILD
    while True:
        chunk = list(islice(it, _CHUNK))
        if not chunk:
            return
        try:
            rows = _unpackb(_ARRAY32 + len(chunk).to_bytes(4, "big") + b"".join(chunk),
                            raw=False, strict_map_key=False, use_list=False)
            if len(rows) != len(chunk):
                raise ValueError("records do not split")
            events = [build[row[1]](row) for row in rows]
        except Exception:
            yield map(decode_event, chunk)  # raises at the bad record, after the good ones
            continue
        # zip hands out one pair object over and over when its consumer lets go of it at
        # once (replay's `for at, event in ...` does): no tuple per event.
        yield zip([row[0] for row in rows], events)
