// The constructor's calls to the master (docs/web.md, issue 18). api.ts keeps only an error's
// code and message; the pipeline routes also answer `problems` (step, key, message) with a 400,
// and drafts are saved with PUT, so these go through a small request of their own that sends the
// session's CSRF header the same way. A 401 is handed to api.ts (its listeners show the login).
import { api, ApiError } from "../api";
import type { Problem } from "./types";

let csrf: string | null | undefined;

async function csrfHeader(): Promise<string | null> {
  if (csrf === undefined) {
    try {
      const s = await api.get<{ csrf: string | null }>("/session");
      csrf = s.csrf ?? null;
    } catch {
      csrf = null;
    }
  }
  return csrf;
}

/** A refusal with the problems the master named, if any. */
export class PipelineError extends ApiError {
  constructor(status: number, code: string, message: string, public problems: Problem[]) {
    super(status, code, message);
  }
}

async function send<T>(method: string, path: string, body?: unknown, retried = false): Promise<T> {
  const headers: Record<string, string> = { Accept: "application/json" };
  if (body !== undefined) headers["Content-Type"] = "application/json";
  if (method !== "GET") {
    const token = await csrfHeader();
    if (token) headers["X-Titan-CSRF"] = token;
  }
  let response: Response;
  try {
    response = await fetch("/api/v1" + path, {
      method, headers, credentials: "same-origin",
      body: body === undefined ? undefined : JSON.stringify(body),
    });
  } catch {
    throw new PipelineError(0, "unreachable", "the master does not answer (is it running?)", []);
  }
  const text = await response.text();
  let payload: any = null;
  if (text) {
    try { payload = JSON.parse(text); } catch { payload = null; }
  }
  if (!response.ok) {
    const error = payload?.error ?? {};
    if (response.status === 403 && error.code === "csrf" && !retried) {
      csrf = undefined; // a new session since: read its token again, once
      return send<T>(method, path, body, true);
    }
    if (response.status === 401) {
      csrf = undefined;
      api.get("/session").catch(() => undefined); // api.ts tells the app: the login page
    }
    const problems: Problem[] = Array.isArray(payload?.problems) ? payload.problems : [];
    throw new PipelineError(response.status, error.code ?? "http",
      error.message ?? `${method} ${path}: HTTP ${response.status}`, problems);
  }
  return payload as T;
}

export const http = {
  get: <T = any>(path: string) => send<T>("GET", path),
  post: <T = any>(path: string, body: unknown) => send<T>("POST", path, body),
  put: <T = any>(path: string, body: unknown) => send<T>("PUT", path, body),
  del: <T = any>(path: string) => send<T>("DELETE", path, {}),
};

export interface DraftInfo {
  name: string;
  updated_at: number;
  steps: number;
}

/** Draft names the master takes: 1-100 of letters, digits, `_ . -`. */
export const DRAFT_NAME = /^[A-Za-z0-9_.-]{1,100}$/;

/** A draft name made from a pipeline's name. */
export function draftSlug(name: string): string {
  const slug = name.trim().replace(/[^A-Za-z0-9_.-]+/g, "-").replace(/^-+|-+$/g, "").slice(0, 100);
  return slug || "pipeline";
}
