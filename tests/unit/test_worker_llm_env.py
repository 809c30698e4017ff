"""A worker hands its config's `llm:` section to its jobs as the TITAN_LLM_* variables
titan.agents reads (docs/agents.md); its own environment wins."""
from __future__ import annotations

import os
import tempfile

from twisted.trial.unittest import SynchronousTestCase

from titan.config import Config, LlmConfig, load_config
from titan.worker.service import llm_env


class LlmEnvTests(SynchronousTestCase):
    def test_the_config_file_s_section_reaches_the_jobs(self):
        d = tempfile.mkdtemp()
        key = os.path.join(d, "llm.key")
        with open(key, "w") as f:
            f.write("sk-from-file\n")
        path = os.path.join(d, "titan.yaml")
        with open(path, "w") as f:
            f.write(f"llm:\n  base_url: http://127.0.0.1:11434/v1\n  model: llama3.1\n"
                    f"  api_key_file: {key}\n")
        got = llm_env(load_config(path).llm, {"PATH": "/bin"})
        self.assertEqual(got, {"TITAN_LLM_BASE_URL": "http://127.0.0.1:11434/v1",
                               "TITAN_LLM_MODEL": "llama3.1",
                               "TITAN_LLM_API_KEY": "sk-from-file"})

    def test_the_worker_s_environment_wins_and_nothing_is_set_by_default(self):
        llm = LlmConfig(model="from-file", provider="openai", api_key_file="/nonexistent")
        self.assertEqual(llm_env(llm, {"TITAN_LLM_MODEL": "from-env",
                                       "TITAN_LLM_API_KEY": "k"}),
                         {"TITAN_LLM_PROVIDER": "openai"})
        self.assertEqual(llm_env(Config().llm, {}), {})

    def test_an_unreadable_key_file_leaves_the_key_out(self):
        got = llm_env(LlmConfig(model="m", api_key_file="/nonexistent/llm.key"), {})
        self.assertEqual(got, {"TITAN_LLM_MODEL": "m"})
        self.flushLoggedErrors()

    def test_a_bad_key_in_the_section_is_named(self):
        d = tempfile.mkdtemp()
        path = os.path.join(d, "titan.yaml")
        with open(path, "w") as f:
            f.write("llm:\n  model: m\n  key: oops\n")
        with self.assertRaises(ValueError) as e:
            load_config(path)
        self.assertIn("llm", str(e.exception))
        self.assertIn("key", str(e.exception))
