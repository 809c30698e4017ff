export function ApprovalsView() {
  return <div className="empty">ApprovalsView: to come.</div>;
}
