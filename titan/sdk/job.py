"""Inside a running job: who am I, and how do I grow my DAG or publish a result?

    from titan.sdk import current_job
    me = current_job()
    me.add_jobs([{"id": "next", "command": ["python3", "step.py"], "depends_on": [me.node]}])
    me.set_result({"rows": 42})

The worker puts TITAN_HOST, TITAN_PORT, TITAN_JOB_ID, TITAN_RUN_ID and a token scoped to
this attempt of this job (TITAN_TOKEN) into every job's environment.
"""
from __future__ import annotations

import os
from typing import Any, Optional

from titan.errors import TitanError
from titan.sdk.client import Client


class JobContext:
    def __init__(self, job_id: str, run_id: Optional[str], attempt: int,
                 client: Client) -> None:
        self.job_id = job_id
        self.run_id = run_id
        self.attempt = attempt
        self.client = client

    @property
    def node(self) -> str:
        """This job's id within its run."""
        return self.job_id.rsplit("/", 1)[-1]

    def _key(self, ref: str) -> str:
        return ref if "/" in ref or not self.run_id else f"{self.run_id}/{ref}"

    def add_jobs(self, jobs: Any) -> list:
        """Add jobs to this run (children of this job or of any job in it)."""
        if not self.run_id:
            raise TitanError(f"job {self.job_id} is not part of a DAG run")
        return self.client.add_jobs(self.run_id, jobs)

    def set_result(self, value: Any) -> None:
        """Publish a small JSON-like result for children and clients to read."""
        self.client.set_result(self.job_id, value)

    def result(self, job: str) -> Any:
        """The result of another job of this run (by its id in the run), or any job."""
        return self.client.result(self._key(job))

    def parent_results(self) -> dict:
        """{parent id: its result} for this job's parents."""
        info = self.client.job(self.job_id)
        return {p: self.client.result(self._key(p)) for p in info["depends_on"]}

    def info(self) -> dict:
        return self.client.job(self.job_id)


def current_job() -> JobContext:
    job_id = os.environ.get("TITAN_JOB_ID")
    if not job_id:
        raise TitanError("not inside a Titan job (TITAN_JOB_ID is not set)")
    return JobContext(job_id, os.environ.get("TITAN_RUN_ID") or None,
                      int(os.environ.get("TITAN_ATTEMPT") or 1), Client(name="titan-job"))
