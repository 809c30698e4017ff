// Import a pipeline: paste YAML or upload a .yaml file (Titan's format or the public
// reference's), with the scripts its `file:` steps name if you have them. The master's own
// parser reads it (POST /api/v1/pipelines/parse); what it refuses is listed here.
import { useState } from "react";
import { message } from "../common";
import { PipelineError } from "./http";
import type { Problem } from "./types";

export function ImportDialog({ onImport, onClose }: {
  onImport: (yaml: string, files: Record<string, string>) => Promise<void>;
  onClose: () => void;
}) {
  const [text, setText] = useState("");
  const [files, setFiles] = useState<Record<string, string>>({});
  const [busy, setBusy] = useState(false);
  const [error, setError] = useState<string>("");
  const [problems, setProblems] = useState<Problem[]>([]);

  const pick = async (list: FileList | null) => {
    if (!list) return;
    const scripts: Record<string, string> = { ...files };
    let yaml: string | null = null;
    for (const f of Array.from(list)) {
      const content = await f.text();
      if (/\.ya?ml$/i.test(f.name) && yaml === null) yaml = content;
      else scripts[f.name] = content;
    }
    if (yaml !== null) setText(yaml);
    setFiles(scripts);
  };

  const submit = async () => {
    setBusy(true);
    setError("");
    setProblems([]);
    try {
      await onImport(text, files);
    } catch (e) {
      setError(message(e));
      if (e instanceof PipelineError) setProblems(e.problems);
    } finally {
      setBusy(false);
    }
  };

  return (
    <div className="cn-modal-back" onMouseDown={(e) => { if (e.target === e.currentTarget) onClose(); }}>
      <div className="cn-modal" role="dialog" aria-label="Import a pipeline" data-testid="import-dialog"
        onKeyDown={(e) => { if (e.key === "Escape") onClose(); }}>
        <div className="cn-modal-head">
          <b>Import a pipeline</b>
          <span className="muted">Titan's YAML or the reference's; it replaces the canvas (Ctrl+Z brings it back)</span>
          <span className="spacer" />
          <button className="link" onClick={onClose} aria-label="close">×</button>
        </div>
        <textarea data-testid="import-text" className="mono cn-import-text" rows={16} autoFocus
          spellCheck={false} value={text} onChange={(e) => setText(e.target.value)}
          placeholder={"name: etl\njobs:\n  - id: extract\n    command: python3 extract.py\n  - id: load\n    command: python3 load.py\n    depends_on: [extract]"} />
        <div className="cn-import-row">
          <label className="cn-file">
            Upload a .yaml file (and its scripts):{" "}
            <input type="file" data-testid="import-file" multiple
              accept=".yaml,.yml,.py,.sh,text/*,application/yaml"
              onChange={(e) => { void pick(e.target.files); }} />
          </label>
          {Object.keys(files).length > 0 && (
            <span className="muted" data-testid="import-scripts">scripts: {Object.keys(files).join(", ")}</span>
          )}
          <span className="spacer" />
          <button onClick={onClose}>Cancel</button>
          <button className="primary" data-testid="import-submit" disabled={busy || !text.trim()}
            onClick={submit}>{busy ? "Reading…" : "Import"}</button>
        </div>
        {error && (
          <div className="cn-import-error" data-testid="import-error" role="alert">
            <div>{error}</div>
            {(problems.length > 1 || (problems.length === 1 && problems[0].message !== error)) && (
              <ul>{problems.map((p, i) => (
                <li key={i} data-testid="import-problem">{p.step ? <b>{p.step}{p.key ? "." + p.key : ""}: </b> : null}{p.message}</li>
              ))}</ul>
            )}
          </div>
        )}
      </div>
    </div>
  );
}
