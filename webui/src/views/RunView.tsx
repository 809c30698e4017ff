export function RunView() {
  return <div className="empty">RunView: to come.</div>;
}
