// A job's details, attempts, result, live log tail and actions. Used as the side panel of the
// run view and as the page /jobs/:ref (a job of a run is RUN/NODE, one encoded segment).
import { memo, useState, type ReactNode } from "react";
import { Link, useParams } from "react-router";
import { api, currentRole, seg, type Change, type Job } from "../api";
import { ActionButton, ErrorBanner, StateBadge, duration, useLoad, useNow, when } from "../common";
import { useEvents } from "../events";
import { LogTail } from "./LogTail";
import "./JobPanel.css";

const ENDED = new Set(["COMPLETED", "FAILED", "DEAD", "CANCELLED"]);
const LIVE_KINDS = new Set(["job", "gate", "service"]);

interface Attempt {
  attempt: number;
  worker: string | null;
  started_at: number | null;
  finished_at: number | null;
  exit_code: number | null;
  state: string;
  reason: string | null;
  current?: boolean;
}

export function JobPanel({ jobId, onClose }: { jobId: string; onClose?: () => void }) {
  return (
    <aside className="panel job-panel" data-testid="job-panel">
      <JobDetails jobId={jobId} onClose={onClose} />
    </aside>
  );
}

export function JobPage() {
  const { ref } = useParams();
  return (
    <div className="job-page" data-testid="job-page">
      <JobDetails jobId={ref ?? ""} page />
    </div>
  );
}

function JobDetails({ jobId, onClose, page }: { jobId: string; onClose?: () => void; page?: boolean }) {
  const load = useLoad(
    async () => ({ ref: jobId, job: await api.get<Job>(`/jobs/${seg(jobId)}`) }), [jobId]);
  const [actionError, setActionError] = useState<unknown>(null);
  const job = load.data && load.data.ref === jobId ? load.data.job : null;
  const [gone, setGone] = useState<string | null>(null);
  const setJob = (next: Job) => load.setData({ ref: jobId, job: next });
  const [asking, setAsking] = useState(false);
  const viewer = currentRole() === "viewer";

  const head = (
    <div className="job-head">
      <div className="job-title">
        {page && job?.run_id && (
          <div className="job-crumbs">
            <Link to="/runs">Runs</Link> › <Link to={`/runs/${seg(job.run_id)}`} data-testid="job-run">{job.run_id}</Link>
          </div>
        )}
        <div className="job-name">
          <span className="name" title={job?.job_id ?? jobId}>{job ? displayName(job) : jobId}</span>
          {job && <span data-testid="job-state"><StateBadge state={job.phase ?? job.state} /></span>}
          {job && job.kind !== "job" && <span className="tag" data-testid="job-kind">{job.kind}</span>}
        </div>
      </div>
      {job && job.kind !== "gate" && (
        <button className="danger" data-testid="cancel-job" disabled={ENDED.has(job.state) || asking || viewer}
          title={ENDED.has(job.state) ? `it has ended (${job.state.toLowerCase()})`
            : viewer ? "a viewer session is read-only" : "stop this job"}
          onClick={() => setAsking(true)}>Cancel job</button>
      )}
      {!page && job && <Link className="job-open" to={`/jobs/${seg(job.job_id)}`} data-testid="job-open-page"
        title="open as a page">⤢</Link>}
      {onClose && <button className="link job-close" onClick={onClose} aria-label="close"
        data-testid="job-panel-close">×</button>}
    </div>
  );

  if (!job) {
    return (
      <>
        {head}
        <ErrorBanner error={load.error} />
        {!load.error && <div className="muted job-loading">loading…</div>}
      </>
    );
  }

  const ended = ENDED.has(job.state);
  const isGate = job.kind === "gate";
  const stats = !isGate && <Stats job={job} />;
  const attempts = !isGate && <Attempts job={job} wide={!!page} />;
  const result = <Result value={job.result} />;
  const log = !isGate && (
    <div className="job-log">
      <h3>Output</h3>
      <MemoLog jobId={job.job_id} height={page ? "calc(100vh - 230px)" : "340px"} />
    </div>
  );
  return (
    <>
      <JobLive job={job} onJob={(next) => { if (next) { setGone(null); setJob(next); } else setGone(job.job_id); }}
        onReset={load.reload} />
      {head}
      <div className={"job-id mono" + (displayName(job) === job.job_id ? " same" : "")}
        data-testid="job-id">{job.job_id}</div>
      {gone === job.job_id && (
        <div className="error">this job is no longer kept by the master (retention): what shows is its last state</div>
      )}
      <ErrorBanner error={load.error} />
      <ErrorBanner error={actionError} onClose={() => setActionError(null)} />
      {job.kind === "gate"
        ? <GateBox job={job} onJob={setJob} onError={setActionError} />
        : asking && !ended && <CancelConfirm job={job} onClose={() => setAsking(false)}
          onDone={load.reload} onError={setActionError} />}
      {page ? (
        <div className={"job-columns" + (isGate ? " single" : "")}>
          <div className="job-info">
            {stats}
            <Details job={job} />
            {attempts}
            {result}
          </div>
          {log}
        </div>
      ) : (
        <div className="job-stack">
          {stats}
          {log}
          {attempts}
          {result}
          <section className="job-section">
            <h3>Details</h3>
            <Details job={job} />
          </section>
        </div>
      )}
    </>
  );
}

const MemoLog = memo(LogTail);

/** Follows the job's changes on the live feed (its run's, or every job's for a lone job). */
function JobLive({ job, onJob, onReset }: {
  job: Job; onJob: (job: Job | null) => void; onReset: () => void;
}) {
  const filter = job.run_id ? { run: job.run_id } : { kind: ["job", "gate", "service"] };
  useEvents(filter, (changes: Change[]) => {
    for (const c of changes) {
      if (LIVE_KINDS.has(c.kind) && c.id === job.job_id) onJob(c.data);
    }
  }, onReset);
  return null;
}

function displayName(job: Job): string {
  return job.name || job.node || job.job_id;
}

/** The few facts one looks for first: where, which attempt, how it ended, how long. */
function Stats({ job }: { job: Job }) {
  const tries = (job.retries ?? 0) + 1;
  const failed = job.exit_code !== null && job.exit_code !== undefined && job.exit_code !== 0;
  return (
    <>
      <div className="job-stats">
        <Stat id="worker" label="Worker">{job.worker ?? "—"}</Stat>
        <Stat id="attempt" label="Attempt">{job.attempt ? `${job.attempt} of ${tries}` : `— of ${tries}`}</Stat>
        <Stat id="exit-code" label="Exit code" bad={failed}>{job.exit_code ?? "—"}</Stat>
        <Stat id="duration" label={job.state === "RUNNING" ? "Running for" : "Took"}>
          <Elapsed from={job.started_at} to={job.finished_at} running={job.state === "RUNNING"} />
        </Stat>
      </div>
      {job.reason && (
        <div className={"job-callout " + (job.state === "COMPLETED" ? "info" : "bad")}>
          <span className="label">Reason</span> <span data-testid="job-reason">{job.reason}</span>
        </div>
      )}
      {job.waiting && (
        <div className="job-callout wait">
          <span className="label">Waiting</span> <span data-testid="job-waiting"><Waiting job={job} /></span>
        </div>
      )}
    </>
  );
}

/** The master's waiting reason, with its countdown kept current from `ready_at` (the text
 * is as of the job's last change). */
function Waiting({ job }: { job: Job }) {
  const counting = typeof job.ready_at === "number" && job.ready_at > 0;
  const now = useNow(counting ? 1000 : 3600_000);
  const text: string = job.waiting ?? "";
  if (!counting) return <>{text}</>;
  const left = Math.max(0, job.ready_at - now);
  if (job.state === "WAITING_APPROVAL") return <>{text.replace(/\b[\dhms]+ left\b/, `${span(left)} left`)}</>;
  return <>{text.replace(/\bin [\d.]+s\b/, `in ${Math.ceil(left)}s`)}</>;
}

function span(seconds: number): string {
  const s = Math.round(seconds);
  if (s >= 3600) return `${Math.floor(s / 3600)}h${String(Math.floor((s % 3600) / 60)).padStart(2, "0")}m`;
  if (s >= 60) return `${Math.floor(s / 60)}m${String(s % 60).padStart(2, "0")}s`;
  return `${s}s`;
}

function Stat({ id, label, bad, children }: { id: string; label: string; bad?: boolean; children: ReactNode }) {
  return (
    <div className={"job-stat" + (bad ? " bad" : "")}>
      <div className="label">{label}</div>
      <div className="value" data-testid={"job-" + id}>{children}</div>
    </div>
  );
}

function Details({ job }: { job: Job }) {
  const rows: [string, string, ReactNode][] = [];
  const add = (key: string, label: string, value: ReactNode) => rows.push([key, label, value]);
  if (job.name && job.node && job.name !== job.node) add("node", "Node", <span className="mono">{job.node}</span>);
  add("kind", "Kind", job.kind);
  if (job.kind !== "gate") {
    if (job.file) {
      add("file", "File", <span className="mono">{job.file}</span>);
      if (job.command?.length > 1) add("args", "Arguments", <Command argv={job.command.slice(1)} />);
    } else {
      add("command", "Command", job.command?.length ? <Command argv={job.command} /> : "—");
    }
  }
  if (job.depends_on?.length) {
    add("depends-on", "Depends on", job.depends_on.map((p: string) => (
      <Link key={p} className="tag dep" to={`/jobs/${seg(job.run_id + "/" + p)}`}>{p}</Link>)));
  }
  add("tags", "Tags", job.tags?.length ? job.tags.map((t: string) => <span key={t} className="tag">{t}</span>) : "—");
  add("priority", "Priority", String(job.priority ?? 0));
  if (job.kind !== "gate") add("failures", "Failures", String(job.failures ?? 0));
  if (job.kind === "gate" && job.reason) add("reason", "Reason", job.reason);
  if (job.kind === "gate" && job.waiting) add("waiting", "Waiting", <span className="job-waiting"><Waiting job={job} /></span>);
  add("submitted", "Submitted", when(job.submitted_at));
  if (job.kind !== "gate") add("started", "Started", when(job.started_at));
  else if (job.started_at) add("started", "Asked", when(job.started_at));
  add("finished", "Finished", when(job.finished_at));
  return (
    <dl className="job-facts">
      {rows.map(([key, label, value]) => (
        <div key={key} className="job-fact">
          <dt>{label}</dt>
          <dd data-testid={"job-" + key}>{value}</dd>
        </div>
      ))}
    </dl>
  );
}

function Command({ argv }: { argv: string[] }) {
  const [open, setOpen] = useState(false);
  const text = shellJoin(argv);
  const long = text.length > 240 || text.split("\n").length > 4;
  return (
    <>
      <code className={"job-command" + (long && !open ? " clamped" : "")}>{text}</code>
      {long && (
        <button className="link small" data-testid="job-command-toggle" onClick={() => setOpen(!open)}>
          {open ? "less" : "show all"}</button>
      )}
    </>
  );
}

function Elapsed({ from, to, running }: { from: number | null; to: number | null; running: boolean }) {
  const now = useNow(running ? 1000 : 3600_000);
  if (!from) return <>—</>;
  return <>{duration((to ?? (running ? now : null) ?? from) - from)}</>;
}

function Attempts({ job, wide }: { job: Job; wide: boolean }) {
  const rows: Attempt[] = [...(job.attempts ?? [])];
  if (job.state === "RUNNING" || (!job.attempts && job.started_at)) {
    rows.push({
      attempt: job.attempt, worker: job.worker, started_at: job.started_at,
      finished_at: job.finished_at, exit_code: job.exit_code,
      state: job.state === "RUNNING" ? "RUNNING" : job.state, reason: job.reason,
      current: job.state === "RUNNING",
    });
  }
  const dropped: number = job.attempts_dropped ?? 0;
  return (
    <section className="job-section">
      <h3>Attempts <span className="muted count">{dropped + rows.length || ""}</span></h3>
      {rows.length === 0
        ? <div className="muted small">no attempt yet</div>
        : (
          <table className="grid job-attempts" data-testid="attempts">
            <thead>
              <tr><th>#</th><th>Worker</th>{wide && <th>Started</th>}<th>Took</th><th>Exit</th><th>State</th><th>Reason</th></tr>
            </thead>
            <tbody>
              {dropped > 0 && (
                <tr className="dropped"><td colSpan={wide ? 7 : 6} className="muted">
                  {dropped} earlier attempt{dropped === 1 ? "" : "s"} not kept</td></tr>
              )}
              {rows.map((a) => (
                <tr key={a.attempt + (a.current ? "-now" : "")} data-testid="attempt"
                  className={a.current ? "current" : undefined}
                  title={`attempt ${a.attempt}: started ${when(a.started_at)}, ended ${when(a.finished_at)}`}>
                  <td>{a.attempt}</td>
                  <td>{a.worker ?? "—"}</td>
                  {wide && <td>{clock(a.started_at)}</td>}
                  <td><Elapsed from={a.started_at} to={a.finished_at} running={!!a.current} /></td>
                  <td className={a.exit_code ? "exit-bad" : undefined}>{a.exit_code ?? "—"}</td>
                  <td><StateBadge state={a.state} /></td>
                  <td className="reason">{a.reason ?? ""}</td>
                </tr>
              ))}
            </tbody>
          </table>
        )}
    </section>
  );
}

function Result({ value }: { value: unknown }) {
  const [open, setOpen] = useState(false);
  if (value === null || value === undefined) return null;
  const text = typeof value === "string" ? value : JSON.stringify(value, null, 2);
  const lines = text.split("\n").length;
  const large = lines > 14 || text.length > 1200;
  return (
    <section className="job-section">
      <h3>Result</h3>
      <pre className={"job-result" + (large && !open ? " collapsed" : "")} data-testid="job-result">{text}</pre>
      {large && (
        <button className="link small" data-testid="job-result-toggle" onClick={() => setOpen(!open)}>
          {open ? "collapse" : `show all (${lines} lines)`}
        </button>
      )}
    </section>
  );
}

function CancelConfirm({ job, onClose, onDone, onError }: {
  job: Job; onClose: () => void; onDone: () => void; onError: (e: unknown) => void;
}) {
  const cancel = async () => {
    try {
      await api.post(`/jobs/${seg(job.job_id)}/cancel`);
      onClose();
      onDone();
    } catch (e) {
      onError(e);
    }
  };
  return (
    <div className="job-confirm" role="alertdialog">
      <span>Cancel <b>{displayName(job)}</b>?{job.state === "RUNNING" ? " Its process is killed." : ""}</span>
      <ActionButton className="danger solid" testid="confirm" onClick={cancel}>Yes, cancel</ActionButton>
      <button data-testid="confirm-dismiss" onClick={onClose}>Keep it</button>
    </div>
  );
}

function GateBox({ job, onJob, onError }: {
  job: Job; onJob: (job: Job) => void; onError: (e: unknown) => void;
}) {
  const [comment, setComment] = useState("");
  const viewer = currentRole() === "viewer";
  const readOnly = viewer ? "a viewer session is read-only" : undefined;
  const decide = async (approved: boolean) => {
    try {
      const next = await api.post<Job>(`/gates/${seg(job.job_id)}/decide`, { approved, comment });
      onError(null);
      if (next && next.job_id) onJob(next);
    } catch (e) {
      onError(e);
    }
  };
  const d = job.decision;
  return (
    <section className={"gate-box" + (d ? (d.approved ? " approved" : " rejected") : "")} data-testid="gate">
      <div className="gate-question" data-testid="gate-message">{job.message || "(no question)"}</div>
      {job.state === "WAITING_APPROVAL" && (
        <div className="gate-form">
          <textarea data-testid="gate-comment" rows={2} placeholder="comment (optional)"
            value={comment} onChange={(e) => setComment(e.target.value)} />
          <div className="gate-buttons">
            <ActionButton className="approve" testid="approve" disabled={viewer} title={readOnly}
              onClick={() => decide(true)}>Approve</ActionButton>
            <ActionButton className="danger" testid="reject" disabled={viewer} title={readOnly}
              onClick={() => decide(false)}>Reject</ActionButton>
          </div>
        </div>
      )}
      {d && (
        <div className="gate-decision" data-testid="gate-decision">
          <span className={"verdict " + (d.approved ? "yes" : "no")} data-testid="decision-verdict">
            {d.approved ? "✓ approved" : "✕ rejected"}</span>
          {" by "}<b data-testid="decision-by">{d.by || "—"}</b>
          {d.via && <span className="muted"> via {d.via}</span>}
          <span className="muted"> · {when(d.at)}</span>
          {d.comment && <blockquote data-testid="decision-comment">{d.comment}</blockquote>}
        </div>
      )}
      {!d && job.state !== "WAITING_APPROVAL" && (
        <div className="muted small">{ENDED.has(job.state)
          ? "ended without a decision" : "asks once the jobs it depends on are done"}</div>
      )}
    </section>
  );
}

function clock(ts: number | null | undefined): string {
  if (!ts) return "—";
  return new Date(ts * 1000).toLocaleTimeString(undefined, { hour12: false });
}

function shellJoin(argv: string[]): string {
  return argv.map((a) => (/^[\w@%+=:,./-]+$/.test(a) ? a : "'" + a.replace(/'/g, "'\\''") + "'")).join(" ");
}
