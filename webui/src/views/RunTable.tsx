// A large run's jobs as a paged table. Jobs are fetched 2,000 at a time (the server's page),
// only the pages the table shows (or, with a state filter, scans up to the rows it shows),
// and kept up to date from the run's live events.
import { useCallback, useEffect, useRef, useState } from "react";
import { api, seg, type Job, type Run } from "../api";
import { ErrorBanner, StateBadge, when } from "../common";
import { useEvents } from "../events";
import { JobDuration, fresher, shownState } from "./RunGraph";
import "./RunView.css";

export const CHUNK = 2000;
const ROWS = 100;

interface Props {
  run: Run;
  /** The first page of jobs, as the run view's first request brought it. */
  initial: Job[];
  selected: string | null;
  onSelect: (job: Job) => void;
}

export function RunTable({ run, initial, selected, onSelect }: Props) {
  const runId = run.run_id;
  const total: number = run.total ?? 0;
  const chunks = useRef(new Map<number, Job[]>([[0, initial]]));
  const where = useRef<Map<string, [number, number]>>(null!);
  if (where.current === null) where.current = new Map(initial.map((j, i) => [j.node, [0, i]]));
  const inflight = useRef(new Set<number>());
  // Every job change seen, for a page that lands after changes it may not have (10,000 at most).
  const seen = useRef(new Map<string, Job>());
  const [, setTick] = useState(0);
  const bump = useCallback(() => setTick((t) => t + 1), []);
  const [error, setError] = useState<unknown>(null);
  const [filter, setFilter] = useState("");
  const [page, setPage] = useState(0);
  const alive = useRef(true);
  useEffect(() => () => { alive.current = false; }, []);

  const index = useCallback((n: number, jobs: Job[]) => {
    jobs.forEach((j, i) => where.current.set(j.node, [n, i]));
  }, []);

  const ensure = useCallback((n: number) => {
    if (chunks.current.has(n) || inflight.current.has(n)) return;
    inflight.current.add(n);
    api.get<Run>(`/runs/${seg(runId)}`, { offset: n * CHUNK, limit: CHUNK }).then(
      (r) => {
        inflight.current.delete(n);
        if (!alive.current) return;
        const jobs = ((r.jobs ?? []) as Job[]).map((j) => {
          const later = seen.current.get(j.node);
          return later ? fresher(j, later) : j;
        });
        chunks.current.set(n, jobs);
        index(n, jobs);
        bump();
      },
      (e) => { inflight.current.delete(n); if (alive.current) setError(e); },
    );
  }, [runId, index, bump]);

  const reset = useCallback(() => {
    chunks.current.clear();
    where.current.clear();
    bump();
  }, [bump]);

  useEvents({ run: runId }, (changes) => {
    let touched = false;
    for (const c of changes) {
      if (c.kind !== "job" || !c.data || c.data.run_id !== runId) continue;
      const node = c.data.node as string;
      seen.current.set(node, c.data as Job);
      const at = where.current.get(node);
      if (at) {
        const rows = chunks.current.get(at[0]);
        if (rows) { rows[at[1]] = { ...rows[at[1]], ...c.data }; touched = true; }
        continue;
      }
      // A job the run just added goes last, in the run's order.
      const last = Math.max(...chunks.current.keys());
      const rows = chunks.current.get(last);
      if (rows && rows.length < CHUNK && last >= Math.floor((total - 1) / CHUNK)) {
        rows.push(c.data as Job);
        where.current.set(node, [last, rows.length - 1]);
        touched = true;
      }
    }
    if (touched) bump();
  }, reset);

  const matchCount = filter ? (run.counts?.[filter] ?? 0) : total;
  const pages = Math.max(1, Math.ceil(matchCount / ROWS));
  const current = Math.min(page, pages - 1);

  let rows: Job[] = [];
  let waiting = false;
  if (!filter) {
    const start = current * ROWS;
    const n = Math.floor(start / CHUNK);
    const chunk = chunks.current.get(n);
    if (chunk) rows = chunk.slice(start - n * CHUNK, start - n * CHUNK + ROWS);
    else waiting = true;
  } else {
    // Scan the run in order up to the rows of this page; a chunk not here yet stops the scan.
    const want = (current + 1) * ROWS;
    const found: Job[] = [];
    const last = Math.ceil(total / CHUNK);
    for (let n = 0; n < last && found.length < want; n++) {
      const chunk = chunks.current.get(n);
      if (!chunk) { waiting = true; break; }
      for (const j of chunk) if (j.state === filter && found.push(j) >= want) break;
    }
    rows = found.slice(current * ROWS, want);
  }

  useEffect(() => {
    if (!filter) { ensure(Math.floor((current * ROWS) / CHUNK)); return; }
    const want = (current + 1) * ROWS;
    let count = 0;
    const last = Math.ceil(total / CHUNK);
    for (let n = 0; n < last; n++) {
      const chunk = chunks.current.get(n);
      if (!chunk) { ensure(n); return; }
      for (const j of chunk) if (j.state === filter) count++;
      if (count >= want) return;
    }
  });

  const states = Object.entries((run.counts ?? {}) as Record<string, number>).sort((a, b) => b[1] - a[1]);
  const first = current * ROWS + 1;
  return (
    <div className="rt" data-testid="run-table">
      <ErrorBanner error={error} onClose={() => setError(null)} />
      <div className="toolbar rt-bar">
        <label className="muted">state
          <select data-testid="table-filter" value={filter}
            onChange={(e) => { setFilter(e.target.value); setPage(0); }}>
            <option value="">all ({total.toLocaleString()})</option>
            {states.map(([s, n]) => <option key={s} value={s}>{s} ({n.toLocaleString()})</option>)}
          </select>
        </label>
        <span className="spacer" />
        <span className="muted" data-testid="page-info">
          {matchCount ? `${first.toLocaleString()}–${Math.min(matchCount, first + ROWS - 1).toLocaleString()} of ${matchCount.toLocaleString()}` : "none"}
        </span>
        <button data-testid="page-first" disabled={current === 0} onClick={() => setPage(0)}>«</button>
        <button data-testid="page-prev" disabled={current === 0} onClick={() => setPage(current - 1)}>‹</button>
        <span className="muted">page {current + 1} / {pages}</span>
        <button data-testid="page-next" disabled={current >= pages - 1} onClick={() => setPage(current + 1)}>›</button>
        <button data-testid="page-last" disabled={current >= pages - 1} onClick={() => setPage(pages - 1)}>»</button>
      </div>
      <div className="rt-scroll">
        <table className="grid rt-grid">
          <thead>
            <tr><th>node</th><th>state</th><th>kind</th><th>worker</th><th>attempt</th><th>started</th><th>duration</th></tr>
          </thead>
          <tbody>
            {rows.map((j) => (
              <tr key={j.node} className={"clickable" + (j.node === selected ? " rt-selected" : "")}
                data-testid={"row-" + j.node} onClick={() => onSelect(j)}>
                <td className="mono">{j.node}</td>
                <td><StateBadge state={shownState(j)} /></td>
                <td className="muted">{j.kind ?? "job"}</td>
                <td>{j.worker ?? <span className="muted">—</span>}</td>
                <td>{j.attempt || <span className="muted">—</span>}</td>
                <td>{when(j.started_at)}</td>
                <td><JobDuration job={j} /></td>
              </tr>
            ))}
            {waiting && rows.length < ROWS && (
              <tr><td colSpan={7} className="muted" data-testid="table-loading">loading jobs…</td></tr>
            )}
            {!waiting && !rows.length && (
              <tr><td colSpan={7} className="muted">no job in this state</td></tr>
            )}
          </tbody>
        </table>
      </div>
    </div>
  );
}
