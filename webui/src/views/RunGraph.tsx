// A run's DAG drawn with React Flow, laid out by dagre. The layout is computed only when the
// set of nodes or edges changes (`structure`); a job's new state only recolours its node.
import { memo, useCallback, useEffect, useMemo, useRef, useState } from "react";
import {
  Background, Controls, Handle, MarkerType, MiniMap, Panel, Position, ReactFlow,
  ReactFlowProvider, useReactFlow, useStore, type Edge, type ReactFlowState, type Node, type NodeProps, type Viewport,
} from "@xyflow/react";
import "@xyflow/react/dist/style.css";
import dagre from "@dagrejs/dagre";
import type { Job } from "../api";
import { duration, stateClass, useNow } from "../common";
import "./RunView.css";

export const NODE_W = 196;
export const NODE_H = 50;

/** What the graph, the table and the legend show of a job: its phase, else its state. */
export function shownState(job: Job): string {
  return job.phase ?? job.state;
}

const RANK: Record<string, number> = { PENDING: 0, WAITING_APPROVAL: 1, RUNNING: 2 };

/**
 * Of a job as a REST page gave it and as an event gave it, the later: the page and the event
 * stream are two connections, so an event may overtake the page it is newer than, or not.
 * A job moves on in its attempt, then its state (ended states last).
 */
export function fresher(a: Job, b: Job): Job {
  const ka = [a.attempt ?? 0, RANK[a.state] ?? 3];
  const kb = [b.attempt ?? 0, RANK[b.state] ?? 3];
  return kb[0] > ka[0] || (kb[0] === ka[0] && kb[1] >= ka[1]) ? { ...a, ...b } : a;
}

export const LEGEND = [
  "PENDING", "DELAYED", "RETRYING", "WAITING_APPROVAL", "RUNNING", "COMPLETED", "FAILED",
  "DEAD", "CANCELLED",
] as const;

export type Direction = "LR" | "TB";

type JobNodeData = { job: Job; selected: boolean; horizontal: boolean };
type JobFlowNode = Node<JobNodeData, "job">;

function Ticking({ since }: { since: number }) {
  const now = useNow(1000);
  return <>{duration(Math.max(0, now - since))}</>;
}

export function JobDuration({ job }: { job: Job }) {
  if (!job.started_at) return null;
  if (job.finished_at) return <>{duration(job.finished_at - job.started_at)}</>;
  if (job.state === "RUNNING") return <Ticking since={job.started_at} />;
  return null;
}

const farOut = (s: ReactFlowState) => s.transform[2] < 0.3;

const JobNode = memo(function JobNode({ data }: NodeProps<JobFlowNode>) {
  const { job, selected, horizontal } = data;
  const shown = shownState(job);
  const kind = job.kind ?? "job";
  // Zoomed far out the labels cannot be read: a coloured box is drawn, much cheaper.
  const far = useStore(farOut);
  if (far) {
    return (
      <div className={`dag-node rg-node rg-far ${stateClass(shown)}${selected ? " selected" : ""}`}
        data-testid={"node-" + job.node} data-state={shown} title={`${job.node}: ${shown}`}>
        <Handle type="target" position={horizontal ? Position.Left : Position.Top} isConnectable={false} />
        <Handle type="source" position={horizontal ? Position.Right : Position.Bottom} isConnectable={false} />
      </div>
    );
  }
  return (
    <div className={`dag-node rg-node ${stateClass(shown)} kind-${kind}${selected ? " selected" : ""}`}
      data-testid={"node-" + job.node} data-state={shown}
      title={`${job.node}: ${shown}${job.reason ? ` (${job.reason})` : ""}`}>
      <Handle type="target" position={horizontal ? Position.Left : Position.Top} isConnectable={false} />
      <div className="rg-top">
        <span className="dot" />
        <span className="name">{job.node}</span>
        {kind !== "job" && <span className="rg-kind">{kind}</span>}
      </div>
      <div className="sub">
        <span className="rg-state">{shown.toLowerCase().replace("_", " ")}</span>
        {job.worker && <span className="rg-worker" title={"worker " + job.worker}>{job.worker}</span>}
        {(job.attempt ?? 0) > 1 && <span title="attempt">#{job.attempt}</span>}
        <span className="rg-dur"><JobDuration job={job} /></span>
      </div>
      <Handle type="source" position={horizontal ? Position.Right : Position.Bottom} isConnectable={false} />
    </div>
  );
});

const NODE_TYPES = { job: JobNode };

function layout(jobs: Map<string, Job>, direction: Direction): Map<string, { x: number; y: number }> {
  const g = new dagre.graphlib.Graph();
  g.setGraph({ rankdir: direction, nodesep: direction === "LR" ? 14 : 24, ranksep: direction === "LR" ? 56 : 44, marginx: 8, marginy: 8 });
  g.setDefaultEdgeLabel(() => ({}));
  for (const node of jobs.keys()) g.setNode(node, { width: NODE_W, height: NODE_H });
  for (const job of jobs.values()) {
    for (const parent of job.depends_on ?? []) if (jobs.has(parent)) g.setEdge(parent, job.node);
  }
  dagre.layout(g);
  const out = new Map<string, { x: number; y: number }>();
  for (const node of jobs.keys()) {
    const p = g.node(node);
    out.set(node, { x: p.x - NODE_W / 2, y: p.y - NODE_H / 2 });
  }
  return out;
}

function cssColour(state: string): string {
  const v = getComputedStyle(document.documentElement).getPropertyValue("--" + state.toLowerCase());
  return v.trim() || "#adb5bd";
}

export function Legend() {
  return (
    <div className="rg-legend" data-testid="legend">
      {LEGEND.map((s) => (
        <span key={s} className={"rg-legend-item " + stateClass(s)}>
          <span className="dot" />{s.toLowerCase().replace("_", " ")}
        </span>
      ))}
    </div>
  );
}

interface Props {
  jobs: Map<string, Job>;
  /** Changes when a node or an edge is added or removed: the layout is recomputed. */
  structure: number;
  selected: string | null;
  onSelect: (job: Job) => void;
}

function Graph({ jobs, structure, selected, onSelect }: Props) {
  const [direction, setDirection] = useState<Direction>("LR");
  const flow = useReactFlow();
  const userMoved = useRef(false);
  const moveFrom = useRef<Viewport | null>(null);
  const horizontal = direction === "LR";
  const jobsRef = useRef(jobs);
  jobsRef.current = jobs;

  const positions = useMemo(() => layout(jobsRef.current, direction),
    // eslint-disable-next-line react-hooks/exhaustive-deps
    [structure, direction]);

  // A node object is reused while its job, selection and place are the same, so React Flow
  // and the memoised node redraw only the nodes a change touched (a click, a batch of events).
  const made = useRef(new Map<string, JobFlowNode>());
  const nodes: JobFlowNode[] = useMemo(() => {
    const out: JobFlowNode[] = [];
    const next = new Map<string, JobFlowNode>();
    for (const [id, job] of jobs) {
      const position = positions.get(id);
      if (!position) continue;
      const isSelected = id === selected;
      const old = made.current.get(id);
      const node = old && old.data.job === job && old.data.selected === isSelected
        && old.data.horizontal === horizontal && old.position === position ? old : {
          id, type: "job" as const, position, width: NODE_W, height: NODE_H,
          data: { job, selected: isSelected, horizontal },
          draggable: false, connectable: false,
        };
      next.set(id, node);
      out.push(node);
    }
    made.current = next;
    return out;
  }, [jobs, positions, selected, horizontal]);

  const edges: Edge[] = useMemo(() => {
    const out: Edge[] = [];
    for (const job of jobsRef.current.values()) {
      for (const parent of job.depends_on ?? []) {
        if (!jobsRef.current.has(parent)) continue;
        out.push({
          id: parent + "\u2192" + job.node, source: parent, target: job.node,
          markerEnd: { type: MarkerType.ArrowClosed, width: 14, height: 14, color: "#98a2b3" },
          style: { stroke: "#98a2b3", strokeWidth: 1.4 },
        });
      }
    }
    return out;
    // eslint-disable-next-line react-hooks/exhaustive-deps
  }, [structure]);

  // New nodes (a job's add_jobs) or a new direction: refit unless the user has moved the view.
  const first = useRef(true);
  useEffect(() => {
    if (first.current) { first.current = false; return; }
    if (userMoved.current) return;
    const t = requestAnimationFrame(() => flow.fitView({ padding: 0.12, maxZoom: 1.1, duration: 200 }));
    return () => cancelAnimationFrame(t);
  }, [structure, direction, flow]);

  // The panel opening beside the graph narrows it: refit then too, on the same terms.
  const box = useRef<HTMLDivElement>(null);
  useEffect(() => {
    const el = box.current;
    if (!el || typeof ResizeObserver === "undefined") return;
    let width = el.clientWidth;
    const watch = new ResizeObserver(() => {
      if (Math.abs(el.clientWidth - width) < 8) return;
      width = el.clientWidth;
      if (!userMoved.current) flow.fitView({ padding: 0.12, maxZoom: 1.1, duration: 150 });
    });
    watch.observe(el);
    return () => watch.disconnect();
  }, [flow]);

  const big = jobs.size > 30;
  const colours = useMemo(() => new Map<string, string>(LEGEND.map((s) => [s, cssColour(s)])), []);
  const onNodeClick = useCallback((_: unknown, node: JobFlowNode) => onSelect(node.data.job), [onSelect]);

  return (
    <div className="graph rg-graph" ref={box} data-testid="dag" data-nodes={jobs.size}>
      <ReactFlow<JobFlowNode, Edge>
        nodes={nodes} edges={edges} nodeTypes={NODE_TYPES}
        onNodeClick={onNodeClick}
        onMoveStart={(_, viewport) => { moveFrom.current = viewport; }}
        onMoveEnd={(event, viewport) => {
          // d3-zoom starts a "move" on any press, a click on a node too: only a real pan or zoom counts.
          const from = moveFrom.current;
          if (event && from && (from.x !== viewport.x || from.y !== viewport.y || from.zoom !== viewport.zoom)) userMoved.current = true;
        }}
        fitView fitViewOptions={{ padding: 0.12, maxZoom: 1.1 }}
        minZoom={0.02} maxZoom={2}
        nodesDraggable={false} nodesConnectable={false} elementsSelectable={false}
        onlyRenderVisibleElements={jobs.size > 200}
        proOptions={{ hideAttribution: true }}>
        <Background gap={18} size={1} color="#e3e7ee" />
        <Controls showInteractive={false} position="bottom-left" />
        {big && (
          <MiniMap pannable zoomable position="bottom-right"
            nodeColor={(n) => colours.get(shownState((n as JobFlowNode).data.job)) ?? "#adb5bd"}
            nodeStrokeWidth={0} maskColor="rgba(246,247,249,0.7)" />
        )}
        <Panel position="bottom-center"><Legend /></Panel>
        <Panel position="top-right">
          <div className="rg-tools">
            <button data-testid="toggle-direction" title="lay the graph out the other way"
              onClick={() => { userMoved.current = false; setDirection(horizontal ? "TB" : "LR"); }}>
              {horizontal ? "⇢ left to right" : "⇣ top down"}
            </button>
            <button data-testid="fit-view" title="fit the whole graph in view"
              onClick={() => { userMoved.current = false; flow.fitView({ padding: 0.12, maxZoom: 1.1, duration: 200 }); }}>
              fit
            </button>
          </div>
        </Panel>
      </ReactFlow>
    </div>
  );
}

export function RunGraph(props: Props) {
  return (
    <ReactFlowProvider>
      <Graph {...props} />
    </ReactFlowProvider>
  );
}
