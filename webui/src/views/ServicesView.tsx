// Long-running services (issue 17 §6): state, where they run, their port as a link, restarts,
// health and last lines; restart, stop, logs. Live from the `service` changes.
import { Fragment, useCallback, useRef, useState } from "react";
import { Link } from "react-router";
import { api, currentRole, seg, type Change } from "../api";
import { ActionButton, Empty, ErrorBanner, StateBadge, duration, useLoad, useNow } from "../common";
import { useEvents } from "../events";
import { ConfirmButton } from "./ConfirmButton";
import "./ServicesView.css";

export interface Service {
  name: string;
  job_id: string;
  state: string;
  worker: string | null;
  host: string | null;
  port: number | string | null;
  pid: number | null;
  restarts: number;
  uptime: number | null;
  healthy: boolean | null;
  health: string | null;
  health_error: string | null;
  reason: string | null;
  command: string[];
  restart: string;
  last_lines: string[];
  last_exit: any;
}

type Row = Service & { seenAt: number };

const FINISHED = new Set(["STOPPED", "COMPLETED", "FAILED", "DEAD", "CANCELLED"]);

function stamp(list: Service[]): Map<string, Row> {
  const at = Date.now() / 1000;
  return new Map(list.map((s) => [s.name, { ...s, seenAt: at }]));
}

/** Where a browser reaches the service: a loopback or wildcard host is this machine. */
export function serviceUrl(s: Service): string | null {
  if (s.port === null || s.port === undefined || s.port === "") return null;
  let host = s.host || "127.0.0.1";
  if (host === "localhost" || host === "0.0.0.0" || host === "::" || host.startsWith("127.")) host = "127.0.0.1";
  if (host.includes(":") && !host.startsWith("[")) host = `[${host}]`;
  return `http://${host}:${s.port}/`;
}

export function ServicesView() {
  const [all, setAll] = useState(false);
  const list = useLoad(async () => stamp((await api.get<{ services: Service[] }>("/services", { all })).services), [all]);
  const [actionError, setActionError] = useState<unknown>(null);
  const [open, setOpen] = useState<Set<string>>(new Set());
  const now = useNow(1000);

  // A change of another deployment than the one shown (a new NAME.N, or an old one's end)
  // is settled by the list over REST, which knows which one is the latest.
  const pending = useRef<number | null>(null);
  const reloadSoon = useCallback(() => {
    if (pending.current !== null) return;
    pending.current = window.setTimeout(() => { pending.current = null; list.reload(); }, 300);
  }, [list.reload]);

  useEvents({ kind: ["service"] }, (changes: Change[]) => {
    let stale = false;
    list.setData((old) => {
      const next = new Map(old ?? []);
      const at = Date.now() / 1000;
      for (const c of changes) {
        if (c.kind !== "service") continue;
        const view: Service | undefined = c.data?.service;
        if (!view) {
          for (const [name, row] of next) if (row.job_id === c.id) next.delete(name);
          continue;
        }
        const shown = next.get(view.name);
        if (shown && shown.job_id !== view.job_id) { stale = true; continue; }
        next.set(view.name, { ...view, seenAt: at });
      }
      return next;
    });
    if (stale) reloadSoon();
  }, list.reload);

  const rows = [...(list.data?.values() ?? [])].sort((a, b) => a.name.localeCompare(b.name));
  const viewer = currentRole() === "viewer";

  function toggle(name: string) {
    setOpen((o) => {
      const n = new Set(o);
      if (n.has(name)) n.delete(name); else n.add(name);
      return n;
    });
  }

  return (
    <div className="services-view">
      <div className="toolbar">
        <h1>Services</h1>
        <span className="muted count">{list.data ? `${rows.length} shown` : ""}</span>
        <span className="spacer" />
        <label className="check">
          <input type="checkbox" data-testid="show-all" checked={all} onChange={(e) => setAll(e.target.checked)} />
          include stopped long ago
        </label>
      </div>
      <ErrorBanner error={list.error} />
      <ErrorBanner error={actionError} onClose={() => setActionError(null)} />
      {rows.length > 0 && (
        <table className="grid services-table" data-testid="services">
          <thead>
            <tr>
              <th>Service</th><th>State</th><th>Health</th><th>Worker</th><th>Port</th>
              <th className="num">Restarts</th><th>Uptime</th><th>Last lines</th><th />
            </tr>
          </thead>
          <tbody>
            {rows.map((s) => {
              const url = serviceUrl(s);
              const running = s.state === "RUNNING" || s.state === "UNHEALTHY" || s.state === "STARTING"
                || s.state === "RESTARTING";
              const uptime = s.uptime === null ? null : s.uptime + Math.max(0, now - s.seenAt);
              const expanded = open.has(s.name);
              const last = s.last_lines.length ? s.last_lines[s.last_lines.length - 1] : null;
              return (
                <Fragment key={s.name}>
                  <tr data-testid={"service-" + s.name} data-state={s.state}
                    className={FINISHED.has(s.state) ? "finished" : ""}>
                    <td>
                      <b>{s.name}</b>
                      <div className="muted mono cmd" title={s.command.join(" ")}>{s.command.join(" ")}</div>
                    </td>
                    <td><StateBadge state={s.state} />
                      {s.reason && FINISHED.has(s.state) && <div className="muted tiny" title={s.reason}>{s.reason}</div>}
                    </td>
                    <td data-testid={"health-" + s.name}><Health s={s} /></td>
                    <td className="where">
                      {s.worker ? <span className="mono">{s.worker}</span> : <span className="muted">—</span>}
                      {s.host && <div className="muted tiny mono">{s.host}{s.pid ? ` · pid ${s.pid}` : ""}</div>}
                    </td>
                    <td>
                      {url ? <a href={url} target="_blank" rel="noreferrer noopener" className="mono port"
                        data-testid={"port-" + s.name}>:{s.port} ↗</a> : <span className="muted">—</span>}
                    </td>
                    <td className="num" data-testid={"restarts-" + s.name}>{s.restarts}</td>
                    <td className="nowrap">{uptime === null ? <span className="muted">—</span> : duration(uptime)}</td>
                    <td className="last-cell">
                      {s.last_lines.length > 0 ? (
                        <button className="lines-toggle mono" data-testid={"lines-" + s.name}
                          onClick={() => toggle(s.name)} title="show the last lines">
                          <span className="caret">{expanded ? "▾" : "▸"}</span>
                          <span className="last-line">{last}</span>
                        </button>
                      ) : <span className="muted">—</span>}
                    </td>
                    <td className="actions">
                      <Link to={"/jobs/" + seg(s.job_id)} className="button-like small" data-testid={"logs-" + s.name}>Logs</Link>
                      <ActionButton className="small" testid={"restart-" + s.name} disabled={!running || viewer}
                        title="stop its process and start it again"
                        onClick={() => api.post(`/services/${seg(s.name)}/restart`).catch(setActionError)}>
                        Restart
                      </ActionButton>
                      <ConfirmButton testid={"stop-" + s.name} disabled={FINISHED.has(s.state) || viewer}
                        question={<>Stop <b>{s.name}</b>?</>}
                        onConfirm={() => api.post(`/services/${seg(s.name)}/stop`).catch(setActionError)}>
                        Stop
                      </ConfirmButton>
                    </td>
                  </tr>
                  {expanded && (
                    <tr className="lines-row" data-testid={"lines-of-" + s.name}>
                      <td colSpan={9}><pre className="log">{s.last_lines.join("\n")}</pre></td>
                    </tr>
                  )}
                </Fragment>
              );
            })}
          </tbody>
        </table>
      )}
      {list.data && rows.length === 0 && (
        <Empty>No services. Deploy one with <code>titan service deploy</code> or a pipeline's <code>service:</code> step.</Empty>
      )}
    </div>
  );
}

function Health({ s }: { s: Service }) {
  if (!s.health) return <span className="muted">no check</span>;
  if (s.healthy === true) return <span className="health ok">● healthy</span>;
  if (s.healthy === false) {
    return (
      <span className="health bad" title={s.health_error ?? ""}>
        ● unhealthy{s.health_error && <div className="tiny health-error">{s.health_error}</div>}
      </span>
    );
  }
  return <span className="muted" title={s.health ?? ""}>checking…</span>;
}
