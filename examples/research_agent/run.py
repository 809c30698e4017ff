#!/usr/bin/env python3
"""Run the research agent on a question and follow it to its report.

    .venv/bin/python examples/research_agent/run.py "How do B-trees stay balanced?"

It submits the PLAN run (the agent's jobs start every later stage themselves: agent.py), then
follows the agent run (`titan runs AGENT_RUN_ID`) until its SYNTH run has ended, and prints
the timeline and the report.  Options: --n N sub-questions (default 3), --max-rounds R (ITER
rounds at most, default 2), --gate (an approval gate before SYNTH: approve it with the
command printed, or pass --approve to let this script approve it), --agent-run-id ID,
--timeout SECONDS (default 600).

The model: offline (a deterministic script) unless the workers' environment names one with
TITAN_LLM_BASE_URL, TITAN_LLM_MODEL and TITAN_LLM_API_KEY (an OpenAI-compatible endpoint).
It finds the cluster like the `titan` command (TITAN_HOST, TITAN_PORT, TITAN_TOKEN).
Exit status: 0 once SYNTH has published the report, 1 if a stage failed or was rejected.
"""
from __future__ import annotations

import argparse
import os
import secrets
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import agent  # noqa: E402  (beside this file)


def follow(titan, agent_run_id: str, args) -> int:
    seen: dict = {}
    asked = set()
    deadline = time.monotonic() + args.timeout
    while True:
        runs = titan.runs(agent_run_id)
        for r in runs:
            key = (r["run_id"], r["state"])
            if key not in seen:
                seen[key] = True
                print(f"{r['stage']:<6} {r['run_id']:<22} {r['state']}")
        bad = [r for r in runs if r["state"] in ("FAILED", "CANCELLED")]
        if bad:
            return failed(titan, bad[0])
        synth = [r for r in runs if r["stage"] == "SYNTH"]
        if synth and synth[-1]["state"] == "COMPLETED":
            return report(titan, agent_run_id, runs, synth[-1]["run_id"])
        if synth:
            gate = f"{synth[-1]['run_id']}/approve"
            if gate not in asked and any(j["node"] == "approve"
                                         and j["state"] == "WAITING_APPROVAL"
                                         for j in titan.run(synth[-1]["run_id"])["jobs"]):
                asked.add(gate)
                if args.approve:
                    titan.approve(gate, comment="approved by run.py --approve", by="run.py")
                    print(f"approved {gate} (--approve)")
                else:
                    print(f"the gate {gate} waits for a person:\n"
                          f"  to write the report:  titan approve {gate}\n"
                          f"  to stop:              titan reject {gate} -m 'why'")
        if time.monotonic() > deadline:
            print(f"run.py: no report after {args.timeout:g}s; the agent goes on "
                  f"(titan runs {agent_run_id})", file=sys.stderr)
            return 1
        time.sleep(0.25)


def report(titan, agent_run_id: str, runs: list, synth_run: str) -> int:
    result = titan.result(f"{synth_run}/synth")
    print(f"timeline (titan runs {agent_run_id}): "
          + " -> ".join(r["stage"] for r in runs))
    iters = [r for r in runs if r["stage"] == "ITER"]
    for r in iters:
        jobs = [j for j in titan.run(r["run_id"])["jobs"] if j["node"].startswith("iter-")]
        print(f"  {r['run_id']}: {len(jobs)} iter jobs in parallel")
    print(f"report ({result['findings']} findings, {result['rounds']} rounds; "
          f"titan result {synth_run}/synth):")
    for line in result["report"].splitlines():
        print(f"  | {line}")
    usage(titan, agent_run_id)
    return 0


def usage(titan, agent_run_id: str) -> None:
    """The model calls of each stage, as titan.agents recorded them in the cluster's store."""
    from titan.agents import summarize
    from titan.errors import TitanError
    try:
        used = summarize(titan, agent_run_id=agent_run_id)
    except TitanError as e:         # a cluster without a store: nothing was recorded
        print(f"model usage: not recorded ({e})")
        return
    print("model usage: " + "; ".join(
        f"{stage or '-'} {t['calls']} calls, {t['tokens_in']} tokens in, "
        f"{t['tokens_out']} out" for stage, t in used["stages"].items())
        + f"; cost {used['total']['cost']:.4f}")


def failed(titan, run: dict) -> int:
    print(f"run {run['run_id']} ({run['stage']}) ended {run['state']}", file=sys.stderr)
    for job in titan.run(run["run_id"])["jobs"]:
        if job["state"] != "COMPLETED":
            print(f"  {job['node']}: {job['state']} {job.get('reason') or ''}",
                  file=sys.stderr)
            said = titan.logs(job["job_id"]).decode(errors="replace").splitlines()
            for line in said[-10:]:
                print(f"    | {line}", file=sys.stderr)
    return 1


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description="A research agent on Titan: PLAN -> ITER "
                                                 "(parallel) -> EVAL -> ... -> SYNTH.")
    parser.add_argument("question", help="what to research")
    parser.add_argument("--n", type=int, default=3, help="sub-questions to plan (default 3)")
    parser.add_argument("--max-rounds", type=int, default=2,
                        help="ITER rounds at most (default 2)")
    parser.add_argument("--gate", action="store_true",
                        help="hold SYNTH behind an approval gate")
    parser.add_argument("--approve", action="store_true",
                        help="with --gate: approve it from this script once it waits")
    parser.add_argument("--agent-run-id", help="the agent run's id (default: new)")
    parser.add_argument("--timeout", type=float, default=600)
    args = parser.parse_args(argv)
    if not 1 <= args.n <= 20:
        parser.error("--n must be 1 to 20")
    if args.max_rounds < 1:
        parser.error("--max-rounds must be 1 or more")
    sys.stdout.reconfigure(line_buffering=True)
    from titan.errors import TitanError
    from titan.sdk import Client
    agent_run_id = args.agent_run_id or f"research-{secrets.token_hex(3)}"
    try:
        with Client() as titan:
            plan = titan.submit(agent.plan_run(agent_run_id, args.question, args.n,
                                               args.max_rounds, args.gate))
            print(f"agent run {agent_run_id}: started PLAN run {plan} "
                  f"(follow it: titan runs {agent_run_id})")
            return follow(titan, agent_run_id, args)
    except TitanError as e:
        print(f"run.py: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"\ninterrupted; the agent goes on (titan runs {agent_run_id})", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
