"""Titan's Python SDK.

`Client` is blocking (plain sockets, usable in any script); `titan.sdk.asyncclient` is the
same on Twisted; `Pipeline` builds DAGs; `current_job()` is for code running inside a job.
"""
from titan.errors import RemoteError, TitanError
from titan.sdk.client import Client, ConnectError
from titan.sdk.job import JobContext, current_job

__all__ = ["Client", "ConnectError", "JobContext", "RemoteError", "TitanError", "current_job",
           "Pipeline"]


def __getattr__(name: str):
    if name == "Pipeline":  # imported lazily: it pulls in YAML handling
        from titan.sdk.pipeline import Pipeline
        return Pipeline
    raise AttributeError(name)
