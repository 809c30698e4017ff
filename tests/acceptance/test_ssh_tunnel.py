"""A worker on a machine that cannot be dialled (a cloud GPU box behind NAT) joins a master
on a laptop through `ssh -R`, as docs/remote-workers.md tells: a real Debian sshd on
127.0.0.1 plays the GPU box's, with a host key and a client key made for the test; `ssh`
opens the tunnel from the laptop's side; the worker dials the tunnel's end.  The tunnel
is then killed under a running job and opened again: the job runs on, the worker comes
back with backoff, and the job ends once."""
from __future__ import annotations

import os
import pwd
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import textwrap
from typing import Optional

from tests.acceptance.helpers import ClusterTestCase, Journal, pid_alive, read_pid, wait_ended
from titan.testing.cluster import BIN, Child, free_port
from titan.testing.processes import die_with_parent, tail

SSHD = "/usr/sbin/sshd"
# How long the worker said it would wait before each retry (ClientService logs it).
RETRY = re.compile(r"Scheduling retry \d+ to connect .*? in ([0-9.]+) seconds")


def _keygen(path: str) -> None:
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "titan-test",
                    "-f", path], check=True, stdin=subprocess.DEVNULL)


class GpuBox:
    """The far machine: its sshd (any user may run one; it then lets in only that user),
    the worker that runs there, and the tunnel the laptop opens to it."""

    def __init__(self, root: str) -> None:
        if not os.access(SSHD, os.X_OK) or shutil.which("ssh") is None:
            raise RuntimeError(f"{SSHD} or ssh is not installed (make test installs "
                               "openssh-server and openssh-client)")
        self.root = root
        self.user = pwd.getpwuid(os.geteuid()).pw_name  # who runs sshd and logs in
        self.port = free_port()  # sshd's
        self.tunnel_port = free_port()  # the tunnel's end on the box, where its worker dials
        self.host_key = os.path.join(root, "host_key")
        self.client_key = os.path.join(root, "client_key")
        _keygen(self.host_key)
        _keygen(self.client_key)
        # The key as docs/remote-workers.md advises for an unattended tunnel: it may open
        # this one forward and nothing else.
        with open(self.client_key + ".pub") as f:
            client_key = f.read().strip()
        with open(os.path.join(root, "authorized_keys"), "w") as f:
            f.write(f'restrict,command="/bin/false",port-forwarding,'
                    f'permitlisten="127.0.0.1:{self.tunnel_port}" {client_key}\n')
        # The laptop knows the box's host key: StrictHostKeyChecking stays on.
        with open(self.host_key + ".pub") as f:
            kind, key = f.read().split()[:2]
        self.known_hosts = os.path.join(root, "known_hosts")
        with open(self.known_hosts, "w") as f:
            f.write(f"[127.0.0.1]:{self.port} {kind} {key}\n")
        self.config = os.path.join(root, "sshd_config")
        with open(self.config, "w") as f:
            f.write(textwrap.dedent(f"""\
                ListenAddress 127.0.0.1
                Port {self.port}
                HostKey {self.host_key}
                AuthorizedKeysFile {root}/authorized_keys
                PidFile {root}/sshd.pid
                StrictModes no
                UsePAM no
                PubkeyAuthentication yes
                PasswordAuthentication no
                KbdInteractiveAuthentication no
                PermitRootLogin prohibit-password
                AllowUsers {self.user}
                AllowTcpForwarding remote
                GatewayPorts no
                X11Forwarding no
                PermitTTY no
                LogLevel VERBOSE
                """))
        self.sshd: Optional[subprocess.Popen] = None
        self.tunnel: Optional[subprocess.Popen] = None
        self.tunnels = 0

    # -- the box's sshd ---------------------------------------------------------------------

    def start_sshd(self, case) -> None:
        if os.geteuid() == 0:
            # sshd run by root separates privileges into this (empty, root-owned) directory;
            # the package's service would make it.
            os.makedirs("/run/sshd", mode=0o755, exist_ok=True)
        log = os.path.join(self.root, "sshd.log")
        with open(log, "wb") as err:
            self.sshd = subprocess.Popen([SSHD, "-D", "-e", "-f", self.config],
                                         stdin=subprocess.DEVNULL, stdout=err, stderr=err,
                                         preexec_fn=die_with_parent)

        def greets() -> bool:
            if self.sshd.poll() is not None:
                case.fail(f"sshd exited with {self.sshd.returncode}:\n{tail(log)}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=2) as s:
                    return s.recv(64).startswith(b"SSH-2.0-")
            except OSError:
                return False
        case.wait_for(greets, 10, f"sshd to greet on 127.0.0.1:{self.port}")

    # -- the tunnel, opened from the laptop ---------------------------------------------------

    def open_tunnel(self, case, master_port: int, timeout: float = 20.0) -> None:
        """`ssh -N -R` from the laptop: the box's sshd listens on 127.0.0.1:tunnel_port and
        forwards to the laptop's master.  Tried again while the box still holds the port
        (a session that has not ended yet: ExitOnForwardFailure makes ssh exit)."""
        def opened() -> bool:
            if self.tunnel is None or self.tunnel.poll() is not None:
                self._start_ssh(master_port)
            with open(self.tunnel_log, errors="replace") as f:
                said = f.read()
            # ssh -v says so once the box has accepted the forward.
            return f"remote forward success for: listen 127.0.0.1:{self.tunnel_port}" in said
        case.wait_for(opened, timeout, lambda: f"the tunnel to open; ssh said:\n"
                                               f"{tail(self.tunnel_log)}")

    def _start_ssh(self, master_port: int) -> None:
        self.tunnels += 1
        self.tunnel_log = os.path.join(self.root, f"ssh-{self.tunnels}.log")
        with open(self.tunnel_log, "wb") as err:
            self.tunnel = subprocess.Popen(
                ["ssh", "-v", "-N", "-F", "/dev/null",
                 "-o", "BatchMode=yes", "-o", "IdentitiesOnly=yes", "-o", "IdentityAgent=none",
                 "-o", "ExitOnForwardFailure=yes", "-o", "ServerAliveInterval=5",
                 "-o", "ServerAliveCountMax=3", "-o", "StrictHostKeyChecking=yes",
                 "-o", f"UserKnownHostsFile={self.known_hosts}",
                 "-o", "GlobalKnownHostsFile=/dev/null",
                 "-i", self.client_key, "-p", str(self.port),
                 "-R", f"127.0.0.1:{self.tunnel_port}:127.0.0.1:{master_port}",
                 f"{self.user}@127.0.0.1"],
                stdin=subprocess.DEVNULL, stdout=err, stderr=err, preexec_fn=die_with_parent)

    def drop_tunnel(self) -> None:
        """The link goes (kill -9 of ssh: no goodbye to either end)."""
        self.tunnel.send_signal(signal.SIGKILL)
        self.tunnel.wait(10)

    def stop(self) -> None:
        for proc in (self.tunnel, self.sshd):
            if proc is not None and proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(10)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()

    # -- the box's worker ------------------------------------------------------------------

    def start_worker(self, cluster, name: str = "gpu-box") -> Child:
        """`twistd -n titan-worker --master 127.0.0.1:TUNNEL_PORT --token-file ...`: the
        token copied into a file of the box (no TITAN_TOKEN in its environment)."""
        token_file = os.path.join(self.root, "token")
        fd = os.open(token_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(cluster.token + "\n")
        log_file = os.path.join(self.root, f"{name}.log")
        env = {k: v for k, v in os.environ.items() if k != "TITAN_TOKEN"}
        with open(log_file + ".err", "wb") as err:
            proc = subprocess.Popen(
                [os.path.join(BIN, "twistd"), "-n", f"--logfile={log_file}", "--pidfile=",
                 "titan-worker", "--config", cluster.config_path,
                 "--master", f"127.0.0.1:{self.tunnel_port}", "--token-file", token_file,
                 "--name", name, "--tags", "GPU", "--slots", "2",
                 "--data-dir", os.path.join(self.root, name)],
                cwd=self.root, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                stderr=err, preexec_fn=die_with_parent)
        child = Child(name, proc, log_file)
        cluster.workers[name] = child  # stopped with the cluster
        return child


class SshTunnelTests(ClusterTestCase):
    """One master on the "laptop" and no worker beside it; the only worker is the box's."""

    workers = 0
    # Long enough that the drop below (a second or so) stays within it; the test that
    # stays away longer waits it out.
    # fixed_port: a restarted master is where the tunnel forwards to.
    cluster_options = {"heartbeat_interval": 0.5, "heartbeat_timeout": 5.0, "fixed_port": True}

    def setUp(self) -> None:
        super().setUp()
        cluster = self.cluster
        box = getattr(cluster, "gpu_box", None)
        if box is None:
            box = GpuBox(tempfile.mkdtemp(prefix="titan-gpu-box-"))
            cluster.gpu_box = box
            stop_cluster = cluster.stop

            def stop_both() -> None:  # the box goes with the class's cluster
                stop_cluster()
                box.stop()
            cluster.stop = stop_both
            box.start_sshd(self)
            box.open_tunnel(self, cluster.port)
            box.start_worker(cluster)
        elif box.tunnel.poll() is not None:  # a test before this one failed with it down
            box.open_tunnel(self, cluster.port)
        self.box = box
        self.worker = self.wait_for(lambda: self.gpu_worker("ALIVE"), 30,
                                    lambda: f"gpu-box to join through the tunnel; it logged:"
                                            f"\n{self.worker_log()[-3000:]}")

    def gpu_worker(self, state: Optional[str] = None) -> Optional[dict]:
        with self.cluster.client() as c:
            for w in c.workers():
                if w["name"] == "gpu-box" and (state is None or w["state"] == state):
                    return w
        return None

    def worker_log(self) -> str:
        with open(self.cluster.workers["gpu-box"].log_file, errors="replace") as f:
            return f.read()

    def test_a_worker_on_the_far_side_joins_and_runs_jobs(self):
        """The worker dials only the tunnel: its jobs run, their output and the results
        they publish through the SDK (which dials the same tunnel) reach the master."""
        self.assertEqual(self.worker["tags"], ["GPU"])
        script = textwrap.dedent("""\
            import os
            from titan.sdk import current_job
            print("master at", os.environ["TITAN_HOST"] + ":" + os.environ["TITAN_PORT"])
            current_job().set_result({"through": "the tunnel"})""")
        with self.cluster.client() as c:
            ids = c.submit_many([{"command": [sys.executable, "-c", script], "tags": ["GPU"]}
                                 for _ in range(3)])
            jobs = wait_ended(self, c, ids, 60)
            for job in jobs:
                self.assertEqual((job["state"], job["worker"]), ("COMPLETED", "gpu-box"), job)
                self.assertEqual(c.logs(job["job_id"]).decode(),
                                 f"master at 127.0.0.1:{self.box.tunnel_port}\n")
                self.assertEqual(c.result(job["job_id"]), {"through": "the tunnel"})
        shown = self.titan("workers")
        self.assertEqual(shown.returncode, 0, shown.stderr)
        self.assertRegex(shown.stdout.decode(), r"gpu-box.*ALIVE")

    def test_the_tunnel_drops_mid_job_and_the_job_runs_once(self):
        """ssh dies under a running job: the master sees the worker disconnected, the job
        runs on at the box, a job submitted meanwhile waits; once ssh is back on the same
        port the worker reconnects (same worker, with backoff), the running job is
        reconciled, both complete, and neither ran twice."""
        journal = Journal(os.path.join(self.box.root, "journal"))
        release = os.path.join(self.box.root, "release-1")
        pidfile = os.path.join(self.box.root, "long-1.pid")
        long_job = journal.sh(f"echo $$ > {pidfile}; echo started; "
                              f"while [ ! -e {release} ]; do sleep 0.05; done; echo released")
        with self.cluster.client() as c:
            job_id = c.submit(long_job, tags=["GPU"])
            pid = read_pid(pidfile, 30)
            self.wait_for(lambda: c.job(job_id)["state"] == "RUNNING", 10,
                          lambda: f"the master to see {job_id} running: {c.job(job_id)}")
            logged_before = self.worker_log()

            self.box.drop_tunnel()
            gone = self.wait_for(lambda: self.gpu_worker("DISCONNECTED"), 10,
                                 lambda: f"the master to see gpu-box disconnected: "
                                         f"{self.gpu_worker()}")
            self.assertEqual(gone["worker_id"], self.worker["worker_id"])
            self.wait_for(lambda: "lost the master; reconnecting"
                          in self.worker_log()[len(logged_before):], 10,
                          "the worker to log the loss")
            # The job runs on at the box; the master still counts it as running there.
            self.assertTrue(pid_alive(pid), "the job died with the tunnel")
            self.assertEqual(c.job(job_id)["state"], "RUNNING")
            # A job submitted now waits for a GPU worker.
            queued = c.submit(journal.sh("echo queued"), tags=["GPU"])
            self.assertEqual(c.job(queued)["state"], "PENDING")
            self.assertEqual(c.job(queued)["waiting"], "no live worker")

            self.box.open_tunnel(self, self.cluster.port)
            back = self.wait_for(lambda: self.gpu_worker("ALIVE"), 10,
                                 lambda: f"gpu-box back through the new tunnel: "
                                         f"{self.gpu_worker()}; it logged:\n"
                                         f"{self.worker_log()[len(logged_before):][-3000:]}")
            self.assertEqual(back["worker_id"], self.worker["worker_id"])  # not a restart
            [queued_job] = wait_ended(self, c, queued, 30)
            self.assertEqual((queued_job["state"], queued_job["worker"]),
                             ("COMPLETED", "gpu-box"), queued_job)

            open(release, "w").close()
            [job] = wait_ended(self, c, job_id, 30)
            self.assertEqual((job["state"], job["worker"], job["attempt"]),
                             ("COMPLETED", "gpu-box", 1), job)
            self.assertEqual([(a["attempt"], a["state"]) for a in c.job(job_id)["attempts"]],
                             [(1, "COMPLETED")])
            self.assertEqual(c.logs(job_id).decode(), "started\nreleased\n")

        # It waited with backoff: each retry's wait is logged, none past the heartbeat
        # interval (0.5 s) and its jitter (under 0.25 s).
        since = self.worker_log()[len(logged_before):]
        waits = [float(s) for s in RETRY.findall(since)]
        self.assertTrue(waits, since[-3000:])
        self.assertLess(max(waits), 0.75, waits)
        self.assertEqual(since.count("registered with the master as"), 1, since[-3000:])
        self.assertEqual([(e.attempt, e.worker) for e in journal.starts(job_id)],
                         [(1, "gpu-box")])
        self.assertEqual(len(journal.ends(job_id)), 1)
        journal.check_exactly_once(self, [job, queued_job])

    def test_a_worker_away_past_the_heartbeat_timeout_is_given_up_and_its_job_adopted(self):
        """Away longer than master.heartbeat_timeout, the worker is given up (DEAD) and its
        job goes back to the queue; no other worker can take it, so when the worker comes
        back saying it still runs it, the master takes it back rather than run it again."""
        journal = Journal(os.path.join(self.box.root, "journal"))
        release = os.path.join(self.box.root, "release-2")
        pidfile = os.path.join(self.box.root, "long-2.pid")
        long_job = journal.sh(f"echo $$ > {pidfile}; "
                              f"while [ ! -e {release} ]; do sleep 0.05; done")
        with self.cluster.client() as c:
            job_id = c.submit(long_job, tags=["GPU"])
            pid = read_pid(pidfile, 30)
            self.box.drop_tunnel()
            # heartbeat_timeout is 5 s: then the master gives the worker up.
            self.wait_for(lambda: self.gpu_worker() is None, 15,
                          lambda: f"the master to give gpu-box up: {self.gpu_worker()}")
            lost = c.job(job_id)
            self.assertEqual((lost["state"], lost["waiting"]), ("PENDING", "no live worker"),
                             lost)
            self.assertIn("worker gpu-box lost", lost["reason"])
            self.assertTrue(pid_alive(pid), "the job died with the tunnel")

            self.box.open_tunnel(self, self.cluster.port)
            self.wait_for(lambda: self.gpu_worker("ALIVE"), 10, "gpu-box back")
            self.wait_for(lambda: c.job(job_id)["state"] == "RUNNING", 10,
                          lambda: f"the master to take {job_id} back: {c.job(job_id)}")
            open(release, "w").close()
            [job] = wait_ended(self, c, job_id, 30)
            self.assertEqual((job["state"], job["attempt"]), ("COMPLETED", 1), job)
            # The lost attempt was found again: one attempt, not a lost one and another.
            self.assertEqual([(a["attempt"], a["state"]) for a in c.job(job_id)["attempts"]],
                             [(1, "COMPLETED")])
        self.assertEqual([(e.attempt, e.worker) for e in journal.starts(job_id)],
                         [(1, "gpu-box")])
        journal.check_exactly_once(self, [job])

    def test_the_master_restarts_behind_a_tunnel_that_stays_up(self):
        """The laptop's master is killed and started again; the tunnel stays.  Meanwhile
        sshd accepts each of the worker's attempts and closes it (nothing behind it): the
        worker backs off all the same, says so once, and comes back to the new master with
        its running job, which ends once."""
        journal = Journal(os.path.join(self.box.root, "journal"))
        release = os.path.join(self.box.root, "release-3")
        pidfile = os.path.join(self.box.root, "long-3.pid")
        long_job = journal.sh(f"echo $$ > {pidfile}; "
                              f"while [ ! -e {release} ]; do sleep 0.05; done")
        with self.cluster.client() as c:
            job_id = c.submit(long_job, tags=["GPU"])
        pid = read_pid(pidfile, 30)
        logged_before = len(self.worker_log())
        self.cluster.kill_master()

        def retries() -> list:
            return [float(s) for s in RETRY.findall(self.worker_log()[logged_before:])]
        waits = self.wait_for(lambda: len(retries()) >= 6 and retries(), 20,
                              lambda: f"six retries: {self.worker_log()[logged_before:]}")
        # 0.15 s after the loss, then x 1.5 per closed attempt up to the 0.5 s heartbeat
        # interval (plus jitter): not 0.15 s again and again, as when only refusals counted.
        for n, waited in enumerate(waits[:6], start=1):
            self.assertGreaterEqual(waited, min(0.1 * 1.5 ** n, 0.5), waits)
        since = self.worker_log()[logged_before:]
        self.assertEqual(since.count("closed before the master answered"), 1, since[-3000:])
        self.assertNotIn("registration failed", since)
        self.assertIsNone(self.box.tunnel.poll(), "ssh exited with its master")
        self.assertTrue(pid_alive(pid), "the job died with the master")

        self.cluster.start_master()
        self.wait_for(lambda: self.gpu_worker("ALIVE"), 15, "gpu-box back with the new master")
        with self.cluster.client() as c:
            self.wait_for(lambda: c.job(job_id)["state"] == "RUNNING", 10,
                          lambda: f"the new master to know {job_id} runs: {c.job(job_id)}")
            open(release, "w").close()
            [job] = wait_ended(self, c, job_id, 30)
            self.assertEqual((job["state"], job["worker"], job["attempt"]),
                             ("COMPLETED", "gpu-box", 1), job)
        self.assertEqual(len(journal.starts(job_id)), 1)
        journal.check_exactly_once(self, [job])
