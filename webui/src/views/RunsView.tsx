export function RunsView() {
  return <div className="empty">RunsView: to come.</div>;
}
