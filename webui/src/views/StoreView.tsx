// The store, read only (issue 17 §8): keys by pattern through paged SCAN (never KEYS), each
// with its type and TTL; a key's value beside the list.
import { useEffect, useRef, useState, type FormEvent } from "react";
import { ApiError, api } from "../api";
import { Empty, ErrorBanner, duration } from "../common";
import "./StoreView.css";

interface Key { key: string; type: string; ttl: number }
interface Value { key: string; type: string; ttl: number; value: any }

const PAGE = 100;
// SCAN may answer a step with no match while the walk goes on: take a few steps per click
// so a narrow pattern over many keys still shows something.
const STEPS_PER_LOAD = 10;
const LIST_LIMIT = 1000;

function ttlText(ttl: number): string {
  if (ttl === -1) return "no expiry";
  if (ttl === -2) return "expired";
  return duration(ttl);
}

export function StoreView() {
  const [pattern, setPattern] = useState("*");
  const [searched, setSearched] = useState<string | null>(null);
  const [keys, setKeys] = useState<Key[]>([]);
  const [cursor, setCursor] = useState<number>(0);
  const [loading, setLoading] = useState(false);
  const [error, setError] = useState<unknown>(null);
  const [noStore, setNoStore] = useState<string | null>(null);
  const [selected, setSelected] = useState<string | null>(null);
  const generation = useRef(0);

  async function scan(glob: string, from: number, fresh: boolean) {
    const mine = ++generation.current;
    setLoading(true);
    setError(null);
    let at = from;
    const found: Key[] = [];
    try {
      for (let step = 0; step < STEPS_PER_LOAD; step++) {
        const page = await api.get<{ cursor: number; keys: Key[] }>("/store/keys", { pattern: glob, cursor: at, count: PAGE });
        if (mine !== generation.current) return;
        found.push(...page.keys);
        at = page.cursor;
        if (at === 0 || found.length >= PAGE) break;
      }
      setNoStore(null);
      setKeys((old) => {
        const seen = new Set(fresh ? [] : old.map((k) => k.key));
        const added = found.filter((k) => !seen.has(k.key) && (seen.add(k.key), true));
        return fresh ? added : [...old, ...added];
      });
      setCursor(at);
      setSearched(glob);
    } catch (e) {
      if (mine !== generation.current) return;
      if (e instanceof ApiError && e.code === "no_store") setNoStore(e.message); else setError(e);
    } finally {
      if (mine === generation.current) setLoading(false);
    }
  }

  useEffect(() => { scan("*", 0, true); }, []);  // eslint-disable-line react-hooks/exhaustive-deps

  function submit(e: FormEvent) {
    e.preventDefault();
    setSelected(null);
    scan(pattern.trim() || "*", 0, true);
  }

  if (noStore !== null) {
    return (
      <div className="store-view">
        <div className="toolbar"><h1>Store</h1></div>
        <div className="no-store" data-testid="no-store">
          <b>This master has no store.</b> Keys, sets and gate decisions live in a titan-store;
          give the master one with <code>store: url: redis://HOST:PORT/0</code> in its config
          (<code>titan up</code> starts one by itself).
          <div className="muted tiny">The master said: {noStore}</div>
        </div>
      </div>
    );
  }

  const sorted = [...keys].sort((a, b) => a.key.localeCompare(b.key, undefined, { numeric: true }));
  return (
    <div className="store-view">
      <div className="toolbar">
        <h1>Store</h1>
        <span className="muted read-only">read only</span>
        <span className="spacer" />
        <form className="store-search" onSubmit={submit}>
          <input data-testid="store-pattern" value={pattern} onChange={(e) => setPattern(e.target.value)}
            placeholder="pattern, e.g. titan:hitl:*" spellCheck={false} />
          <button type="submit" className="primary" data-testid="store-search" disabled={loading}>Search</button>
        </form>
      </div>
      <ErrorBanner error={error} onClose={() => setError(null)} />
      <div className="store-split">
        <div className="store-keys">
          <div className="keys-head muted">
            <span data-testid="store-count">
              {searched === null ? "…" : `${sorted.length} key${sorted.length === 1 ? "" : "s"} matching `}
              {searched !== null && <code>{searched}</code>}
              {searched !== null && cursor !== 0 && " so far"}
            </span>
          </div>
          {sorted.length > 0 && (
            <div className="keys-scroll">
            <table className="grid keys-table" data-testid="store-keys">
              <thead><tr><th>Key</th><th>Type</th><th>TTL</th></tr></thead>
              <tbody>
                {sorted.map((k) => (
                  <tr key={k.key} className={"clickable" + (selected === k.key ? " selected" : "")}
                    data-testid="store-key" data-key={k.key} onClick={() => setSelected(k.key)}>
                    <td className="mono key">{k.key}</td>
                    <td><span className={"type type-" + k.type}>{k.type}</span></td>
                    <td className="nowrap ttl">{ttlText(k.ttl)}</td>
                  </tr>
                ))}
              </tbody>
            </table>
            </div>
          )}
          {searched !== null && sorted.length === 0 && cursor === 0 && !loading && (
            <Empty>No key matches <code>{searched}</code>.</Empty>
          )}
          {cursor !== 0 && (
            <div className="more">
              <button data-testid="store-more" disabled={loading}
                onClick={() => scan(searched ?? "*", cursor, false)}>
                {loading ? "Scanning…" : "Load more"}
              </button>
              <span className="muted tiny">the scan goes on from cursor {cursor}</span>
            </div>
          )}
        </div>
        <div className="store-value-pane">
          {selected ? <ValuePanel name={selected} /> : <Empty>Pick a key to see its value.</Empty>}
        </div>
      </div>
    </div>
  );
}

function ValuePanel({ name }: { name: string }) {
  const [got, setGot] = useState<Value | null>(null);
  const [error, setError] = useState<unknown>(null);

  useEffect(() => {
    let current = true;
    setGot(null);
    setError(null);
    api.get<Value>("/store/value", { key: name }).then(
      (v) => { if (current) setGot(v); },
      (e) => { if (current) setError(e); });
    return () => { current = false; };
  }, [name]);

  return (
    <div className="panel store-value" data-testid="store-value" data-key={name}>
      <div className="value-head">
        <span className="mono key" data-testid="store-value-key">{name}</span>
        {got && <span className={"type type-" + got.type}>{got.type}</span>}
        {got && <span className="muted tiny">TTL {ttlText(got.ttl)}</span>}
      </div>
      <ErrorBanner error={error} />
      {!got && !error && <div className="muted">Loading…</div>}
      {got && <ValueBody v={got} />}
    </div>
  );
}

function ValueBody({ v }: { v: Value }) {
  if (v.type === "string") {
    const text = String(v.value ?? "");
    const binary = text.includes("\uFFFD");
    return (
      <>
        {binary && <div className="note" data-testid="store-binary">Binary data: bytes that are not UTF-8 text show as �.</div>}
        <div className="muted tiny">{text.length.toLocaleString()} characters</div>
        <pre className="value-text" data-testid="store-text">{text}</pre>
      </>
    );
  }
  if (v.type === "hash") {
    const fields = Object.entries(v.value as Record<string, string>).sort(([a], [b]) => a.localeCompare(b));
    return (
      <>
        <div className="muted tiny">{fields.length} field{fields.length === 1 ? "" : "s"}</div>
        <table className="grid value-table" data-testid="store-hash">
          <thead><tr><th>Field</th><th>Value</th></tr></thead>
          <tbody>{fields.map(([f, val]) => <tr key={f}><td className="mono">{f}</td><td className="mono">{val}</td></tr>)}</tbody>
        </table>
      </>
    );
  }
  if (v.type === "set" || v.type === "list") {
    const items = v.value as string[];
    return (
      <>
        <div className="muted tiny">
          {items.length.toLocaleString()} {v.type === "set" ? "members, sorted" : "items"}
          {items.length >= LIST_LIMIT && ` (the first ${LIST_LIMIT.toLocaleString()})`}
        </div>
        <table className="grid value-table" data-testid={"store-" + v.type}>
          <tbody>{items.map((item, i) => (
            <tr key={i}><td className="idx muted">{i}</td><td className="mono">{item}</td></tr>
          ))}</tbody>
        </table>
      </>
    );
  }
  return <div className="muted">A {v.type} key: the dashboard does not show this type.</div>;
}
