"""Models for jobs: a small chat-model interface, its providers, and per-run usage.

    from titan.agents import chat_model
    model = chat_model()            # the provider the environment names (see below)
    reply = model.chat([{"role": "user", "content": "Three sub-questions about tides?"}])
    reply.text, reply.usage.tokens_in, reply.usage.tokens_out, reply.latency, reply.cost

Providers are plugins of the kind `IChatModelFactory` (titan/agents/interfaces.py), found
through `titan.plugins` like the routers.  Built-ins (titan/plugins/chat_models.py):

- `openai`: any OpenAI-compatible server over HTTP (OpenAI, vLLM, llama.cpp, Ollama):
  TITAN_LLM_BASE_URL (default https://api.openai.com/v1), TITAN_LLM_MODEL, TITAN_LLM_API_KEY
  (titan/agents/openai.py);
- `scripted`: offline, deterministic replies from a list, a function, or the JSON/YAML file
  named by TITAN_LLM_SCRIPT (titan/agents/scripted.py).

`chat_model(name=None, **options)` picks the provider `name`, else TITAN_LLM_PROVIDER, else
`openai` when TITAN_LLM_BASE_URL or TITAN_LLM_MODEL is set, else `scripted` when
TITAN_LLM_SCRIPT is; `options` are the provider's keyword arguments.  The model it returns
records every call's usage for the job's agent run and stage (titan/agents/usage.py says
where; `summarize` sums it back).
"""
from __future__ import annotations

import os
from typing import Any, Optional

from titan.agents.base import (AuthenticationError, ChatModelError, ChatTimeout,
                               ModelNotFound, NotConfigured, RateLimited, Reply, ScriptError,
                               ServerError, Usage)
from titan.agents.interfaces import IChatModel, IChatModelFactory
from titan.agents.usage import Meter, Metered, meter, summarize

__all__ = ["AuthenticationError", "ChatModelError", "ChatTimeout", "IChatModel",
           "IChatModelFactory", "Meter", "Metered", "ModelNotFound", "NotConfigured",
           "RateLimited", "Reply", "ScriptError", "ServerError", "Usage", "chat_model",
           "meter", "provider_name", "summarize"]


def provider_name(environ: Optional[dict] = None) -> str:
    """The provider the environment names (NotConfigured when it names none)."""
    env = os.environ if environ is None else environ
    if env.get("TITAN_LLM_PROVIDER"):
        return env["TITAN_LLM_PROVIDER"]
    if env.get("TITAN_LLM_BASE_URL") or env.get("TITAN_LLM_MODEL"):
        return "openai"
    if env.get("TITAN_LLM_SCRIPT"):
        return "scripted"
    raise NotConfigured("no chat model is configured: set TITAN_LLM_MODEL (and "
                        "TITAN_LLM_BASE_URL, TITAN_LLM_API_KEY) for an OpenAI-compatible "
                        "server, or TITAN_LLM_SCRIPT to a script file for the offline "
                        "scripted model, or TITAN_LLM_PROVIDER to a provider's name")


def chat_model(name: Optional[str] = None, *, metered: bool = True, **options: Any):
    """An IChatModel: the provider `name` (or the environment's), built with `options`;
    with `metered`, each call's usage is recorded (see titan/agents/usage.py)."""
    from titan.plugin_registry import UnknownPlugin, find
    try:
        factory = find(IChatModelFactory, name or provider_name(), "chat model")
    except UnknownPlugin as e:
        raise NotConfigured(str(e)) from None
    model = factory.build(options)
    return Metered(model) if metered else model
