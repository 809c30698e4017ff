// "New pipeline" (issue 18): draw a DAG on a React Flow canvas, configure each step, check it
// with the master's own parser as you type, undo anything, import YAML, export YAML and Python,
// deploy it in one click. The draft is autosaved on the master (/api/v1/drafts), and the page's
// URL names it (/new?draft=NAME), so a reload, another browser or a master restart finds it.
// /new?from=RUN_ID starts from a run's pipeline ("Edit a copy" on the run page).
//
// State: the draft (the model's Draft) is the one truth; the canvas's nodes and edges are drawn
// from it. Every edit goes through `edit()`, which records it in the model's History (typing in a
// field is one step per burst; a drag is one step when it ends).
import { useCallback, useEffect, useMemo, useRef, useState } from "react";
import { Link, useNavigate, useSearchParams } from "react-router";
import {
  Background, Controls, MarkerType, MiniMap, Panel, ReactFlow, ReactFlowProvider, useReactFlow,
  type Connection, type Edge as FlowEdge, type EdgeChange, type NodeChange,
} from "@xyflow/react";
import "@xyflow/react/dist/style.css";
import { api, currentRole, seg } from "../api";
import { message as errorText } from "../common";
import { History, NODE_H, NODE_W, cyclePath, emptyDraft, model, pasteSteps } from "../constructor/model";
import type { Draft, Edge, Problem, Step, StepData, StepKind } from "../constructor/types";
import { NODE_TYPES, type StepFlowNode } from "../constructor/StepNode";
import { DRAG_TYPE, Palette } from "../constructor/Palette";
import { PipelineProperties, StepProperties } from "../constructor/Properties";
import { ExportPanel } from "../constructor/ExportPanel";
import { ImportDialog } from "../constructor/ImportDialog";
import { Drafts } from "../constructor/Drafts";
import { DRAFT_NAME, PipelineError, draftSlug, http, type DraftInfo } from "../constructor/http";
import "../constructor/constructor.css";

const ARROW = "\u2192";
const edgeId = (e: Edge) => e.source + ARROW + e.target;

interface Selection { steps: number[]; edges: string[] }
const NOTHING: Selection = { steps: [], edges: [] };

type SaveState = "new" | "saving" | "saved" | "error";

/** The canvas key of each step: its id, or (a duplicate or empty id) one of its own. */
function nodeKeys(steps: Step[]): string[] {
  const seen = new Set<string>();
  return steps.map((s, i) => {
    const id = s.data.id;
    if (id && !seen.has(id)) { seen.add(id); return id; }
    return `\u0000${i}`;
  });
}

function sameProblem(a: Problem, b: Problem): boolean {
  return (a.step ?? null) === (b.step ?? null) && (a.key ?? null) === (b.key ?? null) && a.message === b.message;
}

function isField(target: EventTarget | null): boolean {
  const el = target as HTMLElement | null;
  if (!el || !el.tagName) return false;
  return el.isContentEditable || ["INPUT", "TEXTAREA", "SELECT"].includes(el.tagName);
}

function Editor() {
  const flow = useReactFlow();
  const navigate = useNavigate();
  const [params, setParams] = useSearchParams();
  const viewer = currentRole() === "viewer";

  // -- the draft and its history --------------------------------------------------------
  const [draft, setDraftState] = useState<Draft>(() => emptyDraft());
  const draftRef = useRef(draft);
  const hist = useRef(new History<Draft>(draft));
  const burst = useRef<{ key: string; timer: number } | null>(null);
  const dirty = useRef(false);
  const loads = useRef(0); // drafts loaded so far: a save that started before a load is stale
  const [, setTick] = useState(0);
  const [selection, setSelection] = useState<Selection>(NOTHING);
  const selectionRef = useRef(selection);
  selectionRef.current = selection;
  const [note, setNote] = useState<{ text: string; kind: "info" | "bad"; n: number } | null>(null);

  const show = useCallback((draftNext: Draft) => { draftRef.current = draftNext; setDraftState(draftNext); }, []);
  const say = useCallback((text: string, kind: "info" | "bad" = "info") =>
    setNote((old) => ({ text, kind, n: (old?.n ?? 0) + 1 })), []);

  /** Ends a burst of typing: what it typed becomes one step of the history. */
  const flush = useCallback(() => {
    const b = burst.current;
    if (!b) return;
    window.clearTimeout(b.timer);
    burst.current = null;
    hist.current.push(draftRef.current);
    setTick((t) => t + 1);
  }, []);

  /** Every edit: recorded in the history (`coalesce`: one step for a burst on the same field). */
  const edit = useCallback((next: Draft, coalesce?: string) => {
    dirty.current = true;
    if (coalesce && burst.current?.key === coalesce) {
      window.clearTimeout(burst.current.timer);
      burst.current.timer = window.setTimeout(flush, 1000);
      show(next);
      return;
    }
    flush();
    if (coalesce) {
      burst.current = { key: coalesce, timer: window.setTimeout(flush, 1000) };
      show(next);
      return;
    }
    hist.current.push(next);
    show(next);
    setTick((t) => t + 1);
  }, [flush, show]);

  /** A draft loaded (a new one, a saved one, a run's): a history of its own, nothing to save. */
  const resetTo = useCallback((d: Draft) => {
    loads.current += 1;
    if (burst.current) { window.clearTimeout(burst.current.timer); burst.current = null; }
    hist.current = new History<Draft>(d);
    dirty.current = false;
    show(d);
    setSelection(NOTHING);
    setTick((t) => t + 1);
    // (never on an empty canvas: React Flow would keep the fit for the first step dropped)
    if (d.steps.length) window.setTimeout(() => flow.fitView({ padding: 0.2, maxZoom: 1.1, duration: 150 }), 60);
  }, [flow, show]);

  const fitSoon = useCallback(() => {
    window.setTimeout(() => {
      if (draftRef.current.steps.length) flow.fitView({ padding: 0.2, maxZoom: 1.1, duration: 200 });
    }, 60);
  }, [flow]);

  // Undo and redo: the pending edit recorded first, then the draft `move` gives shown,
  // with the selection kept to the steps it still has.
  const travel = useCallback((move: (h: History<Draft>) => Draft | null | undefined) => {
    flush();
    const d = move(hist.current);
    if (!d) return;
    dirty.current = true;
    show(d);
    setSelection((s) => ({ steps: s.steps.filter((i) => i < d.steps.length), edges: [] }));
    setTick((t) => t + 1);
  }, [flush, show]);
  const undo = useCallback(() => travel((h) => h.undo()), [travel]);
  const redo = useCallback(() => travel((h) => h.redo()), [travel]);

  // -- steps ------------------------------------------------------------------------------
  const keys = useMemo(() => nodeKeys(draft.steps), [draft.steps]);
  const keyIndex = useMemo(() => new Map(keys.map((k, i) => [k, i])), [keys]);
  const idKey = useMemo(() => {
    const m = new Map<string, string>();
    draft.steps.forEach((s, i) => { if (!m.has(s.data.id)) m.set(s.data.id, keys[i]); });
    return m;
  }, [draft.steps, keys]);

  const addStep = useCallback((kind: StepKind, at?: { x: number; y: number }) => {
    const d = draftRef.current;
    const id = model.freshId(d, kind);
    let position = at;
    let fit = false;
    if (!position) {
      // Beside the last step if there is room in view, else the first free place in view.
      const box = document.querySelector("[data-testid=constructor-canvas]")?.getBoundingClientRect();
      const tl = box ? flow.screenToFlowPosition({ x: box.left + 24, y: box.top + 56 }) : { x: 0, y: 0 };
      const br = box ? flow.screenToFlowPosition({ x: box.right - 24, y: box.bottom - 24 }) : { x: 800, y: 500 };
      const inView = (p: { x: number; y: number }) =>
        p.x >= tl.x && p.y >= tl.y && p.x + NODE_W <= br.x && p.y + NODE_H <= br.y;
      const free = (p: { x: number; y: number }) => inView(p) && !d.steps.some((s) =>
        Math.abs(s.position.x - p.x) < NODE_W + 20 && Math.abs(s.position.y - p.y) < NODE_H + 16);
      const tries: { x: number; y: number }[] = [];
      if (d.steps.length === 0) tries.push({ x: (tl.x + br.x - NODE_W) / 2, y: (tl.y + br.y - NODE_H) / 2 });
      else {
        const last = d.steps[d.steps.length - 1].position;
        tries.push({ x: last.x + NODE_W + 50, y: last.y }, { x: last.x, y: last.y + NODE_H + 30 });
      }
      for (let y = tl.y; y + NODE_H <= br.y; y += NODE_H + 30) {
        for (let x = tl.x; x + NODE_W <= br.x; x += NODE_W + 50) tries.push({ x, y });
      }
      position = tries.find(free);
      if (!position) {
        fit = true;
        const right = Math.max(...d.steps.map((s) => s.position.x));
        position = { x: right + NODE_W + 50, y: d.steps[d.steps.length - 1]?.position.y ?? 0 };
      }
      position = { x: Math.round(position.x / 10) * 10, y: Math.round(position.y / 10) * 10 };
    }
    const data: StepData = { id, kind };
    const next = { ...d, steps: [...d.steps, { data, position }] };
    edit(next);
    setSelection({ steps: [next.steps.length - 1], edges: [] });
    if (fit) window.setTimeout(() => flow.fitView({ padding: 0.2, maxZoom: 1.1, duration: 150 }), 120);
  }, [edit, flow]);

  const deleteSelection = useCallback(() => {
    const d = draftRef.current;
    const gone = new Set(selection.steps);
    const goneIds = new Set(d.steps.filter((_, i) => gone.has(i)).map((s) => s.data.id));
    const goneEdges = new Set(selection.edges);
    if (!gone.size && !goneEdges.size) { say("select a step or an edge to delete it"); return; }
    const steps = d.steps.filter((_, i) => !gone.has(i));
    const left = new Set(steps.map((s) => s.data.id));
    const edges = d.edges.filter((e) => !goneEdges.has(edgeId(e))
      && !(goneIds.has(e.source) && !left.has(e.source)) && !(goneIds.has(e.target) && !left.has(e.target)));
    edit({ ...d, steps, edges });
    setSelection(NOTHING);
  }, [edit, say, selection]);

  const clipboard = useRef<{ steps: Step[]; edges: Edge[] } | null>(null);

  const copy = useCallback(() => {
    const d = draftRef.current;
    const steps = selection.steps.map((i) => d.steps[i]).filter(Boolean);
    if (!steps.length) return false;
    const ids = new Set(steps.map((s) => s.data.id));
    clipboard.current = { steps, edges: d.edges.filter((e) => ids.has(e.source) && ids.has(e.target)) };
    say(`copied ${steps.length} step${steps.length === 1 ? "" : "s"}`);
    return true;
  }, [say, selection.steps]);

  const paste = useCallback(() => {
    const clip = clipboard.current;
    if (!clip) return;
    const d = draftRef.current;
    const { draft: next, ids } = pasteSteps(d, clip.steps, clip.edges, 40);
    edit(next);
    const added = ids.map((_, k) => d.steps.length + k);
    setSelection({ steps: added, edges: [] });
    // pasting again pastes beside these
    const names = new Set(ids);
    clipboard.current = {
      steps: added.map((i) => next.steps[i]),
      edges: next.edges.filter((e) => names.has(e.source) && names.has(e.target)),
    };
  }, [edit]);

  const duplicate = useCallback(() => {
    if (copy()) paste();
    else say("select the steps to duplicate");
  }, [copy, paste, say]);

  const changeStep = useCallback((index: number, key: keyof StepData, value: string | boolean | undefined) => {
    const d = draftRef.current;
    const step = d.steps[index];
    if (!step) return;
    const data = { ...step.data, [key]: value === "" ? undefined : value } as StepData;
    if (key === "id") data.id = String(value ?? "");
    let edges = d.edges;
    if (key === "id") {
      const old = step.data.id;
      const twin = d.steps.some((s, i) => i !== index && s.data.id === old);
      if (!twin) {
        edges = d.edges.map((e) => ({
          source: e.source === old ? data.id : e.source,
          target: e.target === old ? data.id : e.target,
        }));
      }
    }
    const steps = d.steps.slice();
    steps[index] = { ...step, data };
    edit({ ...d, steps, edges }, `${index}.${key}`);
  }, [edit]);

  const changePipeline = useCallback((key: "name" | "schedule" | "agent_run_id" | "stage", value: string) => {
    const d = draftRef.current;
    edit({ ...d, [key]: key === "name" ? value : value || undefined }, "pipeline." + key);
  }, [edit]);

  // -- the canvas ---------------------------------------------------------------------------
  const localProblems = useMemo(() => model.checkLocal(draft), [draft]);
  const [remoteProblems, setRemoteProblems] = useState<Problem[]>([]);
  const problems = useMemo(() => {
    if (!draft.steps.length) return []; // the empty canvas says what to do
    // The master's word wins: a local problem is shown only where the master named none for
    // the same step and key (it says the same, in the words `titan run` prints).
    const named = new Set(remoteProblems.map((p) => `${p.step ?? ""}\u0000${p.key ?? ""}`));
    const out = localProblems.filter((p) => !named.has(`${p.step ?? ""}\u0000${p.key ?? ""}`));
    for (const p of remoteProblems) if (!out.some((q) => sameProblem(p, q))) out.push(p);
    return out;
  }, [draft.steps.length, localProblems, remoteProblems]);
  const byStep = useMemo(() => {
    const m = new Map<string, string[]>();
    for (const p of problems) {
      if (p.step == null) continue;
      m.set(p.step, [...(m.get(p.step) ?? []), (p.key ? p.key + ": " : "") + p.message]);
    }
    return m;
  }, [problems]);

  const selectedSteps = useMemo(() => new Set(selection.steps), [selection.steps]);
  const selectedEdges = useMemo(() => new Set(selection.edges), [selection.edges]);

  const made = useRef(new Map<string, StepFlowNode>());
  const nodes: StepFlowNode[] = useMemo(() => {
    const next = new Map<string, StepFlowNode>();
    const out = draft.steps.map((s, i) => {
      const key = keys[i];
      const probs = byStep.get(s.data.id) ?? [];
      const selected = selectedSteps.has(i);
      const old = made.current.get(key);
      const node = old && old.data.step === s.data && old.position === s.position && old.selected === selected
        && old.data.problems.join("\n") === probs.join("\n") ? old : {
          id: key, type: "step" as const, position: s.position, width: NODE_W, height: NODE_H,
          data: { step: s.data, problems: probs }, selected,
        };
      next.set(key, node);
      return node;
    });
    made.current = next;
    return out;
  }, [draft.steps, keys, byStep, selectedSteps]);

  const edges: FlowEdge[] = useMemo(() => draft.edges.flatMap((e) => {
    const source = idKey.get(e.source);
    const target = idKey.get(e.target);
    if (source === undefined || target === undefined) return [];
    const id = edgeId(e);
    const selected = selectedEdges.has(id);
    const colour = selected ? "#3b5bdb" : "#8a94a6";
    return [{
      id, source, target, selected, type: "smoothstep",
      markerEnd: { type: MarkerType.ArrowClosed, width: 16, height: 16, color: colour },
      style: { stroke: colour, strokeWidth: selected ? 2.4 : 1.6 },
      interactionWidth: 16,
    }];
  }), [draft.edges, idKey, selectedEdges]);

  const onNodesChange = useCallback((changes: NodeChange<StepFlowNode>[]) => {
    let d = draftRef.current;
    let moved = false;
    let sel: Selection | null = null;
    for (const c of changes) {
      if (c.type === "position" && c.position) {
        const i = keyIndex.get(c.id);
        if (i === undefined) continue;
        const steps = (moved ? d.steps : d.steps.slice());
        steps[i] = { ...steps[i], position: c.position };
        d = { ...d, steps };
        moved = true;
      } else if (c.type === "select") {
        const i = keyIndex.get(c.id);
        if (i === undefined) continue;
        sel = sel ?? { ...selectionRef.current };
        sel.steps = c.selected ? [...sel.steps.filter((x) => x !== i), i] : sel.steps.filter((x) => x !== i);
      }
    }
    if (moved) { flush(); show(d); }
    if (sel) { selectionRef.current = sel; setSelection(sel); }
  }, [flush, keyIndex, show]);

  const onEdgesChange = useCallback((changes: EdgeChange<FlowEdge>[]) => {
    let sel: Selection | null = null;
    for (const c of changes) {
      if (c.type !== "select") continue;
      sel = sel ?? { ...selectionRef.current };
      sel.edges = c.selected ? [...sel.edges.filter((x) => x !== c.id), c.id] : sel.edges.filter((x) => x !== c.id);
    }
    if (sel) { selectionRef.current = sel; setSelection(sel); }
  }, []);

  const onDragStop = useCallback(() => {
    const d = draftRef.current;
    if (d !== hist.current.current) {
      dirty.current = true;
      hist.current.push(d);
      setTick((t) => t + 1);
    }
  }, []);

  const onConnect = useCallback((c: Connection) => {
    const d = draftRef.current;
    const si = keyIndex.get(c.source);
    const ti = keyIndex.get(c.target);
    if (si === undefined || ti === undefined) return;
    const source = d.steps[si].data.id;
    const target = d.steps[ti].data.id;
    if (source === target) { say(`${source} -> ${target}: a step cannot depend on itself: refused`, "bad"); return; }
    if (d.edges.some((e) => e.source === source && e.target === target)) {
      say(`${source} -> ${target} is there already`, "bad");
      return;
    }
    if (model.wouldCycle(d, source, target)) {
      const path = cyclePath(d, source, target);
      const cycle = path ? path.join(" -> ") : `${target} -> … -> ${source} -> ${target}`;
      say(`${source} -> ${target} would close a cycle ${cycle}: refused`, "bad");
      return;
    }
    edit({ ...d, edges: [...d.edges, { source, target }] });
    say(`${target} now runs after ${source}`);
  }, [edit, keyIndex, say]);

  const onDrop = useCallback((e: React.DragEvent) => {
    const kind = (e.dataTransfer.getData(DRAG_TYPE) || e.dataTransfer.getData("text/plain")) as StepKind;
    if (!["job", "script", "service", "gate"].includes(kind)) return;
    e.preventDefault();
    const p = flow.screenToFlowPosition({ x: e.clientX, y: e.clientY });
    addStep(kind, { x: p.x - NODE_W / 2, y: p.y - NODE_H / 2 });
  }, [addStep, flow]);

  const layout = useCallback(() => {
    edit(model.layout(draftRef.current, "LR"));
    fitSoon();
  }, [edit, fitSoon]);

  // -- checks by the master: POST /api/v1/pipelines/validate, debounced, latest answer wins --
  const docText = useMemo(() => (draft.steps.length ? JSON.stringify(model.toDocument(draft)) : ""), [draft]);
  const validation = useRef(0);
  useEffect(() => {
    const mine = ++validation.current;
    if (!docText) { setRemoteProblems([]); return; }
    const t = window.setTimeout(() => {
      http.post<{ ok: boolean; problems: Problem[] }>("/pipelines/validate", JSON.parse(docText)).then(
        (r) => { if (mine === validation.current) setRemoteProblems(r.problems ?? []); },
        (e) => {
          if (mine !== validation.current) return;
          const ps = e instanceof PipelineError && e.problems.length ? e.problems
            : [{ step: null, key: null, message: "the master could not check it: " + errorText(e) }];
          setRemoteProblems(ps);
        });
    }, 300);
    return () => window.clearTimeout(t);
  }, [docText]);

  // -- drafts on the master ---------------------------------------------------------------
  const [drafts, setDrafts] = useState<DraftInfo[] | null>(null);
  const [draftName, setDraftName] = useState("");
  const [nameTouched, setNameTouched] = useState(false);
  const savedAs = useRef<string | null>(null);
  const [saveState, setSaveState] = useState<SaveState>("new");
  const [saveError, setSaveError] = useState("");
  const saveSeq = useRef(0);

  const loadDrafts = useCallback(() => http.get<{ drafts: DraftInfo[] }>("/drafts").then(
    (r) => { setDrafts(r.drafts); return r.drafts; },
    () => { setDrafts((old) => old ?? []); return [] as DraftInfo[]; }), []);
  useEffect(() => { void loadDrafts(); }, [loadDrafts]);

  /** The name the draft is saved under when the user has not named it: the pipeline's. */
  const autoName = useCallback((taken: DraftInfo[] | null, pipeline: string) => {
    const base = draftSlug(pipeline || "pipeline");
    const mine = savedAs.current;
    if (mine && (mine === base || new RegExp("^" + base.replace(/[.]/g, "\\.") + "-\\d+$").test(mine))) return mine;
    if (!taken) return base;
    const names = new Set(taken.map((d) => d.name).filter((n) => n !== mine));
    if (!names.has(base)) return base;
    for (let n = 2; ; n++) if (!names.has(`${base}-${n}`)) return `${base}-${n}`.slice(0, 100);
  }, []);

  const shownName = nameTouched ? draftName : autoName(drafts, draft.name);

  // What a save writes is taken when it starts: the page may have moved on to another draft
  // (`loads`, counted by resetTo) by the time the master answers.
  const mounted = useRef(true);
  useEffect(() => { mounted.current = true; return () => { mounted.current = false; }; }, []);
  const pendingSave = useRef(false);

  const save = useCallback(async (seq: number) => {
    pendingSave.current = false;
    const mine = loads.current;
    const snapshot = draftRef.current;
    const prior = savedAs.current;
    const name = nameTouched ? draftName.trim()
      : autoName(drafts ?? await loadDrafts(), snapshot.name);
    if (!DRAFT_NAME.test(name)) {
      if (mine === loads.current) {
        setSaveState("error");
        setSaveError("a draft's name is 1-100 letters, digits, _ . -");
      }
      return;
    }
    try {
      await http.put(`/drafts/${seg(name)}`, { draft: snapshot });
      // renamed: the draft is under its new name only
      if (prior && prior !== name) await http.del(`/drafts/${seg(prior)}`).catch(() => undefined);
      if (mine !== loads.current || !mounted.current) return;
      savedAs.current = name;
      if (seq === saveSeq.current) { setSaveState("saved"); setSaveError(""); }
      if (new URLSearchParams(window.location.search).get("draft") !== name) {
        setParams({ draft: name }, { replace: true });
      }
      void loadDrafts();
    } catch (e) {
      if (seq === saveSeq.current && mine === loads.current) {
        setSaveState("error");
        setSaveError(errorText(e));
      }
    }
  }, [autoName, draftName, drafts, loadDrafts, nameTouched, setParams]);

  const saveRef = useRef(save);
  saveRef.current = save;
  useEffect(() => {
    if (!dirty.current || viewer) return;
    const seq = ++saveSeq.current;
    pendingSave.current = true;
    setSaveState("saving");
    const t = window.setTimeout(() => { void saveRef.current(seq); }, 800);
    return () => window.clearTimeout(t);
  }, [draft, draftName, nameTouched, viewer]);

  /** Saves now what waits for its autosave (before the page shows another draft, or goes). */
  const saveNow = useCallback(() => {
    if (pendingSave.current) void saveRef.current(saveSeq.current);
  }, []);
  useEffect(() => () => saveNow(), [saveNow]);

  // -- what the URL names: a draft, a run to copy, or a new pipeline -------------------------
  const [loadError, setLoadError] = useState("");
  const wantDraft = params.get("draft");
  const wantRun = params.get("from");
  useEffect(() => {
    if (wantDraft && wantDraft === savedAs.current) return; // our own autosave named it
    saveNow();
    let stopped = false;
    setLoadError("");
    if (wantDraft) {
      http.get<{ name: string; draft: Draft }>(`/drafts/${seg(wantDraft)}`).then((r) => {
        if (stopped) return;
        savedAs.current = r.name;
        setDraftName(r.name);
        setNameTouched(true);
        setSaveState("saved");
        resetTo({ ...emptyDraft(), ...r.draft, steps: r.draft?.steps ?? [], edges: r.draft?.edges ?? [] });
      }, (e) => { if (!stopped) setLoadError(`draft ${wantDraft}: ${errorText(e)}`); });
    } else if (wantRun) {
      http.get<{ document: Record<string, unknown>; files: Record<string, string> }>(`/runs/${seg(wantRun)}/pipeline`).then((r) => {
        if (stopped) return;
        savedAs.current = null;
        setNameTouched(false);
        setSaveState("new");
        resetTo(model.fromDocument(r.document, r.files ?? {}));
        say(`a copy of run ${wantRun}: edit it, then Deploy (it is saved as a draft once you change it)`);
      }, (e) => { if (!stopped) setLoadError(`run ${wantRun}: ${errorText(e)}`); });
    } else {
      savedAs.current = null;
      setNameTouched(false);
      setDraftName("");
      setSaveState("new");
      resetTo(emptyDraft());
    }
    return () => { stopped = true; };
  }, [wantDraft, wantRun, resetTo, say, saveNow]);

  const openDraft = (name: string) => { flush(); saveNow(); navigate(`/new?draft=${encodeURIComponent(name)}`); };
  const newDraft = () => {
    flush();
    saveNow();
    if (params.get("draft") || params.get("from")) navigate("/new");
    else {
      savedAs.current = null;
      setNameTouched(false);
      setSaveState("new");
      resetTo(emptyDraft());
    }
  };
  const deleteDraft = async (name: string) => {
    try {
      await http.del(`/drafts/${seg(name)}`);
      say(`draft ${name} deleted`);
      if (name === savedAs.current) {
        savedAs.current = null;
        newDraft();
      }
    } catch (e) {
      say(`draft ${name}: ${errorText(e)}`, "bad");
    }
    void loadDrafts();
  };

  // -- import, export, deploy -------------------------------------------------------------
  const [importing, setImporting] = useState(false);
  const [dropping, setDropping] = useState(false);
  const [exporting, setExporting] = useState(false);
  const [deploying, setDeploying] = useState(false);

  const importYaml = async (yaml: string, files: Record<string, string>) => {
    const r = await http.post<{ document: Record<string, unknown>; files: Record<string, string> }>(
      "/pipelines/parse", { yaml, files });
    const d = model.fromDocument(r.document, r.files ?? {});
    edit(d);
    setSelection(NOTHING);
    setImporting(false);
    say(`imported ${d.steps.length} step${d.steps.length === 1 ? "" : "s"} and ${d.edges.length} edge${d.edges.length === 1 ? "" : "s"} (Ctrl+Z to undo)`);
    fitSoon();
  };

  const deploy = async () => {
    flush();
    saveNow();
    setDeploying(true);
    try {
      const r = await http.post<{ run_id?: string; schedule_id?: string }>("/pipelines", model.toDocument(draftRef.current));
      if (r.run_id) navigate("/runs/" + seg(r.run_id));
      else if (r.schedule_id) navigate("/schedules");
    } catch (e) {
      if (e instanceof PipelineError && e.problems.length) setRemoteProblems(e.problems);
      say("not deployed: " + errorText(e), "bad");
    } finally {
      setDeploying(false);
    }
  };

  const exported = useMemo(() => {
    if (!exporting) return null;
    try {
      return { yaml: model.toYaml(draft), python: model.toPython(draft), files: model.toDocument(draft).files, error: "" };
    } catch (e) {
      return { yaml: "", python: "", files: {}, error: errorText(e) };
    }
  }, [draft, exporting]);

  // The export panel takes room from the canvas (or gives it back): the graph is fitted again.
  const exportShown = useRef(exporting);
  useEffect(() => {
    if (exportShown.current === exporting) return;
    exportShown.current = exporting;
    fitSoon();
  }, [exporting, fitSoon]);

  // -- the keyboard ------------------------------------------------------------------------
  const keyActions = useRef({ deleteSelection, undo, redo, copy, paste, duplicate });
  keyActions.current = { deleteSelection, undo, redo, copy, paste, duplicate };
  const modal = importing;
  useEffect(() => {
    const onKey = (e: KeyboardEvent) => {
      if (modal || isField(e.target) || e.altKey) return;
      const a = keyActions.current;
      const k = e.key.toLowerCase();
      const ctrl = e.ctrlKey || e.metaKey;
      if (!ctrl && (e.key === "Delete" || e.key === "Backspace")) { e.preventDefault(); a.deleteSelection(); }
      else if (ctrl && k === "z" && !e.shiftKey) { e.preventDefault(); a.undo(); }
      else if (ctrl && ((k === "z" && e.shiftKey) || k === "y")) { e.preventDefault(); a.redo(); }
      else if (ctrl && k === "c") {
        // text selected on the page (the exported YAML, say) is the browser's to copy
        const text = window.getSelection();
        if (text && !text.isCollapsed && text.toString().trim()) return;
        if (a.copy()) e.preventDefault();
      }
      else if (ctrl && k === "v") { e.preventDefault(); a.paste(); }
      else if (ctrl && k === "d") { e.preventDefault(); a.duplicate(); }
      else if (e.key === "Escape") setSelection(NOTHING);
    };
    window.addEventListener("keydown", onKey);
    return () => window.removeEventListener("keydown", onKey);
  }, [modal]);

  // A message fades after a while.
  useEffect(() => {
    if (!note) return;
    const t = window.setTimeout(() => setNote(null), note.kind === "bad" ? 12000 : 6000);
    return () => window.clearTimeout(t);
  }, [note]);

  // Workers' names and tags: the hints of the affinity and tags fields.
  const [workers, setWorkers] = useState<{ names: string[]; tags: string[] }>({ names: [], tags: [] });
  useEffect(() => {
    api.get<{ workers: { name: string; tags: string[] }[] }>("/workers").then((r) => {
      const ws = r.workers ?? [];
      setWorkers({ names: ws.map((w) => w.name), tags: [...new Set(ws.flatMap((w) => w.tags ?? []))].sort() });
    }, () => undefined);
  }, []);

  const one = selection.steps.length === 1 && selection.edges.length === 0 ? selection.steps[0] : null;
  const step = one !== null ? draft.steps[one] : undefined;
  const pipelineProblems = problems.filter((p) => p.step == null);
  const canDelete = selection.steps.length + selection.edges.length > 0;
  const edgeOnly = selection.steps.length === 0 && selection.edges.length === 1
    ? draft.edges.find((e) => edgeId(e) === selection.edges[0]) : undefined;

  return (
    <div className="cn-page" data-testid="constructor">
      <div className="cn-toolbar">
        <h1>New pipeline</h1>
        <label className="cn-draftname" title="the draft is saved on the master under this name as you go">
          draft
          <input data-testid="draft-name" value={shownName} spellCheck={false} autoComplete="off"
            aria-invalid={!DRAFT_NAME.test(shownName) || undefined}
            onChange={(e) => { setNameTouched(true); setDraftName(e.target.value); dirty.current = true; }} />
        </label>
        <span className={"cn-saved " + saveState} data-testid="draft-saved" data-state={saveState}
          title={saveError || undefined}>
          {saveState === "saving" ? "saving…" : saveState === "saved" ? "saved"
            : saveState === "error" ? "save failed: " + saveError : viewer ? "read only" : "new draft"}
        </span>
        <span className="spacer" />
        <div className="cn-buttons">
          <button data-testid="undo" disabled={!hist.current.canUndo && !burst.current} onClick={undo} title="undo (Ctrl+Z)">↶ Undo</button>
          <button data-testid="redo" disabled={!hist.current.canRedo} onClick={redo} title="redo (Ctrl+Shift+Z, Ctrl+Y)">↷ Redo</button>
          <span className="cn-sep" />
          <button data-testid="duplicate" disabled={!selection.steps.length} onClick={duplicate} title="duplicate the selected steps (Ctrl+D)">❐ Duplicate</button>
          <button data-testid="delete" disabled={!canDelete} onClick={deleteSelection} title="delete the selection (Delete)">✕ Delete</button>
          <button data-testid="layout" disabled={!draft.steps.length} onClick={layout} title="lay the graph out left to right">⇶ Layout</button>
          <span className="cn-sep" />
          <button data-testid="import" onClick={() => setImporting(true)} title="paste or upload a YAML pipeline">Import</button>
          <button data-testid="export" className={exporting ? "on" : ""} onClick={() => setExporting((x) => !x)}
            title="the pipeline as YAML and Python">Export</button>
          <button data-testid="deploy" className="primary" disabled={deploying || viewer || !draft.steps.length}
            title={viewer ? "a viewer may not deploy" : draft.schedule ? "register its schedule" : "start a run of it"}
            onClick={deploy}>{deploying ? "Deploying…" : draft.schedule ? "▶ Deploy schedule" : "▶ Deploy"}</button>
        </div>
      </div>
      {loadError && <div className="error" role="alert" data-testid="error">{loadError}
        {" "}<Link to="/new" onClick={() => setLoadError("")}>start a new pipeline</Link></div>}
      <div className="cn-body">
        <aside className="cn-left">
          <Palette onAdd={(k) => addStep(k)} />
          <Drafts drafts={drafts} current={savedAs.current} onOpen={openDraft} onDelete={deleteDraft} onNew={newDraft} />
          <div className="cn-keys muted">
            <div className="cn-section-title">Keys</div>
            <div><kbd>Del</kbd> delete · <kbd>Ctrl</kbd>+<kbd>Z</kbd> undo · <kbd>Ctrl</kbd>+<kbd>Y</kbd> redo</div>
            <div><kbd>Ctrl</kbd>+<kbd>C</kbd>/<kbd>V</kbd> copy, paste · <kbd>Ctrl</kbd>+<kbd>D</kbd> duplicate</div>
            <div><kbd>Shift</kbd>+drag: select many</div>
          </div>
        </aside>
        <section className="cn-center">
          <div className={"cn-canvas" + (dropping ? " dropping" : "")} data-testid="constructor-canvas" data-steps={draft.steps.length}
            data-edges={draft.edges.length}
            onDragOver={(e) => { e.preventDefault(); e.dataTransfer.dropEffect = "copy"; if (!dropping) setDropping(true); }}
            onDragLeave={(e) => { if (e.currentTarget === e.target || !e.currentTarget.contains(e.relatedTarget as Node)) setDropping(false); }}
            onDrop={(e) => { setDropping(false); onDrop(e); }}>
            <ReactFlow<StepFlowNode, FlowEdge>
              nodes={nodes} edges={edges} nodeTypes={NODE_TYPES}
              onNodesChange={onNodesChange} onEdgesChange={onEdgesChange}
              onNodeDragStop={onDragStop} onSelectionDragStop={onDragStop}
              onConnect={onConnect}
              onNodeDoubleClick={() => window.setTimeout(() => {
                const first = document.querySelector<HTMLElement>(
                  "[data-testid=prop-command], [data-testid=prop-file], [data-testid=prop-message]");
                first?.focus();
              }, 30)}
              deleteKeyCode={null} autoPanOnConnect={false}
              minZoom={0.1} maxZoom={2} snapToGrid snapGrid={[10, 10]}
              defaultEdgeOptions={{ type: "smoothstep" }}
              connectionLineStyle={{ stroke: "#3b5bdb", strokeWidth: 2 }}
              proOptions={{ hideAttribution: true }}>
              <Background gap={20} size={1.2} color="#d9dee7" />
              <Controls position="bottom-left" />
              {draft.steps.length > 12 && <MiniMap pannable zoomable position="bottom-right" />}
              {note && (
                <Panel position="top-center">
                  <div className={"cn-message " + note.kind} data-testid="constructor-message" role="status">
                    {note.text}
                    <button className="link" aria-label="dismiss" onClick={() => setNote(null)}>×</button>
                  </div>
                </Panel>
              )}
            </ReactFlow>
            {draft.steps.length === 0 && (
              <div className="cn-empty-state" data-testid="constructor-empty">
                <div className="cn-empty-title">Start your pipeline</div>
                <div>Drag a <b>Job</b>, <b>Script</b>, <b>Service</b> or <b>Approval gate</b> here from the left (or click one).</div>
                <div>Connect steps from the dot on a step's right to the dot on another's left: it runs after.</div>
                <div>Or <button className="link" onClick={() => setImporting(true)}>import a YAML file</button>.</div>
              </div>
            )}
          </div>
          {exporting && exported && (exported.error
            ? <div className="error" data-testid="export-panel">cannot export: {exported.error}</div>
            : <ExportPanel name={draft.name} yaml={exported.yaml} python={exported.python} files={exported.files}
                onClose={() => setExporting(false)} />)}
        </section>
        <aside className="cn-right">
          {edgeOnly ? (
            <div className="cn-props" data-testid="edge-properties">
              <div className="cn-props-head"><b>Edge</b></div>
              <p><code>{edgeOnly.target}</code> runs after <code>{edgeOnly.source}</code> has completed.</p>
              <button className="danger" onClick={deleteSelection}>Remove this edge</button>
              <p className="cn-hint">or press Delete</p>
            </div>
          ) : step && one !== null ? (
            <StepProperties step={step.data} problems={problems.filter((p) => p.step === step.data.id)}
              onChange={(k, v) => changeStep(one, k, v)} onFieldDone={flush}
              workers={workers.names} tags={workers.tags} />
          ) : (
            <PipelineProperties draft={draft} problems={pipelineProblems} steps={draft.steps.length}
              onChange={changePipeline} onFieldDone={flush} />
          )}
          <div className="cn-problems-box">
            <div className="cn-section-title">
              {problems.length ? `Problems (${problems.length})` : "Problems"}
            </div>
            {problems.length === 0 ? (
              <div className="cn-ok muted" data-testid="problems-none">
                {draft.steps.length ? "✓ the master's parser accepts it" : "add a step to begin"}
              </div>
            ) : null}
            <ul className="cn-problems" data-testid="problems">
              {problems.map((p, i) => (
                <li key={i} data-testid="problem" data-step={p.step ?? ""} data-key={p.key ?? ""}
                  className={p.step ? "clickable" : ""}
                  title={p.step ? "select " + p.step : undefined}
                  onClick={() => {
                    if (p.step == null) { setSelection(NOTHING); return; }
                    const i2 = draftRef.current.steps.findIndex((s) => s.data.id === p.step);
                    if (i2 >= 0) setSelection({ steps: [i2], edges: [] });
                  }}>
                  {p.step ? <b>{p.step}</b> : <b>pipeline</b>}{p.key ? <span className="mono">.{p.key}</span> : null}
                  {": "}{p.message}
                </li>
              ))}
            </ul>
          </div>
        </aside>
      </div>
      {importing && <ImportDialog onImport={importYaml} onClose={() => setImporting(false)} />}
    </div>
  );
}

export function ConstructorView() {
  return (
    <ReactFlowProvider>
      <Editor />
    </ReactFlowProvider>
  );
}
