#!/usr/bin/env python3
"""A self-growing agent loop with a human gate: PLAN -> ITER ... ITER -> EVAL -> gate -> SYNTH.

No real LLM: `FakeModel` stands in for one, deterministically, so the run is reproducible.
The agent writes a short document about a goal, section by section:

- The PLAN run (stage PLAN) starts with one job, `plan`.  The model turns the goal into an
  outline; `plan` publishes it as its result and, while it runs, adds the first ITER job to
  its own run with `current_job().add_jobs(...)`.
- Each ITER job reads its parent's result (the draft so far and its score), has the model
  write the next section, publishes the longer draft, and then decides, from its parent's
  result and its own, whether to go on: if the draft is not good enough yet and improved
  on its parent's, it adds the next ITER job, depending on itself.  So the DAG grows while
  it runs: plan -> iter-1 -> iter-2 -> ...  The loop is bounded twice: by --max-iters, and
  by the run's max_jobs, which the master enforces whatever the jobs do.
- The EVAL run (stage EVAL) scores the final draft (`eval`), then an approval gate
  (`review`) holds `synth` until a person approves; a rejection cancels `synth`.
- Both runs carry the same agent_run_id, so `titan runs AGENT_RUN_ID` shows the agent's
  timeline: its DAG runs in order, with their stages.

Why two runs and not four: a job may grow its own run only (its job-scoped token cannot
touch other runs), so the ITER jobs live in the run of the job that started the loop.

This file is both the driver (what you run) and the jobs' code: each job ships this very
file (`Pipeline.script` and the `script` key of a job added at run time).

Run it against a local cluster (`make run` or `titan up` in another shell):

    .venv/bin/python examples/agent_loop.py              # waits for you at the gate:
                                                         #   titan approve RUN/review
    .venv/bin/python examples/agent_loop.py --approve    # approves it itself (unattended)

or against any cluster: set TITAN_HOST, TITAN_PORT and TITAN_TOKEN first.  Options:
--goal TEXT, --max-iters N (default 6), --agent-run-id ID (reuse one to add to a timeline).
It exits 0 once SYNTH has published the answer, 1 if the gate was rejected or a job failed.
"""
from __future__ import annotations

import argparse
import hashlib
import os
import secrets
import sys

TARGET_SCORE = 1.0          # the draft covers every section of the outline


class FakeModel:
    """A deterministic stand-in for an LLM: same prompt, same answer."""

    OUTLINE = ("what it is", "why it matters", "how to use it", "what to watch for")
    WORDS = ("jobs", "runs", "workers", "gates", "results", "retries", "schedules", "agents",
             "pipelines", "timelines", "tokens", "stages")

    def plan(self, goal: str) -> list[str]:
        return list(self.OUTLINE)     # a real model would outline `goal`

    def write(self, goal: str, section: str) -> str:
        def weight(word: str) -> bytes:
            return hashlib.sha256(f"{goal}|{section}|{word}".encode()).digest()
        a, b, c = sorted(self.WORDS, key=weight)[:3]
        return f"{section.capitalize()}: for {goal}, it comes down to {a}, {b} and {c}."


def score(draft: list[dict], outline: list[str]) -> float:
    covered = {part["section"] for part in draft}
    return round(sum(1 for s in outline if s in covered) / len(outline), 2)


def script_spec(args: list[str]) -> dict:
    """This file as a job's script, for `add_jobs` (inside a job it sits in the job's
    working directory, where the worker wrote it)."""
    with open(__file__, "rb") as f:
        return {"name": os.path.basename(__file__), "content": f.read(), "args": args}


def iter_job(k: int, parent: str, max_iters: int) -> dict:
    return {"id": f"iter-{k}", "depends_on": [parent], "timeout": 60,
            "script": script_spec(["--step", "iter", "--iteration", str(k),
                                   "--max-iters", str(max_iters)])}


# -- the jobs ---------------------------------------------------------------------------------

def step(args) -> None:
    from titan.sdk import current_job
    me = current_job()
    model = FakeModel()
    if args.step == "plan":
        outline = model.plan(args.goal)
        me.set_result({"goal": args.goal, "outline": outline, "draft": [], "score": 0.0})
        me.add_jobs([iter_job(1, me.node, args.max_iters)])
        print(f"PLAN: {len(outline)} sections: {', '.join(outline)}; added iter-1")

    elif args.step == "iter":
        k = args.iteration
        (parent_id, parent), = me.parent_results().items()   # plan, or the previous ITER
        plan = me.result("plan")
        covered = {part["section"] for part in parent["draft"]}
        missing = [s for s in plan["outline"] if s not in covered]
        draft = list(parent["draft"])
        if missing:
            draft.append({"section": missing[0], "text": model.write(plan["goal"], missing[0])})
        new_score = score(draft, plan["outline"])
        me.set_result({"iteration": k, "draft": draft, "score": new_score})
        print(f"ITER {k}: {parent_id} scored {parent['score']:.2f}; wrote "
              f"{missing[0] if missing else 'nothing'!r}; now {new_score:.2f}")
        # The feedback loop: go on while the draft is short of the target and still
        # improving on the parent's, and the bound allows.
        if new_score >= TARGET_SCORE:
            print(f"ITER {k}: done: the draft covers the outline")
        elif new_score <= parent["score"]:
            print(f"ITER {k}: stopping: no progress on {parent_id}")
        elif k >= args.max_iters:
            print(f"ITER {k}: stopping: --max-iters {args.max_iters} reached")
        else:
            me.add_jobs([iter_job(k + 1, me.node, args.max_iters)])
            print(f"ITER {k}: not good enough yet: added iter-{k + 1}")

    elif args.step == "eval":
        final = me.result(args.draft)          # RUN/JOB: a job of another run
        plan = me.result(args.draft.split("/")[0] + "/plan")
        words = sum(len(part["text"].split()) for part in final["draft"])
        verdict = "pass" if final["score"] >= TARGET_SCORE else "incomplete"
        me.set_result({"score": final["score"], "words": words, "verdict": verdict,
                       "goal": plan["goal"], "draft": final["draft"]})
        print(f"EVAL: {args.draft} scored {final['score']:.2f}, {words} words: {verdict}")

    elif args.step == "synth":
        evaluation = me.result("eval")        # an id of this run: eval, not the gate
        lines = [f"# {evaluation['goal']}", ""]
        lines += [part["text"] for part in evaluation["draft"]]
        answer = "\n".join(lines)
        me.set_result({"answer": answer, "verdict": evaluation["verdict"]})
        print(f"SYNTH:\n{answer}")
    else:
        raise SystemExit(f"unknown step {args.step!r}")


# -- the driver ---------------------------------------------------------------------------------

def plan_pipeline(agent: str, goal: str, max_iters: int):
    from titan.sdk import Pipeline
    # max_jobs: the master refuses growth past plan + max_iters ITER jobs, whatever happens.
    p = Pipeline("agent-plan", agent_run_id=agent, stage="PLAN", max_jobs=1 + max_iters)
    p.script("plan", path=__file__, timeout=60,
             args=["--step", "plan", "--goal", goal, "--max-iters", str(max_iters)])
    return p


def eval_pipeline(agent: str, final: str):
    from titan.sdk import Pipeline
    p = Pipeline("agent-eval", agent_run_id=agent, stage="EVAL")
    evaluate = p.script("eval", path=__file__, timeout=60,
                        args=["--step", "eval", "--draft", final])
    review = p.gate("review", "Publish the agent's answer? (its score: the result of eval)",
                    timeout="1h", on_timeout="reject")
    synth = p.script("synth", path=__file__, timeout=60, args=["--step", "synth"])
    evaluate >> review >> synth
    return p


def drive(args) -> int:
    from titan.sdk import Client
    agent = args.agent_run_id or f"agent-{secrets.token_hex(3)}"
    with Client() as titan:
        # 1. PLAN: one job, which grows the ITER loop inside its run.
        plan_run = titan.submit(plan_pipeline(agent, args.goal, args.max_iters))
        print(f"agent run {agent}: started PLAN run {plan_run} (watch it grow: "
              f"titan status {plan_run})")
        run = titan.wait_run(plan_run, timeout=600)
        iters = [j for j in run["jobs"] if j["node"].startswith("iter-")]
        for job in iters:
            result = titan.result(job["job_id"]) or {}
            said = titan.logs(job["job_id"]).decode(errors="replace").strip().splitlines()
            decision = said[-1].split(": ", 1)[-1] if said else ""
            print(f"  {job['node']:<8} {job['state']:<10} score {result.get('score', '-'):<5} "
                  f"{decision}")
        if run["state"] != "COMPLETED" or not iters:
            return failed(titan, run)
        final = iters[-1]["job_id"]
        print(f"PLAN run {run['state']}: {len(iters)} ITER jobs grown at run time; "
              f"final draft in {final}")

        # 2. EVAL: score the draft, then a person decides whether SYNTH runs.
        eval_run = titan.submit(eval_pipeline(agent, final))
        gate = f"{eval_run}/review"
        print(f"started EVAL run {eval_run}")
        asked = False
        for run in titan.watch_run(eval_run, jobs=True):
            states = {j["node"]: j["state"] for j in run["jobs"]}
            if states["review"] == "WAITING_APPROVAL" and not asked:
                asked = True
                evaluation = titan.result(f"{eval_run}/eval")
                print(f"EVAL scored the draft {evaluation['score']:.2f} "
                      f"({evaluation['words']} words, {evaluation['verdict']}); "
                      f"the gate {gate} waits for a person")
                if args.approve:
                    titan.approve(gate, comment="auto-approved (--approve)",
                                  by="agent_loop.py")
                    print(f"approved {gate} through the SDK (--approve)")
                else:
                    print("  to publish:  titan approve " + gate)
                    print(f"  to stop:     titan reject {gate} -m 'why'")
                    print("waiting for the decision (the gate rejects itself after 1h) ...")
        if run["state"] != "COMPLETED":
            decision = titan.job(gate).get("decision")
            if decision and not decision["approved"]:
                print(f"{gate} was rejected by {decision['by']}"
                      + (f": {decision['comment']}" if decision.get("comment") else "")
                      + "; synth was cancelled")
            return failed(titan, titan.run(eval_run))
        decision = titan.job(gate)["decision"]
        print(f"{gate} approved by {decision['by']}")
        answer = titan.result(f"{eval_run}/synth")
        print("SYNTH published:")
        for line in answer["answer"].splitlines():
            print(f"  | {line}")

        # 3. The agent's timeline: its DAG runs in order.
        print(f"timeline (titan runs {agent}):")
        for r in titan.runs(agent):
            done = sum(n for s, n in r["counts"].items() if s == "COMPLETED")
            print(f"  {r['run_id']:<18} {r['stage']:<6} {r['state']:<10} "
                  f"{done}/{r['total']} jobs completed")
    return 0


def failed(titan, run: dict) -> int:
    print(f"run {run['run_id']} ended {run['state']}", file=sys.stderr)
    for job in run["jobs"]:
        if job["state"] != "COMPLETED":
            print(f"  {job['node']}: {job['state']} {job.get('reason') or ''}",
                  file=sys.stderr)
    return 1


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description="A self-growing agent loop on Titan, with "
                                                 "an approval gate before SYNTH.")
    parser.add_argument("--approve", action="store_true",
                        help="approve the gate through the SDK once it waits (unattended)")
    parser.add_argument("--goal", default="Titan's DAG runs", help="what to write about")
    parser.add_argument("--max-iters", type=int, default=6,
                        help="the most ITER jobs the loop may grow (default 6)")
    parser.add_argument("--agent-run-id", help="group the runs under this id (default: new)")
    parser.add_argument("--step", help=argparse.SUPPRESS)        # set when run as a job
    parser.add_argument("--iteration", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--draft", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.step:
        step(args)
        return 0
    if args.max_iters < 1:
        parser.error("--max-iters must be 1 or more")
    sys.stdout.reconfigure(line_buffering=True)
    from titan.errors import TitanError
    try:
        return drive(args)
    except TitanError as e:
        print(f"agent_loop: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("\ninterrupted; the runs go on without this script (titan runs, titan cancel "
              "RUN)", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
