"""`titan`: the command line, a thin face over the SDK.

Every command has --help; success exits 0, an error prints one line on stderr and exits
non-zero.
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from typing import Optional, Sequence

from titan import __version__
from titan.errors import RemoteError, TitanError

EPILOG = ("The master is found from --master, else TITAN_HOST/TITAN_PORT, else 127.0.0.1:9090; "
          "the token from --token-file (or --token), else TITAN_TOKEN, else "
          "~/.titan/master/token.")


def _client(args):
    from titan.sdk.client import Client
    return Client(master=args.master, token=args.token, name="titan-cli")


COMMAND_WIDTH = 60  # a command longer than this is cut in tables (with …)


def _ellipsis() -> str:
    encoding = (getattr(sys.stdout, "encoding", None) or "ascii").lower()
    return "…" if "utf" in encoding else "..."


def _cell(value, width: Optional[int] = None, cut: Optional[str] = None) -> str:
    """A table cell on one line: a newline shows as ⏎ (or |), other control characters as
    spaces; cut to `width` characters with … when longer.  `cut`: `_ellipsis()`, when the
    caller has it already (a table asks once, not once per cell)."""
    text = "" if value is None else str(value)
    if cut is None:
        cut = _ellipsis()
    if not text.isprintable():  # most cells are: no per-character pass for them
        mark = "⏎" if cut == "…" else "|"
        text = text.replace("\r\n", "\n").replace("\n", mark)
        text = "".join(c if c.isprintable() else " " for c in text)
    if width is not None and len(text) > width:
        text = text[:max(0, width - len(cut))] + cut
    return text


def _print_rows(rows: list[list[str]]) -> None:
    if not rows:
        return
    cut = _ellipsis()
    rows = [[_cell(c, None, cut) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    # One write for the table: stdout on a terminal (or with PYTHONUNBUFFERED) would
    # otherwise take a system call per row.
    sys.stdout.write("".join("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() + "\n"
                             for r in rows))


def _dumps(value, **options) -> str:
    import json  # only the --json outputs need it: not imported by every command's start
    return json.dumps(value, **options)


def _print_json(value) -> None:
    print(_dumps(value, indent=2, sort_keys=True, default=repr))


def _outcome(job: dict) -> str:
    state = job["state"]
    if state == "FAILED" or state == "DEAD":
        what = job.get("reason") or f"exit {job.get('exit_code')}"
        return f"{state}, {what}"
    if state == "CANCELLED":
        return f"CANCELLED ({job.get('reason')})"
    return state


def _exit_status(job: dict) -> int:
    if job["state"] == "COMPLETED":
        return 0
    code = job.get("exit_code")
    if isinstance(code, int) and 0 < code < 256:
        return code
    return 1


# -- commands ----------------------------------------------------------------------------

def cmd_submit(args) -> int:
    command = list(args.command)
    if command and command[0] == "--":
        command = command[1:]
    if not command:
        raise TitanError("submit: no command given (titan submit [options] -- COMMAND [ARGS...])")
    env = {}
    for item in args.env or ():
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise TitanError(f"submit: --env {item!r}: expected NAME=VALUE")
        env[key] = value
    tags = [t for t in (args.tags or "").split(",") if t.strip()]
    with _client(args) as titan:
        job_id = titan.submit(command, priority=args.priority, tags=tags, timeout=args.timeout,
                              retries=args.retries, delay=args.delay, env=env, cwd=args.cwd,
                              name=args.name)
        print(job_id, flush=True)
        if not (args.wait or args.follow):
            return 0
        if args.follow:
            for data in titan.follow_logs(job_id):
                sys.stdout.buffer.write(data)
                sys.stdout.buffer.flush()
        job = titan.wait(job_id)
        print(f"{job_id} {_outcome(job)}", file=sys.stderr)
        return _exit_status(job)


def _is_run(titan, ref: str) -> Optional[dict]:
    if "/" in ref:
        return None
    try:
        return titan.run(ref)
    except RemoteError as e:
        if e.code == "not_found":
            return None
        raise


def _duration(j: dict) -> str:
    if j.get("started_at") and j.get("finished_at"):
        return f"{j['finished_at'] - j['started_at']:.2f}s"
    return "-"


def _run_table(run: dict) -> None:
    rows = [["JOB", "STATE", "ATTEMPTS", "DURATION", "WORKER", "REASON"]]
    for j in run["jobs"]:
        rows.append([j["node"], j["state"], str(j["attempt"]), _duration(j),
                     j.get("worker") or "-", j.get("reason") or ""])
    _print_rows(rows)


def _counts(run: dict) -> str:
    return "  ".join(f"{state} {n}" for state, n in sorted(run["counts"].items()))


def cmd_status(args) -> int:
    if args.job_id is None:
        return _cluster_status(args)
    with _client(args) as titan:
        run = _is_run(titan, args.job_id)
        if run is not None:
            if args.json:
                print(_dumps(run, indent=2, sort_keys=True))
                return 0
            print(run["state"])
            extra = [f"stage {run['stage']}"] if run.get("stage") else []
            if run.get("agent_run_id"):
                extra.append(f"agent run {run['agent_run_id']}")
            print(f"  run {run['run_id']} ({run['name']}{', ' if extra else ''}"
                  f"{', '.join(extra)}): {run['total']} jobs — {_counts(run)}")
            _run_table(run)
            return 0
        job = titan.job(args.job_id)
    if args.json:
        print(_dumps(job, indent=2, sort_keys=True))
        return 0
    print(job["state"])
    details = [["job", job["job_id"]]]
    if job["command"]:
        details.append(["command", _cell(" ".join(job["command"]))])
    if job.get("name"):
        details.append(["name", job["name"]])
    if job.get("worker"):
        details.append(["worker", job["worker"]])
    details.append(["attempt", str(job["attempt"])])
    if job.get("exit_code") is not None:
        details.append(["exit code", str(job["exit_code"])])
    if job.get("reason"):
        details.append(["reason", _cell(job["reason"])])
    if job.get("waiting"):
        details.append(["waiting", job["waiting"]])
    if job.get("run_id"):
        details.insert(1, ["run", job["run_id"]])
    if job.get("depends_on"):
        details.append(["after", ", ".join(job["depends_on"])])
    if job.get("decision"):
        d = job["decision"]
        what = "approved" if d["approved"] else "rejected"
        details.append(["decision", f"{what} by {d['by']}"
                        + (f": {d['comment']}" if d.get("comment") else "")])
        if d.get("via"):  # what the master saw: the credential, the peer, the store key
            details.append(["via", _cell(d["via"])])
    if job.get("result") is not None:
        details.append(["result", _dumps(job["result"])[:200]])
    if job.get("tags"):
        details.append(["tags", ",".join(job["tags"])])
    _print_details(details)
    return 0


def _print_details(details: list[list[str]]) -> None:
    width = max([11] + [len(key) + 2 for key, _ in details])
    for key, value in details:
        print(f"  {key + ':':<{width}}{value}")


def cmd_logs(args) -> int:
    with _client(args) as titan:
        if args.follow:
            for data in titan.follow_logs(args.job_id):
                sys.stdout.buffer.write(data)
                sys.stdout.buffer.flush()
        else:
            sys.stdout.buffer.write(titan.logs(args.job_id))
    sys.stdout.flush()
    return 0


def cmd_cancel(args) -> int:
    with _client(args) as titan:
        result = titan.cancel(args.job_id)
    if result["cancelled"]:
        print(f"{result.get('job_id') or result.get('run_id') or args.job_id} "
              f"{'CANCELLED' if result['state'] != 'REMOVED' else 'REMOVED'}")
        return 0
    print(f"titan: {args.job_id} is already {result['state']}; nothing to cancel", file=sys.stderr)
    return 1


def _warn(reply: dict) -> None:
    for warning in reply.get("warnings") or ():  # text frames on, storage: said every time
        print(f"titan: WARNING: {warning}", file=sys.stderr)


def _cluster_status(args) -> int:
    """`titan status` without a REF: the master, its log, its workers and its jobs."""
    with _client(args) as titan:
        stats = titan.stats()
        where = f"{titan.host}:{titan.port}"
    _warn(stats)
    if args.json:
        print(_dumps(stats, indent=2, sort_keys=True))
        return 0
    storage = "unavailable: " + stats["storage"] if stats.get("storage") else "ok"
    p = stats.get("persistence") or {}
    log = (f"{p.get('backend')}, fsync {p.get('fsync')}, {p.get('bytes', 0) / 1e6:.1f} MB in "
           f"{p.get('directory') or p.get('path')}") if p else "-"
    jobs = ", ".join(f"{n} {state}" for state, n in stats["jobs"].items() if n) or "none"
    print("STORAGE UNAVAILABLE" if stats.get("storage") else "UP")
    _print_details([["master", where],
                    ["event log", f"{log} ({storage})"],
                    ["workers", f"{stats['workers']}, {stats['busy']}/{stats['slots']} "
                                "slots busy"],
                    ["jobs", jobs],
                    ["text frames", stats.get("text_frames") or "off"],
                    *_config_line(stats.get("config"))])
    return 0


def _config_line(config) -> list:
    """The master's config file, its reloads and what waits for a restart (titan reload)."""
    if not config:
        return []
    source = config.get("source")
    text = "no file" if source == "<defaults>" else str(source)
    if config.get("reloads"):
        text += f", reloaded {config['reloads']} times"
    if config.get("restart"):
        text += f"; needs a restart for {', '.join(config['restart'])}"
    last = config.get("last") or {}
    if last.get("ok") is False:
        text += f"; the last reload was refused: {last.get('error')}"
    return [["config", _cell(text)]]


def cmd_workers(args) -> int:
    from titan.protocols.opcodes import Op
    action = getattr(args, "workers_cmd", None)
    if action == "start":
        return _start_worker(args)
    if action == "drain":
        return _drain_worker(args)
    with _client(args) as titan:
        reply = titan.call(Op.LIST_WORKERS)
    workers = reply["workers"]
    _warn(reply)
    if args.json:
        print(_dumps(workers, indent=2, sort_keys=True))
        return 0
    rows = [["ID", "HOST", "TAGS", "SLOTS", "STATE", "HEARTBEAT", "IDLE", "SPAWNED BY"]]
    for w in sorted(workers, key=lambda w: w["joined_at"]):
        idle = w.get("idle_for")
        rows.append([w["worker_id"], w["host"], ",".join(w["tags"]) or "-",
                     f"{w['busy']}/{w['slots']}", w["state"],
                     f"{w['last_heartbeat_ago']:.1f}s ago",
                     "-" if idle is None else f"{idle:.0f}s", w.get("spawned_by") or "-"])
    _print_rows(rows)
    if not workers:
        print("(no workers)")
    return 0


def _worker_named(titan, name: str) -> Optional[dict]:
    return next((w for w in titan.workers() if name in (w["name"], w["worker_id"])), None)


def _start_worker(args) -> int:
    from titan.protocols.opcodes import Op
    body: dict = {"tags": [t.strip() for t in (args.tags or "").split(",") if t.strip()]}
    if args.slots is not None:
        body["slots"] = args.slots
    if args.name:
        body["name"] = args.name
    with _client(args) as titan:
        started = titan.call(Op.START_WORKER, body)
        tags = ",".join(started["tags"]) or "no tags"
        print(f"started worker {started['name']} (pid {started['pid']}): {tags}, "
              f"{started['slots']} slots", file=sys.stderr)
        if args.no_wait:
            print(started["name"])
            return 0
        # Until it has registered: a job submitted next finds it.
        deadline = time.monotonic() + args.timeout
        while time.monotonic() < deadline:
            if _worker_named(titan, started["name"]) is not None:
                print(started["name"])
                return 0
            time.sleep(0.2)
    raise TitanError(f"worker {started['name']} did not register within {args.timeout:g}s "
                     f"(its log: worker.log in the master's data dir, "
                     f"started/{started['name']}/)")


def _drain_worker(args) -> int:
    from titan.protocols.opcodes import Op
    with _client(args) as titan:
        reply = titan.call(Op.DRAIN_WORKER, {"name": args.name})
        running = reply.get("running") or []
        what = (f"it finishes its {len(running)} running job(s) ({', '.join(running)}), "
                "then leaves" if running else "it runs nothing: it leaves now")
        print(f"worker {reply['name']} is {reply['state']}: no new jobs; {what}")
        if not args.wait:
            return 0
        while _worker_named(titan, reply["worker_id"]) is not None:
            time.sleep(0.2)
        print(f"worker {reply['name']} has left")
    return 0


def cmd_jobs(args) -> int:
    with _client(args) as titan:
        jobs = titan.jobs(state=args.state, limit=args.limit)
    if args.json:
        _print_json(jobs)
        return 0
    rows = [["JOB", "STATE", "WORKER", "EXIT", "COMMAND"]]
    for j in jobs:
        rows.append([j["job_id"], j["state"], j.get("worker") or "-",
                     "-" if j.get("exit_code") is None else str(j["exit_code"]),
                     _cell(" ".join(j["command"]), COMMAND_WIDTH)])
    _print_rows(rows)
    if not jobs:
        print("(no jobs)")
    return 0


def cmd_run(args) -> int:
    from titan.sdk.pipeline import load_pipeline
    pipeline = load_pipeline(args.pipeline)
    for item in args.set or ():
        key, sep, value = item.partition("=")
        if key not in ("agent_run_id", "stage") or not sep:
            raise TitanError(f"--set {item!r}: expected agent_run_id=ID or stage=NAME")
        setattr(pipeline, key, value)
    with _client(args) as titan:
        submitted = titan.submit_dag(pipeline, watch=args.wait)
        if "schedule_id" in submitted:
            when = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(submitted["next_at"]))
            print(submitted["schedule_id"])
            print(f"scheduled ({pipeline.schedule}); next run at {when}", file=sys.stderr)
            return 0
        run_id = submitted["run_id"]
        print(run_id, flush=True)
        if not args.wait:
            return 0
        return _follow_run(args, run_id, titan, submitted.get("run"))


def _follow_run(args, run_id: str, titan=None, snapshot=None) -> int:
    """Follow a run by its changes until it ends (titan/follow.py), then its table, a
    failed run's failed jobs' last lines and the total time; the exit status."""
    from titan.follow import Detached, follow_run, report_end
    spare = [titan] if titan is not None else []  # the first follow reuses this connection

    def connect():
        return spare.pop() if spare else _client(args)
    try:
        run = follow_run(connect, run_id, sys.stderr.isatty(), snapshot=snapshot)
    except Detached:
        return 130
    sys.stdout.flush()
    _run_table(run)
    sys.stdout.flush()
    report_end(lambda: _client(args), run)
    return 0 if run["state"] == "COMPLETED" else 1


def cmd_wait(args) -> int:
    """Follow a run again (as `run --wait` does), or wait for one job."""
    with _client(args) as titan:
        run = _is_run(titan, args.ref)
        if run is None:
            try:
                job = titan.wait(args.ref)
            except KeyboardInterrupt:
                print(f"\ntitan: stopped waiting; {args.ref} goes on", file=sys.stderr)
                return 130
            print(f"{job['job_id']} {_outcome(job)}", file=sys.stderr)
            return _exit_status(job)
        return _follow_run(args, run["run_id"], titan)


def cmd_approve(args, approved: bool = True) -> int:
    with _client(args) as titan:
        job = titan.approve(args.gate, args.comment or "", args.by) if approved else \
            titan.reject(args.gate, args.comment or "", args.by)
    d = job["decision"]
    print(f"{job['job_id']} {'APPROVED' if d['approved'] else 'REJECTED'} by {d['by']}")
    return 0


def cmd_reject(args) -> int:
    return cmd_approve(args, approved=False)


def cmd_result(args) -> int:
    with _client(args) as titan:
        job = titan.job(args.job_id)
        result = titan.result(job["job_id"])
    if result is None:
        print(f"titan: {job['job_id']} has published no result ({job['state']})",
              file=sys.stderr)
        return 1
    print(_dumps(result, indent=2, sort_keys=True, default=repr))
    return 0


def _agent_usage(titan, agent_run_id: str) -> Optional[dict]:
    """The model usage recorded for an agent run (titan.agents), or None: no store on the
    cluster, or no call recorded.  A store that cannot be read is said on stderr."""
    from titan.agents.usage import summarize
    try:
        usage = summarize(titan, agent_run_id=agent_run_id)
    except RemoteError as e:
        if e.code != "no_store":
            print(f"titan: cannot read the model usage of {agent_run_id}: {e.message}",
                  file=sys.stderr)
        return None
    return usage if usage["total"]["calls"] else None


def _print_usage(usage: dict, runs: list) -> None:
    """Model calls, tokens, latency and cost per stage (in the order the stages first ran),
    then the total."""
    def row(name: str, t: dict) -> list:
        return [name, str(t["calls"]), str(t["tokens_in"]), str(t["tokens_out"]),
                f"{t['latency']:.2f}s", f"${t['cost']:.4f}"]
    rows = [["MODEL USAGE", "CALLS", "TOKENS IN", "TOKENS OUT", "LATENCY", "COST"]]
    order = {}
    for r in runs:
        order.setdefault(r.get("stage") or "", len(order))
    stages = sorted(usage["stages"].items(), key=lambda st: (order.get(st[0], len(order)),
                                                             st[0]))
    rows += [row(stage or "-", t) for stage, t in stages]
    rows.append(row("TOTAL", usage["total"]))
    _print_rows(rows)


def cmd_runs(args) -> int:
    with _client(args) as titan:
        runs = titan.runs(args.agent_run_id, limit=args.limit)
        usage = _agent_usage(titan, args.agent_run_id) \
            if args.agent_run_id and not args.json else None
    if args.json:
        print(_dumps(runs, indent=2, sort_keys=True))
        return 0
    rows = [["RUN", "NAME", "STAGE", "STATE", "DONE", "CREATED"]]
    for r in runs:
        done = sum(n for s, n in r["counts"].items()
                   if s in ("COMPLETED", "FAILED", "DEAD", "CANCELLED"))
        rows.append([r["run_id"], r["name"], r.get("stage") or "-", r["state"],
                     f"{done}/{r['total']}",
                     time.strftime("%H:%M:%S", time.localtime(r["created_at"]))])
    _print_rows(rows)
    if not runs:
        print("(no runs)")
    if usage:
        print()
        _print_usage(usage, runs)
    return 0


def cmd_schedules(args) -> int:
    with _client(args) as titan:
        schedules = titan.schedules()
    if args.json:
        _print_json(schedules)
        return 0
    rows = [["SCHEDULE", "CRON", "FIRED", "NEXT (UTC)", "LAST RUN"]]
    for sc in schedules:
        rows.append([sc["schedule_id"], sc["cron"], str(sc["fired"]),
                     time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(sc["next_at"]))
                     if sc.get("next_at") else "-", sc.get("last_run_id") or "-"])
    _print_rows(rows)
    if not schedules:
        print("(no schedules)")
    return 0


def cmd_aof_check(args) -> int:
    from titan.persistence.aof import check
    directory = os.path.expanduser(args.dir)
    if os.path.isdir(os.path.join(directory, "log")):
        directory = os.path.join(directory, "log")  # a master's data dir: its log is in log/
    if not os.path.isdir(directory):
        raise TitanError(f"aof check: {args.dir} is not a directory")
    lines, healthy = check(directory, fix=args.fix)
    for line in lines:
        print(line)
    return 0 if healthy or args.fix else 1


def _origin(plugin) -> str:
    """`built-in`, or the file a third party's plugin was loaded from."""
    import titan.plugins
    module = sys.modules.get(type(plugin).__module__)
    path = os.path.abspath(getattr(module, "__file__", "") or "?")
    ours = os.path.dirname(os.path.abspath(titan.plugins.__file__))
    return "built-in" if os.path.dirname(path) == ours else path


def cmd_plugins(args) -> int:
    from titan.agents.interfaces import IChatModelFactory
    from titan.interfaces import IAutoscalerFactory, IPersistenceFactory, IRouterFactory
    from titan.plugin_registry import plugins
    kinds = [("router", IRouterFactory), ("autoscaler", IAutoscalerFactory),
             ("persistence", IPersistenceFactory), ("chat-model", IChatModelFactory)]
    found = [{"kind": kind, "name": plugin.name, "origin": _origin(plugin),
              "description": plugin.description}
             for kind, interface in kinds for plugin in plugins(interface)]
    if args.json:
        _print_json(found)
        return 0
    rows = [["KIND", "NAME", "ORIGIN", "DESCRIPTION"]]
    for p in found:
        rows.append([p["kind"], p["name"], p["origin"], p["description"]])
    _print_rows(rows)
    return 0


def cmd_service(args) -> int:
    with _client(args) as titan:
        action = args.service_cmd
        if action == "deploy":
            command = list(args.command)
            if command and command[0] == "--":
                command = command[1:]
            if not command:
                raise TitanError("service deploy: no command given "
                                 "(titan service deploy NAME [options] -- COMMAND [ARGS...])")
            env = dict(_pairs(args.env, "--env"))
            tags = [t for t in (args.tags or "").split(",") if t.strip()]
            job_id = titan.deploy(args.name, command, port=args.port, restart=args.restart,
                                  health=args.health, tags=tags, env=env, cwd=args.cwd)
            if args.no_wait:
                print(job_id)
                return 0
            svc = titan.wait_service(args.name, timeout=args.timeout)
            where = f" at {svc['host']}:{svc['port']}" if svc.get("port") else ""
            if svc["state"] == "RUNNING":
                print(f"{args.name} RUNNING on {svc['worker']}{where} (pid {svc['pid']})")
                return 0
            why = _service_why(svc) or "not up yet"
            if svc["state"] in ("STARTING", "RESTARTING"):
                why += f" (not up after {args.timeout:g}s; it keeps trying: titan service list)"
            print(f"titan: {args.name} {svc['state']}: {why}", file=sys.stderr)
            return 1
        if action == "list":
            services = titan.services(everything=args.all)
            if args.json:
                print(_dumps(services, indent=2, sort_keys=True))
                return 0
            rows = [["NAME", "WORKER", "ADDRESS", "STATE", "RESTARTS", "UPTIME", "PID"]]
            for s in services:
                rows.append([s["name"], s.get("worker") or "-",
                             f"{s['host']}:{s['port']}" if s.get("port") and s.get("host")
                             else "-", s["state"], str(s["restarts"]),
                             "-" if s.get("uptime") is None else f"{s['uptime']:.0f}s",
                             str(s["pid"]) if s.get("pid") else "-"])
            _print_rows(rows)
            for s in services:
                why = _service_why(s)
                if why:
                    print(_cell(f"{s['name']}: {why}"))
            if not services:
                print("(no services)")
            return 0
        svc = titan.service(args.name)
        if action == "logs":
            if args.follow:
                for data in titan.follow_logs(svc["job_id"]):
                    sys.stdout.buffer.write(data)
                    sys.stdout.buffer.flush()
            else:
                sys.stdout.buffer.write(titan.logs(svc["job_id"]))
            return 0
        if action == "restart":
            titan.restart_service(args.name)
            print(f"{args.name} restarting")
            return 0
        if action == "stop":
            result = titan.cancel(svc["job_id"])
            if not result["cancelled"]:
                print(f"titan: {args.name} is already {svc['state']}", file=sys.stderr)
                return 1
            print(f"{args.name} STOPPED")
            return 0
    raise TitanError(f"service {action}: unknown action")


def _service_why(svc: dict) -> Optional[str]:
    """Why a service is not (or no longer) up, if anyone knows: its end, its failing health
    check, how its process last ended."""
    if svc["state"] in ("FAILED", "EXITED", "DEAD") and svc.get("reason"):
        return svc["reason"]
    parts = []
    if svc.get("health_error"):
        parts.append(svc["health_error"])
    if svc["state"] == "RESTARTING" and svc.get("last_exit"):
        last = [line for line in svc.get("last_lines") or () if line.strip()]
        parts.append(f"last exit: {svc['last_exit']}"
                     + (f" (last line: {last[-1].strip()})" if last else ""))
    return "; ".join(parts) or None


def _pairs(items, flag: str):
    for item in items or ():
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise TitanError(f"{flag} {item!r}: expected NAME=VALUE")
        yield key, value


def cmd_mcp(args) -> int:
    from titan.mcp.server import main as serve_mcp  # here: no other command imports mcp
    return serve_mcp(args.master, args.token, args.http, args.allow_gate_decisions,
                     args.config)


def cmd_package(args) -> int:
    from titan.package import build_all, dashboard_built  # shiv is imported only here
    for b in build_all(args.out):
        print(f"{b.path}  {b.size / 1e6:.2f} MB  built in {b.seconds:.1f}s  "
              f"(+ {', '.join(p.name for p in b.extras)})")
    if not dashboard_built():
        print("titan: warning: the dashboard is not built (make webui): the master bundle "
              "serves the API without it", file=sys.stderr)
    return 0


def cmd_reload(args) -> int:
    with _client(args) as titan:
        done = titan.reload_config()
    said = [f"  {what}: {', '.join(done[key])}" for key, what in (
        ("applied", "applied"), ("restart", "needs a restart"),
        ("elsewhere", "not read by the master (workers and titan mcp read them at "
                      "their start)")) if done.get(key)]
    source = done.get("source")
    if source == "<defaults>":  # `titan up`'s master, say
        source = "(no config file: the defaults and the master's command line)"
    print(f"reloaded {source}" + ("" if said else ": nothing changed"))
    for line in said:
        print(line)
    return 0


def cmd_doctor(args) -> int:
    from titan.doctor import run_doctor
    return run_doctor(args)


def cmd_up(args) -> int:
    from titan.up import run_up
    return run_up(workers=args.workers, port=args.port, data_dir=args.data_dir,
                  slots=args.slots, store_port=args.store_port)


# -- parser ------------------------------------------------------------------------------

def _number(kind, low=None, high=None, low_open=False):
    """An argparse type: an int or a finite float within bounds, refused with a message that
    says what was expected (before anything reaches the master)."""
    bounds = []
    if low is not None:
        bounds.append(f"{'more than' if low_open else 'at least'} {low}")
    if high is not None:
        bounds.append(f"at most {high}")
    noun = "a whole number" if kind is int else "a number"

    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            value = None
        if value is None:
            raise argparse.ArgumentTypeError(f"{text!r} is not {noun}")
        if value != value or value in (float("inf"), float("-inf")):
            raise argparse.ArgumentTypeError(f"{text!r} is not a finite number")
        if (low is not None and (value <= low if low_open else value < low)) or \
                (high is not None and value > high):
            raise argparse.ArgumentTypeError(f"{text} is out of range: must be "
                                             f"{' and '.join(bounds)}")
        return value
    parse.__name__ = "integer" if kind is int else "number"
    return parse


SECONDS = _number(float, 0, low_open=True)          # > 0
NON_NEGATIVE_SECONDS = _number(float, 0)             # >= 0
COUNT = _number(int, 0)                              # >= 0
POSITIVE = _number(int, 1)                           # >= 1
PORT = _number(int, 0, high=65535)


def _service_port(text: str) -> str:
    if text == "auto":
        return text
    try:
        port = int(text)
    except ValueError:
        port = -1
    if not 1 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"{text!r}: expected a port number (1-65535) or auto")
    return text


def _job_state(text: str) -> str:
    from titan.core.model import JobState
    states = [s.value for s in JobState]
    if text.upper() not in states:
        raise argparse.ArgumentTypeError(
            f"no job state {text!r}: the states are {', '.join(states)}")
    return text.upper()


# Every subcommand, in the order `titan --help` lists them.
COMMANDS = ("submit", "run", "wait", "status", "logs", "cancel", "approve", "reject", "result",
            "runs", "schedules", "workers", "jobs", "service", "aof", "plugins", "reload",
            "doctor", "mcp", "up", "package")
# The options `titan` takes before a subcommand, each with a value.
GLOBAL_VALUE_OPTIONS = ("--master", "--token", "--token-file")


def _command_in(argv: Sequence[str]) -> Optional[str]:
    """The subcommand `argv` runs, when it is plain to see: only global options spelled in
    full before it.  None otherwise (-h, --version, an abbreviation, a mistake)."""
    i = 0
    while i < len(argv):
        arg = argv[i]
        if arg in GLOBAL_VALUE_OPTIONS:
            i += 2
        elif arg.partition("=")[0] in GLOBAL_VALUE_OPTIONS:
            i += 1
        else:
            return arg if arg in COMMANDS else None
    return None


def build_parser(only: Optional[str] = None) -> argparse.ArgumentParser:
    """The command line's parser; with `only` (a subcommand), that subcommand's alone: a
    parse of a command line that runs it (`_command_in`) says and does exactly what the
    whole parser's would, and building the other 16 was most of a command's parse (~3-4
    ms).  Any other parse (help, errors before the subcommand) uses the whole parser."""

    def want(name: str) -> bool:
        return only is None or only == name

    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--master", metavar="HOST:PORT", default=argparse.SUPPRESS,
                        help="the master to talk to (default: $TITAN_HOST:$TITAN_PORT "
                             "or 127.0.0.1:9090)")
    common.add_argument("--token", default=argparse.SUPPRESS,
                        help="the cluster token (default: $TITAN_TOKEN); visible to every "
                             "local user (ps): prefer $TITAN_TOKEN or --token-file")
    common.add_argument("--token-file", metavar="FILE", default=argparse.SUPPRESS,
                        help="a file (mode 0600) whose first line is the cluster token")

    parser = argparse.ArgumentParser(
        prog="titan", parents=[common], epilog=EPILOG,
        description="Titan: submit and watch jobs, start a local cluster.")
    parser.add_argument("--version", action="version", version=f"titan {__version__}")
    sub = parser.add_subparsers(dest="cmd", metavar="COMMAND")
    sub.required = True

    if want("submit"):
        p = sub.add_parser("submit", parents=[common], help="queue a job; prints its id",
                           description="Queue a job and print its id.",
                           usage="titan submit [options] -- COMMAND [ARGS...]")
        p.add_argument("--wait", "-w", action="store_true",
                       help="wait for the job to end; exit with its status")
        p.add_argument("--follow", "-f", action="store_true",
                       help="print its output as it comes, then wait")
        p.add_argument("--priority", "-p", type=int, default=0,
                       help="higher runs first (default 0)")
        p.add_argument("--tags", "-t", help="capabilities a worker must have, e.g. GPU,HIGH_MEM")
        p.add_argument("--timeout", type=SECONDS, help="seconds before the job is killed")
        p.add_argument("--retries", type=COUNT, default=0,
                       help="retries after a failure (default 0)")
        p.add_argument("--delay", type=NON_NEGATIVE_SECONDS, default=0.0,
                       help="seconds to wait before it may run")
        p.add_argument("--env", "-e", action="append", metavar="NAME=VALUE",
                       help="environment variable for the job (repeatable)")
        p.add_argument("--cwd", help="an existing directory on the worker to run in (default: "
                                     "a fresh one)")
        p.add_argument("--name", help="a name for people")
        p.add_argument("command", nargs=argparse.REMAINDER, help="the command and its arguments")
        p.set_defaults(func=cmd_submit)

    if want("run"):
        p = sub.add_parser("run", parents=[common], help="start a pipeline from a YAML file",
                           description="Start a DAG run from a pipeline file; prints the run id "
                                       "(or the schedule id, for a pipeline with a schedule).")
        p.add_argument("pipeline", help="the pipeline YAML file")
        p.add_argument("--wait", "-w", action="store_true",
                       help="show progress until the run ends; exit non-zero unless every job "
                            "COMPLETED")
        p.add_argument("--set", action="append", metavar="KEY=VALUE",
                       help="agent_run_id=ID or stage=NAME for this run")
        p.set_defaults(func=cmd_run)

    if want("wait"):
        p = sub.add_parser("wait", parents=[common], help="follow a run (or wait for a job) until "
                                                         "it ends",
                           description="Follow a DAG run until it ends, as `titan run --wait` "
                                       "does (also to pick one up again after Ctrl-C), or wait "
                                       "for one job; exit non-zero unless it COMPLETED.")
        p.add_argument("ref", metavar="REF", help="a run id, or a job (RUN/JOB or a job id)")
        p.set_defaults(func=cmd_wait)

    if want("status"):
        p = sub.add_parser("status", parents=[common],
                           help="a job's or a run's state and details; the cluster's without REF",
                           description="Print the state of a job (RUN/JOB, or a job id unique "
                                       "among live runs) or of a whole run (first line), then "
                                       "its details.  Without REF: the master, its event log, "
                                       "workers and jobs, and any warning (text frames on, "
                                       "storage unavailable).")
        p.add_argument("job_id", metavar="REF", nargs="?")
        p.add_argument("--json", action="store_true", help="everything, as JSON")
        p.set_defaults(func=cmd_status)

    if want("logs"):
        p = sub.add_parser("logs", parents=[common], help="a job's output",
                           description="Print a job's stdout and stderr, in the order they came.")
        p.add_argument("job_id", metavar="JOB")
        p.add_argument("--follow", "-f", action="store_true", help="keep printing until it ends")
        p.set_defaults(func=cmd_logs)

    if want("cancel"):
        p = sub.add_parser("cancel", parents=[common], help="cancel a job, a run or a schedule",
                           description="Cancel a job (a running one is killed with its children; "
                                       "its descendants are cancelled), every unfinished job of a "
                                       "run, or a schedule.")
        p.add_argument("job_id", metavar="REF")
        p.set_defaults(func=cmd_cancel)

    for name, func, verb in (("approve", cmd_approve, "approve"),
                             ("reject", cmd_reject, "reject")):
        if want(name):
            p = sub.add_parser(name, parents=[common], help=f"{verb} an approval gate",
                               description=f"{verb.capitalize()} a gate that waits for approval; "
                                           "recorded with who and when.")
            p.add_argument("gate", metavar="GATE",
                           help="RUN/GATE, or a gate id unique among live runs")
            p.add_argument("--comment", "-m", help="why")
            p.add_argument("--by", help="who decides (default: user@host)")
            p.set_defaults(func=func)

    if want("result"):
        p = sub.add_parser("result", parents=[common], help="the result a job published",
                           description="Print the result a job published, as JSON.")
        p.add_argument("job_id", metavar="JOB")
        p.set_defaults(func=cmd_result)

    if want("runs"):
        p = sub.add_parser("runs", parents=[common], help="list DAG runs, or one agent run's",
                           description="List recent DAG runs; with an agent run id, that agent "
                                       "run's DAG runs in order (its timeline).")
        p.add_argument("agent_run_id", nargs="?", metavar="AGENT_RUN_ID")
        p.add_argument("--limit", type=POSITIVE, default=50, help="at most this many (default 50)")
        p.add_argument("--json", action="store_true", help="everything, as JSON")
        p.set_defaults(func=cmd_runs)

    if want("schedules"):
        p = sub.add_parser("schedules", parents=[common], help="list cron schedules",
                           description="List the pipelines that run on a cron schedule.")
        p.add_argument("--json", action="store_true", help="everything, as JSON")
        p.set_defaults(func=cmd_schedules)

    if want("workers"):
        p = sub.add_parser("workers", parents=[common],
                           help="list the workers; start or drain one",
                           usage="titan workers [--json] | start [options] | drain NAME",
                           description="List the workers: id, host, tags, busy/total slots, "
                                       "state, last heartbeat, who started it.")
        p.add_argument("--json", action="store_true", help="everything, as JSON")
        ws = p.add_subparsers(dest="workers_cmd", metavar="ACTION")
        q = ws.add_parser("start", parents=[common], help="the master starts a local worker",
                          description="The master starts a titan-worker on its own machine "
                                      "(as its autoscaler does), with the tags and slots "
                                      "given: you name the tags, so it offers them whatever "
                                      "the machine has. Waits until it has registered; "
                                      "prints its name.")
        q.add_argument("--tags", "-t", help="its capability tags, e.g. GPU,HIGH_MEM")
        q.add_argument("--slots", type=POSITIVE,
                       help="jobs it runs at once (default: autoscaler.slots)")
        q.add_argument("--name", help="its name (default local-N)")
        q.add_argument("--no-wait", action="store_true",
                       help="return once the process is started")
        q.add_argument("--timeout", type=SECONDS, default=30.0,
                       help="seconds to wait for it to register (default 30)")
        q = ws.add_parser("drain", parents=[common], help="retire a worker when it is done",
                          description="Drain a worker: it takes no new jobs, finishes what "
                                      "it runs, then leaves (one the master started is "
                                      "stopped; any other is told to stop).")
        q.add_argument("name", help="the worker's name or id")
        q.add_argument("--wait", action="store_true", help="wait until it has left")
        p.set_defaults(func=cmd_workers)

    if want("jobs"):
        p = sub.add_parser("jobs", parents=[common], help="list recent jobs",
                           description="List the most recent jobs.")
        p.add_argument("--state", type=_job_state,
                       help="only jobs in this state (PENDING, RUNNING, COMPLETED, FAILED, DEAD, "
                            "CANCELLED, WAITING_APPROVAL)")
        p.add_argument("--limit", type=POSITIVE, default=50,
                       help="the most recent N (default 50)")
        p.add_argument("--json", action="store_true", help="everything, as JSON")
        p.set_defaults(func=cmd_jobs)

    if want("service"):
        p = sub.add_parser("service",
                           help="long-running services: deploy, list, logs, restart, stop",
                           description="Services are processes their worker keeps running: "
                                       "restarted per policy, on a port, with a health check.")
        svc = p.add_subparsers(dest="service_cmd", metavar="ACTION")
        svc.required = True
        q = svc.add_parser("deploy", parents=[common],
                           help="start a service and wait until it is up",
                           usage="titan service deploy NAME [options] -- COMMAND [ARGS...]",
                           description="Start a service; waits until it is RUNNING (healthy, "
                                       "with a "
                                       "health check) or has failed. The port reaches the process "
                                       "as $PORT and as {port} in the command.")
        q.add_argument("name")
        q.add_argument("--port", type=_service_port,
                       help="a port number, or auto (a free one of the worker's range)")
        q.add_argument("--restart", default="on-failure", choices=["always", "on-failure", "never"],
                       help="when to restart it (default on-failure)")
        q.add_argument("--health", help="tcp, or http:/PATH (answers 2xx or 3xx)")
        q.add_argument("--tags", "-t", help="capabilities its worker must have")
        q.add_argument("--env", "-e", action="append", metavar="NAME=VALUE")
        q.add_argument("--cwd", help="an existing directory on the worker to run in")
        q.add_argument("--no-wait", action="store_true", help="print the job id and return")
        q.add_argument("--timeout", type=SECONDS, default=60.0,
                       help="seconds to wait (default 60)")
        q.add_argument("command", nargs="*", help="after --: the command and its arguments")
        q = svc.add_parser("list", parents=[common], help="name, worker, address, state, restarts, "
                                                          "uptime, pid",
                           description="List services: name, worker, host:port, state, restarts, "
                                       "uptime, pid (and why a FAILED one failed).")
        q.add_argument("--all", action="store_true", help="also services stopped over an hour ago")
        q.add_argument("--json", action="store_true", help="everything, as JSON")
        q = svc.add_parser("logs", parents=[common], help="a service's output, restarts included",
                           description="Print a service's output, across its restarts.")
        q.add_argument("name")
        q.add_argument("--follow", "-f", action="store_true")
        q = svc.add_parser("restart", parents=[common], help="restart a service",
                           description="Restart a running service's process (not counted as a "
                                       "crash).")
        q.add_argument("name")
        q = svc.add_parser("stop", parents=[common], help="stop a service and all it started",
                           description="Stop a service: its whole process tree is killed and it "
                                       "is not restarted.")
        q.add_argument("name")
        p.set_defaults(func=cmd_service)

    if want("aof"):
        p = sub.add_parser("aof", help="inspect or repair a master's event log",
                           description="Inspect (check) or repair (check --fix) the event log of a "
                                       "master's data dir.")
        aof = p.add_subparsers(dest="aof_cmd", metavar="COMMAND")
        aof.required = True
        q = aof.add_parser("check", help="say what the log holds and what is damaged",
                           description="Read every record of the log: report counts and damage; "
                                       "with --fix, cut each damaged log at its last good record "
                                       "(what follows it is lost). Run it with the master stopped.")
        q.add_argument("dir", metavar="DIR", help="the master's data dir (or its log/ folder)")
        q.add_argument("--fix", action="store_true", help="truncate damaged logs")
        q.set_defaults(func=cmd_aof_check)

    if want("plugins"):
        p = sub.add_parser("plugins", help="list the plugins found",
                           description="List every plugin Titan finds: kind, name, origin, "
                                       "description.")
        p.add_argument("--json", action="store_true", help="everything, as JSON")
        p.set_defaults(func=cmd_plugins)

    if want("reload"):
        p = sub.add_parser("reload", parents=[common], help="the master reads its config again",
                           description="The master reads its config file again, as kill -HUP "
                                       "does, and applies what can change without a restart "
                                       "(routers, autoscaler, tokens, retention, web); says "
                                       "what it applied and what needs a restart. A bad file "
                                       "is refused: the config in use stays, and this exits 1 "
                                       "saying why (file:line).")
        p.set_defaults(func=cmd_reload)

    if want("doctor"):
        p = sub.add_parser("doctor", parents=[common], help="check this machine and the cluster",
                           description="Check this machine (Python, Twisted and Titan "
                                       "versions, data dirs and token file, ports, cgroups) "
                                       "and the cluster when its master answers (token, "
                                       "versions, store, web, workers, clock skew); each "
                                       "check ok, warn or fail with what to do. Exits 1 if "
                                       "one fails.")
        p.add_argument("--config", "-c", metavar="FILE",
                       help="the config file the master and workers use (data dirs, ports)")
        p.add_argument("--json", action="store_true", help="the checks, as JSON")
        p.set_defaults(func=cmd_doctor)

    if want("mcp"):
        p = sub.add_parser("mcp", parents=[common], help="serve Titan's tools to AI assistants "
                                                        "(MCP)",
                           description="An MCP server for Claude, Cursor or any MCP client: "
                                       "stdio by default (nothing but protocol on stdout), or "
                                       "streamable HTTP with the cluster token as bearer.")
        p.add_argument("--http", metavar="ENDPOINT",
                       help="serve HTTP at tcp:PORT[:interface=HOST] (default host 127.0.0.1)")
        p.add_argument("--allow-gate-decisions", action="store_true",
                       help="let MCP clients approve or reject gates (off: a gate an AI can "
                            "approve itself is no gate; also TITAN_MCP_ALLOW_GATE_DECISIONS=1)")
        p.add_argument("--config", metavar="FILE",
                       help="the Titan config file (its mcp: section, e.g. "
                            "allow_gate_decisions: true); the options above override it")
        p.set_defaults(func=cmd_mcp)

    if want("up"):
        p = sub.add_parser("up", help="start a master and workers here, in the foreground",
                           description="Start a master and N workers on 127.0.0.1 in the "
                                       "foreground; Ctrl-C stops all of them.")
        p.add_argument("--workers", "-n", type=COUNT, default=1,
                       help="how many workers (default 1)")
        p.add_argument("--slots", type=POSITIVE, default=4, help="slots per worker (default 4)")
        p.add_argument("--port", "-p", type=PORT, default=9090, help="master port (default 9090)")
        p.add_argument("--store-port", type=PORT, default=None,
                       help="TitanStore's port (default 6379; 0 with --port 0: any free one)")
        p.add_argument("--data-dir", default=os.path.join("~", ".titan"),
                       help="where state and logs go (default ~/.titan)")
        p.set_defaults(func=cmd_up)

    if want("package"):
        p = sub.add_parser("package", help="build the master and worker bundles",
                           description="Build titan-master.pyz and titan-worker.pyz: each one "
                                       "file that runs with only python3 on a machine (a "
                                       "zipapp, by shiv), from what this Python has installed; "
                                       "with a start script and an example config each "
                                       "(docs/operations.md).")
        p.add_argument("--out", "-o", default="dist", metavar="DIR",
                       help="where they go (default ./dist)")
        p.set_defaults(func=cmd_package)
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    if argv is not None:
        return _main(list(argv))
    # The `titan` program: what is left is the process's exit, whose collector passes over
    # everything still alive (a 1,000-job run's dicts, every module) cost 5-10 ms for
    # nothing.  Frozen objects are skipped by them, and still freed as before.
    try:
        return _main(sys.argv[1:])
    finally:
        import gc
        gc.freeze()


def _main(argv: list[str]) -> int:
    parser = build_parser(_command_in(argv[:argv.index("--")] if "--" in argv else argv))
    command = None
    if "--" in argv:  # everything after it is the job's command, options included
        cut = argv.index("--")
        argv, command = argv[:cut], argv[cut + 1:]
    args = parser.parse_args(argv)
    if command is not None:
        if not hasattr(args, "command"):
            parser.error("'--' goes before a command, in submit and service deploy")
        args.command = command
    args.master = getattr(args, "master", None)
    args.token = getattr(args, "token", None)
    token_file = getattr(args, "token_file", None)
    if args.token and token_file:
        parser.error("--token and --token-file: give one of them")
    if args.token:
        print("titan: warning: --token on the command line is visible to every local user "
              "(ps); use $TITAN_TOKEN or --token-file instead", file=sys.stderr)
    elif token_file:
        from titan.auth import read_token_file
        try:
            args.token = read_token_file(token_file)
        except ValueError as e:
            print(f"titan: {e}", file=sys.stderr)
            return 2
    try:
        return args.func(args)
    except RemoteError as e:
        print(f"titan: {e.message}", file=sys.stderr)
        return 1
    except TitanError as e:
        print(f"titan: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        return 0


if __name__ == "__main__":
    sys.exit(main())
