#!/usr/bin/env python3
"""The `research` tool's run: one DAG run that grows on the workers, and this file is its jobs.

    plan            asks the model for N sub-questions (a JSON list), publishes them as its
                    result and grows its own run (current_job().add_jobs) by
    iter-1..iter-N  one job per sub-question, in parallel: each asks the model and publishes
                    {sub_question, answer}, and
    synth           after all of them: reads their results (parent_results) and asks the model
                    for the report, which is its result {question, report}.

`research_run(question, n, agent_run_id)` is the pipeline the tool submits (the MCP server's
side); run as a script (`--step plan|iter|synth`, shipped with each job as `research.py`)
it is a job (the worker's side: the worker runs a .py script with its own Python, where
titan is importable).  The model is `titan.agents.chat_model()`: the provider the workers'
environment names (TITAN_LLM_MODEL / TITAN_LLM_BASE_URL / TITAN_LLM_API_KEY for an
OpenAI-compatible server, TITAN_LLM_SCRIPT for the offline scripted one); with none, the
plan job fails saying what to set.  Prompts start with `STAGE: PLAN|ITER|SYNTH` (a scripted
model's `match` entries can answer each stage).
"""
from __future__ import annotations

import argparse
import json
import os
import re
import sys
from typing import Any, Optional

SCRIPT_NAME = "research.py"
STAGE = "RESEARCH"              # the run's stage label in its agent run's timeline
MAX_SUBQUESTIONS = 10
JOB_TIMEOUT = 300               # seconds per job, its model calls included
MAX_TEXT = 16 * 1024            # an answer kept in a result (results are 64 KiB at most)
MAX_REPORT = 60 * 1024
SYSTEM = ("You are one step of a research agent running on a cluster. Answer exactly in "
          "the format asked for, without preamble.")


# -- the prompts and the replies -----------------------------------------------------------

def plan_prompt(question: str, n: int) -> str:
    return (f"STAGE: PLAN\nQUESTION: {question}\nN: {n}\n"
            f"Split the question into exactly {n} sub-questions that can be researched "
            "independently. Reply with a JSON list of strings only.")


def iter_prompt(question: str, sub_question: str) -> str:
    return (f"STAGE: ITER\nQUESTION: {question}\nSUB-QUESTION: {sub_question}\n"
            "Answer the sub-question concisely, with the facts that matter for the question.")


def synth_prompt(question: str, findings: list) -> str:
    listed = "\n".join(f"- {f['sub_question']}: {f['answer']}" for f in findings)
    return (f"STAGE: SYNTH\nQUESTION: {question}\nFINDINGS:\n{listed}\n"
            "Write a report in Markdown that answers the question from the findings.")


def sub_questions(reply: str, n: int) -> list:
    """The sub-questions in a PLAN reply: its first JSON list of strings, else its non-empty
    lines (bullets and numbers dropped); at most n.  ValueError when there are none."""
    found = re.search(r"\[.*\]", reply, re.S)
    subs: list = []
    if found:
        try:
            data = json.loads(found.group(0))
        except ValueError:
            data = None
        if isinstance(data, list):
            subs = [str(s).strip() for s in data if str(s).strip()]
    if not subs:
        subs = [re.sub(r"^\s*(?:[-*•]|\d+[.)])\s*", "", line).strip()
                for line in reply.splitlines()]
        subs = [s for s in subs if s and not s.startswith(("[", "]", "```"))]
    if not subs:
        raise ValueError(f"the model gave no sub-question: {reply[:500]!r}")
    return subs[:n]


# -- the run (the MCP server's side) -------------------------------------------------------

def _script(step: str, *args: str) -> dict:
    with open(os.path.abspath(__file__), "rb") as f:
        return {"name": SCRIPT_NAME, "content": f.read(), "args": ["--step", step, *args]}


def _job(job_id: str, step: str, *args: str, **more: Any) -> dict:
    return {"id": job_id, "script": _script(step, *args), "timeout": JOB_TIMEOUT, **more}


def research_run(question: str, n: int, agent_run_id: str) -> dict:
    """The pipeline the research tool submits: its plan job, which grows the rest."""
    if not isinstance(question, str) or not question.strip():
        raise ValueError("question is empty")
    if not isinstance(n, int) or isinstance(n, bool) or not 1 <= n <= MAX_SUBQUESTIONS:
        raise ValueError(f"n must be a whole number from 1 to {MAX_SUBQUESTIONS}, not {n!r}")
    return {"name": "mcp-research", "agent_run_id": agent_run_id, "stage": STAGE,
            "jobs": [_job("plan", "plan", "--question", question.strip(), "--n", str(n))]}


# -- the jobs (the worker's side) ----------------------------------------------------------

def _ask(model: Any, prompt: str) -> str:
    messages = [{"role": "system", "content": SYSTEM}, {"role": "user", "content": prompt}]
    return model.chat(messages).text.strip()


def run_step(argv: Optional[list] = None) -> int:
    parser = argparse.ArgumentParser(description="a job of titan mcp's research tool")
    parser.add_argument("--step", required=True, choices=("plan", "iter", "synth"))
    parser.add_argument("--question")
    parser.add_argument("--n", type=int, default=3)
    parser.add_argument("--index", type=int)
    args = parser.parse_args(argv)
    from titan.agents import ChatModelError, NotConfigured, chat_model
    from titan.sdk import current_job
    me = current_job()
    try:
        model = chat_model()
        if args.step == "plan":
            subs = sub_questions(_ask(model, plan_prompt(args.question, args.n)), args.n)
            me.set_result({"question": args.question, "sub_questions": subs})
            iters = [_job(f"iter-{i}", "iter", "--index", str(i), depends_on=[me.node])
                     for i in range(1, len(subs) + 1)]
            synth = _job("synth", "synth", depends_on=[j["id"] for j in iters])
            me.add_jobs(iters + [synth])        # the run grows: N jobs in parallel, then synth
            print(f"PLAN: {len(subs)} sub-questions")
            for s in subs:
                print(f"  - {s}")
        elif args.step == "iter":
            plan = me.result("plan")
            sub = plan["sub_questions"][args.index - 1]
            answer = _ask(model, iter_prompt(plan["question"], sub))[:MAX_TEXT]
            me.set_result({"sub_question": sub, "answer": answer})
            print(f"ITER {args.index}: {sub}\n{answer}")
        else:
            plan = me.result("plan")
            found = me.parent_results()        # {iter-1: {...}, iter-2: {...}, ...}
            findings = [found[k] for k in sorted(found, key=lambda k: int(k.split("-")[1]))]
            report = _ask(model, synth_prompt(plan["question"], findings))[:MAX_REPORT]
            me.set_result({"question": plan["question"], "report": report})
            print(report)
    except (NotConfigured, ChatModelError, ValueError) as e:
        print(f"research {args.step}: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(run_step())
