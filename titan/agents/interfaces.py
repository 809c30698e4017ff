"""The chat-model plugin kind: `IChatModel` and the factory Twisted's plugin system finds.

A provider is found by name like a router: `titan.plugin_registry.find(IChatModelFactory,
name, "chat model")` looks through `titan.plugins` (built-ins in
`titan/plugins/chat_models.py`, third parties' modules in their own `titan/plugins/`).
"""
from __future__ import annotations

from zope.interface import Attribute, Interface


class IChatModel(Interface):
    """A chat model, called from a job's own process: blocking calls are fine there."""

    name = Attribute("The provider's plugin name, e.g. 'openai' or 'scripted'.")
    model = Attribute("The model's name as the provider knows it (what `Reply.model` says "
                      "unless the server names another).")

    def chat(messages, **options):
        """Send `messages` (a list of `{"role": "system"|"user"|"assistant", "content":
        text}`, or one string: a single user message) and return a `titan.agents.Reply`.

        `options` go to the provider as they are (`temperature`, `max_tokens`, `stop`,
        `model` to override the model for this call, ...).  Raises a
        `titan.agents.ChatModelError` subclass, with one line a person can act on."""


class IChatModelFactory(Interface):
    name = Attribute("The name `TITAN_LLM_PROVIDER` and `chat_model(name)` use.")
    description = Attribute("One line for `titan plugins`.")

    def build(options):
        """An IChatModel configured from `options` (a dict: keyword arguments of the
        provider; what it leaves out comes from the environment)."""
