export function AgentRunView() {
  return <div className="empty">AgentRunView: to come.</div>;
}
