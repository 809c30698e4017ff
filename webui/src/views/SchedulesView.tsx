export function SchedulesView() {
  return <div className="empty">SchedulesView: to come.</div>;
}
