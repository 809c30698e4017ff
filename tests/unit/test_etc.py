"""The annotated config in etc/ is the truth about defaults."""
from __future__ import annotations

import os

import attrs
from twisted.trial.unittest import SynchronousTestCase

from titan.config import Config, load_config

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


class EtcConfigTests(SynchronousTestCase):
    def test_etc_titan_yaml_states_every_default(self):
        path = os.path.join(ROOT, "etc", "titan.yaml")
        loaded = load_config(path)
        self.assertEqual(attrs.evolve(loaded, source="-"), Config(source="-"))
        with open(path) as f:
            text = f.read()
        for field in attrs.fields(Config):  # the top level's keys, sections' included
            if field.name not in ("source", "lines"):
                self.assertIn(f"\n{field.name}:", text, f"{field.name} is not documented")
        for section in ("master", "worker", "persistence", "autoscaler", "store", "web",
                        "mcp", "llm"):
            for field in attrs.fields(type(getattr(Config(), section))):
                self.assertIn(f"\n  {field.name}:", text, f"{section}.{field.name} is not documented")
