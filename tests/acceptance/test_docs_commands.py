"""Every command shown in README.md and docs/*.md works as printed (issue 13, C13).

The commands are taken from the ```sh (and ```bash) blocks, in order, and run with `sh -c`
against a real cluster — the one the docs themselves start (`make run`, then `twistd -n
titan-master` / `titan-worker` "by hand", `twistd -n titan-store`), on the ports and in the
~/.titan the docs name, with HOME a fresh directory.  examples/README.md's commands run too.  So that ports 9090 and 6379 are free
whatever else this machine runs, the commands run in a network namespace of their own
(`unshare -rn`, loopback only) when the system allows one; otherwise on this machine's
loopback, if those ports are free.

How a command is read:
- `# ...` ends it (a comment); in a block with `$ ` lines, only those are commands (the
  other lines are their output).  A block without a language counts only for its `$ `
  lines (a transcript).
- `[...]` is optional: the command runs without it.
- JOB_ID and RUN_ID are what the latest `titan submit` / `titan run` printed first.
- It must exit 0, or N when its comment says "exits N".
- `export NAME=...` changes the environment of the commands after it.
- A command whose comment says "someone approves meanwhile" has its run's gates approved,
  as `titan approve` does, while it runs.
- A command that starts a server (SERVERS) runs in the background until the next block that
  starts one, or the end; the command after it runs once the server is up.
- NOT_RUN lists the commands that are not run, each with the reason.
- A ```yaml block that starts with `# NAME.yaml` is that file, beside its page's commands
  (which run in a scratch directory; README's run in the checkout, as a reader's do).

Run directly (`python -m tests.acceptance.test_docs_commands DIR`), this module is the
runner: it prints one JSON line per command.
"""
from __future__ import annotations

import glob
import json
import os
import re
import shlex
import signal
import socket
import subprocess
import sys
import tempfile
import time
from typing import Optional

from twisted.trial.unittest import SynchronousTestCase

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BIN = os.path.dirname(sys.executable)
DOCS = ["README.md"] + sorted(os.path.relpath(p, ROOT)
                              for p in glob.glob(os.path.join(ROOT, "docs", "*.md"))) \
    + ["examples/README.md"]
# Pages whose commands run from the checkout, as their readers' do (the others from a scratch
# directory that has the checkout's etc/ and examples/).
FROM_THE_CHECKOUT = ("README.md", "examples/README.md")

# Commands not run here, and why.  (Matched on the start of the command.)
NOT_RUN = {
    "make test": "it runs every test, this one included: minutes, and recursive",
    ".venv/bin/python examples/agent_loop.py": "it stops at its gate until a person decides "
    "(the page says so); docs/pipelines.md runs it with --approve",
}

# Commands that start servers, and what shows each is up.
SERVERS = {
    "make run": ("workers", 1),
    "titan up": ("workers", 1),
    "twistd -n titan-master": ("port", 9090),
    "twistd -n titan-worker": ("workers", 1),
    "twistd -n titan-store": ("port", 6379),
}

# Files a reader of a page has beside its commands (besides its `# NAME.yaml` blocks).
READER_FILES = {
    "docs/pipelines.md": {
        # release.yaml's deploy job ships "deploy.sh, read beside this file".
        "deploy.sh": "#!/bin/sh\necho \"deployed $TITAN_RUN_ID\"\n",
    },
}

COMMAND_TIMEOUT = 60.0
PORTS = (9090, 6379, 8080)  # the master, the store, the master's web API


# -- reading the docs ------------------------------------------------------------------------

def blocks(path: str) -> list[tuple[str, int, list[tuple[int, str]]]]:
    """(language, line of the fence, [(line number, text)]) for each fenced block."""
    out, current = [], None
    with open(os.path.join(ROOT, path), encoding="utf-8") as f:
        for number, line in enumerate(f, 1):
            line = line.rstrip("\n")
            if line.startswith("```"):
                if current is None:
                    current = (line[3:].strip(), number, [])
                else:
                    out.append(current)
                    current = None
            elif current is not None:
                current[2].append((number, line))
    return out


def split_comment(line: str) -> tuple[str, str]:
    """(command, comment): `#` after a blank, outside quotes, starts the comment."""
    quote = None
    for i, c in enumerate(line):
        if quote:
            if c == quote:
                quote = None
        elif c in "'\"":
            quote = c
        elif c == "#" and (i == 0 or line[i - 1].isspace()):
            return line[:i].rstrip(), line[i + 1:].strip()
    return line.rstrip(), ""


def commands(path: str) -> list[dict]:
    """The commands of a page's shell blocks, in order."""
    found = []
    for language, _, lines in blocks(path):
        prompt = any(text.startswith("$ ") for _, text in lines)
        if language not in ("sh", "bash", "shell") and not (language == "" and prompt):
            continue
        first = True
        for number, text in lines:
            if prompt:
                if not text.startswith("$ "):
                    continue
                text = text[2:]
            command, comment = split_comment(text)
            if not command.strip():
                continue
            found.append({"doc": path, "line": number, "printed": command.strip(),
                          "comment": comment, "block_start": first})
            first = False
    return found


def files_of(path: str) -> dict:
    """`# NAME.yaml` blocks of a page, as {NAME.yaml: text}."""
    files = dict(READER_FILES.get(path, {}))
    for language, _, lines in blocks(path):
        if language in ("yaml", "yml") and lines:
            m = re.fullmatch(r"#\s*([\w.-]+\.ya?ml)\s*", lines[0][1])
            if m:
                files[m.group(1)] = "\n".join(text for _, text in lines) + "\n"
    return files


def without_optional(command: str) -> str:
    """`[...]` groups (outside quotes) removed."""
    out, quote, depth = [], None, 0
    for c in command:
        if quote:
            if c == quote:
                quote = None
            if depth == 0:
                out.append(c)
            continue
        if c in "'\"" and depth == 0:
            quote = c
        elif c == "[":
            depth += 1
            continue
        elif c == "]" and depth:
            depth -= 1
            continue
        if depth == 0:
            out.append(c)
    return re.sub(r"\s+", " ", "".join(out)).strip()


def expected_status(comment: str) -> int:
    m = re.search(r"\bexits (\d+)", comment)
    return int(m.group(1)) if m else 0


def starts(command: str, table: dict) -> Optional[str]:
    for prefix in table:
        if command == prefix or command.startswith(prefix + " "):
            return prefix
    return None


# -- running them ----------------------------------------------------------------------------

def loopback_up() -> None:
    """Bring `lo` up (a new network namespace has it down)."""
    import fcntl
    import struct
    SIOCGIFFLAGS, SIOCSIFFLAGS, IFF_UP = 0x8913, 0x8914, 0x1
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        flags = struct.unpack("16sH", fcntl.ioctl(s, SIOCGIFFLAGS,
                                                  struct.pack("16sH", b"lo", 0)))[1]
        fcntl.ioctl(s, SIOCSIFFLAGS, struct.pack("16sH", b"lo", flags | IFF_UP))


def port_open(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
        return True
    except OSError:
        return False


class Runner:
    def __init__(self, base: str) -> None:
        self.base = base
        self.home = os.path.join(base, "home")
        os.makedirs(self.home)
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("TITAN_")}
        self.env.update(HOME=self.home, PATH=f"{BIN}:{self.env.get('PATH', '/usr/bin:/bin')}",
                        PYTHONUNBUFFERED="1")
        self.values: dict[str, str] = {}
        self.servers: list[tuple[str, subprocess.Popen]] = []

    def emit(self, **result) -> None:
        print(json.dumps(result), flush=True)

    def run_all(self) -> None:
        try:
            for doc in DOCS:
                self.run_doc(doc)
        finally:
            self.stop_servers()

    def run_doc(self, doc: str) -> None:
        cwd = ROOT
        files = files_of(doc)
        if doc not in FROM_THE_CHECKOUT:
            # A scratch directory that looks like the checkout to the page's commands
            # (etc/, examples/), with the page's own files in it.
            cwd = os.path.join(self.base, "pages", doc.replace("/", "_"))
            os.makedirs(cwd)
            for name in ("etc", "examples"):
                os.symlink(os.path.join(ROOT, name), os.path.join(cwd, name))
            for name, text in files.items():
                with open(os.path.join(cwd, name), "w") as f:
                    f.write(text)
                os.chmod(os.path.join(cwd, name), 0o755)
        for cmd in commands(doc):
            self.run_one(cmd, cwd)

    def fill(self, command: str) -> str:
        for name in ("JOB_ID", "RUN_ID"):
            if re.search(rf"\b{name}\b", command):
                if name not in self.values:
                    raise LookupError(f"{name} is used before a command printed one")
                command = re.sub(rf"\b{name}\b", self.values[name], command)
        return command

    def run_one(self, cmd: dict, cwd: str) -> None:
        printed = cmd["printed"]
        where = {"doc": cmd["doc"], "line": cmd["line"], "printed": printed}
        reason = NOT_RUN.get(starts(printed, NOT_RUN) or "")
        if reason:
            self.emit(**where, ok=True, skipped=reason)
            return
        try:
            command = self.fill(without_optional(printed))
        except LookupError as e:
            self.emit(**where, ok=False, error=str(e))
            return
        server = starts(command, SERVERS)
        if server:
            if cmd["block_start"]:
                self.stop_servers()
            self.start_server(command, server, cwd, where)
            return
        if command.startswith("export "):
            self.export(command, cwd, where)
            return
        self.before(command)
        started = time.monotonic()
        try:
            if "someone approves meanwhile" in cmd["comment"]:
                result = self.run_approving(command, cwd)
            else:
                result = subprocess.run(["sh", "-c", command], cwd=cwd, env=self.env,
                                        capture_output=True, timeout=COMMAND_TIMEOUT,
                                        stdin=subprocess.DEVNULL)
        except subprocess.TimeoutExpired:
            self.emit(**where, ran=command, ok=False,
                      error=f"still running after {COMMAND_TIMEOUT:g}s")
            return
        out = result.stdout.decode("utf-8", "replace")
        want = expected_status(cmd["comment"])
        self.emit(**where, ran=command, ok=result.returncode == want, status=result.returncode,
                  expected=want, seconds=round(time.monotonic() - started, 2),
                  stdout=out[-800:], stderr=result.stderr.decode("utf-8", "replace")[-800:])
        first = out.split()[0] if out.split() else None
        if first and re.match(r"titan submit\b", command):
            self.values["JOB_ID"] = first
        if first and re.match(r"titan run\b", command):
            self.values["RUN_ID"] = first

    def run_approving(self, command: str, cwd: str) -> subprocess.CompletedProcess:
        """Run a command that prints a run id first and waits for the run; approve each of
        the run's gates once it waits, as a person in another shell would."""
        out_path = os.path.join(self.base, "approving.out")
        with open(out_path, "wb") as out:
            proc = subprocess.Popen(["sh", "-c", command], cwd=cwd, env=self.env,
                                    stdout=out, stderr=subprocess.PIPE,
                                    stdin=subprocess.DEVNULL)
            deadline = time.monotonic() + COMMAND_TIMEOUT
            approved: set = set()
            while proc.poll() is None:
                if time.monotonic() > deadline:
                    proc.kill()
                    proc.wait()
                    raise subprocess.TimeoutExpired(command, COMMAND_TIMEOUT)
                with open(out_path, "rb") as f:
                    words = f.read().split()
                if words:
                    run_id = words[0].decode()
                    for gate in self.waiting_gates(run_id):
                        if gate not in approved:
                            approved.add(gate)
                            subprocess.run(["titan", "approve", gate, "-m", "ok"],
                                           env=self.env, capture_output=True, timeout=30)
                time.sleep(0.1)
            err = proc.stderr.read()
        with open(out_path, "rb") as f:
            return subprocess.CompletedProcess(command, proc.returncode, f.read(), err)

    def waiting_gates(self, run_id: str) -> list:
        result = subprocess.run(["titan", "status", run_id, "--json"], env=self.env,
                                capture_output=True, timeout=30)
        try:
            jobs = json.loads(result.stdout)["jobs"]
        except (ValueError, KeyError):
            return []
        return [j["job_id"] for j in jobs if j["state"] == "WAITING_APPROVAL"]

    def before(self, command: str) -> None:
        """What a reader waits for before typing the command."""
        m = re.match(r"titan (approve|reject) (\S+)", command)
        if m:
            # A person approves a gate once it waits for approval.
            self.wait_until(lambda: self.state_of(m.group(2)) == "WAITING_APPROVAL", 30)

    def state_of(self, ref: str) -> Optional[str]:
        result = subprocess.run(["titan", "status", ref, "--json"], env=self.env,
                                capture_output=True, timeout=30)
        try:
            return json.loads(result.stdout)["state"]
        except (ValueError, KeyError):
            return None

    def export(self, command: str, cwd: str, where: dict) -> None:
        result = subprocess.run(["sh", "-c", f"{command} && env -0"], cwd=cwd, env=self.env,
                                capture_output=True, timeout=10)
        if result.returncode == 0:
            self.env = dict(item.split("=", 1) for item in
                            result.stdout.decode().split("\0") if "=" in item)
        self.emit(**where, ran=command, ok=result.returncode == 0, status=result.returncode,
                  stderr=result.stderr.decode("utf-8", "replace")[-800:])

    def start_server(self, command: str, server: str, cwd: str, where: dict) -> None:
        log = os.path.join(self.base, f"server-{len(self.servers)}.log")
        proc = subprocess.Popen(["sh", "-c", command], cwd=cwd, env=self.env,
                                stdin=subprocess.DEVNULL, stdout=open(log, "wb"),
                                stderr=subprocess.STDOUT, start_new_session=True)
        self.servers.append((command, proc))
        kind, value = SERVERS[server]
        ready = self.wait_until(
            (lambda: port_open(value)) if kind == "port" else (lambda: self.workers() >= value),
            30, proc)
        with open(log, "rb") as f:
            tail = f.read()[-1500:].decode("utf-8", "replace")
        self.emit(**where, ran=command, ok=ready, server=True,
                  status=proc.poll(), log=tail if not ready else "")

    def workers(self) -> int:
        result = subprocess.run(["titan", "workers", "--json"], env=self.env,
                                capture_output=True, timeout=30)
        try:
            return sum(w["state"] == "ALIVE" for w in json.loads(result.stdout))
        except ValueError:
            return 0

    def wait_until(self, predicate, timeout: float, proc=None) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if predicate():
                return True
            if proc is not None and proc.poll() is not None:
                return False
            time.sleep(0.1)
        return False

    def stop_servers(self) -> None:
        for _, proc in reversed(self.servers):
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
        deadline = time.monotonic() + 15
        for _, proc in reversed(self.servers):
            try:
                proc.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        # Whatever the servers' children still hold (a service's port) goes with them.
        deadline = time.monotonic() + 10
        while any(port_open(p) for p in PORTS) and time.monotonic() < deadline:
            time.sleep(0.1)
        self.servers = []


# -- the test --------------------------------------------------------------------------------

def own_network() -> bool:
    """Whether this system lets us run commands in a network namespace of our own."""
    try:
        return subprocess.run(["unshare", "-rn", "true"], capture_output=True,
                              timeout=10).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


class DocsCommandsTests(SynchronousTestCase):
    def test_every_command_works_as_printed(self) -> None:
        # `make run` installs what is missing first: done here, with the network.
        subprocess.run(["make", "-s", "install"], cwd=ROOT, check=True, capture_output=True,
                       timeout=600)
        base = tempfile.mkdtemp(prefix="titan-docs-")
        runner = [sys.executable, "-m", "tests.acceptance.test_docs_commands", base]
        if own_network():
            runner = ["unshare", "-rn", *runner]
        else:
            busy = [p for p in PORTS if port_open(p)]
            if busy:
                self.fail(f"the docs' commands use ports {PORTS}, but {busy} are taken on this "
                          f"machine and no network namespace is allowed (unshare -rn): free "
                          f"them to run this test")
        started = time.monotonic()
        result = subprocess.run(runner, cwd=ROOT, capture_output=True, timeout=300,
                                env=dict(os.environ, PYTHONPATH=ROOT))
        took = time.monotonic() - started
        results = [json.loads(line) for line in result.stdout.decode().splitlines()
                   if line.startswith("{")]
        self.assertEqual(result.returncode, 0, result.stderr.decode()[-3000:])
        printed = sum(len(commands(doc)) for doc in DOCS)
        self.assertEqual(len(results), printed, "every command was run or skipped")
        failed = [r for r in results if not r["ok"]]
        self.assertEqual(failed, [], "\n\n".join(
            f"{r['doc']}:{r['line']}: {r['printed']}\n  ran: {r.get('ran')}\n"
            f"  status {r.get('status')} (expected {r.get('expected', 0)})\n"
            f"  {r.get('error') or ''}{r.get('stderr') or ''}{r.get('log') or ''}"
            for r in failed))
        # The pages the issue names are all here.
        docs_seen = {r["doc"] for r in results}
        self.assertIn("README.md", docs_seen)
        # A generous bound, not a timing test: the commands take ~10 s on a quiet machine, and
        # 120 s leaves room for a loaded one (a command that hangs is reported on its own).
        self.assertLess(took, 120, f"the docs' commands took {took:.0f}s")


class ReadingTests(SynchronousTestCase):
    """How commands are read from a page."""

    def test_comments_and_quotes(self) -> None:
        self.assertEqual(split_comment("titan submit -- sh -c 'echo #1'  # prints the id"),
                         ("titan submit -- sh -c 'echo #1'", "prints the id"))

    def test_optional_groups(self) -> None:
        self.assertEqual(without_optional("titan logs JOB_ID [--follow]"), "titan logs JOB_ID")
        self.assertEqual(without_optional("python3 -c 'print([1])' [--x Y]"),
                         "python3 -c 'print([1])'")

    def test_expected_status(self) -> None:
        self.assertEqual(expected_status('waits; says "<id> FAILED, exit 3"; exits 3'), 3)
        self.assertEqual(expected_status("prints the job id"), 0)

    def test_a_broken_command_is_reported(self) -> None:
        runner = Runner(tempfile.mkdtemp(prefix="titan-docs-"))
        seen = []
        runner.emit = lambda **r: seen.append(r)
        for printed, comment in (("titan frobnicate", ""), ("sh -c 'exit 3'", "exits 4"),
                                 ("titan status JOB_ID", "")):
            runner.run_one({"doc": "X.md", "line": 1, "printed": printed, "comment": comment,
                            "block_start": True}, ROOT)
        self.assertEqual([r["ok"] for r in seen], [False, False, False])
        self.assertEqual(seen[2]["error"], "JOB_ID is used before a command printed one")

    def test_the_readme_has_commands(self) -> None:
        printed = [c["printed"] for c in commands("README.md")]
        self.assertIn("make run", printed)
        self.assertTrue(any(p.startswith("twistd -n titan-worker") for p in printed))


if __name__ == "__main__":
    try:
        loopback_up()
    except OSError:
        pass  # not in a namespace of our own: loopback is up already
    Runner(sys.argv[1]).run_all()
