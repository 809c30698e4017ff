"""The public reference implementation's text requests: job strings in, Titan DAG specs out.

Pure code: no reactor, no sockets, no files (the uploaded assets an archive job needs are
read through the `assets` callable the caller passes).  The master's side is
titan/master/legacy.py; docs/compat.md describes the format and what Titan does differently.

A job string is

    ID|JOBTYPE|FIELDS...|PRIORITY|DELAY_MS|[PARENT,...]        (optionally |AFFINITY)

with, per JOBTYPE:

    RUN_PAYLOAD            FILE|ARGS|BASE64|REQUIREMENT
    DEPLOY_PAYLOAD         FILE|BASE64|PORT|REQUIREMENT
    RUN_ARCHIVE            PROJECT.zip/ENTRY|ARGS|REQUIREMENT
    START_ARCHIVE_SERVICE  PROJECT.zip/ENTRY|ARGS|PORT|REQUIREMENT

It is read from the outside in, as the reference does: the optional `|AFFINITY`, the
parents, the delay and the priority from the right; the id and the type from the left; what
is left are the type's fields, whose fixed ones are taken from both ends so that ARGS (in the
middle) may hold `|`.  Older clients put the requirement before the type
(`ID|GENERAL|RUN_PAYLOAD|FILE|ARGS|BASE64|...`) and none at the end; that is read too.

A SUBMIT_DAG body is job strings joined by ` ; `.  A `;` ends a job string only where the
text before it ends like one (`|PRIORITY|DELAY|[PARENTS]`, maybe `|AFFINITY`), so a `;` in
ARGS, quoted or not, stays in the ARGS.
"""
from __future__ import annotations

import base64
import binascii
import io
import re
import shlex
import zipfile
from typing import Callable, Iterable, Optional

RUN_PAYLOAD = "RUN_PAYLOAD"
DEPLOY_PAYLOAD = "DEPLOY_PAYLOAD"
RUN_ARCHIVE = "RUN_ARCHIVE"
START_ARCHIVE_SERVICE = "START_ARCHIVE_SERVICE"
JOB_TYPES = (RUN_PAYLOAD, DEPLOY_PAYLOAD, RUN_ARCHIVE, START_ARCHIVE_SERVICE)

DAG_PREFIX = "DAG-"
RUN_NAME = "legacy"  # the name (so the id prefix) of the runs that text requests start
GENERAL = "GENERAL"  # the reference's "any worker" requirement
HITL_SCRIPT = "hitl_gate.py"  # the reference SDK's approval gate, run as a job there
HITL_DEFAULT_WAIT = 48 * 3600
HITL_KEY_PREFIX = "titan:hitl:status:"
ARCHIVE_LAUNCHER = "archive_launcher.py"
# The reference's defaults for what its clients submit: a failed job is run again up to 3
# times before it is DEAD, and a worker runs the scripts of a DAG in one shared directory
# (archives in their own, as there).
RETRIES = 3
WORKSPACE = "shared"

ID = re.compile(r"^[A-Za-z0-9_.-]+$")
_FLAG = re.compile(r"\|\s*(AFFINITY|STICKY)\s*$", re.IGNORECASE)
# The end of a job string: |PRIORITY|DELAY|[PARENTS], and maybe |AFFINITY.
_TAIL = re.compile(r"\|\s*([^|\[\]]*?)\s*\|\s*([^|\[\]]*?)\s*\|\s*\[([^\[\]]*)\]\s*$")
_BOUNDARY = re.compile(r"\|\s*-?\d+\s*\|\s*-?\d+\s*\|\s*\[[^\[\]]*\]\s*"
                       r"(?:\|\s*(?:AFFINITY|STICKY)\s*)?$", re.IGNORECASE)
_INT = re.compile(r"^\s*-?\d+\s*$")

# Titan's job states as the reference's clients know them.  A gate waiting for a person is a
# job that runs there (its hitl_gate.py polls the store).
STATUS = {"PENDING": "PENDING", "RUNNING": "RUNNING", "COMPLETED": "COMPLETED",
          "FAILED": "FAILED", "DEAD": "DEAD", "CANCELLED": "CANCELLED",
          "WAITING_APPROVAL": "RUNNING"}

Assets = Callable[[str], Optional[bytes]]


class ParseError(ValueError):
    """A request that cannot be read; the message names the job and the field."""


# -- ids ----------------------------------------------------------------------------------

def node_of(ref: str) -> str:
    """The job id a reference id names: `DAG-extract` and `extract` are the same job."""
    ref = ref.strip()
    return ref[len(DAG_PREFIX):] if ref.startswith(DAG_PREFIX) else ref


def hitl_key(node: str) -> str:
    return HITL_KEY_PREFIX + node


def valid_asset_name(name: str) -> bool:
    """A plain file name: what UPLOAD_ASSET may create under the master's assets folder."""
    return (bool(name) and name not in (".", "..") and "/" not in name and "\\" not in name
            and "\0" not in name and name == name.strip() and len(name.encode()) <= 255)


# -- splitting a SUBMIT_DAG body ----------------------------------------------------------

def split_dag(body: str) -> list[str]:
    """The job strings of a SUBMIT_DAG body, in order.

    Only a `;` after something that ends like a job string separates two; any other `;`
    belongs to the job string it is in (an argument, say).  Empty pieces are skipped.
    """
    out: list[str] = []
    start = 0
    pos = body.find(";")
    while pos != -1:
        piece = body[start:pos]
        if not piece.strip():
            start = pos + 1
        elif _BOUNDARY.search(piece):
            out.append(piece.strip())
            start = pos + 1
        pos = body.find(";", pos + 1)
    last = body[start:].strip()
    if last:
        out.append(last)
    return out


# -- one job string -----------------------------------------------------------------------

def _b64(job: str, field: str, text: str) -> bytes:
    try:
        return base64.b64decode(text.strip(), validate=True)
    except (binascii.Error, ValueError):
        raise ParseError(f"job {job}: {field} is not valid base64") from None


def _int(job: str, field: str, text: str) -> int:
    if not _INT.match(text):
        raise ParseError(f"job {job}: {field} must be a whole number, not {text.strip()!r}")
    return int(text)


def _args(job: str, text: str) -> list[str]:
    try:
        return shlex.split(text)
    except ValueError as e:
        raise ParseError(f"job {job}: args {text!r}: {e}") from None


def _node(job: str, value: str, what: str) -> str:
    node = node_of(value)
    if not ID.match(node):
        raise ParseError(f"job {job}: {what} {value.strip()!r} must be letters, digits, '_', "
                         "'.' or '-' (after an optional DAG- prefix)")
    return node


def _port(job: str, text: str) -> str:
    text = text.strip()
    if text in ("", "0"):
        return "auto"
    if not text.isdigit() or not 0 < int(text) < 65536:
        raise ParseError(f"job {job}: port must be a port number (1-65535) or 0, not {text!r}")
    return str(int(text))


def _tags(requirement: str) -> list[str]:
    tags = [t.strip() for t in requirement.split(",") if t.strip()]
    return [t for t in tags if t.upper() != GENERAL]


def parse_pointer(job: str, pointer: str) -> tuple[str, str]:
    """`project.zip/src/main.py` -> ("project.zip", "src/main.py")."""
    match = re.match(r"^(.+?\.zip)/+(.+)$", pointer.strip(), re.IGNORECASE)
    if not match:
        raise ParseError(f"job {job}: the archive entry must be PROJECT.zip/PATH, "
                         f"not {pointer.strip()!r}")
    zip_name, entry = match.group(1), match.group(2).replace("\\", "/")
    if not valid_asset_name(zip_name):
        raise ParseError(f"job {job}: {zip_name!r} is not an uploaded asset's name")
    parts = [p for p in entry.split("/") if p not in ("", ".")]
    if not parts or ".." in parts:
        raise ParseError(f"job {job}: the archive entry {entry!r} must be a path inside "
                         f"{zip_name}")
    return zip_name, "/".join(parts)


def _gate(job: str, raw_args: str, parents: list[str]) -> dict:
    """The reference SDK's hitl_gate.py job (args: GATE_ID [MAX_WAIT_SECONDS] [MESSAGE...])
    as a Titan approval gate."""
    try:
        argv = shlex.split(raw_args)
    except ValueError:  # the SDK passes the message unquoted: "Don't ship" must still work
        argv = raw_args.split()
    wait, rest = HITL_DEFAULT_WAIT, argv[1:]
    if rest and rest[0].lstrip("-").isdigit():
        wait = int(rest[0]) if int(rest[0]) > 0 else HITL_DEFAULT_WAIT
        rest = rest[1:]
    return {"id": job, "kind": "gate", "depends_on": parents,
            "message": " ".join(rest) or "Awaiting human approval",
            "timeout": float(wait), "on_timeout": "reject"}


def parse_job_string(text: str, assets: Optional[Assets] = None,
                     max_script_bytes: Optional[int] = None) -> dict:
    """A job string as a job dict of Titan's DAG wire spec (titan/core/dag.py)."""
    raw = text.strip()
    label = raw.split("|", 1)[0].strip() or "?"
    affinity = None
    flag = _FLAG.search(raw)
    if flag:
        affinity = "parent"
        raw = raw[:flag.start()].rstrip()
    tail = _TAIL.search(raw)
    if not tail:
        raise ParseError(f"job {label}: a job string ends with |PRIORITY|DELAY_MS|[PARENTS] "
                         f"(got {_clip(text)!r})")
    head = raw[:tail.start()]
    fields = head.split("|")
    if len(fields) < 3:
        raise ParseError(f"job {label}: expected ID|JOBTYPE|..., got {_clip(head)!r}")
    job = _node(label, fields[0], "the id")
    priority = _int(job, "priority", tail.group(1))
    delay_ms = _int(job, "delay", tail.group(2))
    if delay_ms < 0:
        raise ParseError(f"job {job}: delay must be 0 or more milliseconds, not {delay_ms}")
    parents = [_node(job, p, "parent") for p in tail.group(3).split(",") if p.strip()]
    kind = fields[1].strip().upper()
    requirement: Optional[str] = None
    payload = fields[2:]
    if kind not in JOB_TYPES and len(fields) > 3 and fields[2].strip().upper() in JOB_TYPES:
        # The older layout: ID|REQUIREMENT|JOBTYPE|... with no requirement at the end.
        requirement, kind, payload = fields[1].strip(), fields[2].strip().upper(), fields[3:]
    if kind not in JOB_TYPES:
        raise ParseError(f"job {job}: unknown job type {fields[1].strip()!r} "
                         f"(known: {', '.join(JOB_TYPES)})")
    if requirement is None:
        minimum = {RUN_PAYLOAD: 4, DEPLOY_PAYLOAD: 4, RUN_ARCHIVE: 2,
                   START_ARCHIVE_SERVICE: 3}[kind]
        if len(payload) < minimum:
            raise ParseError(f"job {job}: {kind} takes {_LAYOUT[kind]}, "
                             f"got {len(payload)} field(s)")
        requirement = payload.pop()
    if not payload:
        raise ParseError(f"job {job}: {kind} takes {_LAYOUT[kind]}, got no fields")
    out: dict = {"id": job, "depends_on": parents, "priority": priority,
                 "delay": delay_ms / 1000.0, "tags": _tags(requirement),
                 "workspace": WORKSPACE if kind in (RUN_PAYLOAD, DEPLOY_PAYLOAD) else "job"}
    if kind in (RUN_PAYLOAD, RUN_ARCHIVE):
        out["retries"] = RETRIES
    if affinity:
        out["affinity"] = affinity
    if kind == RUN_PAYLOAD:
        if len(payload) < 3:
            raise ParseError(f"job {job}: RUN_PAYLOAD takes {_LAYOUT[kind]}")
        name, content = _file(job, payload[0]), payload[-1]
        raw_args = "|".join(payload[1:-1])
        if name == HITL_SCRIPT:
            return _gate(job, raw_args, parents)
        script = _content(job, name, content, assets)
        out["script"] = {"name": name, "content": script, "args": _args(job, raw_args)}
    elif kind == DEPLOY_PAYLOAD:
        if len(payload) != 3:
            raise ParseError(f"job {job}: DEPLOY_PAYLOAD takes {_LAYOUT[kind]}")
        name = _file(job, payload[0])
        out["script"] = {"name": name, "content": _content(job, name, payload[1], assets),
                         "args": []}
        # The reference leaves a DAG's services up once the DAG is done.
        out.update(type="service", port=_port(job, payload[2]), persist=True)
    else:
        service = kind == START_ARCHIVE_SERVICE
        if service and len(payload) < 2:
            raise ParseError(f"job {job}: {kind} takes {_LAYOUT[kind]}")
        port = _port(job, payload.pop()) if service else None
        zip_name, entry = parse_pointer(job, payload[0])
        data = assets(zip_name) if assets is not None else None
        if data is None:
            raise ParseError(f"job {job}: no uploaded asset {zip_name} (upload the project "
                             "with UPLOAD_ASSET first)")
        launcher = archive_launcher(job, zip_name, entry, data, what=kind)
        out["script"] = {"name": ARCHIVE_LAUNCHER, "content": launcher,
                         "args": _args(job, "|".join(payload[1:]))}
        if service:
            out.update(type="service", port=port, persist=True)
    size = len(out["script"]["content"])
    if max_script_bytes is not None and size > max_script_bytes:
        raise ParseError(f"job {job}: its script is {size} bytes, over the "
                         f"{max_script_bytes}-byte limit of one job")
    return out


_LAYOUT = {
    RUN_PAYLOAD: "FILE|ARGS|BASE64|REQUIREMENT",
    DEPLOY_PAYLOAD: "FILE|BASE64|PORT|REQUIREMENT",
    RUN_ARCHIVE: "PROJECT.zip/ENTRY|ARGS|REQUIREMENT",
    START_ARCHIVE_SERVICE: "PROJECT.zip/ENTRY|ARGS|PORT|REQUIREMENT",
}


def _clip(text: str, n: int = 80) -> str:
    text = text.strip()
    return text if len(text) <= n else text[:n] + "..."


def _file(job: str, name: str) -> str:
    base = name.strip().replace("\\", "/").rsplit("/", 1)[-1]
    if not base or base in (".", ".."):
        raise ParseError(f"job {job}: file name {name.strip()!r} names no file")
    return base


def _content(job: str, name: str, text: str, assets: Optional[Assets]) -> bytes:
    """The script: the base64 the job carries, or else the script deployed under its name."""
    if text.strip():
        return _b64(job, f"the content of {name}", text)
    found = assets(name) if assets is not None else None
    if found is None:
        raise ParseError(f"job {job}: no content for {name}, and no script of that name was "
                         "deployed (DEPLOY_SCRIPT)")
    return found


def parse_dag(body: str, assets: Optional[Assets] = None,
              max_script_bytes: Optional[int] = None) -> dict:
    """A SUBMIT_DAG body as a DAG spec for the master's submit_dag."""
    strings = split_dag(body)
    if not strings:
        raise ParseError("SUBMIT_DAG: the body holds no job string")
    jobs = [parse_job_string(s, assets, max_script_bytes) for s in strings]
    return {"name": RUN_NAME, "jobs": jobs}


def parse_submit_job(text: str, assets: Optional[Assets] = None,
                     max_script_bytes: Optional[int] = None,
                     new_id: Callable[[], str] = lambda: "job") -> dict:
    """A SUBMIT_JOB body, `[ID|]JOBTYPE|FIELDS...[|PRIORITY][|DELAY_MS]` (or a whole job
    string, parents and all), as a one-job DAG spec."""
    raw = text.strip()
    if not raw:
        raise ParseError("SUBMIT_JOB: the body is empty")
    probe = raw
    flag = _FLAG.search(probe)
    if flag:
        probe = probe[:flag.start()].rstrip()
    if probe.endswith("]") and _TAIL.search(probe):
        return {"name": RUN_NAME, "jobs": [parse_job_string(raw, assets, max_script_bytes)]}
    fields = probe.split("|")
    first = fields[0].strip().upper()
    if first in JOB_TYPES:
        fields.insert(0, new_id())
    elif len(fields) < 2 or (fields[1].strip().upper() not in JOB_TYPES
                             and (len(fields) < 3
                                  or fields[2].strip().upper() not in JOB_TYPES)):
        raise ParseError(f"SUBMIT_JOB: expected [ID|]JOBTYPE|..., with JOBTYPE one of "
                         f"{', '.join(JOB_TYPES)}; got {_clip(raw)!r}")
    numbers: list[str] = []
    while len(numbers) < 2 and len(fields) > 3 and _INT.match(fields[-1]):
        numbers.insert(0, fields.pop().strip())
    priority, delay = (numbers + ["0", "0"])[:2] if numbers else ("0", "0")
    rebuilt = "|".join(fields) + f"|{priority}|{delay}|[]" + ("|AFFINITY" if flag else "")
    return {"name": RUN_NAME, "jobs": [parse_job_string(rebuilt, assets, max_script_bytes)]}


# -- archives -----------------------------------------------------------------------------

_LAUNCHER = '''\
"""Titan: runs %(entry)s from the project archive %(zip)s (the reference's %(what)s).

Unpacks the project into the job's working directory, runs the entry there with this job's
arguments, then removes what it unpacked (whatever the entry wrote stays) -- unless the
directory is its run's shared workspace (KEEP), where other jobs may use those files."""
import base64, io, os, signal, subprocess, sys, zipfile

ENTRY = %(entry)r
ARCHIVE = %(zip)r
DATA = %(data)r
KEEP = %(keep)r


def main():
    root = os.getcwd()
    written = []
    with zipfile.ZipFile(io.BytesIO(base64.b64decode(DATA))) as z:
        for info in z.infolist():
            parts = info.filename.replace("\\\\", "/").split("/")
            if info.filename.startswith("/") or ".." in parts:
                continue
            written.append(z.extract(info, root))
    path = os.path.join(root, *ENTRY.split("/"))
    if ENTRY.endswith(".py"):
        argv = [sys.executable, path]
    elif ENTRY.endswith(".sh"):
        argv = ["bash", path]
    else:
        os.chmod(path, os.stat(path).st_mode | 0o111)
        argv = [path]
    # A stop signals the whole process group: the entry gets it too; wait for it to end.
    signal.signal(signal.SIGTERM, lambda *_: None)
    signal.signal(signal.SIGINT, lambda *_: None)
    try:
        proc = subprocess.Popen(argv + sys.argv[1:], cwd=root)
        code = proc.wait()
    except OSError as e:
        print("titan: cannot run %%s from %%s: %%s" %% (ENTRY, ARCHIVE, e), file=sys.stderr)
        code = 127
    for p in [] if KEEP else sorted(written, key=len, reverse=True):
        try:
            os.rmdir(p) if os.path.isdir(p) else os.unlink(p)
        except OSError:
            pass
    for d in [] if KEEP else sorted({os.path.dirname(p) for p in written}, key=len,
                                    reverse=True):
        while d.startswith(root + os.sep):
            try:
                os.rmdir(d)
            except OSError:
                break
            d = os.path.dirname(d)
    sys.exit(code if code >= 0 else 128 - code)


main()
'''


def archive_launcher(job: str, zip_name: str, entry: str, data: bytes,
                     what: str = "RUN_ARCHIVE", keep: bool = False) -> bytes:
    """A Python script that carries the zip and runs `entry` from it (see _LAUNCHER);
    `keep`: leave what it unpacked (a shared workspace)."""
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as z:
            names = {n.replace("\\", "/").lstrip("/") for n in z.namelist()}
    except (zipfile.BadZipFile, ValueError) as e:
        raise ParseError(f"job {job}: {zip_name} is not a zip archive ({e})") from None
    if entry not in names:
        raise ParseError(f"job {job}: {zip_name} has no file {entry}")
    return (_LAUNCHER % {"entry": entry, "zip": zip_name, "what": what,
                         "data": base64.b64encode(data), "keep": bool(keep)}).encode()


# -- writing job strings (for clients) ----------------------------------------------------

def job_string(job_id: str, kind: str, fields: Iterable[str], priority: int = 1,
               delay_ms: int = 0, parents: Iterable[str] = (), affinity: bool = False) -> str:
    """`ID|KIND|FIELDS...|PRIORITY|DELAY_MS|[PARENTS]` (and `|AFFINITY`)."""
    body = "|".join([job_id, kind, *fields, str(priority), str(delay_ms),
                     "[" + ",".join(parents) + "]"])
    return body + ("|AFFINITY" if affinity else "")


def run_payload(job_id: str, file_name: str, content: bytes, args: str = "",
                requirement: str = GENERAL, **options) -> str:
    return job_string(job_id, RUN_PAYLOAD, [file_name, args,
                                            base64.b64encode(content).decode(), requirement],
                      **options)


def deploy_payload(job_id: str, file_name: str, content: bytes, port: int = 0,
                   requirement: str = GENERAL, **options) -> str:
    return job_string(job_id, DEPLOY_PAYLOAD, [file_name, base64.b64encode(content).decode(),
                                               str(port), requirement], **options)


def run_archive(job_id: str, pointer: str, args: str = "", requirement: str = GENERAL,
                **options) -> str:
    return job_string(job_id, RUN_ARCHIVE, [pointer, args, requirement], **options)


def start_archive_service(job_id: str, pointer: str, args: str = "", port: int = 0,
                          requirement: str = GENERAL, **options) -> str:
    return job_string(job_id, START_ARCHIVE_SERVICE, [pointer, args, str(port), requirement],
                      **options)


def dag_body(job_strings: Iterable[str]) -> str:
    return " ; ".join(job_strings)
