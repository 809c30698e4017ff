// The drafts kept on the master (GET /api/v1/drafts), newest first: open one, delete one, or
// start a new empty one.
import type { DraftInfo } from "./http";

function ago(ts: number): string {
  const s = Math.max(0, Date.now() / 1000 - ts);
  if (s < 60) return "just now";
  if (s < 3600) return `${Math.floor(s / 60)} min ago`;
  if (s < 86400) return `${Math.floor(s / 3600)} h ago`;
  return new Date(ts * 1000).toLocaleDateString();
}

export function Drafts({ drafts, current, onOpen, onDelete, onNew }: {
  drafts: DraftInfo[] | null;
  current: string | null;
  onOpen: (name: string) => void;
  onDelete: (name: string) => void;
  onNew: () => void;
}) {
  return (
    <div className="cn-drafts">
      <div className="cn-section-title">
        Drafts <span className="spacer" />
        <button className="link" data-testid="draft-new" title="start a new, empty pipeline" onClick={onNew}>+ new</button>
      </div>
      <ul data-testid="drafts">
        {drafts === null && <li className="muted">loading…</li>}
        {drafts?.length === 0 && <li className="muted cn-drafts-empty">none yet: what you build is saved here as you go</li>}
        {drafts?.map((d) => (
          <li key={d.name} className={d.name === current ? "current" : ""}>
            <button className="cn-draft-open" data-testid={"draft-" + d.name} title={"open " + d.name}
              onClick={() => onOpen(d.name)}>
              <span className="cn-draft-name">{d.name}</span>
              <span className="muted">{d.steps} step{d.steps === 1 ? "" : "s"} · {ago(d.updated_at)}</span>
            </button>
            <button className="link cn-draft-del" data-testid={"draft-delete-" + d.name}
              title={"delete the draft " + d.name} aria-label={"delete " + d.name}
              onClick={() => onDelete(d.name)}>×</button>
          </li>
        ))}
      </ul>
    </div>
  );
}
