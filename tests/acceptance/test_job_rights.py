"""A job keeps to its own rights (issue 15, part 4), through real worker processes: no
cluster token in its reach, a token that works only while its attempt runs and only on what
is its own, every process it starts ends with it, a bounded log, private files."""
from __future__ import annotations

import os
import signal
import socket
import stat
import sys

from titan.errors import RemoteError, TitanError
from titan.sdk.client import Client
from tests.acceptance.helpers import ClusterTestCase, Journal, pid_alive, read_pid, wait_ended

# Double fork + setsid: the grandchild leaves the job's session and process group, closes
# its output and lives on; the job exits 0 (after argv[2] seconds).
ESCAPE = """\
import os, sys, time
if os.fork() == 0:
    os.setsid()
    pid = os.fork()
    if pid:
        with open(sys.argv[1] + ".tmp", "w") as f:
            f.write(str(pid))
        os.rename(sys.argv[1] + ".tmp", sys.argv[1])
        os._exit(0)
    os.closerange(0, 3)
    os.execv("/bin/sleep", ["sleep", "300"])
os.wait()
time.sleep(float(sys.argv[2]))
"""


def _cmdline(pid: int) -> bytes:
    with open(f"/proc/{pid}/cmdline", "rb") as f:
        return f.read()


class SecretsTests(ClusterTestCase):
    workers = 1

    def test_a_job_finds_the_cluster_token_nowhere(self):
        # Not in its environment, nor in its worker's command line or environment block,
        # nor in the master's, nor in any command line of the machine (ps).
        master_pid, worker_pid = self.cluster.master.pid, self.cluster.workers["w1"].pid
        probe = (f"env; cat /proc/$PPID/cmdline /proc/$PPID/environ "
                 f"/proc/{master_pid}/cmdline /proc/{master_pid}/environ; ps -eo args")
        with self.cluster.client() as c:
            job = c.submit(["sh", "-c", probe])
            self.assertEqual(wait_ended(self, c, job, 30)[0]["state"], "COMPLETED")
            out = c.logs(job)
        self.assertIn("TITAN_WORKER_ID=", out.decode())
        self.assertIn(f"TITAN_TOKEN=job:{job}:", out.decode())  # its own, scoped token
        self.assertFalse(self.cluster.token.encode() in out,
                         "the job read the cluster token")
        self.assertFalse(self.cluster.token.encode() in _cmdline(worker_pid))

    def test_token_on_the_command_line_warns_and_is_blanked_token_file_works(self):
        path = os.path.join(self.base_dir, "token-file")
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(self.cluster.token + "\n")
        argv = self.cluster._spawn("argv", [
            "titan-worker", "--config", self.cluster.config_path, "--master",
            self.cluster.address, "--token", self.cluster.token, "--name", "argv",
            "--data-dir", os.path.join(self.base_dir, "argv")])
        self.addCleanup(lambda: argv.alive() and argv.proc.kill())
        filed = self.cluster._spawn("filed", [
            "titan-worker", "--config", self.cluster.config_path, "--master",
            self.cluster.address, "--token-file", path, "--name", "filed",
            "--data-dir", os.path.join(self.base_dir, "filed")])
        self.addCleanup(lambda: filed.alive() and filed.proc.kill())
        with self.cluster.client() as c:
            self.wait_for(lambda: {"argv", "filed"} <= {w["name"] for w in c.workers()
                                                        if w["state"] == "ALIVE"},
                          what="both workers registered")
        with open(argv.log_file + ".err") as f:
            self.assertIn("--token on the command line is visible to every local user",
                          f.read())
        self.assertNotIn(self.cluster.token.encode(), _cmdline(argv.pid))
        self.assertNotIn(self.cluster.token.encode(), _cmdline(filed.pid))

    def test_an_empty_token_file_is_refused_naming_it(self):
        path = os.path.join(self.base_dir, "empty-token")
        open(path, "w").close()
        result = self.titan("--token-file", path, "workers")
        self.assertEqual(result.returncode, 2)
        self.assertIn(f"--token-file {path}: the file is empty", result.stderr.decode())


class JobTokenTests(ClusterTestCase):
    workers = 1

    def _job_token(self, c: Client, job: str) -> str:
        def token():
            for line in c.logs(job).decode().splitlines():
                if line.startswith("TOKEN="):
                    return line[len("TOKEN="):]
        return self.wait_for(token, what="the job's token in its log")

    def test_a_jobs_token_stops_working_when_its_attempt_ends(self):
        go = os.path.join(self.base_dir, "go")
        with self.cluster.client() as c:
            job = c.submit(["sh", "-c", f'echo "TOKEN=$TITAN_TOKEN"; '
                                        f'while [ ! -e {go} ]; do sleep 0.05; done'])
            token = self._job_token(c, job)
            held = Client(master=self.cluster.address, token=token)
            self.addCleanup(held.close)
            self.assertEqual(held.status(job), "RUNNING")  # while it runs, it works
            open(go, "w").close()
            self.assertEqual(wait_ended(self, c, job, 30)[0]["state"], "COMPLETED")
        # The connection opened during the job is closed by the master, unasked...
        sock = held._sock

        def closed():
            try:
                return sock.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT) == b""
            except BlockingIOError:
                return False
            except OSError:
                return True
        self.wait_for(closed, what="the master to close the job's connection")
        # ...and the token opens no new one.
        with self.assertRaises(TitanError):
            held.status(job)
        with self.assertRaises(TitanError) as caught:
            Client(master=self.cluster.address, token=token).status(job)
        self.assertIn(f"the token of job {job} (attempt 1) is no longer valid",
                      str(caught.exception))

    def test_a_job_may_not_restart_a_service_nor_cancel_nor_decide(self):
        with self.cluster.client() as c:
            c.deploy("victim", ["sleep", "600"])
            self.wait_for(lambda: c.service("victim")["state"] == "RUNNING",
                          what="the service up")
            before = c.service("victim")
            other = c.submit(["sleep", "600"])
            script = (
                "from titan.sdk.client import Client\n"
                "from titan.errors import RemoteError\n"
                "import sys\n"
                "c = Client()\n"
                "for what, call in (('restart', lambda: c.restart_service('victim')),\n"
                "                   ('cancel', lambda: c.cancel(sys.argv[1])),\n"
                "                   ('approve', lambda: c.approve(sys.argv[1]))):\n"
                "    try:\n"
                "        call()\n"
                "        print(what, 'DONE')\n"
                "    except RemoteError as e:\n"
                "        print(what, e.code)\n")
            job = c.submit([sys.executable, "-c", script, other])
            self.assertEqual(wait_ended(self, c, job, 30)[0]["state"], "COMPLETED")
            self.assertEqual(c.logs(job).decode().split("\n")[:3],
                             ["restart forbidden", "cancel forbidden", "approve forbidden"])
            self.assertEqual(c.status(other), "RUNNING")
            after = c.service("victim")
            self.assertEqual(after.get("restarts"), before.get("restarts"))
            c.cancel(other)
            c.stop_service("victim")


class ContainmentTests(ClusterTestCase):
    """Every process a job starts ends with it: at its end, at its timeout, when its worker
    is killed -9."""

    workers = 1
    contain = "cgroup"

    @classmethod
    def _options(cls):
        return {"worker_extra": f"  contain: {cls.contain}\n"}

    def setUp(self):
        type(self).cluster_options = self._options()
        super().setUp()

    def _escaped(self, name: str) -> str:
        return os.path.join(self.base_dir, f"{name}-{self.contain}.pid")

    def test_a_double_forked_setsid_process_dies_with_its_job_and_the_log_says_so(self):
        pidfile = self._escaped("end")
        with self.cluster.client() as c:
            job = c.submit([sys.executable, "-c", ESCAPE, pidfile, "0.5"])
            self.assertEqual(wait_ended(self, c, job, 30)[0]["state"], "COMPLETED")
            pid = read_pid(pidfile)
            self.wait_for(lambda: not pid_alive(pid), what=f"escaped pid {pid} gone")
            self.assertIn(f"[titan: killed 1 process the job left running (pid {pid})",
                          c.logs(job).decode())
        with open(self.cluster.workers["w1"].log_file) as f:
            self.assertIn(f"jobs are contained by {self.contain}", f.read())

    def test_a_timeout_kills_the_process_that_left_the_session(self):
        pidfile = self._escaped("timeout")
        with self.cluster.client() as c:
            job = c.submit([sys.executable, "-c", ESCAPE, pidfile, "300"], timeout=2)
            pid = read_pid(pidfile)
            self.assertEqual(wait_ended(self, c, job, 30)[0]["state"], "FAILED")
            self.wait_for(lambda: not pid_alive(pid), what=f"escaped pid {pid} gone")

    def test_a_killed_worker_takes_what_its_jobs_started(self):
        pidfile = self._escaped("kill9")
        journal = Journal(os.path.join(self.base_dir, f"journal-{self.contain}"))
        doomed = f"doomed-{self.contain}"
        self.cluster.start_worker(doomed, tags="DOOMED")
        self.cluster.wait_for_workers(2)
        with self.cluster.client() as c:
            job = c.submit(journal.sh([sys.executable, "-c", ESCAPE, pidfile, "300"]),
                           tags=["DOOMED"])
            pid = read_pid(pidfile)
            self.cluster.kill_worker(doomed, signal.SIGKILL)
            self.wait_for(lambda: not pid_alive(pid), what=f"escaped pid {pid} gone")
            c.cancel(job)
            [ended] = wait_ended(self, c, job, 20)
        self.assertEqual(ended["state"], "CANCELLED")
        # It ran once, on the worker that was killed, and never to its end.
        self.assertEqual([(e.what, e.attempt, e.worker) for e in journal.entries(job)],
                         [("start", 1, doomed)])


class TrackingContainmentTests(ContainmentTests):
    """The same without a cgroup: by session, group, parent and the job's mark."""

    contain = "tracking"


class LogCapTests(ClusterTestCase):
    workers = 1
    cluster_options = {"master_extra": "  log_max_bytes: 100000\n"
                                       "  keep_log_bytes: 250000\n"
                                       "  forget_after: 0.5\n"}

    def test_an_attempt_keeps_at_most_log_max_bytes_and_says_what_was_cut(self):
        with self.cluster.client() as c:
            job = c.submit(["sh", "-c", "head -c 3000000 /dev/zero | tr '\\0' x"])
            self.assertEqual(wait_ended(self, c, job, 60)[0]["state"], "COMPLETED")
            log = self.wait_for(lambda: (lambda b: b if b.endswith(b"]\n") else None)(
                c.logs(job)), what="the tally line")
        path = os.path.join(self.base_dir, "master", "logs", f"{job}.log")
        self.assertLess(os.path.getsize(path), 100_000 + 500)
        self.assertEqual(log[:100_000], b"x" * 100_000)
        text = log[100_000:].decode()
        self.assertIn("[titan: attempt 1 passed the log cap of 100000 bytes "
                      "(master.log_max_bytes): the rest of its output is cut]", text)
        self.assertIn("[titan: 2900000 bytes of attempt 1's output were cut", text)

    def test_past_keep_log_bytes_the_oldest_finished_jobs_go(self):
        with self.cluster.client() as c:
            jobs = []
            for _ in range(5):  # 90 kB each: 450 kB, over the 250 kB kept
                jobs.append(c.submit(["sh", "-c", "head -c 90000 /dev/zero | tr '\\0' y"]))
                self.assertEqual(wait_ended(self, c, jobs[-1], 60)[0]["state"], "COMPLETED")

            logs = os.path.join(self.base_dir, "master", "logs")

            def kept() -> int:
                return sum(os.path.getsize(os.path.join(logs, n)) for n in os.listdir(logs))

            def forgotten():
                try:
                    c.status(jobs[0])
                except RemoteError:
                    return True
            # One job goes at a time (none younger than forget_after): wait for the total.
            self.wait_for(lambda: forgotten() and kept() <= 250_000,
                          what=lambda: f"the oldest jobs forgotten, down to 250000 bytes of "
                                       f"logs (now {kept()})")
            self.assertEqual(c.status(jobs[-1]), "COMPLETED")
        self.assertFalse(os.path.exists(os.path.join(logs, f"{jobs[0]}.log")))


class FileModeTests(ClusterTestCase):
    workers = 1

    def setUp(self):
        old = os.umask(0o022)  # what most machines have: files 0644 by default
        try:
            super().setUp()
        finally:
            os.umask(old)

    def test_the_data_dirs_hold_only_private_files(self):
        made = os.path.join(self.base_dir, "made-by-the-job")
        with self.cluster.client() as c:
            job = c.submit(["sh", "-c", f"echo hello; touch {made}"])
            self.assertEqual(wait_ended(self, c, job, 30)[0]["state"], "COMPLETED")
            c.logs(job)
        wide = []
        for top in ("master", "w1"):
            for root, dirs, files in os.walk(os.path.join(self.base_dir, top)):
                for name in dirs + files + ([] if root != os.path.join(self.base_dir, top)
                                            else ["."]):
                    path = os.path.join(root, name)
                    mode = stat.S_IMODE(os.lstat(path).st_mode)
                    if mode & 0o077:
                        wide.append(f"{path} {oct(mode)}")
        self.assertEqual(wide, [])
        self.assertTrue(os.path.exists(os.path.join(self.base_dir, "master", "logs",
                                                    f"{job}.log")))
        # A job's own files keep the umask the worker was started with.
        self.assertEqual(stat.S_IMODE(os.stat(made).st_mode), 0o644)
