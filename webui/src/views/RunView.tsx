// One run: its header (state, progress, counts, agent run, times, cancel) and its DAG, live.
// Past GRAPH_AUTO jobs the jobs show as a paged table (RunTable) instead; the graph can still
// be asked for up to GRAPH_MAX jobs (part of one page of the server's; dagre lays 1,000 out in ~0.4 s).
import { useCallback, useEffect, useMemo, useRef, useState } from "react";
import { Link, useParams } from "react-router";
import { api, currentRole, seg, type Change, type Job, type Run } from "../api";
import { ErrorBanner, StateBadge, duration, stateClass, useNow, when } from "../common";
import { useEvents } from "../events";
import { JobPanel } from "./JobPanel";
import { RunGraph, fresher } from "./RunGraph";
import { CHUNK, RunTable } from "./RunTable";
import "./RunView.css";

const GRAPH_AUTO = 300;
const GRAPH_MAX = 1000;

const PROGRESS_ORDER = [
  "COMPLETED", "FAILED", "DEAD", "CANCELLED", "RUNNING", "WAITING_APPROVAL", "PENDING",
];

function RunDuration({ run }: { run: Run }) {
  const running = !run.finished_at;
  const now = useNow(running ? 1000 : 60_000);
  if (!run.created_at) return <>—</>;
  return <>{duration((run.finished_at ?? now) - run.created_at)}</>;
}

function Progress({ run }: { run: Run }) {
  const total: number = run.total || 0;
  const counts: Record<string, number> = run.counts ?? {};
  const done = ["COMPLETED", "FAILED", "DEAD", "CANCELLED"].reduce((n, s) => n + (counts[s] ?? 0), 0);
  const states = [...PROGRESS_ORDER, ...Object.keys(counts).filter((s) => !PROGRESS_ORDER.includes(s))];
  return (
    <div className="rv-progress">
      <div className="progress" data-testid="run-progress" title={`${done} of ${total} jobs ended`}>
        {total > 0 && states.map((s) => counts[s] ? (
          <span key={s} className={stateClass(s)} style={{ width: `${(100 * counts[s]) / total}%` }} />
        ) : null)}
      </div>
      <span className="rv-done muted">{done.toLocaleString()} / {total.toLocaleString()}</span>
    </div>
  );
}

function CancelRun({ run, onError }: { run: Run; onError: (e: unknown) => void }) {
  const [asking, setAsking] = useState(false);
  const [busy, setBusy] = useState(false);
  const ended = run.state !== "RUNNING";
  const viewer = currentRole() === "viewer";
  useEffect(() => { if (ended) setAsking(false); }, [ended]);
  const counts: Record<string, number> = run.counts ?? {};
  const open = ["PENDING", "RUNNING", "WAITING_APPROVAL"].reduce((n, s) => n + (counts[s] ?? 0), 0);
  if (!asking) {
    return (
      <button className="danger" data-testid="cancel-run" disabled={ended || viewer}
        title={ended ? "the run has ended" : viewer ? "a viewer may not cancel"
          : "cancel every unfinished job of this run"}
        onClick={() => setAsking(true)}>Cancel run</button>
    );
  }
  return (
    <span className="rv-confirm" data-testid="confirm-box">
      Cancel {open === 1 ? "the unfinished job" : `its ${open.toLocaleString()} unfinished jobs`}?
      <button className="danger rv-yes" data-testid="confirm" disabled={busy}
        onClick={async () => {
          setBusy(true);
          try { await api.post(`/runs/${seg(run.run_id)}/cancel`); setAsking(false); }
          catch (e) { onError(e); }
          finally { setBusy(false); }
        }}>Yes, cancel run</button>
      <button data-testid="confirm-no" disabled={busy} onClick={() => setAsking(false)}>Keep it</button>
    </span>
  );
}

function Header({ run, onError }: { run: Run; onError: (e: unknown) => void }) {
  const counts: Record<string, number> = run.counts ?? {};
  const states = [...PROGRESS_ORDER, ...Object.keys(counts).filter((s) => !PROGRESS_ORDER.includes(s))]
    .filter((s) => counts[s]);
  return (
    <div className="rv-head" data-testid="run-header">
      <div className="rv-title">
        <Link to="/runs" className="muted rv-crumb">Runs</Link>
        <span className="muted">/</span>
        <h1 data-testid="run-name">{run.name || run.run_id}</h1>
        <span data-testid="run-state" data-state={run.state}><StateBadge state={run.state} /></span>
        <code className="muted rv-id" title="run id">{run.run_id}</code>
        <span className="spacer" />
        {run.agent_run_id && (
          <span className="rv-field">agent run{" "}
            <Link to={"/agent-runs/" + seg(run.agent_run_id)} data-testid="run-agent-link">{run.agent_run_id}</Link>
            {run.stage && <> <span className="tag" data-testid="run-stage">{run.stage}</span></>}
          </span>
        )}
        <span className="rv-field" title="submitted">started <b data-testid="run-started">{when(run.created_at)}</b></span>
        <span className="rv-field">duration <b data-testid="run-duration"><RunDuration run={run} /></b></span>
        <Link to={"/new?from=" + encodeURIComponent(run.run_id)} className="cn-edit-copy" data-testid="edit-copy"
          title="open this run's pipeline in the constructor, to change it and deploy it again">Edit a copy</Link>
        <CancelRun run={run} onError={onError} />
      </div>
      <div className="rv-meta">
        <Progress run={run} />
        <span className="rv-counts" data-testid="run-counts">
          {states.map((s) => (
            <span key={s} className={"rv-count " + stateClass(s)} data-testid={"count-" + s} title={s}>
              <span className="dot" />{s.toLowerCase().replace("_", " ")} <b>{counts[s].toLocaleString()}</b>
            </span>
          ))}
        </span>
      </div>
    </div>
  );
}

function byNode(jobs: Job[]): Map<string, Job> {
  return new Map(jobs.map((j) => [j.node, j]));
}

export function RunView() {
  const { runId = "" } = useParams();
  const [run, setRun] = useState<Run | null>(null);
  const [jobs, setJobs] = useState<Map<string, Job>>(new Map());
  const [structure, setStructure] = useState(0);
  const [error, setError] = useState<unknown>(null);
  const [actionError, setActionError] = useState<unknown>(null);
  const [selected, setSelected] = useState<string | null>(null);
  const [forceGraph, setForceGraph] = useState(false);
  const [tableKey, setTableKey] = useState(0);
  const generation = useRef(0);
  const version = useRef(-1);

  const load = useCallback(() => {
    const mine = ++generation.current;
    api.get<Run>(`/runs/${seg(runId)}`, { limit: CHUNK }).then((r) => {
      if (mine !== generation.current) return;
      const page = (r.jobs ?? []) as Job[];
      const { jobs: _drop, edges: _edges, ...head } = r;
      version.current = r.version ?? -1;
      setRun(head as Run);
      setJobs((before) => {
        const next = byNode(page);
        for (const [node, job] of next) {
          const seen = before.get(node);
          if (seen) next.set(node, fresher(job, seen));
        }
        const same = next.size === before.size && [...next.keys()].every((k) => before.has(k));
        if (!same) setStructure((s) => s + 1);
        return next;
      });
      setTableKey((k) => k + 1);
      setError(null);
    }, (e) => { if (mine === generation.current) setError(e); });
  }, [runId]);

  useEffect(() => {
    setRun(null); setJobs(new Map()); setSelected(null); setForceGraph(false); setError(null);
    load();
  }, [load]);

  const onChanges = useCallback((changes: Change[]) => {
    let head: Run | null = null;
    const updates: Job[] = [];
    for (const c of changes) {
      if (c.kind === "run" && c.id === runId && c.data) head = c.data as Run;
      else if ((c.kind === "job" || c.kind === "gate" || c.kind === "service") && c.data && c.data.run_id === runId && c.data.node) updates.push(c.data as Job);
    }
    if (head) {
      const h = head;
      if ((h.version ?? 0) >= version.current) {
        version.current = h.version ?? version.current;
        setRun((r) => ({ ...(r ?? {}), ...h }) as Run);
      }
    }
    if (updates.length) {
      setJobs((before) => {
        const next = new Map(before);
        let grew = false;
        for (const u of updates) {
          const old = next.get(u.node);
          if (!old) {
            // A job the run added while it runs; the map holds the run's first page, in order,
            // which is also what the table starts from.
            if (next.size >= CHUNK) continue;
            grew = true;
          }
          next.set(u.node, { ...(old ?? {}), ...u });
        }
        if (grew) setStructure((s) => s + 1);
        return next;
      });
    }
  }, [runId]);

  useEvents({ run: runId }, onChanges, load);

  const total: number = run?.total ?? 0;
  const graph = run !== null && (total <= GRAPH_AUTO || (forceGraph && total <= GRAPH_MAX));
  const select = useCallback((job: Job) => setSelected(job.job_id), []);
  const firstPage = useMemo(() => [...jobs.values()], [jobs]);
  const selectedNode = selected ? selected.slice(runId.length + 1) : null;

  return (
    <div className="rv" data-testid="run-view">
      <ErrorBanner error={error} />
      <ErrorBanner error={actionError} onClose={() => setActionError(null)} />
      {!run && !error && <div className="muted rv-loading">loading run {runId}…</div>}
      {run && <Header run={run} onError={setActionError} />}
      {run && (
        <div className="split rv-split">
          <div className="main">
            {!graph && (
              <div className="rv-note" data-testid="large-note">
                <span>{total.toLocaleString()} jobs: listed as a table, which stays fast at any size
                  (the graph is drawn by itself up to {GRAPH_AUTO.toLocaleString()} jobs).</span>
                <button data-testid="show-graph" disabled={total > GRAPH_MAX}
                  title={total > GRAPH_MAX ? `the graph is drawn for up to ${GRAPH_MAX.toLocaleString()} jobs` : "lay out and draw every job"}
                  onClick={() => setForceGraph(true)}>Draw the graph anyway</button>
              </div>
            )}
            {graph && forceGraph && total > GRAPH_AUTO && (
              <div className="rv-note">
                Drawing all {total.toLocaleString()} jobs.
                <button data-testid="show-table" onClick={() => setForceGraph(false)}>Back to the table</button>
              </div>
            )}
            {graph
              ? <RunGraph jobs={jobs} structure={structure} selected={selectedNode}
                  onSelect={select} />
              : <RunTable key={tableKey} run={run} initial={firstPage} selected={selectedNode} onSelect={select} />}
          </div>
          {selected && <JobPanel key={selected} jobId={selected} onClose={() => setSelected(null)} />}
        </div>
      )}
    </div>
  );
}
