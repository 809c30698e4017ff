// Small pieces every view uses: loading with errors shown as messages, state badges, times.
import { useCallback, useEffect, useRef, useState, type ReactNode } from "react";
import { ApiError } from "./api";

/** The state colours; the run graph, badges and timeline share them (styles.css). */
export const STATES = [
  "PENDING", "DELAYED", "SCHEDULED", "WAITING_APPROVAL", "RUNNING", "RETRYING",
  "COMPLETED", "FAILED", "DEAD", "CANCELLED",
] as const;

export function stateClass(state: string | null | undefined): string {
  return "state-" + String(state ?? "unknown").toLowerCase();
}

export function StateBadge({ state }: { state: string | null | undefined }) {
  return <span className={"badge " + stateClass(state)} data-state={state ?? ""}>{state ?? "—"}</span>;
}

export function message(e: unknown): string {
  if (e instanceof ApiError) return e.message;
  if (e instanceof Error) return e.message;
  return String(e);
}

export function ErrorBanner({ error, onClose }: { error: unknown; onClose?: () => void }) {
  if (!error) return null;
  return (
    <div className="error" role="alert" data-testid="error">
      <span>{message(error)}</span>
      {onClose && <button className="link" onClick={onClose} aria-label="dismiss">×</button>}
    </div>
  );
}

/**
 * `load` run at mount and whenever `deps` change (and by `reload()`); the last value stays on
 * screen while a reload runs, and an error shows as a message, never a blank page.
 */
export function useLoad<T>(load: () => Promise<T>, deps: unknown[]) {
  const [data, setData] = useState<T | null>(null);
  const [error, setError] = useState<unknown>(null);
  const [loading, setLoading] = useState(true);
  const generation = useRef(0);
  const reload = useCallback(() => {
    const mine = ++generation.current;
    setLoading(true);
    load().then(
      (value) => { if (mine === generation.current) { setData(value); setError(null); setLoading(false); } },
      (e) => { if (mine === generation.current) { setError(e); setLoading(false); } },
    );
    // eslint-disable-next-line react-hooks/exhaustive-deps
  }, deps);
  useEffect(() => { reload(); }, [reload]);
  return { data, setData, error, setError, loading, reload };
}

/** An action button: disabled while it runs; its error goes to `onError`. */
export function ActionButton({ onClick, children, className, testid, disabled, title }: {
  onClick: () => Promise<unknown>; children: ReactNode; className?: string; testid?: string;
  disabled?: boolean; title?: string;
}) {
  const [busy, setBusy] = useState(false);
  return (
    <button className={className} data-testid={testid} disabled={busy || disabled} title={title}
      onClick={async () => { setBusy(true); try { await onClick(); } finally { setBusy(false); } }}>
      {children}
    </button>
  );
}

/** Seconds since the epoch → local date and time; null → "—". */
export function when(ts: number | null | undefined): string {
  if (ts === null || ts === undefined) return "—";
  const d = new Date(ts * 1000);
  return d.toLocaleString(undefined, { hour12: false });
}

/** A duration in seconds, short: 850 ms, 12.3 s, 4 min 05 s, 2 h 03 min. */
export function duration(seconds: number | null | undefined): string {
  if (seconds === null || seconds === undefined || !isFinite(seconds)) return "—";
  if (seconds < 1) return `${Math.round(seconds * 1000)} ms`;
  if (seconds < 60) return `${seconds.toFixed(1)} s`;
  const m = Math.floor(seconds / 60);
  if (m < 60) return `${m} min ${String(Math.floor(seconds % 60)).padStart(2, "0")} s`;
  const h = Math.floor(m / 60);
  return `${h} h ${String(m % 60).padStart(2, "0")} min`;
}

/** Now, in seconds since the epoch, refreshed every `every` ms (for ages and countdowns). */
export function useNow(every = 1000): number {
  const [now, setNow] = useState(Date.now() / 1000);
  useEffect(() => {
    const t = setInterval(() => setNow(Date.now() / 1000), every);
    return () => clearInterval(t);
  }, [every]);
  return now;
}

export function Empty({ children }: { children: ReactNode }) {
  return <div className="empty">{children}</div>;
}
