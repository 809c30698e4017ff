// The steps one can add: drag one onto the canvas (HTML5 drag and drop), or click it (or press
// Enter on it) to add it beside the others.
import type { StepKind } from "./types";
import { KINDS } from "./StepNode";

export const DRAG_TYPE = "application/x-titan-step";

export function Palette({ onAdd }: { onAdd: (kind: StepKind) => void }) {
  return (
    <div className="cn-palette" data-testid="palette">
      <div className="cn-section-title">Steps</div>
      {KINDS.map(({ kind, label, icon, hint }) => (
        <button key={kind} className={`cn-pal-item cn-${kind}`} data-testid={"palette-" + kind}
          draggable title={`${hint} — drag onto the canvas, or click to add`}
          onDragStart={(e) => {
            e.dataTransfer.setData(DRAG_TYPE, kind);
            e.dataTransfer.setData("text/plain", kind);
            e.dataTransfer.effectAllowed = "copy";
          }}
          onClick={() => onAdd(kind)}>
          <span className="cn-icon" aria-hidden>{icon}</span>
          <span className="cn-pal-text">
            <span className="cn-pal-label">{label}</span>
            <span className="cn-pal-hint">{hint}</span>
          </span>
        </button>
      ))}
    </div>
  );
}
