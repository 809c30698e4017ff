// The pipeline as YAML and as Python (titan.sdk.Pipeline), side by side, both made from the same
// draft by the model; each can be copied or downloaded, and so can the scripts the steps ship.
import { useState } from "react";

/** Copies text: the async clipboard where the page may use it, else a hidden textarea. */
export async function copyText(text: string): Promise<void> {
  try {
    if (navigator.clipboard && window.isSecureContext) {
      await navigator.clipboard.writeText(text);
      return;
    }
  } catch {
    // fall through to the textarea
  }
  const area = document.createElement("textarea");
  area.value = text;
  area.setAttribute("readonly", "");
  area.style.position = "fixed";
  area.style.top = "-1000px";
  document.body.appendChild(area);
  area.select();
  try {
    if (!document.execCommand("copy")) throw new Error("the browser refused to copy");
  } finally {
    document.body.removeChild(area);
  }
}

/** Saves text as a file through a Blob link. */
export function download(name: string, text: string, type = "text/plain"): void {
  const url = URL.createObjectURL(new Blob([text], { type: type + ";charset=utf-8" }));
  const a = document.createElement("a");
  a.href = url;
  a.download = name;
  document.body.appendChild(a);
  a.click();
  document.body.removeChild(a);
  setTimeout(() => URL.revokeObjectURL(url), 10_000);
}

function Code({ title, lang, text, fileName, testid, mime }: {
  title: string; lang: string; text: string; fileName: string; testid: string; mime: string;
}) {
  const [note, setNote] = useState("");
  const say = (s: string) => { setNote(s); window.setTimeout(() => setNote(""), 1800); };
  return (
    <div className="cn-code-pane">
      <div className="cn-code-head">
        <b>{title}</b><span className="muted mono">{fileName}</span>
        <span className="spacer" />
        {note && <span className="cn-note" data-testid={"copied-" + lang}>{note}</span>}
        <button data-testid={"copy-" + lang} title="copy to the clipboard"
          onClick={() => copyText(text).then(() => say("copied"), (e) => say(String(e?.message ?? e)))}>Copy</button>
        <button data-testid={"download-" + lang} title={"download " + fileName}
          onClick={() => download(fileName, text, mime)}>Download</button>
      </div>
      <pre className="cn-code-text" data-testid={testid}>{text}</pre>
    </div>
  );
}

export function ExportPanel({ name, yaml, python, files, onClose }: {
  name: string; yaml: string; python: string; files: Record<string, string>; onClose: () => void;
}) {
  const base = name.trim().replace(/[^A-Za-z0-9_.-]+/g, "-") || "pipeline";
  const scripts = Object.entries(files);
  return (
    <div className="cn-export" data-testid="export-panel">
      <div className="cn-export-head">
        <b>Export</b>
        <span className="muted">the same pipeline two ways: <code>titan run {base}.yaml</code> or <code>python {base}.py</code></span>
        <span className="spacer" />
        {scripts.length > 0 && (
          <span className="cn-scripts" data-testid="export-scripts">
            scripts beside it:
            {scripts.map(([file, text]) => (
              <button key={file} className="link mono" data-testid={"download-script-" + file}
                title={"download " + file} onClick={() => download(file, text)}>{file}</button>
            ))}
          </span>
        )}
        <button className="link" data-testid="export-close" onClick={onClose} aria-label="close">×</button>
      </div>
      <div className="cn-export-body">
        <Code title="YAML" lang="yaml" text={yaml} fileName={base + ".yaml"} testid="export-yaml" mime="application/yaml" />
        <Code title="Python" lang="python" text={python} fileName={base + ".py"} testid="export-python" mime="text/x-python" />
      </div>
    </div>
  );
}
