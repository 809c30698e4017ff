// The shell: login, navigation, the live-feed indicator, and one route per view. A view is a
// component in views/ that loads over REST and follows /api/v1/events; the constructor
// ("New pipeline", issue 18) is one more route here.
import { useEffect, useState } from "react";
import { BrowserRouter, NavLink, Navigate, Route, Routes } from "react-router";
import { api, logout, onUnauthorized, resumeSession, type Session } from "./api";
import { ErrorBanner } from "./common";
import { useLive } from "./events";
import { LoginView } from "./views/LoginView";
import { ClusterView } from "./views/ClusterView";
import { RunsView } from "./views/RunsView";
import { RunView } from "./views/RunView";
import { ApprovalsView } from "./views/ApprovalsView";
import { AgentRunView } from "./views/AgentRunView";
import { ServicesView } from "./views/ServicesView";
import { SchedulesView } from "./views/SchedulesView";
import { StoreView } from "./views/StoreView";
import { JobPage } from "./views/JobPanel";
import { ConstructorView } from "./views/ConstructorView";

const NAV: [string, string][] = [
  ["/", "Cluster"],
  ["/runs", "Runs"],
  ["/approvals", "Approvals"],
  ["/agent-runs", "Agent runs"],
  ["/services", "Services"],
  ["/schedules", "Schedules"],
  ["/store", "Store"],
  ["/new", "New pipeline"],
];

export function App() {
  const [session, setSession] = useState<Session | null | undefined>(undefined);
  const [error, setError] = useState<unknown>(null);

  useEffect(() => {
    resumeSession().then(setSession, (e) => { setError(e); setSession(null); });
    return onUnauthorized(() => setSession(null));
  }, []);

  if (session === undefined) return <div className="splash">Titan</div>;
  if (session === null) {
    return (
      <>
        <ErrorBanner error={error} />
        <LoginView onLogin={(s) => { setError(null); setSession(s); }} />
      </>
    );
  }
  return (
    <BrowserRouter>
      <Shell session={session} onLogout={() => setSession(null)} />
    </BrowserRouter>
  );
}

/** How many gates wait for a person, read every few seconds. Not a live feed of its own: a
 * browser opens at most six connections to one host, and each tab's view already holds one
 * (a job's log tail a second). */
function WaitingGates() {
  const [count, setCount] = useState<number | null>(null);
  useEffect(() => {
    let stopped = false;
    const load = () => api.get<{ gates: unknown[] }>("/gates", { limit: 1000 }).then(
      (r) => { if (!stopped) setCount(r.gates.length); }, () => undefined);
    load();
    const timer = window.setInterval(load, 5000);
    return () => { stopped = true; window.clearInterval(timer); };
  }, []);
  if (!count) return null;
  return <span className="count" data-testid="waiting-gates" title="gates waiting for approval">{count}</span>;
}

function Shell({ session, onLogout }: { session: Session; onLogout: () => void }) {
  const live = useLive();
  return (
    <div className="shell">
      <header className="topbar">
        <span className="brand">Titan</span>
        <nav>
          {NAV.map(([to, label]) => (
            <NavLink key={to} to={to} end={to === "/"} data-testid={"nav-" + label.toLowerCase().replace(" ", "-")}>
              {label}
              {to === "/approvals" && <WaitingGates />}
            </NavLink>
          ))}
        </nav>
        <span className="spacer" />
        <span className={"live " + (live ? "on" : "off")} data-testid="live"
          title={live ? "live updates connected" : "live updates reconnecting…"}>
          {live ? "● live" : "○ reconnecting"}
        </span>
        <span className="role" data-testid="role">{session.role}</span>
        <button className="link" data-testid="logout"
          onClick={() => logout().finally(onLogout)}>log out</button>
      </header>
      <main className="content">
        <Routes>
          <Route path="/" element={<ClusterView />} />
          <Route path="/runs" element={<RunsView />} />
          <Route path="/runs/:runId" element={<RunView />} />
          <Route path="/jobs/:ref" element={<JobPage />} />
          <Route path="/approvals" element={<ApprovalsView />} />
          <Route path="/agent-runs" element={<AgentRunView />} />
          <Route path="/agent-runs/:agentRunId" element={<AgentRunView />} />
          <Route path="/services" element={<ServicesView />} />
          <Route path="/schedules" element={<SchedulesView />} />
          <Route path="/store" element={<StoreView />} />
          <Route path="/new" element={<ConstructorView />} />
          <Route path="/login" element={<Navigate to="/" replace />} />
          <Route path="*" element={<div className="empty">No such page.</div>} />
        </Routes>
      </main>
    </div>
  );
}
