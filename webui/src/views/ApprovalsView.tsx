// The approvals inbox (/approvals): every gate waiting for a person, oldest first, decided
// here with a comment; below, the latest decisions. Live from gate changes.
import { useState } from "react";
import { Link } from "react-router";
import { ApiError, api, currentRole, seg, type Change } from "../api";
import { useEvents } from "../events";
import { ActionButton, Empty, ErrorBanner, message, useLoad, useNow, when } from "../common";
import { runLink } from "./RunsView";
import "./ApprovalsView.css";

interface Decision {
  approved: boolean;
  by: string;
  comment: string;
  at: number;
  via?: string;
}

interface Gate {
  job_id: string;
  run_id: string | null;
  node: string | null;
  question: string | null;
  state: string;
  waiting_since: number | null;
  deadline: number | null;
  time_left?: number | null;
  on_timeout?: string | null;
  decision: Decision | null;
}

interface Lists {
  waiting: Gate[];
  decided: Gate[];
}

/** A gate as GET /gates gives it, from a job's view (a live change). */
function fromJob(job: any): Gate {
  return {
    job_id: job.job_id, run_id: job.run_id, node: job.node, question: job.message,
    state: job.state, waiting_since: job.started_at,
    deadline: job.state === "WAITING_APPROVAL" ? job.ready_at : null,
    decision: job.decision ?? null,
  };
}

/** "12 min ago", "3 h ago", "2 days ago". */
export function ago(ts: number | null | undefined, now: number): string {
  if (ts === null || ts === undefined) return "—";
  const s = Math.max(0, now - ts);
  if (s < 45) return "just now";
  if (s < 3600) return `${Math.round(s / 60)} min ago`;
  if (s < 86400) return `${Math.floor(s / 3600)} h ${String(Math.floor((s % 3600) / 60)).padStart(2, "0")} min ago`;
  return `${Math.floor(s / 86400)} days ago`;
}

function countdown(seconds: number): string {
  const s = Math.max(0, Math.floor(seconds));
  const h = Math.floor(s / 3600);
  const m = Math.floor((s % 3600) / 60);
  const sec = s % 60;
  if (h >= 48) return `${Math.floor(h / 24)} days ${h % 24} h`;
  if (h) return `${h} h ${String(m).padStart(2, "0")} min`;
  return `${m}:${String(sec).padStart(2, "0")}`;
}

const DECIDED_LIMIT = 50;
const DECIDER_KEY = "titan.decider";

function storedName(): string {
  try { return localStorage.getItem(DECIDER_KEY) ?? ""; } catch { return ""; }
}

export function ApprovalsView() {
  const now = useNow(1000);
  const viewer = currentRole() === "viewer";
  const [notice, setNotice] = useState<unknown>(null);
  const [comments, setComments] = useState<Record<string, string>>({});
  // The session knows a role, not a person: the decider names themself once (this browser).
  const [by, setBy] = useState(storedName);
  const rename = (value: string) => {
    setBy(value);
    try { localStorage.setItem(DECIDER_KEY, value); } catch { /* private mode: not kept */ }
  };

  const { data, setData, error, loading, reload } = useLoad<Lists>(async () => {
    const [w, d] = await Promise.all([
      api.get<{ gates: Gate[] }>("/gates"),
      api.get<{ gates: Gate[] }>("/gates", { decided: true, limit: DECIDED_LIMIT }),
    ]);
    return { waiting: w.gates, decided: d.gates };
  }, []);

  const apply = (gates: Gate[]) => setData((lists) => {
    if (!lists) return lists;
    let { waiting, decided } = lists;
    for (const g of gates) {
      waiting = waiting.filter((x) => x.job_id !== g.job_id);
      if (g.state === "WAITING_APPROVAL") {
        waiting = [...waiting, g].sort((a, b) => (a.waiting_since ?? 0) - (b.waiting_since ?? 0));
      } else if (g.decision && !decided.some((x) => x.job_id === g.job_id)) {
        decided = [g, ...decided].slice(0, DECIDED_LIMIT);
      }
    }
    return { waiting, decided };
  });

  useEvents({ kind: ["gate"] }, (changes: Change[]) => {
    const gates: Gate[] = [];
    let gone = false;
    for (const c of changes) {
      if (c.kind !== "gate") continue;
      if (c.data === null) gone = true;
      else gates.push(fromJob(c.data));
    }
    if (gates.length) apply(gates);
    if (gone) reload();
  }, reload);

  const decide = async (gate: Gate, approved: boolean) => {
    setNotice(null);
    try {
      const job = await api.post(`/gates/${seg(gate.job_id)}/decide`,
        { approved, comment: comments[gate.job_id] ?? "", ...(by.trim() ? { by: by.trim() } : {}) });
      apply([fromJob(job)]);
    } catch (e) {
      if (e instanceof ApiError && e.status === 409) {
        setNotice(new Error(`Not decided: ${message(e)}`));
        setData((lists) => lists && { ...lists, waiting: lists.waiting.filter((x) => x.job_id !== gate.job_id) });
        reload();
      } else {
        setNotice(e);
      }
    }
  };

  return (
    <div className="approvals-view">
      <div className="toolbar">
        <h1 className="approvals-title">Approvals</h1>
        {data && (
          <span className={"approvals-count" + (data.waiting.length ? " some" : "")} data-testid="waiting-count">
            {data.waiting.length} waiting
          </span>
        )}
        <span className="spacer" />
        <label className="approvals-by muted">
          deciding as
          <input data-testid="decider-name" placeholder="your name" value={by}
            onChange={(e) => rename(e.target.value)} />
        </label>
      </div>
      <ErrorBanner error={error} />
      <ErrorBanner error={notice} onClose={() => setNotice(null)} />
      {!data && loading && <Empty>Loading…</Empty>}
      {data && !data.waiting.length && (
        <div className="approvals-clear" data-testid="inbox-empty">Nothing waits for a decision.</div>
      )}
      {data && data.waiting.length > 0 && (
        <div className="approvals-inbox">
          {data.waiting.map((g) => {
            const left = g.deadline !== null && g.deadline !== undefined ? g.deadline - now : null;
            const urgent = left !== null && left < 3600;
            return (
              <div className="approvals-gate" key={g.job_id} data-testid={"gate-" + g.job_id}>
                <div className="approvals-main">
                  <div className="approvals-question">{g.question || `Approve ${g.node}?`}</div>
                  <div className="approvals-meta">
                    <span className="tag">{g.node}</span>
                    {g.run_id && <>in <Link to={runLink(g.run_id)} className="mono">{g.run_id}</Link></>}
                    <span className="approvals-dot">·</span>
                    <span title={when(g.waiting_since)}>waiting since {ago(g.waiting_since, now)}</span>
                    {left !== null && (
                      <>
                        <span className="approvals-dot">·</span>
                        <span className={"approvals-left" + (urgent ? " urgent" : "")} data-testid={"left-" + g.job_id}
                          title={"deadline " + when(g.deadline)}>
                          {countdown(left)} left{g.on_timeout ? `, then ${g.on_timeout}` : ""}
                        </span>
                      </>
                    )}
                  </div>
                </div>
                <div className="approvals-act">
                  <input data-testid={"comment-" + g.job_id} placeholder="Comment (optional)"
                    value={comments[g.job_id] ?? ""} aria-label="comment"
                    onChange={(e) => setComments({ ...comments, [g.job_id]: e.target.value })} />
                  <ActionButton className="approve" testid={"approve-" + g.job_id} disabled={viewer}
                    title={viewer ? "a viewer may not decide" : undefined}
                    onClick={() => decide(g, true)}>✓ Approve</ActionButton>
                  <ActionButton className="danger" testid={"reject-" + g.job_id} disabled={viewer}
                    title={viewer ? "a viewer may not decide" : undefined}
                    onClick={() => decide(g, false)}>✕ Reject</ActionButton>
                </div>
              </div>
            );
          })}
        </div>
      )}

      <h2>Decided</h2>
      {data && !data.decided.length && <Empty>No gate has been decided yet.</Empty>}
      {data && data.decided.length > 0 && (
        <table className="grid approvals-decided" data-testid="decided">
          <thead>
            <tr><th>Gate</th><th>Run</th><th>Decision</th><th>By</th><th>When</th><th>Comment</th><th>Via</th></tr>
          </thead>
          <tbody>
            {data.decided.map((g) => {
              const d = g.decision!;
              return (
                <tr key={g.job_id} data-testid={"decided-" + g.job_id}>
                  <td><span className="approvals-q" title={g.question ?? ""}>{g.node}</span></td>
                  <td>{g.run_id ? <Link to={runLink(g.run_id)} className="mono">{g.run_id}</Link> : "—"}</td>
                  <td>
                    <span className={"badge " + (d.approved ? "state-completed" : "state-failed")}
                      data-testid={"decision-" + g.job_id}>
                      {d.approved ? "approved" : "rejected"}
                    </span>
                  </td>
                  <td>{d.by || "—"}</td>
                  <td className="nowrap" title={when(d.at)}>{ago(d.at, now)}</td>
                  <td className="approvals-comment" data-testid={"decided-comment-" + g.job_id}>
                    {d.comment || <span className="muted">—</span>}
                  </td>
                  <td className="muted">{d.via ?? "—"}</td>
                </tr>
              );
            })}
          </tbody>
        </table>
      )}
    </div>
  );
}
