// The constructor's model (issue 18): the functions of types.ts's ModelApi over a Draft, plus
// the undo stack. Pure TypeScript: no React, no fetch, no DOM (unit-tested by model.test.ts).
//
// - toDocument / toYaml / toPython: one draft, three forms that build the same DAG (Titan's
//   YAML keys, docs/pipelines.md; the Python builder's names, titan/sdk/pipeline.py).
// - fromDocument: a draft from what the master gives (POST /api/v1/pipelines/parse, GET
//   /api/v1/runs/{id}/pipeline), laid out with dagre.
// - wouldCycle / cyclePath, checkLocal, layout, freshId, emptyDraft, History; and helpers the
//   page may use: stepOrder, pasteSteps, shlexSplit, shJoin, pyStr.
//
// Values are written as typed; only blanks that cannot matter are trimmed (around names, a
// schedule, numbers, durations, tags, a file's name; shlex's blanks around a command or args),
// not those of free text (a gate's message, cwd, stage, env values).
//
// Keys the constructor has no field for (a job's `hitl_message` is turned into a gate step; but
// e.g. top-level `workspace`, `max_jobs`, or a key this version does not know) are kept in an
// optional `extra` object on the step's data / on the draft (see StepExtra, DraftExtra below):
// they survive a draft's save (JSON) and any `{...data, key: value}` edit, and are written back
// by toDocument/toYaml (and by toPython where the builder takes them). types.ts is unchanged:
// `extra` is an addition of this module, not a field the page must know.

import dagre from "@dagrejs/dagre";
import { Document, isMap, visit, type YAMLMap } from "yaml";
import type { Draft, Edge, ModelApi, PipelineDocument, Problem, Step, StepData, StepKind } from "./types";

/** A node's size on the canvas, as dagre lays it out. */
export const NODE_W = 180;
export const NODE_H = 56;

/** Keys of a job/gate entry the constructor has no field for, kept as given. */
export type StepExtra = StepData & { extra?: Record<string, unknown> };
/** Top-level keys the constructor has no field for (workspace, max_jobs, version, ...). */
export type DraftExtra = Draft & { extra?: Record<string, unknown> };

const NAME = /^[A-Za-z0-9_.-]+$/;
const WHOLE = /^[+-]?\d+$/;
const SECONDS = /^(\d+(\.\d*)?|\.\d+)$/;
const DURATION_PART = /(\d+(?:\.\d*)?|\.\d+)\s*(ms|s|m|h|d)/g;

const TOP_FIELDS = new Set(["name", "schedule", "agent_run_id", "stage", "jobs", "project"]);

// ------------------------------------------------------------------------------------------
// Small helpers

function text(value: string | undefined | null): string {
  return (value ?? "").trim();
}

function has(value: string | undefined | null): value is string {
  return text(value) !== "";
}

function str(value: unknown): string {
  if (value === null || value === undefined) return "";
  if (typeof value === "string") return value;
  if (typeof value === "number" || typeof value === "boolean") return String(value);
  return JSON.stringify(value);
}

function isRecord(value: unknown): value is Record<string, unknown> {
  return typeof value === "object" && value !== null && !Array.isArray(value);
}

/** A whole number where the format wants one (priority, retries); else the text, for the
 *  master to refuse with its own message. */
function whole(value: string): number | string {
  const t = value.trim();
  return WHOLE.test(t) && Number.isSafeInteger(Number(t)) ? Number(t) : t;
}

/** A duration: digits only (`90`, `1.5`) are seconds, a number; else the text (`5m`). */
function duration(value: string): number | string {
  const t = value.trim();
  return SECONDS.test(t) ? Number(t) : t;
}

function port(value: string): number | string {
  const t = value.trim();
  return /^\d+$/.test(t) ? Number(t) : t;
}

function affinity(value: string): boolean | string {
  const t = value.trim();
  if (t.toLowerCase() === "false") return false;
  if (t.toLowerCase() === "true") return true;
  return t;
}

function tagList(value: string): string[] {
  const out: string[] = [];
  for (const part of value.split(",")) {
    const tag = part.trim();
    if (tag && !out.includes(tag)) out.push(tag);
  }
  return out;
}

/** NAME=VALUE lines as a mapping (blank lines skipped; a line without `=` is NAME=""). */
export function envMap(value: string): Record<string, string> {
  const out: Record<string, string> = {};
  for (const raw of value.split("\n")) {
    const line = raw.replace(/\r$/, "");
    if (!line.trim()) continue;
    const eq = line.indexOf("=");
    if (eq < 0) out[line.trim()] = "";
    else out[line.slice(0, eq).trim()] = line.slice(eq + 1);
  }
  return out;
}

/** Whether a duration is one the master reads (a number of seconds, or `1h30m`, `500ms`, ...). */
export function durationSeconds(value: string): number | null {
  const t = value.trim().toLowerCase();
  if (!t) return null;
  if (/^[+-]?(\d+(\.\d*)?|\.\d+)(e[+-]?\d+)?$/.test(t)) return Number(t);
  let pos = 0;
  let total = 0;
  for (const m of t.matchAll(DURATION_PART)) {
    if (t.slice(pos, m.index).trim()) return null;
    total += Number(m[1]) * { ms: 0.001, s: 1, m: 60, h: 3600, d: 86400 }[m[2] as "ms"];
    pos = (m.index ?? 0) + m[0].length;
  }
  if (!pos || t.slice(pos).trim()) return null;
  return total;
}

// ------------------------------------------------------------------------------------------
// Shell words (as Python's shlex.split / shlex.join do: the builder and the reader split a
// command or args string that way)

/** Python's shlex.split (POSIX mode, no comments); throws on an unclosed quote. */
export function shlexSplit(value: string): string[] {
  const words: string[] = [];
  let word = "";
  let inWord = false;
  let i = 0;
  while (i < value.length) {
    const c = value[i];
    if (c === "'") {
      const end = value.indexOf("'", i + 1);
      if (end < 0) throw new Error("No closing quotation");
      word += value.slice(i + 1, end);
      inWord = true;
      i = end + 1;
    } else if (c === '"') {
      i++;
      for (;;) {
        if (i >= value.length) throw new Error("No closing quotation");
        const d = value[i];
        if (d === '"') { i++; break; }
        if (d === "\\" && i + 1 < value.length && (value[i + 1] === '"' || value[i + 1] === "\\")) {
          word += value[i + 1];
          i += 2;
        } else {
          word += d;
          i++;
        }
      }
      inWord = true;
    } else if (c === "\\") {
      if (i + 1 >= value.length) throw new Error("No escaped character");
      word += value[i + 1];
      inWord = true;
      i += 2;
    } else if (c === " " || c === "\t" || c === "\n" || c === "\r") {
      if (inWord) words.push(word);
      word = "";
      inWord = false;
      i++;
    } else {
      word += c;
      inWord = true;
      i++;
    }
  }
  if (inWord) words.push(word);
  return words;
}

/** A word as shlexSplit reads it back: as it is when it can be (Python's shlex.quote's safe
 *  characters), else in single quotes, or, when it has a single quote itself, in double quotes
 *  (where shlex takes only \" and \\ as escapes: Titan's commands are split, not run by a
 *  shell, so $ and ` are plain characters there). */
export function shQuote(word: string): string {
  if (word === "") return "''";
  if (/^[\w@%+=:,./-]+$/.test(word) && !/[^\x00-\x7f]/.test(word)) return word;
  if (!word.includes("'")) return "'" + word + "'";
  return '"' + word.replace(/[\\"]/g, (c) => "\\" + c) + '"';
}

/** Python's shlex.join: words as one string that shlexSplit gives back. */
export function shJoin(words: unknown[]): string {
  return words.map((w) => shQuote(str(w))).join(" ");
}

// ------------------------------------------------------------------------------------------
// Order and graph

function knownEdges(draft: Draft): Edge[] {
  const seen = new Set<string>();
  const out: Edge[] = [];
  for (const e of draft.edges) {
    const key = e.source + "\u0000" + e.target;
    if (seen.has(key)) continue;
    seen.add(key);
    out.push(e);
  }
  return out;
}

/**
 * The steps in a stable order: topological (a step after all its parents), ties by their place
 * in draft.steps (the order they were added, or the imported file's order), so the exported
 * YAML changes little from one edit to the next. Steps in a cycle come last, in that order.
 */
export function stepOrder(draft: Draft): Step[] {
  const steps = draft.steps;
  const index = new Map<string, number>();
  steps.forEach((s, i) => { if (!index.has(s.data.id)) index.set(s.data.id, i); });
  const parents = steps.map(() => new Set<number>());
  const children = steps.map(() => [] as number[]);
  for (const e of knownEdges(draft)) {
    const s = index.get(e.source);
    const t = index.get(e.target);
    if (s === undefined || t === undefined || s === t) continue;
    steps.forEach((step, i) => {
      if (step.data.id === e.target && !parents[i].has(s)) {
        parents[i].add(s);
        children[s].push(i);
      }
    });
  }
  const waiting = parents.map((p) => p.size);
  const ready: number[] = [];
  waiting.forEach((n, i) => { if (n === 0) ready.push(i); });
  const out: number[] = [];
  const done = new Set<number>();
  while (ready.length) {
    ready.sort((a, b) => a - b);
    const i = ready.shift()!;
    out.push(i);
    done.add(i);
    for (const c of children[i]) if (--waiting[c] === 0) ready.push(c);
  }
  steps.forEach((_, i) => { if (!done.has(i)) out.push(i); });
  return out.map((i) => steps[i]);
}

/** The parents of step `id` in a stable order (that of stepOrder; unknown ones after). */
function parentsOf(draft: Draft, id: string, rank: Map<string, number>): string[] {
  const out: string[] = [];
  for (const e of knownEdges(draft)) if (e.target === id && !out.includes(e.source)) out.push(e.source);
  const big = Number.MAX_SAFE_INTEGER;
  return out
    .map((p, i) => ({ p, i }))
    .sort((a, b) => (rank.get(a.p) ?? big) - (rank.get(b.p) ?? big) || a.i - b.i)
    .map((x) => x.p);
}

/** A path of edges from `from` to `to` (ids, both ends included), or null. */
function findPath(draft: Draft, from: string, to: string): string[] | null {
  const out = new Map<string, string[]>();
  for (const e of draft.edges) {
    if (!out.has(e.source)) out.set(e.source, []);
    out.get(e.source)!.push(e.target);
  }
  const prev = new Map<string, string>();
  const seen = new Set([from]);
  const queue = [from];
  while (queue.length) {
    const n = queue.shift()!;
    if (n === to) {
      const path = [n];
      let p = n;
      while (p !== from) { p = prev.get(p)!; path.unshift(p); }
      return path;
    }
    for (const m of out.get(n) ?? []) {
      if (!seen.has(m)) { seen.add(m); prev.set(m, n); queue.push(m); }
    }
  }
  return null;
}

/**
 * The cycle an edge source -> target would close, in run order and ending where it starts
 * (`["a", "b", "a"]` for b -> a when a -> b exists; `["a", "a"]` for a self edge), or null.
 */
export function cyclePath(draft: Draft, source: string, target: string): string[] | null {
  if (source === target) return [source, source];
  const path = findPath(draft, target, source);
  return path ? [...path, target] : null;
}

export function wouldCycle(draft: Draft, source: string, target: string): boolean {
  if (source === target) return true;
  if (draft.edges.some((e) => e.source === source && e.target === target)) return true;
  return findPath(draft, target, source) !== null;
}

// ------------------------------------------------------------------------------------------
// Draft -> document

/** Whether a step runs a shipped file: a script, or a service given a file and no command (the
 *  public reference's services are files). */
export function runsFile(data: StepData): boolean {
  return data.kind === "script" || (data.kind === "service" && !has(data.command) && has(data.file));
}

/** Shell words without the blanks around them, but a blank a backslash escapes at the end
 *  is a character of the last word: kept. */
function trimWords(value: string): string {
  const t = value.replace(/^[ \t\r\n]+/, ""); // shlex's blanks (not JavaScript's \s)
  const m = /[ \t\r\n]+$/.exec(t);
  return !m || t[m.index - 1] === "\\" ? t : t.slice(0, m.index);
}

function jobEntry(data: StepExtra, parents: string[], file?: string): Record<string, unknown> {
  const out: Record<string, unknown> = { id: data.id };
  const kind = data.kind;
  if (kind === "gate") {
    out.gate = true;
    if (parents.length) out.depends_on = parents;
    if (has(data.message)) out.message = data.message!;
    if (has(data.gate_timeout)) out.timeout = duration(data.gate_timeout!);
    if (data.on_timeout) out.on_timeout = data.on_timeout;
  } else {
    if (kind === "service") out.type = "service";
    if (runsFile(data)) {
      if (has(data.file)) out.file = file ?? data.file!.trim();
      if (has(data.args)) out.args = trimWords(data.args!);
    } else if (has(data.command)) {
      out.command = trimWords(data.command!);
    }
    if (parents.length) out.depends_on = parents;
    if (has(data.priority)) out.priority = whole(data.priority!);
    if (has(data.tags)) {
      const tags = tagList(data.tags!);
      if (tags.length) out.tags = tags;
    }
    if (has(data.timeout)) out.timeout = duration(data.timeout!);
    if (has(data.retries)) out.retries = whole(data.retries!);
    if (has(data.delay)) out.delay = duration(data.delay!);
    if (has(data.env)) {
      const env = envMap(data.env!);
      if (Object.keys(env).length) out.env = env;
    }
    if (has(data.cwd)) out.cwd = data.cwd!;
    if (has(data.affinity)) out.affinity = affinity(data.affinity!);
    if (kind === "service") {
      if (has(data.port)) out.port = port(data.port!);
      if (has(data.health)) out.health = data.health!.trim();
      if (has(data.restart)) out.restart = data.restart!.trim();
      if (data.persist) out.persist = true;
    }
  }
  for (const [key, value] of Object.entries(data.extra ?? {})) {
    if (!(key in out) && value !== undefined) out[key] = value;
  }
  return out;
}

export function toDocument(draft: Draft): PipelineDocument {
  const d = draft as DraftExtra;
  const document: Record<string, unknown> = {};
  if (has(d.name)) document.name = d.name.trim();
  if (has(d.schedule)) document.schedule = d.schedule!.trim();
  if (has(d.agent_run_id)) document.agent_run_id = d.agent_run_id!.trim();
  if (has(d.stage)) document.stage = d.stage!;
  for (const [key, value] of Object.entries(d.extra ?? {})) {
    if (!TOP_FIELDS.has(key) && value !== undefined) document[key] = value;
  }
  const order = stepOrder(draft);
  const rank = new Map<string, number>();
  order.forEach((s, i) => { if (!rank.has(s.data.id)) rank.set(s.data.id, i); });
  const files: Record<string, string> = {};
  const jobs: Record<string, unknown>[] = [];
  for (const step of order) {
    const data = step.data as StepExtra;
    let file: string | undefined;
    if (runsFile(data) && has(data.file)) {
      // Two different scripts of one name: the second is ID/NAME (as the master writes it).
      file = data.file!.trim();
      const content = data.content ?? "";
      if (file in files && files[file] !== content) file = `${data.id}/${baseName(file)}`;
      files[file] = content;
    }
    jobs.push(jobEntry(data, parentsOf(draft, data.id, rank), file));
  }
  // A script is shipped alone (as Pipeline.script does), not with the folder around the file.
  if (Object.keys(files).length) document.project = false;
  document.jobs = jobs;
  return { document, files };
}

// ------------------------------------------------------------------------------------------
// Document -> draft

/** A script's name in the Python builder: its file's last part (`scripts/load.py`: load.py). */
export function baseName(file: string): string {
  const parts = file.split("/").filter((p) => p !== "");
  return parts.length ? parts[parts.length - 1] : file;
}

function words(value: unknown): string {
  if (Array.isArray(value)) return shJoin(value);
  return str(value);
}

export function fromDocument(document: Record<string, unknown>, files: Record<string, string> = {}): Draft {
  const draft: DraftExtra = { name: str(document.name), steps: [], edges: [] };
  for (const key of ["schedule", "agent_run_id", "stage"] as const) {
    if (document[key] !== undefined && document[key] !== null && str(document[key]) !== "") draft[key] = str(document[key]);
  }
  const extra: Record<string, unknown> = {};
  for (const [key, value] of Object.entries(document)) {
    if (!TOP_FIELDS.has(key) && value !== undefined && value !== null) extra[key] = value;
  }
  if (Object.keys(extra).length) draft.extra = extra;

  const jobs = Array.isArray(document.jobs) ? document.jobs : [];
  const steps: Step[] = [];
  const edges: Edge[] = [];
  const redirect = new Map<string, string>(); // a job with hitl_message: its children follow its gate
  const pending: { target: string; parents: string[] }[] = [];
  for (const raw of jobs) {
    if (!isRecord(raw)) continue;
    const job = raw;
    const id = str(job.id);
    const isGate = job.gate === true || job.kind === "gate";
    const parents = job.depends_on === undefined || job.depends_on === null ? []
      : (Array.isArray(job.depends_on) ? job.depends_on : [job.depends_on]).map(str);
    const data: StepExtra = { id, kind: "job" };
    const extra: Record<string, unknown> = {};
    const used = new Set(["id", "depends_on", "gate", "kind"]);
    const take = (key: string): unknown => { used.add(key); return job[key]; };
    const set = (field: keyof StepData, value: unknown) => {
      if (value !== undefined && value !== null && str(value) !== "") (data as unknown as Record<string, unknown>)[field] = str(value);
    };
    if (isGate) {
      data.kind = "gate";
      set("message", take("message") ?? take("hitl_message"));
      set("gate_timeout", take("timeout") ?? take("max_wait_seconds"));
      take("hitl_message"); take("max_wait_seconds");
      const on = take("on_timeout");
      if (on === "reject" || on === "approve") data.on_timeout = on;
      else if (on !== undefined && on !== null) extra.on_timeout = on;
    } else {
      const type = take("type");
      const file = take("file");
      const command0 = job.command;
      if (type === "service") data.kind = "service";
      else if (file !== undefined && file !== null) data.kind = "script";
      if (type !== undefined && type !== null && type !== "service" && type !== "run") extra.type = type;
      if (file !== undefined && file !== null) {
        if (data.kind !== "script" && !(data.kind === "service" && (command0 === undefined || command0 === null))) extra.file = file;
        else {
          data.file = str(file);
          data.content = files[data.file] ?? files[data.file.split("/").pop()!] ?? "";
        }
      }
      const args = take("args");
      if (args !== undefined && args !== null) {
        if (data.file !== undefined) set("args", words(args));
        else extra.args = args;
      }
      const command = take("command");
      if (command !== undefined && command !== null) set("command", words(command));
      for (const key of ["priority", "retries", "timeout", "delay", "cwd"] as const) set(key, take(key));
      const tags: string[] = [];
      const addTags = (value: unknown) => {
        const list = Array.isArray(value) ? value.map(str) : str(value).split(",");
        for (const t of list.map((x) => x.trim())) {
          if (t && t.toUpperCase() !== "GENERAL" && !tags.includes(t)) tags.push(t);
        }
      };
      const t = take("tags");
      if (t !== undefined && t !== null) addTags(t);
      const r = take("requirement");
      if (r !== undefined && r !== null) addTags(r);
      if (tags.length) data.tags = tags.join(",");
      const env = take("env");
      const lineSafe = (t: string) => !/[\n\r]/.test(t);
      if (isRecord(env) && Object.entries(env).every(([k, v]) => lineSafe(k) && !k.includes("=") && k.trim() === k && k !== "" && lineSafe(str(v)))) {
        const lines = Object.entries(env).map(([k, v]) => `${k}=${str(v)}`);
        if (lines.length) data.env = lines.join("\n");
      } else if (env !== undefined && env !== null) {
        extra.env = env; // not NAME=VALUE lines (a value of several lines...): kept as it is
      }
      const aff = take("affinity");
      if (aff === true) data.affinity = "parent";
      else if (aff === false) data.affinity = "false";
      else set("affinity", aff);
      for (const key of ["port", "health", "restart"] as const) {
        const v = take(key);
        if (data.kind === "service") set(key, v);
        else if (v !== undefined && v !== null) extra[key] = v;
      }
      const persist = take("persist");
      if (persist === true && data.kind === "service") data.persist = true;
      else if (persist !== undefined && persist !== null && persist !== false) extra.persist = persist;
      const hitl = take("hitl_message");
      const wait = take("max_wait_seconds");
      if (hitl !== undefined && hitl !== null && str(hitl) !== "") {
        // The reference's shorthand: a gate ID.approval right after the job.
        const gateId = `${id}.approval`;
        const gate: StepData = { id: gateId, kind: "gate", message: str(hitl), on_timeout: "reject" };
        if (wait !== undefined && wait !== null && str(wait) !== "") gate.gate_timeout = str(wait);
        redirect.set(id, gateId);
        steps.push({ data, position: { x: 0, y: 0 } });
        steps.push({ data: gate, position: { x: 0, y: 0 } });
        edges.push({ source: id, target: gateId });
        pending.push({ target: id, parents });
        finishExtra(job, used, extra, data);
        continue;
      } else if (wait !== undefined && wait !== null) {
        extra.max_wait_seconds = wait;
      }
    }
    finishExtra(job, used, extra, data);
    steps.push({ data, position: { x: 0, y: 0 } });
    pending.push({ target: id, parents });
  }
  for (const { target, parents } of pending) {
    for (const p of parents) {
      const source = redirect.get(p) ?? p;
      if (!edges.some((e) => e.source === source && e.target === target)) edges.push({ source, target });
    }
  }
  draft.steps = steps;
  draft.edges = edges;
  return layout(draft, "LR");
}

function finishExtra(job: Record<string, unknown>, used: Set<string>, extra: Record<string, unknown>, data: StepExtra) {
  for (const [key, value] of Object.entries(job)) {
    if (!used.has(key) && value !== undefined && value !== null) extra[key] = value;
  }
  if (Object.keys(extra).length) data.extra = extra;
}

// ------------------------------------------------------------------------------------------
// YAML

export function toYaml(draft: Draft): string {
  const { document, files } = toDocument(draft);
  const doc = new Document(document, { version: "1.1" });
  const scripts = Object.keys(files);
  const header = [` ${has(draft.name) ? draft.name.trim() : "pipeline"}: made with Titan's pipeline constructor.`,
    " Start it with: titan run FILE"];
  if (scripts.length) {
    header.push(` Scripts to save beside this file (shipped with their jobs): ${scripts.join(", ")}`);
  }
  doc.commentBefore = header.join("\n");
  const jobs = doc.get("jobs", true);
  if (jobs && typeof jobs === "object" && "items" in jobs) {
    for (const item of (jobs as { items: unknown[] }).items) {
      if (!isMap(item)) continue;
      for (const key of ["depends_on", "tags", "args", "command"]) {
        const node = (item as YAMLMap).get(key, true) as { flow?: boolean; items?: unknown[] } | undefined;
        if (node && Array.isArray(node.items)) node.flow = true;
      }
    }
  }
  // Text with tabs or other control characters is double-quoted (PyYAML, which reads the file,
  // refuses some tabs in plain scalars), and the characters PyYAML reads as line breaks or
  // refuses (which the yaml package leaves as they are) are escaped; long lines are not folded.
  visit(doc, {
    Scalar(_key, node) {
      if (typeof node.value === "string" && /[\x00-\x1f\x7f-\x9f\u2028\u2029\ufeff\ufffe\uffff]/.test(node.value)) {
        node.type = "QUOTE_DOUBLE";
      }
    },
  });
  return doc.toString({ lineWidth: 0, doubleQuotedMinMultiLineLength: Number.MAX_SAFE_INTEGER, flowCollectionPadding: false, indentSeq: true })
    .replace(/[\x7f-\x9f\u2028\u2029\ufeff\ufffe\uffff]/g, (c) => "\\u" + c.charCodeAt(0).toString(16).padStart(4, "0"));
}

// ------------------------------------------------------------------------------------------
// Python

/** A Python string literal for `value`, exact: `"..."` with escapes for quotes, backslashes,
 *  control and invisible characters; other non-ASCII text is kept as it is (UTF-8 source). */
export function pyStr(value: string): string {
  let out = '"';
  for (let i = 0; i < value.length; i++) {
    const c = value[i];
    const code = value.charCodeAt(i);
    if (c === "\\") out += "\\\\";
    else if (c === '"') out += '\\"';
    else if (c === "\n") out += "\\n";
    else if (c === "\r") out += "\\r";
    else if (c === "\t") out += "\\t";
    else if (code < 0x20 || code === 0x7f || (code >= 0x80 && code < 0xa0)) out += "\\x" + code.toString(16).padStart(2, "0");
    else if (code >= 0xd800 && code <= 0xdbff && i + 1 < value.length && value.charCodeAt(i + 1) >= 0xdc00 && value.charCodeAt(i + 1) <= 0xdfff) {
      out += c + value[i + 1]; // a whole astral character (an emoji...)
      i++;
    } else if ((code >= 0xd800 && code <= 0xdfff) || code === 0xad || (code >= 0x200b && code <= 0x200f)
      || (code >= 0x2028 && code <= 0x202e) || (code >= 0x2060 && code <= 0x206f) || code === 0xfeff
      || (code >= 0xfff9 && code <= 0xfffb)) {
      out += "\\u" + code.toString(16).padStart(4, "0");
    } else out += c;
  }
  return out + '"';
}

function pyValue(value: unknown): string {
  if (value === null || value === undefined) return "None";
  if (typeof value === "boolean") return value ? "True" : "False";
  if (typeof value === "number") return Number.isFinite(value) ? String(value) : pyStr(String(value));
  if (typeof value === "string") return pyStr(value);
  if (Array.isArray(value)) return "[" + value.map(pyValue).join(", ") + "]";
  if (isRecord(value)) return "{" + Object.entries(value).map(([k, v]) => `${pyStr(k)}: ${pyValue(v)}`).join(", ") + "}";
  return pyStr(String(value));
}

/** A long literal as `(\n    "line\n"\n    "line"\n)` pieces, one per line of the text. */
function pyBlock(value: string, indent: string): string {
  const lines = value.match(/[^\n]*\n|[^\n]+$/g) ?? [""];
  if (lines.length <= 1) return pyStr(value);
  return "(\n" + lines.map((l) => indent + "    " + pyStr(l)).join("\n") + "\n" + indent + ")";
}

/** A text argument: a literal, or one piece per line when it has several lines. */
function pyText(value: unknown): string {
  return typeof value === "string" ? pyBlock(value, "    ") : pyValue(value);
}

function pyCall(head: string, args: string[]): string {
  const one = `${head}(${args.join(", ")})`;
  if (one.length <= 99 && !one.includes("\n")) return one;
  return `${head}(\n${args.map((a) => "    " + a + ",").join("\n")}\n)`;
}

// What p.job / p.script take besides the fields (the builder's keyword names).
const BUILDER_JOB_OPTIONS = new Set(["depends_on", "priority", "tags", "timeout", "retries", "delay", "env", "cwd",
  "hitl_message", "max_wait_seconds", "affinity", "type", "port", "restart", "health", "persist"]);
const BUILDER_SCRIPT_OPTIONS = new Set([...BUILDER_JOB_OPTIONS].filter((k) => !["restart", "health", "persist"].includes(k)));

export function toPython(draft: Draft): string {
  const d = draft as DraftExtra;
  const { document } = toDocument(draft);
  const jobs = document.jobs as Record<string, unknown>[];
  const name = has(d.name) ? d.name.trim() : "";
  const lines: string[] = [];
  lines.push(`# ${name || "pipeline"}: made with Titan's pipeline constructor.`);
  lines.push("# Run it with python3 to start it (the cluster as the titan command finds it).");
  lines.push("from titan.sdk import Client, Pipeline");
  lines.push("");
  const top: string[] = [pyStr(name)];
  for (const key of ["schedule", "agent_run_id", "stage", "max_jobs", "workspace"]) {
    if (document[key] !== undefined) top.push(`${key}=${pyValue(document[key])}`);
  }
  lines.push(pyCall("p = Pipeline", top));
  const unsaid: string[] = [];
  for (const key of Object.keys(document)) {
    if (!["name", "schedule", "agent_run_id", "stage", "max_jobs", "workspace", "jobs", "project", "version"].includes(key)) unsaid.push(key);
  }
  if (unsaid.length) lines.push(`# not given to Pipeline (it has no such option): ${unsaid.join(", ")}`);
  const byId = new Map<string, StepExtra>();
  for (const s of draft.steps) if (!byId.has(s.data.id)) byId.set(s.data.id, s.data as StepExtra);
  for (const job of jobs) {
    const id = str(job.id);
    const data = byId.get(id);
    const args: string[] = [pyStr(id)];
    const skipped: string[] = [];
    const later: string[] = [];
    let head = "p.job";
    if (job.gate === true) {
      head = "p.gate";
      if (job.message !== undefined) args.push(pyText(job.message));
      if (job.depends_on) args.push(`depends_on=${pyValue(job.depends_on)}`);
      if (job.timeout !== undefined) args.push(`timeout=${pyValue(job.timeout)}`);
      if (job.on_timeout !== undefined) args.push(`on_timeout=${pyValue(job.on_timeout)}`);
      for (const key of Object.keys(job)) {
        if (!["id", "gate", "message", "depends_on", "timeout", "on_timeout"].includes(key)) skipped.push(key);
      }
    } else {
      const isScript = job.file !== undefined;
      let options = BUILDER_JOB_OPTIONS;
      if (isScript) {
        head = "p.script";
        options = BUILDER_SCRIPT_OPTIONS;
        args.push(pyValue(baseName(str(job.file ?? ""))));
        args.push(pyBlock(data?.content ?? "", "    "));
        if (job.args !== undefined) {
          let list: unknown = job.args;
          if (typeof job.args === "string") {
            try { list = shlexSplit(job.args); } catch { list = job.args; } // the builder refuses it as the reader does
          }
          args.push(`args=${pyValue(list)}`);
        }
      } else {
        args.push(pyText(job.command ?? ""));
      }
      for (const [key, value] of Object.entries(job)) {
        if (["id", "file", "args", "command"].includes(key)) continue;
        if (key === "type" && value === "run") continue;
        if (options.has(key)) args.push(`${key}=${pyValue(value)}`);
        else if (BUILDER_JOB_OPTIONS.has(key)) later.push(`job.${key} = ${pyValue(value)}`);
        else skipped.push(key);
      }
    }
    const call = pyCall(head, args);
    if (later.length) {
      // p.script takes no service options: set them on the job it gives.
      lines.push("job = " + call);
      lines.push(...later);
    } else lines.push(call);
    if (skipped.length) lines.push(`# ${id}: not given to ${head} (it takes no such option): ${skipped.join(", ")}`);
  }
  lines.push("");
  lines.push('if __name__ == "__main__":');
  lines.push("    with Client() as titan:");
  lines.push(`        print(titan.submit(p))  # the run's id${has(d.schedule) ? " (here: the schedule's id)" : ""}`);
  return lines.join("\n") + "\n";
}

// ------------------------------------------------------------------------------------------
// Local checks

function kindName(kind: StepKind): string {
  return { job: "job", script: "script", service: "service", gate: "gate" }[kind] ?? kind;
}

export function checkLocal(draft: Draft): Problem[] {
  const problems: Problem[] = [];
  const add = (step: string | null, key: string | null, message: string) => problems.push({ step, key, message });
  const d = draft as DraftExtra;
  if (!has(d.name)) add(null, "name", "the pipeline needs a name");
  else if (!NAME.test(d.name.trim())) add(null, "name", `name must be letters, digits, '_', '.' or '-', not '${d.name.trim()}'`);
  if (has(d.agent_run_id) && !NAME.test(d.agent_run_id!.trim())) {
    add(null, "agent_run_id", `agent_run_id must be letters, digits, '_', '.' or '-', not '${d.agent_run_id!.trim()}'`);
  }
  if (has(d.schedule) && ![5, 6].includes(d.schedule!.trim().split(/\s+/).length)) {
    add(null, "schedule", `schedule must be a cron expression of 5 or 6 fields, not '${d.schedule!.trim()}'`);
  }
  if (!draft.steps.length) add(null, "jobs", "a pipeline needs at least one step");
  const count = new Map<string, number>();
  for (const s of draft.steps) count.set(s.data.id, (count.get(s.data.id) ?? 0) + 1);
  draft.steps.forEach((step, i) => {
    const data = step.data;
    const id = data.id;
    const what = kindName(data.kind);
    if (!id || !id.trim()) add(id ?? "", "id", `step ${i + 1} (a ${what}) has no id`);
    else if (!NAME.test(id)) add(id, "id", `${what} id must be letters, digits, '_', '.' or '-', not '${id}'`);
    if (id && (count.get(id) ?? 0) > 1) add(id, "id", `id '${id}' is used by ${count.get(id)} steps`);
    const label = id ? `${what} '${id}'` : `step ${i + 1}`;
    if ((data.kind === "job" || data.kind === "service") && !has(data.command) && !runsFile(data)) add(id, "command", `${label} has no command`);
    if (runsFile(data)) {
      if (!has(data.file)) add(id, "file", `${label} has no file name`);
      else {
        const name = data.file!.trim();
        const base = baseName(name);
        if (name.endsWith("/") || base === "." || base === "..") add(id, "file", `${label}: file must name a file, not '${name}'`);
      }
    }
    for (const key of ["command", "args"] as const) {
      if ((key === "args" ? runsFile(data) : data.kind !== "gate" && !runsFile(data)) && has(data[key])) {
        try { shlexSplit(data[key]!); } catch (e) { add(id, key, `${label}: ${key} cannot be split like a shell: ${(e as Error).message}`); }
      }
    }
    if (data.kind !== "gate") {
      if (has(data.priority) && typeof whole(data.priority!) !== "number") add(id, "priority", `${label}: priority must be a whole number, not '${data.priority!.trim()}'`);
      if (has(data.retries)) {
        const r = whole(data.retries!);
        if (typeof r !== "number" || r < 0) add(id, "retries", `${label}: retries must be a whole number, 0 or more, not '${data.retries!.trim()}'`);
      }
      for (const key of ["timeout", "delay"] as const) {
        if (!has(data[key])) continue;
        const s = durationSeconds(data[key]!);
        if (s === null) add(id, key, `${label}: ${key} must be a number of seconds or a duration like '500ms', '2s', '5m', '1h', not '${data[key]!.trim()}'`);
        else if (s < 0 || (s === 0 && key === "timeout")) add(id, key, `${label}: ${key} must be ${key === "delay" ? "0 or more" : "more than 0"} seconds`);
      }
      if (has(data.env)) {
        data.env!.split("\n").forEach((line, n) => {
          if (line.trim() && (line.indexOf("=") <= 0 || !line.slice(0, line.indexOf("=")).trim())) {
            add(id, "env", `${label}: env line ${n + 1} must be NAME=VALUE, not '${line.trim()}'`);
          }
        });
      }
    }
    if (data.kind === "service") {
      if (has(data.port) && /^\d+$/.test(data.port!.trim()) && Number(data.port) > 65535) {
        add(id, "port", `${label}: port must be a port number (0 to 65535), not ${data.port!.trim()}`);
      }
      if (has(data.restart) && !["on-failure", "always", "never"].includes(data.restart!.trim())) {
        add(id, "restart", `${label}: restart must be always or on-failure or never, not '${data.restart!.trim()}'`);
      }
      if (has(data.health) && data.health!.trim() !== "tcp" && !data.health!.trim().startsWith("http:")) {
        add(id, "health", `${label}: health must be tcp or http:/PATH, not '${data.health!.trim()}'`);
      }
    }
    if (data.kind === "gate" && has(data.gate_timeout)) {
      const s = durationSeconds(data.gate_timeout!);
      if (s === null || s <= 0) add(id, "gate_timeout", `${label}: timeout must be a duration of more than 0 seconds, like '30m' or '4h', not '${data.gate_timeout!.trim()}'`);
    }
  });
  const ids = new Set(draft.steps.map((s) => s.data.id));
  for (const e of draft.edges) {
    if (!ids.has(e.target)) add(e.target, "depends_on", `an edge from '${e.source}' goes to '${e.target}', which is not a step`);
    else if (!ids.has(e.source)) add(e.target, "depends_on", `'${e.target}' depends on '${e.source}', which is not a step`);
    else if (e.source === e.target) add(e.target, "depends_on", `'${e.target}' depends on itself`);
  }
  const cycle = findCycle(draft);
  if (cycle) add(cycle[0], "depends_on", `cycle: ${cycle.join(" -> ")}`);
  return problems;
}

/** One cycle of the draft's edges, in run order, ending where it starts; null if none. */
export function findCycle(draft: Draft): string[] | null {
  for (const e of draft.edges) {
    if (e.source === e.target) continue;
    const path = findPath(draft, e.target, e.source);
    if (!path) continue;
    // Start at the step that comes first in the draft, as the master's message does.
    const first = draft.steps.map((s) => s.data.id);
    const rank = (id: string) => { const i = first.indexOf(id); return i < 0 ? first.length : i; };
    let start = 0;
    path.forEach((id, i) => { if (rank(id) < rank(path[start])) start = i; });
    const cycle = [...path.slice(start), ...path.slice(0, start)];
    return [...cycle, cycle[0]];
  }
  return null;
}

// ------------------------------------------------------------------------------------------
// Layout, ids, drafts

export function layout(draft: Draft, direction: "LR" | "TB" = "LR"): Draft {
  const g = new dagre.graphlib.Graph({ multigraph: false });
  g.setGraph({ rankdir: direction, nodesep: direction === "LR" ? 24 : 36, ranksep: direction === "LR" ? 72 : 56, marginx: 16, marginy: 16 });
  g.setDefaultEdgeLabel(() => ({}));
  const keys = new Map<string, string[]>();
  draft.steps.forEach((s, i) => {
    const key = "n" + i;
    g.setNode(key, { width: NODE_W, height: NODE_H });
    if (!keys.has(s.data.id)) keys.set(s.data.id, []);
    keys.get(s.data.id)!.push(key);
  });
  for (const e of draft.edges) {
    for (const s of keys.get(e.source) ?? []) {
      for (const t of keys.get(e.target) ?? []) if (s !== t) g.setEdge(s, t);
    }
  }
  dagre.layout(g);
  const steps = draft.steps.map((s, i) => {
    const p = g.node("n" + i);
    return { ...s, position: { x: Math.round(p.x - NODE_W / 2), y: Math.round(p.y - NODE_H / 2) } };
  });
  return { ...draft, steps };
}

export function freshId(draft: Draft, kind: StepKind): string {
  const used = new Set(draft.steps.map((s) => s.data.id));
  for (let n = 1; ; n++) if (!used.has(`${kind}-${n}`)) return `${kind}-${n}`;
}

export function emptyDraft(name?: string): Draft {
  return { name: name ?? "pipeline", steps: [], edges: [] };
}

/** A copy of `id` not used in the draft (nor in `taken`): load-2, load-3, ... */
function copyId(id: string, used: Set<string>): string {
  const base = id.replace(/-\d+$/, "") || "step";
  for (let n = 2; ; n++) if (!used.has(`${base}-${n}`)) return `${base}-${n}`;
}

/**
 * Paste (or duplicate) steps: copies with fresh ids, moved by `offset`, and the edges among
 * them (edges to steps outside the copied set are dropped). Returns the new draft and the new
 * ids (to select them).
 */
export function pasteSteps(draft: Draft, steps: Step[], edges: Edge[] = [], offset = 32): { draft: Draft; ids: string[] } {
  const used = new Set(draft.steps.map((s) => s.data.id));
  const renamed = new Map<string, string>();
  const added: Step[] = [];
  for (const s of steps) {
    const id = used.has(s.data.id) || !s.data.id ? copyId(s.data.id, used) : s.data.id;
    used.add(id);
    if (!renamed.has(s.data.id)) renamed.set(s.data.id, id);
    added.push({ data: { ...structuredClone(s.data), id }, position: { x: s.position.x + offset, y: s.position.y + offset } });
  }
  const newEdges: Edge[] = [];
  for (const e of edges) {
    const source = renamed.get(e.source);
    const target = renamed.get(e.target);
    if (source && target && !newEdges.some((x) => x.source === source && x.target === target)) newEdges.push({ source, target });
  }
  return { draft: { ...draft, steps: [...draft.steps, ...added], edges: [...draft.edges, ...newEdges] }, ids: added.map((s) => s.data.id) };
}

/** Undo/redo: every edit pushes the new state; undo/redo move along, a push after undo drops
 *  what could have been redone. At most `limit` states to go back to. */
export class History<T> {
  private past: T[] = [];
  private future: T[] = [];
  private now: T;
  readonly limit: number;

  constructor(initial: T, limit = 200) {
    this.now = initial;
    this.limit = Math.max(1, limit);
  }

  get current(): T {
    return this.now;
  }

  get canUndo(): boolean {
    return this.past.length > 0;
  }

  get canRedo(): boolean {
    return this.future.length > 0;
  }

  push(next: T): void {
    this.past.push(this.now);
    if (this.past.length > this.limit) this.past.splice(0, this.past.length - this.limit);
    this.now = next;
    this.future = [];
  }

  undo(): T | null {
    const prev = this.past.pop();
    if (prev === undefined) return null;
    this.future.push(this.now);
    this.now = prev;
    return prev;
  }

  redo(): T | null {
    const next = this.future.pop();
    if (next === undefined) return null;
    this.past.push(this.now);
    this.now = next;
    return next;
  }
}

export const model: ModelApi = {
  toDocument,
  fromDocument,
  toYaml,
  toPython,
  wouldCycle,
  checkLocal,
  layout,
  freshId,
};
