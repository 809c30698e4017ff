// The properties of the selected step (every key of the YAML format for its kind, with hints),
// or, with nothing selected, the pipeline's own. Each field shows its problems (the local
// checks' at once, the master's as it answers) under it.
import type { ReactNode } from "react";
import type { Draft, Problem, StepData, StepKind } from "./types";
import { KIND_OF } from "./StepNode";

type Key = Exclude<keyof StepData, "kind">;

interface Field {
  key: Key;
  label: string;
  hint: string;
  kinds: StepKind[];
  input?: "text" | "textarea" | "code" | "select" | "checkbox";
  options?: string[];
  placeholder?: string;
  list?: "affinity" | "tags";
}

const RUNNABLE: StepKind[] = ["job", "script", "service"];

const FIELDS: Field[] = [
  { key: "id", label: "Id", hint: "unique in the pipeline: letters, digits, - _ .", kinds: ["job", "script", "service", "gate"], placeholder: "extract" },
  { key: "command", label: "Command", hint: "split like a shell (not run by one): python3 etl.py --day 1", kinds: ["job", "service"], placeholder: "python3 extract.py" },
  { key: "file", label: "File", hint: "the script's name: .py runs with Python, .sh with bash, else its #! line", kinds: ["script"], placeholder: "load.py" },
  { key: "content", label: "Script", hint: "shipped with the job; the worker writes it and runs it", kinds: ["script"], input: "code", placeholder: "print('hello')" },
  { key: "args", label: "Arguments", hint: "after the script's path, split like a shell", kinds: ["script"], placeholder: "--fast" },
  { key: "port", label: "Port", hint: "a number, or auto (one of the worker's range); reaches it as $PORT and {port}", kinds: ["service"], placeholder: "auto" },
  { key: "health", label: "Health check", hint: "tcp or http:/PATH (needs a port)", kinds: ["service"], placeholder: "http:/healthz" },
  { key: "restart", label: "Restart", hint: "when the service is started again", kinds: ["service"], input: "select", options: ["", "on-failure", "always", "never"] },
  { key: "persist", label: "Keep running after the run", hint: "the service outlives its run", kinds: ["service"], input: "checkbox" },
  { key: "message", label: "Question", hint: "shown to the people who approve", kinds: ["gate"], placeholder: "Publish this model?" },
  { key: "gate_timeout", label: "Wait at most", hint: "a duration: 90, 30s, 5m, 1h30m, 2d (default 48h)", kinds: ["gate"], placeholder: "48h" },
  { key: "on_timeout", label: "If nobody decides", hint: "what the gate decides by itself", kinds: ["gate"], input: "select", options: ["", "reject", "approve"] },
  { key: "tags", label: "Tags", hint: "comma-separated: runs on a worker that has them all (GPU,HIGH_MEM)", kinds: RUNNABLE, placeholder: "GPU", list: "tags" },
  { key: "retries", label: "Retries", hint: "runs again after a failure, with backoff", kinds: RUNNABLE, placeholder: "0" },
  { key: "timeout", label: "Timeout", hint: "a duration per attempt: 90, 30s, 5m, 1h30m", kinds: RUNNABLE, placeholder: "none" },
  { key: "priority", label: "Priority", hint: "a whole number, higher runs first", kinds: RUNNABLE, placeholder: "0" },
  { key: "delay", label: "Delay", hint: "a duration to wait once ready: 10s, 5m", kinds: RUNNABLE, placeholder: "0" },
  { key: "affinity", label: "Affinity", hint: "parent, strict:parent, a worker's name, strict:NAME, false", kinds: RUNNABLE, placeholder: "anywhere", list: "affinity" },
  { key: "env", label: "Environment", hint: "NAME=VALUE, one a line", kinds: RUNNABLE, input: "textarea", placeholder: "MODE=fast" },
  { key: "cwd", label: "Working directory", hint: "on the worker (default: a fresh one)", kinds: RUNNABLE, placeholder: "/srv/etl" },
];

export const STEP_KEYS: Key[] = FIELDS.map((f) => f.key);

const PIPELINE_FIELDS: { key: "name" | "schedule" | "agent_run_id" | "stage"; label: string; hint: string; placeholder: string }[] = [
  { key: "name", label: "Name", hint: "runs are named NAME-xxxxxx", placeholder: "etl" },
  { key: "schedule", label: "Schedule", hint: "cron, UTC: 0 3 * * * (a 6th field is seconds); Deploy registers it instead of running", placeholder: "none: run once" },
  { key: "agent_run_id", label: "Agent run", hint: "groups runs into an agent run's timeline", placeholder: "none" },
  { key: "stage", label: "Stage", hint: "its label in the timeline: PLAN, ITER, EVAL, SYNTH…", placeholder: "none" },
];

function FieldProblems({ problems }: { problems: Problem[] }) {
  if (!problems.length) return null;
  return <>{problems.map((p, i) => <div key={i} className="cn-field-problem">{p.message}</div>)}</>;
}

function Row({ label, hint, children, problems, htmlFor }: {
  label: string; hint: string; children: ReactNode; problems: Problem[]; htmlFor: string;
}) {
  return (
    <div className={"cn-row" + (problems.length ? " bad" : "")}>
      <label htmlFor={htmlFor}>{label}</label>
      {children}
      <div className="cn-hint">{hint}</div>
      <FieldProblems problems={problems} />
    </div>
  );
}

export function StepProperties({ step, problems, onChange, onFieldDone, workers, tags }: {
  step: StepData;
  problems: Problem[];
  onChange: (key: Key, value: string | boolean | undefined) => void;
  onFieldDone: () => void;
  workers: string[];
  tags: string[];
}) {
  const kind = KIND_OF[step.kind];
  const byKey = (key: string) => problems.filter((p) => p.key === key || (key === "timeout" && step.kind === "gate" && p.key === "gate_timeout"));
  const known = new Set(FIELDS.filter((f) => f.kinds.includes(step.kind)).map((f) => f.key as string));
  const other = problems.filter((p) => !p.key || !known.has(p.key));
  return (
    <div className="cn-props" data-testid="step-properties">
      <div className="cn-props-head">
        <span className={`cn-icon cn-${step.kind}`} aria-hidden>{kind.icon}</span>
        <b>{kind.label}</b><span className="muted"> — {kind.hint}</span>
      </div>
      <FieldProblems problems={other} />
      {FIELDS.filter((f) => f.kinds.includes(step.kind)).map((f) => {
        const id = "prop-" + f.key;
        const value = step[f.key];
        const common = {
          id, "data-testid": id, onBlur: onFieldDone, placeholder: f.placeholder,
          "aria-invalid": byKey(f.key).length > 0 || undefined,
        };
        let input: ReactNode;
        if (f.input === "checkbox") {
          input = <input type="checkbox" {...common} checked={!!value}
            onChange={(e) => { onChange(f.key, e.target.checked || undefined); onFieldDone(); }} />;
        } else if (f.input === "select") {
          input = (
            <select {...common} value={String(value ?? "")}
              onChange={(e) => { onChange(f.key, e.target.value || undefined); onFieldDone(); }}>
              {f.options!.map((o) => <option key={o} value={o}>{o || "default"}</option>)}
            </select>
          );
        } else if (f.input === "textarea" || f.input === "code") {
          input = <textarea {...common} className={f.input === "code" ? "mono cn-code" : "mono"}
            rows={f.input === "code" ? 10 : 3} spellCheck={false} value={String(value ?? "")}
            onChange={(e) => onChange(f.key, e.target.value)} />;
        } else {
          input = <input type="text" {...common} autoComplete="off" spellCheck={false}
            list={f.list ? "cn-list-" + f.list : undefined} value={String(value ?? "")}
            onChange={(e) => onChange(f.key, e.target.value)} />;
        }
        return <Row key={f.key} label={f.label} hint={f.hint} problems={byKey(f.key)} htmlFor={id}>{input}</Row>;
      })}
      <datalist id="cn-list-affinity">
        {["parent", "strict:parent", "false", ...workers, ...workers.map((w) => "strict:" + w)].map((v) => <option key={v} value={v} />)}
      </datalist>
      <datalist id="cn-list-tags">{tags.map((t) => <option key={t} value={t} />)}</datalist>
    </div>
  );
}

export function PipelineProperties({ draft, problems, onChange, onFieldDone, steps }: {
  draft: Draft;
  problems: Problem[];
  onChange: (key: "name" | "schedule" | "agent_run_id" | "stage", value: string) => void;
  onFieldDone: () => void;
  steps: number;
}) {
  return (
    <div className="cn-props" data-testid="pipeline-properties">
      <div className="cn-props-head"><b>Pipeline</b>
        <span className="muted"> — {steps} step{steps === 1 ? "" : "s"}; select a step to edit it</span></div>
      {PIPELINE_FIELDS.map((f) => {
        const id = "pipeline-" + f.key;
        const mine = problems.filter((p) => !p.step && p.key === f.key);
        return (
          <Row key={f.key} label={f.label} hint={f.hint} problems={mine} htmlFor={id}>
            <input id={id} data-testid={id} type="text" autoComplete="off" spellCheck={false}
              placeholder={f.placeholder} value={String(draft[f.key] ?? "")} onBlur={onFieldDone}
              onChange={(e) => onChange(f.key, e.target.value)} />
          </Row>
        );
      })}
    </div>
  );
}
