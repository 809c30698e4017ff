"""Pipelines as users write them, through `titan run`: services inside a run, and the
reference's own YAML (version:, requirement: GENERAL, affinity: true, project by default)."""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import textwrap

from tests.acceptance.helpers import ClusterTestCase
from tests.acceptance.test_services import SERVICE_CONFIG, listening

PY = sys.executable

# A server that takes a while to listen, then greets every connection.
SLOW_SERVER = textwrap.dedent("""\
    import socket, sys, time
    time.sleep(1.5)
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("127.0.0.1", int(sys.argv[1])))
    s.listen()
    print("listening", flush=True)
    while True:
        c, _ = s.accept()
        c.sendall(b"hello from the api")
        c.close()
    """)

# A step that needs the server: it fails if nobody listens.
CLIENT = textwrap.dedent("""\
    import socket, sys
    with socket.create_connection(("127.0.0.1", int(sys.argv[1])), timeout=5) as s:
        print(s.recv(100).decode())
    sys.exit(int(sys.argv[2]))
    """)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class PipelineServiceTests(ClusterTestCase):
    workers = 1
    slots = 4
    cluster_options = {"worker_extra": SERVICE_CONFIG}

    def pipeline(self, name: str, exit_code: int) -> tuple[str, int]:
        port = free_port()
        folder = os.path.join(self.base_dir, name)
        os.makedirs(folder)
        for file, text in (("server.py", SLOW_SERVER), ("client.py", CLIENT)):
            with open(os.path.join(folder, file), "w") as f:
                f.write(text)
        path = os.path.join(folder, "etl.yaml")
        with open(path, "w") as f:
            f.write(textwrap.dedent(f"""\
                name: {name}
                jobs:
                  - id: api
                    type: service
                    file: server.py
                    args: "{port}"
                    port: {port}
                  - id: use
                    file: client.py
                    args: "{port} {exit_code}"
                    depends_on: api
                """))
        return path, port

    def wait_run(self, path: str) -> subprocess.CompletedProcess:
        try:
            return self.titan("run", path, "--wait", timeout=60)
        except subprocess.TimeoutExpired:
            self.fail("titan run --wait did not return within 60 s")

    def services(self) -> dict:
        out = self.titan("service", "list", "--json")
        self.assertEqual(out.returncode, 0, out.stderr)
        return {s["job_id"]: s for s in json.loads(out.stdout)}

    def test_a_dependent_starts_once_the_service_listens_and_the_run_ends(self):
        path, port = self.pipeline("etl-ok", exit_code=0)
        result = self.wait_run(path)
        self.assertEqual(result.returncode, 0, result.stderr.decode())
        run_id = result.stdout.decode().split()[0]
        with self.cluster.client() as c:
            run = c.run(run_id)
            self.assertEqual(run["state"], "COMPLETED")
            self.assertEqual(c.logs(f"{run_id}/use").decode().strip(), "hello from the api")
            api = {j["node"]: j for j in run["jobs"]}["api"]
            self.assertEqual((api["state"], api["reason"]),
                             ("COMPLETED", "stopped: its run ended"))
        # The service was there for the run: it is stopped with it, and says so.
        self.wait_for(lambda: not listening(port), what="the service's port to close")
        svc = self.services()[f"{run_id}/api"]
        self.assertEqual(svc["state"], "STOPPED")
        self.assertEqual(svc["health"], "tcp")  # a port and no health check: tcp readiness

    def test_a_failed_dependent_ends_the_wait_and_the_service(self):
        path, port = self.pipeline("etl-bad", exit_code=3)
        result = self.wait_run(path)
        self.assertEqual(result.returncode, 1, result.stderr.decode())
        run_id = result.stdout.decode().split()[0]
        with self.cluster.client() as c:
            run = c.run(run_id)
        self.assertEqual(run["state"], "FAILED")
        self.assertEqual({j["node"]: j["state"] for j in run["jobs"]},
                         {"api": "COMPLETED", "use": "FAILED"})
        self.wait_for(lambda: not listening(port), what="the service's port to close")


    def test_a_service_no_job_needs_runs_on_after_the_run_until_cancelled(self):
        port = free_port()
        folder = os.path.join(self.base_dir, "deliver")
        os.makedirs(folder)
        with open(os.path.join(folder, "server.py"), "w") as f:
            f.write(SLOW_SERVER)
        path = os.path.join(folder, "deliver.yaml")
        with open(path, "w") as f:
            f.write(textwrap.dedent(f"""\
                name: deliver
                jobs:
                  - id: build
                    command: "true"
                  - id: web
                    type: service
                    file: server.py
                    args: "{port}"
                    port: {port}
                    depends_on: build
                """))
        result = self.wait_run(path)
        self.assertEqual(result.returncode, 0, result.stderr.decode())
        run_id = result.stdout.decode().split()[0]
        self.assertTrue(listening(port))  # the run ended once web was up
        svc = self.services()[f"{run_id}/web"]
        self.assertEqual(svc["state"], "RUNNING")
        status = self.titan("status", run_id).stdout.decode()
        self.assertRegex(status, r"(?m)^web\s+RUNNING")
        cancel = self.titan("cancel", run_id)
        self.assertEqual(cancel.returncode, 0, cancel.stderr.decode())
        self.wait_for(lambda: not listening(port), what="the service's port to close")
        self.assertEqual(self.services()[f"{run_id}/web"]["state"], "STOPPED")


class ReferencePipelineTests(ClusterTestCase):
    """The reference's example (dag_structure_test/agent.yaml) as its users write it."""

    workers = 2
    slots = 1

    def test_affinity_runs_a_step_on_its_parents_worker(self):
        folder = os.path.join(self.base_dir, "dag_structure_test")
        os.makedirs(os.path.join(folder, "scripts"))
        os.makedirs(os.path.join(folder, "src"))
        with open(os.path.join(folder, "scripts", "init.py"), "w") as f:
            f.write("import sys\nprint('init', *sys.argv[1:])\n")
        # Imports its neighbour: it runs from the project folder (project defaults to true).
        with open(os.path.join(folder, "src", "helper.py"), "w") as f:
            f.write("def shout(s):\n    return s.upper()\n")
        with open(os.path.join(folder, "src", "processor.py"), "w") as f:
            f.write("import sys, helper\nprint(helper.shout(sys.argv[1]))\n")
        path = os.path.join(folder, "agent.yaml")
        with open(path, "w") as f:
            f.write(textwrap.dedent("""\
                name: "titan-comprehensive-test"
                version: "1.0"
                jobs:
                  - id: "step-1-init"
                    type: "run"
                    file: "scripts/init.py"
                    priority: 10
                    args: "--mode reset"
                  - id: "step-2-fetch"
                    type: "run"
                    file: "src/processor.py"
                    args: "FETCH"
                    requirement: GENERAL
                    depends_on:
                      - "step-1-init"
                  - id: "step-3-process"
                    type: "run"
                    file: "src/processor.py"
                    args: "PROCESS_DATA"
                    affinity: true            # Sticky Flag
                    depends_on:
                      - "step-2-fetch"
                """))
        result = self.titan("run", path, "--wait", timeout=60)
        self.assertEqual(result.returncode, 0, result.stderr.decode())
        run_id = result.stdout.decode().split()[0]
        with self.cluster.client() as c:
            jobs = {j["node"]: j for j in c.run(run_id)["jobs"]}
            self.assertEqual(c.logs(f"{run_id}/step-3-process").decode().strip(),
                             "PROCESS_DATA")
        workers = {node: j["worker"] for node, j in jobs.items()}
        # Least-loaded alone would put step-3 on the other worker (fewer jobs done there
        # once step-2 ends: step-1 ran on one, step-2 on the other).
        self.assertNotEqual(workers["step-1-init"], workers["step-2-fetch"], workers)
        self.assertEqual(workers["step-3-process"], workers["step-2-fetch"], workers)
