// The runs list (/runs): newest first, a page at a time by cursor, filtered by state, name
// and agent run (kept in the URL so a link shares the view), updated live from run changes.
import { useEffect, useState } from "react";
import { Link, useSearchParams } from "react-router";
import { api, type Change, type Run } from "../api";
import { useEvents } from "../events";
import { Empty, ErrorBanner, STATES, StateBadge, duration, stateClass, useLoad, useNow, when } from "../common";
import "./RunsView.css";

const RUN_STATES = ["RUNNING", "COMPLETED", "FAILED", "CANCELLED"];
const PAGE = 50;

interface Page {
  runs: Run[];
  next_cursor: number | null;
}

export function runLink(runId: string): string {
  return "/runs/" + encodeURIComponent(runId);
}

export function agentRunLink(agentRunId: string): string {
  return "/agent-runs/" + encodeURIComponent(agentRunId);
}

/** The run's jobs by state as one bar, in the palette's order. */
export function Progress({ counts, total }: { counts: Record<string, number>; total: number }) {
  const whole = Math.max(total, 1);
  return (
    <div className="progress" title={STATES.filter((s) => counts[s]).map((s) => `${s} ${counts[s]}`).join(", ")}>
      {STATES.filter((s) => counts[s]).map((s) => (
        <span key={s} className={stateClass(s)} style={{ width: `${(100 * counts[s]) / whole}%` }} />
      ))}
    </div>
  );
}

export function Counts({ counts }: { counts: Record<string, number> }) {
  const present = STATES.filter((s) => counts[s]);
  if (!present.length) return <span className="muted">—</span>;
  return (
    <span className="runs-counts">
      {present.map((s) => (
        <span key={s} className={"runs-count " + stateClass(s)} title={s}>{counts[s]}</span>
      ))}
    </span>
  );
}

function matches(run: Run, state: string, name: string, agent: string): boolean {
  if (state && run.state !== state) return false;
  if (name && !String(run.name ?? "").includes(name)) return false;
  if (agent && run.agent_run_id !== agent) return false;
  return true;
}

export function RunsView() {
  const [params, setParams] = useSearchParams();
  const state = params.get("state") ?? "";
  const name = params.get("name") ?? "";
  const agent = params.get("agent_run_id") ?? "";
  const cursor = params.get("cursor") ?? "";
  // Cursors of the pages before this one, to go back to newer runs.
  const [back, setBack] = useState<string[]>([]);
  const [nameInput, setNameInput] = useState(name);
  const [agentInput, setAgentInput] = useState(agent);
  const now = useNow(1000);
  // Runs started since this older page was loaded (they belong on the first page).
  const [newer, setNewer] = useState<Set<string>>(new Set());
  useEffect(() => { setNewer(new Set()); }, [cursor, state, name, agent]);

  // From the address bar, not this render's params (react-router's functional form reads
  // those too): a debounced filter lands after other changes and must not undo them.
  const set = (changes: Record<string, string>, keepCursor = false) => {
    if (!keepCursor) setBack([]);
    const next = new URLSearchParams(window.location.search);
    for (const [k, v] of Object.entries(changes)) {
      if (v) next.set(k, v); else next.delete(k);
    }
    if (!keepCursor) next.delete("cursor");
    setParams(next, { replace: !keepCursor });
  };

  // Typing filters after a pause, not on every key.
  useEffect(() => {
    if (nameInput === name) return;
    const t = setTimeout(() => set({ name: nameInput.trim() }), 300);
    return () => clearTimeout(t);
    // eslint-disable-next-line react-hooks/exhaustive-deps
  }, [nameInput]);
  useEffect(() => {
    if (agentInput === agent) return;
    const t = setTimeout(() => set({ agent_run_id: agentInput.trim() }), 300);
    return () => clearTimeout(t);
    // eslint-disable-next-line react-hooks/exhaustive-deps
  }, [agentInput]);
  useEffect(() => { setNameInput(name); }, [name]);
  useEffect(() => { setAgentInput(agent); }, [agent]);

  const { data, setData, error, loading, reload } = useLoad<Page>(
    () => api.get<Page>("/runs", { limit: PAGE, cursor, state, name, agent_run_id: agent }),
    [cursor, state, name, agent],
  );

  // A run that comes to match the filters joins the page if it falls within the page's span
  // of time (a newer one on an older page is announced instead); rows shown update in place.
  useEvents({ kind: ["run"] }, (changes: Change[]) => {
    if (!data) return;
    const shown = new Set(data.runs.map((r) => r.run_id));
    const times = data.runs.map((r) => r.created_at ?? 0);
    const newest = cursor && times.length ? Math.max(...times) : Infinity;
    const oldest = data.next_cursor !== null && times.length ? Math.min(...times) : -Infinity;
    const updates = new Map<string, Run | null>();
    const fresh = new Map<string, Run>();
    const later: string[] = [];
    for (const c of changes) {
      if (c.kind !== "run") continue;
      if (shown.has(c.id)) { updates.set(c.id, c.data as Run | null); continue; }
      if (!c.data || !matches(c.data as Run, state, name, agent)) continue;
      const at = c.data.created_at ?? 0;
      if (at > newest) later.push(c.id);
      else if (at >= oldest) fresh.set(c.id, c.data as Run);
    }
    if (later.length) setNewer((seen) => new Set([...seen, ...later]));
    if (!updates.size && !fresh.size) return;
    setData((page) => {
      if (!page) return page;
      const kept = page.runs.filter((r) => !fresh.has(r.run_id)).flatMap((r) => {
        if (!updates.has(r.run_id)) return [r];
        const latest = updates.get(r.run_id);
        return latest ? [latest] : [];
      });
      const runs = [...fresh.values(), ...kept];
      runs.sort((a, b) => (b.created_at ?? 0) - (a.created_at ?? 0));
      return { ...page, runs };
    });
  }, reload);

  const filtered = !!(state || name || agent);
  return (
    <div className="runs-view">
      <div className="toolbar">
        <h1 className="runs-title">Runs</h1>
        <span className="spacer" />
        <select data-testid="filter-state" value={state} aria-label="state"
          onChange={(e) => set({ state: e.target.value })}>
          <option value="">All states</option>
          {RUN_STATES.map((s) => <option key={s} value={s}>{s.toLowerCase()}</option>)}
        </select>
        <input data-testid="filter-name" placeholder="Name contains…" value={nameInput}
          onChange={(e) => setNameInput(e.target.value)} aria-label="name" />
        <input data-testid="filter-agent" placeholder="Agent run id" value={agentInput}
          onChange={(e) => setAgentInput(e.target.value)} aria-label="agent run id" />
        {filtered && (
          <button className="link" data-testid="filter-clear"
            onClick={() => { setNameInput(""); setAgentInput(""); set({ state: "", name: "", agent_run_id: "" }); }}>
            clear
          </button>
        )}
      </div>
      <ErrorBanner error={error} />
      {cursor && newer.size > 0 && (
        <div className="runs-newer" data-testid="newer-runs">
          {newer.size} newer run{newer.size === 1 ? "" : "s"} since this page was loaded
          <button className="link" onClick={() => set({ cursor: "" })}>show the newest</button>
        </div>
      )}
      {data && data.runs.length > 0 && (
        <table className="grid runs-table" data-testid="runs-table">
          <thead>
            <tr>
              <th>Name</th><th>Run</th><th>State</th><th>Progress</th><th>Jobs</th>
              <th>Agent run · stage</th><th>Started</th><th className="num">Duration</th>
            </tr>
          </thead>
          <tbody>
            {data.runs.map((r) => (
              <tr key={r.run_id} data-testid={"run-row-" + r.run_id} data-state={r.state}>
                <td className="runs-name"><Link to={runLink(r.run_id)} data-testid={"run-link-" + r.run_id}>{r.name}</Link></td>
                <td className="mono muted runs-id">{r.run_id}</td>
                <td><StateBadge state={r.state} /></td>
                <td>
                  <div className="runs-progress">
                    <Progress counts={r.counts ?? {}} total={r.total ?? 0} />
                    <span className="runs-done">{done(r)}/{r.total ?? 0}</span>
                  </div>
                </td>
                <td><Counts counts={r.counts ?? {}} /></td>
                <td>
                  {r.agent_run_id
                    ? <Link to={agentRunLink(r.agent_run_id)} className="mono">{r.agent_run_id}</Link>
                    : <span className="muted">—</span>}
                  {r.stage && <span className="tag runs-stage">{r.stage}</span>}
                </td>
                <td className="nowrap" title={when(r.created_at)}>{shortWhen(r.created_at, now)}</td>
                <td className="num nowrap" data-testid={"run-duration-" + r.run_id}>
                  {duration((r.finished_at ?? now) - r.created_at)}
                </td>
              </tr>
            ))}
          </tbody>
        </table>
      )}
      {data && !data.runs.length && (
        <Empty>{filtered ? "No run matches these filters." : cursor ? "No older runs." : "No runs yet: submit one with titan run FILE."}</Empty>
      )}
      {!data && loading && <Empty>Loading…</Empty>}
      {data && (cursor || data.next_cursor !== null) && (
        <div className="toolbar runs-pager">
          <button data-testid="prev-page" disabled={!cursor}
            onClick={() => {
              const stack = back.slice();
              const prev = stack.pop() ?? "";
              setBack(stack);
              set({ cursor: prev }, true);
            }}>← Newer</button>
          <button data-testid="next-page" disabled={data.next_cursor === null}
            onClick={() => {
              setBack([...back, cursor]);
              set({ cursor: String(data.next_cursor) }, true);
            }}>Older →</button>
          <span className="muted">{data.runs.length} runs on this page</span>
        </div>
      )}
    </div>
  );
}

const ENDED = ["COMPLETED", "FAILED", "DEAD", "CANCELLED"];

function done(r: Run): number {
  const counts: Record<string, number> = r.counts ?? {};
  return ENDED.reduce((n, s) => n + (counts[s] ?? 0), 0);
}

/** Today's times as HH:MM:SS, older ones with their date. */
function shortWhen(ts: number | null | undefined, now: number): string {
  if (ts === null || ts === undefined) return "—";
  const d = new Date(ts * 1000);
  const time = d.toLocaleTimeString(undefined, { hour12: false });
  if (new Date(now * 1000).toDateString() === d.toDateString()) return time;
  return d.toLocaleDateString(undefined, { month: "short", day: "numeric" }) + " " + time;
}
