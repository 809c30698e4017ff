"""Issue 15 parts 1 and 2: the ways in without a token, probed against real clusters on
127.0.0.1 (two, a few seconds each).  Run it with the .venv of the tree to probe (a worktree
of an older commit gives the "before"):

    .venv/bin/python bench/auth_probes.py

For a master with the default config, then one with `master.text_frames: on`, it prints:
a text-frame SUBMIT_DAG of `id -un` from this user and (as root, through setpriv) from uid
nobody; a job that writes its run's gate key `titan:hitl:status:g` = APPROVED through the
master with its own token; a gate key written straight to the store.  Needs redis-cli.
"""
import json
import os
import subprocess
import sys
import tempfile
import time

import titan
from titan.protocols import legacy as L
from titan.sdk.legacy_client import LegacyClient, LegacyError
from titan.testing.cluster import Cluster

BIN = os.path.dirname(sys.executable)
ASK = ("import sys\nfrom titan.sdk.legacy_client import LegacyClient\n"
       "print(*LegacyClient('127.0.0.1', int(sys.argv[1])).request(0x04, sys.argv[2]))")
JOB = ("from titan.sdk import Client\n"
       "Client().store_put('titan:hitl:status:g', 'APPROVED')\nprint('wrote')")


def store():
    base = tempfile.mkdtemp(prefix="auth-probe-store-")
    proc = subprocess.Popen(
        [os.path.join(BIN, "twistd"), "-n", f"--logfile={base}/s.log", "--pidfile=",
         "titan-store", "--listen", "tcp:0:interface=127.0.0.1", "--data-dir", f"{base}/d"],
        cwd=base, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            return proc, int(open(f"{base}/d/store.port").read())
        except (OSError, ValueError):
            time.sleep(0.05)
    proc.kill()
    raise SystemExit("the store did not start")


def wait(predicate, timeout=10.0):
    deadline = time.monotonic() + timeout
    while not predicate() and time.monotonic() < deadline:
        time.sleep(0.1)


def probe(label, master_extra):
    sproc, sport = store()
    cluster = Cluster(tempfile.mkdtemp(prefix="auth-probe-"), workers=1,
                      master_extra=master_extra,
                      config_extra=f"store:\n  url: redis://127.0.0.1:{sport}/0\n").start()
    out = {"tree": os.path.dirname(os.path.dirname(titan.__file__)), "config": label}
    try:
        lc = LegacyClient("127.0.0.1", cluster.port)
        try:
            out["text SUBMIT_DAG, this user"] = lc.submit_dag(
                [L.run_payload("probe-id", "p.sh", b"id -un")])
            wait(lambda: lc.get_job_status("DAG-probe-id") in ("COMPLETED", "FAILED", "DEAD"))
            out["  its output"] = lc.get_logs("DAG-probe-id").strip()
        except LegacyError as e:
            out["text SUBMIT_DAG, this user"] = e.text
        r = subprocess.run(["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups",
                            sys.executable, "-c", ASK, str(cluster.port),
                            L.run_payload("probe-nobody", "p.sh", b"id -un")],
                           capture_output=True, text=True, cwd="/")
        out["text SUBMIT_DAG, uid nobody"] = (r.stdout or r.stderr).strip()[-200:]
        with cluster.client() as c:
            run = c.submit_dag({"name": "p", "jobs": [
                {"id": "job", "command": [sys.executable, "-c", JOB]},
                {"id": "g", "kind": "gate", "depends_on": ["job"]}]})["run_id"]
            wait(lambda: c.job(f"{run}/g")["state"] not in ("PENDING",))
            time.sleep(1.5)  # three polls of the store's keys
            job, gate = c.job(f"{run}/job"), c.job(f"{run}/g")
            logs = c.logs(f"{run}/job").decode().strip()[-120:]
            out["a job's store_put of its gate's key"] = (
                f"job {job['state']} ({logs}); gate {gate['state']}, "
                f"decision {gate.get('decision')}")
            run = c.submit_dag({"name": "p2", "jobs": [{"id": "g2", "kind": "gate"}]})["run_id"]
            wait(lambda: c.job(f"{run}/g2")["state"] == "WAITING_APPROVAL")
            subprocess.run(["redis-cli", "-p", str(sport), "SET", "titan:hitl:status:g2",
                            "APPROVED"], capture_output=True)
            time.sleep(1.5)
            gate = c.job(f"{run}/g2")
            out["the gate key written in the store"] = f"{gate['state']} {gate.get('decision')}"
    finally:
        cluster.stop()
        sproc.kill()
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    probe("defaults", "")
    probe("text_frames: on", "  text_frames: on\n")
