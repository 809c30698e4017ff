// The constructor's model (issue 18): what the canvas edits, what drafts keep, and the functions
// over it that model.ts implements (pure: no React, no fetch; unit-tested with vitest).
//
// A step's fields are the YAML format's keys (docs/pipelines.md), kept as the user typed them
// (strings for lists and durations), so a field shows exactly what will be exported and the
// master's own parser judges it (POST /api/v1/pipelines/validate).

export type StepKind = "job" | "script" | "service" | "gate";

export interface StepData {
  id: string;
  kind: StepKind;
  // job and service: a string split like a shell, as YAML's `command: make -j4 dist`
  command?: string;
  // script: the file's name, its text (shipped with the job), and its arguments (shell-split)
  file?: string;
  content?: string;
  args?: string;
  // jobs, scripts and services
  tags?: string; // comma-separated: GPU,HIGH_MEM
  retries?: string;
  timeout?: string; // a duration: 90, 90s, 5m, 1h30m
  priority?: string;
  delay?: string;
  affinity?: string; // parent | strict:parent | NAME | strict:NAME | false
  env?: string; // NAME=VALUE per line
  cwd?: string;
  // service
  port?: string; // a number or "auto"
  health?: string; // tcp | http:/PATH
  restart?: string; // on-failure | always | never
  persist?: boolean;
  // gate
  message?: string;
  gate_timeout?: string; // the gate's `timeout`
  on_timeout?: "reject" | "approve";
}

export interface Step {
  data: StepData;
  position: { x: number; y: number };
}

export interface Edge {
  source: string; // a step id: `target` depends on it
  target: string;
}

export interface Draft {
  name: string; // the pipeline's name
  schedule?: string;
  agent_run_id?: string;
  stage?: string;
  steps: Step[];
  edges: Edge[];
}

/** A problem with the pipeline: the master's (validate/parse answers) or a local check's. */
export interface Problem {
  step?: string | null; // the step's id, or none for the pipeline's own keys
  key?: string | null; // the key (command, timeout, ...)
  message: string;
}

/**
 * The YAML-shaped document of a draft (Titan's YAML format as a JSON object: name, schedule,
 * agent_run_id, stage, jobs: [{id, command | file + args, depends_on, ...}]; empty fields left
 * out) and the scripts' texts by file name: what the master's /api/v1/pipelines routes take.
 */
export interface PipelineDocument {
  document: Record<string, unknown>;
  files: Record<string, string>;
}

export interface ModelApi {
  toDocument(draft: Draft): PipelineDocument;
  /** A draft from a document (the master's parse answer, or a run's pipeline), laid out. */
  fromDocument(document: Record<string, unknown>, files?: Record<string, string>): Draft;
  toYaml(draft: Draft): string;
  /** A Python file that builds the same pipeline with titan.sdk.Pipeline and submits it. */
  toPython(draft: Draft): string;
  /** Whether an edge source -> target would close a cycle (or is a self-edge / duplicate). */
  wouldCycle(draft: Draft, source: string, target: string): boolean;
  /** What can be seen without the master: empty or duplicate ids, a job without a command. */
  checkLocal(draft: Draft): Problem[];
  /** Positions from dagre, left to right ("LR") or top down ("TB"). */
  layout(draft: Draft, direction?: "LR" | "TB"): Draft;
  /** A fresh step id of `kind` not used in the draft: job-1, gate-2, ... */
  freshId(draft: Draft, kind: StepKind): string;
}
