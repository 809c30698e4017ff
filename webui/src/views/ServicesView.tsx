export function ServicesView() {
  return <div className="empty">ServicesView: to come.</div>;
}
