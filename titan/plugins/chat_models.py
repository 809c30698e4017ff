"""Built-in chat models (titan.agents), found like any third party's: through titan.plugins.

The providers' modules are imported when one is built, not when plugins are listed."""
from __future__ import annotations

from twisted.plugin import IPlugin
from zope.interface import implementer

from titan.agents.interfaces import IChatModelFactory


@implementer(IPlugin, IChatModelFactory)
class _ChatModelFactory:
    def __init__(self, name: str, description: str, path: str) -> None:
        self.name = name
        self.description = description
        self.path = path  # "module:Class"

    def build(self, options):
        import importlib
        module, cls = self.path.split(":")
        return getattr(importlib.import_module(module), cls)(**(options or {}))


scripted = _ChatModelFactory(
    "scripted", "offline, deterministic replies from a list, a function or TITAN_LLM_SCRIPT",
    "titan.agents.scripted:ScriptedChatModel")
openai = _ChatModelFactory(
    "openai", "an OpenAI-compatible server over HTTP (TITAN_LLM_BASE_URL, TITAN_LLM_MODEL, "
    "TITAN_LLM_API_KEY): OpenAI, vLLM, llama.cpp, Ollama",
    "titan.agents.openai:OpenAIChatModel")
