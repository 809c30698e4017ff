"""The fixed cost of a `titan` command (issue 13, D): what `titan run --wait` imports, how
its table is written, and that the program's exit skips the collector's passes.

The start-up test runs a fresh interpreter (the test process has imported everything
already); it is the only process these tests start.
"""
from __future__ import annotations

import contextlib
import gc
import io
import os
import subprocess
import sys
import tempfile

from twisted.trial.unittest import SynchronousTestCase

from titan import cli

# What `titan run PIPELINE --wait` does before the run starts, in a fresh interpreter: the
# CLI, the follow loop, the SDK's client, reading a pipeline and dialling a master (here a
# socket that never answers the HELLO: the client gives up after 0.2 s).
RUN_PATH = """
import socket, sys
import titan.cli, titan.follow
from titan.sdk.client import Client, ConnectError
from titan.sdk.pipeline import load_pipeline
load_pipeline(sys.argv[1]).to_spec()
listener = socket.socket()
listener.bind(("127.0.0.1", 0))
listener.listen(1)
try:
    Client(master="127.0.0.1:%d" % listener.getsockname()[1], token="t", timeout=0.2).stats()
except ConnectError:
    pass
print(sorted(m for m in sys.argv[2:] if m in sys.modules))
"""

# Each is a few ms of every command's start, and `titan run` of a pipeline without file
# jobs, given its token, needs none of them.
NOT_NEEDED = ("zipfile", "titan.protocols.legacy",  # only to ship a project folder
              "titan.auth", "hmac", "secrets",        # only to read a token file
              "json",                                 # only for --json
              "encodings.idna")                       # a str host to getaddrinfo


class StartUpTests(SynchronousTestCase):
    def test_titan_run_imports_only_what_it_uses(self) -> None:
        with tempfile.TemporaryDirectory() as tmp:
            path = os.path.join(tmp, "p.yaml")
            with open(path, "w") as f:
                f.write("name: p\njobs:\n  - id: a\n    command: [/bin/true]\n"
                        "  - id: b\n    command: echo hi\n    depends_on: [a]\n")
            env = dict(os.environ)
            env.pop("TITAN_TOKEN", None)
            proc = subprocess.run([sys.executable, "-c", RUN_PATH, path, *NOT_NEEDED],
                                  capture_output=True, text=True, env=env, timeout=60)
        self.assertEqual(proc.returncode, 0, proc.stderr)
        self.assertEqual(proc.stdout.strip(), "[]")

    def test_a_project_folder_is_still_shipped(self) -> None:
        """zipfile and the archive launcher, imported where they are used, still work."""
        from titan.sdk.pipeline import load_pipeline
        with tempfile.TemporaryDirectory() as tmp:
            with open(os.path.join(tmp, "step.py"), "w") as f:
                f.write("print('step')\n")
            with open(os.path.join(tmp, "p.yaml"), "w") as f:
                f.write("name: p\nproject: true\njobs:\n  - id: a\n    file: step.py\n")
            spec = load_pipeline(os.path.join(tmp, "p.yaml")).to_spec()
        script = spec["jobs"][0]["script"]
        self.assertEqual(script["name"], "a.project.py")
        self.assertIn(b"step.py", bytes(script["content"], "utf-8")
                      if isinstance(script["content"], str) else script["content"])


class Counting(io.StringIO):
    def __init__(self) -> None:
        super().__init__()
        self.writes = 0

    def write(self, text: str) -> int:
        self.writes += 1
        return super().write(text)


class TableTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.patch(cli, "_ellipsis", lambda: "…")

    def test_a_run_table_is_one_write(self) -> None:
        """A 1,000-row table on a terminal (or with PYTHONUNBUFFERED) is one system call,
        not one per row; the rows are as before."""
        run = {"jobs": [{"node": f"task-{i}", "state": "COMPLETED", "attempt": 1,
                         "started_at": 10.0, "finished_at": 10.25, "worker": "w1",
                         "reason": None} for i in range(1000)]}
        run["jobs"][7].update(state="FAILED", reason="exit 3\nsee the log")
        out = Counting()
        with contextlib.redirect_stdout(out):
            cli._run_table(run)
        lines = out.getvalue().splitlines()
        self.assertEqual(out.writes, 1)
        self.assertEqual(len(lines), 1001)
        self.assertEqual(lines[0].split(), ["JOB", "STATE", "ATTEMPTS", "DURATION", "WORKER",
                                            "REASON"])
        self.assertEqual(lines[1].split(), ["task-0", "COMPLETED", "1", "0.25s", "w1"])
        self.assertEqual(lines[8].split(), ["task-7", "FAILED", "1", "0.25s", "w1", "exit",
                                            "3⏎see", "the", "log"])

    def test_control_characters_in_a_printable_looking_cell(self) -> None:
        self.assertEqual(cli._cell("a\x1b[31mb"), "a [31mb")
        self.assertEqual(cli._cell("tab\there", None, "..."), "tab here")
        self.assertEqual(cli._cell("x\ny", None, "..."), "x|y")


class ExitTests(SynchronousTestCase):
    def test_the_program_leaves_the_collector_nothing_to_walk(self) -> None:
        """`titan` (main() reading sys.argv) freezes what is alive before the exit's
        collector passes; main(argv), a caller's own process, is left alone."""
        self.addCleanup(gc.unfreeze)
        self.patch(sys, "argv", ["titan", "--version"])
        gc.unfreeze()
        with contextlib.redirect_stdout(io.StringIO()):
            with self.assertRaises(SystemExit):
                cli.main()
        self.assertGreater(gc.get_freeze_count(), 0)
        gc.unfreeze()
        with contextlib.redirect_stdout(io.StringIO()):
            with self.assertRaises(SystemExit):
                cli.main(["--version"])
        self.assertEqual(gc.get_freeze_count(), 0)


def subparsers(parser) -> dict:
    import argparse
    [action] = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    return action.choices


def outcome(parser, argv: list[str]) -> tuple:
    """What a parse of argv gives: the namespace, or the exit status and what was printed."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            return ("parsed", vars(parser.parse_args(argv)))
        except SystemExit as e:
            return ("exit", e.code, out.getvalue(), err.getvalue())


class ParserTests(SynchronousTestCase):
    """A command line is parsed by a parser of its subcommand alone (building the other 16
    was 3-4 ms of every command): what it says and does is the whole parser's."""

    def test_the_commands_are_the_whole_parsers(self) -> None:
        self.assertEqual(tuple(subparsers(cli.build_parser())), cli.COMMANDS)

    def test_each_command_alone_parses_as_the_whole_parser(self) -> None:
        whole = cli.build_parser()
        for name in cli.COMMANDS:
            alone = cli.build_parser(name)
            self.assertEqual(list(subparsers(alone)), [name])
            self.assertEqual(subparsers(alone)[name].format_help(),
                             subparsers(whole)[name].format_help(), name)
        for argv in (["run", "p.yaml", "--wait"], ["run", "p.yaml", "-w", "--set", "stage=x"],
                     ["--master", "h:1", "run", "p.yaml"], ["--master=h:1", "wait", "r"],
                     ["--token", "run", "run", "x.yaml"], ["run"], ["run", "--help"],
                     ["run", "p.yaml", "--bogus"], ["run", "p.yaml", "extra"],
                     ["submit", "--priority", "x", "echo"], ["submit", "-w", "echo", "hi"],
                     ["jobs", "--state", "BOGUS"], ["jobs", "--json"], ["service", "list"],
                     ["service", "deploy", "web", "--port", "auto"], ["service"],
                     ["aof", "check", "d", "--fix"], ["approve", "r/g", "-m", "ok"],
                     ["reject", "r/g"], ["up", "-n", "2"], ["status"]):
            command = cli._command_in(argv)
            self.assertIsNotNone(command, argv)
            self.assertEqual(outcome(cli.build_parser(command), argv),
                             outcome(whole, argv), argv)

    def test_anything_else_takes_the_whole_parser(self) -> None:
        for argv in ([], ["-h"], ["--help"], ["--version"], ["bogus"], ["--mast", "h:1", "run"],
                     ["--master"], ["-x", "run"], ["--master", "h:1"]):
            self.assertIsNone(cli._command_in(argv), argv)
        self.assertEqual(cli._command_in(["--token-file", "f", "--master", "run", "logs"]),
                         "logs")
        self.assertEqual(cli._command_in(["--token-file=f", "cancel", "x"]), "cancel")
