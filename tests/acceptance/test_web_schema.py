"""schemathesis over the web API (issue 17): every operation of the live master's
/api/v1/openapi.json, with requests it generates from the document itself (valid ones, and
ones the document calls invalid), against a master with real data in it: a run with a gate
waiting, a completed run with output, an agent run, a running job, a service, schedules and
store keys of each type.  Every answer must be no 5xx, of a status the operation documents,
of the content type it documents, with a body its schema accepts; a request the document
calls invalid must be refused (4xx), and one it calls valid not refused as malformed (400).

Bounded and repeatable: a few examples per operation and mode (hypothesis derandomized, no
example database, no shrinking), every request with a timeout, and the whole run under
BUDGET seconds.  Not exercised: GET /api/v1/events, an endless stream (tests/acceptance/
test_web_events.py reads it).  The changes run after the reads, on their own data (a run
to cancel, a gate to decide, a job to cancel, a service to restart then stop, a schedule to
remove); POST /api/v1/workers is sent once, with a body of ours (each start is a real
process, up to 8), and that worker is the one drained: generated names are no worker's,
and the cluster's own w1 is never sent.  Logout and login-codes are harmless with a token.
"""
from __future__ import annotations

import sys
import time
import traceback
from typing import Optional

import requests
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance, negative_data_rejection, positive_data_acceptance,
    response_schema_conformance, status_code_conformance)
from twisted.trial.unittest import SynchronousTestCase

from tests.acceptance import test_legacy_store as legacy
from tests.acceptance.helpers import ClusterTestCase

EXAMPLES = 5  # requests per operation, per mode and per set of known parameters
BUDGET = 40.0  # seconds for all the requests (about 12 s on an idle 2-core machine)
TIMEOUT = 10.0  # seconds for one request (a stream that does not end is a failure, not a hang)
# No 5xx; a status, content type and body the operation documents; what the document
# calls invalid refused (4xx), what it calls valid not refused as bad input.
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance,
          response_schema_conformance, negative_data_rejection, positive_data_acceptance]
# Endless: a stream of the cluster's changes until the client goes.
SKIPPED = {("GET", "/api/v1/events")}
START_WORKER = ("POST", "/api/v1/workers")
# What changes something: exercised after every read, on data of their own, in this order
# (a service restarted before it is stopped; a worker started, then drained).
CHANGES_IN_ORDER = [
    ("POST", "/api/v1/pipelines"), ("PUT", "/api/v1/drafts/{name}"),
    ("DELETE", "/api/v1/drafts/{name}"), ("POST", "/api/v1/runs/{run_id}/cancel"), ("POST", "/api/v1/jobs/{ref}/cancel"),
    ("POST", "/api/v1/gates/{ref}/decide"), ("POST", "/api/v1/services/{name}/restart"),
    ("POST", "/api/v1/services/{name}/stop"), ("DELETE", "/api/v1/schedules/{schedule_id}"),
    START_WORKER, ("POST", "/api/v1/workers/{name}/drain")]
CHANGES = set(CHANGES_IN_ORDER)
EXTRA_WORKER = {"name": "sch-extra", "tags": ["sch"], "slots": 1}
# A pipeline's text or document that the schema takes may still be one `titan run` refuses
# (400 bad_pipeline, with its problems): these are sent with bodies of ours, and with
# generated ones the schema calls invalid (each refused).
PIPELINE = {"name": "sch-pipe", "jobs": [{"id": "a", "command": "true"},
                                          {"id": "b", "file": "b.py", "depends_on": ["a"]}]}
BODIES_OF_OURS = {
    ("POST", "/api/v1/pipelines/parse"): [
        {"body": {"yaml": "name: sch-pipe\njobs:\n  - id: a\n    command: 'true'\n"}}],
    ("POST", "/api/v1/pipelines"): [{"body": {"document": PIPELINE,
                                               "files": {"b.py": "print(1)"}}}]}
# Never drained: the cluster's own worker (a generated name is no worker's, but say so).
KEEP = {("POST", "/api/v1/workers/{name}/drain", "w1")}


def _py(code: str) -> list[str]:
    return [sys.executable, "-c", code]


class WebSchemaTests(legacy.WithStore, ClusterTestCase, SynchronousTestCase):
    workers = 1
    slots = 6
    timeout = 120

    def test_every_operation_answers_as_its_document_says(self):
        known = self.seed()
        schema = schemathesis.openapi.from_url(self.cluster.web_url + "/api/v1/openapi.json",
                                               timeout=TIMEOUT)
        operations = {(op.method.upper(), op.path): op
                      for op in (r.ok() for r in schema.get_all_operations())}
        reads = [k for k in operations if k not in CHANGES | SKIPPED]
        changes = [k for k in CHANGES_IN_ORDER if k in operations]
        self.assertGreater(len(reads), 15, sorted(operations))
        self.assertGreater(len(changes), 5, sorted(operations))
        runner = _Runner(self.cluster.web_url, self.cluster.token, time.monotonic() + BUDGET)
        for key in reads + changes:
            if key == START_WORKER:  # a real process: one, with a body of our own
                runner.exercise(operations[key], [{"body": EXTRA_WORKER}], generated=False,
                                examples=1)
                self.wait_for(lambda: self.worker_state(EXTRA_WORKER["name"]) == "ALIVE",
                              30, "the worker started over HTTP to join")
            elif key in BODIES_OF_OURS:
                runner.exercise(operations[key], BODIES_OF_OURS[key], positive=False)
            else:
                runner.exercise(operations[key], known.get(key, []))
        if runner.failures:
            self.fail(f"{len(runner.failures)} operations answered otherwise than their "
                      f"document says ({runner.sent} requests):\n\n"
                      + "\n\n".join(runner.failures))
        # The real data was reached, not only refusals: a success from each with it.
        missing = sorted(f"{m} {p}" for (m, p) in known if (m, p) in operations
                         and not any(s < 400 for s in runner.statuses.get((m, p), ())))
        self.assertEqual(missing, [], "only refusals from these with the cluster's real data")
        if START_WORKER in operations:
            self.wait_for(lambda: self.worker_state(EXTRA_WORKER["name"]) != "ALIVE", 30,
                          "the worker started over HTTP to be drained")

    def worker_state(self, name: str) -> Optional[str]:
        with self.cluster.client() as c:
            return next((w["state"] for w in c.workers() if w["name"] == name), None)

    # -- the data -------------------------------------------------------------------------

    def seed(self) -> dict:
        """Real things of every kind; the path parameters that name them, per operation."""
        with self.cluster.client() as c:
            done = c.submit_dag({"name": "sch-done", "agent_run_id": "sch-agent",
                                 "stage": "PLAN", "jobs": [
                                     {"id": "a", "command": _py("print('one é'); print('two')")},
                                     {"id": "b", "command": ["true"], "depends_on": ["a"]}]})
            waiting = c.submit_dag({"name": "sch-wait", "jobs": [
                {"id": "hold", "kind": "gate", "message": "go on?"},
                {"id": "after", "command": ["true"], "depends_on": ["hold"]}]})["run_id"]
            to_cancel = c.submit_dag({"name": "sch-cancel", "jobs": [
                {"id": "wait", "kind": "gate", "message": "never"},
                {"id": "then", "command": ["true"], "depends_on": ["wait"]}]})["run_id"]
            to_decide = c.submit_dag({"name": "sch-decide", "jobs": [
                {"id": "ok", "kind": "gate", "message": "ship?"},
                {"id": "ship", "command": ["true"], "depends_on": ["ok"]}]})["run_id"]
            sleeper = c.submit(["sleep", "120"])
            c.deploy("sch-svc", ["sleep", "600"], restart="always")
            c.submit_dag({"name": "sch-keep", "schedule": "0 0 1 1 *", "jobs": [
                {"id": "x", "command": ["true"]}]})
            c.submit_dag({"name": "sch-drop", "schedule": "0 0 1 1 *", "jobs": [
                {"id": "x", "command": ["true"]}]})
            c.store_put("sch:str", "héllo", ex=600)
            c.store_sadd("sch:set", "a")
            self.assertEqual(legacy.redis_cli(self.store_port, "HSET", "sch:hash", "f", "v"),
                             "1\n")
            self.assertEqual(legacy.redis_cli(self.store_port, "RPUSH", "sch:list", "x", "y"),
                             "2\n")
            run_id = done["run_id"]
            self.assertEqual(c.wait_run(run_id, timeout=60)["state"], "COMPLETED")
            self.wait_for(lambda: c.status(sleeper) == "RUNNING", 30, "the sleeper to run")
            self.wait_for(lambda: c.service("sch-svc")["state"] == "RUNNING", 30,
                          "the service to run")
            for gate in (f"{waiting}/hold", f"{to_decide}/ok", f"{to_cancel}/wait"):
                self.wait_for(lambda: c.status(gate) == "WAITING_APPROVAL", 30,
                              f"gate {gate} to wait")
        job = f"{run_id}/a"
        saved = requests.put(self.cluster.web_url + "/api/v1/drafts/sch-draft",
                             json={"draft": {"steps": [{}]}}, timeout=TIMEOUT,
                             headers={"Authorization": f"Bearer {self.cluster.token}"})
        self.assertEqual(saved.status_code, 200, saved.text)
        code = requests.post(self.cluster.web_url + "/api/v1/login-codes", timeout=TIMEOUT,
                             headers={"Authorization": f"Bearer {self.cluster.token}"})
        return {
            ("GET", "/login"): [{"?code": code.json()["code"]}],  # 303 once, then 401
            ("GET", "/api/v1/runs/{run_id}"): [{"run_id": run_id}, {"run_id": waiting}],
            ("GET", "/api/v1/jobs/{ref}"): [{"ref": job}, {"ref": f"{waiting}/hold"},
                                            {"ref": sleeper}],
            ("GET", "/api/v1/jobs/{ref}/logs"): [{"ref": job}],
            # Only ended jobs: a running one's stream lasts as long as the job.
            ("GET", "/api/v1/jobs/{ref}/log/stream"): [{"ref": job}],
            ("GET", "/api/v1/agent-runs/{agent_run_id}"): [{"agent_run_id": "sch-agent"}],
            ("POST", "/api/v1/runs/{run_id}/cancel"): [{"run_id": to_cancel}],
            ("POST", "/api/v1/jobs/{ref}/cancel"): [{"ref": sleeper}],
            ("POST", "/api/v1/gates/{ref}/decide"): [{"ref": f"{to_decide}/ok"}],
            ("POST", "/api/v1/services/{name}/restart"): [{"name": "sch-svc"}],
            ("POST", "/api/v1/services/{name}/stop"): [{"name": "sch-svc"}],
            ("DELETE", "/api/v1/schedules/{schedule_id}"): [{"schedule_id": "sch-drop"}],
            ("GET", "/api/v1/runs/{run_id}/pipeline"): [{"run_id": run_id}],
            ("GET", "/api/v1/drafts/{name}"): [{"name": "sch-draft"}],
            ("PUT", "/api/v1/drafts/{name}"): [{"name": "sch-draft2",
                                                "body": {"draft": {"steps": []}}}],
            ("DELETE", "/api/v1/drafts/{name}"): [{"name": "sch-draft"}],
            ("POST", "/api/v1/pipelines/validate"): [
                {"body": {"document": PIPELINE, "files": {"b.py": "print(1)"}}}],
            ("GET", "/api/v1/store/value"): [{"?key": k} for k in
                                             ("sch:str", "sch:set", "sch:hash", "sch:list")],
            ("POST", "/api/v1/workers/{name}/drain"): [{"name": EXTRA_WORKER["name"]}],
        }


class _Runner:
    """Sends the cases of each operation and keeps what failed, with a curl to reproduce."""

    def __init__(self, base_url: str, token: str, deadline: float) -> None:
        self.base_url = base_url
        self.headers = {"Authorization": f"Bearer {token}"}
        self.deadline = deadline
        self.failures: list[str] = []
        self.statuses: dict[tuple, set] = {}
        self.sent = 0

    def exercise(self, op, known: list[dict], generated: bool = True,
                 examples: int = EXAMPLES, positive: bool = True) -> None:
        """Valid requests naming each of the `known` things (a path parameter, a query one
        as "?name", or the "body"), then valid (unless not `positive`) and invalid ones
        generated from scratch."""
        key = (op.method.upper(), op.path)
        plans: list[tuple[str, dict]] = [("positive", fixed) for fixed in known]
        if generated:
            plans += [("positive", {})] if positive else []
            plans += [("negative", {})]
        for mode, fixed in plans:
            self._run(op, key, self._strategy(op, mode, fixed),
                      f"{mode} {fixed or ''}".strip(), examples)

    def _strategy(self, op, mode: str, fixed: dict):
        generation = schemathesis.GenerationMode.POSITIVE if mode == "positive" else \
            schemathesis.GenerationMode.NEGATIVE
        path = {k: v for k, v in fixed.items() if not k.startswith("?") and k != "body"}
        query = {k[1:]: v for k, v in fixed.items() if k.startswith("?")}
        extra = {"body": fixed["body"]} if "body" in fixed else {}
        return op.as_strategy(generation, path_parameters=path or None, query=query or None,
                              **extra)

    def _run(self, op, key: tuple, strategy, what: str, examples: int) -> None:
        @settings(max_examples=examples, derandomize=True, database=None, deadline=None,
                  phases=[Phase.explicit, Phase.generate], report_multiple_bugs=False,
                  suppress_health_check=list(HealthCheck))
        @given(case=strategy)
        def check(case):
            if time.monotonic() > self.deadline or _only_auth_invalid(case) or \
                    (*key, (case.path_parameters or {}).get("name")) in KEEP:
                return
            response = case.call(base_url=self.base_url, headers=self.headers,
                                 timeout=TIMEOUT)
            self.sent += 1
            self.statuses.setdefault(key, set()).add(response.status_code)
            case.validate_response(response, checks=CHECKS, headers=self.headers)

        try:
            check()
        except (Exception, BaseExceptionGroup) as e:  # schemathesis' FailureGroup is a Base one
            if _unsatisfiable(e) and "negative" in what:
                return  # nothing of this operation can be made invalid
            self.failures.append(f"== {op.method.upper()} {op.path} ({what}):\n"
                                 + "".join(traceback.format_exception_only(e)).strip())
        if time.monotonic() > self.deadline and not any("time bound" in f
                                                        for f in self.failures):
            self.failures.append(f"the time bound of {BUDGET:g} s passed at "
                                 f"{op.method.upper()} {op.path} after {self.sent} requests")


def _only_auth_invalid(case) -> bool:
    """A negative case whose only invalid parts are headers or cookies: those may be just the
    credentials it made for the document's schemes (Authorization, the session cookie),
    which the real token replaces, so it would be sent valid.  (Last-Event-ID, the one
    header parameter, is left to tests/acceptance/test_web_events.py.)"""
    negative = {location.name for location, part in case.meta.components.items()
                if part.mode.is_negative}
    return bool(negative) and negative <= {"HEADER", "COOKIE"}


def _unsatisfiable(e: BaseException) -> bool:
    from hypothesis.errors import Unsatisfiable
    return isinstance(e, Unsatisfiable) or "Unsatisfiable" in type(e).__name__
