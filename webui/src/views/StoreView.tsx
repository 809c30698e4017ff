export function StoreView() {
  return <div className="empty">StoreView: to come.</div>;
}
