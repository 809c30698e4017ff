// A job's output as it is written: GET /api/v1/jobs/{ref}/log/stream (docs/web.md, "A job's
// log as it is written"). The stream sends what exists, then each piece as the worker sends
// it, then `end`. The page holds at most CAP characters; older output is one click away
// through GET /api/v1/jobs/{ref}/logs.
import { useCallback, useEffect, useLayoutEffect, useRef, useState } from "react";
import { api, seg } from "../api";
import { ErrorBanner } from "../common";

const CAP = 1024 * 1024;
const KEEP = (CAP * 3) / 4; // trim to this, so trimming is rare rather than on every piece
const OLDER_PAGE = 256 * 1024;
const encoder = new TextEncoder();

type Status = "connecting" | "streaming" | "reconnecting" | "ended" | "failed";

interface Shown {
  text: string;
  start: number; // byte offset of text's first character in the job's output
  end: number; // byte offset after its last one
}

export function LogTail({ jobId, height }: { jobId: string; height?: string }) {
  const [shown, setShown] = useState<Shown>({ text: "", start: 0, end: 0 });
  const [status, setStatus] = useState<Status>("connecting");
  const [endState, setEndState] = useState<string | null>(null);
  const [follow, setFollow] = useState(true);
  const [wrap, setWrap] = useState(true);
  const [error, setError] = useState<unknown>(null);
  const [loadingOlder, setLoadingOlder] = useState(false);
  const pre = useRef<HTMLPreElement>(null);
  const followRef = useRef(follow);
  followRef.current = follow;
  const toTop = useRef(false);

  useEffect(() => {
    setShown({ text: "", start: 0, end: 0 });
    setStatus("connecting");
    setEndState(null);
    setError(null);
    const source = new EventSource(`/api/v1/jobs/${seg(jobId)}/log/stream?offset=0`);
    // Pieces are applied once per frame: a chatty job must not cost a render per line.
    let pending: string[] = [];
    let pendingEnd = 0;
    let frame = 0;
    const flush = () => {
      frame = 0;
      if (!pending.length) return;
      const added = pending.join("");
      const end = pendingEnd;
      pending = [];
      setShown((s) => {
        let text = s.text + added;
        let start = s.start;
        if (text.length > CAP && (followRef.current || text.length > 4 * CAP)) {
          let cut = text.length - KEEP;
          const newline = text.indexOf("\n", cut);
          if (newline >= 0 && newline - cut < 4096) cut = newline + 1;
          start += encoder.encode(text.slice(0, cut)).length;
          text = text.slice(cut);
        }
        return { text, start, end };
      });
    };
    source.addEventListener("open", () => setStatus("streaming"));
    source.addEventListener("log", (e) => {
      const piece = JSON.parse((e as MessageEvent).data) as { offset: number; text: string };
      pending.push(piece.text);
      pendingEnd = Number((e as MessageEvent).lastEventId) || piece.offset + encoder.encode(piece.text).length;
      if (!frame) frame = requestAnimationFrame(flush);
    });
    source.addEventListener("end", (e) => {
      // The response ends after `end`: close, or EventSource would reconnect and stream again.
      source.close();
      const data = JSON.parse((e as MessageEvent).data) as { state: string; offset: number };
      if (frame) cancelAnimationFrame(frame);
      flush();
      setEndState(data.state);
      setStatus("ended");
    });
    source.addEventListener("error", (e) => {
      const data = (e as MessageEvent).data;
      if (typeof data === "string" && data) {
        // The server's own `error` event: the stream failed there.
        source.close();
        try { setError(new Error("log stream: " + JSON.parse(data).message)); } catch { setError(new Error("log stream failed")); }
        setStatus("failed");
        return;
      }
      if (source.readyState === EventSource.CLOSED) {
        // Not a dropped connection (EventSource resumes those by itself) but a refusal.
        setStatus("failed");
        api.get(`/jobs/${seg(jobId)}/logs`, { limit: 1 }).then(
          () => setError(new Error("the log stream was refused")), setError);
      } else {
        setStatus("reconnecting");
      }
    });
    // A page put in the back/forward cache keeps its streams open (see events.ts).
    const hidden = (e: PageTransitionEvent) => { if (e.persisted) source.close(); };
    window.addEventListener("pagehide", hidden);
    return () => {
      source.close();
      window.removeEventListener("pagehide", hidden);
      if (frame) cancelAnimationFrame(frame);
    };
  }, [jobId]);

  useLayoutEffect(() => {
    if (!pre.current) return;
    if (toTop.current) {
      // Older output was just put above: show it.
      toTop.current = false;
      pre.current.scrollTop = 0;
    } else if (follow) {
      pre.current.scrollTop = pre.current.scrollHeight;
    }
  }, [shown, follow]);

  const onScroll = useCallback(() => {
    const el = pre.current;
    if (!el) return;
    const atBottom = el.scrollHeight - el.scrollTop - el.clientHeight < 24;
    if (atBottom !== followRef.current) setFollow(atBottom);
  }, []);

  const loadOlder = async () => {
    setLoadingOlder(true);
    try {
      let from = Math.max(0, shown.start - OLDER_PAGE);
      const page = await api.get<{ data: string; next_offset: number }>(
        `/jobs/${seg(jobId)}/logs`, { offset: from, limit: shown.start - from });
      let text = page.data;
      if (from > 0) {
        // Start at a line: the page may begin inside a line (or a character).
        const newline = text.indexOf("\n");
        if (newline >= 0) {
          from += encoder.encode(text.slice(0, newline + 1)).length;
          text = text.slice(newline + 1);
        }
      }
      setFollow(false);
      toTop.current = true;
      setShown((s) => (s.start === shown.start ? { ...s, text: text + s.text, start: from } : s));
    } catch (e) {
      setError(e);
    } finally {
      setLoadingOlder(false);
    }
  };

  const statusText = {
    connecting: "connecting…",
    streaming: "live",
    reconnecting: "reconnecting…",
    ended: endState ? `ended · ${endState.toLowerCase()}` : "ended",
    failed: "not streaming",
  }[status];

  return (
    <div className="logtail" data-testid="log-tail">
      <div className="logtail-bar">
        <span className={"logtail-status " + status} data-testid="log-status">{statusText}</span>
        <span className="muted">{formatBytes(shown.end)}</span>
        <span className="spacer" />
        <label className="logtail-toggle">
          <input type="checkbox" checked={wrap} onChange={(e) => setWrap(e.target.checked)}
            data-testid="log-wrap" /> wrap
        </label>
        <label className="logtail-toggle">
          <input type="checkbox" checked={follow} data-testid="log-follow"
            onChange={(e) => setFollow(e.target.checked)} /> follow
        </label>
      </div>
      <ErrorBanner error={error} onClose={() => setError(null)} />
      {shown.start > 0 && (
        <div className="logtail-trimmed" data-testid="log-trimmed">
          earlier output trimmed ({formatBytes(shown.start)} not shown)
          <button className="link" data-testid="log-older" disabled={loadingOlder}
            onClick={loadOlder}>{loadingOlder ? "loading…" : "load older"}</button>
        </div>
      )}
      <pre ref={pre} className={"log" + (wrap ? "" : " nowrap")} data-testid="log"
        onScroll={onScroll} style={height ? { maxHeight: height, minHeight: "120px" } : undefined}>
        {shown.text}
        {!shown.text && (
          <span className="logtail-empty">
            {status === "ended" ? "no output" : status === "failed" ? "" : "waiting for output…"}
          </span>
        )}
      </pre>
    </div>
  );
}

function formatBytes(n: number): string {
  if (n < 1024) return `${n} B`;
  if (n < 1024 * 1024) return `${(n / 1024).toFixed(1)} KiB`;
  return `${(n / 1024 / 1024).toFixed(1)} MiB`;
}
