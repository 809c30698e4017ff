"""What the master's parse of a SUBMIT_DAG refuses, and how, after its fast paths (issue 13,
D: a 1,000-job DAG is parsed before its first job can start)."""
from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from titan.core.dag import SubmitError, parse_dag


def dag(**job) -> dict:
    return {"name": "d", "jobs": [dict({"id": "a", "command": ["/bin/true"]}, **job)]}


class AcceptTests(SynchronousTestCase):
    def refused(self, body: dict) -> str:
        with self.assertRaises(SubmitError) as caught:
            parse_dag(body)
        return str(caught.exception)

    def test_an_unknown_key_is_named_with_the_known_ones(self) -> None:
        message = self.refused(dag(comand="x", zeta=1))
        self.assertTrue(message.startswith("jobs[0] (a): unknown key 'comand', 'zeta' "
                                           "(known: affinity, command, cwd, "), message)

    def test_an_unknown_key_of_a_gate(self) -> None:
        body = {"name": "d", "jobs": [{"id": "g", "kind": "gate", "command": ["x"]}]}
        self.assertEqual(self.refused(body), "jobs[0] (g): unknown key 'command' (known: "
                                             "depends_on, id, kind, message, name, "
                                             "on_timeout, timeout)")

    def test_every_known_key_is_taken(self) -> None:
        spec = parse_dag(dag(kind="job", script=None, depends_on=[], priority=0, tags=[],
                             timeout=None, retries=0, delay=0.0, env={}, cwd=None,
                             hitl_message=None, max_wait_seconds=None, affinity=None,
                             type="run", port=None)).specs[0]
        self.assertEqual((spec.job_id, tuple(spec.command), spec.env, spec.workspace),
                         ("a", ("/bin/true",), (), None))

    def test_env(self) -> None:
        self.assertEqual(parse_dag(dag(env={"B": "2", "A": "1"})).specs[0].env,
                         (("A", "1"), ("B", "2")))
        for env in ({"A": 1}, {1: "a"}, ["A=1"], "A=1"):
            self.assertEqual(self.refused(dag(env=env)), "job a: env must map names to strings")

    def test_workspace(self) -> None:
        self.assertEqual(parse_dag(dag(workspace="shared")).specs[0].workspace, "shared")
        self.assertEqual(parse_dag(dict(dag(), workspace="shared")).specs[0].workspace,
                         "shared")
        self.assertEqual(self.refused(dag(workspace="common")),
                         "job a: workspace must be job or shared, not 'common'")
