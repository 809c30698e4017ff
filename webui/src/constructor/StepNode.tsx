// A step on the constructor's canvas: its id, its kind, a one-line summary, whether it has a
// problem (data-invalid) and whether it is selected. Edges are drawn from the handle on the
// right (handle-out-ID) to the handle on the left of the step that depends on it (handle-in-ID).
import { memo } from "react";
import { Handle, Position, type Node, type NodeProps } from "@xyflow/react";
import type { StepData, StepKind } from "./types";

export const KINDS: { kind: StepKind; label: string; icon: string; hint: string }[] = [
  { kind: "job", label: "Job", icon: "▶", hint: "runs a command" },
  { kind: "script", label: "Script", icon: "✎", hint: "ships a script file (Python, shell, …) and runs it" },
  { kind: "service", label: "Service", icon: "⟳", hint: "a long-running process, kept alive" },
  { kind: "gate", label: "Approval gate", icon: "⚑", hint: "waits for a person to approve" },
];

export const KIND_OF = Object.fromEntries(KINDS.map((k) => [k.kind, k])) as Record<StepKind, typeof KINDS[number]>;

/** One line saying what a step does. */
export function summary(data: StepData): string {
  switch (data.kind) {
    case "script": return [data.file || "no file yet", data.args].filter(Boolean).join(" ");
    case "gate": return data.message || `approve ${data.id}?`;
    case "service": return [data.command || "no command yet", data.port ? `:${data.port}` : ""].filter(Boolean).join("  ");
    default: return data.command || "no command yet";
  }
}

export type StepNodeData = { step: StepData; problems: string[] };
export type StepFlowNode = Node<StepNodeData, "step">;

export const StepNode = memo(function StepNode({ data, selected }: NodeProps<StepFlowNode>) {
  const { step, problems } = data;
  const kind = KIND_OF[step.kind] ?? KIND_OF.job;
  const invalid = problems.length > 0;
  const empty = step.kind === "gate" ? false
    : step.kind === "script" ? !step.file : !step.command;
  return (
    <div className={`cn-node cn-${step.kind}${selected ? " selected" : ""}${invalid ? " invalid" : ""}`}
      data-testid={"cnode-" + step.id} data-invalid={invalid ? "true" : "false"}
      data-kind={step.kind} title={invalid ? problems.join("\n") : `${kind.label} ${step.id}`}>
      <Handle type="target" position={Position.Left} data-testid={"handle-in-" + step.id}
        className="cn-handle cn-in" />
      <div className="cn-top">
        <span className="cn-icon" aria-hidden>{kind.icon}</span>
        <span className="cn-id">{step.id || <i>no id</i>}</span>
        <span className="cn-kind">{step.kind}</span>
        {invalid && <span className="cn-bad" aria-label="has problems">!</span>}
      </div>
      <div className={"cn-sum" + (empty ? " cn-empty" : "")}>{summary(step)}</div>
      <Handle type="source" position={Position.Right} data-testid={"handle-out-" + step.id}
        className="cn-handle cn-out" />
    </div>
  );
});

export const NODE_TYPES = { step: StepNode };
