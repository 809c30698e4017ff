// A job's details, attempts, result, live log tail and actions. Used as the side panel of the
// run view and as the page /jobs/:ref (a job of a run is RUN/NODE, one encoded segment).
import { useParams } from "react-router";

export function JobPanel({ jobId, onClose }: { jobId: string; onClose?: () => void }) {
  return (
    <div className="panel" data-testid="job-panel">
      <div className="toolbar"><b>{jobId}</b><span className="spacer" />
        {onClose && <button className="link" onClick={onClose}>×</button>}</div>
      to come.
    </div>
  );
}

export function JobPage() {
  const { ref } = useParams();
  return <JobPanel jobId={ref ?? ""} />;
}
