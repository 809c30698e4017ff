#!/usr/bin/env python3
"""The research agent's jobs: PLAN -> ITER (parallel, grown at run time) -> EVAL -> ... -> SYNTH.

Each stage is a DAG run of its own, with the agent's `agent_run_id` and its stage label, so
`titan runs AGENT_RUN_ID` (and the dashboard's agent timeline) shows the loop in order:

    PLAN   run research-plan:   plan          asks the model for N sub-questions
    ITER   run research-iter:   fanout        adds one iter-I job per sub-question to its own
                                              run (current_job().add_jobs: the run grows),
                                iter-1..N     answer one sub-question each, in parallel
                                gather        reads its parents' results (parent_results())
    EVAL   run research-eval:   eval          reads them, asks the model whether they answer the
                                              question: another ITER round (at most
                                              --max-rounds in all) or on to SYNTH
    SYNTH  run research-synth: [approve]      an approval gate, only with --gate
                                synth         writes the report: its result

A job may grow its own run only, and may submit new runs: so each stage's last job starts the
next stage's run, and the agent needs no driver once PLAN has started (run.py follows it;
`titan run research.yaml` starts it without Python of your own).

This one file is the code of every job: each job ships it (`script` / `file:`) and runs it
with `--step NAME`.  What a stage hands to the next travels as results (64 KiB at most):
`--source RUN/JOB` names the job whose result carries the agent's state so far.

The model: `Model` below, through titan.agents.  With TITAN_LLM_MODEL (and TITAN_LLM_BASE_URL,
TITAN_LLM_API_KEY) in the workers' environment it calls an OpenAI-compatible chat endpoint;
with TITAN_LLM_SCRIPT, titan.agents' scripted provider reads that file; with neither it
answers offline from `scripted` (deterministic), so the example runs anywhere, in tests too.
A reply that holds no JSON where JSON was asked for fails the job with ModelError.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import secrets
import sys

HERE = os.path.abspath(__file__)
STAGES = ("PLAN", "ITER", "EVAL", "SYNTH")
JOB_TIMEOUT = 300           # seconds: each job, model calls included


# -- the model ---------------------------------------------------------------------------------

class ModelError(Exception):
    pass


class Model:
    """Chat with a model: `ask(stage, prompt) -> text`, through titan.agents.

    The provider is the one the environment names (`titan.agents.chat_model()`: `openai`, an
    OpenAI-compatible server, with TITAN_LLM_BASE_URL / TITAN_LLM_MODEL / TITAN_LLM_API_KEY;
    `scripted` with TITAN_LLM_SCRIPT); when it names none, the scripted provider answers
    with `scripted` below, offline.  titan.agents records every call's usage for the job's
    agent run and stage.
    """

    def __init__(self) -> None:
        from titan.agents import NotConfigured, chat_model, provider_name
        try:
            provider = provider_name()
        except NotConfigured:
            provider = None
        if provider is None:
            self.chat = chat_model("scripted", replies=_scripted_reply)
        else:
            self.chat = chat_model(provider)
        self.offline = provider in (None, "scripted")
        self.name = "scripted" if self.offline else (getattr(self.chat, "model", "")
                                                     or provider)

    def ask(self, stage: str, prompt: str) -> str:
        messages = [{"role": "system", "content": SYSTEM},
                    {"role": "user", "content": f"STAGE: {stage}\n{prompt}"}]
        return self.chat.chat(messages).text


def _scripted_reply(messages, **options) -> str:
    prompt = messages[-1]["content"]
    return scripted(_field(prompt, "STAGE"), prompt)


SYSTEM = ("You are one step of a research agent. Answer exactly in the format asked for, "
          "without preamble.")

# The offline script: what a model would say, made up from the prompt, the same each time.
ANGLES = ("what it is", "how it works", "why it matters", "what limits it", "how it is used",
          "what comes next")
FOLLOW_UPS = ("what evidence supports the findings so far", "where the findings disagree")


def scripted(stage: str, prompt: str) -> str:
    question = _field(prompt, "QUESTION")
    if stage == "PLAN":
        n = int(_field(prompt, "N") or 3)
        return json.dumps([f"{ANGLES[i % len(ANGLES)].capitalize()}, for: {question}"
                           for i in range(n)])
    if stage == "ITER":
        sub = _field(prompt, "SUB-QUESTION")
        angle = sub.split(", for: ")[0].lower()
        return f"(offline) notes on {angle}: {len(sub.split())} terms looked up."
    if stage == "EVAL":
        round_ = int(_field(prompt, "ROUND") or 1)
        if round_ < 2:      # asks for one more round the first time, then is satisfied
            return json.dumps({"enough": False, "reason": "the findings lack evidence",
                               "follow_up": [f"{f.capitalize()}, for: {question}"
                                             for f in FOLLOW_UPS]})
        return json.dumps({"enough": True, "reason": "every angle is covered",
                           "follow_up": []})
    if stage == "SYNTH":
        findings = re.findall(r"^- (.*)$", prompt, re.M)
        lines = [f"# {question}", "", f"Summary of {len(findings)} findings:", ""]
        lines += [f"{i}. {f}" for i, f in enumerate(findings, 1)]
        return "\n".join(lines)
    raise ModelError(f"no script for stage {stage!r}")


def _field(text: str, name: str) -> str:
    """The value of a `NAME: value` line of a prompt."""
    found = re.search(rf"^{re.escape(name)}: (.*)$", text, re.M)
    return found.group(1).strip() if found else ""


def json_in(text: str):
    """The first JSON value in a model's reply (models wrap it in prose or ``` fences)."""
    decoder = json.JSONDecoder()
    for i, ch in enumerate(text):
        if ch in "[{":
            try:
                return decoder.raw_decode(text[i:])[0]
            except ValueError:
                continue
    raise ModelError(f"the model's reply holds no JSON: {text[:200]!r}")


# -- the prompts -------------------------------------------------------------------------------

def plan_prompt(question: str, n: int) -> str:
    return (f"QUESTION: {question}\nN: {n}\n"
            f"Break the question into {n} independent sub-questions that together answer it. "
            f"Reply with a JSON list of {n} strings.\n")


def iter_prompt(question: str, sub: str) -> str:
    return (f"QUESTION: {question}\nSUB-QUESTION: {sub}\n"
            "Answer the sub-question in a short paragraph of facts.\n")


def eval_prompt(question: str, findings: list, round_: int, max_rounds: int) -> str:
    listed = "\n".join(f"- {f['sub_question']}: {f['answer']}" for f in findings)
    return (f"QUESTION: {question}\nROUND: {round_}\nMAX ROUNDS: {max_rounds}\n"
            f"FINDINGS:\n{listed}\n"
            'Do the findings answer the question? Reply with JSON: {"enough": true or false, '
            '"reason": "...", "follow_up": [up to 3 more sub-questions if not enough]}\n')


def synth_prompt(question: str, findings: list) -> str:
    listed = "\n".join(f"- {f['sub_question']}: {f['answer']}" for f in findings)
    return (f"QUESTION: {question}\nFINDINGS:\n{listed}\n"
            "Write a report in Markdown that answers the question from the findings.\n")


# -- the runs ----------------------------------------------------------------------------------

def script(step: str, *args: str) -> dict:
    """This file as a job's script, running `step` (inside a job it sits in the job's
    working directory, where the worker wrote it)."""
    with open(HERE, "rb") as f:
        return {"name": "agent.py", "content": f.read(), "args": ["--step", step, *args]}


def job(job_id: str, step: str, *args: str, **more) -> dict:
    return {"id": job_id, "script": script(step, *args), "timeout": JOB_TIMEOUT, **more}


def stage_run(name: str, stage: str, agent: str, jobs: list, max_jobs=None) -> dict:
    spec = {"name": name, "agent_run_id": agent, "stage": stage, "jobs": jobs}
    if max_jobs:
        spec["max_jobs"] = max_jobs
    return spec


def plan_run(agent: str, question: str, n: int, max_rounds: int, gate: bool) -> dict:
    """The first stage, which starts the rest: what run.py submits (research.yaml is the
    same run in YAML)."""
    args = ["--question", question, "--n", str(n), "--max-rounds", str(max_rounds)]
    return stage_run("research-plan", "PLAN", agent,
                     [job("plan", "plan", *args, *(["--gate"] if gate else []))])


def submit(spec: dict) -> str:
    from titan.sdk import Client
    with Client() as titan:       # in a job: the job's own token, which may submit runs
        return titan.submit(spec)


def start_iter(state: dict, source: str) -> str:
    n = len(state["todo"])
    return submit(stage_run("research-iter", "ITER", state["agent"],
                            [job("fanout", "fanout", "--source", source)],
                            max_jobs=n + 2))      # fanout, N iter jobs, gather: no more


# -- the jobs ----------------------------------------------------------------------------------

def step(args) -> None:
    from titan.sdk import current_job
    me = current_job()
    model = Model()

    if args.step == "plan":
        agent = _run_agent(me.run_id) or f"research-{secrets.token_hex(3)}"
        subs = [str(s) for s in json_in(model.ask("PLAN", plan_prompt(args.question, args.n)))
                ][:args.n]
        if not subs:
            raise SystemExit("PLAN: the model gave no sub-question")
        state = {"agent": agent, "question": args.question, "round": 1,
                 "max_rounds": args.max_rounds, "gate": args.gate, "todo": subs,
                 "findings": [], "model": model.name}
        me.set_result(state)
        started = start_iter(state, me.job_id)
        print(f"PLAN: {len(subs)} sub-questions ({state['model']}); started ITER run "
              f"{started}")
        for s in subs:
            print(f"  - {s}")

    elif args.step == "fanout":
        state = dict(me.result(args.source), source=args.source)
        iters = [job(f"iter-{i}", "iter", "--source", args.source, "--index", str(i))
                 for i in range(1, len(state["todo"]) + 1)]
        gather = {"id": "gather", "script": script("gather"), "timeout": JOB_TIMEOUT,
                  "depends_on": [j["id"] for j in iters]}
        added = me.add_jobs(iters + [gather])       # the run grows: N jobs in parallel
        me.set_result(state)
        print(f"ITER round {state['round']}: added {len(added) - 1} iter jobs and gather")

    elif args.step == "iter":
        state = me.result(args.source)
        sub = state["todo"][args.index - 1]
        answer = model.ask("ITER", iter_prompt(state["question"], sub)).strip()
        me.set_result({"sub_question": sub, "answer": answer})
        print(f"ITER {args.index}: {sub}\n{answer}")

    elif args.step == "gather":
        state = me.result("fanout")
        found = me.parent_results()                 # {iter-1: {...}, iter-2: {...}, ...}
        ordered = [found[k] for k in sorted(found, key=lambda k: int(k.split("-")[1]))]
        state = dict(state, findings=state["findings"] + ordered, todo=[])
        me.set_result(state)
        started = submit(stage_run("research-eval", "EVAL", state["agent"],
                                   [job("eval", "eval", "--source", me.job_id)]))
        print(f"gather: {len(ordered)} findings of round {state['round']} "
              f"({len(state['findings'])} in all); started EVAL run {started}")

    elif args.step == "eval":
        state = me.result(args.source)
        verdict = json_in(model.ask("EVAL", eval_prompt(
            state["question"], state["findings"], state["round"], state["max_rounds"])))
        enough = bool(verdict.get("enough")) if isinstance(verdict, dict) else True
        follow = [str(q) for q in (verdict.get("follow_up") or [])][:3] \
            if isinstance(verdict, dict) else []
        reason = verdict.get("reason", "") if isinstance(verdict, dict) else ""
        if not enough and follow and state["round"] < state["max_rounds"]:
            state = dict(state, round=state["round"] + 1, todo=follow,
                         decision="another round")
            me.set_result(state)
            started = start_iter(state, me.job_id)
            print(f"EVAL: not enough ({reason}); round {state['round']} of at most "
                  f"{state['max_rounds']}: started ITER run {started}")
        else:
            why = reason if enough else f"stopping at round {state['round']}" \
                f" of {state['max_rounds']} ({reason})"
            state = dict(state, decision="synthesise")
            me.set_result(state)
            jobs = [job("synth", "synth", "--source", me.job_id)]
            if state["gate"]:
                jobs.insert(0, {"id": "approve", "kind": "gate", "timeout": 3600,
                                "message": f"Write the report on {state['question']!r} from "
                                           f"{len(state['findings'])} findings?"})
                jobs[1]["depends_on"] = ["approve"]
            started = submit(stage_run("research-synth", "SYNTH", state["agent"], jobs))
            print(f"EVAL: go on to SYNTH ({why}); started SYNTH run {started}"
                  + (" (its gate waits for approval)" if state["gate"] else ""))

    elif args.step == "synth":
        state = me.result(args.source)
        report = model.ask("SYNTH", synth_prompt(state["question"], state["findings"]))
        me.set_result({"question": state["question"], "report": report,
                       "findings": len(state["findings"]), "rounds": state["round"],
                       "agent_run_id": state["agent"]})
        print(report)
    else:
        raise SystemExit(f"unknown step {args.step!r}")


def _run_agent(run_id):
    from titan.sdk import Client
    with Client() as titan:
        return titan.run(run_id, jobs=False).get("agent_run_id")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description="A step of the research agent (run by Titan "
                                                 "as a job; start it with run.py)")
    parser.add_argument("--step", required=True)
    parser.add_argument("--question")
    parser.add_argument("--n", type=int, default=3)
    parser.add_argument("--max-rounds", type=int, default=2)
    parser.add_argument("--gate", action="store_true")
    parser.add_argument("--source")
    parser.add_argument("--index", type=int)
    args = parser.parse_args(argv)
    sys.stdout.reconfigure(line_buffering=True)
    from titan.agents import ChatModelError
    try:
        step(args)
    except (ModelError, ChatModelError) as e:
        print(f"{args.step}: the model failed: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
