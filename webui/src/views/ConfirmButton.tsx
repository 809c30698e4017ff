// A destructive action asked twice, in the page (no window.confirm: the browser's own dialog
// blocks the tab and selenium alike). Used by the cluster, services and schedules views.
import { useEffect, useRef, useState, type ReactNode } from "react";
import "./ConfirmButton.css";

export function ConfirmButton({ onConfirm, children, question, testid, className, disabled, title }: {
  onConfirm: () => Promise<unknown>; children: ReactNode; question: ReactNode; testid?: string;
  className?: string; disabled?: boolean; title?: string;
}) {
  const [asking, setAsking] = useState(false);
  const [busy, setBusy] = useState(false);
  const box = useRef<HTMLSpanElement>(null);

  useEffect(() => {
    if (!asking) return;
    const away = (e: MouseEvent) => {
      if (box.current && !box.current.contains(e.target as Node)) setAsking(false);
    };
    const escape = (e: KeyboardEvent) => { if (e.key === "Escape") setAsking(false); };
    document.addEventListener("mousedown", away);
    document.addEventListener("keydown", escape);
    return () => {
      document.removeEventListener("mousedown", away);
      document.removeEventListener("keydown", escape);
    };
  }, [asking]);

  return (
    <span className="confirm-wrap" ref={box}>
      <button className={className ?? "danger small"} data-testid={testid} title={title}
        disabled={disabled || busy} onClick={() => setAsking((a) => !a)}>{children}</button>
      {asking && (
        <span className="confirm-pop" role="dialog">
          <span className="confirm-q">{question}</span>
          <button className="danger small" data-testid="confirm" disabled={busy} autoFocus
            onClick={async () => {
              setBusy(true);
              try { await onConfirm(); } finally { setBusy(false); setAsking(false); }
            }}>Yes</button>
          <button className="small" data-testid="confirm-cancel"
            onClick={() => setAsking(false)}>No</button>
        </span>
      )}
    </span>
  );
}
