// Live changes (GET /api/v1/events, Server-Sent Events): one EventSource per filter, shared
// by the views that ask for the same one. EventSource reconnects by itself and resumes with
// Last-Event-ID; a `reset` (resume impossible) asks the views to reload over REST.
import { useEffect, useRef, useState } from "react";
import type { Change } from "./api";

type Listener = (changes: Change[]) => void;

interface Feed {
  source: EventSource;
  listeners: Set<Listener>;
  resets: Set<() => void>;
  connected: boolean;
}

const feeds = new Map<string, Feed>();
const statusListeners = new Set<(connected: boolean) => void>();

function anyConnected(): boolean {
  for (const feed of feeds.values()) if (feed.connected) return true;
  return feeds.size === 0;
}

function announce() {
  const up = anyConnected();
  statusListeners.forEach((l) => l(up));
}

function open(key: string): Feed {
  let feed = feeds.get(key);
  if (feed) return feed;
  const source = new EventSource("/api/v1/events" + (key ? "?" + key : ""));
  const created: Feed = { source, listeners: new Set(), resets: new Set(), connected: false };
  source.addEventListener("open", () => { created.connected = true; announce(); });
  source.addEventListener("error", () => { created.connected = false; announce(); });
  source.addEventListener("batch", (e) => {
    const changes: Change[] = JSON.parse((e as MessageEvent).data).changes ?? [];
    created.listeners.forEach((l) => l(changes));
  });
  source.addEventListener("reset", () => created.resets.forEach((r) => r()));
  feeds.set(key, created);
  return created;
}

function close(key: string) {
  const feed = feeds.get(key);
  if (feed && feed.listeners.size === 0 && feed.resets.size === 0) {
    feed.source.close();
    feeds.delete(key);
    announce();
  }
}

export interface EventFilter {
  run?: string;
  kind?: string[];
}

function keyOf(filter: EventFilter): string {
  const params = new URLSearchParams();
  if (filter.run) params.set("run", filter.run);
  if (filter.kind && filter.kind.length) params.set("kind", filter.kind.join(","));
  return params.toString();
}

/**
 * Calls `onChanges` with each batch of changes matching `filter`, and `onReset` when the
 * stream could not resume (and after a reconnect, so views reload what they show).
 */
export function useEvents(filter: EventFilter, onChanges: Listener, onReset?: () => void) {
  const changesRef = useRef(onChanges);
  const resetRef = useRef(onReset);
  changesRef.current = onChanges;
  resetRef.current = onReset;
  const key = keyOf(filter);
  useEffect(() => {
    const feed = open(key);
    const listener: Listener = (c) => changesRef.current(c);
    const reset = () => resetRef.current?.();
    let wasConnected = feed.connected;
    // After the stream was down (a master restart), reload: what changed meanwhile may be
    // beyond what a resume can give.
    const onOpen = () => { if (!wasConnected) reset(); wasConnected = true; };
    const onError = () => { wasConnected = false; };
    feed.source.addEventListener("open", onOpen);
    feed.source.addEventListener("error", onError);
    feed.listeners.add(listener);
    feed.resets.add(reset);
    return () => {
      feed.listeners.delete(listener);
      feed.resets.delete(reset);
      feed.source.removeEventListener("open", onOpen);
      feed.source.removeEventListener("error", onError);
      close(key);
    };
  }, [key]);
}

/** Whether the live feed is connected (the header shows it). */
export function useLive(): boolean {
  const [up, setUp] = useState(anyConnected());
  useEffect(() => {
    statusListeners.add(setUp);
    return () => { statusListeners.delete(setUp); };
  }, []);
  return up;
}

// -- JobPanel (f2): pages kept in the back/forward cache -----------------------------------
// Chrome keeps a page it caches on navigation with its EventSources open, and allows six
// connections per host: a few pages on, no request gets through. Close the feeds when the
// page is hidden; a page shown again from the cache missed every change since: reload it.
window.addEventListener("pagehide", (e) => {
  if (e.persisted) for (const feed of feeds.values()) feed.source.close();
});
window.addEventListener("pageshow", (e) => {
  if (e.persisted) location.reload();
});
