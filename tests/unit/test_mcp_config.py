"""`mcp.allow_gate_decisions` in the config file: parsed, refused when wrong (file, line,
key), and read by `titan mcp --config FILE`; the flag and the environment switch still
turn gate decisions on whatever the file says."""
from __future__ import annotations

import os
import tempfile

from twisted.trial import unittest

from titan.config import Config, ConfigError, McpConfig, parse_config
from titan.errors import TitanError
from titan.mcp import server
from titan.mcp.tools import GATE_ENV, gate_decisions_allowed


class McpConfigTests(unittest.SynchronousTestCase):
    def test_off_by_default(self):
        self.assertFalse(Config().mcp.allow_gate_decisions)
        self.assertFalse(parse_config("mcp:\n", "t.yaml").mcp.allow_gate_decisions)

    def test_the_key_is_read(self):
        config = parse_config("mcp:\n  allow_gate_decisions: true\n", "t.yaml")
        self.assertEqual(config.mcp, McpConfig(allow_gate_decisions=True))

    def test_a_bad_value_names_the_file_line_and_key(self):
        e = self.assertRaises(ConfigError, parse_config,
                              "token: x\nmcp:\n  allow_gate_decisions: sometimes\n", "/etc/t.yaml")
        self.assertEqual(str(e), "/etc/t.yaml:3: mcp.allow_gate_decisions must be true or "
                                 "false, not 'sometimes'")
        e = self.assertRaises(ConfigError, parse_config, "mcp:\n  allow_gates: true\n",
                              "/etc/t.yaml")
        self.assertEqual(str(e), "/etc/t.yaml:2: unknown key mcp.allow_gates (known in mcp: "
                                 "allow_gate_decisions)")


class SwitchTests(unittest.SynchronousTestCase):
    def setUp(self):
        old = os.environ.pop(GATE_ENV, None)
        if old is not None:
            self.addCleanup(os.environ.__setitem__, GATE_ENV, old)
        self.addCleanup(os.environ.pop, GATE_ENV, None)

    def test_config_flag_and_environment(self):
        self.assertFalse(gate_decisions_allowed(False, False))
        self.assertTrue(gate_decisions_allowed(False, True))
        self.assertTrue(gate_decisions_allowed(True, False))
        os.environ[GATE_ENV] = "1"
        self.assertTrue(gate_decisions_allowed(False, False))

    def _serve(self, config_text, flag=False):
        """What `titan mcp --config FILE` hands its tools (the server itself not run)."""
        path = os.path.join(tempfile.mkdtemp(), "titan.yaml")
        with open(path, "w") as f:
            f.write(config_text)
        built = []

        class Stop(Exception):
            pass

        def build(tools):
            built.append(tools)
            raise Stop()
        self.patch(server, "build_server", build)
        self.assertRaises(Stop, server.main, master="127.0.0.1:1", token="t",
                          allow_gate_decisions=flag, config=path)
        return built[0], path

    def test_titan_mcp_reads_the_config_file(self):
        tools, _ = self._serve("mcp:\n  allow_gate_decisions: true\n")
        self.assertTrue(tools.allow_gate_decisions)
        tools, _ = self._serve("mcp:\n  allow_gate_decisions: false\n")
        self.assertFalse(tools.allow_gate_decisions)
        tools, _ = self._serve("mcp:\n  allow_gate_decisions: false\n", flag=True)
        self.assertTrue(tools.allow_gate_decisions)
        os.environ[GATE_ENV] = "1"
        tools, _ = self._serve("# nothing\n")
        self.assertTrue(tools.allow_gate_decisions)

    def test_a_bad_config_stops_titan_mcp_naming_where(self):
        path = os.path.join(tempfile.mkdtemp(), "titan.yaml")
        with open(path, "w") as f:
            f.write("mcp:\n  allow_gate_decisions: 2\n")
        e = self.assertRaises(TitanError, server.main, master="127.0.0.1:1", token="t",
                              config=path)
        self.assertEqual(str(e), f"{path}:2: mcp.allow_gate_decisions must be true or false, "
                                 "not 2")
