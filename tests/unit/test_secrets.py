"""Secrets never on a command line, nor in what a job inherits (issue 15, part 4)."""
from __future__ import annotations

import ast
import os
import subprocess
import sys

from twisted.trial.unittest import SynchronousTestCase

from titan.auth import is_secret_env, read_token_file, without_secrets

# Run in a child: it overwrites its own argv and environment block.
BLANK = """\
import sys
from titan.auth import blank_in_own_process
print(blank_in_own_process(sys.argv[1]))
with open("/proc/self/cmdline", "rb") as f:
    print([a for a in f.read().split(b"\\0")[3:] if a])
with open("/proc/self/environ", "rb") as f:
    env = f.read().split(b"\\0")
print([e for e in env if e.startswith((b"TITAN_TOKEN=", b"OTHER="))])
"""


class BlankTests(SynchronousTestCase):
    def test_the_token_goes_from_argv_and_environ_and_nothing_else_does(self):
        token = "s3cret-tok"
        env = dict(os.environ, TITAN_TOKEN=token, OTHER=f"keeps {token} and t")
        done = subprocess.run(
            [sys.executable, "-c", BLANK, token, "--token", token, f"--token={token}",
             "t", f"x{token}"],
            env=env, capture_output=True, timeout=30, cwd=os.getcwd())
        lines = done.stdout.decode().splitlines()
        self.assertEqual(lines[0], "4", done.stderr.decode())
        # The arguments that are the token, or --token=TOKEN, lose it; "t" and "xTOKEN" stay.
        self.assertEqual(ast.literal_eval(lines[1]),
                         [b"--token", b"--token=", b"t", f"x{token}".encode()])
        # TITAN_TOKEN=TOKEN keeps its name; another variable that contains it is untouched.
        self.assertIn("b'TITAN_TOKEN='", lines[2])
        self.assertIn(f"b'OTHER=keeps {token} and t'", lines[2])


class SecretEnvTests(SynchronousTestCase):
    def test_what_a_job_does_not_inherit(self):
        env = {"TITAN_TOKEN": "t", "TITAN_STORE_PASSWORD": "p", "TITAN_TOKEN_FILE": "/f",
               "TITAN_HOST": "h", "TITAN_DATA_DIR": "d", "PATH": "/bin", "MY_TOKEN": "m"}
        self.assertEqual(without_secrets(env), {"TITAN_HOST": "h", "TITAN_DATA_DIR": "d",
                                                "PATH": "/bin", "MY_TOKEN": "m"})
        self.assertTrue(is_secret_env("TITAN_STORE_PASSWORD"))
        self.assertFalse(is_secret_env("TITAN_JOB_ID"))

    def test_token_file(self):
        path = self.mktemp()
        with open(path, "w") as f:
            f.write("abc\nignored\n")
        self.assertEqual(read_token_file(path), "abc")
        with open(path, "w"):
            pass
        with self.assertRaises(ValueError) as caught:
            read_token_file(path)
        self.assertEqual(str(caught.exception), f"--token-file {path}: the file is empty")
        with self.assertRaises(ValueError) as caught:
            read_token_file(path + ".missing")
        self.assertEqual(str(caught.exception), f"--token-file {path}.missing: cannot read "
                                                f"it: No such file or directory")
