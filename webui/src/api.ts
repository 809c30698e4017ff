// The master's JSON API (docs/web.md): one place that knows the session, the CSRF header and
// the error shape, so every view shows an error as a message and a 401 as the login page.

export class ApiError extends Error {
  constructor(public status: number, public code: string, message: string) {
    super(message);
  }
}

let csrf: string | null = null;
let role: string | null = null;
const unauthorizedListeners = new Set<() => void>();

/** Called when the master answers 401: the app shows its login page. */
export function onUnauthorized(listener: () => void): () => void {
  unauthorizedListeners.add(listener);
  return () => unauthorizedListeners.delete(listener);
}

export function currentRole(): string | null {
  return role;
}

/** A job ref or any path parameter as ONE path segment (a run's job is RUN%2FNODE). */
export function seg(value: string): string {
  return encodeURIComponent(value);
}

export type Query = Record<string, string | number | boolean | undefined | null>;

function withQuery(path: string, query?: Query): string {
  if (!query) return path;
  const params = new URLSearchParams();
  for (const [k, v] of Object.entries(query)) {
    if (v !== undefined && v !== null && v !== "") params.set(k, String(v));
  }
  const text = params.toString();
  return text ? `${path}?${text}` : path;
}

async function request<T>(method: string, path: string, body?: unknown, query?: Query): Promise<T> {
  const headers: Record<string, string> = { Accept: "application/json" };
  if (body !== undefined) headers["Content-Type"] = "application/json";
  if (method !== "GET" && csrf) headers["X-Titan-CSRF"] = csrf;
  let response: Response;
  try {
    response = await fetch(withQuery("/api/v1" + path, query), {
      method,
      headers,
      credentials: "same-origin",
      body: body === undefined ? undefined : JSON.stringify(body),
    });
  } catch (e) {
    throw new ApiError(0, "unreachable", "the master does not answer (is it running?)");
  }
  let payload: any = null;
  const text = await response.text();
  if (text) {
    try {
      payload = JSON.parse(text);
    } catch {
      payload = null;
    }
  }
  if (!response.ok) {
    const error = payload?.error ?? {};
    if (response.status === 401 && path !== "/login") {
      csrf = null;
      role = null;
      unauthorizedListeners.forEach((l) => l());
    }
    throw new ApiError(response.status, error.code ?? "http",
      error.message ?? `${method} ${path}: HTTP ${response.status}`);
  }
  return payload as T;
}

export const api = {
  get: <T = any>(path: string, query?: Query) => request<T>("GET", path, undefined, query),
  post: <T = any>(path: string, body: unknown = {}) => request<T>("POST", path, body),
  del: <T = any>(path: string) => request<T>("DELETE", path, {}),
};

export interface Session {
  role: string;
  csrf: string | null;
  expires: number | null;
}

/** The session of the cookie the browser has (after a reload), or null. */
export async function resumeSession(): Promise<Session | null> {
  try {
    const s = await api.get<Session>("/session");
    csrf = s.csrf;
    role = s.role;
    return s;
  } catch (e) {
    if (e instanceof ApiError && e.status === 401) return null;
    throw e;
  }
}

export async function login(token: string): Promise<Session> {
  const s = await api.post<Session>("/login", { token });
  csrf = s.csrf;
  role = s.role;
  return s;
}

export async function logout(): Promise<void> {
  await api.post("/logout");
  csrf = null;
  role = null;
}

// -- the shapes the views use (docs/web.md, GET /api/v1/openapi.json) ----------------------

export interface Worker {
  worker_id: string;
  name: string;
  host: string;
  tags: string[];
  slots: number;
  busy: number;
  state: string;
  last_heartbeat_ago: number;
  joined_at: number;
  completed: number;
  idle_for: number | null;
  jobs: string[];
  spawned_by: string | null;
  [key: string]: any;
}

export type Job = Record<string, any> & { job_id: string; state: string };
export type Run = Record<string, any> & { run_id: string; state: string };

/** A change of one thing, as GET /api/v1/events sends it in a batch. */
export interface Change {
  kind: "job" | "gate" | "service" | "run" | "worker" | "schedule";
  id: string;
  run_id?: string | null;
  data: any | null;
}
