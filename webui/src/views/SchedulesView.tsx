// Cron schedules (issue 17 §7): next fire time and how soon, how often fired, the last run;
// remove. Added and removed schedules come live; a firing is not in the feed, so the list
// is read again just after the next fire time.
import { useEffect, useState } from "react";
import { Link } from "react-router";
import { api, currentRole, seg, type Change } from "../api";
import { Empty, ErrorBanner, useLoad, useNow, when } from "../common";
import { useEvents } from "../events";
import { ConfirmButton } from "./ConfirmButton";
import "./SchedulesView.css";

interface Schedule {
  schedule_id: string;
  name: string;
  cron: string;
  fired: number;
  next_at: number | null;
  last_run_id: string | null;
}

/** "in 3 min", "in 45 s", "in 2 h 05 min", "now". */
export function relative(seconds: number): string {
  if (seconds < 1) return "now";
  if (seconds < 60) return `in ${Math.floor(seconds)} s`;
  const m = Math.floor(seconds / 60);
  if (m < 60) return `in ${m} min`;
  const h = Math.floor(m / 60);
  if (h < 48) return `in ${h} h ${String(m % 60).padStart(2, "0")} min`;
  return `in ${Math.floor(h / 24)} days`;
}

export function SchedulesView() {
  const list = useLoad(async () => (await api.get<{ schedules: Schedule[] }>("/schedules")).schedules, []);
  const [actionError, setActionError] = useState<unknown>(null);
  const now = useNow(1000);

  useEvents({ kind: ["schedule"] }, (changes: Change[]) => {
    list.setData((old) => {
      const byId = new Map((old ?? []).map((s) => [s.schedule_id, s]));
      for (const c of changes) {
        if (c.kind !== "schedule") continue;
        if (c.data === null) byId.delete(c.id); else byId.set(c.id, c.data as Schedule);
      }
      return [...byId.values()];
    });
  }, list.reload);

  const soonest = Math.min(...(list.data ?? []).map((s) => s.next_at ?? Infinity));
  useEffect(() => {
    if (!isFinite(soonest)) return;
    const wait = Math.max(1000, (soonest - Date.now() / 1000) * 1000 + 1000);
    const t = setTimeout(list.reload, Math.min(wait, 2 ** 31 - 1));
    return () => clearTimeout(t);
  }, [soonest, list.reload]);

  const rows = [...(list.data ?? [])].sort((a, b) => (a.next_at ?? Infinity) - (b.next_at ?? Infinity)
    || a.name.localeCompare(b.name));

  return (
    <div className="schedules-view">
      <div className="toolbar">
        <h1>Schedules</h1>
        <span className="muted count">{list.data ? `${rows.length} schedule${rows.length === 1 ? "" : "s"}` : ""}</span>
      </div>
      <ErrorBanner error={list.error} />
      <ErrorBanner error={actionError} onClose={() => setActionError(null)} />
      {rows.length > 0 && (
        <table className="grid schedules-table" data-testid="schedules">
          <thead>
            <tr><th>Schedule</th><th>Cron</th><th>Next fire</th><th className="num">Fired</th><th>Last run</th><th /></tr>
          </thead>
          <tbody>
            {rows.map((s) => (
              <tr key={s.schedule_id} data-testid={"schedule-" + s.schedule_id}>
                <td><b>{s.name}</b>{s.schedule_id !== s.name && <div className="muted tiny mono">{s.schedule_id}</div>}</td>
                <td><code className="cron">{s.cron}</code></td>
                <td className="nowrap" data-testid={"next-" + s.schedule_id}>
                  {s.next_at === null ? <span className="muted">—</span> : (
                    <>{when(s.next_at)} <span className="soon">{relative(s.next_at - now)}</span></>
                  )}
                </td>
                <td className="num">{s.fired}</td>
                <td>{s.last_run_id
                  ? <Link className="mono" to={"/runs/" + seg(s.last_run_id)}>{s.last_run_id}</Link>
                  : <span className="muted">not yet</span>}</td>
                <td className="actions">
                  <ConfirmButton testid={"remove-" + s.schedule_id} disabled={currentRole() === "viewer"}
                    question={<>Remove <b>{s.name}</b>? Runs it started go on.</>}
                    onConfirm={() => api.del(`/schedules/${seg(s.schedule_id)}`).catch(setActionError)}>
                    Remove
                  </ConfirmButton>
                </td>
              </tr>
            ))}
          </tbody>
        </table>
      )}
      {list.data && rows.length === 0 && (
        <Empty>No schedules. A pipeline with a <code>schedule:</code> cron line adds one when submitted.</Empty>
      )}
    </div>
  );
}
