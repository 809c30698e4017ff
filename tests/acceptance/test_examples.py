"""The examples in examples/ run as a user runs them: a subprocess, the cluster in its env."""
from __future__ import annotations

import os
import queue
import re
import subprocess
import sys
import threading
import time

from tests.acceptance.helpers import ClusterTestCase

EXAMPLES = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__)))), "examples")


class Running:
    """An example started in the background, its output read line by line as it comes."""

    def __init__(self, args: list[str], env: dict, cwd: str) -> None:
        self.proc = subprocess.Popen(args, env=env, cwd=cwd, stdin=subprocess.DEVNULL,
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        self.lines: "queue.Queue[str | None]" = queue.Queue()
        self.seen: list[str] = []
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        for line in self.proc.stdout:
            self.lines.put(line.decode(errors="replace"))
        self.lines.put(None)

    def until(self, pattern: str, timeout: float = 30.0) -> re.Match:
        """The first line from now on that matches `pattern`."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                line = self.lines.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                raise AssertionError(f"no line matching {pattern!r} in {timeout}s; "
                                     f"so far:\n{''.join(self.seen)}") from None
            if line is None:
                raise AssertionError(f"the example ended (exit {self.proc.wait()}) before a "
                                     f"line matching {pattern!r}:\n{''.join(self.seen)}"
                                     f"{self.proc.stderr.read().decode()}")
            self.seen.append(line)
            match = re.search(pattern, line)
            if match:
                return match

    def finish(self, timeout: float = 30.0) -> tuple[int, str, str]:
        """Exit status, the rest of stdout, and stderr."""
        code = self.proc.wait(timeout)
        self.reader.join(timeout)
        rest = []
        while not self.lines.empty():
            line = self.lines.get_nowait()
            if line is not None:
                rest.append(line)
        self.seen += rest
        return code, "".join(rest), self.proc.stderr.read().decode()

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


class ExampleTests(ClusterTestCase):
    workers = 2
    slots = 4

    def command(self, name: str, *args: str) -> list[str]:
        return [sys.executable, os.path.join(EXAMPLES, name), *args]

    def example(self, name: str, *args: str, timeout: float = 60) -> subprocess.CompletedProcess:
        result = subprocess.run(self.command(name, *args), env=self.cluster.env(),
                                capture_output=True, timeout=timeout, cwd=self.base_dir,
                                stdin=subprocess.DEVNULL)
        return result

    def start(self, name: str, *args: str) -> Running:
        running = Running(self.command(name, *args), self.cluster.env(), self.base_dir)
        self.addCleanup(running.kill)
        return running

    def ok(self, result: subprocess.CompletedProcess) -> str:
        out = result.stdout.decode()
        self.assertEqual(result.returncode, 0, f"stdout:\n{out}\nstderr:\n"
                                               f"{result.stderr.decode()}")
        return out

    # -- etl_chain.py ------------------------------------------------------------------------

    def test_etl_chain(self):
        out = self.ok(self.example("etl_chain.py"))
        run_id = re.search(r"^started run (etl-chain-\w+)", out, re.M).group(1)
        self.assertRegex(out, r"extract\s+COMPLETED\s+attempt 1")
        self.assertRegex(out, r"load\s+COMPLETED\s+attempt 1")
        self.assertIn("loaded 90 rows, total 8100.00\n", out)
        self.assertIn("ok: the total is the one expected", out)
        with self.cluster.client() as c:
            # The data went through results, step to step.
            self.assertEqual(len(c.result(f"{run_id}/extract")["rows"]), 100)
            self.assertEqual(len(c.result(f"{run_id}/transform")["rows"]), 90)
            self.assertEqual(c.result(f"{run_id}/load")["total_cents"], 810000)
            self.assertEqual(c.logs(f"{run_id}/transform"), b"kept 90 of 100 rows\n")
            self.assertEqual(c.job(f"{run_id}/load")["depends_on"], ["transform"])

    # -- map_reduce.py -----------------------------------------------------------------------

    def test_map_reduce_default_twenty_maps(self):
        out = self.ok(self.example("map_reduce.py"))
        run_id = re.search(r"^started run (map-reduce-\w+): split -> 20 map jobs", out,
                           re.M).group(1)
        self.assertIn(f"run {run_id} COMPLETED: 22 COMPLETED", out)
        self.assertIn("sum of squares of 1..1000000 over 20 map jobs = 333333833333500000\n",
                      out)
        self.assertIn("ok: matches", out)
        with self.cluster.client() as c:
            reduce = c.job(f"{run_id}/reduce")
            self.assertEqual(reduce["depends_on"], [f"map-{i}" for i in range(20)])
            self.assertEqual(c.result(f"{run_id}/map-19"),
                             {"shard": 19, "sum": sum(n * n for n in range(950001, 1000001))})

    def test_map_reduce_takes_n_from_argv(self):
        out = self.ok(self.example("map_reduce.py", "7", "--numbers", "1000"))
        self.assertIn("split -> 7 map jobs -> reduce", out)
        self.assertIn("sum of squares of 1..1000 over 7 map jobs = 333833500\n", out)
        bad = self.example("map_reduce.py", "0")
        self.assertEqual(bad.returncode, 2)
        self.assertIn("N must be 1 or more", bad.stderr.decode())

    # -- agent_loop.py -----------------------------------------------------------------------

    def test_agent_loop_approved_through_the_sdk(self):
        out = self.ok(self.example("agent_loop.py", "--approve", "--agent-run-id", "agent-t1"))
        plan = re.search(r"started PLAN run (agent-plan-\w+)", out).group(1)
        evaluation = re.search(r"started EVAL run (agent-eval-\w+)", out).group(1)
        # The loop grew itself to four ITER jobs, then stopped on its own.
        self.assertRegex(out, r"iter-1\s+COMPLETED\s+score 0.25\s+not good enough yet: "
                              r"added iter-2")
        self.assertRegex(out, r"iter-4\s+COMPLETED\s+score 1.0\s+done: the draft covers "
                              r"the outline")
        self.assertNotIn("iter-5", out)
        self.assertIn(f"approved {evaluation}/review through the SDK (--approve)", out)
        self.assertIn("SYNTH published:\n  | # Titan's DAG runs\n", out)
        self.assertRegex(out, rf"{plan}\s+PLAN\s+COMPLETED\s+5/5 jobs completed")
        self.assertRegex(out, rf"{evaluation}\s+EVAL\s+COMPLETED\s+3/3 jobs completed")
        with self.cluster.client() as c:
            run = c.run(plan)
            self.assertEqual([j["node"] for j in run["jobs"]],
                             ["plan", "iter-1", "iter-2", "iter-3", "iter-4"])
            self.assertEqual(c.job(f"{plan}/iter-3")["depends_on"], ["iter-2"])
            self.assertEqual([(r["run_id"], r["stage"]) for r in c.runs("agent-t1")],
                             [(plan, "PLAN"), (evaluation, "EVAL")])
            decision = c.job(f"{evaluation}/review")["decision"]
            self.assertEqual((decision["approved"], decision["by"]), (True, "agent_loop.py"))
            self.assertIn("What to watch for:", c.result(f"{evaluation}/synth")["answer"])
        timeline = self.titan("runs", "agent-t1").stdout.decode().splitlines()
        self.assertEqual([line.split()[2:5] for line in timeline[1:]],
                         [["PLAN", "COMPLETED", "5/5"], ["EVAL", "COMPLETED", "3/3"]])

    def test_agent_loop_waits_for_a_person_who_approves(self):
        agent = self.start("agent_loop.py", "--max-iters", "2")
        self.assertRegex(agent.until(r"^\s+iter-2\s").string, r"stopping: --max-iters 2 reached")
        command = agent.until(r"to publish:\s+(titan approve \S+)").group(1)
        agent.until(r"^waiting for the decision")
        gate = command.split()[-1]
        with self.cluster.client() as c:
            self.assertEqual(c.job(gate)["state"], "WAITING_APPROVAL")
        # What the example told the person to type, typed.
        approved = self.titan(*command.split()[1:], "--by", "carol")
        self.assertEqual(approved.stdout.decode().strip(), f"{gate} APPROVED by carol")
        code, rest, err = agent.finish()
        self.assertEqual(code, 0, rest + err)
        self.assertIn(f"{gate} approved by carol\n", rest)
        self.assertRegex(rest, r"PLAN\s+COMPLETED\s+3/3 jobs completed")

    def test_agent_loop_rejected_at_the_gate_exits_1(self):
        agent = self.start("agent_loop.py", "--max-iters", "1")
        gate = agent.until(r"to stop:\s+titan reject (\S+)").group(1)
        rejected = self.titan("reject", gate, "-m", "too short", "--by", "dave")
        self.assertEqual(rejected.returncode, 0, rejected.stderr)
        code, rest, err = agent.finish()
        self.assertEqual(code, 1)
        self.assertIn(f"{gate} was rejected by dave: too short; synth was cancelled", rest)
        self.assertIn("synth: CANCELLED cancelled: gate review rejected by dave: too short",
                      err)
