// The cluster at a glance (issue 17 §1): job counts, slots, persistence and warnings; every
// worker with what it runs; start a worker, drain one. Live from the `worker` changes.
import { useCallback, useEffect, useRef, useState, type FormEvent } from "react";
import { Link } from "react-router";
import { api, currentRole, seg, type Change, type Worker } from "../api";
import { ErrorBanner, StateBadge, duration, message, useLoad, useNow, Empty } from "../common";
import { useEvents } from "../events";
import { ConfirmButton } from "./ConfirmButton";
import "./ClusterView.css";

interface Cluster {
  jobs: Record<string, number>;
  workers: number;
  slots: number;
  busy: number;
  persistence: Record<string, any> | null;
  recovery: Record<string, any> | null;
  text_frames: string;
  storage: string | null;
  warnings: string[];
}

/** A worker as shown: its view and when we got it (its heartbeat age ticks from there). */
type Row = Worker & { seenAt: number };

// Heartbeats are not in the live feed (one per worker per interval would swamp it): their
// ages (and the job counts) are read over REST this often and tick in between. What a worker
// runs and its state come from the feed alone.
const REFRESH_MS = 5000;
const JOBS_SHOWN = 4;
const JOB_ORDER = ["RUNNING", "PENDING", "DELAYED", "SCHEDULED", "WAITING_APPROVAL", "RETRYING",
  "COMPLETED", "FAILED", "DEAD", "CANCELLED"];

function stamp(workers: Worker[]): Map<string, Row> {
  const at = Date.now() / 1000;
  return new Map(workers.map((w) => [w.worker_id, { ...w, seenAt: at }]));
}

export function ClusterView() {
  const cluster = useLoad(() => api.get<Cluster>("/cluster"), []);
  const workers = useLoad(async () => stamp((await api.get<{ workers: Worker[] }>("/workers")).workers), []);
  const [actionError, setActionError] = useState<unknown>(null);
  const now = useNow(1000);

  const reloadAll = useCallback(() => { cluster.reload(); workers.reload(); }, [cluster.reload, workers.reload]);
  useEffect(() => {
    const t = setInterval(() => {
      cluster.reload();
      api.get<{ workers: Worker[] }>("/workers").then(({ workers: fresh }) => {
        const at = Date.now() / 1000;
        workers.setData((old) => {
          if (!old) return old;
          const next = new Map(old);
          for (const w of fresh) {
            const row = next.get(w.worker_id);
            if (row) next.set(w.worker_id, { ...row, last_heartbeat_ago: w.last_heartbeat_ago, idle_for: w.idle_for, seenAt: at });
          }
          return next;
        });
      }, () => { /* the next tick tries again; the feed's indicator says the master is away */ });
    }, REFRESH_MS);
    return () => clearInterval(t);
  }, [cluster.reload, workers.setData]);

  // The cluster's counts move with every job: refresh them at most once a second when a
  // worker changes (a job started or ended on it), not once per change.
  const pending = useRef<number | null>(null);
  const soon = useCallback(() => {
    if (pending.current !== null) return;
    pending.current = window.setTimeout(() => { pending.current = null; cluster.reload(); }, 1000);
  }, [cluster.reload]);
  const pendingWorkers = useRef<number | null>(null);
  const soonWorkers = useCallback(() => {
    if (pendingWorkers.current !== null) return;
    pendingWorkers.current = window.setTimeout(() => { pendingWorkers.current = null; workers.reload(); }, 200);
  }, [workers.reload]);
  useEffect(() => () => {
    if (pending.current !== null) clearTimeout(pending.current);
    if (pendingWorkers.current !== null) clearTimeout(pendingWorkers.current);
  }, []);

  useEvents({ kind: ["worker"] }, (changes: Change[]) => {
    let joined = false;
    workers.setData((old) => {
      const next = new Map(old ?? []);
      const at = Date.now() / 1000;
      for (const c of changes) {
        if (c.kind !== "worker") continue;
        if (c.data === null) { next.delete(c.id); continue; }
        const before = next.get(c.id);
        if (!before) joined = true;
        // The feed's view has no spawned_by (the autoscaler's and the dashboard's own note).
        next.set(c.id, { spawned_by: before?.spawned_by ?? null, ...before, ...c.data, seenAt: at });
      }
      return next;
    });
    // Who started a worker (spawned_by) is not in the feed's view: read it for a new one.
    if (joined) soonWorkers();
    soon();
  }, reloadAll);

  const rows = [...(workers.data?.values() ?? [])].sort(
    (a, b) => (a.state === "DEAD" ? 1 : 0) - (b.state === "DEAD" ? 1 : 0) || a.joined_at - b.joined_at
      || a.name.localeCompare(b.name));
  const live = rows.filter((w) => w.state !== "DEAD");
  const slots = live.reduce((n, w) => n + w.slots, 0);
  const busy = live.reduce((n, w) => n + w.busy, 0);
  const c = cluster.data;

  return (
    <div className="cluster-view">
      <div className="toolbar">
        <h1>Cluster</h1>
        <span className="spacer" />
        <StartWorker />
      </div>
      <ErrorBanner error={cluster.error ?? workers.error} />
      <ErrorBanner error={actionError} onClose={() => setActionError(null)} />
      {c && c.warnings.length > 0 && (
        <div className="cluster-warnings" data-testid="warnings" role="alert">
          {c.warnings.map((w, i) => <div key={i}><b>Warning</b> {w}</div>)}
        </div>
      )}
      <div className="cluster-cards" data-testid="summary">
        <div className="card">
          <div className="label">Workers</div>
          <div className="big" data-testid="summary-workers">{live.length}</div>
          <div className="sub muted">
            {countBy(live, "DRAINING", "draining")}{countBy(live, "DISCONNECTED", "away")}
            {live.length === 0 ? "none connected" : live.every((w) => w.state === "ALIVE") ? "all alive" : ""}
          </div>
        </div>
        <div className="card">
          <div className="label">Slots busy</div>
          <div className="big" data-testid="summary-slots">{busy}<span className="of"> / {slots}</span></div>
          <SlotBar busy={busy} slots={slots} wide />
        </div>
        <div className="card jobs-card">
          <div className="label">Jobs by state</div>
          <div className="job-counts" data-testid="summary-jobs">
            {c ? JOB_ORDER.filter((s) => (c.jobs[s] ?? 0) > 0).map((s) => (
              <span key={s} className={"count-chip state-" + s.toLowerCase()} data-state={s}>
                <i />{s.replace("_", " ").toLowerCase()} <b>{c.jobs[s]}</b>
              </span>
            )) : null}
            {c && JOB_ORDER.every((s) => !c.jobs[s]) && <span className="muted">no jobs yet</span>}
          </div>
        </div>
        <div className="card">
          <div className="label">Persistence</div>
          <Persistence c={c} />
        </div>
      </div>

      <table className="grid workers-table" data-testid="workers">
        <thead>
          <tr>
            <th>Worker</th><th>State</th><th>Host</th><th>Tags</th><th>Slots</th>
            <th>Running</th><th className="num">Done</th><th>Heartbeat</th><th>Started by</th><th />
          </tr>
        </thead>
        <tbody>
          {rows.map((w) => (
            <WorkerRow key={w.worker_id} w={w} now={now} onError={setActionError} />
          ))}
        </tbody>
      </table>
      {workers.data && rows.length === 0 && <Empty>No workers have joined. Start one above, or run titan-worker.</Empty>}
    </div>
  );
}

function idle(seconds: number): string {
  return seconds < 60 ? `idle ${Math.floor(seconds)} s` : `idle ${duration(seconds)}`;
}

function countBy(rows: Row[], state: string, label: string) {
  const n = rows.filter((w) => w.state === state).length;
  return n ? <span className="sub-item">{n} {label}</span> : null;
}

function Persistence({ c }: { c: Cluster | null }) {
  if (!c) return <div className="big">…</div>;
  const p = c.persistence;
  if (c.storage) return <div className="big bad" title={c.storage}>unavailable</div>;
  if (!p) return <><div className="big">memory</div><div className="sub muted">nothing kept on disk</div></>;
  return (
    <>
      <div className="big" data-testid="summary-persistence">{p.backend}</div>
      <div className="sub muted" title={p.directory ?? p.path}>
        fsync {p.fsync}{typeof p.bytes === "number" ? ` · ${bytes(p.bytes)}` : ""}
      </div>
    </>
  );
}

function bytes(n: number): string {
  if (n < 1024) return `${n} B`;
  if (n < 1024 * 1024) return `${(n / 1024).toFixed(1)} KiB`;
  if (n < 1024 ** 3) return `${(n / 1024 / 1024).toFixed(1)} MiB`;
  return `${(n / 1024 ** 3).toFixed(2)} GiB`;
}

function SlotBar({ busy, slots, wide }: { busy: number; slots: number; wide?: boolean }) {
  const pct = slots > 0 ? Math.min(100, (100 * busy) / slots) : 0;
  return (
    <span className={"slot-bar" + (wide ? " wide" : "")} title={`${busy} of ${slots} slots busy`}>
      <span style={{ width: pct + "%" }} className={busy >= slots && slots > 0 ? "full" : ""} />
    </span>
  );
}

function WorkerRow({ w, now, onError }: { w: Row; now: number; onError: (e: unknown) => void }) {
  const age = w.state === "DEAD" ? null : w.last_heartbeat_ago + Math.max(0, now - w.seenAt);
  const shown = w.jobs.slice(0, JOBS_SHOWN);
  const spawned = w.spawned_by ?? null;
  return (
    <tr data-testid={"worker-" + w.name} data-state={w.state} className={w.state === "DEAD" ? "gone" : ""}>
      <td><b className="mono">{w.name}</b>{w.worker_id !== w.name && <div className="muted tiny mono">{w.worker_id}</div>}</td>
      <td><StateBadge state={w.state} /></td>
      <td className="mono">{w.host}</td>
      <td>{w.tags.length ? w.tags.map((t) => <span key={t} className="tag">{t}</span>) : <span className="muted">—</span>}</td>
      <td className="slots-cell" data-testid={"slots-" + w.name}>
        <SlotBar busy={w.busy} slots={w.slots} />
        <span className="slot-text">{w.busy}/{w.slots}</span>
      </td>
      <td className="jobs-cell" data-testid={"jobs-" + w.name}>
        {shown.map((j) => (
          <Link key={j} to={"/jobs/" + seg(j)} className="job-link mono" title={j}>{j}</Link>
        ))}
        {w.jobs.length > JOBS_SHOWN && <span className="muted tiny">+{w.jobs.length - JOBS_SHOWN} more</span>}
        {w.jobs.length === 0 && (
          <span className="muted">{w.idle_for !== null && w.idle_for !== undefined ? idle(w.idle_for + Math.max(0, now - w.seenAt)) : "—"}</span>
        )}
      </td>
      <td className="num">{w.completed}</td>
      <td className={age !== null && age > 10 ? "late" : ""} data-testid={"heartbeat-" + w.name}>
        {age === null ? "—" : `${age < 10 ? age.toFixed(1) : Math.round(age)} s ago`}
      </td>
      <td>{spawned ? <span className={"origin origin-" + spawned}>{spawned}</span> : <span className="muted">—</span>}</td>
      <td className="actions">
        {(w.state === "ALIVE" || w.state === "DISCONNECTED") && (
          <ConfirmButton testid={"drain-" + w.name} disabled={currentRole() === "viewer"} question={<>Drain <b>{w.name}</b>? It finishes its jobs, then leaves.</>}
            title="take no new jobs, finish the running ones, then leave"
            onConfirm={() => api.post(`/workers/${seg(w.name)}/drain`).catch(onError)}>Drain</ConfirmButton>
        )}
      </td>
    </tr>
  );
}

function StartWorker() {
  const [open, setOpen] = useState(false);
  const [tags, setTags] = useState("");
  const [slots, setSlots] = useState("4");
  const [busy, setBusy] = useState(false);
  const [started, setStarted] = useState<string | null>(null);
  const [problem, setProblem] = useState<string | null>(null);

  async function submit(e: FormEvent) {
    e.preventDefault();
    const n = Number(slots);
    if (!Number.isInteger(n) || n < 1) { setProblem("slots: a whole number, 1 or more"); return; }
    setProblem(null);
    setBusy(true);
    try {
      const list = tags.split(",").map((t) => t.trim()).filter(Boolean);
      const got = await api.post<{ name: string; pid?: number }>("/workers", { tags: list, slots: n });
      setStarted(`Started ${got.name}${got.pid ? ` (pid ${got.pid})` : ""}: it shows below once it joins.`);
      setOpen(false);
      setTags("");
    } catch (err) {
      setProblem(message(err));
    } finally {
      setBusy(false);
    }
  }

  return (
    <div className="start-worker">
      {started && <span className="started-note" data-testid="start-worker-result">{started}</span>}
      <button className="primary" data-testid="start-worker" disabled={currentRole() === "viewer"}
        title={currentRole() === "viewer" ? "a viewer session is read-only" : "the master starts a local titan-worker"}
        onClick={() => { setOpen((o) => !o); setStarted(null); }}>
        + Start a worker
      </button>
      {open && (
        <form className="start-worker-form" onSubmit={submit} data-testid="start-worker-form">
          <div className="form-title">Start a local worker</div>
          <label>Tags <input data-testid="worker-tags" value={tags} placeholder="gpu, cuda" autoFocus
            onChange={(e) => setTags(e.target.value)} /></label>
          <label>Slots <input data-testid="worker-slots" type="number" min={1} value={slots}
            onChange={(e) => setSlots(e.target.value)} /></label>
          {problem && <div className="form-problem" data-testid="start-worker-error" role="alert">{problem}</div>}
          <div className="form-actions">
            <button type="button" onClick={() => setOpen(false)}>Cancel</button>
            <button type="submit" className="primary" data-testid="start-worker-submit" disabled={busy}>
              {busy ? "Starting…" : "Start"}
            </button>
          </div>
        </form>
      )}
    </div>
  );
}
