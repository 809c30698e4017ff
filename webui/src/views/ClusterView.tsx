export function ClusterView() {
  return <div className="empty">ClusterView: to come.</div>;
}
