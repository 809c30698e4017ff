// Agent runs: /agent-runs lists them (GET /api/v1/agent-runs, the latest to move first) and
// opens one by id; /agent-runs/:agentRunId draws its stages (runs) as bars on one time axis,
// growing while they run, each a link to its run; with the model usage its jobs recorded
// (titan.agents: calls, tokens, latency, cost) per run, per stage and in total.
import { useEffect, useRef, useState } from "react";
import { Link, useNavigate, useParams } from "react-router";
import { api, seg, type Change, type Run } from "../api";
import { useEvents } from "../events";
import { Empty, ErrorBanner, StateBadge, duration, stateClass, useLoad, useNow, when } from "../common";
import { agentRunLink, runLink } from "./RunsView";
import "./AgentRunView.css";

export function AgentRunView() {
  const { agentRunId } = useParams();
  return agentRunId ? <Timeline id={agentRunId} key={agentRunId} /> : <AgentRunIndex />;
}

// -- the index ----------------------------------------------------------------------------

/** GET /api/v1/agent-runs: one agent run, with its latest stages. */
interface AgentRunSummary {
  agent_run_id: string;
  runs: number;
  stages: { run_id: string; name: string; stage: string | null; state: string }[];
  state: string;
  started_at: number;
  finished_at: number | null;
  last_at: number;
}

function AgentRunIndex() {
  const navigate = useNavigate();
  const now = useNow(1000);
  const [typed, setTyped] = useState("");
  const { data, error, loading, reload } = useLoad(
    () => api.get<{ agent_runs: AgentRunSummary[] }>("/agent-runs", { limit: 200 })
      .then((p) => p.agent_runs), []);

  // A run of an agent run changed: read the list again (soon, once for a burst).
  const timer = useRef<number | undefined>(undefined);
  useEffect(() => () => window.clearTimeout(timer.current), []);
  useEvents({ kind: ["run"] }, (changes: Change[]) => {
    if (!changes.some((c) => c.kind === "run" && c.data?.agent_run_id)) return;
    window.clearTimeout(timer.current);
    timer.current = window.setTimeout(reload, 300);
  }, reload);

  const agentRuns = data ?? [];
  const go = () => { if (typed.trim()) navigate(agentRunLink(typed.trim())); };

  return (
    <div className="agent-view">
      <div className="toolbar">
        <h1 className="agent-title">Agent runs</h1>
        <span className="spacer" />
        <form className="agent-open" onSubmit={(e) => { e.preventDefault(); go(); }}>
          <input data-testid="agent-run-input" placeholder="agent_run_id" value={typed}
            onChange={(e) => setTyped(e.target.value)} aria-label="agent run id" />
          <button type="submit" className="primary" data-testid="agent-run-open" disabled={!typed.trim()}>Open</button>
        </form>
      </div>
      <ErrorBanner error={error} />
      {!data && loading && <Empty>Loading…</Empty>}
      {data && !agentRuns.length && (
        <Empty>
          No agent run yet. Runs join one when submitted with an
          <code> agent_run_id</code> (and a <code>stage</code>).
        </Empty>
      )}
      {agentRuns.length > 0 && (
        <table className="grid agent-index">
          <thead>
            <tr><th>Agent run</th><th>Stages</th><th>Latest</th><th>State</th><th>Started</th><th className="num">Span</th></tr>
          </thead>
          <tbody>
            {agentRuns.map((a) => {
              const last = a.stages[a.stages.length - 1];
              return (
                <tr key={a.agent_run_id} data-testid={"agent-run-" + a.agent_run_id} className="clickable"
                  onClick={() => navigate(agentRunLink(a.agent_run_id))}>
                  <td><Link to={agentRunLink(a.agent_run_id)} className="mono" onClick={(e) => e.stopPropagation()}>{a.agent_run_id}</Link></td>
                  <td>
                    <span className="agent-chips">
                      {a.runs > a.stages.length && <span className="muted" title={`${a.runs} runs in all`}>… </span>}
                      {a.stages.slice(-12).map((r, i) => (
                        <span key={r.run_id} className="agent-chips">
                          {i > 0 && <span className="agent-chip-arrow">›</span>}
                          <span className={"agent-chip " + stateClass(r.state)} title={`${r.name}: ${r.state}`}>
                            {r.stage || "·"}
                          </span>
                        </span>
                      ))}
                    </span>
                  </td>
                  <td>{last?.name ?? "—"}</td>
                  <td><StateBadge state={a.state} /></td>
                  <td className="nowrap" title={when(a.started_at)}>{when(a.started_at)}</td>
                  <td className="num">{duration((a.finished_at ?? now) - a.started_at)}</td>
                </tr>
              );
            })}
          </tbody>
        </table>
      )}
    </div>
  );
}

// -- one agent run's timeline -------------------------------------------------------------

const STEPS = [0.1, 0.2, 0.5, 1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 10800, 21600,
  43200, 86400, 172800, 604800];

/** Tick positions (seconds since t0) for a span: at most about 8, on round steps. */
function ticks(t0: number, span: number): number[] {
  const step = STEPS.find((s) => span / s <= 8) ?? STEPS[STEPS.length - 1];
  const first = Math.ceil(t0 / step) * step;
  const out: number[] = [];
  for (let i = 0; first + i * step <= t0 + span + 1e-9; i++) out.push(first + i * step);
  return out;
}

function tickLabel(ts: number, span: number): string {
  const d = new Date(ts * 1000);
  if (span < 8) {
    return d.toLocaleTimeString(undefined, { hour12: false }) + "." + String(Math.round((ts % 1) * 10) % 10);
  }
  if (span >= 2 * 86400) return d.toLocaleDateString(undefined, { month: "short", day: "numeric" }) + " " +
    d.toLocaleTimeString(undefined, { hour12: false, hour: "2-digit", minute: "2-digit" });
  if (span >= 600) return d.toLocaleTimeString(undefined, { hour12: false, hour: "2-digit", minute: "2-digit" });
  return d.toLocaleTimeString(undefined, { hour12: false });
}

/** The model usage of some calls (GET /api/v1/agent-runs/{id}: usage). */
interface UsageTotals { calls: number; tokens_in: number; tokens_out: number; latency: number; cost: number }
interface AgentUsage {
  stages: Record<string, UsageTotals>;
  runs: Record<string, UsageTotals>;
  total: UsageTotals;
  truncated: boolean;
}

const fmtTokens = (n: number) => n >= 10_000 ? `${Math.round(n / 1000)}k` : n >= 1000 ? `${(n / 1000).toFixed(1)}k` : String(n);
const fmtCost = (c: number) => `$${c.toFixed(c >= 1 ? 2 : 4)}`;
const usageText = (u: UsageTotals) => `${u.calls} call${u.calls === 1 ? "" : "s"} · ${fmtTokens(u.tokens_in)} in / ` +
  `${fmtTokens(u.tokens_out)} out · ${u.latency.toFixed(2)}s · ${fmtCost(u.cost)}`;

function Timeline({ id }: { id: string }) {
  const navigate = useNavigate();
  const [usage, setUsage] = useState<AgentUsage | null>(null);
  const { data, setData, error, loading, reload } = useLoad(
    () => api.get<{ agent_run_id: string; runs: Run[]; usage?: AgentUsage | null }>(`/agent-runs/${seg(id)}`)
      .then((a) => { setUsage(a.usage ?? null); return a.runs; }), [id]);
  const running = !!data?.some((r) => r.state === "RUNNING");
  const now = useNow(running ? 250 : 5000);

  useEvents({ kind: ["run"] }, (changes: Change[]) => {
    const known = new Set((data ?? []).map((r) => r.run_id));
    const mine = changes.filter((c) => c.kind === "run"
      && (known.has(c.id) || c.data?.agent_run_id === id));
    if (!mine.length) return;
    // A new stage: the master's order is the timeline's, so read it again.
    if (mine.some((c) => !known.has(c.id))) { reload(); return; }
    // A stage ended: its model calls are all counted now, read them again (soon, once).
    if (mine.some((c) => c.data && (c.data as Run).state !== "RUNNING")) {
      window.clearTimeout(usageTimer.current);
      usageTimer.current = window.setTimeout(reload, 300);
    }
    const latest = new Map(mine.map((c) => [c.id, c.data as Run | null]));
    setData((runs) => runs && runs.flatMap((r) => {
      if (!latest.has(r.run_id)) return [r];
      const now = latest.get(r.run_id);
      return now ? [now] : [];
    }));
  }, reload);

  const usageTimer = useRef<number | undefined>(undefined);
  useEffect(() => () => window.clearTimeout(usageTimer.current), []);

  // The track's width in pixels: a bar too narrow for its duration shows none.
  const trackRef = useRef<HTMLDivElement>(null);
  const [trackWidth, setTrackWidth] = useState(0);
  useEffect(() => {
    const el = trackRef.current;
    if (!el) return;
    const observer = new ResizeObserver(() => setTrackWidth(el.clientWidth));
    observer.observe(el);
    setTrackWidth(el.clientWidth);
    return () => observer.disconnect();
  }, [!!data?.length]);

  const runs = data ?? [];
  const t0 = runs.length ? Math.min(...runs.map((r) => r.created_at)) : now;
  const tEnd = runs.length ? Math.max(...runs.map((r) => r.finished_at ?? now)) : now;
  const span = Math.max(tEnd - t0, 1);
  const pos = (t: number) => `${(100 * (t - t0)) / span}%`;
  const marks = ticks(t0, span);
  const ended = runs.filter((r) => r.state !== "RUNNING");
  const overall = running ? "RUNNING"
    : runs.some((r) => r.state === "FAILED") ? "FAILED"
      : runs.length && runs.every((r) => r.state === "COMPLETED") ? "COMPLETED"
        : runs.length ? runs[runs.length - 1].state : null;

  return (
    <div className="agent-view">
      <div className="toolbar">
        <Link to="/agent-runs" className="muted">Agent runs</Link>
        <span className="muted">/</span>
        <h1 className="agent-title mono" data-testid="agent-run-id">{id}</h1>
        {overall && <StateBadge state={overall} />}
        <span className="spacer" />
        {runs.length > 0 && (
          <span className="agent-summary muted">
            {runs.length} stage{runs.length === 1 ? "" : "s"} · {ended.length} ended · started {when(t0)} ·
            <b> {duration(tEnd - t0)}</b>{running ? " so far" : ""}
          </span>
        )}
        <Link to={"/runs?agent_run_id=" + encodeURIComponent(id)} className="agent-runs-link">runs list →</Link>
      </div>
      <ErrorBanner error={error} />
      {!data && loading && <Empty>Loading…</Empty>}
      {data && !runs.length && <Empty>This agent run has no runs.</Empty>}
      {runs.length > 0 && (
        <div className="agent-timeline" data-testid="timeline">
          <div className="agent-row agent-axis">
            <div className="agent-label muted">Stage · run</div>
            <div className="agent-track" ref={trackRef}>
              {marks.map((t) => (
                <span key={t} className="agent-tick" style={{ left: pos(t) }}>{tickLabel(t, span)}</span>
              ))}
            </div>
            <div className="agent-dur muted">Duration</div>
          </div>
          {runs.map((r, i) => {
            const end = r.finished_at ?? now;
            const took = end - r.created_at;
            const used = usage?.runs[r.run_id];
            const stageUsed = usage?.stages[r.stage ?? ""];
            return (
              <div className="agent-row" key={r.run_id} data-testid={"timeline-row-" + r.run_id}>
                <div className="agent-label" title={`${r.stage ?? ""} ${r.name} (${r.run_id})`}>
                  <span className="agent-index">{i + 1}</span>
                  <span className={"agent-stage " + stateClass(r.state)}>{r.stage || "—"}</span>
                  <Link to={runLink(r.run_id)} className="agent-name">{r.name}</Link>
                </div>
                <div className="agent-track">
                  {marks.map((t) => <span key={t} className="agent-grid" style={{ left: pos(t) }} />)}
                  <div className={"agent-bar " + stateClass(r.state) + (r.state === "RUNNING" ? " live" : "")}
                    data-testid={"stage-" + r.run_id} data-state={r.state} role="link" tabIndex={0}
                    style={{ left: pos(r.created_at), width: `max(3px, ${(100 * took) / span}%)` }}
                    title={`${r.stage ?? ""} ${r.name}: ${r.state}, ${duration(took)}\n${when(r.created_at)} → ${r.finished_at ? when(r.finished_at) : "now"}`}
                    onClick={() => navigate(runLink(r.run_id))}
                    onKeyDown={(e) => { if (e.key === "Enter") navigate(runLink(r.run_id)); }}>
                    {(took / span) * trackWidth >= 46 && <span className="agent-bar-text">{duration(took)}</span>}
                  </div>
                </div>
                <div className="agent-dur">
                  {used && (
                    <span className="agent-usage" data-testid={"timeline-usage-" + r.run_id}
                      title={`model usage of this run: ${usageText(used)}` +
                        (stageUsed && stageUsed.calls !== used.calls ? `\nstage ${r.stage || "—"} in all: ${usageText(stageUsed)}` : "")}>
                      {used.calls}× · {fmtTokens(used.tokens_in + used.tokens_out)} tok
                    </span>
                  )}
                  <span data-testid={"timeline-duration-" + r.run_id}>{duration(took)}</span>
                  <StateBadge state={r.state} />
                </div>
              </div>
            );
          })}
          {usage && usage.total.calls > 0 && (
            <div className="agent-usage-total" data-testid="usage-total">
              <span className="muted">Model usage</span>
              {Object.entries(usage.stages).map(([stage, u]) => (
                <span key={stage} data-testid={"usage-stage-" + (stage || "none")} title={usageText(u)}>
                  <span className="agent-stage">{stage || "—"}</span> {u.calls}× · {fmtTokens(u.tokens_in)}/{fmtTokens(u.tokens_out)} tok · {fmtCost(u.cost)}
                </span>
              ))}
              <b data-testid="usage-total-line">total {usageText(usage.total)}</b>
              {usage.truncated && <span className="muted">(the first records only)</span>}
            </div>
          )}
          {running && <div className="agent-now-note muted">the axis ends now; running stages grow</div>}
        </div>
      )}
    </div>
  );
}
